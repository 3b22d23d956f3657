"""Optimizers and the low-precision update rules against independent references."""
import math
from fractions import Fraction

import numpy as np
import pytest
from lowprec.reference import round_exact

import lowprec
from lowprec.formats import FP32
from lowprec.nn import SGD, Adam
from lowprec.nn.optim import fma_fp32, kahan_update


def test_sgd_momentum_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(20).astype(np.float32) for _ in range(4)]
    opt = SGD(lr=0.05, momentum=0.9)
    w, state = np.ones(20, np.float32), opt.init_state(np.ones(20, np.float32), np)
    w_ref, v_ref = np.ones(20), np.zeros(20)
    for step, g in enumerate(grads, start=1):
        w, _, state = opt.apply(w, g, state, step, lambda s: s)
        v_ref = 0.9 * v_ref + g
        w_ref = w_ref - 0.05 * v_ref
    np.testing.assert_allclose(w, w_ref, rtol=1e-6)


def test_adam_first_step_moves_every_weight_by_lr():
    """Bias-corrected Adam: the first update is lr * g / (|g| + eps) = lr * sign(g)."""
    g = np.array([1e-3, -2.0, 5e3], np.float32)
    opt = Adam(lr=0.01)
    _, u, _ = opt.apply(np.zeros_like(g), g, opt.init_state(g, np), 1, lambda s: s)
    np.testing.assert_allclose(u, 0.01 * np.sign(g), rtol=1e-4)


def test_optimizer_state_goes_through_the_cast():
    seen = []
    opt = SGD(lr=0.1, momentum=0.5)
    g = np.full(3, 1e-8, np.float32)  # below FP16's smallest subnormal (6e-8): flushed
    _, u, state = opt.apply(np.zeros_like(g), g, opt.init_state(g, np), 1,
                            lambda s: seen.append(s) or lowprec.round(s, "fp16"))
    assert len(seen) == 1 and np.all(state["velocity"] == 0) and np.all(u == 0)


def test_kahan_keeps_updates_that_nearest_rounding_loses():
    """256 updates of a quarter ulp (2**-12) subtracted from 1.0 in FP16."""
    def to_fp16(v):
        return lowprec.round(v, "fp16")
    w_nearest = w_kahan = np.ones(1, np.float32)
    comp = np.zeros(1, np.float32)
    u = np.full(1, -(2.0**-12), np.float32)  # w - u = w + 2**-12
    for _ in range(256):
        w_nearest = to_fp16(w_nearest - u)
        w_kahan, comp = kahan_update(w_kahan, u, comp, to_fp16)
    exact = Fraction(1) + 256 * Fraction(1, 2**12)  # 1.0625
    assert w_nearest[0] == 1.0  # every update lost: 2**-12 is below half an ulp of 1 (2**-11)
    assert Fraction(float(w_kahan[0])) == exact


def test_stochastic_rounding_keeps_updates_on_average():
    rng = np.random.default_rng(0)
    w = np.ones(4000, np.float32)
    for _ in range(64):
        w = lowprec.round(w + np.float32(2.0**-12), "fp16", "stochastic", rng=rng)
    target = 1 + 64 * 2.0**-12  # 1.015625
    # each step adds 2**-12 in expectation; the mean of 4000 walks is within a few standard errors
    assert abs(w.mean() - target) < 5 * w.std() / np.sqrt(w.size) + 1e-6


# --- the float32 fused multiply-add, against exact rational arithmetic ------------------------
def fma_reference(a, b, c):
    """a * b + c in Fraction arithmetic, rounded once to float32 (lowprec.reference)."""
    a, b, c = float(a), float(b), float(c)
    if not all(map(math.isfinite, (a, b, c))):
        return np.float32(a * b + c)  # IEEE specials: as float64 arithmetic gives them
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    # an exact zero is -0 only when both a * b and c are -0 (IEEE 754 sec. 6.3)
    negative = exact < 0 or (exact == 0 and math.copysign(1, a * b) < 0 and math.copysign(1, c) < 0)
    return np.float32(round_exact(exact, FP32, negative=negative))


