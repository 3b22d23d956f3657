"""The one place where a training step rounds: :class:`Caster`.

Every tensor the model holds in low precision goes through ``caster(x, point, layer)``. That
call looks up the policy's :class:`~lowprec.nn.policy.Cast` for ``point``, rounds with
:meth:`Caster.round` (unless the values are provably already in that format), hands the
before/after pair to the observer when one is attached, and remembers the result so that the
first cast point that produced an inf or NaN can be named after the step.

:meth:`Caster.round` is the single function through which every plain rounding of a step
goes, so it is the hook a GPU backend overrides to round CuPy arrays (the rest of the model
only uses the array namespace ``xp``). At an FP8 point of a policy with an ``fp8_recipe`` the
cast goes through :meth:`Caster.scaled_cast` instead: it scales, casts and unscales the
tensor with that (layer, point)'s own recipe state (delayed scaling keeps an amax history per
tensor, as Transformer Engine does) and records the cast's amax, scale and clipped/flushed
counts for the History.

The model holds a scaled cast's result dequantized (FP8 element times scale_inv, in FP32), as
Transformer Engine's dequantize gives it. With the BLAS accumulator a GEMM multiplies those
values. With an accumulation model (a format or a tensor-core model) :meth:`Caster.matmul`
computes what the GPU does instead: the FP8 elements go through the accumulator and the
decode scales are applied to the sum in FP32 (cuBLASLt's FP8 matmul,
``D = scale_a * scale_b * (A @ B)``, with Transformer Engine passing each operand's scale_inv
as its scale; transformer_engine/common/gemm/cublaslt_gemm.cu).
"""
from __future__ import annotations

import copy
import dataclasses
from typing import NamedTuple

import numpy as np

from ..formats import E4M3, E5M2, FloatFormat, as_format
from ..rounding import round as round_to_format
from ..scaling import NonFiniteSource
from .policy import BLAS, CAST_POINTS, FORWARD_POINTS, Cast, PrecisionPolicy

# Reduction axis of each GEMM operand in its first and second use (shapes of lowprec.nn.layers).
# Block scaling (MX) scales blocks along the axis a GEMM sums over, so an operand used by two
# GEMMs is quantized once per use, as TE makes a row-wise and a column-wise copy:
#   input x (batch, d_in):        fprop x @ W sums over d_in (1);   wgrad x.T @ g over the batch (0)
#   weight W (d_in, d_out):       fprop sums over d_in (0);         dgrad g @ W.T over d_out (1)
#   grad_output g (batch, d_out): dgrad sums over d_out (1);        wgrad over the batch (0)
GEMM_AXES = {"input": (1, 0), "weight": (0, 1), "grad_output": (1, 0)}


class _FP8Operand(NamedTuple):
    """What an FP8 GEMM reads for the result ``values`` of a per-tensor scaled cast."""

    values: object  # the dequantized tensor the model holds (kept alive, so its address stays its own)
    elements: np.ndarray  # the FP8 elements, values' scaled and rounded source (numbers of fmt)
    scale_inv: np.float32  # decode scale: values = float32(elements * scale_inv)
    fmt: FloatFormat


