"""The one place where a training step rounds: :class:`Caster`.

Every tensor the model holds in low precision goes through ``caster(x, point, layer)``. That
call looks up the policy's :class:`~lowprec.nn.policy.Cast` for ``point``, rounds with
:meth:`Caster.round` (unless the values are provably already in that format), hands the
before/after pair to the observer when one is attached, and remembers the result so that the
first cast point that produced an inf or NaN can be named after the step.

:meth:`Caster.round` is the single function through which every plain rounding of a step
goes, so it is the hook a GPU backend overrides to round CuPy arrays (the rest of the model
only uses the array namespace ``xp``). At an FP8 point of a policy with an ``fp8_recipe`` the
cast is scaled instead, with that (point, layer)'s own recipe state (delayed scaling keeps an
amax history per tensor, as Transformer Engine does), held in :attr:`Caster.recipes`.

A scaled cast of a GEMM operand (``input``, ``weight``, ``grad_output``) returns a
:class:`~lowprec.scaling.ScaledTensor`: FP8 elements and their decode scales, which the GEMM
reads as the hardware does (:mod:`lowprec.accumulate`). Elsewhere the model reads its
dequantized values, as Transformer Engine's dequantize gives them. :meth:`Caster.matmul` is a
call to the policy's accumulator; it passes the formats the policy holds at the GEMM's operand
points, so a format accumulator can use exact float32 products.

Block-scaled recipes (:mod:`lowprec.scaling.recipes`) quantize each operand along the reduction
axis of the GEMM it feeds, once per GEMM (:meth:`Caster.second_use`; 2-D weight tiles serve
both GEMMs); their states get the GEMM's name (for the Hadamard transform of the wgrad
operands) and the Caster's generator (for stochastic rounding of gradients). Layers the recipe
keeps in high precision (``high_precision_layers``, e.g. NVFP4's first and last) are rounded to
BF16 at those points instead, unscaled.

Every method takes the tensor first, then the cast point, then the layer.
"""
from __future__ import annotations

import copy
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from ..rounding import round as round_to_format
from ..scaling import NonFiniteSource, ScaledTensor
from ..observe import block_statistics
from .policy import CAST_POINTS, Cast, PrecisionPolicy
from .recipe_states import RecipeStates

if TYPE_CHECKING:  # observe imports the policy's cast points
    from ..observe import Observer

# Reduction axis of each GEMM operand in its first and second use (shapes of lowprec.nn.layers).
# Block scaling (MX) scales blocks along the axis a GEMM sums over, so an operand used by two
# GEMMs is quantized once per use, as TE makes a row-wise and a column-wise copy:
#   input x (batch, d_in):        fprop x @ W sums over d_in (1);   wgrad x.T @ g over the batch (0)
#   weight W (d_in, d_out):       fprop sums over d_in (0);         dgrad g @ W.T over d_out (1)
#   grad_output g (batch, d_out): dgrad sums over d_out (1);        wgrad over the batch (0)
GEMM_AXES = {"input": (1, 0), "weight": (0, 1), "grad_output": (1, 0)}
# The cast points each GEMM's operands (a, b of a @ b) come from, in Transformer Engine's names.
GEMM_OPERANDS = {"fprop": ("input", "weight"), "dgrad": ("grad_output", "weight"),
                 "wgrad": ("input", "grad_output")}
# The GEMM of each operand's first and second use (the order of GEMM_AXES).
GEMM_USES = {"input": ("fprop", "wgrad"), "weight": ("fprop", "dgrad"),
             "grad_output": ("dgrad", "wgrad")}


