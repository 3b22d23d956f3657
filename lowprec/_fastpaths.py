"""Fast paths of :func:`lowprec.round` for the common cases, each exact by the argument in its
docstring.

* :func:`nearest_by_addition`: nearest even by one float addition (float32 and float64 input;
  FP16, FP8, MX elements in float32, every preset in float64).
* :func:`nearest_same_range`: nearest even on float32 bit patterns, for formats with float32's
  exponent range (BF16, TF32).
* :func:`stochastic_by_pattern`: stochastic, by adding random bits to the bit pattern of x
  scaled so that the target's subnormals fall on the dtype's (float32 input for FP16, BF16,
  FP8, MX; float64 for every preset). Elements whose first 16 random bits cannot decide come
  back flagged, for ``rounding.settle``.
* :func:`directed_by_pattern`: toward_zero, up, down and nearest_away on the same pattern.
* :func:`by_scaling`: odd, and a k-bit stochastic adder wider than the pattern path can take
  (k above 16, or above p - m where x is scaled), by exact arithmetic on |x| / quantum.

Each has the signature ``(x, out, fmt, mode, policy, random)``, writes into ``out`` (same dtype
and length as the chunk ``x``) and never modifies ``x``; only stochastic_by_pattern returns
something (the flagged indices, or None). The exact stochastic decision rule (U < f, or a
k-bit adder) and the bit layout come from the leaf module _bitwords.py, as they do for the
general path in rounding.py, which is the specification: tests check each fast path equal to
it, and to ml_dtypes, on every float32 input (tests marked ``exhaustive``). Formats without
mantissa bits, unsigned formats and formats without zero (E8M0) always take the general path,
and the pattern paths skip formats whose smallest normal is 4 or more (emin > 1, no preset).

Speed notes (measured, benchmarks/bench_rounding.py): NumPy's masked operations (``where=``,
``np.where``, ``np.putmask``) on a random mask cost 40x a plain pass, np.maximum/np.minimum with
a scalar several times a np.clip, and uint64 clips 2.5x float64 ones; none of them appears here.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ._bitwords import LAYOUT, RandomSource, float_bits, masks, significand, stochastic_away
from .formats import FloatFormat

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


# --- which fast path applies ------------------------------------------------------------------
def choose(dtype, fmt: FloatFormat, mode: str, random_bits=None):
    """``(path, working dtype)`` for ``dtype`` input, or ``(None, None)`` for the general path."""
    dtype = np.dtype(dtype)
    if not (fmt.signed and fmt.has_zero and fmt.mantissa_bits > 0) or dtype not in LAYOUT:
        return None, None  # (without mantissa bits "even" means the exponent field's last bit)
    for work in ([_F32, _F64] if dtype == _F32 else [_F64]):
        if mode == "nearest":
            if _addition_applies(work, fmt):
                return nearest_by_addition, work
            if work == _F32 and _same_range(fmt):
                return nearest_same_range, work
        elif mode == "stochastic" and _pattern_applies(work, fmt, random_bits):
            return stochastic_by_pattern, work
        elif mode in ("toward_zero", "up", "down", "nearest_away") \
                and _pattern_applies(work, fmt, None) \
                and fmt.mantissa_bits < LAYOUT[work][1]:
            return directed_by_pattern, work
        elif (mode == "odd" or mode == "stochastic" and random_bits is not None) \
                and _scaling_applies(work, fmt):
            return by_scaling, work
    return None, None


def _addition_applies(dtype, fmt: FloatFormat) -> bool:
    # C = 2**(e + p - m) finite for e up to emax + 1, the clamp at emin a normal exponent, and
    # at least one bit to round away (m < p)
    _, p, bias = LAYOUT[dtype]
    m = fmt.mantissa_bits
    return m < p and fmt.emin >= 1 - bias and fmt.emax + 1 + p - m <= bias


def _scaling_applies(dtype, fmt: FloatFormat) -> bool:
    # every quantum 2**(e - m), e in [emin, emax + 1], and its inverse normal numbers of dtype;
    # |x| / q of a subnormal x a scaling up (emin <= m), of a huge x a scaling down (m <= emax + 1)
    _, p, bias = LAYOUT[dtype]
    m = fmt.mantissa_bits
    return (m < p and fmt.emin - m >= 1 - bias and fmt.emax + 1 - m <= bias - 1
            and fmt.emin <= m <= fmt.emax + 1)


def _same_range(fmt: FloatFormat) -> bool:
    return fmt.emin == -126 and fmt.emax <= 127 and fmt.mantissa_bits <= 23


def _pattern_applies(dtype, fmt: FloatFormat, random_bits) -> bool:
    # The format's values are the dtype's, and its emin at or above the dtype's: scaling by
    # 2**(1 - bias - emin) <= 1 puts its subnormals onto the dtype's (see stochastic_by_pattern);
    # emin <= 1 keeps the way back, 2**(bias + emin - 1), finite.
    # A k-bit adder takes this path where R's top min(k, p - m) bits are among the 16 drawn,
    # and, where x is scaled, f's first k bits are among the p - m the pattern keeps.
    _, p, bias = LAYOUT[dtype]
    m = fmt.mantissa_bits
    fits = m <= p and 1 - bias <= fmt.emin <= 1 and fmt.emax <= bias
    if random_bits is None:
        return fits
    unscaled = fmt.emin == 1 - bias
    return fits and min(random_bits, p - m) <= 16 and (unscaled or random_bits <= p - m)


def _binade(x, fmt: FloatFormat):
    """Bit patterns (a new unsigned array) of ``2**clip(exponent(|x|), emin, emax + 1)``: the
    power of two whose binade sets the target's quantum at |x|."""
    uint, p, bias, sign, exponent = masks(x.dtype)
    c = np.bitwise_and(x.view(uint), exponent)
    if x.dtype == _F32:
        np.clip(c, uint((fmt.emin + bias) << p), uint((fmt.emax + 1 + bias) << p), out=c)
    else:  # NumPy clips uint64 slowly; these patterns are the floats 0, 2**e and inf, same order
        cf = c.view(x.dtype)
        np.clip(cf, 2.0**fmt.emin, 2.0 ** (fmt.emax + 1), out=cf)
    return c


