"""Fast paths of :func:`lowprec.round` for the common cases, each exact by the argument in its docstring.

* :func:`nearest_by_addition`: nearest even by one float addition (float32 and float64 input;
  FP16, FP8, MX elements in float32, every preset in float64).
* :func:`nearest_same_range`: nearest even on float32 bit patterns, for formats with float32's
  exponent range (BF16, TF32).
* :func:`by_scaling`: every other mode, by exact arithmetic on |x| / quantum (float32 input for
  FP16, FP8, MX; float64 for everything, float32 BF16 inputs included).
* :func:`stochastic_same_range`: stochastic on float32 bit patterns (BF16, TF32).

Each has the signature ``(x, out, fmt, mode, policy, random)``, writes into ``out`` (same dtype
and length as the chunk ``x``) and never modifies ``x``. The last section holds the exact
stochastic decision rule (U < f, or a k-bit adder), which the general path uses as well. The general path in rounding.py is the
specification: tests check each fast path equal to it, and to ml_dtypes, on every float32 input
(tests marked ``exhaustive``). Formats without mantissa bits, unsigned formats and formats
without zero (E8M0) always take the general path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .formats import FloatFormat

# Bit layout of the two working dtypes: unsigned twin, stored mantissa bits, exponent bias.
_LAYOUT = {np.dtype(np.float32): (np.uint32, 23, 127), np.dtype(np.float64): (np.uint64, 52, 1023)}
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def _masks(dtype):
    uint, p, bias = _LAYOUT[np.dtype(dtype)]
    width = 8 * np.dtype(uint).itemsize
    sign = uint(1 << (width - 1))
    exponent = uint(((1 << (width - 1 - p)) - 1) << p)
    return uint, p, bias, sign, exponent


def _float_bits(value: float, dtype) -> int:
    return int(np.array(value, dtype).view(_LAYOUT[np.dtype(dtype)][0]))


# --- which fast path applies ------------------------------------------------------------------
def choose(dtype, fmt: FloatFormat, mode: str):
    """``(path, working dtype)`` for ``dtype`` input, or ``(None, None)`` for the general path."""
    dtype = np.dtype(dtype)
    if not (fmt.signed and fmt.has_zero and fmt.mantissa_bits > 0) or dtype not in _LAYOUT:
        return None, None  # (without mantissa bits "even" means the exponent field's last bit)
    for work in ([_F32, _F64] if dtype == _F32 else [_F64]):
        if mode == "nearest":
            if _addition_applies(work, fmt):
                return nearest_by_addition, work
            if work == _F32 and _same_range(fmt):
                return nearest_same_range, work
        else:
            if _scaling_applies(work, fmt):
                return by_scaling, work
            if work == _F32 and mode == "stochastic" and _same_range(fmt) and 23 - fmt.mantissa_bits <= 16:
                return stochastic_same_range, work
    return None, None


def _addition_applies(dtype, fmt: FloatFormat) -> bool:
    # C = 2**(e + p - m) finite for e up to emax + 1, the clamp at emin a normal exponent, and
    # at least one bit to round away (m < p)
    _, p, bias = _LAYOUT[dtype]
    m = fmt.mantissa_bits
    return m < p and fmt.emin >= 1 - bias and fmt.emax + 1 + p - m <= bias


def _scaling_applies(dtype, fmt: FloatFormat) -> bool:
    # every quantum 2**(e - m), e in [emin, emax + 1], and its inverse normal numbers of dtype;
    # |x| / q of a subnormal x a scaling up (emin <= m), of a huge x a scaling down (m <= emax + 1)
    _, p, bias = _LAYOUT[dtype]
    m = fmt.mantissa_bits
    return (m < p and fmt.emin - m >= 1 - bias and fmt.emax + 1 - m <= bias - 1
            and fmt.emin <= m <= fmt.emax + 1)


def _same_range(fmt: FloatFormat) -> bool:
    return fmt.emin == -126 and fmt.emax <= 127 and fmt.mantissa_bits <= 23


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
    uint, p, bias, sign, exponent = _masks(x.dtype)
    m = fmt.mantissa_bits
    c = np.bitwise_and(x.view(uint), exponent)
    np.clip(c, uint((fmt.emin + bias) << p), uint((fmt.emax + 1 + bias) << p), out=c)
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


# --- every other mode ---------------------------------------------------------------------------
@np.errstate(all="ignore")
def by_scaling(x, out, fmt: FloatFormat, mode: str, policy: str, random=None):
    """Directed, ties-away, odd and stochastic rounding by exact arithmetic on |x| / quantum.

    ``q = 2**(clip(exponent(|x|), emin, emax + 1) - m)`` is the target's quantum at |x|, and
    ``t = |x| / q``, ``kept = floor(t)``, ``f = t - kept`` are exact (power-of-two scalings that
    neither overflow nor underflow, see _scaling_applies; dropping integer bits). The one decision
    point looks at f, kept's last bit and the sign; ``(kept + inc) * q`` is exact too, since
    f > 0 implies kept < 2**p. inf and NaN come through as inf and NaN.
    """
    uint, p, bias, sign, exponent = _masks(x.dtype)
    m = fmt.mantissa_bits
    q = np.bitwise_and(x.view(uint), exponent)
    np.clip(q, uint((fmt.emin + bias) << p), uint((fmt.emax + 1 + bias) << p), out=q)
    q -= uint(m << p)
    inverse_q = np.subtract(uint((2 * bias) << p), q)  # 2**-k has exponent field bias - k
    f = np.abs(x)
    f *= inverse_q.view(x.dtype)  # t
    kept = np.floor(f)
    f -= kept
    if mode == "stochastic":
        kept += _decide_away(f, random)
    elif mode == "nearest_away":
        kept += f >= 0.5
    elif mode == "up":
        kept += (f > 0) & ~np.signbit(x)
    elif mode == "down":
        kept += (f > 0) & np.signbit(x)
    elif mode == "odd":
        kept += (f > 0) & (np.floor(kept * 0.5) * 2 == kept)  # kept even: set the last bit
    elif mode != "toward_zero":
        raise ValueError(f"by_scaling does not do mode {mode!r}")
    np.multiply(kept, q.view(x.dtype), out=out)
    if mode in ("toward_zero", "odd", "up", "down"):
        _stop_at_max(out, x, fmt, mode)
    out.view(uint)[...] |= x.view(uint) & sign
    finish(out, x, fmt, policy, nan_safe=True)


def _stop_at_max(mag, x, fmt: FloatFormat, mode: str):
    """Finite overflows of modes pointing toward zero give max, as IEEE 754 (sec. 7.4) says."""
    over = (mag > fmt.max) & (mag < np.inf)
    if mode == "up":
        over &= np.signbit(x)
    elif mode == "down":
        over &= ~np.signbit(x)
    mag[over] = fmt.max


def _decide_away(f, random: RandomSource):
    """Away from zero where ``U < f`` (f in [0, 1) exact), U's first 16 bits ``random.top16``.

    Full bits: top16 below f's first 16 bits decides away, above them not; only top16 equal to
    them with more of f to come (probability 2**-16) completes R and uses the 64-bit rule
    (stochastic_away) on f, decomposed exactly. ``random_bits=k <= 16``: the k-bit adder,
    exact in floating point. ``k > 16``: away iff ~R < T_k, which 16 bits decide the same way
    with ~top16 in place of top16.
    """
    k, top16 = random.random_bits, random.top16
    if k is not None and k <= 16:
        return np.floor(f * f.dtype.type(2.0**k)) + (top16 >> np.uint16(16 - k)) >= f.dtype.type(2.0**k)
    f16 = f * f.dtype.type(65536.0)
    head = np.floor(f16)  # f's first 16 bits
    u16 = (top16 if k is None else np.invert(top16)).astype(f.dtype)  # exact
    away = u16 < head
    tie = u16 == head
    if tie.any():
        idx = np.flatnonzero(tie)
        idx = idx[f16[idx] > head[idx]]
        if idx.size:
            rem, lb = significand(f[idx].astype(np.float64))
            away[idx] = stochastic_away(rem, -lb, random.full_words(idx), random.rng, k)
    return away


def stochastic_same_range(x, out, fmt: FloatFormat, mode, policy: str, random=None):
    """Stochastic rounding of float32 ``x`` to a format with float32's exponent range (BF16).

    The float32 pattern has exactly s = 23 - m <= 16 bits below the target's quantum,
    subnormals included, so f's first 64 bits are ``rem << (64 - s)`` and only R's top s bits
    matter. R < T is the carry out of ``rem + top_s(~R)``, and ~R < T_k the carry out of
    ``rem_k + top_s(R)`` (rem_k: rem with its low s - k bits cleared): adding that to the
    pattern and clearing the s bits rounds, carries into the exponent included. The sign bit
    rides along: no finite magnitude carries out of bit 30.
    """
    s = 23 - fmt.mantissa_bits
    k = random.random_bits
    bits = x.view(np.uint32)
    r = out.view(np.uint32)
    np.copyto(r, bits)
    if k is None:
        noise = np.invert(random.top16)
    else:
        noise = random.top16.copy()
        if k < s:  # a k-bit adder ignores the discarded bits past the k-th
            r &= np.uint32((0xFFFFFFFF << (s - k)) & 0xFFFFFFFF)
    noise >>= np.uint16(16 - s)
    r += noise
    r &= np.uint32((0xFFFFFFFF << s) & 0xFFFFFFFF)
    finish(out, x, fmt, policy, nan_safe=False)


# --- overflow, specials, sign -----------------------------------------------------------------
@np.errstate(all="ignore")
def finish(out, x, fmt: FloatFormat, policy: str, *, nan_safe: bool):
    """Apply overflow policy and the input's specials to signed rounded values ``out``, in place.

    ``out`` holds the correctly rounded value of each finite input, possibly above max (then
    it overflows); for inf inputs +-inf, for NaN inputs NaN when ``nan_safe``, else anything.
    """
    uint, p, bias, sign, exponent = _masks(x.dtype)
    k = bias - fmt.emax
    ieee_inf = policy == "inf" and fmt.has_inf and 0 <= k <= bias  # rounded overflows are >= 2**(emax+1)
    if ieee_inf:
        # Scale 2**(emax + 1) to the dtype's overflow point and back: everything at or above it
        # becomes inf, everything below comes back exactly (power-of-two scalings, no underflow).
        if k:
            out *= np.array(2.0**k, x.dtype)
            out *= np.array(2.0**-k, x.dtype)
    elif policy == "saturate":
        np.clip(out, -fmt.max, fmt.max, out=out)
    elif policy == "nan":
        # OR-ing the quiet-NaN pattern into anything keeps its sign and makes it a NaN
        over = np.bitwise_and(out.view(uint), ~sign) > uint(_float_bits(fmt.max, x.dtype))
        out.view(uint)[...] |= np.multiply(over, uint(_float_bits(np.nan, x.dtype)))
    else:  # "inf" where the scaling does not apply
        over = np.abs(out) > fmt.max
        out[over] = np.copysign(np.array(np.inf, x.dtype), out[over])
    restore_inf = fmt.has_inf and not ieee_inf  # infinity stays infinity whatever the policy
    if restore_inf and x.size and not np.isfinite(np.min(x) + 0 * np.max(x)):
        np.copyto(out, x, where=np.isinf(x))
    if not nan_safe and x.size and np.isnan(np.min(x)):  # min propagates NaN
        np.copyto(out, x, where=np.isnan(x))
    if fmt.specials == "fnuz":
        out += 0  # -0 + 0 = +0: fnuz formats have no negative zero


# --- the exact stochastic decision (the general path in rounding.py uses it too) -------------
# An element whose magnitude lies a fraction ``f`` of a quantum above the value toward zero
# rounds away with probability exactly ``f``. Its random input is a uniform number
# ``U = 0.b1 b2 b3 ...`` whose first 64 bits are the element's word ``R``; rounding away iff
# ``U < f`` needs only as many bits of U as it takes to tell U and f apart, so further words are
# drawn only when R equals f's first 64 bits (probability 2**-64). ``random_bits=k`` models a
# k-bit hardware adder instead: away iff ``floor(f * 2**k) + (R >> (64 - k)) >= 2**k``.
_ALL64 = 0xFFFFFFFFFFFFFFFF


def random_uint64(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uniform 64-bit words."""
    return rng.integers(0, _ALL64, size=n, dtype=np.uint64, endpoint=True)


