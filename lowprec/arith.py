"""Correctly rounded elementwise arithmetic.

Elementwise: :func:`add`, :func:`sub`, :func:`mul`, :func:`div`, :func:`fma`, :func:`sqrt` (and
:func:`neg`, :func:`abs`) take float64/float32 values (any values, not only those of ``fmt``),
broadcast like NumPy, and return the exact result rounded once to ``fmt``, in every rounding
mode of :func:`lowprec.round`, stochastic included.

Sums and products with an accumulation model (:func:`lowprec.sum`, :func:`lowprec.dot`,
:func:`lowprec.matmul`) live in :mod:`lowprec.accumulate`; ``arith.sum``, ``arith.dot`` and
``arith.matmul`` remain for one release as deprecated aliases.

How the results are exact
-------------------------
A float64 result is not enough: 1 + 2**-80 is no float64, and rounding it first to float64 and
then to the target can round twice. Each operation instead writes its exact result as
``r = (hi + lo) * 2**E`` with error-free transformations: TwoSum (Knuth) for sums, Dekker's
TwoProduct for products; quotients and roots use the fact that the remainder ``a - q*b`` and
``a - s*s`` of a correctly rounded quotient or root is itself a float64 (Boldo & Daumas 2003),
so its sign says on which side of ``q`` or ``s`` the exact result lies. The operands are scaled
by powers of two first (exact) so that nothing overflows or underflows on the way. Then:

* Deterministic modes need only ``RO(r)``, r rounded to odd at 53 bits (truncate, and set the
  last bit if anything was lost). Rounding to odd with at least two more bits than the target,
  then rounding once more, equals rounding directly, in every mode (Boldo & Melquiond, "Emulation
  of FMA and correctly rounded sums: proved algorithms using rounding to odd", IEEE TC 2008);
  ``fma`` uses their three-term algorithm. That value goes to :func:`lowprec.round`.
* Stochastic rounding needs the first 64 bits of ``f``, the fraction of a quantum by which |r|
  exceeds its truncation: ``floor(f * 2**64)`` is computed exactly from the pair (hi, lo) and
  compared with one 64-bit random word per element (in C order, from ``rng.integers``); on the
  2**-64 chance of a tie, further words are compared with further bits of f, which are computed
  exactly in rational arithmetic. So P(away) = f exactly; ``random_bits=k`` uses the word's top
  k bits as :func:`lowprec.round` does.

Supported formats: up to 40 mantissa bits, values within 2**-900 .. 2**900 (every preset):
float64 must hold the exact intermediates with room to spare.
"""
from __future__ import annotations

import builtins
import math
import warnings
from fractions import Fraction
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from .formats import FloatFormat, FormatLike, as_format
from .rounding import ModeLike, RoundingMode, as_mode, as_real_array, round as _round

if TYPE_CHECKING:  # accumulate imports this module
    from .accumulate import AccumulatorLike, FormatPair, Operand

__all__ = ["add", "sub", "mul", "div", "fma", "sqrt", "neg", "abs",
           "sum", "dot", "matmul"]  # the last three: deprecated aliases of lowprec.sum, dot, matmul
_ALL64 = 0xFFFFFFFFFFFFFFFF
_STICKY = 2.0**-950  # stands in for a term too small to matter except by its sign (fma)


# --- error-free transformations --------------------------------------------------------------
def _two_sum(a, b):
    """``(s, err)`` with ``s = fl(a + b)`` and ``s + err == a + b`` exactly (Knuth's TwoSum)."""
    s = a + b
    b_part = s - a
    return s, (a - (s - b_part)) + (b - b_part)


def _split(a):
    """Veltkamp's split: ``a = hi + lo`` exactly, each half at most 26 significant bits."""
    t = 134217729.0 * a  # 2**27 + 1
    hi = t - (t - a)
    return hi, a - hi


def _two_product(a, b):
    """``(p, err)`` with ``p = fl(a * b)`` and ``p + err == a * b`` exactly (Dekker), for the
    scaled operands used here (no overflow, no underflow)."""
    p = a * b
    a_hi, a_lo = _split(a)
    b_hi, b_lo = _split(b)
    return p, ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo


