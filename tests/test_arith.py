"""lowprec.arith against exact rational arithmetic, NumPy/ml_dtypes loops and published numbers."""
from __future__ import annotations

import functools
import itertools
import math
import re
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

import lowprec
from lowprec import arith, cdna, tensorcore
from lowprec.formats import FORMATS, FloatFormat

from lowprec.reference import round_exact

DETERMINISTIC = ["nearest", "nearest_away", "toward_zero", "up", "down", "odd"]
ALL64 = 0xFFFFFFFFFFFFFFFF
OPS = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "div": lambda x, y: x / y,
    "fma": lambda x, y, z: x * y + z,
}


def same(x, y) -> bool:
    """Equal values with equal signs of zero, or both NaN."""
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y and math.copysign(1.0, x) == math.copysign(1.0, y)


def sqrt_stand_in(a: float):
    """A rational on the same side of every rounding decision point as sqrt(a): decision points
    are dyadic with at most ~1200 fraction bits, so sqrt(a) bracketed at 2**-1300 suffices."""
    p = 1300
    x = Fraction(a) * 4**p
    whole = x.numerator // x.denominator
    root = math.isqrt(whole)
    if root * root == x:
        return Fraction(root, 2**p)
    return Fraction(2 * root + 1, 2 ** (p + 1))


def exact_value(op, args):
    """The exact result: a Fraction, or a float for infinities, NaN and exact zeros (signed as
    IEEE 754 says for round to nearest; the caller fixes round-down's zeros)."""
    x = [np.float64(v) for v in args]
    with np.errstate(all="ignore"):
        if op == "fma" and math.isfinite(args[0]) and math.isfinite(args[1]):
            x[0], x[1] = np.float64(0), np.float64(0)  # a finite product never overflows exactly
        as_float = {"sqrt": lambda v: np.sqrt(v)}.get(op, OPS.get(op))(*x)
    if not all(math.isfinite(v) for v in args) or (op == "div" and args[1] == 0) or (
            op == "sqrt" and args[0] <= 0):
        return float(as_float)
    if op == "sqrt":
        return sqrt_stand_in(args[0])
    value = OPS[op](*[Fraction(v) for v in args])
    return value if value != 0 else float(as_float) if op in ("mul", "div") else None


def expected(op, args, fmt, mode, **kw):
    value = exact_value(op, args)
    if value is None:  # an exact zero sum: +0 (-0 in round-down), -0 when both terms are -0
        if op == "fma":
            terms = [args[0] * args[1], args[2]]
        else:
            terms = [args[0], -args[1] if op == "sub" else args[1]]
        both_negative = all(t == 0 and math.copysign(1, t) < 0 for t in terms)
        both_positive = all(t == 0 and math.copysign(1, t) > 0 for t in terms)
        zero = 0.0 if (both_positive if mode == "down" else not both_negative) else -0.0
        return round_exact(zero, fmt, mode, **kw)
    return round_exact(value, fmt, mode, **kw)


def operands(rng, n, fmt, arity):
    """Adversarial operands: format values, wide float64s, specials, exponent gaps,
    cancellation, and results near the format's subnormals and overflow."""
    def one(size):
        kind = rng.integers(0, 6, size)
        x = rng.standard_normal(size) * np.exp2(rng.integers(-40, 40, size).astype(float))
        x = np.where(kind == 1, lowprec.round(x, fmt, "toward_zero"), x)
        wide = np.ldexp(rng.standard_normal(size), rng.integers(-1074, 1020, size))
        x = np.where(kind == 2, wide, x)
        x = np.where(kind == 3, fmt.smallest_subnormal * rng.integers(-9, 9, size), x)
        x = np.where(kind == 4, fmt.max * rng.uniform(-1.5, 1.5, size), x)
        specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0])
        return np.where(kind == 5, rng.choice(specials, size), x)

    first = one(n)
    rest = [one(n) for _ in range(arity - 1)]
    if arity >= 2:  # b close to -a (cancellation) or tiny next to a (huge exponent gap)
        k = rng.integers(0, 4, n)
        gap = np.ldexp(rng.standard_normal(n), rng.integers(-200, -30, n))
        rest[0] = np.where(k == 0, -first * (1 + gap), rest[0])
        rest[0] = np.where(k == 1, first * gap, rest[0])
    if arity == 3:
        with np.errstate(all="ignore"):
            near = -first * rest[0] * (1 + np.ldexp(1.0, -rng.integers(20, 110, n)))
        rest[1] = np.where(rng.integers(0, 2, n) == 0, near, rest[1])
    args = [first] + rest
    if not fmt.has_nan:  # the MX element formats cannot hold NaN: stay away from it
        with np.errstate(all="ignore"):
            ok = np.all([np.isfinite(a) for a in args], axis=0)
            ok &= args[-1] != 0 if arity == 2 else True
        args = [np.where(ok, a, 1.0) for a in args]
    return args