class Caster:
    """Rounds tensors at their cast points for one policy; its matmul calls the accumulator.

    ``fp8_states`` maps (layer, point) to the recipe state of that tensor (see
    :class:`~lowprec.nn.recipe_states.RecipeStates`); ``frozen=True`` casts with the states'
    current scales but never updates them (evaluation must not change the training run).

    ``layers``: the model's number of layers, which a block recipe's ``high_precision_layers``
    (negative indices count from the last layer) needs; the Trainer sets it.
    """

    def __init__(self, policy: PrecisionPolicy, *, rng: np.random.Generator | None = None,
                 observer: Observer | None = None, xp: ModuleType = np,
                 fp8_states: dict | None = None, frozen: bool = False,
                 layers: int | None = None) -> None:
        self.policy = policy
        self.layers = layers
        self.rng = rng  # used only by stochastic rounding
        self.observer = observer  # lowprec.observe.Observer or None (observation off: no cost)
        self.xp = xp
        self.trace: list = []  # (layer, point, values) in execution order, for the culprit search
        self._index = {p: i for i, p in enumerate(CAST_POINTS)}
        self.recipes = RecipeStates(policy, fp8_states, frozen)
        self._block_scaled = bool(self.recipes.points) and policy.fp8_recipe.block_scaled
        self._sources: dict = {}  # (layer, point) -> unrounded tensor, for a block second use
        recipe = policy.fp8_recipe
        self._kept_layers = tuple(getattr(recipe, "high_precision_layers", ()) or ())
        self._kept_cast = (Cast(recipe.high_precision) if self._kept_layers and self.recipes.points
                           else None)
        # each GEMM's operand formats, looked up once (the policy is fixed): see matmul
        self._held = {gemm: tuple(self._held_format(p) for p in points)
                      for gemm, points in GEMM_OPERANDS.items()}

    @property
    def fp8_states(self) -> dict:
        """(layer, point) -> recipe state (``self.recipes.states``)."""
        return self.recipes.states

    @property
    def frozen(self) -> bool:
        return self.recipes.frozen

    def spec(self, point: str) -> Cast | None:
        return self.policy.cast(point)

    def __call__(self, x: np.ndarray, point: str, layer: int, *, already: Cast | None = None,
                 bias: bool = False) -> np.ndarray | ScaledTensor:
        """``x`` rounded at cast point ``point`` of ``layer``: an array, or a ScaledTensor for a
        scaled GEMM operand.

        ``already``: the Cast whose values ``x`` already holds (the caller knows, e.g. a ReLU
        output is its rounded input or 0); when this point's format contains it, nothing is
        rounded, which saves time and changes no value.
        ``bias``: ``x`` is a bias at the ``weight`` point; it takes ``policy.bias_cast`` and is
        never FP8-scaled (it is not a GEMM operand).
        """
        spec = self.policy.bias_cast if bias else self.policy.cast(point)
        scaling = {}
        if not bias and point in self.recipes.points and self.kept_out(layer):
            spec = self._kept_cast  # a layer the block recipe keeps in high precision
            y = values = self.round(x, spec, point, layer)
        elif not bias and point in self.recipes.points:  # scaled casts are never the identity
            if self._block_scaled and point in GEMM_AXES:
                self._sources[layer, point] = x  # the second GEMM quantizes it along its own axis
            axis = GEMM_AXES.get(point, (-1,))[0]
            gemm = GEMM_USES[point][0] if point in GEMM_USES else None
            y, values, scaling = self._scaled(x, point, layer, axis, gemm)
        elif self.is_identity(spec, x, already):
            y = values = x
        else:
            y = values = self.round(x, spec, point, layer)
        if self.observer is not None:
            self.observer.record(layer, self._index[point], x, values, spec, **scaling)
        self.trace.append((layer, point, values))
        return y

    def kept_out(self, layer: int) -> bool:
        """True when the block recipe keeps ``layer`` in high precision (BF16, unscaled)."""
        if not self._kept_layers:
            return False
        if self.layers is None:
            if any(l < 0 for l in self._kept_layers):
                raise ValueError("the policy's recipe keeps layers counted from the last "
                                 f"({self._kept_layers}) in high precision: set the Caster's "
                                 "layers (the model's number of layers)")
            return layer in self._kept_layers
        return layer in {l % self.layers for l in self._kept_layers}

    def _scaled(self, x, point: str, layer: int, axis: int, gemm: str | None):
        """(what the model holds, its values, what the observer needs) for a scaled cast."""
        tensor, record = self.recipes.cast(x, point, layer, axis, gemm=gemm, rng=self.rng)
        values = self.xp.asarray(tensor.dequantize(), dtype=x.dtype)
        scaling = {}
        if self.observer is not None:
            # the observer judges value / decode scale against the format's limits
            decode = (tensor.decode_scales().astype(np.float32) if tensor.block_scaled
                      else tensor.scale_inv)
            scaling = {"decode_scale": decode, "clipped": int(round(record.clipped * x.size))}
            if tensor.block_scaled:
                scaling["blocks"] = block_statistics(x, tensor)
        return (tensor if point in GEMM_AXES else values), values, scaling

    def second_use(self, y: np.ndarray | ScaledTensor, point: str,
                   layer: int) -> np.ndarray | ScaledTensor:
        """``y`` (this step's result at ``point``) as the operand of its second GEMM.

        The same value, except under block scaling (MX), where the unrounded tensor is
        quantized again in blocks along the second GEMM's reduction axis (see GEMM_AXES). 2-D
        tiles (NVFP4's 16x16 weights) serve both GEMMs: the same tensor, unless the second GEMM
        transforms its operands (the recipe's ``rht_gemms``).
        """
        source = self._sources.pop((layer, point), None)
        if source is None:
            return y
        gemm = GEMM_USES[point][1]
        if (isinstance(y, ScaledTensor) and isinstance(y.block_size, tuple)
                and gemm not in getattr(self.policy.fp8_recipe, "rht_gemms", ())):
            return y
        tensor, _ = self.recipes.cast(source, point, layer, GEMM_AXES[point][1], gemm=gemm,
                                      rng=self.rng)
        self.trace.append((layer, point, self.xp.asarray(tensor.dequantize(), dtype=source.dtype)))
        return tensor

    def apply(self, x: np.ndarray, spec: Cast | None, point: str, layer: int) -> np.ndarray:
        """``x`` rounded by ``spec`` (which may differ from the policy's): not observed, traced
        or FP8-scaled (the stored weights and the pure low-precision update use it)."""
        return x if self.is_identity(spec, x, None) else self.round(x, spec, point, layer)

    def is_identity(self, spec: Cast | None, x: np.ndarray,
                    already: Cast | None = None) -> bool:
        """True when rounding ``x`` by ``spec`` provably changes nothing."""
        if spec is None:
            return True
        if already is not None and spec.contains(already):
            return True
        # Every float32 is an FP32 value: rounding a float32 array to FP32 changes nothing.
        return (spec.format.name == "fp32" and spec.subnormals and spec.overflow is None
                and x.dtype == np.float32)

    def round(self, x: np.ndarray, spec: Cast, point: str, layer: int) -> np.ndarray:
        """Round ``x`` as ``spec`` says (no scaling). The hook a GPU backend overrides."""
        return round_to_format(x, spec.format, spec.mode, overflow=spec.overflow,
                               subnormals=spec.subnormals,
                               rng=self.rng if spec.mode == "stochastic" else None)

    def fp8_step_stats(self, layers: int) -> dict | None:
        """This step's FP8 cast statistics as arrays (layers, points), or None without a recipe
        (see :meth:`RecipeStates.step_arrays`)."""
        return self.recipes.step_arrays(layers)

    def frozen_copy(self, rng: np.random.Generator | None = None) -> Caster:
        """A Caster for evaluation: copies of the FP8 states, used but never updated."""
        return Caster(self.policy, rng=rng, xp=self.xp,
                      fp8_states=copy.deepcopy(self.recipes.states), frozen=True,
                      layers=self.layers)

    # --- matmul and step bookkeeping --------------------------------------------------------
    def matmul(self, a: np.ndarray | ScaledTensor, b: np.ndarray | ScaledTensor,
               gemm: str | None = None) -> np.ndarray:
        """``a @ b`` with the policy's accumulator (the operands are already rounded).

        ``gemm`` ("fprop", "dgrad", "wgrad"; see GEMM_OPERANDS) names the cast points the
        operands come from, so that the accumulator knows the formats they hold (ScaledTensor
        operands carry their own); None: not known.
        """
        if gemm is not None and gemm not in self._held:
            raise ValueError(f"unknown GEMM {gemm!r}; valid: None, "
                             f"{', '.join(map(repr, GEMM_OPERANDS))}")
        held = self._held[gemm] if gemm is not None else None
        out = self.policy.accumulate.matmul(a, b, held=held)
        return self.xp.asarray(out, dtype=a.dtype)

    def _held_format(self, point: str):
        """The format every value cast at ``point`` lies in: the point's own (a value it already
        held is in a format the point's contains), or None where the point does not round."""
        spec = self.policy.cast(point)
        if point in self.recipes.points:  # scaled tensors carry their formats; a plain array
            return None  # there comes from a layer kept in high precision
        return None if spec is None else spec.format

    def begin_step(self, observer: Observer | None = None) -> None:
        """Start a step; ``observer`` (or None: observation off) records this step's casts."""
        self.observer, self.trace, self._sources = observer, [], {}
        self.recipes.begin_step()
        if observer is not None:
            observer.begin_step()

    def end_step(self) -> None:
        """Drop this step's tensors and the observer (which keeps its statistics)."""
        self.observer, self.trace, self._sources = None, [], {}

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