def _odd_neighbour(x, side):
    """Round to odd, given a float64 ``x = RN(y)`` and a float whose sign says on which side of x
    the value y lies (0: y == x): y is strictly between x and that neighbour, so RO(y) is
    whichever of the two has an odd last bit (read through the float64's own 64-bit word).
    NumPy or CuPy arrays (the optimizers' fused multiply-add runs on either)."""
    even = (x.view(np.uint64) & np.uint64(1)) == 0
    return np.where((side != 0) & even, np.nextafter(x, np.copysign(np.inf, side)), x)


def _add_to_odd(a, b):
    """RO(a + b), rounded to odd at 53 bits."""
    s, err = _two_sum(a, b)
    return _odd_neighbour(s, err)


# --- the exact result of one operation --------------------------------------------------------
class _Exact(NamedTuple):
    """The exact results r of an elementwise operation, flattened (module docstring)."""

    special: np.ndarray  # bool: the result is known outright (NaN, infinity, an exact zero)
    value: np.ndarray  # float64: that result, where special
    odd: np.ndarray  # float64: RO(r * 2**-scale), elsewhere
    scale: np.ndarray  # int64: the power of two E that r was scaled by
    pair: tuple | None  # (hi, lo): hi = RN(r * 2**-E), lo = RO(rest); None: use exact_floor
    exact_floor: Callable  # (i, s) -> (floor(|r_i| * 2**s), whether that is exact), Python ints


def _floor_scaled(value: Fraction, shift: int):
    v = builtins.abs(value) * Fraction(2) ** shift
    whole = v.numerator // v.denominator
    return whole, whole * v.denominator == v.numerator


def _floor_sqrt_scaled(a: Fraction, shift: int):
    x = a * Fraction(2) ** (2 * shift)
    whole = x.numerator // x.denominator
    root = math.isqrt(whole)  # floor(sqrt(x)) == isqrt(floor(x))
    return root, root * root * x.denominator == x.numerator


def _zero_of_sum(x, y, mode):
    """The sign of an exact zero sum x + y (IEEE 754 sec. 6.3): -0 when rounding down unless
    both are +0; otherwise -0 only when both are -0."""
    if mode is RoundingMode.DOWN:
        return np.where((x == 0) & (y == 0) & ~np.signbit(x) & ~np.signbit(y), 0.0, -0.0)
    return np.where((x == 0) & (y == 0) & np.signbit(x) & np.signbit(y), -0.0, 0.0)


def _add_exact(a, b, mode):
    finite = np.isfinite(a) & np.isfinite(b)
    # Huge operands are scaled by 2**-128, so TwoSum cannot overflow; a nonzero sum is then
    # beyond every supported format anyway (|r| >= 2**946), so the bits a tiny partner loses
    # in the scaling do not matter.
    scale = np.where(finite & (np.maximum(np.abs(a), np.abs(b)) >= 2.0**1000), 128, 0)
    hi, lo = _two_sum(np.ldexp(a, -scale), np.ldexp(b, -scale))
    zero = finite & (hi == 0)
    value = np.where(zero, _zero_of_sum(a, b, mode), a + b)
    return _Exact(~finite | zero, value, _add_to_odd(hi, lo), scale, (hi, lo),
                  lambda i, s: _floor_scaled(Fraction(a[i]) + Fraction(b[i]), s))


def _mul_exact(a, b, mode):
    regular = np.isfinite(a) & np.isfinite(b) & (a != 0) & (b != 0)
    ma, ea = np.frexp(a)  # a = ma * 2**ea, 1/2 <= |ma| < 1
    mb, eb = np.frexp(b)
    hi, lo = _two_product(ma, mb)
    return _Exact(~regular, a * b, _add_to_odd(hi, lo), ea.astype(np.int64) + eb, (hi, lo),
                  lambda i, s: _floor_scaled(Fraction(a[i]) * Fraction(b[i]), s))


