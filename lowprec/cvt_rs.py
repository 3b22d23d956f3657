"""PTX ``cvt.rs``: the GPU's stochastic rounding, with the random bits as an operand.

Blackwell GPUs (sm_100a, sm_103a) convert float32 to low precision with stochastic rounding in
one instruction that takes its random bits from the caller (PTX ISA, section "Data Movement and
Conversion Instructions: cvt", PTX ISA 8.7 and later)::

    cvt.rs{.relu}{.satfinite}.f16x2.f32     d, a, b, rbits;       // d: .b32
    cvt.rs{.relu}{.satfinite}.bf16x2.f32    d, a, b, rbits;       // d: .b32
    cvt.rs{.relu}.satfinite.e4m3x4.f32      d, {a, b, e, f}, rbits;  // also e5m2x4, d: .b32
    cvt.rs{.relu}.satfinite.e2m3x4.f32      d, {a, b, e, f}, rbits;  // also e3m2x4, d: .b32
    cvt.rs{.relu}.satfinite.e2m1x4.f32      d, {a, b, e, f}, rbits;  // d: .b16

What the PTX ISA states, and how this module models it:

* **Packing of d.** The first operand lands in the most significant field: ``d[31:16] = a``,
  ``d[15:0] = b`` for the x2 forms; ``a, b, e, f`` in the 8-bit fields from the top for
  FP8/FP6 (an FP6 code in the low 6 bits of its byte, the top 2 bits zero); in the 4-bit fields
  from the top of the 16-bit ``d`` for E2M1.
* **Which bits of rbits go to which element** (``rbits`` is a ``.b32`` register):
  f16x2: the 13 low bits of each 16-bit half, ``rbits[28:16]`` for ``a`` and ``rbits[12:0]``
  for ``b`` (the PTX ISA says the 3 high bits of each half are 0; the model ignores them);
  bf16x2: ``rbits[31:16]`` for ``a``, ``rbits[15:0]`` for ``b``;
  FP8/FP6 x4: the upper 16 bits serve ``a, b`` and the lower 16 bits ``e, f``;
  e2m1x4: the upper byte of each 16-bit half serves ``a, b``, the lower byte of each ``e, f``.
  How a pair's 16 bits are split between its two elements is not spelt out in the text, so it
  is this module's assumption, written once in :data:`CVT_RS` (see below) and checked on a
  device by ``python -m lowprec gpu-check``, which also tries the alternatives in
  :data:`RBITS_LAYOUT_CANDIDATES`.
* **Random bits per element**: 13 for FP16 and 16 for BF16, exactly the float32 mantissa bits
  those formats drop in their normal range; 8 for the FP8, FP6 and FP4 forms (the pair's 16
  bits, one byte each: the model's assumption above). Transformer Engine's software E2M1
  rounder for GPUs without ``cvt.rs`` (NVIDIA TransformerEngine PR #3281) also takes 8 random
  bits per element, stating that this is what ``cvt.rs.satfinite.e2m1x4.f32`` takes; where it
  adds them as described next, ``round_with_bits(x, "e2m1", r, bits=8, overflow="saturate")``
  models it (not checked against its code).
* **Where they are added**: to the bits just below the last bit the target keeps, then the
  result is truncated (:func:`lowprec.rounding.round_with_bits`). For a normal FP16/BF16 result
  that is the integer sum of the float32 bit pattern and the random bits, cut to the top 16
  bits. Where the result is subnormal the model aligns the random bits below the subnormal
  quantum too (the rounding stays unbiased); a device that instead adds them at fixed float32
  positions would round subnormal results almost always toward zero, and gpu-check shows it.
* **.satfinite**: a NaN input gives NaN (written here as the positive code with every exponent
  and mantissa bit set: 0x7FFF for FP16 and BF16, 0x7F for E4M3 and E5M2); a value, infinity
  included, whose rounded magnitude exceeds the format's largest finite value gives that value
  with the input's sign. Without ``.satfinite`` (FP16/BF16 only) overflow gives infinity.
  E2M3, E3M2 and E2M1 have no NaN: the model refuses NaN inputs for them (ValueError) rather
  than guess an encoding.
* **.relu**: negative results (and -0) become +0; NaN stays NaN.

Inputs are float32 values (the ``.f32`` operands); a float64 array is accepted only when every
value is a float32 value.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from numpy.typing import ArrayLike

from .bits import encode
from .formats import BF16, E2M1, E2M3, E3M2, E4M3, E5M2, FP16, FloatFormat
from .rounding import as_real_array, round_with_bits

__all__ = ["CvtRs", "CVT_RS", "RBITS_LAYOUT_CANDIDATES", "cvt_rs", "element_rbits"]


@dataclass(frozen=True)
class CvtRs:
    """One ``cvt.rs`` destination type: its format, packing and random-bit layout."""

    name: str  # the PTX destination type, e.g. "e4m3x4"
    fmt: FloatFormat  # the element format
    field_bits: int  # width of each element's field in d (16, 8 or 4)
    rbits_fields: tuple  # (shift, width) in rbits of each operand's random bits, PTX order
    satfinite_optional: bool  # True where PTX allows omitting .satfinite (f16x2, bf16x2)
    nan_code: int | None  # the code written for a NaN result (None: the format has no NaN)

    @property
    def lanes(self) -> int:
        """How many float32 operands one instruction converts (2 or 4)."""
        return len(self.rbits_fields)

    @property
    def random_bits(self) -> int:
        """Random bits each element uses."""
        return self.rbits_fields[0][1]

    @property
    def ptx(self) -> str:
        """The instruction's PTX opcode (with .satfinite)."""
        return f"cvt.rs.satfinite.{self.name}.f32"

    @property
    def result_dtype(self) -> np.dtype:
        """The dtype of d: uint32 (.b32), or uint16 (.b16) for e2m1x4."""
        return np.dtype(np.uint32 if self.field_bits * self.lanes == 32 else np.uint16)