class Caster:
    """Rounds tensors at their cast points for one policy; also runs the matmuls.

    ``fp8_states`` maps (layer, point) to the recipe state of that tensor; the Caster creates
    them on first use. ``frozen=True`` casts with the states' current scales but never updates
    them (evaluation must not change the training run).
    """

    def __init__(self, policy: PrecisionPolicy, *, rng: np.random.Generator | None = None,
                 observer=None, xp=np, fp8_states: dict | None = None, frozen: bool = False):
        self.policy = policy
        self.rng = rng  # used only by stochastic rounding
        self.observer = observer  # lowprec.observe.Observer or None (observation off: no cost)
        self.xp = xp
        self.trace: list = []  # (layer, point, tensor) in execution order, for the culprit search
        # data address -> format held there, or an _FP8Operand, this step (for exact matmuls)
        self._formats: dict = {}
        self._blas = isinstance(policy.accumulate, str) and policy.accumulate == BLAS
        self._index = {p: i for i, p in enumerate(CAST_POINTS)}
        self.fp8_states = {} if fp8_states is None else fp8_states  # (layer, point) -> recipe state
        self.frozen = frozen
        self._scaled = frozenset(policy.fp8_points) if policy.fp8_recipe is not None else frozenset()
        self._block_scaled = type(policy.fp8_recipe).__name__ == "MXBlockScaling"
        self._sources: dict = {}  # (layer, point) -> unrounded tensor, for a block-scaled second use
        self.fp8_stats: dict = {}  # (layer, point) -> [amax, scale, clipped, flushed, count], this step

    def spec(self, point: str) -> Cast | None:
        return self.policy.cast(point)

    def __call__(self, x, point: str, layer: int, *, already: Cast | None = None, bias: bool = False):
        """``x`` rounded at cast point ``point`` of ``layer``.

        ``already``: the Cast whose values ``x`` already holds (the caller knows, e.g. a ReLU
        output is its rounded input or 0); when this point's format contains it, nothing is
        rounded, which saves time and changes no value.
        ``bias``: ``x`` is a bias at the ``weight`` point; it takes ``policy.bias_cast`` and is
        never FP8-scaled (it is not a GEMM operand).
        """
        spec = self.policy.bias_cast if bias else self.policy.cast(point)
        record, axis = None, -1
        if not bias and point in self._scaled:  # scaled casts are never the identity
            if self._block_scaled and point in GEMM_AXES:
                self._sources[layer, point] = x  # the second GEMM quantizes it along its own axis
            axis = GEMM_AXES.get(point, (-1,))[0]
            y, record = self.scaled_cast(x, layer, point, axis)
        elif self.is_identity(spec, x, already):
            y = x
        else:
            y = self.round(x, spec, layer, point)
        if self.observer is not None:
            self.observer.record(layer, self._index[point], x, y, spec, **self._scaling_of(record, x, axis))
        self.trace.append((layer, point, y))  # also keeps y alive, so its address stays its own
        if not self._blas:
            self._remember(y, spec or already, record)
        return y

    def second_use(self, y, point: str, layer: int):
        """``y`` (this step's result at ``point``) as the operand of its second GEMM.

        The same array, except under block scaling (MX), where the unrounded tensor is
        quantized again in blocks along the second GEMM's reduction axis (see GEMM_AXES).
        """
        source = self._sources.pop((layer, point), None)
        if source is None:
            return y
        y2, record = self.scaled_cast(source, layer, point, GEMM_AXES[point][1])
        self.trace.append((layer, point, y2))
        if not self._blas:
            self._remember(y2, None, record)
        return y2

    def _remember(self, y, held: Cast | None, record):
        """Note for :meth:`matmul` what ``y`` holds: values of ``held``'s format, or for a scaled
        cast (``record``) its FP8 elements and decode scale. Block-scaled (MX) values lie in no
        format (each block has its own power-of-two scale): they are left unknown, so a format
        accumulator takes their exact products."""
        if record is not None and record.elements is not None:
            self._formats[_address(y)] = _FP8Operand(y, record.elements, np.float32(record.scale_inv),
                                                    as_format(record.fmt))
        elif record is None and held is not None:
            self._formats[_address(y)] = held.format
        else:
            self._formats.pop(_address(y), None)

    def apply(self, x, spec: Cast | None, layer: int, point: str):
        """``x`` rounded by ``spec`` (which may differ from the policy's): not observed, traced
        or FP8-scaled (the stored weights and the pure low-precision update use it)."""
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
        """Round ``x`` as ``spec`` says (no scaling). The hook a GPU backend overrides."""
        return round_to_format(x, spec.format, spec.mode, overflow=spec.overflow,
                               subnormals=spec.subnormals,
                               rng=self.rng if spec.mode == "stochastic" else None)

    # --- FP8 scaling recipes ---------------------------------------------------------------
    def fp8_state(self, layer: int, point: str):
        """The recipe state of the tensor at (layer, point), created on first use: E4M3
        ("forward") for forward points, E5M2 ("backward") for gradients under HYBRID."""
        key = (layer, point)
        if key not in self.fp8_states:
            role = "forward" if point in FORWARD_POINTS else "backward"
            self.fp8_states[key] = self.policy.fp8_recipe.new_state(role)
        return self.fp8_states[key]

    def scaled_cast(self, x, layer: int, point: str, axis: int = -1):
        """(values, CastRecord): ``x`` cast by the policy's FP8 recipe with the state of
        (``layer``, ``point``) -- scaled, rounded, unscaled; MX blocks run along ``axis``. The
        record is added to this step's ``fp8_stats``."""
        from ..scaling import DelayedScalingState, quantize
        state = self.fp8_state(layer, point)
        if self.frozen and isinstance(state, DelayedScalingState):
            values, record = state.quantize(x, update=False)  # writes only the state's history[0]
        else:
            values, record = quantize(x, state, axis=axis)
        values = self.xp.asarray(values, dtype=x.dtype)
        n = x.size
        stats = self.fp8_stats.setdefault((layer, point), [0.0, np.nan, 0, 0, 0])
        stats[0] = max(stats[0], record.amax)
        if record.scale is not None:
            stats[1] = record.scale
        stats[2] += int(round(record.clipped * n))  # the record's fractions are count / n exactly
        stats[3] += int(round(record.flushed * n))
        stats[4] += n
        return values, record

    def _scaling_of(self, record, x, axis: int) -> dict:
        """What the observer needs to judge a scaled cast: the decode scale of each value (the
        format's limits apply to value / scale_inv) and how many values the cast clipped."""
        if record is None:
            return {}
        if record.block_scales is None:
            decode = np.float32(record.scale_inv)
        else:  # MX: each value's block scale; block_scales runs over blocks along the cast axis
            decode = _per_value(record.block_scales, x.shape, axis, self.policy.fp8_recipe.block_size)
        return {"decode_scale": decode, "clipped": int(round(record.clipped * x.size))}

    def fp8_step_stats(self, layers: int) -> dict | None:
        """This step's FP8 cast statistics as arrays (layers, points), or None without a recipe:
        amax (max |x| cast), scale (per-tensor scale used; NaN for block scaling), and the
        fractions of values clipped (saturated) and flushed to zero."""
        if not self._scaled:
            return None
        shape = (layers, len(CAST_POINTS))
        out = {name: np.full(shape, np.nan) for name in ("amax", "scale", "clipped", "flushed")}
        for (layer, point), (amax, scale, clipped, flushed, count) in self.fp8_stats.items():
            p = self._index[point]
            out["amax"][layer, p], out["scale"][layer, p] = amax, scale
            out["clipped"][layer, p] = clipped / max(count, 1)
            out["flushed"][layer, p] = flushed / max(count, 1)
        return out

    def frozen_copy(self, rng=None) -> "Caster":
        """A Caster for evaluation: copies of the FP8 states, used but never updated."""
        return Caster(self.policy, rng=rng, xp=self.xp, fp8_states=copy.deepcopy(self.fp8_states),
                      frozen=True)

    # --- matmul and step bookkeeping --------------------------------------------------------
    def matmul(self, a, b):
        """``a @ b`` with the policy's accumulation (the inputs are already rounded).

        BLAS: products of 16-bit (or narrower) inputs are exact in float32, and the FP32 sums
        run in the library's own order, as cuBLAS does on a GPU; scaled FP8 operands enter
        dequantized. Anything else goes to ``lowprec.arith.matmul``, which rounds every partial
        sum as the model says; scaled FP8 operands enter as their FP8 elements, and the product
        of their decode scales multiplies the result in FP32 (cuBLASLt's ``scale_a * scale_b``;
        the order of its two FP32 products is not documented: this forms the scalar first).
        """
        acc = self.policy.accumulate
        if self._blas:
            return a @ b
        from .. import arith  # the exact accumulation models; imported only when asked for
        (a8, fa, decode_a), (b8, fb, decode_b) = self._gemm_operand(a), self._gemm_operand(b)
        # Telling arith the operands' formats lets it use exact float32 products (fast path).
        inputs = (fa, fb) if fa is not None and fb is not None else None
        if isinstance(acc, FloatFormat):
            out = arith.matmul(a8, b8, inputs=inputs, accumulate=acc, order="sequential")
        else:
            out = arith.matmul(a8, b8, inputs=inputs, accumulate=_reading(acc, fa, fb))
        if decode_a is not None or decode_b is not None:
            decode = np.float32(1)
            for scale_inv in (decode_a, decode_b):
                decode = decode if scale_inv is None else decode * scale_inv  # float32 products
            out = np.asarray(out, np.float32) * decode
        return self.xp.asarray(out, dtype=a.dtype)

    def _gemm_operand(self, m):
        """(array, its format or None, decode scale or None): what a GEMM reads for ``m``."""
        held = self._formats.get(_address(m))  # a transpose shares the address of its source
        if not isinstance(held, _FP8Operand):
            return m, held, None
        y = held.values
        for view, elements in ((y, held.elements), (y.T, held.elements.T)):
            if m.shape == view.shape and m.strides == view.strides:  # the same view of y's data
                return elements, held.fmt, held.scale_inv
        return m, None, None  # another view of y: its values, in no known format

    def begin_step(self, observer=None):
        """Start a step; ``observer`` (or None: observation off) records this step's casts."""
        self.observer, self.trace, self._formats, self._sources = observer, [], {}, {}
        self.fp8_stats = {}
        if observer is not None:
            observer.begin_step()

    def end_step(self):
        """Drop this step's tensors and the observer (which keeps its statistics)."""
        self.observer, self.trace, self._formats, self._sources = None, [], {}, {}

    def culprit(self) -> NonFiniteSource | None:
        """The first cast of this step, in execution order, whose result held a NaN or an inf,
        as a :class:`lowprec.scaling.NonFiniteSource` (layer, cast point, kind), or None.
        A tensor holding both is reported as "nan"."""
        xp = self.xp
        for layer, point, y in self.trace:
            if not bool(xp.isfinite(y).all()):
                kind = "nan" if bool(xp.isnan(y).any()) else "inf"
                return NonFiniteSource(layer, point, kind)
        return None