def _div_exact(a, b, mode):
    regular = np.isfinite(a) & np.isfinite(b) & (a != 0) & (b != 0)
    ma, ea = np.frexp(np.abs(a))
    mb, eb = np.frexp(np.where(regular, np.abs(b), 1.0))
    q = ma / mb  # RN(ma / mb)
    p, err = _two_product(q, mb)
    rem = (ma - p) - err  # exact: ma - q*mb is a float64 and ma - p is exact (Sterbenz)
    tail = rem / mb  # the next 53 bits of the quotient, made round-to-odd by the next remainder
    p, err = _two_product(tail, mb)
    tail = _odd_neighbour(tail, (rem - p) - err)
    sign = np.where(np.signbit(a) ^ np.signbit(b), -1.0, 1.0)
    return _Exact(~regular, a / b, sign * _odd_neighbour(q, rem), ea.astype(np.int64) - eb,
                  (sign * q, sign * tail),
                  lambda i, s: _floor_scaled(Fraction(a[i]) / Fraction(b[i]), s))


def _sqrt_exact(a, mode):
    regular = np.isfinite(a) & (a > 0)
    m, e = np.frexp(np.where(regular, a, 1.0))
    odd_exponent = (e & 1).astype(bool)
    m = np.where(odd_exponent, 2 * m, m)  # a = m * 2**(e - odd), m in [1/2, 2)
    s = np.sqrt(m)  # RN(sqrt(m))
    p, err = _two_product(s, s)
    rem = (m - p) - err  # exact, as for the quotient: m - s*s is a float64
    scale = (e.astype(np.int64) - odd_exponent) // 2
    return _Exact(~regular, np.sqrt(a), _odd_neighbour(s, rem), scale, None,
                  lambda i, sh: _floor_sqrt_scaled(Fraction(a[i]), sh))


def _scaled_or_sticky(x, k):
    """x * 2**k exactly, or, when that would be far below every other term of the fma, a stand-in
    of the same sign: there it can only act as a sticky bit (the other part of the sum cannot
    cancel, being a lone c or an exact product p + err with |err| <= ulp(p)/2)."""
    return np.where(k < -900, np.copysign(_STICKY, x) * (x != 0), np.ldexp(x, np.maximum(k, -900)))


def _fma_exact(a, b, c, mode):
    finite = np.isfinite(a) & np.isfinite(b) & np.isfinite(c)
    product_zero = (a == 0) | (b == 0)
    ma, ea = np.frexp(a)
    mb, eb = np.frexp(b)
    mc, ec = np.frexp(c)
    e_product = ea.astype(np.int64) + eb
    scale = np.where(product_zero, ec, np.where(c == 0, e_product, np.maximum(e_product, ec)))
    hi, lo = _two_product(ma, mb)
    hi = _scaled_or_sticky(hi, e_product - scale)
    lo = _scaled_or_sticky(lo, e_product - scale) * (e_product - scale >= -900)
    c_scaled = _scaled_or_sticky(mc, ec - scale)
    # Boldo & Melquiond's fma: r = th + tl + lo exactly; RO(th + RO(tl + lo)) == RO(r).
    th, tl = _two_sum(c_scaled, hi)
    odd = _add_to_odd(th, _add_to_odd(tl, lo))
    # Specials: an infinite or NaN operand decides the result, as a float64 sum of the infinite
    # product (finite products stand in as 0) and c would.
    value = np.where(np.isfinite(a) & np.isfinite(b), 0.0, a * b) + c
    zero = finite & (odd == 0)
    value = np.where(zero, _zero_of_sum(np.where(product_zero, a * b, 1.0), c, mode), value)
    return _Exact(~finite | zero, value, odd, scale, None,
                  lambda i, s: _floor_scaled(Fraction(a[i]) * Fraction(b[i]) + Fraction(c[i]), s))