_BYTES = ((24, 8), (16, 8), (8, 8), (0, 8))  # a, b, e, f: one byte each, from the top
CVT_RS = MappingProxyType({c.name: c for c in (
    CvtRs("f16x2", FP16, 16, ((16, 13), (0, 13)), True, 0x7FFF),
    CvtRs("bf16x2", BF16, 16, ((16, 16), (0, 16)), True, 0x7FFF),
    CvtRs("e4m3x4", E4M3, 8, _BYTES, False, 0x7F),
    CvtRs("e5m2x4", E5M2, 8, _BYTES, False, 0x7F),
    CvtRs("e2m3x4", E2M3, 8, _BYTES, False, None),
    CvtRs("e3m2x4", E3M2, 8, _BYTES, False, None),
    # a, b: the upper byte of the upper and of the lower half; e, f: the lower bytes
    CvtRs("e2m1x4", E2M1, 4, ((24, 8), (8, 8), (16, 8), (0, 8)), False, None),
)})

# Other readings of the PTX text for the x4 forms (gpu-check reports which one a device
# matches): "shared" gives both elements of a pair the pair's whole 16 bits.
RBITS_LAYOUT_CANDIDATES = MappingProxyType({
    "bytes_from_top": _BYTES,
    "upper_bytes_to_a_b": ((24, 8), (8, 8), (16, 8), (0, 8)),
    "pair_shares_16": ((16, 16), (16, 16), (0, 16), (0, 16)),
})


def _instruction(dtype: str | CvtRs) -> CvtRs:
    if isinstance(dtype, CvtRs):
        return dtype
    if dtype not in CVT_RS:
        raise ValueError(f"unknown cvt.rs destination type {dtype!r}; valid: "
                         f"{', '.join(CVT_RS)}")
    return CVT_RS[dtype]


