"""The Caster directly: identity skips, plain casts against NumPy/ml_dtypes, scaled casts as
ScaledTensor values against Transformer Engine's recipe written here with ml_dtypes and exact
rationals, GEMMs of scaled operands against exact products, the recipe states' statistics,
and bad input."""
from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from lowprec import E4M3, E5M2, FP32, tensorcore
from lowprec.nn import CAST_POINTS, POLICIES, Cast, Caster
from lowprec.nn.recipe_states import CastStats
from lowprec.scaling import ScaledTensor

from lowprec.reference import round_exact

ML = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}
MAXES = {"e4m3": 448.0, "e5m2": 57344.0}


def _bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


def _te_current_cast(x, fmt):
    """Float8CurrentScaling: scale = fl32(fp8_max / amax), elements = satfinite(fl32(x * scale))
    (clamp, then ml_dtypes' nearest-even cast), scale_inv = fl32(1 / scale)."""
    amax = Fraction(float(np.abs(x).max()))
    scale = np.float32(round_exact(Fraction(MAXES[fmt]) / amax, FP32))
    elements = np.clip(x * scale, -MAXES[fmt], MAXES[fmt]).astype(ML[fmt]).astype(np.float32)
    scale_inv = np.float32(round_exact(1 / Fraction(float(scale)), FP32))
    return elements, scale_inv


# --- plain casts ----------------------------------------------------------------------------------
def test_plain_casts_round_like_numpy_and_skip_what_is_already_held():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((8, 5)) * 1e3).astype(np.float32)
    cast = Caster(POLICIES["fp16_mixed"])
    cast.begin_step()
    y = cast(x, "input", 0)
    assert np.array_equal(_bits(y), _bits(x.astype(np.float16).astype(np.float32)))
    assert cast(y, "input", 1, already=Cast("fp16")) is y  # FP16 values at an FP16 point: unchanged
    assert cast(x, "master_weights", 0) is x  # FP32 on float32 arrays rounds nothing
    assert cast(x, "weight_grad", 0) is not x  # FP16 there too
    assert Caster(POLICIES["fp32"])(x, "input", 0) is x
    # apply: a given Cast, same argument order (x, spec, point, layer), not traced
    traced = len(cast.trace)
    z = cast.apply(x, Cast("bf16", "toward_zero"), "weight", 0)
    truncated = (x.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)  # FP32's top half
    assert np.array_equal(_bits(z), _bits(truncated)) and len(cast.trace) == traced


# --- scaled casts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("point, fmt", [("input", "e4m3"), ("weight", "e4m3"),
                                        ("grad_output", "e5m2")])
def test_scaled_cast_returns_a_scaled_tensor_of_the_te_recipe(point, fmt):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((16, 24)) * np.exp(rng.uniform(-9, 3, (16, 1)))).astype(np.float32)
    cast = Caster(POLICIES["fp8_hybrid"].replace(fp8_recipe="current"))
    cast.begin_step()
    y = cast(x, point, 2)
    elements, scale_inv = _te_current_cast(x, fmt)
    assert isinstance(y, ScaledTensor) and y.fmt.name == fmt and not y.block_scaled
    assert np.array_equal(_bits(y.elements), _bits(elements)) and y.scale_inv == scale_inv
    assert np.array_equal(_bits(y.dequantize()), _bits(elements * scale_inv))  # fl32(e * scale_inv)
    assert np.array_equal(_bits(cast.trace[-1][2]), _bits(elements * scale_inv))  # traced as values
    assert cast.second_use(y, point, 2) is y  # per-tensor: one copy serves both GEMMs
    scale = round_exact(Fraction(MAXES[fmt]) / Fraction(float(np.abs(x).max())), FP32)
    stats = cast.recipes.step_stats[2, point]  # keyed (layer, point), as Trainer.fp8_states
    assert stats == CastStats(amax=float(np.abs(x).max()), scale=scale, clipped=0,
                              flushed=int(np.count_nonzero((elements == 0) & (x != 0))),
                              count=x.size)
    arrays = cast.fp8_step_stats(3)
    p = CAST_POINTS.index(point)
    assert arrays["amax"][2, p] == stats.amax and np.isnan(arrays["amax"][0, p])
    assert arrays["flushed"][2, p] == stats.flushed / x.size


def test_a_scaled_point_that_is_no_gemm_operand_holds_dequantized_values():
    policy = POLICIES["fp8_hybrid"].replace(activation=Cast("e4m3", overflow="saturate"),
                                            fp8_recipe="current")
    cast = Caster(policy)
    cast.begin_step()
    x = np.float32([[0.5, -3.0, 1e-3]])
    elements, scale_inv = _te_current_cast(x, "e4m3")
    y = cast(x, "activation", 0)
    assert isinstance(y, np.ndarray) and np.array_equal(_bits(y), _bits(elements * scale_inv))