def check_against_exact(op, args, fmt, mode, result, words=None, random_bits=None):
    for i in range(result.size):
        xs = [float(a[i]) for a in args]
        kw = {}
        if words is not None:
            w = int(words[i])
            kw = ({"uniform": Fraction(w, 2**64)} if random_bits is None
                  else {"random_int": w >> (64 - random_bits), "random_bits": random_bits})
        want = expected(op, xs, fmt, mode, **kw)
        assert same(float(result[i]), want), (op, fmt.name, mode, xs, float(result[i]), want)


def check_every_mode(op, fmt, n, seed):
    rng = np.random.default_rng([seed, len(op), fmt.bits, fmt.mantissa_bits])
    arity = {"fma": 3, "sqrt": 1}.get(op, 2)
    args = operands(rng, n, fmt, arity)
    if op == "sqrt" and not fmt.has_nan:
        args = [np.abs(args[0])]
    for mode in DETERMINISTIC:
        result = getattr(arith, op)(*args, fmt, mode)
        check_against_exact(op, args, fmt, mode, result)
    for random_bits in (None, 3, 64):
        result = getattr(arith, op)(*args, fmt, "stochastic", rng=np.random.default_rng(11),
                                    random_bits=random_bits)
        # arith draws one 64-bit word per element, in order (further words only on exact ties)
        words = np.random.default_rng(11).integers(0, ALL64, size=result.size, dtype=np.uint64,
                                                   endpoint=True)
        check_against_exact(op, args, fmt, "stochastic", result, words, random_bits)


@pytest.mark.parametrize("fmt", list(FORMATS.values()), ids=lambda f: f.name)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "fma", "sqrt"])
def test_correctly_rounded_in_every_mode(op, fmt):
    check_every_mode(op, fmt, 60, seed=7)


@pytest.mark.exhaustive
@pytest.mark.parametrize("fmt", list(FORMATS.values()), ids=lambda f: f.name)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "fma", "sqrt"])
def test_correctly_rounded_in_every_mode_many(op, fmt):
    check_every_mode(op, fmt, 3000, seed=8)


@pytest.mark.parametrize("mode", DETERMINISTIC)
def test_fma_near_exact_cancellation(mode):
    # a*b has 106 bits; c cancels all but its tail, so the result lives far below a*b.
    rng = np.random.default_rng(5)
    a = rng.standard_normal(400) * 3
    b = rng.standard_normal(400)
    product = a * b
    c = np.where(rng.integers(0, 2, 400) == 0, -product, -lowprec.round(product, "fp32"))
    for fmt in (lowprec.FP32, lowprec.BF16, FloatFormat("m40", 9, 40)):
        check_against_exact("fma", [a, b, c], fmt, mode, arith.fma(a, b, c, fmt, mode))


def test_double_rounding_through_float64_is_avoided():
    # 1 + 2**-24 + 2**-60 is above the FP32 midpoint between 1 and 1 + 2**-23; float64 loses the
    # 2**-60 and lands exactly on the midpoint, which ties to even, 1.0.
    assert arith.add(1 + 2.0**-24, 2.0**-60, "fp32") == 1 + 2.0**-23
    assert np.float32(np.float64(1 + 2.0**-24) + 2.0**-60) == 1.0
    assert arith.add(1.0, 2.0**-80, "fp32", "up") == 1 + 2.0**-23
    assert arith.sub(1.0, 2.0**-80, "fp32", "toward_zero") == 1 - 2.0**-24
    # (1 + 2**-30)**2 - 1 = 2**-29 + 2**-60 exactly; rounding the product first loses it all
    assert arith.fma(1 + 2.0**-30, 1 + 2.0**-30, -1.0, "fp32") == 2.0**-29
    assert arith.fma(1 + 2.0**-30, 1 + 2.0**-30, -1.0, "fp32", "up") == 2.0**-29 + 2.0**-52
    assert arith.sub(arith.mul(1 + 2.0**-30, 1 + 2.0**-30, "fp32"), 1.0, "fp32") == 0.0
    assert arith.fma(3.0, 1 / 3, -1.0, "bf16") == float(Fraction(3) * Fraction(1 / 3) - 1)