# --- round to nearest even --------------------------------------------------------------------
@np.errstate(all="ignore")
def nearest_by_addition(x, out, fmt: FloatFormat, mode, policy: str, random=None):
    """Nearest-even by one floating-point addition: ``(|x| + C) - C``.

    With ``e = clip(exponent(|x|), emin, emax + 1)`` and ``C = 2**(e + p - m)`` (p = 23 or 52
    the input's mantissa bits, m the target's), ulp(C) = 2**(e - m) is the target's quantum at
    |x|, and |x| < 2C keeps the sum in C's binade or at exactly 2C. The FPU rounds the sum once,
    to nearest even, onto multiples of that quantum, and subtracting C is exact (Sterbenz): the
    result *is* the target's nearest-even value, subnormals and carries into the next binade
    included. Values from 2**(emax + 1) up cannot be hurt by the clamp: they overflow anyway.
    inf and NaN pass through the two additions unchanged.
    """
    uint, p, bias, sign, exponent = masks(x.dtype)
    m = fmt.mantissa_bits
    c = _binade(x, fmt)
    c += uint((p - m) << p)  # 2**e -> C = 2**(e + p - m)
    cf = c.view(x.dtype)
    np.abs(x, out=out)
    out += cf
    out -= cf
    out.view(uint)[...] |= x.view(uint) & sign
    finish(out, x, fmt, policy, nan_safe=True)


def nearest_same_range(x, out, fmt: FloatFormat, mode, policy: str, random=None):
    """Nearest-even for float32 input and a format with float32's exponent range (BF16, TF32).

    With the same emin, the float32 bit pattern of |x| is the target's pattern followed by
    ``s = 23 - m`` extra bits, subnormals included. Adding ``2**(s-1) - 1`` plus the last kept
    bit and clearing the extra bits is round-to-nearest-even; a carry runs into the exponent,
    and past the largest finite value into the infinity pattern. The sign bit rides along
    untouched: no finite magnitude carries out of bit 30.
    """
    s = 23 - fmt.mantissa_bits
    bits = x.view(np.uint32)
    r = out.view(np.uint32)
    if s == 0:  # FP32 itself
        np.copyto(r, bits)
    else:
        np.right_shift(bits, s, out=r)
        r &= np.uint32(1)
        r += np.uint32((1 << (s - 1)) - 1)
        r += bits
        r &= np.uint32((0xFFFFFFFF << s) & 0xFFFFFFFF)
    finish(out, x, fmt, policy, nan_safe=False)


