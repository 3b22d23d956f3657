"""MX block scaling: blocks of 32 along the reduction axis share one power-of-two (E8M0) scale.

Each block of ``block_size`` consecutive values along ``axis`` (the dimension a matmul sums
over) gets a decode scale ``X = 2**e``; elements are stored as ``P = round(V / X)`` in the
element format and read back as ``P * X``. Two rules choose ``e`` from the block's amax:

* ``"ocp"``: the OCP MX v1.0 conversion, as its authors' reference code runs it
  (microsoft/microxcaling mx/mx_ops.py ``_quantize_mx``; gfloat ``compute_scale_amax`` agrees):
  ``e = floor(log2(amax)) - emax_elem``, clamped below at -127 (an all-zero block gets
  2**-127); elements round to nearest-even and saturate. The largest element can land above
  the format's max (E4M3: amax with significand above 1.75), and is then clipped to max.
  A block holding inf or NaN gets a NaN scale, so the whole block reads back as NaN
  (microxcaling turns an out-of-range shared exponent into NaN).
* ``"te"``: Transformer Engine's MXFP8 cast (transformer_engine/common/util/ptx.cuh
  ``float_to_e8m0`` and ``exp2f_rcp``; cast kernels in util/cast_kernels.cuh): the code is
  ``float_to_e8m0(amax * float32(1 / fmt.max))`` rounded *up* to a power of two, i.e.
  ``X = 2**ceil(log2(amax / fmt.max))``, so nothing clips; elements are
  ``satfinite(x * (1 / X))``. TE's corner cases are kept: amax ignores NaN (``fmaxf``);
  when the code is 0 (amax at most about fmt.max * 2**-127) the reciprocal is 1, which
  flushes the block to zero; an infinite amax gives code 254 whose reciprocal is 0, so finite
  elements read back 0 and the inf reads back NaN.

Both run through :func:`lowprec.scaling.block_cast` (rules "floor" and "rceil_te"), which has
the other rules in use (torchao's, NVFP4, 1x128 / 128x128 blocks).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ..formats import E2M1, E2M3, E3M2, E4M3, E5M2, FormatLike, as_format
from .block import _e8m0_exact, _te_codes, block_cast
from .fp8 import ROLES, CastRecord, RecipeState, as_float32_array, format_for
from .tensor import ScaledTensor

__all__ = ["MX_RULES", "MX_ELEMENTS", "MXBlockScaling", "MXState", "mx_cast", "mx_quantize",
           "mx_scale_exponents"]

MX_RULES = ("te", "ocp")
MX_ELEMENTS = (E4M3, E5M2, E3M2, E2M3, E2M1)  # MXFP8, MXFP6, MXFP4 element formats (OCP MX v1.0)
_E8M0_BIAS = 127
_BLOCK_RULE = {"te": "rceil_te", "ocp": "floor"}  # the names of these rules in block_cast


def mx_scale_exponents(block_amax: ArrayLike, fmt: FormatLike, rule: str) -> np.ndarray:
    """Unbiased exponents ``e`` (float64; NaN for a NaN scale) of the blocks' scales ``2**e``."""
    fmt = as_format(fmt)
    if rule not in MX_RULES:
        raise ValueError(f"unknown MX rule {rule!r}; valid: {', '.join(MX_RULES)}")
    amax = np.asarray(block_amax, np.float32)
    if rule == "te":
        codes = _te_codes(amax, fmt)
        return np.where(codes == 0xFF, np.nan, codes - float(_E8M0_BIAS))
    return _e8m0_exact(amax, fmt, "floor")


def mx_quantize(x: ArrayLike, fmt: FormatLike = "e4m3", *, rule: str = "te",
                block_size: int = 32, axis: int = -1) -> tuple[np.ndarray, CastRecord]:
    """Block-scale ``x`` along ``axis``; return ``(values, CastRecord)``.

    ``values`` (float32, the shape of ``x``) are the elements read back, ``P * X``;
    ``record.block_scales`` holds each block's decode scale ``X`` with ``axis`` running over
    blocks. A last block shorter than ``block_size`` holds what is left.
    """
    tensor, record = mx_cast(x, fmt, rule=rule, block_size=block_size, axis=axis)
    return tensor.dequantize(), record


def mx_cast(x: ArrayLike, fmt: FormatLike = "e4m3", *, rule: str = "te", block_size: int = 32,
            axis: int = -1) -> tuple[ScaledTensor, CastRecord]:
    """:func:`mx_quantize` as a value: ``(ScaledTensor, CastRecord)``, the tensor holding the
    elements ``P`` (NaN where the read-back is NaN) and the block scales ``X``. The record is a
    :class:`~lowprec.scaling.block.BlockRecord` (a CastRecord with the codes): this is
    :func:`~lowprec.scaling.block.block_cast` with rule "rceil_te" ("te") or "floor" ("ocp")."""
    fmt = as_format(fmt)
    if fmt not in MX_ELEMENTS:
        raise ValueError(f"{fmt.name} is not an MX element format; valid: "
                         + ", ".join(f.name for f in MX_ELEMENTS))
    if rule not in MX_RULES:
        raise ValueError(f"unknown MX rule {rule!r}; valid: {', '.join(MX_RULES)}")
    if rule == "te" and fmt not in (E4M3, E5M2):
        raise ValueError(f"Transformer Engine's MXFP8 rule covers e4m3 and e5m2, not {fmt.name}")
    if (isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer))
            or block_size < 1):
        raise ValueError(f"block_size must be an int >= 1, got {block_size!r}")
    x32 = as_float32_array(x)
    if x32.ndim == 0:
        raise ValueError("MX block scaling needs an array with at least one dimension")
    if not -x32.ndim <= axis < x32.ndim:
        raise ValueError(f"axis {axis} is out of range for an array with {x32.ndim} dimensions")
    return block_cast(x32, fmt, block=int(block_size), scale_format="e8m0",
                      rule=_BLOCK_RULE[rule], axis=axis)


@dataclass(frozen=True)
class MXBlockScaling:
    """MX block scaling (TE ``MXFP8BlockScaling``; or the OCP rule). Defaults are TE's."""

    rule: str = "te"  # "te": scale rounded up, nothing clips; "ocp": OCP MX v1.0 floor rule
    fp8_format: str = "e4m3"  # "e4m3" (TE default), "e5m2", "hybrid", or an MX element format
    block_size: int = 32  # elements sharing one E8M0 scale
    axis: int = -1  # default reduction axis when quantize() is given none

    block_scaled = True  # one scale per block along the GEMM's reduction axis

    def __post_init__(self):
        if self.rule not in MX_RULES:
            raise ValueError(f"unknown MX rule {self.rule!r}; valid: {', '.join(MX_RULES)}")
        for role in ROLES:
            mx_check = format_for(self.fp8_format, role)
            if mx_check not in MX_ELEMENTS:
                raise ValueError(f"{self.fp8_format!r} is not an MX element format")

    def new_state(self, role: str = "forward") -> MXState:
        return MXState(self, role)


class MXState(RecipeState):
    """Per-tensor handle for :class:`MXBlockScaling` (it keeps no history)."""

    recipe_type = MXBlockScaling

    def cast(self, x: ArrayLike, *, axis: int | None = None) -> tuple[ScaledTensor, CastRecord]:
        """(ScaledTensor, CastRecord): ``x`` block-scaled along ``axis`` (default: the recipe's)."""
        r = self.recipe
        return mx_cast(x, self.fmt, rule=r.rule, block_size=r.block_size,
                           axis=r.axis if axis is None else axis)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"MX block scaling keeps no state, got keys {sorted(state)}")
