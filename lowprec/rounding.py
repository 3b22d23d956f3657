"""Rounding real numbers to a FloatFormat, bit-exactly, for every mode.

One function, :func:`round`, does it. It works on the exact binary value of each input: a
float64 input is rounded straight to the target (never through float32 first, which is where
ml_dtypes before 0.7 double-rounds: its array casts go through float32, ml_dtypes/_src/floats.cc),
and a float32 input is taken exactly as it is.

How the general path works, for one magnitude ``|x| = sig * 2**lb`` (``sig`` the float64
significand as an integer, ``lb`` the weight of its lowest bit):

1. The target's quantum (the weight of its last mantissa bit) at ``|x|`` is
   ``2**qe`` with ``qe = max(exponent(|x|), emin) - mantissa_bits``.
2. ``kept = sig >> (qe - lb)`` is ``|x|`` truncated to that quantum; ``rem`` the bits shifted
   out. The one decision point per mode looks only at ``kept``'s last bit, ``rem``, the sign
   and (stochastic) random bits, and adds 0 or 1 to ``kept``.
3. ``(kept + inc) * 2**qe`` is exact in float64; overflow, flushing and specials follow.

Everything is integer arithmetic on the float64 bit pattern, so there is no intermediate
rounding anywhere. Almost every call takes instead a fast path of ``_fastpaths.py`` (all modes
for the usual formats, float32 and float64 input): exact by construction, and tested equal to
this general path and to ml_dtypes on every float32 input (tests marked ``exhaustive``). The
stochastic fast path decides from each element's first 16 random bits; the few elements where
those tie with the value's bits (about one in 4096 for FP16) are collected over the call and
settled here, by the general path, with the rest of their random word. Arrays are processed in
chunks, so temporaries stay small.
"""
from __future__ import annotations

import builtins
from enum import Enum

import numpy as np
from numpy.typing import ArrayLike

from . import _fastpaths
from ._bitwords import RandomSource, random_uint64, significand, stochastic_away
from .formats import FloatFormat, FormatLike, as_format

__all__ = ["round", "round_with_bits", "RoundingMode", "as_mode", "as_real_array",
           "OVERFLOW_POLICIES"]


class RoundingMode(str, Enum):
    """How a value between two neighbours of the format is resolved."""

    NEAREST = "nearest"  #: nearest; ties to the neighbour with an even last bit (IEEE default)
    NEAREST_AWAY = "nearest_away"  #: nearest; ties away from zero
    TOWARD_ZERO = "toward_zero"  #: truncate the magnitude
    UP = "up"  #: toward +infinity
    DOWN = "down"  #: toward -infinity
    ODD = "odd"  #: truncate, then set the last bit if anything was lost (round-to-odd)
    STOCHASTIC = "stochastic"  #: away from zero with probability distance / ulp


# What a function taking a rounding mode accepts: a RoundingMode or its string value.
ModeLike = RoundingMode | str

OVERFLOW_POLICIES = ("inf", "nan", "saturate")

_CHUNK = 1 << 17  # elements per pass: keeps temporaries in cache and memory bounded


def as_mode(mode: ModeLike) -> RoundingMode:
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
        raise ValueError(f"unknown overflow policy {overflow!r}; valid: "
                         f"{', '.join(OVERFLOW_POLICIES)}")
    if overflow == "inf" and not fmt.has_inf:
        raise ValueError(f"overflow='inf' is impossible: format {fmt.name} has no infinity")
    if overflow == "nan" and not fmt.has_nan:
        raise ValueError(f"overflow='nan' is impossible: format {fmt.name} has no NaN")
    return overflow


def as_real_array(x: ArrayLike, name: str = "x") -> np.ndarray:
    """``x``'s values, exactly, as a native float32 or float64 array: the package's one input
    coercer (round, arith, bits, tensorcore and the FP8 recipes all take their inputs through it).

    float32 stays float32 (either byte order); float16, a float64-sized longdouble, ml_dtypes
    arrays and integers widen exactly to float64. Refused, naming ``name``: complex, boolean,
    object, string, datetime and other non-numeric dtypes (TypeError); a longdouble wider than
    float64 (TypeError: it cannot be taken exactly); integers beyond float64's exact range
    (ValueError). The result may be ``x`` itself, so callers never write into it.
    """
    arr = np.asarray(x)
    if arr.dtype in (np.float32, np.float64):  # the common case (native byte order only)
        return arr
    kind = arr.dtype.kind
    if kind == "f":
        nmant = np.finfo(arr.dtype).nmant
        if nmant > 52:  # x86 80-bit or double-double longdouble
            raise TypeError(f"{name} has dtype {arr.dtype}, whose {nmant + 1}-bit significands are "
                            "wider than float64's, from which lowprec rounds; pass "
                            f"{name}.astype(np.float64) to round through float64 first")
        return arr.astype(np.float32 if nmant == 23 else np.float64, copy=False)
    if kind == "V" and _is_float_format_dtype(arr.dtype):  # an ml_dtypes array: widen exactly
        return arr.astype(np.float64)
    if kind == "c":
        raise TypeError(f"{name} is complex (dtype {arr.dtype}); expected real numbers: round "
                        ".real and .imag separately")
    if kind == "b":
        raise TypeError(f"{name} is a boolean array; expected real numbers: convert it to a float "
                        "dtype first")
    if kind not in "iu":
        raise TypeError(f"{name} has dtype {arr.dtype}; expected real numbers (float or int)")
    as64 = arr.astype(np.float64)
    if not np.array_equal(as64.astype(arr.dtype), arr):
        raise ValueError(f"{name} holds integers too large to convert to float64 exactly")
    return as64


