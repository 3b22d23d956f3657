"""Optimizers and the low-precision update rules against independent references."""
from fractions import Fraction

import numpy as np

import lowprec
from lowprec.nn import SGD, Adam
from lowprec.nn.optim import kahan_update


def test_sgd_momentum_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(20).astype(np.float32) for _ in range(4)]
    opt = SGD(lr=0.05, momentum=0.9)
    w, state = np.ones(20, np.float32), opt.init_state(np.ones(20, np.float32), np)
    w_ref, v_ref = np.ones(20), np.zeros(20)
    for step, g in enumerate(grads, start=1):
        u, state = opt.update(g, state, step, lambda s: s)
        w = w - u
        v_ref = 0.9 * v_ref + g
        w_ref = w_ref - 0.05 * v_ref
    np.testing.assert_allclose(w, w_ref, rtol=1e-6)


def test_adam_first_step_moves_every_weight_by_lr():
    """Bias-corrected Adam: the first update is lr * g / (|g| + eps) = lr * sign(g)."""
    g = np.array([1e-3, -2.0, 5e3], np.float32)
    opt = Adam(lr=0.01)
    u, _ = opt.update(g, opt.init_state(g, np), 1, lambda s: s)
    np.testing.assert_allclose(u, 0.01 * np.sign(g), rtol=1e-4)


def test_optimizer_state_goes_through_the_cast():
    seen = []
    opt = SGD(lr=0.1, momentum=0.5)
    g = np.full(3, 1e-8, np.float32)  # below FP16's smallest subnormal (6e-8): flushed
    u, state = opt.update(g, opt.init_state(g, np), 1,
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
