"""Per-tensor FP8 scaling recipes as Transformer Engine runs them: delayed and current scaling.

An FP8 cast multiplies a tensor by a scale, rounds it to E4M3 or E5M2 and keeps
``scale_inv = 1 / scale`` to undo the scale after the matmul. The recipe decides the scale:

* :class:`DelayedScaling` (TE ``recipe.DelayedScaling``): the scale of step t comes from the
  amaxes of earlier steps, kept in an amax history. Per step (TE's cast kernel, then
  ``amax_and_scale_update`` in transformer_engine/common/recipe/delayed_scaling.cu):

  1. cast ``x`` with the current ``scale``; write ``amax(|x|)`` into ``history[0]``;
  2. ``amax`` = max of the whole history ("max") or ``history[0]`` ("most_recent");
  3. ``scale = (fp8_max / 2**margin) / amax`` in float32, but the previous scale is kept when
     amax is 0 or not finite, and an infinite scale becomes FLT_MAX (pytorch
     ``_default_sf_compute``); ``scale_inv = 1 / scale``;
  4. roll the history by -1 (``history[0]`` moves to the end) and zero ``history[0]``.

  So the window holds the last ``amax_history_len`` amaxes, and a step's own amax first
  affects the next step. The first step uses scale 1.
* :class:`CurrentScaling` (TE ``Float8CurrentScaling``): ``scale = fp8_max / max(amax, eps)``
  from the tensor itself (recipe_common.cuh ``compute_scale_from_amax``); amax 0 or non-finite
  gives 1, an infinite scale FLT_MAX; ``power_2_scale`` truncates it to a power of two.

The FP8 casts saturate: TE casts through ``__nv_fp8_e4m3(float)`` / ``__nv_fp8_e5m2(float)``,
whose constructors use ``__NV_SATFINITE`` (CUDA Math API, "relies on __NV_SATFINITE behavior
for out-of-range values"): beyond the maximum, infinities included, become +-max; NaN stays NaN.
That is unlike ml_dtypes, whose E4M3 cast overflows to NaN and E5M2 cast to inf. amax ignores
NaN, as TE's ``fmaxf`` reductions do. HYBRID = E4M3 forward, E5M2 backward (gradients).

Use: ``state = DelayedScaling().new_state("forward")`` once per tensor, then every step
``values, record = quantize(x, state)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from ..formats import E4M3, E5M2, FloatFormat, as_format
from ..rounding import as_real_array, round as round_to
from .tensor import ScaledTensor

if TYPE_CHECKING:  # mx imports this module
    from .mx import MXBlockScaling

__all__ = ["FP8_FORMATS", "ROLES", "CastRecord", "format_for", "satfinite_cast", "amax_of",
           "DelayedScaling", "DelayedScalingState", "CurrentScaling", "CurrentScalingState",
           "quantize", "scaled_cast"]

FP8_FORMATS = ("hybrid", "e4m3", "e5m2")  # TE recipe.Format members
ROLES = ("forward", "backward")  # forward: activations and weights; backward: gradients
AMAX_ALGOS = ("max", "most_recent")
FLT_MAX = np.float32(np.finfo(np.float32).max)  # what TE puts in place of an infinite scale


def format_for(fp8_format: str, role: str) -> FloatFormat:
    """The element format a recipe uses for a role: HYBRID is E4M3 forward, E5M2 backward."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
    if fp8_format == "hybrid":
        return E4M3 if role == "forward" else E5M2
    return as_format(fp8_format)


def _check_fp8_format(fp8_format: str, allowed=FP8_FORMATS) -> None:
    if fp8_format not in allowed:
        raise ValueError(f"unknown fp8_format {fp8_format!r}; valid: {', '.join(allowed)}")


def as_float32_array(x: ArrayLike) -> np.ndarray:
    """``x`` as a float32 array (TE's widest input type); rejects non-real input clearly."""
    return as_real_array(x).astype(np.float32, copy=False)