def test_signed_zeros():
    for mode in DETERMINISTIC[:-2] + ["odd"]:
        want = -0.0 if mode == "down" else 0.0
        assert same(arith.add(1.5, -1.5, "fp16", mode), want)
        assert same(arith.sub(2.0, 2.0, "bf16", mode), want)
        assert same(arith.fma(2.0, 3.0, -6.0, "fp32", mode), want)
        assert same(arith.add(0.0, -0.0, "fp16", mode), want)
        assert same(arith.add(-0.0, -0.0, "fp16", mode), -0.0)
    assert same(arith.add(5.0, -5.0, "fp16", "stochastic", rng=np.random.default_rng(0)), 0.0)
    assert same(arith.mul(-0.0, 3.0, "fp16"), -0.0)
    assert same(arith.fma(-0.0, 3.0, -0.0, "fp16"), -0.0)
    assert same(arith.fma(-0.0, 3.0, 0.0, "fp16"), 0.0)
    assert same(arith.sqrt(-0.0, "fp16"), -0.0)
    assert same(arith.mul(-1e-30, 1e-30, "fp16"), -0.0)  # a nonzero result keeps its sign
    assert same(arith.add(0.0, -0.0, "e4m3fnuz", "down"), 0.0)  # fnuz formats have no -0


def test_specials_and_overflow():
    assert math.isnan(arith.add(np.inf, -np.inf, "fp16"))
    assert arith.add(np.inf, 1.0, "fp16") == np.inf
    assert math.isnan(arith.mul(np.inf, 0.0, "bf16"))
    assert arith.div(-1.0, 0.0, "bf16") == -np.inf
    assert math.isnan(arith.div(0.0, 0.0, "bf16"))
    assert math.isnan(arith.sqrt(-1.0, "fp32"))
    assert arith.fma(1e300, 1e300, -np.inf, "fp32") == -np.inf  # a*b is finite, exactly
    assert math.isnan(arith.fma(np.inf, 1.0, -np.inf, "fp32"))
    assert arith.add(60000.0, 10000.0, "fp16") == np.inf
    assert arith.add(60000.0, 10000.0, "fp16", "toward_zero") == 65504.0
    assert arith.add(1e308, 1e308, "fp32", "down") == lowprec.FP32.max  # float64 overflowed
    assert math.isnan(arith.add(300.0, 300.0, "e4m3"))  # E4M3 overflows to NaN ...
    assert arith.add(300.0, 300.0, "e4m3", overflow="saturate") == 448.0  # ... or saturates
    assert arith.mul(1e-300, 1e-300, "fp16", "up") == 2.0**-24  # far below, still rounds up


def test_stochastic_is_unbiased():
    rng = np.random.default_rng(3)
    x = np.full(200_000, 1.0)
    y = np.full(200_000, 3 * 2.0**-10)  # exactly 3/8 of a BF16 ulp above 1
    got = arith.add(x, y, "bf16", "stochastic", rng=rng)
    assert set(np.unique(got)) == {1.0, 1 + 2.0**-7}
    assert abs(np.mean(got == 1 + 2.0**-7) - 3 / 8) < 5 * math.sqrt(3 / 8 * 5 / 8 / x.size)


class _Words:
    """A stand-in for np.random.Generator that hands out chosen 64-bit words."""

    def __init__(self, words):
        self.words = list(words)

    def integers(self, low, high, size, dtype, endpoint):
        out, self.words = self.words[:size], self.words[size:]
        return np.array(out, dtype=np.uint64)


