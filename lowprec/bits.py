"""Between values and the integer codes a format stores, and ml_dtypes arrays.

Code layout, most significant bit first: sign (if the format is signed), exponent field,
mantissa field. NaN is written as the format's canonical quiet NaN with the input's sign
(IEEE: all-ones exponent and the top mantissa bit, ``0x7E  # S.11111.10`` in E5M2;
fn: ``0x7F  # S.1111.111`` in E4M3; fnuz: ``0x80``; E8M0: ``0xFF``), as ml_dtypes does.
"""
from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np
from numpy.typing import ArrayLike

from . import formats
from .formats import FloatFormat, FormatLike, as_format
from .rounding import ModeLike, as_real_array
from .rounding import round as _round

__all__ = ["encode", "decode", "code_dtype", "to_ml_dtypes", "from_ml_dtypes", "all_values",
           "ulp", "next_up", "next_down", "classify", "CLASSES"]

CLASSES = ("zero", "subnormal", "normal", "inf", "nan")


def code_dtype(fmt: FormatLike) -> np.dtype:
    """The smallest unsigned integer dtype that holds the format's codes (up to 64 bits)."""
    bits = as_format(fmt).bits
    return next(np.dtype(t) for t in (np.uint8, np.uint16, np.uint32, np.uint64)
                if 8 * np.dtype(t).itemsize >= bits)


def _sign_bit(fmt: FloatFormat, negative):
    """The sign bit of each code (uint64: in a 64-bit format it is bit 63)."""
    return negative.astype(np.uint64) << np.uint64(fmt.exponent_bits + fmt.mantissa_bits)


def _nan_code(fmt: FloatFormat, negative):
    e, m = fmt.exponent_bits, fmt.mantissa_bits
    if fmt.specials == "fnuz":
        return np.full(negative.shape, 1 << (fmt.bits - 1), np.uint64)
    if fmt.specials == "fn":
        body = (1 << (e + m)) - 1
    else:  # ieee: quiet NaN (has_nan needs a mantissa bit)
        body = (((1 << e) - 1) << m) | (1 << (m - 1))
    if not fmt.signed:
        return np.full(negative.shape, body, np.uint64)
    return np.uint64(body) | _sign_bit(fmt, negative)


def encode(x: ArrayLike, fmt: FormatLike, mode: ModeLike = "nearest",
           **round_options: object) -> np.ndarray:
    """Round ``x`` to ``fmt`` (``mode`` and ``round_options`` as for :func:`lowprec.round`) and
    return the codes."""
    fmt = as_format(fmt)
    v = np.asarray(_round(x, fmt, mode, **round_options), np.float64)
    e, m = fmt.exponent_bits, fmt.mantissa_bits
    negative = np.signbit(v)
    a = np.abs(v)
    with np.errstate(divide="ignore", invalid="ignore"):
        _, exp = np.frexp(a)  # a = frac * 2**exp with frac in [0.5, 1)
    unbiased = np.maximum(exp - 1, fmt.emin)  # subnormals share emin's quantum
    subnormal = a < fmt.tiny
    field = np.where(subnormal & fmt.has_zero, 0, unbiased + fmt.bias)
    quantum = np.ldexp(1.0, unbiased - m)
    fraction = np.where(np.isfinite(a), a / quantum, 0).astype(np.int64)  # exact: a is on the grid
    mantissa = np.where(subnormal & fmt.has_zero, fraction, fraction - (1 << m))
    code = (field.astype(np.int64) << m) | mantissa  # below 2**63: exponent and mantissa fields
    code = np.where(a == 0, 0, code)
    if fmt.has_inf:
        code = np.where(np.isinf(a), ((1 << e) - 1) << m, code)
    code = code.astype(np.uint64)
    if fmt.signed:
        code |= _sign_bit(fmt, negative)
    if fmt.has_nan:
        code = np.where(np.isnan(v), _nan_code(fmt, negative), code)
    return code.astype(code_dtype(fmt))[()]