# --- rounding an exact result ----------------------------------------------------------------
def _floor_mod64(a, b):
    """``(floor(a + b) mod 2**64, a + b not an integer)`` exactly, for float64 a >= 0 and
    |b| < 2**52. a's integer part is split off exactly; the rest, s + err = frac(a) + b by TwoSum,
    has |s| <= 2**52 + 1, so the integers lie on s's grid: a non-integer s is at least one ulp from
    the nearest integer while |err| <= ulp/2, and an integer s is crossed only by a negative err."""
    a_int = np.floor(a)
    s, err = _two_sum(a - a_int, b)
    s_int = np.floor(s)
    on_integer = s_int == s
    s_int = s_int - (on_integer & (err < 0))
    fraction = ~on_integer | (err != 0)
    a_int = np.fmod(a_int, 2.0**64)
    high = np.floor(a_int * 2.0**-32)
    low = a_int - high * 2.0**32
    whole = ((high.astype(np.uint64) << np.uint64(32)) + low.astype(np.uint64)
             + s_int.astype(np.int64).view(np.uint64))  # arithmetic mod 2**64
    return whole, fraction


def _stochastic_away(ex, e_r, regular, tiny, fmt, rng, random_bits):
    """Whether each element rounds away from zero (see the module docstring)."""
    n = e_r.size
    words = rng.integers(0, _ALL64, size=n, dtype=np.uint64, endpoint=True)
    qe = np.maximum(e_r, fmt.emin) - fmt.mantissa_bits  # weight of the last kept bit
    threshold = np.zeros(n, np.uint64)  # floor(f * 2**64)
    inexact = tiny.copy()  # f has bits beyond the first 64
    if ex.pair is not None:
        # (hi + lo) * 2**(E - qe + 64) = a + b; a's grid spacing is a power of two G, |b| <= G/2.
        # b is RO of the true tail: as |b| < 2**52 (40-bit formats), the integers that floor()
        # compares with sit on b's 53-bit grid with an even last bit, so RO never crosses or
        # lands on one; when G < 1 the only such point within reach is 0, which RO keeps too.
        hi, lo = ex.pair
        shift = np.where(regular, ex.scale - qe + 64, 0)
        tail = np.where(hi < 0, -lo, lo)
        b = np.ldexp(tail, shift)
        b = np.where((b == 0) & (tail != 0), np.copysign(5e-324, tail), b)  # sign survives
        whole, fraction = _floor_mod64(np.ldexp(np.abs(hi), shift), b)
        threshold = np.where(regular, whole, threshold)
        inexact |= regular & fraction
    else:
        for i in np.flatnonzero(regular):  # fma and sqrt: exact rational arithmetic
            whole, exact = ex.exact_floor(i, 64 - int(qe[i]))
            threshold[i] = whole & _ALL64
            inexact[i] = not exact
    if random_bits is not None:  # a k-bit adder: away iff floor(f * 2**k) + k random bits carry
        shift = np.uint64(64 - random_bits)
        top = threshold >> shift
        need = (np.uint64(0) if random_bits == 64 else np.uint64(1 << random_bits)) - top
        return (top > 0) & ((words >> shift) >= need)
    away = words < threshold
    tied = np.flatnonzero((words == threshold) & inexact)
    if tied.size:
        away[tied] = _break_ties(tied, qe, ex.exact_floor, rng)
    return away


def _break_ties(idx, qe, exact_floor, rng):
    """A word equal to f's first 64 bits: compare fresh words with f's next 64 bits, and so on."""
    away = np.zeros(idx.size, bool)
    pending, level = list(builtins.range(idx.size)), 2
    while pending:
        words = rng.integers(0, _ALL64, size=len(pending), dtype=np.uint64, endpoint=True)
        still = []
        for word, j in zip(words.tolist(), pending):
            whole, exact = exact_floor(idx[j], 64 * level - int(qe[idx[j]]))
            bits = whole & _ALL64
            away[j] = word < bits
            if word == bits and not exact:
                still.append(j)
        pending, level = still, level + 1
    return away