def _is_float_format_dtype(dtype) -> bool:
    try:
        as_format(dtype)
    except (TypeError, ValueError):
        return False
    return True


def _check_random_args(mode: RoundingMode, rng, random_bits):
    """Validate ``rng`` and ``random_bits``; return random_bits as a Python int (or None), so that
    a NumPy integer does not overflow the 64-bit mask arithmetic."""
    if mode is RoundingMode.STOCHASTIC:
        if not isinstance(rng, np.random.Generator):
            raise TypeError("mode='stochastic' needs rng=np.random.Generator, got "
                            f"{type(rng).__name__}")
        if random_bits is not None and (
            not isinstance(random_bits, (int, np.integer)) or isinstance(random_bits, bool)
            or not 1 <= random_bits <= 64
        ):
            raise ValueError(f"random_bits must be an int in 1..64 or None, got {random_bits!r}")
        return None if random_bits is None else int(random_bits)
    else:
        if random_bits is not None:
            raise ValueError(f"random_bits only applies to mode='stochastic', not {mode.value!r}")
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a np.random.Generator, got {type(rng).__name__}")
        return None


def round(x: ArrayLike, fmt: FormatLike, mode: ModeLike = "nearest", *, overflow: str | None = None,
          subnormals: bool = True, rng: np.random.Generator | None = None,
          random_bits: int | None = None) -> np.ndarray:
    """Round ``x`` to the values of ``fmt``; return them in ``x``'s float dtype.

    Parameters
    ----------
    x : array_like of real numbers. float32 in gives float32 out (when every value of the
        format is a float32), float64 in gives float64 out, in native byte order; anything else
        (Python numbers, lists, integers, float16 and ml_dtypes arrays) is converted to float64
        first (exactly, or a ValueError). A longdouble wider than float64 (x86 Linux) is a
        TypeError: it cannot be taken exactly. ``x`` itself is never modified.
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

    The same seed gives the same result for the same input dtype; float32 and float64 inputs
    draw their random bits differently (each exactly as specified).
    """
    fmt = as_format(fmt)
    mode = as_mode(mode)
    policy = _overflow_policy(fmt, overflow)
    if not isinstance(subnormals, (bool, np.bool_)):
        raise TypeError(f"subnormals must be True or False, got {subnormals!r}")
    random_bits = _check_random_args(mode, rng, random_bits)

    arr = as_real_array(x)
    out_dtype = np.float32 if arr.dtype == np.float32 and fmt.fits_float32 else np.float64
    flat = arr.reshape(-1)
    _check_encodable(flat, fmt)
    out = np.empty(flat.shape, out_dtype)
    path = _fastpaths.choose(out_dtype, fmt, mode.value, random_bits)
    unsettled = []  # (indices, their top16) a fast path left to the exact rule
    for start in builtins.range(0, flat.size, _CHUNK):
        part = flat[start:start + _CHUNK].astype(out_dtype, copy=False)
        dest = out[start:start + _CHUNK]
        flagged = _round_chunk(part, dest, path, fmt, mode, policy, rng, random_bits)
        if flagged is not None:
            unsettled.append((flagged[0] + start, flagged[1]))
        if not subnormals:
            _flush_subnormals(dest, fmt)
    if unsettled:  # once per call: R's remaining 48 bits, then the general path
        idx = np.concatenate([i for i, _ in unsettled])
        words = np.concatenate([t for _, t in unsettled]).astype(np.uint64) << np.uint64(48)
        words |= random_uint64(rng, idx.size) >> np.uint64(16)
        settled = np.empty(idx.size, out_dtype)
        settle(flat[idx], settled, slice(None), words, fmt, policy, rng, random_bits)
        if not subnormals:
            _flush_subnormals(settled, fmt)
        out[idx] = settled
    result = out.reshape(arr.shape)
    return result[()] if result.ndim == 0 else result


