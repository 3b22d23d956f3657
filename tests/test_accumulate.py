"""The accumulator protocol of lowprec.accumulate: each kind against an exact rational reference
(fractions.Fraction, rounded by tests/exact.py), NumPy for the BLAS order, as_accumulator's
coercion and errors, GEMMs of scaled tensors, and the deprecated arith aliases."""
from __future__ import annotations

import copy
import pickle
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

import lowprec
from lowprec import BF16, E4M3, E5M2, FP16, FP32, arith, tensorcore
from lowprec.accumulate import BLAS, FormatAccumulation, as_accumulator
from lowprec.scaling import ScaledTensor

from lowprec.reference import round_exact


def _fp16_operands(rng, m, k, n, spread=10):
    """FP16 values over a wide exponent range (so the order of the sums matters), as float32."""
    a = rng.standard_normal((m, k)) * 2.0 ** rng.integers(-spread, spread, (m, k))
    b = rng.standard_normal((k, n)) * 2.0 ** rng.integers(-spread, spread, (k, n))
    return a.astype(np.float16).astype(np.float32), b.astype(np.float16).astype(np.float32)


def _ordered_sum(terms, fmt, order="sequential", block=None):
    """The exact terms (Fractions) added as the accumulator says, every addition rounded to fmt:
    sequential ((0 + t0) + t1) + ...; pairwise adjacent pairs level by level, an odd last one
    passing up; with a block, each block sequentially, then the block sums in `order`."""
    def add(x, y):
        return Fraction(round_exact(x + y, fmt))

    def combine(parts, how):
        if how == "sequential" or len(parts) <= 1:
            acc = Fraction(0)
            for t in parts:
                acc = add(acc, t)
            return acc
        while len(parts) > 1:
            parts = [add(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)] + \
                    (parts[-1:] if len(parts) % 2 else [])
        return parts[0]
    if block is None:
        return combine(list(terms), order)
    blocks = [combine(terms[s:s + block], "sequential") for s in range(0, len(terms), block)]
    return combine(blocks, order)


def _exact_products(a, b):
    """products[i][j]: the list of exact a[i, k] * b[k, j]."""
    return [[[Fraction(float(a[i, k])) * Fraction(float(b[k, j])) for k in range(a.shape[1])]
             for j in range(b.shape[1])] for i in range(a.shape[0])]


# --- each kind against the exact reference --------------------------------------------------------
@pytest.mark.parametrize("fmt", [FP32, BF16, FP16], ids=lambda f: f.name)
@pytest.mark.parametrize("order, block", [("sequential", None), ("pairwise", None),
                                          ("sequential", 4), ("pairwise", 3)])
def test_format_accumulation_rounds_every_addition(fmt, order, block):
    rng = np.random.default_rng(1)
    a, b = _fp16_operands(rng, 3, 11, 2, spread=6)
    acc = FormatAccumulation(fmt, order, block)
    got = acc.matmul(a, b)
    products = _exact_products(a, b)
    want = [[round_exact(_ordered_sum(p, fmt, order, block), fmt) for p in row] for row in products]
    np.testing.assert_array_equal(got, np.array(want, np.float32))
    # the module function, with the format and order given apart, is the same accumulator
    same = lowprec.matmul(a, b, accumulate=fmt, order=order, block=block)
    np.testing.assert_array_equal(same, got)
    # dot: one row against one column
    np.testing.assert_array_equal(acc.dot(a[0], b[:, 1]), got[0, 1])


def test_format_accumulation_sum_and_output():
    x = np.float32([2.0**24, 1.0, 1.0, 1.0, 1.0])  # 2**24 + 1 is no FP32 number: each 1 is lost
    assert FormatAccumulation("fp32").sum(x) == np.float32(2.0**24)
    pairwise = FormatAccumulation("fp32", "pairwise")
    assert pairwise.sum(x) == np.float32(2.0**24 + 4)  # 1+1, 2+2 exact
    # output rounds the accumulator's value once more (2**24 + 4 to BF16: 2**24)
    assert lowprec.sum(x, "bf16", accumulate=FormatAccumulation("fp32", "pairwise")) == 2.0**24


def test_tensor_core_model_is_an_accumulator_matching_its_scalar_reference():
    """One block of H100_FP16 (K = 16 = the block): each element is one block FMA, which the
    scalar reference computes in Python integers; the protocol's dot, matmul and sum agree."""
    rng = np.random.default_rng(2)
    a, b = _fp16_operands(rng, 4, 16, 3)
    model = tensorcore.H100_FP16
    want = np.array([[tensorcore.block_fma_scalar(a[i].tolist(), b[:, j].tolist(), 0.0, model)
                      for j in range(3)] for i in range(4)], np.float32)
    np.testing.assert_array_equal(model.matmul(a, b), want)
    np.testing.assert_array_equal(as_accumulator("H100_FP16").matmul(a, b), want)
    np.testing.assert_array_equal(model.dot(a, b.T[:, None, :]), want.T)
    x = a[0]
    np.testing.assert_array_equal(model.sum(x),
                                  tensorcore.block_fma_scalar(x.tolist(), [1.0] * 16, 0.0, model))


