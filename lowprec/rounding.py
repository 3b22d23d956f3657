"""Rounding real numbers to a FloatFormat, bit-exactly, for every mode.

One function, :func:`round`, does it. It works on the exact binary value of each input: a
float64 input is rounded straight to the target (never through float32 first, which is where
ml_dtypes double-rounds; shared/reference/formats-and-rounding.md (b)2), and a float32 input is
widened to float64 exactly first.

How the general path works, for one magnitude ``|x| = sig * 2**lb`` (``sig`` the float64
significand as an integer, ``lb`` the weight of its lowest bit):

1. The target's quantum (the weight of its last mantissa bit) at ``|x|`` is
   ``2**qe`` with ``qe = max(exponent(|x|), emin) - mantissa_bits``.
2. ``kept = sig >> (qe - lb)`` is ``|x|`` truncated to that quantum; ``rem`` the bits shifted
   out. The one decision point per mode looks only at ``kept``'s last bit, ``rem``, the sign
   and (stochastic) random bits, and adds 0 or 1 to ``kept``.
3. ``(kept + inc) * 2**qe`` is exact in float64; overflow, flushing and specials follow.

Everything is integer arithmetic on the float64 bit pattern, so there is no intermediate
rounding anywhere. A faster path for the common case (float32 input, round to nearest even)
uses float32 arithmetic whose single correct rounding *is* the answer; it is tested equal to
the general path on every float32 input (tests marked ``exhaustive``).
"""
from __future__ import annotations

import builtins
from enum import Enum

import numpy as np

from .formats import FloatFormat, as_format

__all__ = ["round", "RoundingMode", "as_mode", "OVERFLOW_POLICIES"]


class RoundingMode(str, Enum):
    """How a value between two neighbours of the format is resolved."""

    NEAREST = "nearest"  #: nearest; ties to the neighbour with an even last bit (IEEE default)
    NEAREST_AWAY = "nearest_away"  #: nearest; ties away from zero
    TOWARD_ZERO = "toward_zero"  #: truncate the magnitude
    UP = "up"  #: toward +infinity
    DOWN = "down"  #: toward -infinity
    ODD = "odd"  #: truncate, then set the last bit if anything was lost (round-to-odd)
    STOCHASTIC = "stochastic"  #: away from zero with probability distance / ulp


OVERFLOW_POLICIES = ("inf", "nan", "saturate")

_CHUNK = 1 << 16  # elements per pass: keeps every temporary in cache and memory bounded
_MASK52 = np.uint64((1 << 52) - 1)
_IMPLICIT52 = np.uint64(1 << 52)


def as_mode(mode) -> RoundingMode:
    """Return the RoundingMode named by ``mode`` (a RoundingMode or its string value)."""
    if isinstance(mode, RoundingMode):
        return mode
    try:
        return RoundingMode(mode)
    except ValueError:
        valid = ", ".join(repr(m.value) for m in RoundingMode)
        raise ValueError(f"unknown rounding mode {mode!r}; valid modes: {valid}") from None


def _overflow_policy(fmt: FloatFormat, overflow) -> str:
    if overflow is None:
        return fmt.default_overflow
    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"unknown overflow policy {overflow!r}; valid: {', '.join(OVERFLOW_POLICIES)}")
    if overflow == "inf" and not fmt.has_inf:
        raise ValueError(f"overflow='inf' is impossible: format {fmt.name} has no infinity")
    if overflow == "nan" and not fmt.has_nan:
        raise ValueError(f"overflow='nan' is impossible: format {fmt.name} has no NaN")
    return overflow


def _as_float_array(x):
    """The input as a float32 or float64 array (never a copy we later write into the input)."""
    arr = np.asarray(x)
    kind = arr.dtype.kind
    if kind == "f" and arr.dtype in (np.float32, np.float64):
        return arr
    if kind == "c":
        raise TypeError(f"cannot round complex input (dtype {arr.dtype}); round .real and .imag separately")
    if kind == "b":
        raise TypeError("cannot round a boolean array; convert it to a float dtype first")
    if kind in "OSUVMm":
        raise TypeError(f"cannot round an array of dtype {arr.dtype}; expected real numbers")
    as64 = arr.astype(np.float64)
    if kind in "iu" and not np.array_equal(as64.astype(arr.dtype), arr):
        raise ValueError("integer input too large to convert to float64 exactly")
    return as64


