"""A slow, exact, one-value-at-a-time reference for rounding, in rational arithmetic.

It shares no code with lowprec.rounding: it works on fractions.Fraction values, finds the two
neighbours of the value among the format's numbers and picks one by the mode's rule, the way
the IEEE 754 text reads. Tests compare the vectorised engine with it; other test modules use it
to round exact results of arithmetic (Fraction sums, products, square roots bracketed exactly).
"""
from __future__ import annotations

import math
from fractions import Fraction

TOWARD_ZERO_MODES = ("toward_zero", "odd")


def floor_log2(a: Fraction) -> int:
    """The exact floor(log2(a)) of a positive rational."""
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    elif Fraction(2) ** (e + 1) <= a:
        e += 1
    return e


def round_exact(value, fmt, mode="nearest", *, negative=None, overflow=None, subnormals=True,
                uniform=None, random_int=None, random_bits=None):
    """Round one exact value to ``fmt``; return a Python float (exactly the format's value).

    value: a Fraction, int or float (floats are taken exactly; inf and NaN allowed).
    negative: the sign for a zero value (a Fraction has no -0); defaults to the sign of value.
    uniform: for mode="stochastic" with full bits, a Fraction u in [0, 1); away iff u < f.
    random_int, random_bits: for mode="stochastic" with k random bits: away iff
        random_int + floor(f * 2**k) >= 2**k.
    """
    if isinstance(value, float):
        if math.isnan(value):
            return math.nan if fmt.has_nan else _raise(fmt)
        if negative is None:
            negative = math.copysign(1.0, value) < 0
        if math.isinf(value):
            return _infinite(fmt, negative, overflow)
        value = Fraction(value)
    q = Fraction(value)
    if negative is None:
        negative = q < 0
    a = abs(q)
    if not fmt.signed:  # no negative numbers (NaN); zero only where the format has one, unsigned
        if (negative and a != 0) or (a == 0 and not fmt.has_zero):
            return math.nan
        negative = False
    policy = overflow or fmt.default_overflow
    m = fmt.mantissa_bits
    if a == 0:
        mag = Fraction(0)
    else:
        e = max(floor_log2(a), fmt.emin)
        quantum = Fraction(2) ** (e - m)
        t = a / quantum
        k = t.numerator // t.denominator  # floor
        f = t - k  # fraction of a quantum, in [0, 1)
        away = _away(mode, f, _code_is_odd(k, e, fmt), negative, uniform, random_int, random_bits)
        mag = (k + int(away)) * quantum
    if not fmt.has_zero and mag == 0:
        mag = Fraction(fmt.tiny)
    if mag > Fraction(fmt.max):
        toward_zero = (mode in TOWARD_ZERO_MODES or (mode == "up" and negative)
                       or (mode == "down" and not negative))
        if toward_zero or policy == "saturate":
            mag = Fraction(fmt.max)
        else:
            return math.copysign(math.inf if policy == "inf" else math.nan, -1.0 if negative else 1.0)
    if not subnormals and 0 < mag < Fraction(fmt.tiny):
        mag = Fraction(0)
    result = float(mag)  # exact: every format value is a float64
    if negative and not (fmt.specials == "fnuz" and mag == 0):
        result = -result
    return result


def _code_is_odd(k, e, fmt):
    """Is the last bit of the code of k * 2**(e - m) set? (ties-to-even and round-to-odd look at it)

    With mantissa bits it is k's last bit; without (E8M0), k is 1 and the last bit is the
    exponent field's, e + bias (IEEE P3109 and gfloat read "even" this way).
    """
    if fmt.mantissa_bits == 0 and k == 1:
        return (e + fmt.bias) % 2 == 1
    return k % 2 == 1


def _away(mode, f, odd, negative, uniform, random_int, random_bits):
    if f == 0:
        return False
    if mode == "nearest":
        return f > Fraction(1, 2) or (f == Fraction(1, 2) and odd)
    if mode == "nearest_away":
        return f >= Fraction(1, 2)
    if mode == "toward_zero":
        return False
    if mode == "up":
        return not negative
    if mode == "down":
        return negative
    if mode == "odd":
        return not odd
    if mode == "stochastic":
        if random_bits is None:
            return uniform < f
        top = (f * 2**random_bits).numerator // (f * 2**random_bits).denominator
        return random_int + top >= 2**random_bits
    raise ValueError(mode)


def _infinite(fmt, negative, overflow):
    if fmt.has_inf:
        return -math.inf if negative else math.inf
    if not fmt.signed and negative:
        return math.nan
    policy = overflow or fmt.default_overflow
    if policy == "saturate":
        return -fmt.max if negative else fmt.max
    return math.nan


def _raise(fmt):
    raise ValueError(f"{fmt.name} has no NaN")