def amax_of(x: np.ndarray) -> np.float32:
    """max |x| ignoring NaN (fmaxf drops NaN); 0 for an empty or all-NaN tensor."""
    if x.size == 0:
        return np.float32(0.0)
    amax = np.abs(x).max()
    if np.isnan(amax):  # rare: only then pay for masking the NaNs out
        mags = np.abs(x[~np.isnan(x)])
        amax = mags.max() if mags.size else 0.0
    return np.float32(amax)


def satfinite_cast(x32: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """Round float32 values to ``fmt`` with CUDA's ``__NV_SATFINITE`` overflow rule."""
    fmax = np.float32(fmt.max)
    # lowprec.round keeps an infinite input infinite in formats that have infinities (E5M2);
    # SATFINITE sends it to +-max. Clamping first (NaN passes through) and rounding to nearest
    # gives the same as rounding with overflow="saturate", infinities included.
    return round_to(np.clip(x32, -fmax, fmax), fmt, overflow="saturate")


@dataclass(frozen=True)
class CastRecord:
    """Statistics of one FP8 cast, for the training history."""

    fmt: str  # element format the values were rounded to
    amax: float  # max |x| of the input (NaN ignored)
    scale: float | None  # per-tensor multiplier applied before rounding (None for block recipes)
    scale_inv: float | None  # per-tensor factor applied after rounding (None for block recipes)
    clipped: float  # fraction of elements whose scaled magnitude exceeded the max (saturated)
    flushed: float  # fraction of elements, non-zero and finite, that became zero
    # MX: decode scale per block
    block_scales: np.ndarray | None = field(default=None, compare=False)


def cast_statistics(x32: np.ndarray, scaled: np.ndarray, out: np.ndarray,
                    fmt: FloatFormat) -> tuple[float, float]:
    """(clipped, flushed) fractions of a cast of ``x32``: ``scaled`` was rounded, giving ``out``."""
    size = max(x32.size, 1)
    fmax = np.float32(fmt.max)
    # |scaled| > max, inf included and NaN not, without an abs pass (NaN compares false).
    clipped = (np.count_nonzero(scaled > fmax) + np.count_nonzero(scaled < -fmax)) / size
    # Flushed: out == 0 where x is finite and nonzero. Zeros in out are usually few: test x
    # at those places only, unless they are many (then one pass over all of x is cheaper).
    zero = out == 0
    if np.count_nonzero(zero) * 8 <= zero.size and zero.shape == np.shape(x32):
        at = np.asarray(x32)[zero]
        flushed = np.count_nonzero((at != 0) & np.isfinite(at)) / size
    else:
        flushed = np.count_nonzero(zero & (x32 != 0) & np.isfinite(x32)) / size
    return float(clipped), float(flushed)


def _per_tensor_cast(x32, scale: np.float32, scale_inv: np.float32, fmt, amax):
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = x32 * scale  # float32 product, as the cast kernel computes it
        rounded = satfinite_cast(scaled, fmt)
    tensor = ScaledTensor(rounded, fmt, scale_inv)
    clipped, flushed = cast_statistics(x32, scaled, rounded, fmt)
    record = CastRecord(fmt.name, float(amax), float(scale), float(scale_inv), clipped, flushed)
    return tensor, record


@dataclass(frozen=True)
class DelayedScaling:
    """Transformer Engine's delayed scaling recipe; defaults are TE's."""

    margin: int = 0  # scale = (fp8_max / amax) / 2**margin: headroom in powers of two
    amax_history_len: int = 1024  # how many steps of amax the window keeps
    amax_compute_algo: str = "max"  # "max" over the window, or "most_recent"
    fp8_format: str = "hybrid"  # "hybrid" (E4M3 forward, E5M2 backward), "e4m3" or "e5m2"

    block_scaled = False  # one scale per tensor

    def __post_init__(self):
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, np.integer)):
            raise TypeError(f"margin must be an int, got {self.margin!r}")
        if (isinstance(self.amax_history_len, bool)
                or not isinstance(self.amax_history_len, (int, np.integer))
                or self.amax_history_len < 1):
            raise ValueError(f"amax_history_len must be an int >= 1, got {self.amax_history_len!r}")
        if self.amax_compute_algo not in AMAX_ALGOS:
            raise ValueError(f"unknown amax_compute_algo {self.amax_compute_algo!r}; "
                             f"valid: {', '.join(AMAX_ALGOS)}")
        _check_fp8_format(self.fp8_format)

    def new_state(self, role: str = "forward") -> DelayedScalingState:
        """Fresh per-tensor state: scale 1, an all-zero amax history."""
        return DelayedScalingState(self, role)