def element_rbits(dtype: str | CvtRs, rbits: ArrayLike) -> list:
    """Each operand's random integer, taken from the 32-bit ``rbits`` by the layout of ``dtype``
    (a name in :data:`CVT_RS`, or a :class:`CvtRs` with another layout)."""
    instr = _instruction(dtype)
    r = np.asarray(rbits)
    if r.dtype.kind not in "iu":
        raise TypeError(f"rbits must be 32-bit integers, got dtype {r.dtype}")
    if r.size and (r.min() < 0 or r.max() > 0xFFFFFFFF):
        raise ValueError("rbits must lie in 0..2**32 - 1 (one .b32 register per instruction)")
    r = r.astype(np.uint32)
    return [(r >> np.uint32(shift)) & np.uint32((1 << width) - 1)
            for shift, width in instr.rbits_fields]


def _float32_operand(value: ArrayLike, name: str) -> np.ndarray:
    arr = as_real_array(value, name)
    if arr.dtype == np.float32:
        return arr
    with np.errstate(over="ignore", invalid="ignore"):
        as32 = arr.astype(np.float32)
    same = (as32 == arr) | (np.isnan(as32) & np.isnan(arr))
    if not same.all():
        raise ValueError(f"{name} holds {int((~same).sum())} value(s) that are not float32 "
                         "values; cvt.rs takes .f32 operands: round them to float32 first")
    return as32


def cvt_rs(dtype: str | CvtRs, operands: Sequence[ArrayLike], rbits: ArrayLike, *,
           satfinite: bool = True, relu: bool = False) -> np.ndarray:
    """The packed result ``d`` of ``cvt.rs{.relu}{.satfinite}.<dtype>.f32 d, operands, rbits``.

    ``dtype``: a name in :data:`CVT_RS` ("f16x2", "bf16x2", "e4m3x4", "e5m2x4", "e2m3x4",
    "e3m2x4", "e2m1x4") or a :class:`CvtRs`. ``operands``: ``(a, b)`` or ``(a, b, e, f)``,
    float32 arrays (broadcast together and with ``rbits``), one instruction per element.
    ``rbits``: the 32-bit random operand, one per instruction. Returns ``d`` as uint32 (uint16
    for e2m1x4), bit for bit what the module docstring says the device writes.
    """
    instr = _instruction(dtype)
    if len(operands) != instr.lanes:
        raise ValueError(f"cvt.rs.{instr.name} takes {instr.lanes} operands, got {len(operands)}")
    if not satfinite and not instr.satfinite_optional:
        raise ValueError(f"cvt.rs.{instr.name} requires .satfinite (PTX ISA, cvt)")
    xs = [_float32_operand(v, "ab"[i] if i < 2 else "ef"[i - 2]) for i, v in enumerate(operands)]
    randoms = element_rbits(instr, rbits)
    try:
        both = np.broadcast_arrays(*xs, *randoms)
    except ValueError:
        raise ValueError("the operands and rbits do not broadcast together: shapes "
                         f"{[x.shape for x in xs]} and {randoms[0].shape}") from None
    xs, randoms = both[:instr.lanes], both[instr.lanes:]
    fmt = instr.fmt
    d = np.zeros(xs[0].shape, instr.result_dtype)
    for lane, (x, r) in enumerate(zip(xs, randoms)):
        if satfinite:  # infinities saturate too; a finite |x| > max rounds to max either way
            x = np.where(np.isinf(x), np.copysign(np.float32(fmt.max), x), x)
        value = round_with_bits(x, fmt, r, bits=instr.rbits_fields[lane][1],
                                overflow="saturate" if satfinite else None)
        if relu:
            value = np.where(np.isnan(value) | (value > 0), value, 0).astype(value.dtype)
        codes = np.asarray(encode(value, fmt)).astype(np.uint32)
        if instr.nan_code is not None:
            codes = np.where(np.isnan(value), np.uint32(instr.nan_code), codes)
        shift = instr.field_bits * (instr.lanes - 1 - lane)
        d |= (codes << np.uint32(shift)).astype(instr.result_dtype)
    return d[()] if d.ndim == 0 else d
