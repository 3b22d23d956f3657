"""The AMD CDNA matrix-core model (:mod:`lowprec.cdna`) for one output element, one term at a
time, in exact rational arithmetic: to read next to MMA-Sim's source (arXiv:2511.10909;
microsoft/MMA-Sim, mmasim/simulator/amd.py class ``mfma`` and mmasim/simulator/arithmetic.py).

Each function below is named after the MMA-Sim function it restates. Values are
``fractions.Fraction``; the only roundings are the ones the source specifies: ``math.trunc`` and
``math.floor`` on exact rationals, and rounding to FP32 through
:func:`lowprec.reference.round_exact`. This module shares no code with :mod:`lowprec.cdna` (it
reads only the model's fields), so the tests can compare the two. Slow: for tests and reading.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING

from .formats import FP32, TF32, FloatFormat
from .reference import floor_log2, round_exact

if TYPE_CHECKING:  # the model's type only
    from .cdna import MFMAModel

__all__ = ["mfma_scalar"]

TWO = Fraction(2)


def mfma_scalar(a: Sequence[float], b: Sequence[float], c: float, model: MFMAModel) -> float:
    """``sum_k a[k] * b[k] + c`` for one output element as ``mfma.__call__`` runs it: operands
    prepared (XF32 truncation, CDNA2 flush), then group after group of ``model.group`` products
    (K padded with zero products), each group's FP32 result the next group's c."""
    if len(a) != len(b):
        raise ValueError(f"a and b differ in length: {len(a)} and {len(b)}")
    a, b, c = [float(x) for x in a], [float(y) for y in b], float(c)
    if model.truncate_inputs:  # truncate_to_tf32: the FP32 value truncated to TF32
        a, b = [_to_tf32(x) for x in a], [_to_tf32(y) for y in b]
    if model.flush_subnormals:  # flush_denormal(A), (B), (C): to +0
        a = [_flush_to_plus_zero(x, model.inputs) for x in a]
        b = [_flush_to_plus_zero(y, model.b_format) for y in b]
        c = _flush_to_plus_zero(c, FP32)
    pad = -len(a) % model.group
    a, b = a + [0.0] * pad, b + [0.0] * pad
    acc = c
    for k0 in range(0, len(a), model.group):
        ga, gb = a[k0:k0 + model.group], b[k0:k0 + model.group]
        if model.fused:
            acc = amd_fused_dot_rd_add(ga, gb, acc, model)
        else:
            acc = _add_fp32(acc, pairwise_dot(ga, gb, model.flush_subnormals))  # sum + group_sum
            if model.flush_subnormals:
                acc = _flush_keep_sign(acc)
    return acc


# --- operands -----------------------------------------------------------------------------------
def _to_tf32(x: float) -> float:
    if math.isnan(x) or math.isinf(x):
        return x
    return round_exact(x, TF32, "toward_zero", negative=math.copysign(1, x) < 0)


def _flush_to_plus_zero(x: float, fmt: FloatFormat) -> float:
    return 0.0 if abs(x) < fmt.tiny else x


def _flush_keep_sign(x: float) -> float:
    return x * 0.0 if abs(x) < FP32.tiny else x


def exponent(x: float, fmt: FloatFormat) -> int:
    """extract_significand_exponent's exponent: floor(log2|x|) clamped to emin; a zero: -126."""
    if x == 0:
        return -126
    return max(floor_log2(abs(Fraction(x))), fmt.emin)


def _special(a: list[float], b: list[float], c: float) -> float | None:
    """NaN or the infinity that a sum of the products and c makes, or None if it is finite."""
    terms = [c]
    for x, y in zip(a, b):
        if math.isnan(x) or math.isnan(y):
            return math.nan
        if math.isinf(x) or math.isinf(y):
            if x == 0 or y == 0:
                return math.nan  # inf * 0
            terms.append(math.copysign(math.inf, x) * math.copysign(1, y))
    if math.isnan(c):
        return math.nan
    infinities = {t for t in terms if math.isinf(t)}
    if len(infinities) == 2:
        return math.nan  # inf - inf
    return infinities.pop() if infinities else None