def decode(codes: ArrayLike, fmt: FormatLike) -> np.ndarray:
    """Return the float64 values of integer ``codes`` in ``fmt``."""
    fmt = as_format(fmt)
    c = np.asarray(codes)
    if c.dtype.kind not in "iu":
        raise TypeError(f"decode expects integer codes, got dtype {c.dtype}")
    # (Python ints: 64-bit formats)
    if c.size and (int(c.min()) < 0 or int(c.max()) >= 1 << fmt.bits):
        raise ValueError(f"codes out of range for {fmt.name}: must be in 0..{(1 << fmt.bits) - 1}")
    c = c.astype(np.uint64)
    e, m = fmt.exponent_bits, fmt.mantissa_bits
    field = ((c >> np.uint64(m)) & np.uint64((1 << e) - 1)).astype(np.int64)
    mantissa = (c & np.uint64((1 << m) - 1)).astype(np.int64)
    negative = (c >> np.uint64(e + m)).astype(bool) if fmt.signed else np.zeros(c.shape, bool)
    if fmt.has_zero:
        subnormal = field == 0
        significand = np.where(subnormal, mantissa, mantissa + (1 << m)).astype(np.float64)
        exponent = np.where(subnormal, fmt.emin, field - fmt.bias) - m
    else:
        significand = (mantissa + (1 << m)).astype(np.float64)
        exponent = field - fmt.bias - m
    with np.errstate(over="ignore"):  # the all-ones field of an 11-bit exponent; replaced below
        value = np.ldexp(significand, exponent)
    top = field == (1 << e) - 1
    if fmt.specials == "ieee":
        value = np.where(top, np.where(mantissa == 0, np.inf, np.nan), value)
    elif fmt.specials == "fn":
        value = np.where(top & (mantissa == (1 << m) - 1), np.nan, value)
    elif fmt.specials == "fnuz":
        value = np.where(c == 1 << (fmt.bits - 1), np.nan, value)
    return np.where(negative, -value, value)[()]


def _ml_dtype(fmt: FloatFormat):
    """The dtype whose values and codes are exactly fmt's: chosen by the defining fields, not the
    name (FloatFormat("e4m3", 4, 3) is IEEE-style, max 240 and inf, not float8_e4m3fn)."""
    twins = {formats.FP32: np.float32, formats.FP16: np.float16, formats.BF16: ml_dtypes.bfloat16,
             formats.E4M3: ml_dtypes.float8_e4m3fn, formats.E5M2: ml_dtypes.float8_e5m2,
             formats.E4M3FNUZ: ml_dtypes.float8_e4m3fnuz,
             formats.E5M2FNUZ: ml_dtypes.float8_e5m2fnuz,
             formats.E3M2: ml_dtypes.float6_e3m2fn, formats.E2M3: ml_dtypes.float6_e2m3fn,
             formats.E2M1: ml_dtypes.float4_e2m1fn, formats.E8M0: ml_dtypes.float8_e8m0fnu}
    fields = dataclasses.replace(fmt, name="")
    for preset, dtype in twins.items():
        if dataclasses.replace(preset, name="") == fields:
            return np.dtype(dtype)
    raise ValueError(f"format {fmt.name} has no NumPy/ml_dtypes dtype: none has its defining "
                     f"fields ({fmt!r}); dtypes exist for the formats "
                     f"{', '.join(p.name for p in twins)}")


def to_ml_dtypes(x: ArrayLike, fmt: FormatLike, mode: ModeLike = "nearest",
                 **round_options: object) -> np.ndarray:
    """Round ``x`` correctly to ``fmt`` and return it as an ml_dtypes (or NumPy) array.

    Unlike ``x.astype(ml_dtypes.bfloat16)``, this rounds float64 once (no float32 detour) and
    honours every rounding mode and overflow policy.
    """
    fmt = as_format(fmt)
    dtype = _ml_dtype(fmt)
    codes = np.asarray(encode(x, fmt, mode, **round_options))
    if dtype.itemsize == 1:  # fp4/fp6 ml_dtypes types are stored one per byte, low bits
        return codes.astype(np.uint8).view(dtype)
    return codes.astype(f"u{dtype.itemsize}").view(dtype)


def from_ml_dtypes(arr: ArrayLike) -> np.ndarray:
    """The exact float64 values of an ml_dtypes / float16 / float32 array."""
    arr = np.asarray(arr)
    fmt = as_format(arr.dtype)
    if not arr.dtype.isnative:  # big-endian float32/float16: the codes are the native bytes
        arr = arr.astype(arr.dtype.newbyteorder("="))
    codes = arr.view(f"u{arr.dtype.itemsize}")
    return decode(codes, fmt)