# --- odd, and k-bit stochastic rounding that needs more bits than the pattern keeps -------------
@np.errstate(all="ignore")
def by_scaling(x, out, fmt: FloatFormat, mode: str, policy: str, random=None):
    """Round-to-odd and k-bit stochastic rounding by exact arithmetic on |x| / quantum.

    ``q = 2**(clip(exponent(|x|), emin, emax + 1) - m)`` is the target's quantum at |x|, and
    ``t = |x| / q``, ``kept = floor(t)``, ``f = t - kept`` are exact (power-of-two scalings that
    neither overflow nor underflow, see _scaling_applies; dropping integer bits). The one decision
    point looks at f, kept's last bit and the random bits; ``(kept + inc) * q`` is exact too,
    since f > 0 implies kept < 2**p. inf and NaN come through as inf and NaN.
    """
    uint, p, bias, sign, exponent = masks(x.dtype)
    m = fmt.mantissa_bits
    q = _binade(x, fmt)
    q -= uint(m << p)
    inverse_q = np.subtract(uint((2 * bias) << p), q)  # 2**-k has exponent field bias - k
    f = np.abs(x)
    f *= inverse_q.view(x.dtype)  # t
    kept = np.floor(f)
    f -= kept
    if mode == "stochastic":
        kept += _adder_carries(f, random)
    elif mode == "odd":
        kept += (f > 0) & (np.floor(kept * 0.5) * 2 == kept)  # kept even: set the last bit
    else:
        raise ValueError(f"by_scaling does not do mode {mode!r}")
    np.multiply(kept, q.view(x.dtype), out=out)
    if mode == "odd":  # finite overflows point toward zero: max (IEEE 754 sec. 7.4)
        out[(out > fmt.max) & (out < np.inf)] = fmt.max
    out.view(uint)[...] |= x.view(uint) & sign
    finish(out, x, fmt, policy, nan_safe=True)


def _adder_carries(f, random: RandomSource):
    """Whether a k-bit adder carries: ``floor(f * 2**k) + top_k(R) >= 2**k`` (f in [0, 1) exact).

    k <= 16: exact in floating point. k > 16: the carry is ``~R < T_k`` (T_k: f's first k bits
    at the top of 64), which R's first 16 bits decide unless ~top16 equals f's first 16 bits
    and f has more bits (probability 2**-16): then the whole word decides (stochastic_away).
    """
    k, top16 = random.random_bits, random.top16
    if k <= 16:
        adder_sum = np.floor(f * f.dtype.type(2.0**k)) + (top16 >> np.uint16(16 - k))
        return adder_sum >= f.dtype.type(2.0**k)
    f16 = f * f.dtype.type(65536.0)
    head = np.floor(f16)  # f's first 16 bits
    u16 = np.invert(top16).astype(f.dtype)  # exact
    away = u16 < head
    tie = u16 == head
    if tie.any():
        idx = np.flatnonzero(tie)
        idx = idx[f16[idx] > head[idx]]
        if idx.size:
            rem, lb = significand(f[idx].astype(np.float64))
            away[idx] = stochastic_away(rem, -lb, random.full_words(idx), random.rng, k)
    return away


@np.errstate(all="ignore")
def stochastic_by_pattern(x, out, fmt: FloatFormat, mode, policy: str, random=None):
    """Stochastic rounding by adding random bits to the bit pattern of a scaled x.

    Scaling x by ``2**shift``, ``shift = 1 - bias - emin <= 0``, puts the target's smallest
    normal on the dtype's, so every scaled value, subnormal or not, has exactly ``s = p - m``
    bits below the target's last bit in its pattern (BF16 in float32 needs no scaling). Adding
    ``u' = 2**b - 1 - top_b(R)`` at the top of those s bits (b = min(16, s)) and clearing them
    rounds: the carry out is "U < f" decided on R's first b bits, and it runs into the
    exponent field like any other carry; the sign bit rides along (finite magnitudes never
    carry out of it). A k-bit adder adds ``top_k(R)`` to f's first k bits instead, after
    _exact_truncation where x was scaled, so that those are f's bits exactly.

    R's first b bits cannot decide where they tie with f's first b bits and f has more bits,
    nor where the scaling rounded (x below the target's smallest normal: it dropped f's bits
    past s, moving the pattern by at most half its last bit). Adding ``u' + 1`` instead of u'
    gives the same carry everywhere else, and puts every such element among those whose low
    s bits end up at most ``2**(s - b)``: these (about 2 * 2**-b of all) are returned, for
    rounding.settle to decide with the exact rule and R's remaining bits.
    """
    uint, p, bias, sign, _ = masks(x.dtype)
    word = _ones(8 * out.itemsize)
    s = p - fmt.mantissa_bits
    shift = 1 - bias - fmt.emin
    k = random.random_bits
    b = min(16, s) if k is None else min(k, s)
    undecided = k is None and bool(shift or s > b)  # else R's first b bits always decide
    r = out.view(uint)
    if shift:
        np.multiply(x, x.dtype.type(2.0**shift), out=out)
        if k is not None:  # the adder sees f's first k bits: truncate exactly
            _exact_truncation(x, out, shift)
    elif not s:
        np.copyto(out, x)
    pattern = r if shift else x.view(uint)  # of the scaled x
    flagged = None
    if s:
        top = random.top16 >> np.uint16(16 - b) if b < 16 else random.top16  # top_b(R)
        if k is not None:
            noise = top
            if k < s:  # the adder ignores f's bits past the k-th
                pattern = np.bitwise_and(pattern, uint(word << (s - k) & word), out=r)
        else:  # u' (u' + 1 where some are undecided), made in the pattern's dtype
            noise = np.subtract(uint(_ones(b) + undecided), top, dtype=uint)
        if s > b:
            noise = np.left_shift(noise, uint(s - b), dtype=uint)
        np.add(pattern, noise, out=r)
        if undecided:
            low = np.bitwise_and(r, uint(_ones(s)), out=noise)
            flagged = np.flatnonzero(np.less_equal(low, uint(1 << (s - b))))
        r &= uint(word << s & word)
    if shift:
        out *= x.dtype.type(2.0**-shift)
    finish(out, x, fmt, policy, nan_safe=False)
    return flagged if flagged is not None and flagged.size else None