def test_ties_of_the_first_word_compare_further_bits():
    # r = 1 + 2**-8 + 2**-100 in BF16: f = 1/2 + 2**-93, so f's first 64 bits are 2**63 and its
    # second word is 2**(128 - 93) = 2**35.
    r = 1 + Fraction(1, 2**8) + Fraction(1, 2**100)
    exact = lambda i, shift: arith._floor_scaled(r, shift)  # noqa: E731
    qe = np.array([-7])
    assert arith._break_ties(np.array([0]), qe, exact, _Words([2**35 - 1])).tolist() == [True]
    assert arith._break_ties(np.array([0]), qe, exact, _Words([2**35 + 1])).tolist() == [False]
    # equal again: f has no bits left after its second word, so U >= f and it stays
    assert arith._break_ties(np.array([0]), qe, exact, _Words([2**35])).tolist() == [False]


def test_cs336_sum_of_a_hundredth():
    """Stanford CS336 assignment 2 sec. 1.1.5: 0.01 added 1000 times under three dtype mixes.
    Published (printed) results: 10.0001, 9.9531, 10.0021; NumPy scalar loops agree."""
    hundredths = np.full(1000, 0.01)
    fp32_sum = lowprec.sum(lowprec.round(hundredths, "fp32"), "fp32")
    fp16_sum = lowprec.sum(lowprec.round(hundredths, "fp16"), "fp16")
    mixed_sum = lowprec.sum(lowprec.round(hundredths, "fp16"), "fp32")  # FP16 addends, FP32 sum
    printed = (round(fp32_sum, 4), round(fp16_sum, 4), round(mixed_sum, 4))
    assert printed == (10.0001, 9.9531, 10.0021)
    loops = {np.float32: np.float32(0), np.float16: np.float16(0), "mixed": np.float32(0)}
    for _ in range(1000):
        loops[np.float32] = np.float32(loops[np.float32] + np.float32(0.01))
        loops[np.float16] = np.float16(loops[np.float16] + np.float16(0.01))
        loops["mixed"] = np.float32(loops["mixed"] + np.float32(np.float16(0.01)))
    assert (fp32_sum, fp16_sum, mixed_sum) == (loops[np.float32], loops[np.float16], loops["mixed"])


def test_bf16_running_sum_of_ones_stops_at_256():
    assert lowprec.sum(np.ones(1000), "bf16") == 256.0
    total = ml_dtypes.bfloat16(0)
    for _ in range(1000):
        total = ml_dtypes.bfloat16(total + ml_dtypes.bfloat16(1))
    assert float(total) == 256.0
    assert lowprec.sum(np.ones(1000), "bf16", order="pairwise") == 1000.0  # pairwise keeps it exact


def test_fp16_one_plus_half_ulp():
    assert arith.add(1.0, 2.0**-11, "fp16") == 1.0 == float(np.float16(1) + np.float16(2.0**-11))
    assert arith.add(1.0, 2.0**-11 + 2.0**-30, "fp16") == 1 + 2.0**-10
    assert arith.add(1.0, 2.0**-10, "fp16") == 1 + 2.0**-10


def reference_sum(terms, fmt, mode="nearest", order="sequential", block=None):
    """Exact rational reference of arith's reductions, every addition rounded by lowprec.reference.
    sequential: ((0 + t0) + t1) + ...; pairwise: adjacent pairs level by level, an odd last one
    passing up unrounded (a lone term is rounded on its own); block: runs of `block` terms summed
    sequentially, the run sums combined in `order`. An infinite or NaN partial sum stays a float."""
    def rnd(v):
        r = round_exact(v, fmt, mode)
        return Fraction(r) if math.isfinite(r) else r

    def reduce(values, order):
        if order == "sequential" or len(values) <= 1:
            acc = Fraction(0)
            for v in values:
                acc = rnd(acc + v)
            return acc
        while len(values) > 1:
            values = [rnd(values[i] + values[i + 1]) for i in range(0, len(values) - 1, 2)] + (
                [values[-1]] if len(values) % 2 else [])
        return values[0]

    values = [Fraction(float(t)) for t in terms]
    if block is not None:
        values = [reduce(values[s:s + block], "sequential") for s in range(0, len(values), block)]
    return float(reduce(values, order))