@dataclass(frozen=True)
class RandomSource:
    """The random words R of one chunk for the fast paths: top bits up front, the rest on demand."""

    top16: np.ndarray  # uint16, R >> 48 for every element: almost always all that is needed
    rest: Callable[[np.ndarray], np.ndarray]  # indices -> R << 16 (uint64) of those elements
    rng: np.random.Generator  # the words after R, for exact ties of f's first 64 bits
    random_bits: int | None  # None: exact (U < f); k: a k-bit adder (section comment above)

    def full_words(self, idx):
        """R itself for the elements ``idx``."""
        return (self.top16[idx].astype(np.uint64) << np.uint64(48)) | (self.rest(idx) >> np.uint64(16))

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, random_bits):
        """16 random bits per element now (a quarter of a 64-bit word each), the rest when asked."""
        top16 = random_uint64(rng, -(-n // 4)).view(np.uint16)[:n]
        return cls(top16, lambda idx: random_uint64(rng, idx.size), rng, random_bits)

    @classmethod
    def from_words(cls, words: np.ndarray, rng: np.random.Generator, random_bits):
        """Chosen 64-bit words R, one per element (tests feed the fast and general paths alike)."""
        return cls((words >> np.uint64(48)).astype(np.uint16), lambda idx: words[idx] << np.uint64(16),
                   rng, random_bits)


def significand(a):
    """``(sig, lb)`` with ``a = sig * 2**lb`` exactly, sig < 2**53, for finite float64 ``a >= 0``."""
    bits = a.view(np.uint64)
    field = (bits >> np.uint64(52)).astype(np.int64)
    mantissa = bits & np.uint64((1 << 52) - 1)
    sig = np.where(field > 0, mantissa | np.uint64(1 << 52), mantissa)
    return sig, np.maximum(field, 1) - 1075


def stochastic_away(rem, shift, words, rng, random_bits):
    """True where the fraction ``f = rem / 2**shift`` (``rem < 2**shift``) rounds away.

    With ``T = floor(f * 2**64)`` (f's first 64 bits) and R = ``words``:
    full bits: away iff R < T, or R == T and the next words decide against f's next bits;
    ``random_bits=k``: away iff ``~R < T_k``, T_k = T with its low 64 - k bits cleared (the
    carry condition of the section comment, rewritten: ``R >> (64-k) >= 2**k - floor(f*2**k)``).
    """
    threshold, rest, rest_bits = _split_fraction(rem, shift)
    if random_bits is not None:
        if random_bits < 64:
            threshold &= np.uint64((_ALL64 << (64 - random_bits)) & _ALL64)
        return ~words < threshold
    result = words < threshold
    tied = (words == threshold) & (rest > 0)
    while tied.any():  # probability 2**-64 per element per round; ends as f runs out of bits
        idx = np.flatnonzero(tied)
        more = random_uint64(rng, idx.size)
        threshold, rest[idx], rest_bits[idx] = _split_fraction(rest[idx], rest_bits[idx])
        result[idx] = more < threshold
        tied[:] = False
        tied[idx] = (more == threshold) & (rest[idx] > 0)
    return result


def _split_fraction(v, nbits):
    """For the fraction ``v / 2**nbits`` (``v < 2**nbits``): its first 64 bits, and the bits
    after them as an integer with their count (``<= 0`` when nothing is left)."""
    short = nbits <= 64
    head = np.where(short, v << np.clip(64 - nbits, 0, 63).astype(np.uint64), _shr(v, nbits - 64))
    rest = np.where(short, np.uint64(0), v - _shl(_shr(v, nbits - 64), nbits - 64))
    return head, rest, nbits - 64


def _shr(v, s):
    """``v >> s`` for uint64 ``v`` and shifts ``s >= 0`` of any size."""
    return np.where(s >= 64, np.uint64(0), v >> np.clip(s, 0, 63).astype(np.uint64))


def _shl(v, s):
    """``v << s`` (mod 2**64) for uint64 ``v`` and shifts ``s >= 0`` of any size."""
    return np.where(s >= 64, np.uint64(0), v << np.clip(s, 0, 63).astype(np.uint64))