class RecipeState:
    """What every recipe's per-tensor handle holds: the recipe, the tensor's role and the format
    that role casts to. Subclasses name their recipe class in ``recipe_type`` and define
    ``cast(x, axis=...) -> (ScaledTensor, CastRecord)``."""

    recipe_type: type = object

    def __init__(self, recipe: DelayedScaling | CurrentScaling | MXBlockScaling,
                 role: str = "forward") -> None:
        if not isinstance(recipe, self.recipe_type):
            raise TypeError(f"recipe must be of type {self.recipe_type.__name__}, "
                            f"got {type(recipe).__name__}")
        self.recipe = recipe
        self.role = role
        self.fmt = format_for(recipe.fp8_format, role)

    def quantize(self, x: ArrayLike, *, axis: int | None = None,
                 **options: bool) -> tuple[np.ndarray, CastRecord]:
        """(values, CastRecord): :meth:`cast`, with the tensor dequantized to float32."""
        tensor, record = self.cast(x, axis=axis, **options)
        return tensor.dequantize(), record


class DelayedScalingState(RecipeState):
    """One tensor's scale, scale_inv and amax history under :class:`DelayedScaling`."""

    recipe_type = DelayedScaling

    def __init__(self, recipe: DelayedScaling, role: str = "forward"):
        super().__init__(recipe, role)
        self.scale = np.float32(1.0)
        self.scale_inv = np.float32(1.0)
        self.amax_history = np.zeros(recipe.amax_history_len, np.float32)  # [0] is the current step

    def cast(self, x: ArrayLike, *, axis: int | None = None,
             update: bool = True) -> tuple[ScaledTensor, CastRecord]:
        """(ScaledTensor, CastRecord): ``x`` cast with the current scale; its amax is recorded,
        then (by default) the scale updated.

        ``update=False`` leaves the scale for a later :meth:`update`, as TE does when one
        step casts a tensor several times (amaxes within a step are combined by max).
        ``axis`` is accepted for a uniform call and ignored: the scale is per tensor.
        """
        x32 = as_float32_array(x)
        amax = amax_of(x32)
        tensor, record = _per_tensor_cast(x32, self.scale, self.scale_inv, self.fmt, amax)
        self.amax_history[0] = max(self.amax_history[0], amax)  # atomicMaxFloat into history[0]
        if update:
            self.update()
        return tensor, record

    def update(self) -> None:
        """TE's ``amax_and_scale_update``: new scale from the history, then roll it."""
        history = self.amax_history
        amax = history.max() if self.recipe.amax_compute_algo == "max" else history[0]
        if np.isfinite(amax) and amax > 0:
            scaled_max = np.float32(self.fmt.max * 2.0 ** -self.recipe.margin)
            with np.errstate(over="ignore"):
                scale = scaled_max / amax  # float32 division, correctly rounded
            self.scale = FLT_MAX if np.isinf(scale) else scale
        self.scale_inv = np.float32(1.0) / self.scale
        self.amax_history = np.roll(history, -1)
        self.amax_history[0] = 0.0

    def state_dict(self) -> dict:
        """scale, scale_inv and the history, as TE checkpoints its fp8 meta."""
        return {"scale": float(self.scale), "scale_inv": float(self.scale_inv),
                "amax_history": [float(a) for a in self.amax_history]}

    def load_state_dict(self, state: dict) -> None:
        history = np.asarray(state["amax_history"], np.float32)
        if history.shape != (self.recipe.amax_history_len,):
            raise ValueError(f"amax_history has shape {history.shape}, the recipe keeps "
                             f"{self.recipe.amax_history_len} steps")
        self.scale = np.float32(state["scale"])
        self.scale_inv = np.float32(state["scale_inv"])
        self.amax_history = history.copy()