@pytest.mark.parametrize("order", ["sequential", "pairwise"])
@pytest.mark.parametrize("acc", ["fp32", "bf16", "fp16"])
def test_sum_matches_exact_reference(acc, order):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 37)) * np.exp2(rng.integers(-12, 12, (3, 37)))
    for mode in ("nearest", "down", "odd"):
        got = lowprec.sum(x, acc, axis=1, order=order, mode=mode)
        want = [reference_sum(row, lowprec.as_format(acc), mode, order) for row in x]
        assert [float(g) for g in got] == want
    blocked = lowprec.sum(x[0], "fp32", accumulate="bf16", block=8)
    assert blocked == reference_sum(x[0], lowprec.BF16, block=8)


def test_sum_zero_signs():
    # sequential sums start from +0; x + (-x) is +0, and -0 when rounding down (IEEE 754 6.3)
    assert same(lowprec.sum(np.array([1.5, -1.5]), "fp16"), 0.0)
    assert same(lowprec.sum(np.array([1.5, -1.5]), "fp16", mode="down"), -0.0)
    assert same(lowprec.sum(np.array([-0.0]), "bf16"), 0.0)
    assert same(lowprec.sum(np.array([-0.0]), "bf16", mode="down"), -0.0)
    assert same(lowprec.dot([2.0, 3.0], [3.0, -2.0], accumulate="bf16", mode="down"), -0.0)


def test_sum_axes_and_dtypes():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    assert lowprec.sum(x, "fp32", axis=1).shape == (2, 4)
    assert lowprec.sum(x, "fp32", axis=1).dtype == np.float32
    # np.cumsum adds in order, each float32 addition rounded
    np.testing.assert_array_equal(lowprec.sum(x, "fp32", axis=-1), np.cumsum(x, axis=-1)[..., -1])
    assert lowprec.sum(x, "fp16").dtype == np.float32
    assert lowprec.sum(x.astype(np.float64), "fp32").dtype == np.float64


def matmul_reference(a, b, acc_fmt, mode="nearest"):
    """acc = round(acc + a_ik * b_kj) with the exact product, one element at a time."""
    out = np.empty((a.shape[0], b.shape[1]))
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            acc = Fraction(0)
            for k in range(a.shape[1]):
                exact = acc + Fraction(a[i, k]) * Fraction(b[k, j])
                acc = Fraction(round_exact(exact, acc_fmt, mode))
            out[i, j] = float(acc)
    return out


@pytest.mark.parametrize("inputs,acc,mode", [
    ("fp16", "fp32", "nearest"),  # the float32 fast path
    ("bf16", "fp32", "nearest"),  # float64 products, float32 sums
    ("tf32", "fp32", "up"),
    ("fp16", "fp16", "nearest"),
    (None, "bf16", "toward_zero"),  # float64 operands with 53-bit significands: fma per step
    ("fp32", "fp32", "nearest"),
])
def test_matmul_matches_exact_reference(inputs, acc, mode):
    rng = np.random.default_rng(8)
    a = rng.standard_normal((4, 23)) * np.exp2(rng.integers(-6, 6, (4, 23)))
    b = rng.standard_normal((23, 3))
    got = lowprec.matmul(a, b, inputs=inputs, accumulate=acc, mode=mode)
    ra = a if inputs is None else lowprec.round(a, inputs)
    rb = b if inputs is None else lowprec.round(b, inputs)
    np.testing.assert_array_equal(got, matmul_reference(ra, rb, lowprec.as_format(acc), mode))


def test_matmul_fast_path_equals_float32_loop():
    rng = np.random.default_rng(2)
    a = lowprec.round(rng.standard_normal((20, 300)), "fp16").astype(np.float32)
    b = lowprec.round(rng.standard_normal((300, 10)), "fp16").astype(np.float32)
    want = np.zeros((20, 10), np.float32)
    for k in range(300):  # float32 products of FP16 values are exact; float32 sums round once
        want += a[:, k, None] * b[None, k, :]
    got = lowprec.matmul(a, b)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(lowprec.matmul(a, b, output="fp16"), lowprec.round(want, "fp16"))


def test_pairwise_and_blocked_products():
    rng = np.random.default_rng(6)
    a = lowprec.round(rng.standard_normal((2, 19)), "bf16")
    b = lowprec.round(rng.standard_normal(19), "bf16")
    products = a * b  # exact
    for row, got in zip(products, lowprec.dot(a, b, accumulate="bf16", order="pairwise")):
        assert got == reference_sum(row, lowprec.BF16, order="pairwise")
    got = lowprec.dot(a, b, accumulate="bf16", block=4)
    for row, value in zip(products, got):
        assert value == reference_sum(row, lowprec.BF16, block=4)