def _reading(model, fa, fb):
    """The tensor-core ``model`` reading operands of formats ``fa`` and ``fb``. FP8 MMA takes E4M3
    or E5M2 for each operand on its own (PTX ISA, ``wgmma.mma_async`` .atype/.btype), with the
    same alignment and rounding for all four pairs (MMA-Sim, mmasim/simulator/nv_ptx.py), as
    the dgrad (E5M2 x E4M3) and wgrad (E4M3 x E5M2) GEMMs of Format.HYBRID need."""
    fp8 = (E4M3, E5M2)
    if not (model.inputs in fp8 and fa in fp8 and fb in fp8) or (fa, fb) == (model.inputs, model.b_format):
        return model
    return dataclasses.replace(model, inputs=fa, inputs_b=None if fb == fa else fb)


def _per_value(block_scales, shape, axis: int, block_size: int):
    """Each value's block scale: ``block_scales`` repeated along ``axis`` and cut to ``shape``."""
    axis = axis % len(shape)
    expanded = np.repeat(block_scales, block_size, axis=axis)
    return np.take(expanded, np.arange(shape[axis]), axis=axis)


def _address(array) -> int:
    """Where an array's data starts (NumPy or CuPy); a transposed view starts at the same place."""
    interface = getattr(array, "__cuda_array_interface__", None) or array.__array_interface__
    return interface["data"][0]