def all_values(fmt: FormatLike) -> np.ndarray:
    """Every code's value, indexed by code (NaN codes included). Formats of up to 16 bits."""
    fmt = as_format(fmt)
    if fmt.bits > 16:
        raise ValueError(f"{fmt.name} has 2**{fmt.bits} codes; all_values is for formats of up "
                         "to 16 bits")
    return decode(np.arange(1 << fmt.bits), fmt)


def ulp(x: ArrayLike, fmt: FormatLike) -> np.ndarray:
    """Spacing of ``fmt`` at ``|x|``: 2**(max(floor(log2|x|), emin) - mantissa_bits).

    ``ulp(0)`` is the smallest subnormal; infinities give inf, NaN gives NaN. Equal to
    ``np.spacing`` except at ``max``, where NumPy gives inf (the distance to the next value up).
    """
    fmt = as_format(fmt)
    a = np.abs(as_real_array(x).astype(np.float64, copy=False))
    _, exp = np.frexp(a)
    q = np.ldexp(1.0, np.maximum(exp - 1, fmt.emin) - fmt.mantissa_bits)
    q = np.where(a == 0, fmt.smallest_subnormal, q)
    return np.where(np.isfinite(a), q, a)[()]


def _step(x, fmt: FloatFormat, up: bool):
    """The neighbour of each value in the direction ``up`` (see next_up)."""
    x = as_real_array(x).astype(np.float64, copy=False)
    v = np.asarray(_round(x, fmt, "up" if up else "down"), np.float64)
    moved = v != x  # x was not representable: the directed rounding already is the neighbour
    a = np.abs(v)
    _, exp = np.frexp(a)
    e = np.maximum(exp - 1, fmt.emin)
    gap_above = np.ldexp(1.0, e - fmt.mantissa_bits)
    # below a power of two the spacing halves (except at the bottom binade)
    power_of_two = (a == np.ldexp(1.0, exp - 1)) & (exp - 1 > fmt.emin)
    gap_below = np.where(power_of_two, gap_above / 2, gap_above)
    gap_below = np.where(a == 0, fmt.smallest_subnormal, gap_below)
    outward = (v >= 0) == up  # moving away from zero
    outward = np.where(v == 0, True, outward)
    sign = np.where(v == 0, 1.0 if up else -1.0, np.sign(v))
    stepped = np.where(outward, v + sign * gap_above, v - sign * gap_below)
    # stepping from -smallest_subnormal toward zero gives -0 (IEEE nextUp)
    if fmt.has_negative_zero:
        stepped = np.where(stepped == 0, np.copysign(0.0, v), stepped)
    stepped = np.where(v == 0, sign * fmt.smallest_subnormal, stepped)
    if not fmt.signed:
        stepped = np.where(stepped <= 0, np.nan, stepped)
    if not fmt.has_zero:
        stepped = np.where((stepped > 0) & (stepped < fmt.tiny), np.nan, stepped)
    beyond = np.abs(stepped) > fmt.max
    stepped = np.where(beyond, np.copysign(np.inf if fmt.has_inf else np.nan, stepped), stepped)
    result = np.where(moved & np.isfinite(x), v, stepped)
    # infinities: nextUp(-inf) = -max, nextUp(+inf) = +inf (IEEE 754 sec. 5.3.1)
    result = np.where(np.isinf(x) & ((x > 0) == up), x, result)
    result = np.where(np.isinf(x) & ((x > 0) != up), np.copysign(fmt.max, x), result)
    result = np.where(np.isnan(x), np.nan, result)
    return result[()]


def next_up(x: ArrayLike, fmt: FormatLike) -> np.ndarray:
    """The smallest value of ``fmt`` greater than ``x`` (inf, or NaN without inf, past max)."""
    return _step(x, as_format(fmt), up=True)


def next_down(x: ArrayLike, fmt: FormatLike) -> np.ndarray:
    """The largest value of ``fmt`` less than ``x``."""
    return _step(x, as_format(fmt), up=False)


def classify(x: ArrayLike, fmt: FormatLike, mode: ModeLike = "nearest",
             **round_options: object) -> np.ndarray:
    """Class of each value once rounded to ``fmt``: one of CLASSES, as a string array."""
    fmt = as_format(fmt)
    v = np.abs(np.asarray(_round(x, fmt, mode, **round_options), np.float64))
    index = np.select([np.isnan(v), np.isinf(v), v == 0, v < fmt.tiny], [4, 3, 0, 1], 2)
    return np.asarray(CLASSES)[index]  # a 0-d index gives a NumPy string scalar