# Every format a sum can start in (E8M0 has no zero).
ACCUMULATORS = [f for f in FORMATS.values() if f.has_zero]
REDUCTIONS = [("sequential", None), ("pairwise", None), ("sequential", 4), ("pairwise", 4)]
LENGTHS = (1, 2, 3, 5, 128)


def spread(rng, shape, scale):
    """Normal values times 2**-8 .. 2**8 times scale: cancellation, gaps, and some overflow."""
    return rng.standard_normal(shape) * np.exp2(rng.integers(-8, 9, shape)) * scale


@pytest.mark.parametrize("acc", ACCUMULATORS, ids=lambda f: f.name)
def test_sum_in_every_order_matches_exact_reference(acc):
    # float32 addends are added pairwise without meeting the float64 zero: the exact sum must
    # still be formed in float64 (at 24 bits, round-to-odd then to FP32 rounds twice).
    rng = np.random.default_rng([9, acc.bits, acc.mantissa_bits])
    scale = 2.0 ** min(acc.emax - 6, 20)
    for dtype in (np.float32, np.float64):
        for K in LENGTHS:
            x = spread(rng, (2, K, 3), scale).astype(dtype)  # summed over axis 1
            rows = np.moveaxis(x, 1, -1).reshape(-1, K)
            for (order, block), mode in itertools.product(REDUCTIONS, ("nearest", "up")):
                got = lowprec.sum(x, acc, axis=1, order=order, block=block, mode=mode)
                assert got.shape == (2, 3) and got.dtype == x.dtype
                want = [reference_sum(row, acc, mode, order, block) for row in rows]
                np.testing.assert_array_equal(got.reshape(-1), want,
                                              err_msg=f"{dtype} K={K} {order} {block} {mode}")


@pytest.mark.parametrize("acc", ACCUMULATORS, ids=lambda f: f.name)
def test_dot_and_matmul_in_every_order_match_exact_reference(acc):
    # FP16 products are exact in float32 and summed from there; BF16 products need float64
    rng = np.random.default_rng([10, acc.bits, acc.mantissa_bits])
    scale = 2.0 ** (min(acc.emax - 6, 8) / 2)  # operands stay below FP16's max
    for inputs, dtype, K in itertools.product(("fp16", "bf16"), (np.float32, np.float64),
                                              LENGTHS):
        a = spread(rng, (2, 1, K), scale).astype(dtype)
        b = spread(rng, (3, K), scale).astype(dtype)
        ra, rb = np.broadcast_arrays(lowprec.round(a, inputs), lowprec.round(b, inputs))
        products = [[Fraction(float(x)) * Fraction(float(y)) for x, y in zip(row_a, row_b)]
                    for row_a, row_b in zip(ra.reshape(-1, K), rb.reshape(-1, K))]
        for order, block in REDUCTIONS:
            options = dict(inputs=inputs, accumulate=acc, order=order, block=block)
            got = lowprec.dot(a, b, **options)
            assert got.shape == (2, 3) and got.dtype == dtype
            want = [reference_sum(row, acc, "nearest", order, block) for row in products]
            np.testing.assert_array_equal(got.reshape(-1), want,
                                          err_msg=f"{inputs} {dtype} K={K} {order} {block}")
            np.testing.assert_array_equal(lowprec.matmul(a[:, 0], b.T, **options), got)


@pytest.mark.parametrize("acc", ACCUMULATORS + list(tensorcore.TENSOR_CORES.values()),
                         ids=lambda acc: acc.name)
def test_empty_reductions_are_positive_zero(acc):
    # an empty sum is +0, as in NumPy, whatever the accumulator and the rounding mode
    kinds = [{}] if isinstance(acc, (tensorcore.TensorCoreModel, cdna.MFMAModel)) else [
        {"order": order, "block": block, "mode": mode}
        for (order, block), mode in itertools.product(REDUCTIONS, ("nearest", "down"))]
    for options in kinds:
        results = [
            (lowprec.sum(np.zeros((2, 0)), "fp16", axis=1, accumulate=acc, **options), (2,)),
            (lowprec.sum(np.zeros(0, np.float32), "bf16", accumulate=acc, **options), ()),
            (lowprec.dot(np.zeros((3, 0)), np.zeros(0), accumulate=acc, **options), (3,)),
            (lowprec.matmul(np.zeros((2, 0)), np.zeros((0, 3)), accumulate=acc, **options), (2, 3)),
        ]
        for got, shape in results:
            assert np.shape(got) == shape and np.all(got == 0) and not np.any(np.signbit(got))