# --- CDNA3: amd_fused_dot_rd_add ----------------------------------------------------------------
def fused_sum(significands: list[Fraction], exponents: list[int]) -> tuple[Fraction, int]:
    """Align to the largest exponent, truncate each toward zero to 24 fraction bits, add."""
    emax = max(exponents)
    total = Fraction(0)
    for s, e in zip(significands, exponents):
        total += Fraction(math.trunc(s * TWO ** (24 + e - emax)), 2**24)
    return total, emax


def _floor_bits(s: Fraction, shift: int, bits: int) -> Fraction:
    """floor(s * 2**(bits + shift)) * 2**-bits: s floored to ``bits`` fraction bits after being
    shifted by 2**shift (toward minus infinity)."""
    return Fraction(math.floor(s * TWO ** (bits + shift)), 2**bits)


def amd_fused_dot_rd_add(a: list[float], b: list[float], c: float, model: MFMAModel) -> float:
    """One CDNA3 group, then ``torch.tensor(result, dtype=float32)``: round to nearest into FP32."""
    special = _special(a, b, c)
    if special is not None:
        return special
    significands, exponents = [], []
    p_inf = n_inf = False
    for x, y in zip(a, b):
        product = Fraction(x) * Fraction(y)
        if product >= TWO**128:
            p_inf = True
        elif product <= -(TWO**128):
            n_inf = True
        else:
            ea, eb = exponent(x, model.inputs), exponent(y, model.b_format)
            # significand * 2**exponent is the product: sa * sb with sa = x / 2**ea
            significands.append(Fraction(x) / TWO**ea * (Fraction(y) / TWO**eb))
            exponents.append(ea + eb)
    if p_inf or n_inf:
        return math.nan if p_inf and n_inf else (math.inf if p_inf else -math.inf)
    ec = exponent(c, FP32)
    sc = Fraction(c) / TWO**ec
    if model.even_odd:
        s0, e0 = fused_sum(significands[0::2], exponents[0::2])
        s1, e1 = fused_sum(significands[1::2], exponents[1::2])
        e = max(e0, e1)
        s = _floor_bits(s0, e0 - e, 24) + _floor_bits(s1, e1 - e, 24)
        max_e = max(e, ec)
        s = _floor_bits(s, e - max_e, 31)
        sc = _floor_bits(sc, ec - max_e, 24) if ec >= max_e - 25 else Fraction(0)
    else:
        s, e = fused_sum(significands, exponents)
        max_e = max(e, ec)
        s = _floor_bits(s, e - max_e, 31)
        sc = _floor_bits(sc, ec - max_e, 24)
    value = (s + sc) * TWO**max_e
    return 0.0 if value == 0 else round_exact(value, FP32, "nearest")


# --- CDNA1/2: pairwise_dot ----------------------------------------------------------------------
def _fma_product_fp32(x: float, y: float) -> float:
    """fmaf(x, y, 0.0): the exact product rounded to nearest FP32; -0 + +0 is +0."""
    special = _special([x], [y], 0.0)
    if special is not None:
        return special
    product = Fraction(x) * Fraction(y)
    return 0.0 if product == 0 else round_exact(product, FP32, "nearest")


def _add_fp32(x: float, y: float) -> float:
    """fmaf(x, 1.0, y): x + y rounded to nearest FP32 (IEEE 754 clause 6.3 for the zero's sign)."""
    if math.isnan(x) or math.isnan(y) or math.isinf(x) or math.isinf(y):
        return x + y  # Python floats: inf - inf is NaN, inf + finite is inf
    exact = Fraction(x) + Fraction(y)
    if exact == 0:
        both_negative = math.copysign(1, x) < 0 and math.copysign(1, y) < 0
        return -0.0 if both_negative else 0.0
    return round_exact(exact, FP32, "nearest")


def pairwise_dot(a: list[float], b: list[float], flush: bool) -> float:
    """Halves summed recursively (left: the first n // 2), every node an FP32 addition; with
    flush (CDNA2) every node below 2**-126 becomes a zero of its sign."""
    if len(a) == 1:
        s = _fma_product_fp32(a[0], b[0])
    else:
        m = len(a) // 2
        s = _add_fp32(pairwise_dot(a[:m], b[:m], flush), pairwise_dot(a[m:], b[m:], flush))
    return _flush_keep_sign(s) if flush else s