def round(x, fmt, mode="nearest", *, overflow=None, subnormals=True, rng=None, random_bits=None):
    """Round ``x`` to the values of ``fmt``; return them in ``x``'s float dtype.

    Parameters
    ----------
    x : array_like of real numbers. float32 in gives float32 out (when every value of the
        format is a float32), float64 in gives float64 out; anything else is converted to
        float64 first (exactly, or a ValueError). ``x`` itself is never modified.
    fmt : FloatFormat or a name such as ``"fp16"``, ``"bf16"``, ``"float8_e4m3fn"``.
    mode : one of :class:`RoundingMode` (or its string value).
    overflow : ``"inf"``, ``"nan"`` or ``"saturate"``; ``None`` takes ``fmt.default_overflow``.
        Directed modes that point toward zero (``toward_zero``, ``odd``, ``down`` for positive
        and ``up`` for negative values) give ``+-max`` on overflow whatever the policy, as IEEE
        754 does. An infinite input stays infinite when the format has infinities.
    subnormals : False flushes results below ``fmt.tiny`` to zero of the same sign (FTZ).
    rng : ``np.random.Generator``, required for and only used by ``mode="stochastic"``.
    random_bits : stochastic mode only. ``None``: exact, P(away) = distance/ulp. ``k``: the k
        bits below the kept ones are added to k random bits and the carry rounds away; lower
        bits are ignored, as hardware with a k-bit random source does.
    """
    fmt = as_format(fmt)
    mode = as_mode(mode)
    policy = _overflow_policy(fmt, overflow)
    if not isinstance(subnormals, (bool, np.bool_)):
        raise TypeError(f"subnormals must be True or False, got {subnormals!r}")
    if mode is RoundingMode.STOCHASTIC:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"mode='stochastic' needs rng=np.random.Generator, got {type(rng).__name__}")
        if random_bits is not None and (
            not isinstance(random_bits, (int, np.integer)) or isinstance(random_bits, bool)
            or not 1 <= random_bits <= 64
        ):
            raise ValueError(f"random_bits must be an int in 1..64 or None, got {random_bits!r}")
    else:
        if random_bits is not None:
            raise ValueError(f"random_bits only applies to mode='stochastic', not {mode.value!r}")
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a np.random.Generator, got {type(rng).__name__}")

    arr = _as_float_array(x)
    out_dtype = np.float32 if arr.dtype == np.float32 and fmt.fits_float32 else np.float64
    flat = arr.reshape(-1)
    out = np.empty(flat.shape, out_dtype)
    if fmt.has_nan is False and np.isnan(flat).any():
        raise ValueError(f"input holds {int(np.isnan(flat).sum())} NaN value(s), "
                         f"but format {fmt.name} has no NaN encoding")
    fast = None
    if (mode is RoundingMode.NEAREST and flat.dtype == np.float32 and out_dtype == np.float32
            and fmt.signed and fmt.has_zero):
        if fmt.emax + 1 + 23 - fmt.mantissa_bits <= 127:
            fast = _nearest_float32_small  # FP16, FP8, MX elements
        elif fmt.emin == -126:
            fast = _nearest_float32_wide  # BF16, TF32, FP32
    for start in builtins.range(0, flat.size, _CHUNK):
        part = flat[start:start + _CHUNK]
        if fast is not None:
            out[start:start + _CHUNK] = fast(part, fmt, policy)
        else:
            out[start:start + _CHUNK] = _round_float64(
                part.astype(np.float64), fmt, mode, policy, rng, random_bits)
    if not subnormals:
        np.copyto(out, np.copysign(out_dtype(0), out), where=np.abs(out) < fmt.tiny)
        if fmt.specials == "fnuz":
            out[out == 0] = 0
    result = out.reshape(arr.shape)
    return result[()] if result.ndim == 0 else result