def test_pairwise_sum_of_two_float32_products():
    # 448**2 + 2**-18 in FP32: the sum is 2**-18 above 200704, whose ulp is 2**-6: RN gives
    # 200704 (the two float32 products once met a float32 TwoSum and an int64 view of them)
    a = np.array([[448, 2.0**-9], [448, 2.0**-9]])
    got = lowprec.dot(a, a, inputs="e4m3", accumulate="fp32", order="pairwise")
    assert got.tolist() == [200704.0, 200704.0]
    assert lowprec.sum(np.float32([448.0**2, 2.0**-18]), "fp32", order="pairwise") == 200704.0


def test_matmul_shapes_like_numpy():
    rng = np.random.default_rng(1)
    shapes = [((5,), (5, 3)), ((4, 5), (5,)), ((5,), (5,)), ((2, 4, 5), (5, 3)),
              ((2, 1, 4, 5), (3, 5, 2))]
    for sa, sb in shapes:
        a, b = rng.standard_normal(sa), rng.standard_normal(sb)
        assert np.shape(lowprec.matmul(a, b, inputs="fp16")) == np.matmul(a, b).shape
    with pytest.raises(ValueError, match="columns"):
        lowprec.matmul(np.ones((2, 3)), np.ones((4, 2)))


def test_matmul_with_a_tensor_core_model():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((6, 40)), rng.standard_normal((40, 5))
    got = lowprec.matmul(a, b, inputs="fp16", accumulate=tensorcore.H100_FP16, output="bf16")
    want = tensorcore.matmul(lowprec.round(a, "fp16"), lowprec.round(b, "fp16"),
                             tensorcore.H100_FP16)
    np.testing.assert_array_equal(got, lowprec.round(want, "bf16"))
    assert lowprec.sum(np.ones(32768), "fp32", accumulate=tensorcore.H100_FP8) == 16384.0


def test_bad_input_gets_clear_errors():
    with pytest.raises(TypeError, match="complex"):
        arith.add(np.ones(2, complex), 1.0, "fp16")
    with pytest.raises(TypeError):
        arith.mul("1", 1.0, "fp16")
    with pytest.raises(ValueError, match="unknown format"):
        arith.add(1.0, 1.0, "fp17")
    with pytest.raises(ValueError, match="unknown rounding mode"):
        arith.add(1.0, 1.0, "fp16", "banker")
    with pytest.raises(TypeError, match="rng"):
        arith.add(1.0, 1.0, "fp16", "stochastic")
    with pytest.raises(ValueError, match="40 mantissa bits"):
        arith.add(1.0, 1.0, FloatFormat("fp64", 11, 52))
    with pytest.raises(ValueError, match="order"):
        lowprec.sum(np.ones(3), "fp16", order="random")
    with pytest.raises(ValueError, match="tensor-core model"):
        lowprec.matmul(np.ones((2, 2)), np.ones((2, 2)), accumulate=tensorcore.H100_FP16, block=4)
    with pytest.raises(ValueError, match="not exact"):
        lowprec.dot(np.ones(3) / 3, np.ones(3) / 3, order="pairwise")


NO_NAN = [f for f in FORMATS.values() if not f.has_nan]  # the MX element formats (no NaN or inf)


