"""The tensor-core block-FMA model: published probe results (Fasi et al., PeerJ CS 2021; MMA-Sim,
arXiv:2511.10909, and its per-instruction parameters in mmasim/simulator/nv.py; DeepSeek-V3
sec. 3.3.2), and the vectorised model against the scalar reference written one term at a time."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import lowprec
from lowprec import tensorcore as tc

# presets without block scales (those are tested in test_tensorcore_blackwell.py)
# NVIDIA's presets without block scales (AMD's, also in the registry: tests/test_cdna.py)
ALL = [m for m in tc.TENSOR_CORES.values()
       if isinstance(m, tc.TensorCoreModel) and not m.block_scaled_mma]
FP16_OUT = tc.V100_FP16_OUT16


def probe(n, products, c, model):
    """One block FMA whose i-th product is products[i] = (a, b), the others zero."""
    a, b = np.zeros(n), np.zeros(n)
    for i, (x, y) in products.items():
        a[i], b[i] = x, y
    return tc.block_fma(a, b, c, model)


@pytest.mark.parametrize("model,want", [
    (tc.V100_FP16, 2.0**-23), (tc.A100_FP16, 2.0**-24), (tc.A100_BF16, 2.0**-24),
    (tc.A100_TF32, 2.0**-24), (tc.H100_FP16, 2.0**-24), (tc.H100_BF16, 2.0**-24),
    (tc.H100_TF32, 2.0**-24), (tc.H100_FP8, 2.0**-13), (tc.H100_FP8_PROMOTED, 2.0**-13),
])
def test_fasi_probe_one_minus_one_minus_ulp(model, want):
    # 1*1 - (1 - 2**-24): c is truncated to F fraction bits below 2**0 (no extra bit on V100).
    assert probe(model.block, {0: (1.0, 1.0)}, -(1 - 2.0**-24), model) == want
    assert tc.block_fma_scalar([1.0] + [0.0] * (model.block - 1), [1.0] * model.block,
                               -(1 - 2.0**-24), model) == want


@pytest.mark.parametrize("model,want", [(tc.A100_FP16, 1.0), (tc.H100_FP16, 1 + 2.0**-23),
                                        (tc.A100_BF16, 1.0), (tc.H100_BF16, 1 + 2.0**-23)])
def test_two_small_products_at_both_ends_of_k16(model, want):
    # c = 1, products 2**-24 at k = 0 and k = 15: the A100 runs k16 as 2 x 8 and rounds between.
    a = np.zeros(16)
    a[[0, 15]] = 2.0**-12
    assert tc.dot(a, a, model, c=1.0) == want


def test_block_boundary():
    a = np.zeros(17)
    a[[0, 15]] = 2.0**-12
    assert tc.dot(a, a, tc.H100_FP16, c=1.0) == 1 + 2.0**-23  # one block of 16
    a[[15, 16]] = 0.0, 2.0**-12
    assert tc.dot(a, a, tc.H100_FP16, c=1.0) == 1.0  # k = 16 starts the next block


def test_truncation_not_round_to_nearest():
    # 1 + 1.5 * 2**-24: RN to FP32 gives 1 + 2**-23; the tensor cores truncate.
    for model in (tc.V100_FP16, tc.A100_FP16, tc.H100_FP16):
        assert probe(model.block, {1: (2.0**-12, 1.5 * 2.0**-12)}, 1.0, model) == 1.0
        assert lowprec.round(1 + 1.5 * 2.0**-24, "fp32") == 1 + 2.0**-23
    # With FP16 output the normalised sum is rounded to nearest: 1 + 0.75 ulp goes up.
    assert probe(4, {1: (2.0**-6, 1.5 * 2.0**-5)}, 1.0, FP16_OUT) == 1 + 2.0**-10
    assert probe(4, {1: (2.0**-6, 1.5 * 2.0**-5)}, 1.0, tc.V100_FP16) == 1 + 1.5 * 2.0**-11


def test_non_monotonic():
    # Fasi et al.: raising c across a power of two coarsens the alignment grid, and the small
    # products that were kept are now truncated away. V100: four products 2**-24.
    small = {i: (2.0**-12, 2.0**-12) for i in range(4)}
    below, at = probe(4, small, 1 - 2.0**-24, tc.V100_FP16), probe(4, small, 1.0, tc.V100_FP16)
    assert (below, at) == (1 + 2.0**-23, 1.0) and below > at
    small = {i: (2.0**-12, 2.0**-13) for i in range(8)}  # A100: one extra bit, half the size
    assert probe(8, small, 1 - 2.0**-24, tc.A100_FP16) > probe(8, small, 1.0, tc.A100_FP16)


def test_zero_results_are_positive():
    assert math.copysign(1, probe(8, {0: (-1.0, 1.0)}, 1.0, tc.A100_FP16)) == 1
    assert math.copysign(1, probe(8, {0: (1.0, 1.0)}, -1.0, tc.A100_FP16)) == 1
    # -2**-160 truncates to zero in FP32 and still comes back +0
    r = tc.block_fma([2.0**-80], [-(2.0**-80)], 0.0, tc.A100_BF16)
    assert r == 0 and math.copysign(1, r) == 1
    assert math.copysign(1, tc.block_fma_scalar([2.0**-80], [-(2.0**-80)], -0.0, tc.A100_BF16)) == 1


@pytest.mark.parametrize("model", ALL + [FP16_OUT, dataclasses.replace(
    tc.H100_FP16, name="H100_FP16_split2", split_k=2)], ids=lambda m: m.name)
def test_empty_products_are_positive_zero(model):
    # K = 0: an empty sum is +0, as numpy.dot and numpy.matmul give
    for lead in [(), (3,), (2, 0), (0,)]:
        a = np.zeros(lead + (0,))
        for got in (tc.dot(a, a, model), tc.block_fma(a, a, None, model)):
            assert np.shape(got) == lead
            assert np.all(got == 0) and not np.any(np.signbit(got))
    got = tc.matmul(np.zeros((2, 0)), np.zeros((0, 3)), model)
    assert got.shape == (2, 3) and np.all(got == 0) and not np.any(np.signbit(got))


def test_overflow_is_infinite_even_when_truncating():
    fp32_max = float(lowprec.FP32.max)
    assert tc.block_fma([2.0**64], [2.0**64], fp32_max, tc.A100_BF16) == np.inf
    assert tc.block_fma([-(2.0**64)], [2.0**64], 0.0, tc.A100_BF16) == -np.inf
    # between max and 2**128 truncation stops at max
    assert tc.block_fma([2.0**52], [2.0**51], fp32_max, tc.A100_BF16) == fp32_max
    assert tc.block_fma_scalar([2.0**64], [2.0**64], fp32_max, tc.A100_BF16) == np.inf


def test_nan_and_infinity_first():
    for fn in (lambda a, b, c: tc.block_fma(a, b, c, tc.H100_FP16),
               lambda a, b, c: tc.block_fma_scalar(a, b, c, tc.H100_FP16)):
        assert math.isnan(fn([np.inf, 1.0], [0.0, 1.0], 0.0))
        assert math.isnan(fn([np.inf, -np.inf], [1.0, 1.0], 0.0))
        assert math.isnan(fn([np.inf, 1.0], [1.0, 1.0], -np.inf))
        assert math.isnan(fn([np.nan, 1.0], [1.0, 1.0], 0.0))
        assert fn([np.inf, 1.0], [-1.0, 1.0], 5.0) == -np.inf
        assert fn([1.0, 1.0], [1.0, 1.0], np.inf) == np.inf


def test_tf32_operands_are_truncated_like_the_hardware():
    # MMA-Sim (and the hardware) keep the top 19 bits of an FP32 operand: x >> 13 << 13.
    rng = np.random.default_rng(0)
    x = rng.standard_normal(64).astype(np.float32)
    truncated = (x.view(np.uint32) >> 13 << 13).view(np.float32).astype(np.float64)
    ones = np.ones(64)
    np.testing.assert_array_equal(tc.block_fma(x[:, None], ones[:, None], 0.0, tc.A100_TF32),
                                  truncated)


def random_operands(rng, shape, fmt):
    """Values of fmt across its whole range: normals, subnormals, zeros, both signs."""
    codes = rng.integers(0, 1 << fmt.bits, shape) if fmt.bits <= 16 else None
    if codes is not None:
        x = lowprec.decode(codes, fmt)
    else:  # TF32: FP32 values, truncated by the model
        x = rng.standard_normal(shape) * np.exp2(rng.integers(-140, 120, shape))
    x = np.where(np.isfinite(x), x, 0.0)
    mild = rng.standard_normal(shape) * np.exp2(rng.integers(-8, 8, shape))
    mild = lowprec.round(mild, fmt, "toward_zero")
    return np.where(rng.integers(0, 2, shape) == 0, x, mild)


@pytest.mark.parametrize("model", ALL, ids=lambda m: m.name)
def test_vectorised_matches_scalar_reference(model):
    rng = np.random.default_rng(abs(hash(model.name)) % 2**32)
    rows, n = 150, model.block
    a = random_operands(rng, (rows, n), model.inputs)
    b = random_operands(rng, (rows, n), model.b_format)
    acc = model.accumulator
    c = rng.standard_normal(rows) * np.exp2(rng.integers(-20, 20, rows))
    c = lowprec.round(c, acc, "toward_zero")
    c[:10] = 0.0
    got = tc.block_fma(a, b, c, model)
    for i in range(rows):
        want = tc.block_fma_scalar(a[i], b[i], c[i], model)
        assert got[i] == want or (math.isnan(got[i]) and math.isnan(want)), (i, a[i], b[i], c[i])


@pytest.mark.parametrize("model", [tc.A100_FP16, tc.H100_BF16, tc.H100_FP8_PROMOTED,
                                   dataclasses.replace(tc.H100_FP16, split_k=3)],
                         ids=lambda m: m.name + f"_split{m.split_k}")
def test_long_k_matches_chained_scalar_blocks(model):
    rng = np.random.default_rng(1)
    K = 300
    a = random_operands(rng, (3, K), model.inputs) * 1.0
    b = lowprec.round(rng.standard_normal((K, 2)), model.b_format)
    got = tc.matmul(a, b, model)
    assert got.shape == (3, 2)

    def chain(x, y, start, stop, c):
        for k in range(start, stop, model.block):
            end = min(k + model.block, stop)
            c = tc.block_fma_scalar(x[k:end], y[k:end], c, model)
        return c

    def fp32_add(x, y):
        return float(np.float32(x) + np.float32(y))

    for i in range(3):
        for j in range(2):
            x, y = a[i], b[:, j]
            bounds = [K * s // model.split_k for s in range(model.split_k + 1)]
            total = 0.0
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                if model.promote_every:
                    part = 0.0
                    for s in range(lo, hi, model.promote_every):
                        part = fp32_add(part, chain(x, y, s, min(s + model.promote_every, hi), 0.0))
                else:
                    part = chain(x, y, lo, hi, 0.0)
                plain = model.split_k == 1 and not model.promote_every
                total = part if plain else fp32_add(total, part)
            assert got[i, j] == total


def test_fp8_accumulation_stalls_without_promotion():
    # DeepSeek-V3 sec. 3.3.2: FP8 tensor-core sums keep about 14 bits; promoting the partial
    # sums to FP32 every 128 products fixes it. Adding ones stalls at 2**14 with 13 bits.
    ones = np.ones(32768)
    assert tc.dot(ones, ones, tc.H100_FP8) == 2.0**14
    assert tc.dot(ones, ones, tc.H100_FP8_PROMOTED) == 32768.0
    assert tc.H100_FP8_PROMOTED.result_format == lowprec.FP32


def test_matmul_shapes_and_batch():
    rng = np.random.default_rng(2)
    a = lowprec.round(rng.standard_normal((2, 3, 20)), "fp16")
    b = lowprec.round(rng.standard_normal((20, 4)), "fp16")
    got = tc.matmul(a, b, tc.H100_FP16)
    assert got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got[1], tc.matmul(a[1], b, tc.H100_FP16))
    np.testing.assert_array_equal(got[0, 2], tc.dot(a[0, 2], b.T, tc.H100_FP16))
    assert tc.matmul(a[0, 0], b, tc.H100_FP16).shape == (4,)
    c = lowprec.round(rng.standard_normal((3, 4)), "fp32")
    np.testing.assert_array_equal(tc.matmul(a[0], b, tc.H100_FP16, c=c)[1, 2],
                                  tc.dot(a[0, 1], b[:, 2], tc.H100_FP16, c=c[1, 2]))


def test_bad_input():
    with pytest.raises(ValueError, match="not fp16 numbers"):
        tc.block_fma([0.1], [1.0], 0.0, tc.H100_FP16)
    with pytest.raises(ValueError, match="not bf16 numbers"):
        tc.block_fma([1 + 2.0**-10], [1.0], 0.0, tc.A100_BF16)
    with pytest.raises(ValueError, match="not e4m3 numbers"):
        tc.block_fma([np.inf], [1.0], 0.0, tc.H100_FP8)
    with pytest.raises(ValueError, match="not fp32 numbers"):
        tc.block_fma([1.0], [1.0], 0.1, tc.H100_FP16)
    with pytest.raises(ValueError, match="block"):
        tc.TensorCoreModel("x", "fp16", block=0, fraction_bits=24)
    with pytest.raises(ValueError, match="fraction_bits"):
        tc.TensorCoreModel("x", "fp16", block=4, fraction_bits=40)
    with pytest.raises(ValueError, match="rounding mode"):
        tc.TensorCoreModel("x", "fp16", block=4, fraction_bits=24, output_rounding="sideways")
    with pytest.raises(TypeError):
        tc.matmul(np.array(["a"]), np.ones(1), tc.H100_FP16)