@np.errstate(all="ignore")
def _finish(ex: _Exact, fmt: FloatFormat, mode, overflow, subnormals, rng, random_bits):
    """Round the exact results to fmt (flat float64 array)."""
    m = fmt.mantissa_bits
    e_r = np.frexp(ex.odd)[1].astype(np.int64) - 1 + ex.scale  # floor(log2|r|): RO keeps it
    too_big = ~ex.special & (e_r > fmt.emax + 1)  # |r| >= 2**(emax+2): overflows in every mode
    tiny = ~ex.special & (e_r < fmt.emin - m - 64)  # |r| < smallest_subnormal * 2**-64
    regular = ~(ex.special | too_big | tiny)
    # In range, RO(r) * 2**E is exact (|r| >= 2**-964). Outside, a stand-in on the same side of
    # every decision point: 2**(emax+2) beyond max, or smallest_subnormal / 8 below half of it.
    stand_in = np.where(too_big, 2.0 ** (fmt.emax + 2), fmt.smallest_subnormal / 8)
    v = np.where(regular, np.ldexp(ex.odd, np.where(regular, ex.scale, 0)),
                 np.copysign(stand_in, ex.odd))
    v = np.where(ex.special, ex.value, v)
    options = {"overflow": overflow, "subnormals": subnormals}
    if mode is not RoundingMode.STOCHASTIC:
        return _round(v, fmt, mode, **options)
    # Even the value toward zero is beyond max (E4M3: |r| >= 480), so both choices overflow.
    beyond = ~ex.special & (np.abs(v) >= fmt.max + 2.0 ** (fmt.emax - m))
    away = _stochastic_away(ex, e_r, regular, tiny, fmt, rng, random_bits) | beyond
    outward = np.where(np.signbit(v), _round(v, fmt, "down", **options),
                       _round(v, fmt, "up", **options))
    return np.where(away, outward, _round(v, fmt, "toward_zero", **options))


# --- public elementwise operations ------------------------------------------------------------
def _arith_format(fmt) -> FloatFormat:
    fmt = as_format(fmt)
    if fmt.mantissa_bits > 40 or fmt.smallest_subnormal < 2.0**-900 or fmt.max >= 2.0**900:
        raise ValueError(f"format {fmt.name} is outside what lowprec.arith supports: at most 40 "
                         "mantissa bits and values within 2**-900..2**900")
    return fmt




# Formats without NaN (the MX element formats) cannot store a NaN: a NaN operand and a NaN made
# by an invalid operation (IEEE 754 sec. 7.2) get different errors; round() alone would blame
# "the input" for both.
def _reject_nan_operands(operands, formats):
    """operands: (name, array) pairs whose NaNs would reach each of formats (None: skipped)."""
    no_nan = [f for f in formats if f is not None and not f.has_nan]
    for name, arr in operands if no_nan else ():
        if np.isnan(arr).any():
            raise ValueError(f"{name} holds NaN, but format {no_nan[0].name} has no NaN encoding")


def _reject_invalid(values, fmt, invalid, what="the result"):
    """values: results (of NaN-free operands) that are about to be stored in fmt."""
    if not fmt.has_nan and np.isnan(values).any():
        raise ValueError(f"{what} is NaN (invalid operation: {invalid}), but format {fmt.name} "
                         "has no NaN encoding")


def _elementwise(make_exact, invalid, operands, fmt, mode, overflow, subnormals, rng,
                 random_bits):
    """invalid: the operations whose result is NaN, for the error a format without NaN gives."""
    fmt = _arith_format(fmt)
    mode = as_mode(mode)
    # round() checks the options and raises its own clear errors
    _round(np.empty(0), fmt, mode, overflow=overflow, subnormals=subnormals, rng=rng,
           random_bits=random_bits)
    arrays = [as_real_array(x, name) for name, x in operands]
    _reject_nan_operands(zip((name for name, _ in operands), arrays), [fmt])
    shape = np.broadcast_shapes(*(arr.shape for arr in arrays))
    flat = [np.array(np.broadcast_to(arr, shape), np.float64).reshape(-1) for arr in arrays]
    with np.errstate(all="ignore"):
        exact = make_exact(*flat, mode)
    if not fmt.has_nan:
        _reject_invalid(exact.value[exact.special], fmt, invalid)
    out = _finish(exact, fmt, mode, overflow, subnormals, rng, random_bits).reshape(shape)
    if fmt.fits_float32 and all(arr.dtype == np.float32 for arr in arrays):
        out = out.astype(np.float32)  # exact: every value of fmt is a float32
    return out[()] if out.ndim == 0 else out


