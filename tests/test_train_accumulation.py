"""The policy's non-default accumulation: matmuls through its accumulator (lowprec.accumulate)."""
import numpy as np
import pytest

import lowprec
from lowprec import data
from lowprec.nn import POLICIES, Caster, MLPConfig, TrainConfig, train


def _sequential_fp32(a, b):
    """Reference: c[i, j] = (((0 + a[i,0] b[0,j]) + a[i,1] b[1,j]) + ...), every sum rounded to
    float32. Products of FP16 values are exact in float32 (11 + 11 significant bits)."""
    out = np.zeros((a.shape[0], b.shape[1]), np.float32)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            s = np.float32(0)
            for k in range(a.shape[1]):
                s = np.float32(s + np.float32(a[i, k]) * np.float32(b[k, j]))
            out[i, j] = s
    return out


def test_sequential_fp32_accumulation_adds_in_order():
    rng = np.random.default_rng(0)
    # wide exponent range, so that the order of the sums matters
    a = lowprec.round(rng.standard_normal((4, 24)) * 2.0 ** rng.integers(-12, 12, (4, 24)),
                      "fp16")
    b = lowprec.round(rng.standard_normal((24, 3)), "fp16")
    a, b = a.astype(np.float32), b.astype(np.float32)
    cast = Caster(POLICIES["fp16_mixed"].replace(accumulate="fp32"))
    assert np.array_equal(cast.matmul(a, b), _sequential_fp32(a, b))


@pytest.mark.parametrize("accumulate", ["fp32", "H100_FP16"])
def test_training_runs_with_an_exact_accumulation_model(accumulate):
    spirals = data.spirals(np.random.default_rng(0), points_per_class=20)
    policy = POLICIES["fp16_mixed"].replace(accumulate=accumulate)
    h = train(policy, spirals, MLPConfig(sizes=(2, 8, 3)),
              TrainConfig(steps=3, batch_size=8, eval_every=0))
    blas = train("fp16_mixed", spirals, MLPConfig(sizes=(2, 8, 3)),
                 TrainConfig(steps=3, batch_size=8, eval_every=0))
    assert np.all(np.isfinite(h.loss))
    np.testing.assert_allclose(h.loss, blas.loss, rtol=1e-3)  # same run, other rounding of the sums
