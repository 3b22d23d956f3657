"""Block-scaled GEMMs (lowprec.accumulate) and the block-scaled recipes (lowprec.scaling.recipes).

References outside the code under test: exact rational arithmetic (fractions.Fraction,
lowprec.reference.round_exact), the scalar block-FMA model lowprec.reference.block_fma_scalar
(the papers' steps one term at a time), ml_dtypes for the element grids.
"""
from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

import lowprec
from lowprec import E4M3, FP32, tensorcore
from lowprec.accumulate import BLAS, FormatAccumulation
from lowprec.reference import block_fma_scalar, round_exact
from lowprec.scaling import ScaledTensor


def _e4m3(rng, shape):
    return rng.standard_normal(shape).astype(np.float32).astype(
        ml_dtypes.float8_e4m3fn).astype(np.float32)


def _blocked(rng, shape, axis, kb, scales=None):
    """An E4M3 ScaledTensor with 1-D blocks of kb along axis and FP32 scales (DeepSeek-V3's)."""
    e = _e4m3(rng, shape)
    grid = list(shape)
    grid[axis] = -(-shape[axis] // kb)
    if scales is None:
        scales = (rng.uniform(0.5, 2.0, grid) * np.exp2(rng.integers(-6, 6, grid))).astype(
            np.float32)
    return ScaledTensor(e, E4M3, block_scales=scales, block_size=kb, axis=axis)


def _deepseek_reference(a: ScaledTensor, b: ScaledTensor, model, kb):
    """Per output element, per K-block j: p_j from the scalar block-FMA chain of the model,
    s_j = fp32(sa * sb), acc = fp32(acc + s_j * p_j) (one rounding): all in Fractions."""
    ea, eb = a.elements, b.elements
    sa, sb = a.block_scales, b.block_scales
    M, K = ea.shape
    N = eb.shape[1]
    out = np.zeros((M, N), np.float32)
    for i in range(M):
        for n in range(N):
            acc = Fraction(0)
            for j in range(-(-K // kb)):
                p = 0.0
                for k0 in range(j * kb, min((j + 1) * kb, K), model.block):
                    k1 = min(k0 + model.block, (j + 1) * kb, K)
                    p = block_fma_scalar(ea[i, k0:k1], eb[k0:k1, n], p, model)
                s = round_exact(Fraction(float(sa[i, j])) * Fraction(float(sb[j, n])), FP32)
                acc = Fraction(round_exact(acc + Fraction(s) * Fraction(p), FP32))
            out[i, n] = float(acc)
    return out


def test_h100_fp8_block_scaled_gemm_scales_each_k_block_partial_in_fp32():
    """DeepSeek-V3 sec. 3.3.2 on the H100 FP8 model: 1x128 blocks of a, 128-blocks of b."""
    rng = np.random.default_rng(1)
    a = _blocked(rng, (3, 256), axis=1, kb=128)
    b = _blocked(rng, (256, 2), axis=0, kb=128)
    got = tensorcore.H100_FP8.matmul(a, b)
    want = _deepseek_reference(a, b, tensorcore.H100_FP8, 128)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.float32
    # the scales matter: not the same as scaling the whole sum once
    assert not np.array_equal(got, np.float32(a.dequantize() @ b.dequantize()))


def test_block_scaled_gemm_with_different_k_blocks_uses_their_common_refinement():
    """a in blocks of 64, b in blocks of 32: one scale pair per 32 of K (both start at k = 0)."""
    rng = np.random.default_rng(2)
    a = _blocked(rng, (2, 128), axis=1, kb=64)
    b = _blocked(rng, (128, 2), axis=0, kb=32)
    a32 = ScaledTensor(a.elements, E4M3, block_scales=np.repeat(a.block_scales, 2, axis=1),
                       block_size=32, axis=1)
    got = tensorcore.H100_FP8.matmul(a, b)
    np.testing.assert_array_equal(got, _deepseek_reference(a32, b, tensorcore.H100_FP8, 32))


def test_block_scaled_gemm_refuses_k_blocks_the_tensor_core_cannot_take():
    rng = np.random.default_rng(3)
    a = _blocked(rng, (2, 64), axis=1, kb=16)
    b = _blocked(rng, (64, 2), axis=0, kb=16)
    with pytest.raises(ValueError, match="K-block of 16 is not a multiple of 32"):
        tensorcore.H100_FP8.matmul(a, b)
    wrong_axis = _blocked(rng, (2, 64), axis=0, kb=16)
    with pytest.raises(ValueError, match="blocks run along axis 0"):
        tensorcore.H100_FP8.matmul(wrong_axis, b)


def test_a_single_k_block_is_padded_as_rowwise_scaling_needs():
    """Rowwise scales: one block spans all of K (here 40, not a multiple of 32): one partial,
    scaled once."""
    rng = np.random.default_rng(4)
    a = _blocked(rng, (3, 40), axis=1, kb=40)
    b = _blocked(rng, (40, 2), axis=0, kb=40)
    np.testing.assert_array_equal(tensorcore.H100_FP8.matmul(a, b),
                                  _deepseek_reference(a, b, tensorcore.H100_FP8, 40))


def test_plain_operand_beside_a_block_scaled_one_has_scale_one_and_per_tensor_is_refused():
    rng = np.random.default_rng(5)
    a = _blocked(rng, (2, 64), axis=1, kb=32)
    eb = _e4m3(rng, (64, 3))
    ones = ScaledTensor(eb, E4M3, block_scales=np.ones((2, 3), np.float32), block_size=32,
                        axis=0)
    np.testing.assert_array_equal(tensorcore.H100_FP8.matmul(a, eb),
                                  _deepseek_reference(a, ones, tensorcore.H100_FP8, 32))
    per_tensor = ScaledTensor(eb, E4M3, np.float32(0.5))
    for acc in (tensorcore.H100_FP8, FormatAccumulation(FP32)):
        with pytest.raises(ValueError, match="block-scaled and a per-tensor"):
            acc.matmul(a, per_tensor)


def test_format_accumulation_sums_the_exact_products_of_non_power_of_two_scales():
    """FP32 scales (DeepSeek-V3) times E4M3 elements: exact products summed in FP32 in order."""
    rng = np.random.default_rng(6)
    a = _blocked(rng, (2, 256), axis=1, kb=128)
    b = _blocked(rng, (256, 2), axis=0, kb=128)
    va, vb = a.exact_values(), b.exact_values()
    want = np.zeros((2, 2), np.float32)
    for i in range(2):
        for n in range(2):
            acc = Fraction(0)
            for k in range(256):
                acc = Fraction(round_exact(acc + Fraction(float(va[i, k]))
                                           * Fraction(float(vb[k, n])), FP32))
            want[i, n] = float(acc)
    np.testing.assert_array_equal(lowprec.matmul(a, b, accumulate="fp32"), want)
    np.testing.assert_array_equal(BLAS.matmul(a, b), a.dequantize() @ b.dequantize())


def test_promotion_cuts_the_h100_fp8_accumulation_error_at_k_4096():
    """DeepSeek-V3 sec. 3.3.2: FP8 accumulation on H800 keeps about 14 bits, with a maximum
    relative error near 2% at K = 4096; promoting to FP32 every 128 fixes it. With unit scales
    on uniform [0, 1) elements the 1x128-block GEMM error falls by orders of magnitude."""
    rng = np.random.default_rng(7)
    K = 4096
    e = rng.uniform(0, 1, (4, K)).astype(np.float32).astype(ml_dtypes.float8_e4m3fn).astype(
        np.float32)
    f = rng.uniform(0, 1, (K, 4)).astype(np.float32).astype(ml_dtypes.float8_e4m3fn).astype(
        np.float32)
    exact = e.astype(np.float64) @ f.astype(np.float64)  # exact: sums of 8-bit products
    a = ScaledTensor(e, E4M3, block_scales=np.ones((4, K // 128), np.float32), block_size=128,
                     axis=1)
    b = ScaledTensor(f, E4M3, block_scales=np.ones((K // 128, 4), np.float32), block_size=128,
                     axis=0)
    plain = np.max(np.abs(tensorcore.H100_FP8.matmul(e, f) - exact) / exact)
    blocked = np.max(np.abs(tensorcore.H100_FP8.matmul(a, b) - exact) / exact)
    assert plain > 1e-2 and blocked < 1e-3 and plain / blocked > 30, (plain, blocked)


def test_native_block_scaled_mma_gets_elements_and_decoded_scales(monkeypatch):
    """A model with block_scaled_mma (contract item 5) is handed the elements and the scales
    expanded onto its scale_block; a fake matmul records what it got."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Native:
        name: str = "native"
        block_scaled_mma: bool = True
        scale_block: int = 16
        result_format = FP32

        def reading(self, fa, fb):  # one instruction for every element format
            return self

        def _block_scaled_matmul(self, *args):  # as TensorCoreModel's
            from lowprec.accumulate import _block_scaled_on_tensor_cores
            return _block_scaled_on_tensor_cores(self, *args)

    seen = {}

    def fake_matmul(ea, eb, model, c=None, *, scale_a=None, scale_b=None):
        seen.update(ea=ea, eb=eb, sa=scale_a, sb=scale_b)
        return np.full((ea.shape[0], eb.shape[1]), 3.0)
    monkeypatch.setattr(tensorcore, "matmul", fake_matmul)
    rng = np.random.default_rng(8)
    a = _blocked(rng, (2, 64), axis=1, kb=32)
    b = _blocked(rng, (64, 3), axis=0, kb=32)
    from lowprec.accumulate import _scaled_matmul
    _scaled_matmul(Native(), a, b, None, None, None, "nearest", None, None)
    assert seen["ea"] is a.elements and seen["eb"] is b.elements
    np.testing.assert_array_equal(seen["sa"], np.repeat(a.block_scales, 2, axis=1))
    np.testing.assert_array_equal(seen["sb"], np.repeat(b.block_scales, 2, axis=0))
    assert math.isclose(float(seen["sa"][0, 0]), float(a.block_scales[0, 0]))
    # NVFP4's per-tensor scales are not block scales: they multiply the result (FP32 alpha)
    e2m1 = lowprec.FORMATS["e2m1"]
    ta = ScaledTensor(np.ones((2, 32), np.float32), e2m1, block_scales=np.full((2, 2), 1.5,
                      np.float32), block_size=16, axis=1, tensor_scale=np.float32(2.0**-20 / 3))
    tb = ScaledTensor(np.ones((32, 3), np.float32), e2m1, block_scales=np.full((2, 3), 0.75,
                      np.float32), block_size=16, axis=0, tensor_scale=np.float32(0.1))
    out = _scaled_matmul(Native(), ta, tb, None, None, None, "nearest", None, None)
    np.testing.assert_array_equal(seen["sa"], np.full((2, 2), 1.5))
    np.testing.assert_array_equal(seen["sb"], np.full((2, 3), 0.75))
    alpha = Fraction(round_exact(Fraction(float(np.float32(2.0**-20 / 3)))
                                 * Fraction(float(np.float32(0.1))), FP32))
    np.testing.assert_array_equal(out, np.float32(round_exact(3 * alpha, FP32)))


@pytest.mark.parametrize("fmt, published", [("e4m3", 28.8), ("e5m2", 22.9)])
def test_blockwise_gemm_sqnr_on_gaussian_inputs_matches_the_published_figure(fmt, published):
    """1x128 activations and 128x128 weights (DeepSeek-V3's blocks), FP32 scales: the GEMM's
    SQNR on standard normal inputs, about 28.8 dB in E4M3 and 22.9 dB in E5M2 (pytorch/ao PR
    #1763, blockwise FP8 GEMM benchmark)."""
    import dataclasses

    from lowprec.scaling.recipes import FP8_BLOCKWISE
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 512)).astype(np.float32)
    w = rng.standard_normal((512, 256)).astype(np.float32)
    recipe = dataclasses.replace(FP8_BLOCKWISE, fp8_format=fmt)
    a, _ = recipe.new_state("forward", point="input").cast(x, axis=1)
    b, _ = recipe.new_state("forward", point="weight").cast(w, axis=0)
    assert a.block_size == 128 and b.block_size == (128, 128)
    ref = x.astype(np.float64) @ w.astype(np.float64)
    out = lowprec.matmul(a, b, accumulate="blas")
    sqnr = 10 * np.log10(np.sum(ref**2) / np.sum((ref - out) ** 2))
    assert abs(sqnr - published) < 0.5, sqnr


def test_native_block_scaled_mma_reads_each_operands_element_format():
    """An E4M3 operand times an E5M2 one on B200_MXF8F6F4 (kind::mxf8f6f4 takes each operand's
    format on its own): small integers times E8M0 scales, so every sum is exact and the result
    is the float64 product of the decoded values. (b's elements, up to 3072, are not E4M3
    numbers: read as E4M3 they would be refused.)"""
    from lowprec.formats import E5M2
    rng = np.random.default_rng(3)
    ea = rng.integers(-3, 4, (2, 64)).astype(np.float32)
    eb = rng.integers(-3, 4, (64, 3)).astype(np.float32) * 1024  # E5M2 values beyond E4M3's
    sa = np.exp2(rng.integers(-2, 3, (2, 2))).astype(np.float32)
    sb = np.exp2(rng.integers(-2, 3, (2, 3))).astype(np.float32)
    a = ScaledTensor(ea, E4M3, block_scales=sa, block_size=32, axis=1, scale_format="e8m0")
    b = ScaledTensor(eb, E5M2, block_scales=sb, block_size=32, axis=0, scale_format="e8m0")
    out = lowprec.matmul(a, b, accumulate=tensorcore.B200_MXF8F6F4)
    np.testing.assert_array_equal(out, a.exact_values() @ b.exact_values())