_ROUND_DOC = """
    Rounded once to ``fmt`` with ``mode``; ``overflow``, ``subnormals``, ``rng`` and
    ``random_bits`` as for :func:`lowprec.round`. Float32 inputs give float32 results when every
    value of ``fmt`` is a float32; otherwise float64. A format without NaN (the MX element
    formats) raises ValueError for a NaN operand and for an invalid operation (a NaN result)."""


def add(a: ArrayLike, b: ArrayLike, fmt: FormatLike, mode: ModeLike = "nearest", *,
        overflow: str | None = None, subnormals: bool = True,
        rng: np.random.Generator | None = None, random_bits: int | None = None) -> np.ndarray:
    """a + b, exactly, rounded once. An exact zero sum is +0 (-0 when rounding down)."""
    return _elementwise(_add_exact, "inf - inf", [("a", a), ("b", b)], fmt, mode, overflow,
                        subnormals, rng, random_bits)


def sub(a: ArrayLike, b: ArrayLike, fmt: FormatLike, mode: ModeLike = "nearest", *,
        overflow: str | None = None, subnormals: bool = True,
        rng: np.random.Generator | None = None, random_bits: int | None = None) -> np.ndarray:
    """a - b, exactly, rounded once (x - x is +0, -0 when rounding down)."""
    return _elementwise(lambda x, y, md: _add_exact(x, -y, md), "inf - inf", [("a", a), ("b", b)],
                        fmt, mode, overflow, subnormals, rng, random_bits)


def mul(a: ArrayLike, b: ArrayLike, fmt: FormatLike, mode: ModeLike = "nearest", *,
        overflow: str | None = None, subnormals: bool = True,
        rng: np.random.Generator | None = None, random_bits: int | None = None) -> np.ndarray:
    """a * b, exactly, rounded once."""
    return _elementwise(_mul_exact, "0 * inf", [("a", a), ("b", b)], fmt, mode, overflow,
                        subnormals, rng, random_bits)


def div(a: ArrayLike, b: ArrayLike, fmt: FormatLike, mode: ModeLike = "nearest", *,
        overflow: str | None = None, subnormals: bool = True,
        rng: np.random.Generator | None = None, random_bits: int | None = None) -> np.ndarray:
    """a / b, exactly, rounded once (x/0 is a signed infinity, 0/0 NaN)."""
    return _elementwise(_div_exact, "0/0 or inf/inf", [("a", a), ("b", b)], fmt, mode, overflow,
                        subnormals, rng, random_bits)


def fma(a: ArrayLike, b: ArrayLike, c: ArrayLike, fmt: FormatLike, mode: ModeLike = "nearest",
        *, overflow: str | None = None, subnormals: bool = True,
        rng: np.random.Generator | None = None, random_bits: int | None = None) -> np.ndarray:
    """a * b + c, exactly, rounded once (a fused multiply-add).

    Stochastic mode computes each element's random threshold in Python integers (exact, about
    10 microseconds an element); the other modes are vectorised."""
    return _elementwise(_fma_exact, "0 * inf or inf - inf", [("a", a), ("b", b), ("c", c)], fmt,
                        mode, overflow, subnormals, rng, random_bits)


def sqrt(a: ArrayLike, fmt: FormatLike, mode: ModeLike = "nearest", *,
         overflow: str | None = None, subnormals: bool = True,
         rng: np.random.Generator | None = None, random_bits: int | None = None) -> np.ndarray:
    """The square root of a, exactly, rounded once (sqrt(-0) is -0, negative a gives NaN).

    Stochastic mode is exact but runs per element in Python integers, as for :func:`fma`."""
    return _elementwise(_sqrt_exact, "square root of a negative number", [("a", a)], fmt, mode,
                        overflow, subnormals, rng, random_bits)


def neg(x: ArrayLike, fmt: FormatLike, mode: ModeLike = "nearest",
        **round_options: object) -> np.ndarray:
    """-x rounded to fmt (negation is exact, so this is ``round(-x)``)."""
    return _round(-as_real_array(x), _arith_format(fmt), mode, **round_options)