def test_blas_is_numpys_order_and_exact_when_the_sums_are():
    rng = np.random.default_rng(3)
    a, b = _fp16_operands(rng, 5, 40, 4)
    np.testing.assert_array_equal(BLAS.matmul(a, b), np.matmul(a, b))  # the definition
    assert BLAS.matmul(a, b).dtype == np.float32
    # small integers: every partial sum is exact in FP32, so any order gives the exact product
    ai = rng.integers(-8, 8, (5, 40)).astype(np.float32)
    bi = rng.integers(-8, 8, (40, 4)).astype(np.float32)
    exact = [[sum(p) for p in row] for row in _exact_products(ai, bi)]
    np.testing.assert_array_equal(lowprec.matmul(ai, bi, accumulate="blas"),
                                  np.array(exact, np.float32))
    np.testing.assert_array_equal(lowprec.dot(ai[0], bi[:, 0], accumulate=BLAS),
                                  np.float32(exact[0][0]))
    np.testing.assert_array_equal(lowprec.sum(ai, "fp32", axis=1, accumulate=BLAS), ai.sum(axis=1))
    # output rounds NumPy's result once
    np.testing.assert_array_equal(BLAS.matmul(a, b, output="bf16"),
                                  np.matmul(a, b).astype(ml_dtypes.bfloat16).astype(np.float32))


# --- coercion -------------------------------------------------------------------------------------
def test_as_accumulator_coerces_names_and_passes_accumulators_through():
    fp32 = FormatAccumulation(FP32)
    assert as_accumulator("blas") is BLAS and as_accumulator(BLAS) is BLAS
    assert as_accumulator("fp32") == fp32 and as_accumulator(FP32) == fp32
    assert as_accumulator(np.float16) == FormatAccumulation(FP16)
    pairwise = FormatAccumulation(BF16, "pairwise", 8)
    assert as_accumulator("bfloat16", order="pairwise", block=8) == pairwise
    assert as_accumulator("H100_FP8") is tensorcore.H100_FP8
    assert as_accumulator(fp32) is fp32
    assert as_accumulator(tensorcore.A100_FP16) is tensorcore.A100_FP16
    assert FormatAccumulation(BF16, "pairwise", 8).name == "bf16/pairwise/block=8"
    # copies and pickles of the singleton are the singleton (policies are compared and copied)
    assert copy.deepcopy(BLAS) is BLAS and pickle.loads(pickle.dumps(BLAS)) is BLAS


def test_as_accumulator_errors_name_what_is_valid():
    with pytest.raises(ValueError, match=r"unknown accumulation 'fp99'.*'blas'.*'fp32'.*H100_FP8"):
        as_accumulator("fp99")
    with pytest.raises(TypeError, match="an accumulation takes 'blas', a format"):
        as_accumulator(3.5)
    with pytest.raises(ValueError, match="tensor-core model fixes its own order"):
        as_accumulator("H100_FP16", order="pairwise")
    with pytest.raises(ValueError, match="'blas' fixes its own order and block"):
        as_accumulator(BLAS, block=4)
    with pytest.raises(ValueError, match="unknown order 'random'; valid orders: sequential, pa"):
        FormatAccumulation("fp32", "random")
    with pytest.raises(ValueError, match="block must be None or a positive int"):
        FormatAccumulation("fp32", block=0)
    with pytest.raises(ValueError, match="outside what lowprec.arith supports"):
        FormatAccumulation(lowprec.FloatFormat("wide", 11, 52))