def test_frozen_copy_casts_with_the_scales_but_never_updates_them():
    cast = Caster(POLICIES["fp8_hybrid"])
    x = np.float32([[2.0, -0.5]])
    for _ in range(2):
        cast.begin_step()
        cast(x, "input", 0)
    state = cast.fp8_states[0, "input"]
    scale = state.scale
    frozen = cast.frozen_copy()
    frozen.begin_step()
    y = frozen(x * 100, "input", 0)
    assert frozen.fp8_states[0, "input"].scale == scale and state.scale == scale
    assert y.scale_inv == np.float32(1) / scale  # 448 / 2: scale_inv = fl32(1 / scale)


# --- GEMMs ----------------------------------------------------------------------------------------
def _sequential_fp32(terms):
    acc = Fraction(0)
    for t in terms:
        acc = Fraction(round_exact(acc + t, FP32))
    return acc


@pytest.mark.parametrize("accumulate", ["fp32", "H100_FP8"])
def test_gemm_of_scaled_tensors_is_the_exact_product_rounded_as_the_accumulator_says(accumulate):
    """fprop (E4M3 x E4M3) and dgrad (E5M2 x E4M3.T), K = 32 = one block of H100_FP8: the elements'
    products summed by the accumulator (sequential FP32 sums, or one block FMA reading the two
    operands' formats), then D = fl32(fl32(sa * sb) * sum)."""
    rng = np.random.default_rng(2)
    policy = POLICIES["fp8_hybrid"].replace(fp8_recipe="current", accumulate=accumulate)
    cast = Caster(policy)
    cast.begin_step()
    x = (rng.standard_normal((3, 32)) * 1e-2).astype(np.float32)
    W = (rng.standard_normal((32, 32)) * 1e-1).astype(np.float32)
    g = (rng.standard_normal((3, 32)) * 1e-6).astype(np.float32)
    x8, W8, g8 = cast(x, "input", 0), cast(W, "weight", 0), cast(g, "grad_output", 0)
    for a, b, gemm in ((x8, W8, "fprop"), (g8, W8.T, "dgrad")):
        out = cast.matmul(a, b, gemm)
        ea, eb = a.elements, b.elements
        decode = Fraction(round_exact(Fraction(float(a.scale_inv)) * Fraction(float(b.scale_inv)),
                                      FP32))
        if accumulate == "fp32":
            sums = [[_sequential_fp32([Fraction(float(ea[i, k])) * Fraction(float(eb[k, j]))
                                       for k in range(32)]) for j in range(32)] for i in range(3)]
        else:
            model = tensorcore.H100_FP8.reading(a.fmt, b.fmt)
            assert (model.inputs, model.b_format) == (a.fmt, b.fmt)
            sums = [[Fraction(tensorcore.block_fma_scalar(ea[i].tolist(), eb[:, j].tolist(), 0.0,
                                                          model)) for j in range(32)]
                    for i in range(3)]
        want = np.array([[round_exact(s * decode, FP32) for s in row] for row in sums], np.float32)
        assert np.array_equal(_bits(out), _bits(want)), gemm


def test_plain_operands_take_their_formats_from_the_gemms_cast_points():
    """fp8_hybrid_unscaled + H100_FP8: the dgrad GEMM's operands are E5M2 and E4M3 values, which
    the Caster tells the tensor-core model by the GEMM's name (TE: E5M2 x E4M3 is an FP8 MMA)."""
    rng = np.random.default_rng(3)
    cast = Caster(POLICIES["fp8_hybrid_unscaled"].replace(accumulate="H100_FP8"))
    cast.begin_step()
    g8 = cast((rng.standard_normal((2, 32)) * 1e4).astype(np.float32), "grad_output", 0)
    W8 = cast(rng.standard_normal((32, 4)).astype(np.float32), "weight", 0)
    model = tensorcore.H100_FP8.reading(E5M2, E4M3)
    want = np.array([[tensorcore.block_fma_scalar(g8[i].tolist(), W8[:, j].tolist(), 0.0, model)
                      for j in range(4)] for i in range(2)], np.float32)
    assert np.array_equal(_bits(cast.matmul(g8, W8, "dgrad")), _bits(want))
    with pytest.raises(ValueError, match="not e4m3 numbers"):  # unnamed: read as E4M3 x E4M3
        cast.matmul(g8, W8)


# --- bad input ------------------------------------------------------------------------------------
def test_bad_input_gets_a_clear_error():
    cast = Caster(POLICIES["fp16_mixed"])
    cast.begin_step()
    x = np.ones((2, 2), np.float32)
    with pytest.raises(ValueError, match="unknown cast point 'inputs'; valid: weight, input"):
        cast(x, "inputs", 0)
    with pytest.raises(ValueError, match="unknown GEMM 'forward'; valid: None, 'fprop', 'dgrad'"):
        cast.matmul(x, x, "forward")
    mx = Caster(POLICIES["fp8_hybrid"].replace(fp8_recipe="mx", accumulate="fp32"))
    mx.begin_step()
    with pytest.raises(ValueError, match="block-scaled and a per-tensor"):
        mx.matmul(mx(np.ones((2, 32), np.float32), "input", 0),
                  ScaledTensor(np.ones((32, 1), np.float32), E4M3, 1.0))