def _ones(n: int) -> int:
    return (1 << n) - 1


# --- directed modes on the scaled pattern --------------------------------------------------
@np.errstate(all="ignore")
def directed_by_pattern(x, out, fmt: FloatFormat, mode: str, policy: str, random=None):
    """toward_zero, up, down and nearest_away on the bit pattern of x scaled as in
    stochastic_by_pattern.

    The scaled pattern has s = p - m bits below the target's last bit; clearing them truncates,
    adding ``2**s - 1`` first rounds the magnitude up, adding ``2**(s-1)`` rounds to nearest
    with ties away (the carries run into the exponent field). Where the scaling rounded (x below
    the target's smallest normal), the scaled value is first made exact enough: a pattern that
    came out above |x * 2**shift| steps back by one (for a same-sign pair, unsigned patterns
    order as magnitudes do), which decides truncation and ties-away alike; for rounding up,
    the lost bits, if any, also set its last bit, which then counts. up rounds positive
    magnitudes up and truncates negative ones; down the other way round. Overflow toward zero
    stops at max (IEEE 754 sec. 7.4); the other side follows the policy.
    """
    uint, p, bias, sign, _ = masks(x.dtype)
    width = 8 * out.itemsize
    s = p - fmt.mantissa_bits
    shift = 1 - bias - fmt.emin
    r = out.view(uint)
    lost = None
    if shift:
        np.multiply(x, x.dtype.type(2.0**shift), out=out)
        gap = _exact_truncation(x, out, shift)
        if mode in ("up", "down"):
            lost = np.clip(gap, 0, 1, out=gap)  # 1 where the scaling dropped bits
    else:
        np.copyto(out, x)
    if mode == "nearest_away":
        r += uint(1 << (s - 1))
    elif mode != "toward_zero":  # 2**s - 1 (+ the lost bits) onto the magnitudes that round up
        up = r >> uint(width - 1)  # 1 for negative values
        if mode == "up":
            up -= uint(1)  # all ones for positive values, else 0
        else:
            np.subtract(uint(0), up, out=up)  # all ones for negative values
        if lost is None:
            up &= uint(_ones(s))
        else:
            lost += uint(_ones(s))
            up &= lost
        r += up
    r &= uint(_ones(width) << s & _ones(width))
    if shift:
        out *= x.dtype.type(2.0**-shift)
    if mode == "toward_zero":
        np.clip(out, -fmt.max, fmt.max, out=out)
        if fmt.specials == "fnuz":
            out += 0  # -0 + 0 = +0
        _specials(out, x, fmt, policy)
    else:
        if mode == "up":
            np.clip(out, -fmt.max, np.inf, out=out)
        elif mode == "down":
            np.clip(out, -np.inf, fmt.max, out=out)
        finish(out, x, fmt, policy, nan_safe=True)  # (_specials puts NaN back)
        _specials(out, x, fmt, policy)


def _exact_truncation(x, out, shift: int):
    """Turn ``out = RN(x * 2**shift)`` into the truncation of x * 2**shift on the dtype's grid,
    in place: a pattern that came out above it steps back by one (out and x have the same sign,
    and same-sign patterns order as magnitudes do). Returns the pattern difference |x| - |back|
    (unsigned, wrapped where negative), zero exactly where the scaling was exact."""
    uint = LAYOUT[x.dtype][0]
    gap = np.multiply(out, x.dtype.type(2.0**-shift)).view(uint)
    np.subtract(x.view(uint), gap, out=gap)
    out.view(uint)[...] -= gap >> uint(8 * x.itemsize - 1)
    return gap