@pytest.mark.parametrize("fmt", NO_NAN, ids=lambda f: f.name)
def test_invalid_results_in_formats_without_nan(fmt):
    # The operands hold no NaN; the exact result would (IEEE 754 sec. 7.2), and fmt cannot.
    stochastic = {"mode": "stochastic", "rng": np.random.default_rng(0)}
    elementwise = [(arith.add, (np.inf, -np.inf), "inf - inf"),
                   (arith.sub, (np.inf, np.inf), "inf - inf"),
                   (arith.mul, (0.0, np.inf), "0 * inf"), (arith.div, (0.0, 0.0), "0/0"),
                   (arith.div, (np.inf, -np.inf), "inf/inf"),
                   (arith.fma, (0.0, np.inf, 1.0), "0 * inf"),
                   (arith.fma, (1.0, np.inf, -np.inf), "inf - inf"),
                   (arith.sqrt, (-1.0,), "square root of a negative number")]
    calls = [(functools.partial(op, *args, fmt, **options), "the result", what)
             for (op, args, what), options in itertools.product(elementwise, ({}, stochastic))]
    inf_minus_inf = np.array([np.inf, -np.inf])
    calls += [  # NaN made inside a reduction, kept in fmt as accumulator or result
        (lambda: lowprec.sum(inf_minus_inf, fmt, order="pairwise"), "a partial sum", "inf - inf"),
        (lambda: lowprec.sum(inf_minus_inf, fmt, order="pairwise", **stochastic), "a partial sum",
         "inf - inf"),
        (lambda: lowprec.sum(inf_minus_inf, fmt, accumulate="fp32"), "the result", "inf - inf"),
        (lambda: lowprec.sum(inf_minus_inf, fmt, accumulate=tensorcore.H100_FP16), "the result",
         "inf - inf"),
        (lambda: lowprec.dot([0.0, 1.0], [np.inf, 1.0], accumulate=fmt), "a partial sum",
         "0 * inf"),
        (lambda: lowprec.dot([0.1, 0.0], [1.0, np.inf], accumulate=fmt), "a partial sum",
         "0 * inf"),  # products not exact in float64: fused
        (lambda: lowprec.matmul(np.array([[np.inf, 1.0]]), np.array([[1.0], [-np.inf]]),
                              accumulate="fp32", output=fmt), "the result", "inf - inf"),
    ]
    for call, where, what in calls:
        message = (rf"^{where} is NaN \(invalid operation: [^)]*{re.escape(what)}[^)]*\), but "
                   rf"format {fmt.name} has no NaN encoding$")
        with np.errstate(invalid="ignore"), pytest.raises(ValueError, match=message):
            call()  # (errstate: NumPy's own warning of inf - inf on the way is expected)
    # a NaN operand still gets its own message, naming the operand
    nan_operands = [
        (lambda: arith.add([1.0, 2.0], [np.nan, 1.0], fmt), "b"),
        (lambda: arith.sqrt(np.nan, fmt, **stochastic), "a"),
        (lambda: lowprec.sum(np.array([1.0, np.nan]), fmt, order="pairwise"), "x"),
        (lambda: lowprec.sum(np.array([1.0, np.nan]), fmt, accumulate=tensorcore.H100_FP16), "x"),
        (lambda: lowprec.dot([1.0, 2.0], [1.0, np.nan], accumulate="fp32", output=fmt), "b"),
    ]
    for call, name in nan_operands:
        with pytest.raises(ValueError, match=f"^{name} holds NaN, but format {fmt.name} has no "
                                             "NaN encoding$"):
            call()


def test_inputs_are_not_modified_and_dtypes_follow_round():
    a = np.array([1.0, 2.0, 3.0], np.float32)
    b = a.copy()
    out = arith.div(a, b[::-1], "bf16")
    assert out.dtype == np.float32 and np.array_equal(a, b)
    assert arith.div(a, 3, "bf16").dtype == np.float64
    assert arith.mul(a, a, "fp32").dtype == np.float32
    assert isinstance(arith.add(1.0, 2.0, "fp16"), np.float64)
    assert arith.neg(np.float32(1.5), "e5m2") == -1.5
    assert arith.abs(-3.3, "fp16") == lowprec.round(3.3, "fp16")


def test_operands_are_taken_exactly_or_refused():
    """Big-endian float32 is float32 (float32 out); a longdouble wider than float64 cannot be
    taken exactly and is refused, as lowprec.round refuses it."""
    a = np.array([1.5, 2**-20], dtype=">f4")
    out = arith.add(a, np.float32(1), "fp16")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [2.5, 1.0])
    if np.finfo(np.longdouble).nmant > 52:
        x = np.longdouble(1) + np.longdouble(2) ** -60
        with pytest.raises(TypeError, match="longdouble|float128|float96"):
            arith.add(x, 0.0, "fp16")
        with pytest.raises(TypeError):
            lowprec.sum(np.array([x, x]), "fp32")