@np.errstate(all="ignore")
def _round_float64(x, fmt: FloatFormat, mode: RoundingMode, policy, rng, random_bits):
    """The general path: exact rounding of a float64 array (see the module docstring)."""
    m = fmt.mantissa_bits
    negative = np.signbit(x)
    bits = np.abs(x).view(np.uint64)
    field = (bits >> np.uint64(52)).astype(np.int64)
    finite = field < 2047
    mant = bits & _MASK52
    sig = np.where(field > 0, mant | _IMPLICIT52, mant)
    lb = np.maximum(field, 1) - 1075  # weight of sig's lowest bit: |x| = sig * 2**lb
    qe = np.maximum(lb + 52, fmt.emin) - m  # weight of the target's last mantissa bit
    shift = qe - lb  # how many of sig's bits are rounded away (may exceed 64)
    d = np.clip(shift, 0, 54).astype(np.uint64)  # beyond 54 every bit of sig is below half a quantum
    kept = sig >> d
    rem = sig - (kept << d)
    half = (np.uint64(1) << d) >> np.uint64(1)
    odd_last = (kept & np.uint64(1)) == 1
    inexact = rem > 0

    # The one decision point: does the magnitude move up by one quantum?
    if mode is RoundingMode.NEAREST:
        inc = (rem > half) | ((rem == half) & inexact & odd_last)
    elif mode is RoundingMode.NEAREST_AWAY:
        inc = (rem >= half) & inexact
    elif mode is RoundingMode.TOWARD_ZERO:
        inc = np.zeros(x.shape, bool)
    elif mode is RoundingMode.UP:
        inc = inexact & ~negative
    elif mode is RoundingMode.DOWN:
        inc = inexact & negative
    elif mode is RoundingMode.ODD:
        inc = inexact & ~odd_last
    else:
        inc = _stochastic_carry(sig, rem, shift, rng, random_bits) & inexact

    mag = np.ldexp((kept + inc).astype(np.float64), qe)
    if not fmt.has_zero:  # E8M0: no zero, so what would round to zero becomes the smallest value
        mag = np.maximum(mag, fmt.tiny)

    # Overflow: directed modes pointing toward zero stop at max (IEEE 754 sec. 7.4).
    over = finite & (mag > fmt.max)
    toward_zero = _points_toward_zero(mode, negative)
    policy_value = {"inf": np.inf, "nan": np.nan, "saturate": fmt.max}[policy]
    mag = np.where(over, np.where(toward_zero, fmt.max, policy_value), mag)
    # Specials of the input.
    if not fmt.has_inf:
        mag = np.where(np.isinf(x), policy_value, mag)
    mag = np.where(np.isnan(x), np.nan, mag)
    result = np.where(negative, -mag, mag)
    if not fmt.signed:  # no negative numbers and no zero at all: NaN, as ml_dtypes
        result = np.where(negative | (x == 0), np.nan, result)
    if fmt.specials == "fnuz":
        result[result == 0] = 0  # no -0 in fnuz formats
    return result


def _points_toward_zero(mode: RoundingMode, negative):
    if mode in (RoundingMode.TOWARD_ZERO, RoundingMode.ODD):
        return np.ones(negative.shape, bool)
    if mode is RoundingMode.UP:
        return negative
    if mode is RoundingMode.DOWN:
        return ~negative
    return np.zeros(negative.shape, bool)


def _random_uint64(rng, n):
    return rng.integers(0, np.iinfo(np.uint64).max, size=n, dtype=np.uint64, endpoint=True)


def _stochastic_carry(sig, rem, shift, rng, random_bits):
    """True where a stochastic rounding moves the magnitude away from zero.

    The discarded fraction is ``f = rem / 2**shift`` (``rem = sig`` when ``shift > 54``).
    Full bits: away iff ``U < f`` for U uniform in [0, 1), so P(away) = f exactly. U is drawn
    64 bits at a time and compared with f's first 64 bits; only on equality (probability 2**-64)
    are the next 64 bits of each drawn and compared, until f runs out of bits.
    """
    n = sig.size
    if random_bits is not None:
        k = int(random_bits)
        # floor(f * 2**k): the k bits right below the kept ones (rem is all of sig past 54).
        top = np.where(shift >= k, _shr(rem, np.maximum(shift - k, 0)),
                       rem << np.clip(k - shift, 0, 63).astype(np.uint64))
        u = _random_uint64(rng, n) >> np.uint64(64 - k)
        # carry out of u + top >= 2**k, computed without overflowing uint64
        need = (np.uint64(0) if k == 64 else np.uint64(1 << k)) - top
        return (top > 0) & (u >= need)
    # Threshold f * 2**64: for shift <= 64 it is rem << (64 - shift), exact; beyond, it is
    # sig >> (shift - 64) with the rest of sig left over for the tie-break.
    u = _random_uint64(rng, n)
    short = shift <= 64
    threshold = np.where(short, rem << np.clip(64 - shift, 0, 63).astype(np.uint64),
                         _shr(sig, shift - 64))
    away = u < threshold
    leftover = np.where(short, np.uint64(0), sig - _shl_safe(_shr(sig, shift - 64), shift - 64))
    tied = (u == threshold) & (leftover > 0)
    remaining = np.where(short, 0, shift - 64)
    while tied.any():  # probability 2**-64 per element per round; loop ends as f's bits run out
        idx = np.nonzero(tied)[0]
        r_sig, r_shift = leftover[idx], remaining[idx]
        u2 = _random_uint64(rng, idx.size)
        short2 = r_shift <= 64
        thr2 = np.where(short2, r_sig << np.clip(64 - r_shift, 0, 63).astype(np.uint64),
                        _shr(r_sig, r_shift - 64))
        away[idx] = u2 < thr2
        leftover[idx] = np.where(short2, np.uint64(0),
                                 r_sig - _shl_safe(_shr(r_sig, r_shift - 64), r_shift - 64))
        remaining[idx] = np.where(short2, 0, r_shift - 64)
        tied[:] = False
        tied[idx] = (u2 == thr2) & (leftover[idx] > 0)
    return away