def _check_encodable(flat: np.ndarray, fmt: FloatFormat) -> None:
    """Refuse NaN for a format without NaN, and negative values for an unsigned one."""
    lowest = np.min(flat) if not fmt.has_nan and flat.size else 0.0  # min propagates NaN
    if np.isnan(lowest):
        raise ValueError(f"input holds {int(np.isnan(flat).sum())} NaN value(s), "
                         f"but format {fmt.name} has no NaN encoding")
    if not fmt.signed and lowest < 0:
        raise ValueError(f"input holds {int((flat < 0).sum())} negative value(s), but format "
                         f"{fmt.name} is unsigned and has no NaN encoding for them")


def round_with_bits(x: ArrayLike, fmt: FormatLike, rbits: ArrayLike, *, bits: int,
                    overflow: str | None = None, subnormals: bool = True) -> np.ndarray:
    """Stochastic rounding with the caller's random bits: what a GPU's ``cvt.rs`` computes.

    Each element of ``x`` is rounded with its own ``bits``-bit random integer ``rbits``
    (``0 <= rbits < 2**bits``, broadcast against ``x``): ``rbits`` is added to the ``bits`` bits
    of ``|x|`` just below the last bit ``fmt`` keeps at ``|x|`` (the format's quantum there,
    subnormal range included), the carry out of them rounds the magnitude away from zero, and
    everything below is truncated. So ``|x|`` a fraction ``f`` of a quantum above the value
    toward zero rounds away for exactly ``floor(f * 2**bits)`` of the ``2**bits`` values of
    ``rbits``: unbiased whenever ``f`` has no more than ``bits`` bits. This is
    ``round(x, fmt, "stochastic", random_bits=bits)`` with the random bits given instead of
    drawn, so a device's output can be checked bit for bit given the same random words.

    PTX's ``cvt.rs`` (PTX ISA, "Data Movement and Conversion Instructions: cvt"; the packed
    operands are modelled in :mod:`lowprec.cvt_rs`) adds 13 random bits per FP16 element and 16
    per BF16 element, exactly the float32 mantissa bits those formats drop in their normal
    range, so there this is the integer sum ``(bits of x) + rbits`` truncated.

    ``overflow`` and ``subnormals`` are as in :func:`round`; sign, signed zero, infinities and
    NaN are kept as there. ``cvt.rs.satfinite`` is ``overflow="saturate"`` for finite inputs and
    also turns an infinite input into the largest finite value (:func:`lowprec.cvt_rs.cvt_rs`
    does both).
    """
    fmt = as_format(fmt)
    policy = _overflow_policy(fmt, overflow)
    if not isinstance(subnormals, (bool, np.bool_)):
        raise TypeError(f"subnormals must be True or False, got {subnormals!r}")
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 64:
        raise ValueError(f"bits must be an int in 1..64, got {bits!r}")
    bits = int(bits)
    arr = as_real_array(x)
    r = np.asarray(rbits)
    if r.dtype.kind not in "iu":
        raise TypeError(f"rbits must be integers, got dtype {r.dtype}")
    if r.size and (r.min() < 0 or (bits < 64 and r.max() >= (1 << bits))):
        raise ValueError(f"rbits must lie in 0..2**{bits} - 1 (bits={bits}); got values "
                         f"{r.min()}..{r.max()}")
    try:
        arr, r = np.broadcast_arrays(arr, r)
    except ValueError:
        raise ValueError(f"rbits of shape {r.shape} does not broadcast against x of shape "
                         f"{arr.shape}") from None
    out_dtype = np.float32 if arr.dtype == np.float32 and fmt.fits_float32 else np.float64
    flat = arr.reshape(-1)
    _check_encodable(flat, fmt)
    # The random integer as the top ``bits`` bits of a 64-bit word: the k-bit adder of
    # _bitwords.stochastic_away (away iff floor(f * 2**k) + rbits >= 2**k).
    words = r.reshape(-1).astype(np.uint64) << np.uint64(64 - bits)
    with np.errstate(invalid="ignore"):  # (signalling NaNs warn as they widen)
        wide = flat.astype(np.float64)
    out = _round_float64(wide, fmt, RoundingMode.STOCHASTIC, policy, words, None,
                         bits).astype(out_dtype)
    if not subnormals:
        _flush_subnormals(out, fmt)
    result = out.reshape(arr.shape)
    return result[()] if result.ndim == 0 else result


