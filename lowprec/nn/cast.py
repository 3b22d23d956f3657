"""The one place where a training step rounds: :class:`Caster`.

Every tensor the model holds in low precision goes through ``caster(x, point, layer)``. That
call looks up the policy's :class:`~lowprec.nn.policy.Cast` for ``point``, rounds with
:meth:`Caster.round` (unless the values are provably already in that format), hands the
before/after pair to the observer when one is attached, and remembers the result so that the
first cast point that produced an inf or NaN can be named after the step.

:meth:`Caster.round` is the single function through which every rounding of a step goes, so
it is the hook to extend: a per-tensor scaling recipe (FP8 delayed/current scaling, MX blocks)
overrides it to scale, round, unscale and record the amax -- it gets the layer and cast point
of every tensor -- and a GPU backend overrides it to round CuPy arrays (the rest of the model
only uses the array namespace ``xp``).
"""
from __future__ import annotations

import numpy as np

from ..formats import FloatFormat
from ..rounding import round as round_to_format
from .policy import BLAS, CAST_POINTS, Cast, PrecisionPolicy


class Caster:
    """Rounds tensors at their cast points for one policy; also runs the matmuls."""

    def __init__(self, policy: PrecisionPolicy, *, rng: np.random.Generator | None = None,
                 observer=None, xp=np):
        self.policy = policy
        self.rng = rng  # used only by stochastic rounding
        self.observer = observer  # lowprec.observe.Observer or None (observation off: no cost)
        self.xp = xp
        self.trace: list = []  # (layer, point, tensor) in execution order, for the culprit search
        self._formats: dict = {}  # data address -> format held there, this step (exact matmuls)
        self._index = {p: i for i, p in enumerate(CAST_POINTS)}

    def spec(self, point: str) -> Cast | None:
        return self.policy.cast(point)

    def __call__(self, x, point: str, layer: int, *, already: Cast | None = None):
        """``x`` rounded at cast point ``point`` of ``layer``.

        ``already``: the Cast whose values ``x`` already holds (the caller knows, e.g. a ReLU
        output is its rounded input or 0); when this point's format contains it, nothing is
        rounded, which saves time and changes no value.
        """
        spec = self.policy.cast(point)
        if self.is_identity(spec, x, already):
            y = x
        else:
            y = self.round(x, spec, layer, point)
        if self.observer is not None:
            self.observer.record(layer, self._index[point], x, y, spec)
        self.trace.append((layer, point, y))  # also keeps y alive, so its address stays its own
        held = spec or already
        if held is not None and not (isinstance(self.policy.accumulate, str)
                                     and self.policy.accumulate == BLAS):
            self._formats[_address(y)] = held.format
        return y

    def apply(self, x, spec: Cast | None, layer: int, point: str):
        """``x`` rounded by ``spec`` (which may differ from the policy's), not observed or traced."""
        return x if self.is_identity(spec, x, None) else self.round(x, spec, layer, point)

    def is_identity(self, spec: Cast | None, x, already: Cast | None = None) -> bool:
        """True when rounding ``x`` by ``spec`` provably changes nothing."""
        if spec is None:
            return True
        if already is not None and spec.contains(already):
            return True
        # Every float32 is an FP32 value: rounding a float32 array to FP32 changes nothing.
        return (spec.format.name == "fp32" and spec.subnormals and spec.overflow is None
                and x.dtype == np.float32)

    def round(self, x, spec: Cast, layer: int, point: str):
        """Round ``x`` as ``spec`` says. The hook a per-tensor scaling recipe wraps."""
        return round_to_format(x, spec.format, spec.mode, overflow=spec.overflow,
                               subnormals=spec.subnormals,
                               rng=self.rng if spec.mode == "stochastic" else None)

    def matmul(self, a, b):
        """``a @ b`` with the policy's accumulation (the inputs are already rounded).

        BLAS: products of 16-bit (or narrower) inputs are exact in float32, and the FP32 sums
        run in the library's own order, as cuBLAS does on a GPU. Anything else goes to
        ``lowprec.arith.matmul``, which rounds every partial sum as the model says.
        """
        acc = self.policy.accumulate
        if isinstance(acc, str) and acc == BLAS:
            return a @ b
        from .. import arith  # the exact accumulation models; imported only when asked for
        # Telling arith the operands' formats lets it use exact float32 products (fast path).
        fa, fb = (self._formats.get(_address(m)) for m in (a, b))  # transposes share the address
        inputs = (fa, fb) if fa is not None and fb is not None else None
        if isinstance(acc, FloatFormat):
            out = arith.matmul(a, b, inputs=inputs, accumulate=acc, order="sequential")
        else:
            out = arith.matmul(a, b, inputs=inputs, accumulate=acc)
        return self.xp.asarray(out, dtype=a.dtype)

    def begin_step(self, observer=None):
        """Start a step; ``observer`` (or None: observation off) records this step's casts."""
        self.observer, self.trace, self._formats = observer, [], {}
        if observer is not None:
            observer.begin_step()

    def end_step(self):
        """Drop this step's tensors and the observer (which keeps its statistics)."""
        self.observer, self.trace, self._formats = None, [], {}

    def first_nonfinite(self) -> tuple[int, str] | None:
        """(layer, point) of the first cast whose result held an inf or NaN in this step."""
        xp = self.xp
        for layer, point, y in self.trace:
            if not bool(xp.isfinite(y).all()):
                return layer, point
        return None


def _address(array) -> int:
    """Where an array's data starts (NumPy or CuPy); a transposed view starts at the same place."""
    interface = getattr(array, "__cuda_array_interface__", None) or array.__array_interface__
    return interface["data"][0]