def _shr(v, s):
    """v >> s for uint64 v and int shifts s >= 0 of any size (NumPy gives 0 from 64 on)."""
    return v >> np.minimum(s, 64).astype(np.uint64)


def _shl_safe(v, s):
    return np.where(s >= 64, np.uint64(0), v << np.clip(s, 0, 63).astype(np.uint64))


# --- fast path: float32 input, round to nearest even -----------------------------------------
_F32_EXP = np.uint32(0x7F800000)
_F32_ABS = np.uint32(0x7FFFFFFF)
_F32_SIGN = np.uint32(0x80000000)
_F32_QNAN = np.uint32(0x7FC00000)


def _f32_bits(value: float) -> np.uint32:
    return np.array(value, np.float32).view(np.uint32)[()]


@np.errstate(all="ignore")
def _nearest_float32_small(x, fmt: FloatFormat, policy):
    """Round float32 ``x`` to nearest-even in a format of smaller range, by one float32 addition.

    ``|x| + C`` with ``C = 2**(e + 23 - m)``, where ``e = max(exponent(|x|), emin)``, is
    correctly rounded by the FPU to a multiple of ulp(C) = 2**(e - m), the target's quantum at
    ``|x|`` (|x| < 2C, so the sum stays in C's binade or reaches exactly 2C). Subtracting C
    again is exact (Sterbenz). The FPU's one rounding is round-to-nearest-even, so the result
    is the target's nearest-even value, subnormals and carries into the next binade included.
    The exponent of C is clamped at emax + 1; |x| beyond that overflows whatever C is, and
    the caller makes sure ``C <= 2**127`` stays finite.
    """
    m = fmt.mantissa_bits
    bits = x.view(np.uint32)
    absbits = bits & _F32_ABS
    lo = np.uint32((fmt.emin + 127) << 23)
    hi = np.uint32((fmt.emax + 1 + 127) << 23)
    c_bits = np.clip(absbits & _F32_EXP, lo, hi) + np.uint32((23 - m) << 23)
    c = c_bits.view(np.float32)
    mag = np.abs(x) + c
    mag -= c
    return _finish_float32(mag.view(np.uint32), bits, fmt, policy)


def _nearest_float32_wide(x, fmt: FloatFormat, policy):
    """Round float32 ``x`` to nearest-even in a format with float32's exponent range (BF16, TF32).

    With the same emin, float32's bit patterns of |x| are the target's patterns followed by
    ``23 - m`` extra bits, subnormals included, so adding ``half - 1`` plus the kept part's last
    bit and clearing the extra bits is round-to-nearest-even; a carry moves into the exponent,
    and past the largest finite value into the infinity pattern, which counts as overflow.
    """
    s = 23 - fmt.mantissa_bits
    bits = x.view(np.uint32)
    absbits = bits & _F32_ABS
    if s == 0:
        return _finish_float32(absbits, bits, fmt, policy)
    r = absbits + np.uint32((1 << (s - 1)) - 1)
    r += (absbits >> np.uint32(s)) & np.uint32(1)
    r &= np.uint32(~((1 << s) - 1) & 0xFFFFFFFF)
    return _finish_float32(r, bits, fmt, policy)


def _finish_float32(r, bits, fmt: FloatFormat, policy):
    """Overflow, specials and sign for rounded float32 magnitudes ``r`` (bit patterns)."""
    absbits = bits & _F32_ABS
    max_bits = _f32_bits(fmt.max)
    over_bits = {"inf": _F32_EXP, "nan": _F32_QNAN, "saturate": max_bits}[policy]
    r = np.where(r > max_bits, over_bits, r)
    if fmt.has_inf:
        r = np.where(absbits == _F32_EXP, _F32_EXP, r)  # infinity stays infinity
    r = np.where(absbits > _F32_EXP, _F32_QNAN, r)  # NaN stays NaN
    if fmt.specials == "fnuz":
        r = np.where(r == 0, r, r | (bits & _F32_SIGN))
    else:
        r |= bits & _F32_SIGN
    return r.view(np.float32)