def _round_chunk(x, out, path, fmt: FloatFormat, mode: RoundingMode, policy, rng, random_bits):
    """Round the 1-D chunk ``x`` into ``out`` (same dtype) by ``path``, ``_fastpaths.choose``'s
    ``(function, working dtype)`` for them, or ``(None, None)``: the general path.

    Returns None, or the indices a stochastic fast path could not decide from the first 16
    random bits, with those bits.
    """
    path, work = path
    if path is None:
        words = random_uint64(rng, x.size) if mode is RoundingMode.STOCHASTIC else None
        wide = x.astype(np.float64, copy=False)
        out[...] = _round_float64(wide, fmt, mode, policy, words, rng, random_bits)
        return None
    stochastic = mode is RoundingMode.STOCHASTIC
    random = RandomSource.draw(rng, x.size, random_bits) if stochastic else None
    if work == x.dtype:
        flagged = path(x, out, fmt, mode.value, policy, random)
    else:  # float32 values in float64 arithmetic (e.g. BF16 odd); the results are float32 values
        wide = np.empty(x.shape, work)
        flagged = path(x.astype(work), wide, fmt, mode.value, policy, random)
        out[...] = wide
    return None if flagged is None else (flagged, random.top16[flagged])


def settle(x: np.ndarray, out: np.ndarray, idx: slice | np.ndarray, words: np.ndarray,
           fmt: FloatFormat, policy: str, rng: np.random.Generator,
           random_bits: int | None = None) -> None:
    """``out[idx]`` = the general path's stochastic rounding of ``x`` (the inputs at ``idx``)
    with the 64-bit words R = ``words``: for elements a fast path flagged as undecided."""
    with np.errstate(invalid="ignore"):  # (signalling NaNs warn as they widen)
        wide = x.astype(np.float64)
    out[idx] = _round_float64(wide, fmt, RoundingMode.STOCHASTIC, policy, words, rng, random_bits)


def _flush_subnormals(out, fmt: FloatFormat):
    tiny = np.abs(out) < fmt.tiny
    out[tiny] = np.copysign(out.dtype.type(0), out[tiny])
    if fmt.specials == "fnuz":
        out += 0  # -0 + 0 = +0


@np.errstate(all="ignore")
def _round_float64(x, fmt: FloatFormat, mode: RoundingMode, policy, words=None, rng=None,
                   random_bits=None):
    """The general path: exact rounding of a float64 array (see the module docstring).

    ``words``: one uniform 64-bit random word per element (stochastic mode); ``rng`` supplies
    the further words that an exact tie of the first 64 bits needs (probability 2**-64).
    """
    m = fmt.mantissa_bits
    negative = np.signbit(x)
    finite = np.isfinite(x)
    sig, lb = significand(np.where(finite, np.abs(x), 0.0))  # |x| = sig * 2**lb
    qe = np.maximum(lb + 52, fmt.emin) - m  # weight of the target's last mantissa bit
    shift = qe - lb  # how many of sig's bits are rounded away (may exceed 64)
    # beyond 54 every bit of sig is below half a quantum
    d = np.clip(shift, 0, 54).astype(np.uint64)
    kept = sig >> d
    rem = sig - (kept << d)  # the discarded bits: f = rem / 2**shift of a quantum
    half = (np.uint64(1) << d) >> np.uint64(1)
    # the code's last bit, which without mantissa bits is the exponent field's (P3109; gfloat:
    # 3 -> 2 in E8M0)
    odd_last = (kept & np.uint64(1)) == 1
    if m == 0:
        odd_last = np.where(kept == 1, ((qe + fmt.bias) & 1) == 1, odd_last)
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
        inc = stochastic_away(rem, shift, words, rng, random_bits) & inexact

    mag = np.ldexp((kept + inc).astype(np.float64), qe)
    if not fmt.has_zero:  # E8M0: no zero, so what would round to zero becomes the smallest value
        mag = np.maximum(mag, fmt.tiny)

    # Overflow: directed modes pointing toward zero stop at max (IEEE 754 sec. 7.4).
    over = finite & (mag > fmt.max)
    toward_zero = _points_toward_zero(mode, negative)
    policy_value = {"inf": np.inf, "nan": np.nan, "saturate": fmt.max}[policy]
    mag = np.where(over, np.where(toward_zero, fmt.max, policy_value), mag)
    # Specials of the input.
    mag = np.where(np.isinf(x), np.inf if fmt.has_inf else policy_value, mag)
    mag = np.where(np.isnan(x), np.nan, mag)
    result = np.where(negative, -mag, mag)
    # no negative numbers (NaN, as ml_dtypes' E8M0); -0 is 0 where there is a zero
    if not fmt.signed:
        nothing = (negative & (x != 0)) | ((x == 0) & (not fmt.has_zero))
        result = np.where(nothing, np.nan, np.abs(result))
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