def abs(x: ArrayLike, fmt: FormatLike, mode: ModeLike = "nearest",  # noqa: A001 - numpy's name
        **round_options: object) -> np.ndarray:
    """|x| rounded to fmt."""
    return _round(np.abs(as_real_array(x)), _arith_format(fmt), mode, **round_options)


for _op in (add, sub, mul, div, fma, sqrt):
    _op.__doc__ += _ROUND_DOC


@np.errstate(invalid="ignore")
def _sum_to_odd(x, y, mode):
    """RO(x + y) at 53 bits, which lowprec.round then rounds correctly in every deterministic
    mode, for addends far from float64's overflow (partial sums and exact products of formats
    below 2**500). A quicker route than add() for the accumulation loop.

    It runs in float64 whatever the addends' dtype (pairwise order adds two float32 products or
    addends directly): TwoSum is then exact, subnormals included, and rounding to odd at p = 53
    bits, then once more to q <= 41 significant bits (40 mantissa bits at most), equals rounding
    once, as p >= q + 2 and RO's subnormal quantum, 2**-1074, is far below every supported
    format's (Boldo & Melquiond, "Emulation of FMA and correctly rounded sums: proved algorithms
    using rounding to odd", IEEE TC 57(4), 2008). In float32 p = 24, too few for FP32's q = 24."""
    s, err = _two_sum(x.astype(np.float64, copy=False), y.astype(np.float64, copy=False))
    odd = _odd_neighbour(s, np.where(np.isfinite(s), err, 0.0))  # inf and NaN stay as they are
    if mode is RoundingMode.DOWN:  # an exact zero sum is -0 when rounding down
        odd = np.where(odd == 0, _zero_of_sum(x, y, mode), odd)
    return odd


# --- deprecated: the reductions moved to lowprec.accumulate ---------------------------------------
def _moved(name: str):
    """lowprec.accumulate, after a DeprecationWarning naming the new home of ``name``."""
    warnings.warn(f"lowprec.arith.{name} moved: use lowprec.{name} (lowprec.accumulate.{name}); "
                  f"arith.{name} will be removed in the next release", DeprecationWarning,
                  stacklevel=3)
    from . import accumulate  # accumulate imports this module's exact operations
    return accumulate


def sum(x: ArrayLike, fmt: FormatLike, mode: ModeLike = "nearest", *,  # noqa: A001 - numpy's name
        axis: int | None = None, accumulate: AccumulatorLike | None = None,
        order: str = "sequential", block: int | None = None,
        rng: np.random.Generator | None = None, random_bits: int | None = None) -> np.ndarray:
    """Deprecated alias of :func:`lowprec.sum`."""
    return _moved("sum").sum(x, fmt, mode, axis=axis, accumulate=accumulate, order=order,
                             block=block, rng=rng, random_bits=random_bits)


def dot(a: Operand, b: Operand, *, inputs: FormatPair | None = None,
        accumulate: AccumulatorLike = "fp32", output: FormatLike | None = None,
        mode: ModeLike = "nearest", order: str = "sequential", block: int | None = None,
        rng: np.random.Generator | None = None, random_bits: int | None = None) -> np.ndarray:
    """Deprecated alias of :func:`lowprec.dot`."""
    return _moved("dot").dot(a, b, inputs=inputs, accumulate=accumulate, output=output, mode=mode,
                             order=order, block=block, rng=rng, random_bits=random_bits)


def matmul(a: Operand, b: Operand, *, inputs: FormatPair | None = None,
           accumulate: AccumulatorLike = "fp32", output: FormatLike | None = None,
           mode: ModeLike = "nearest", order: str = "sequential", block: int | None = None,
           rng: np.random.Generator | None = None, random_bits: int | None = None
           ) -> np.ndarray:
    """Deprecated alias of :func:`lowprec.matmul`."""
    return _moved("matmul").matmul(a, b, inputs=inputs, accumulate=accumulate, output=output,
                                   mode=mode, order=order, block=block, rng=rng,
                                   random_bits=random_bits)