def _any_nonfinite(x) -> bool:
    """Whether x holds inf or NaN (np.min propagates NaN; a pairwise sum would be slower)."""
    return bool(x.size) and not np.isfinite(np.min(x) + 0 * np.max(x))


def _any_nan(x) -> bool:
    return bool(x.size) and bool(np.isnan(np.min(x)))


def _specials(out, x, fmt: FloatFormat, policy: str):
    """NaN inputs give NaN; +-inf inputs +-inf where the format has infinities, else the
    overflow policy's value."""
    if _any_nonfinite(x):
        inf = np.isinf(x)
        value = np.inf if fmt.has_inf else (fmt.max if policy == "saturate" else np.nan)
        out[inf] = np.copysign(np.array(value, x.dtype), x[inf])
        np.copyto(out, x, where=np.isnan(x))


# --- overflow, specials, sign -----------------------------------------------------------------
@np.errstate(all="ignore")
def finish(out, x, fmt: FloatFormat, policy: str, *, nan_safe: bool):
    """Apply overflow policy and the input's specials to signed rounded values ``out``, in place.

    ``out`` holds the correctly rounded value of each finite input, possibly above max (then
    it overflows); for inf inputs +-inf, for NaN inputs NaN when ``nan_safe``, else anything.
    """
    uint, p, bias, sign, exponent = masks(x.dtype)
    k = bias - fmt.emax
    # rounded overflows are >= 2**(emax+1)
    ieee_inf = policy == "inf" and fmt.has_inf and 0 <= k <= bias
    if ieee_inf:
        # Scale 2**(emax + 1) to the dtype's overflow point and back: everything at or above it
        # becomes inf, everything below comes back exactly (power-of-two scalings, no underflow).
        if k:
            out *= np.array(2.0**k, x.dtype)
            out *= np.array(2.0**-k, x.dtype)
    elif policy == "saturate":
        np.clip(out, -fmt.max, fmt.max, out=out)
    elif policy == "nan" and _overflow_scale(fmt, x.dtype) is not None:
        # The values above max are grid values from max + ulp(max) on; one multiplication sends
        # exactly those to +-inf, so v - v is NaN there and +0 elsewhere; the quiet-NaN bits of
        # v OR-ed into out make those NaN and keep their sign.
        v = np.multiply(out, _overflow_scale(fmt, x.dtype))
        v -= v
        v.view(uint)[...] &= uint(float_bits(np.nan, x.dtype)) & ~sign
        out.view(uint)[...] |= v.view(uint)
    elif policy == "nan":
        # OR-ing the quiet-NaN pattern into anything keeps its sign and makes it a NaN
        over = np.bitwise_and(out.view(uint), ~sign) > uint(float_bits(fmt.max, x.dtype))
        out.view(uint)[...] |= np.multiply(over, uint(float_bits(np.nan, x.dtype)))
    else:  # "inf" where the scaling does not apply
        over = np.abs(out) > fmt.max
        out[over] = np.copysign(np.array(np.inf, x.dtype), out[over])
    restore_inf = fmt.has_inf and not ieee_inf  # infinity stays infinity whatever the policy
    if restore_inf and _any_nonfinite(x):
        np.copyto(out, x, where=np.isinf(x))
    if not nan_safe and _any_nan(x):
        np.copyto(out, x, where=np.isnan(x))
    if fmt.specials == "fnuz":
        out += 0  # -0 + 0 = +0: fnuz formats have no negative zero


@functools.cache
def _overflow_scale(fmt: FloatFormat, dtype):
    """A constant c of ``dtype`` with ``max * c`` finite and ``(max + ulp(max)) * c`` infinite
    (the multiplication rounding to nearest), or None where no constant separates them safely."""
    _, p, bias = LAYOUT[np.dtype(dtype)]
    if fmt.mantissa_bits > p - 4 or fmt.emax < 0:  # max < 1: c would exceed the dtype's range
        return None
    top = fmt.max + 2.0 ** (fmt.emax - fmt.mantissa_bits)  # the first value past max
    with np.errstate(all="ignore"):
        c = np.array(math.ldexp((1 - 2.0 ** -(p + 2)) / ((fmt.max + top) / 2), bias + 1), dtype)[()]
        ok = np.isfinite(c) and np.isfinite(np.multiply(dtype.type(fmt.max), c)) \
            and np.isinf(np.multiply(dtype.type(top), c))
    return c if ok else None