def _f32(x):
    return np.asarray(x, np.float64).astype(np.float32)


def _odd_float32(rng, n, low, high):
    """Float32 values with an odd last significand bit, signs mixed, exponents in [low, high)."""
    k = rng.integers(2**23, 2**24, n) | 1
    return _f32(rng.choice([-1.0, 1.0], n) * k * 2.0 ** (rng.integers(low, high, n) - 23))


def fma_hard_cases():
    rng = np.random.default_rng(0)
    n = 300
    cases = {}
    # ties: c has an odd last bit, a * b = +-half an ulp of c exactly: ties to even
    c = _odd_float32(rng, n, -100, 100)
    half_ulp = np.spacing(np.abs(c)).astype(np.float64) / 2
    cases["ties"] = (_f32(rng.choice([-1.0, 1.0], n) * 2.0 ** 7), _f32(half_ulp * 2.0**-7), c)
    # near-ties: a * b = +-half an ulp * (1 - 2**-46); the float64 sum rounds onto the tie, and
    # ties-to-even then picks the wrong neighbour half of the time: double rounding
    a = _f32(rng.choice([-1.0, 1.0], n) * (1 + 2.0**-23) * 2.0**5)
    cases["near ties"] = (a, _f32((1 - 2.0**-23) * half_ulp * 2.0**-5), c)
    # cancellation: c = -round(a * b), so a * b + c is the product's rounding error, exactly
    a, b = _odd_float32(rng, n, -20, 20), _odd_float32(rng, n, -20, 20)
    cases["cancellation"] = (a, b, -(a * b))
    # subnormal results, ties between subnormals, and products below the smallest subnormal
    k = rng.integers(0, 2**23, n).astype(np.float64)
    cases["subnormals"] = (_odd_float32(rng, n, -76, -70), _odd_float32(rng, n, -76, -70),
                           _f32(rng.choice([-1.0, 1.0], n) * k * 2.0**-149))
    cases["subnormal ties"] = (_f32(np.full(n, 2.0**-75)),
                               _f32(rng.choice([-1.0, 1.0], n) * 2.0**-75),
                               _f32((2 * k + 1) * 2.0**-149))
    # overflow: products near float32's largest value, plus or minus a large c
    cases["overflow"] = (_odd_float32(rng, n, 63, 65), _odd_float32(rng, n, 63, 65),
                         _odd_float32(rng, n, 120, 128))
    # random bit patterns: every exponent, interacting or not
    cases["random"] = tuple(rng.integers(0, 2**32, 3000,
                                         dtype=np.uint64).astype(np.uint32).view(np.float32)
                            for _ in range(3))
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 3e38, 1e-45], np.float32)
    grid = np.array(np.meshgrid(specials, specials, specials)).reshape(3, -1)
    cases["specials and signed zeros"] = tuple(grid)
    return cases


@pytest.mark.parametrize("case", list(fma_hard_cases()))
def test_fma_fp32_is_rounded_once(case):
    a, b, c = fma_hard_cases()[case]
    got = fma_fp32(a, b, c)
    assert got.dtype == np.float32
    want = np.array([fma_reference(x, y, z) for x, y, z in zip(a, b, c)], np.float32)
    same = (got.view(np.int32) == want.view(np.int32)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), [(a[i], b[i], c[i], got[i], want[i]) for i in np.flatnonzero(~same)[:5]]


def test_near_ties_do_round_twice_in_float64():
    """The near-tie cases are hard: a float64 sum rounded to float32 gets some of them wrong."""
    a, b, c = fma_hard_cases()["near ties"]
    naive = (a.astype(np.float64) * b + c).astype(np.float32)
    assert np.mean(naive != fma_fp32(a, b, c)) > 0.2
