"""Slow, exact, one-value-at-a-time references, in rational arithmetic, to read next to the papers.

* :func:`round_exact` rounds one exact value to a format by every mode of :func:`lowprec.round`.
* :func:`block_fma_scalar` is one tensor-core block FMA for one output element (the model of
  :mod:`lowprec.tensorcore`), one term at a time.

Both work on ``fractions.Fraction`` values, so no step rounds except the one being specified.
This module shares no code with :mod:`lowprec.rounding` or its fast paths (it imports only
:mod:`lowprec.formats`): it is the independent reference the tests compare them with, and it
must stay that way. It is written for reading, not speed (a few microseconds per value).

Rounding one value (IEEE 754-2019, clause 4.3): find the two neighbours of ``|x|`` on the
format's grid, ``k * q`` and ``(k + 1) * q`` with ``q = 2**(max(floor(log2|x|), emin) - m)``
the quantum (the weight of the last mantissa bit, constant over a binade and over the
subnormals), and pick one by the mode's rule from ``f = |x|/q - k``, the fraction of a quantum
above the lower neighbour:

=================  ======================================================  ================
mode               moves away from zero (to ``(k + 1) * q``) when          source
=================  ======================================================  ================
``nearest``        f > 1/2, or f = 1/2 and k's last bit is 1 (ties even)   4.3.1 roundTiesToEven
``nearest_away``   f >= 1/2                                                4.3.1 roundTiesToAway
``toward_zero``    never                                                   4.3.2 roundTowardZero
``up``             f > 0 and x positive                                    4.3.2 roundTowardPositive
``down``           f > 0 and x negative                                    4.3.2 roundTowardNegative
``odd``            f > 0 and k's last bit is 0                             round-to-odd (Boldo &
                                                                           Melquiond 2008)
``stochastic``     u < f, u uniform in [0, 1): P(away) = f exactly         Connolly, Higham &
                                                                           Mary 2021, SR mode 1
=================  ======================================================  ================

Stochastic rounding with ``k`` random bits (hardware with a k-bit random source) adds k random
bits to f's first k bits and rounds away on the carry: ``r + floor(f * 2**k) >= 2**k``.

Overflow (a result above the format's max) follows a policy: ``"inf"`` (IEEE 754 clause 7.4),
``"nan"`` (OCP OFP8 v1.0 sec. 5.2, E4M3 without infinities: ml_dtypes' float8_e4m3fn) or
``"saturate"`` (+-max, OCP OFP8 sec. 5.2's saturating conversion); the directed modes that
point toward zero give +-max whatever the policy (IEEE 754 clause 7.4).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING

from .formats import FloatFormat, as_format

if TYPE_CHECKING:  # the model's type only: tensorcore imports this module
    from .tensorcore import TensorCoreModel

__all__ = ["round_exact", "floor_log2", "block_fma_scalar", "MODES", "TOWARD_ZERO_MODES"]

MODES = ("nearest", "nearest_away", "toward_zero", "up", "down", "odd", "stochastic")
TOWARD_ZERO_MODES = ("toward_zero", "odd")  # never move a magnitude up, so never overflow to inf

# The exponent a zero operand counts with in a block FMA: MMA-Sim's (Xie et al.,
# arXiv:2511.10909), bit-validated on hardware.
ZERO_EXPONENT = -126


def floor_log2(a: Fraction) -> int:
    """The exact ``floor(log2(a))`` of a positive rational."""
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    elif Fraction(2) ** (e + 1) <= a:
        e += 1
    return e


# --- rounding one value -----------------------------------------------------------------------
def round_exact(value: Fraction | int | float, fmt: FloatFormat | str, mode: str = "nearest", *,
                negative: bool | None = None, overflow: str | None = None,
                subnormals: bool = True, uniform: Fraction | None = None,
                random_int: int | None = None, random_bits: int | None = None) -> float:
    """Round one exact value to ``fmt``; return a Python float (exactly the format's value).

    value: a Fraction, int or float (floats are taken exactly; inf and NaN allowed).
    mode: one of MODES (a ``lowprec.RoundingMode`` is its string).
    negative: the sign for a zero value (a Fraction has no -0); defaults to the sign of value.
    uniform: for mode="stochastic" with full bits, a Fraction u in [0, 1); away iff u < f.
    random_int, random_bits: for mode="stochastic" with k random bits: away iff
        random_int + floor(f * 2**k) >= 2**k.
    """
    fmt = as_format(fmt)
    if mode not in MODES:
        raise ValueError(f"unknown rounding mode {mode!r}; valid modes: {', '.join(MODES)}")
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
            infinite = math.inf if policy == "inf" else math.nan
            return -infinite if negative else infinite
    if not subnormals and 0 < mag < Fraction(fmt.tiny):
        mag = Fraction(0)
    result = float(mag)  # exact: every format value is a float64
    if negative and not (fmt.specials == "fnuz" and mag == 0):
        result = -result
    return result


def _code_is_odd(k: int, e: int, fmt: FloatFormat) -> bool:
    """Is the last bit of the code of k * 2**(e - m) set? (ties-to-even and round-to-odd look at it)

    With mantissa bits it is k's last bit; without (E8M0), k is 1 and the last bit is the
    exponent field's, e + bias (IEEE P3109 and gfloat read "even" this way).
    """
    if fmt.mantissa_bits == 0 and k == 1:
        return (e + fmt.bias) % 2 == 1
    return k % 2 == 1


def _away(mode, f, odd, negative, uniform, random_int, random_bits) -> bool:
    """The one decision point: does the magnitude move up by one quantum? (table above)"""
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
    if random_bits is None:  # stochastic
        return uniform < f
    top = (f * 2**random_bits).numerator // (f * 2**random_bits).denominator
    return random_int + top >= 2**random_bits


def _infinite(fmt: FloatFormat, negative: bool, overflow: str | None) -> float:
    if fmt.has_inf:
        return -math.inf if negative else math.inf
    if not fmt.signed and negative:
        return math.nan
    policy = overflow or fmt.default_overflow
    if policy == "saturate":
        return -fmt.max if negative else fmt.max
    return math.nan


def _raise(fmt: FloatFormat):
    raise ValueError(f"{fmt.name} has no NaN")


# --- one block FMA ----------------------------------------------------------------------------
def block_fma_scalar(a: Sequence[float], b: Sequence[float], c: float,
                     model: TensorCoreModel, *, scale_a: Sequence[float] | None = None,
                     scale_b: Sequence[float] | None = None) -> float:
    """One block FMA for one output element, one term at a time in exact arithmetic.

    a, b: sequences of n numbers in the model's input formats (TF32 models truncate first);
    c: one accumulator value. Returns a float. Output rounding "toward_zero" or "nearest".
    The steps are those of the lowprec.tensorcore docstring (Fasi, Higham, Mikaitis & Pranesh,
    PeerJ CS 2021; MMA-Sim, Xie et al., arXiv:2511.10909).

    Block-scaled models (``model.scale_block`` set) take scale_a, scale_b: the decoded scales,
    one per scale_block elements (scale i covers elements i*scale_block onwards). kind::mxf8f6f4
    puts both scales into every product and its exponent; kind::mxf4nvf4 (``model.sub_block``)
    makes each run of sub_block products, summed exactly and times its two scales, one term
    whose exponent is the scales' (MMA-Sim, mmasim/simulator/arithmetic.py, fused_dot_add and
    nv_fused_dot_add_with_block_scale).
    """
    fa, fb = model.inputs, model.b_format
    a = [float(x) for x in a]
    b = [float(x) for x in b]
    n = len(a)
    if model.truncate_inputs:
        a = [round_exact(x, fa, "toward_zero") for x in a]
        b = [round_exact(x, fb, "toward_zero") for x in b]
    if model.scale_block is None:
        if scale_a is not None or scale_b is not None:
            raise ValueError(f"{model.name} has no block scales")
        sa = sb = [1.0] * n
        esa = esb = [0] * n
    else:
        if scale_a is None or scale_b is None:
            raise ValueError(f"{model.name} needs scale_a and scale_b")
        sa = [float(scale_a[i // model.scale_block]) for i in range(n)]
        sb = [float(scale_b[i // model.scale_block]) for i in range(n)]
        esa = [_field_exponent(s, model.scale_format) if s == s else 0 for s in sa]
        esb = [_field_exponent(s, model.scale_format) if s == s else 0 for s in sb]
    if model.sub_block is not None:
        return _sub_block_fma(a, b, c, sa, sb, esa, esb, model)
    # 1. NaN and infinity first (a NaN scale makes its products NaN).
    infinite_signs = set()
    for x, y, u, v in zip(a, b, sa, sb):
        if x != x or y != y or u != u or v != v:
            return math.nan
        if (x == 0 and abs(y) == math.inf) or (y == 0 and abs(x) == math.inf):
            return math.nan
        if abs(x) == math.inf or abs(y) == math.inf:
            infinite_signs.add((x > 0) == (y > 0))
    if c != c:
        return math.nan
    if abs(c) == math.inf:
        infinite_signs.add(c > 0)
    if len(infinite_signs) == 2:
        return math.nan
    if infinite_signs:
        return math.inf if infinite_signs.pop() else -math.inf
    # 2. Exact terms and their exponents from the (clamped) exponent fields.
    terms = [(Fraction(x) * Fraction(y) * Fraction(u) * Fraction(v),
              _field_exponent(x, fa) + _field_exponent(y, fb) + eu + ev)
             for x, y, u, v, eu, ev in zip(a, b, sa, sb, esa, esb)]
    terms.append((Fraction(c), _field_exponent(c, model.accumulator)))
    return _align_truncate_round(terms, model)


def _sub_block_fma(a, b, c, sa, sb, esa, esb, model) -> float:
    """kind::mxf4nvf4: terms are exact sub-block sums times their scales (block_fma_scalar)."""
    if c != c or any(s != s for s in sa + sb):
        return math.nan
    if abs(c) == math.inf:  # E2M1 elements and finite scales: every other term is finite
        return c
    terms = [(Fraction(c), _field_exponent(c, model.accumulator))]
    for k0 in range(0, len(a), model.sub_block):
        run = range(k0, min(k0 + model.sub_block, len(a)))
        exact = sum((Fraction(a[i]) * Fraction(b[i]) for i in run), Fraction(0))
        terms.append((exact * Fraction(sa[k0]) * Fraction(sb[k0]), esa[k0] + esb[k0]))
    return _align_truncate_round(terms, model)


def _align_truncate_round(terms, model) -> float:
    """Steps 3 and 4: align to the largest exponent, truncate each term to F fraction bits,
    add exactly, normalise once and round into the output format."""
    emax = max(e for _, e in terms)
    unit = Fraction(2) ** (emax - model.fraction_bits)
    units = 0
    for value, _ in terms:
        units += int(value / unit)  # int() truncates toward zero
    return _round_output(units * unit, model.output, model.output_rounding)


def _field_exponent(x: float, fmt: FloatFormat) -> int:
    return ZERO_EXPONENT if x == 0 else max(floor_log2(abs(Fraction(x))), fmt.emin)


def _round_output(value: Fraction, fmt: FloatFormat, rounding: str) -> float:
    """Step 4: one rounding; a sum at or beyond 2**(emax + 1) is infinity even when rounding
    toward zero, and a result that rounds to zero is +0 (MMA-Sim)."""
    if rounding not in ("toward_zero", "nearest"):
        raise ValueError(f"block_fma_scalar rounds 'toward_zero' or 'nearest', not {rounding!r}")
    if abs(value) >= Fraction(2) ** (fmt.emax + 1):
        return math.copysign(math.inf, value)
    result = round_exact(value, fmt, rounding, overflow="inf")
    return 0.0 if result == 0 else result