# --- GEMMs of scaled tensors ----------------------------------------------------------------------
def _e4m3(rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    return x.astype(ml_dtypes.float8_e4m3fn).astype(np.float32)


def test_per_tensor_scaled_gemm_accumulates_elements_then_scales_in_fp32():
    """cuBLASLt's FP8 GEMM: D = fl32(fl32(sa * sb) * acc(A @ B)), the accumulator as it says."""
    rng = np.random.default_rng(4)
    ea, eb = _e4m3(rng, (3, 32)), _e4m3(rng, (32, 2))
    sa, sb = np.float32(2.0**-7 * 1.375), np.float32(3.0e-3)
    a, b = ScaledTensor(ea, E4M3, sa), ScaledTensor(eb, E4M3, sb)
    decode = Fraction(round_exact(Fraction(float(sa)) * Fraction(float(sb)), FP32))
    for acc in (FormatAccumulation(FP32), tensorcore.H100_FP8):
        if acc is tensorcore.H100_FP8:  # one block of 32: one block FMA per element
            sums = [[Fraction(tensorcore.block_fma_scalar(ea[i].tolist(), eb[:, j].tolist(), 0.0,
                                                          acc)) for j in range(2)]
                    for i in range(3)]
        else:
            sums = [[_ordered_sum(p, FP32) for p in row] for row in _exact_products(ea, eb)]
        want = np.array([[round_exact(s * decode, FP32) for s in row] for row in sums], np.float32)
        np.testing.assert_array_equal(lowprec.matmul(a, b, accumulate=acc), want)
    # BLAS multiplies the dequantized values, as a model holding them does
    np.testing.assert_array_equal(BLAS.matmul(a, b), np.matmul(a.dequantize(), b.dequantize()))


def test_block_scaled_gemm_sums_exact_products_of_elements_and_block_scales():
    rng = np.random.default_rng(5)
    ea, eb = _e4m3(rng, (2, 64)), _e4m3(rng, (64, 3))
    xa = np.exp2(rng.integers(-20, 20, (2, 2))).astype(np.float32)  # blocks of 32 along axis 1
    xb = np.exp2(rng.integers(-20, 20, (2, 3))).astype(np.float32)  # along axis 0
    a = ScaledTensor(ea, E4M3, block_scales=xa, block_size=32, axis=1)
    b = ScaledTensor(eb, E4M3, block_scales=xb, block_size=32, axis=0)
    terms = [[[Fraction(float(ea[i, k])) * Fraction(float(xa[i, k // 32]))
               * Fraction(float(eb[k, j])) * Fraction(float(xb[k // 32, j])) for k in range(64)]
              for j in range(3)] for i in range(2)]
    for acc, fmt, order in ((FormatAccumulation(FP32), FP32, "sequential"),
                            (FormatAccumulation(BF16, "pairwise"), BF16, "pairwise")):
        want = np.array([[round_exact(_ordered_sum(t, fmt, order), fmt) for t in row]
                         for row in terms], np.float32)
        np.testing.assert_array_equal(acc.matmul(a, b), want)
    np.testing.assert_array_equal(BLAS.matmul(a, b), np.matmul(a.dequantize(), b.dequantize()))
    # H100_FP8 has no block-scaled MMA: DeepSeek-V3's per-K-block partials need K-blocks that
    # are whole block FMAs (tests/test_block_recipes.py checks the values)
    a16 = ScaledTensor(ea, E4M3, block_scales=np.repeat(xa, 2, axis=1), block_size=16, axis=1)
    b16 = ScaledTensor(eb, E4M3, block_scales=np.repeat(xb, 2, axis=0), block_size=16, axis=0)
    with pytest.raises(ValueError, match="no block-scaled MMA.*K-block of 16 is not a multiple"):
        tensorcore.H100_FP8.matmul(a16, b16)
    with pytest.raises(ValueError, match="inputs= rounds plain operands"):
        lowprec.matmul(a, b, inputs="e4m3")


def test_scaled_tensor_checks_its_fields_and_transposes():
    e = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="exactly one"):
        ScaledTensor(e, E4M3)
    with pytest.raises(ValueError, match="exactly one"):
        ScaledTensor(e, E4M3, 1.0, block_scales=np.ones((2, 1)), block_size=4, axis=1)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        ScaledTensor(e, E4M3, block_scales=np.ones((2, 1)), block_size=4, axis=2)
    with pytest.raises(TypeError, match="fmt must be a FloatFormat"):
        ScaledTensor(e, "e4m3", 1.0)
    t = ScaledTensor(np.arange(8, dtype=np.float32).reshape(2, 4), E5M2,
                     block_scales=np.float32([[1.0, 2.0], [4.0, 8.0]]), block_size=2, axis=1)
    np.testing.assert_array_equal(t.T.dequantize(), t.dequantize().T)
    np.testing.assert_array_equal(t.dequantize(), [[0, 1, 4, 6], [16, 20, 48, 56]])


# --- the deprecated aliases -----------------------------------------------------------------------
@pytest.mark.parametrize("name, args", [("sum", (np.ones(5), "bf16")),
                                        ("dot", (np.ones(5), np.ones(5))),
                                        ("matmul", (np.ones((2, 5)), np.ones((5, 1))))])
def test_arith_reductions_warn_and_give_the_new_functions_results(name, args):
    moved = rf"lowprec\.arith\.{name} moved: use lowprec\.{name}"
    with pytest.warns(DeprecationWarning, match=moved):
        old = getattr(arith, name)(*args)
    np.testing.assert_array_equal(old, getattr(lowprec, name)(*args))