@dataclass(frozen=True)
class CurrentScaling:
    """Transformer Engine's Float8CurrentScaling: the scale from the tensor being cast."""

    fp8_format: str = "hybrid"  # "hybrid" (E4M3 forward, E5M2 backward), "e4m3" or "e5m2"
    amax_epsilon: float = 0.0  # amax below this is taken as this (TE default 0)
    power_2_scale: bool = False  # truncate the scale to a power of two (TE force_pow_2_scales)

    block_scaled = False  # one scale per tensor

    def __post_init__(self):
        _check_fp8_format(self.fp8_format)
        if not (np.isfinite(self.amax_epsilon) and self.amax_epsilon >= 0):
            raise ValueError(f"amax_epsilon must be finite and >= 0, got {self.amax_epsilon!r}")
        if not isinstance(self.power_2_scale, bool):
            raise TypeError(f"power_2_scale must be True or False, got {self.power_2_scale!r}")

    def new_state(self, role: str = "forward") -> CurrentScalingState:
        return CurrentScalingState(self, role)

    def scale_for(self, amax: float, fmt: FloatFormat) -> np.float32:
        """``compute_scale_from_amax`` (recipe_common.cuh) in float32."""
        amax = np.float32(amax)
        if amax < np.float32(self.amax_epsilon):  # NaN compares false and falls through
            amax = np.float32(self.amax_epsilon)
        if not np.isfinite(amax) or amax == 0:
            return np.float32(1.0)
        with np.errstate(over="ignore"):
            scale = np.float32(fmt.max) / amax
        if np.isinf(scale):
            scale = FLT_MAX
        if self.power_2_scale:  # keep sign and exponent bits: round down to a power of two
            scale = (scale.view(np.uint32) & np.uint32(0xFF800000)).view(np.float32)
        return np.float32(scale)


class CurrentScalingState(RecipeState):
    """Per-tensor handle for :class:`CurrentScaling` (it keeps no history)."""

    recipe_type = CurrentScaling

    def cast(self, x: ArrayLike, *, axis: int | None = None) -> tuple[ScaledTensor, CastRecord]:
        """(ScaledTensor, CastRecord): ``x`` cast with the scale computed from ``x`` itself
        (``axis`` is ignored)."""
        x32 = as_float32_array(x)
        amax = amax_of(x32)
        scale = self.recipe.scale_for(amax, self.fmt)
        return _per_tensor_cast(x32, scale, np.float32(1.0) / scale, self.fmt, amax)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"current scaling keeps no state, got keys {sorted(state)}")


def scaled_cast(x: ArrayLike, state: RecipeState, *,
                axis: int | None = None) -> tuple[ScaledTensor, CastRecord]:
    """Cast ``x`` to FP8 under ``state``'s recipe: return ``(ScaledTensor, CastRecord)``.

    The tensor carries the elements and decode scale(s); ``state`` is from
    ``recipe.new_state(role)`` and is updated (delayed scaling's history). ``axis`` is the
    reduction axis of the matmul the tensor feeds; only block recipes (MX) use it.
    """
    if not hasattr(state, "cast"):
        raise TypeError(f"state must come from a recipe's new_state(), got {type(state).__name__}")
    return state.cast(x, axis=axis)


def quantize(x: ArrayLike, state: RecipeState, *,
             axis: int | None = None) -> tuple[np.ndarray, CastRecord]:
    """Cast ``x`` to FP8 under ``state``'s recipe: return ``(values, CastRecord)``.

    ``values`` are the FP8 values mapped back to the input's scale (float32); ``state`` is
    from ``recipe.new_state(role)`` and is updated (delayed scaling's history). ``axis`` is the
    reduction axis of the matmul the tensor feeds; only block recipes (MX) use it.
    """
    if not hasattr(state, "quantize"):
        raise TypeError(f"state must come from a recipe's new_state(), got {type(state).__name__}")
    return state.quantize(x, axis=axis)
