"""FP8 scaling recipes inside the training loop: the Caster's scaled casts against ml_dtypes,
MX blocks along each GEMM's reduction axis, the History's per-tensor FP8 record, checkpoints,
and the demonstration that FP8 needs its scales.

References: ml_dtypes' E4M3/E5M2 casts after clamping to +-max (CUDA's __NV_SATFINITE rule)
and exact rational rounding (lowprec.reference) for the scales; an MX block quantizer written
here from Transformer Engine's rule (scale 2**ceil(log2(amax / fp8_max))).
"""
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from lowprec.reference import round_exact
from lowprec import FP32, data
from lowprec.data import Dataset
from lowprec.nn import (CAST_POINTS, POLICIES, Adam, Caster, MLPConfig, PrecisionPolicy,
                        TrainConfig, Trainer, load_checkpoint, train)
from lowprec.nn.train import batch_indices, run_fingerprint
from lowprec.observe import History, NotRecordedError, Observer
from lowprec.scaling import CurrentScaling, DelayedScaling, MXBlockScaling, ScaledTensor

ML = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}
MAXES = {"e4m3": 448.0, "e5m2": 57344.0}
TINY = {"e4m3": 2.0**-6, "e5m2": 2.0**-14}
SMALL = MLPConfig(sizes=(2, 16, 16, 3))


@pytest.fixture(scope="module")
def spirals():
    return data.spirals(np.random.default_rng(0), points_per_class=60)


def satfinite_ref(scaled32, fmt):
    """The FP8 payload: ml_dtypes' nearest-even cast after clamping to +-max."""
    clamped = np.clip(scaled32, -MAXES[fmt], MAXES[fmt])
    return clamped.astype(ML[fmt]).astype(np.float32)


def _bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


# --- one tensor through the Caster, step after step --------------------------------------------
@pytest.mark.parametrize("point, fmt", [("input", "e4m3"), ("grad_output", "e5m2")])
def test_delayed_scaling_cast_and_observation_match_ml_dtypes(point, fmt):
    """Per step: the tensor is cast with the scale of the amaxes seen before (1 at first),
    scale = float32(fp8_max / amax); the observer counts the FP8 payload's subnormals."""
    rng = np.random.default_rng(3)
    tensors = [(rng.standard_normal((32, 40)) * 10.0 ** k).astype(np.float32) for k in (-3, -5, -2)]
    tensors[2][0, :3] = [1e9, -1e9, 0.0]  # the last step's scale is from smaller amaxes: clips
    cast, observer = Caster(POLICIES["fp8_hybrid"]), Observer(1, CAST_POINTS)
    scale, amaxes = np.float32(1.0), []
    for x in tensors:
        cast.begin_step(observer)
        y = cast(x, point, 0)  # a GEMM operand: a ScaledTensor, elements and decode scale
        scale_inv = np.float32(round_exact(1 / Fraction(float(scale)), FP32))
        payload = satfinite_ref(x * scale, fmt)
        assert isinstance(y, ScaledTensor) and y.fmt.name == fmt and y.scale_inv == scale_inv
        assert np.array_equal(_bits(y.elements), _bits(payload))
        assert np.array_equal(_bits(y.dequantize()), _bits(payload * scale_inv))
        stats = {k: int(v[0, CAST_POINTS.index(point)]) for k, v in observer.cast_stats.items()}
        assert stats["zeros"] == np.count_nonzero(payload == 0)
        assert stats["underflow"] == np.count_nonzero((payload == 0) & (x != 0))
        subnormal = (payload != 0) & (np.abs(payload) < TINY[fmt])
        assert stats["subnormal"] == np.count_nonzero(subnormal)
        assert stats["overflow"] == np.count_nonzero(np.abs(x * scale) > MAXES[fmt])
        record = cast.fp8_step_stats(1)
        p = CAST_POINTS.index(point)
        assert record["scale"][0, p] == float(scale) and record["amax"][0, p] == np.abs(x).max()
        assert record["flushed"][0, p] == stats["underflow"] / x.size
        cast.end_step()
        amaxes.append(np.abs(x).max())  # "max" over the history (1024 steps) of the amaxes
        scale = np.float32(round_exact(Fraction(MAXES[fmt]) / Fraction(float(max(amaxes))), FP32))
    assert stats["overflow"] >= 2  # the last step clips: its scale came from smaller amaxes


def _te_mx_ref(x, axis, fmt="e4m3"):
    """Transformer Engine's MXFP8 cast, written from its rule: per block of 32 along ``axis``,
    X = 2**ceil(log2(float32(amax * float32(1 / fp8_max)))), elements satfinite(x / X) * X."""
    moved = np.moveaxis(x, axis, -1)
    blocks = moved.reshape(moved.shape[:-1] + (-1, 32))
    amax = np.abs(blocks).max(axis=-1, keepdims=True)
    v = (amax * np.float32(1 / MAXES[fmt])).astype(np.float64)
    mantissa, exponent = np.frexp(v)
    X = np.exp2(np.where(mantissa == 0.5, exponent - 1, exponent)).astype(np.float32)
    out = satfinite_ref(blocks / X, fmt) * X
    return np.moveaxis(out.reshape(moved.shape), -1, axis)


def test_mx_quantizes_each_gemm_operand_along_that_gemms_reduction_axis():
    """x @ W sums over x's axis 1 and W's axis 0; the backward GEMMs use W along axis 1,
    x and dL/dz along the batch (axis 0): one quantization per use, as TE's row-wise and
    column-wise copies."""
    rng = np.random.default_rng(4)
    policy = POLICIES["fp8_hybrid"].replace(name="mx", fp8_recipe="mx")
    x = (rng.standard_normal((64, 96)) * np.exp(rng.uniform(-6, 6, (64, 1)))).astype(np.float32)
    W = (rng.standard_normal((96, 64)) * np.exp(rng.uniform(-6, 6, (1, 64)))).astype(np.float32)
    cast = Caster(policy)
    cast.begin_step()
    x_fwd, W_fwd = cast(x, "input", 1), cast(W, "weight", 1)
    assert (x_fwd.axis, W_fwd.axis) == (1, 0)
    assert np.array_equal(_bits(x_fwd.dequantize()), _bits(_te_mx_ref(x, axis=1)))
    assert np.array_equal(_bits(W_fwd.dequantize()), _bits(_te_mx_ref(W, axis=0)))
    assert np.array_equal(_bits(cast.second_use(x_fwd, "input", 1).dequantize()),
                          _bits(_te_mx_ref(x, axis=0)))
    assert np.array_equal(_bits(cast.second_use(W_fwd, "weight", 1).dequantize()),
                          _bits(_te_mx_ref(W, axis=1)))
    g = (rng.standard_normal((64, 64)) * 1e-6).astype(np.float32)
    g_dgrad = cast(g, "grad_output", 1)
    assert np.array_equal(_bits(g_dgrad.dequantize()), _bits(_te_mx_ref(g, axis=1, fmt="e5m2")))
    assert np.array_equal(_bits(cast.second_use(g_dgrad, "grad_output", 1).dequantize()),
                          _bits(_te_mx_ref(g, axis=0, fmt="e5m2")))
    # per-tensor recipes: the second use is the same array
    plain = Caster(POLICIES["fp8_hybrid"])
    plain.begin_step()
    y = plain(x, "input", 0)
    assert plain.second_use(y, "input", 0) is y


def test_mx_training_steps_run_and_record_no_per_tensor_scale(spirals):
    policy = POLICIES["fp8_hybrid"].replace(name="mx", fp8_recipe="mx")
    h = train(policy, spirals, SMALL,
              TrainConfig(steps=6, batch_size=64, eval_every=3, observe_every=2))
    assert np.all(np.isfinite(h.loss)) and len(h.fp8_step) == 6
    p = CAST_POINTS.index("input")
    assert np.all(np.isnan(h.fp8_scale[:, :, p])) and np.all(h.fp8_amax[:, :, p] > 0)


# --- the policy -------------------------------------------------------------------------------
def test_policy_names_the_recipe_and_checks_it_fits_the_cast_points():
    hybrid = POLICIES["fp8_hybrid"]
    assert (hybrid.fp8_recipe == DelayedScaling()
            and hybrid.fp8_points == ("weight", "input", "grad_output"))
    assert POLICIES["fp8_hybrid_unscaled"].fp8_recipe is None
    assert hybrid.replace(fp8_recipe="current").fp8_recipe == CurrentScaling()
    assert hybrid.replace(fp8_recipe="mx").fp8_recipe == MXBlockScaling(fp8_format="hybrid")
    assert hybrid.bias_cast == hybrid.output  # FP8 holds GEMM operands; the bias stays BF16
    assert POLICIES["fp16_mixed"].bias_cast == POLICIES["fp16_mixed"].weight
    assert hybrid.fingerprint()["fp8_recipe"]["type"] == "DelayedScaling"
    assert "fp8_recipe" in hybrid.describe()
    with pytest.raises(ValueError, match="unknown fp8_recipe"):
        hybrid.replace(fp8_recipe="tensorwise")
    with pytest.raises(TypeError, match="fp8_recipe"):
        hybrid.replace(fp8_recipe=3)
    with pytest.raises(ValueError, match="casts backward tensors to e4m3"):
        hybrid.replace(fp8_recipe=MXBlockScaling())  # TE's MXFP8 default: E4M3 for gradients too
    with pytest.raises(ValueError, match="needs at least one FP8 cast point"):
        POLICIES["bf16_mixed"].replace(fp8_recipe="delayed")
    with pytest.raises(ValueError, match="saturates"):
        hybrid.replace(input=("e4m3", "stochastic"))
    e4m3_only = PrecisionPolicy(input="e4m3", fp8_recipe=DelayedScaling(fp8_format="e4m3"))
    assert e4m3_only.fp8_points == ("input",)


# --- the training loop ---------------------------------------------------------------------------
def test_history_records_each_fp8_tensor_and_saves_it(spirals, tmp_path):
    config = TrainConfig(steps=5, batch_size=32, eval_every=0)
    h = train("fp8_hybrid", spirals, SMALL, config)
    assert h.fp8_amax.shape == (5, 3, len(CAST_POINTS))
    # layer 0's input is the batch itself: its amax is max |x|, and the step-2 scale is 448 / that
    x0 = spirals.x_train[batch_indices(len(spirals.x_train), 32, 0, 0)]
    assert h.fp8("amax", "input", 0)[0] == np.abs(x0).max()
    assert h.fp8("scale", "input", 0)[0] == 1.0  # TE's first step
    amax = Fraction(float(np.abs(x0).max()))
    assert h.fp8("scale", "input", 0)[1] == round_exact(Fraction(448) / amax, FP32)
    assert np.all(np.isnan(h.fp8_amax[:, :, CAST_POINTS.index("output")]))  # BF16: not an FP8 point
    h.save(tmp_path / "h.npz")
    back = History.load(tmp_path / "h.npz")
    for name in ("fp8_step", "fp8_amax", "fp8_scale", "fp8_clipped", "fp8_flushed"):
        assert np.array_equal(getattr(back, name), getattr(h, name), equal_nan=True)
    bf16 = train("bf16_mixed", spirals, SMALL, config)
    assert len(bf16.fp8_step) == 0  # no FP8 recipe: nothing recorded, and asking says so
    with pytest.raises(NotRecordedError, match="no FP8 scaling recipe"):
        bf16.fp8_amax


def test_evaluation_does_not_move_the_delayed_scales(spirals):
    """Evaluation casts with the current scales on copies of the states."""
    def run(eval_every):
        return train("fp8_hybrid", spirals, SMALL, TrainConfig(steps=12, batch_size=32,
                                                               eval_every=eval_every))
    quiet, evaluated = run(0), run(2)
    assert np.array_equal(quiet.loss, evaluated.loss)
    assert np.array_equal(quiet.fp8_scale, evaluated.fp8_scale, equal_nan=True)


@pytest.mark.parametrize("recipe", [DelayedScaling(amax_history_len=8), "current"])
def test_resume_mid_run_with_fp8_scaling_is_bit_identical(spirals, tmp_path, recipe):
    policy = POLICIES["fp8_hybrid"].replace(name="fp8", fp8_recipe=recipe)
    config = TrainConfig(steps=20, batch_size=32, eval_every=6, observe_every=4, checkpoint_every=5)
    whole = train(policy, spirals, SMALL, config)
    path = tmp_path / "run.npz"
    train(policy, spirals, SMALL, config, checkpoint=path, stop_after=11)
    resumed = train(policy, spirals, SMALL, config, resume=path)
    for name, value in whole.to_arrays().items():
        assert np.array_equal(value, resumed.to_arrays()[name], equal_nan=name != "meta"), name
    trainer = Trainer(policy, SMALL, seed=0)  # the checkpoint holds every tensor's state
    load_checkpoint(path, trainer, run_fingerprint(policy, SMALL, config, spirals))
    assert len(trainer.fp8_states) == 3 * 3  # weight, input, grad_output of 3 layers


# --- the demonstration ----------------------------------------------------------------------------
def test_fp8_hybrid_needs_its_scales():
    """Regression onto a teacher network's outputs times 0.1, the default deep model (four
    hidden layers of 64), Adam lr 1e-3, batch 256, 600 steps. Without a scale, E5M2 (smallest
    subnormal 2**-16) flushes the small gradients: the early layers receive no gradient at
    all, and the final training loss is about 4x BF16's. Delayed scaling keeps them and trains
    within 1.5x of BF16. Measured (seed 0): final training loss (mean of the last 60 steps)
    1.29x BF16's with delayed scaling, 4.0x without; layer-0 grad_output 99.9% zero without."""
    teacher = data.teacher(np.random.default_rng(0))
    small = Dataset("teacher x 0.1", teacher.x_train, teacher.y_train * np.float32(0.1),
                    teacher.x_test, teacher.y_test * np.float32(0.1), "regression")
    config = TrainConfig(optimizer=Adam(lr=1e-3), eval_every=0, observe_every=50)
    runs = {name: train(name, small, config=config)
            for name in ("bf16_mixed", "fp8_hybrid", "fp8_hybrid_unscaled")}
    final = {name: h.summary()["final_loss"] for name, h in runs.items()}
    for name, h in runs.items():
        zero = h.pooled("zeros", "grad_output")
        flushed = h.fp8("flushed", "grad_output", 0) if len(h.fp8_step) else None
        print(f"{name:<20} final loss {final[name]:.3g} "
              f"({final[name] / final['bf16_mixed']:.2f}x BF16),"
              f" test loss {h.test_loss[-1]:.3g}; grad_output zero per layer "
              + " ".join(f"{z:5.1%}" for z in zero)
              + (f"; layer-0 grad_output scale at the end "
                 f"{h.fp8('scale', 'grad_output', 0)[-1]:.3g}, "
                 f"flushed {flushed[-1]:.1%}" if flushed is not None else ""))
    assert final["fp8_hybrid"] <= 1.5 * final["bf16_mixed"]
    assert final["fp8_hybrid_unscaled"] >= 2.5 * final["bf16_mixed"]
    assert runs["fp8_hybrid_unscaled"].pooled("zeros", "grad_output")[0] >= 0.9
    assert runs["fp8_hybrid"].pooled("zeros", "grad_output")[0] <= 0.7  # ReLU's zeros: about half


# --- FP8 GEMMs under an accumulation model --------------------------------------------------------
# What the GPU computes for an FP8 GEMM (cuBLASLt, as Transformer Engine calls it in
# transformer_engine/common/gemm/cublaslt_gemm.cu, the operands' scale_inv as its A/B scales):
# the FP8 elements A = x * scale rounded, B likewise, go through the accumulator, then
# D = scale_inv_a * scale_inv_b * acc in FP32. The reference is the exact product
# P = sum_k a_k b_k of the dequantized operands the model holds, a_k = fl32(A_k sa),
# b_k = fl32(B_k sb) (sa, sb the decode scales, u = 2**-24). Per element:
#   * the accumulation of the elements errs by at most E(K) * sum_k mu_k, where
#     mu_k = max(|A_k|, tiny_A) * max(|B_k|, tiny_B) >= |A_k B_k|:
#     - FP32, sequential, to nearest, exact products: gamma_{K-1} sum |A_k B_k| <= K u sum mu_k
#       for K < 4096 (recursive summation: Higham, "Accuracy and Stability of Numerical
#       Algorithms", 2nd ed., 2002, sec. 4.2);
#     - block FMA of n products (MMA-Sim, arXiv:2511.10909): a block truncates c and each of its
#       n products to a multiple of 2**(emax - F) (error below 2**(emax - F) each, where
#       2**emax <= max(|c|, mu_k): an exponent field reads a subnormal at emin), then rounds the
#       sum toward zero to F = 13 fraction bits (below 2**-F |sum|); over ceil(K/n) blocks
#       E(K) = (K + 2 ceil(K/n)) 2**-F; promotion adds one FP32 rounding per N_C products;
#   * P differs from sa sb sum A_k B_k by two FP32 roundings per product (<= (2u + u**2) rel.);
#   * D = fl(fl(sa sb) acc) adds two more.
# So |D - P| <= (E(K) + 5u) sum_k (|a_k| + sa tiny_A)(|b_k| + sb tiny_B), times (1 + 2**-20) for
# the second-order terms (|A_k| sa <= |a_k| (1 + 2u) and the like).
def _block_fma_error(n, F, promote_every=None):
    def error(K):
        blocks = -(-K // n)
        promotions = -(-K // promote_every) * 2.0**-24 if promote_every else 0
        return (K + 2 * blocks) * 2.0**-F + promotions
    return error


FP8_GEMM_ERROR = {  # accumulate -> E(K) of the bound above
    "fp32": lambda K: K * 2.0**-24,
    "H100_FP8": _block_fma_error(32, 13),  # wgmma FP8: k32 fused, 13 fraction bits (MMA-Sim)
    "H100_FP8_PROMOTED": _block_fma_error(32, 13, promote_every=128),  # DeepSeek-V3 sec. 3.3.2
}


def _exact(m):
    return np.vectorize(lambda v: Fraction(float(v)), otypes=[object])(np.asarray(m))


def _assert_fp8_gemm_bound(a, b, out, decode_a, decode_b, tiny_a, tiny_b, error):
    """|out - a @ b| (exact) within the bound above, for every element."""
    exact = _exact(a) @ _exact(b)  # object arrays: exact rational sums of exact products
    mu = ((np.abs(a.astype(np.float64)) + decode_a * tiny_a)
          @ (np.abs(b.astype(np.float64)) + decode_b * tiny_b))
    bound = (error(a.shape[1]) + 5 * 2.0**-24) * (1 + 2.0**-20) * mu
    gap = np.abs(_exact(out) - exact).astype(np.float64)  # rounded once, far below the slack
    assert np.all(gap <= bound), (float((gap / np.where(bound > 0, bound, 1)).max()),
                                  a.shape, b.shape)


@pytest.mark.parametrize("recipe, steps", [("delayed", 2), ("current", 1)])
@pytest.mark.parametrize("value", [1e-3, 1e-5])
def test_fp8_gemm_with_fp32_accumulation_accumulates_the_fp8_elements(recipe, steps, value):
    """x = W = value, (1, 4) @ (4, 1), once the scale is 448 / value (delayed scaling's second
    step, current scaling's first): the FP8 elements are 448, their products add up exactly in
    FP32, and the decode scales bring the sum back to 4 value**2. (Rounding the dequantized
    operands to E4M3 instead gives 4 * 2**-18 = 1.53e-5 for 1e-3, and 0 for 1e-5.)"""
    cast = Caster(POLICIES["fp8_hybrid"].replace(accumulate="fp32", fp8_recipe=recipe))
    x = np.full((1, 4), value, np.float32)
    for _ in range(steps):
        cast.begin_step()
        x8, W8 = cast(x, "input", 0), cast(x.T.copy(), "weight", 0)
        out = cast.matmul(x8, W8, "fprop")
        cast.end_step()
    scale = round_exact(Fraction(448) / Fraction(float(np.float32(value))), FP32)
    decode = round_exact(1 / Fraction(scale), FP32)
    assert np.all(x8.elements == 448) and x8.scale_inv == decode
    x8, W8 = x8.dequantize(), W8.dequantize()
    assert np.all(x8 == round_exact(448 * Fraction(decode), FP32))  # held: 448 * scale_inv
    _assert_fp8_gemm_bound(x8, W8, out, decode, decode, TINY["e4m3"], TINY["e4m3"],
                           FP8_GEMM_ERROR["fp32"])
    assert abs(float(out[0, 0]) / (4 * value**2) - 1) < 1e-6


@pytest.mark.parametrize("accumulate", sorted(FP8_GEMM_ERROR))
def test_fp8_hybrid_trains_with_an_accumulation_model(spirals, accumulate):
    """FP8 training with an exact accumulation model runs (the operands fed to the model are the
    FP8 elements, of the formats the model reads) and stays close to the BLAS run."""
    config = TrainConfig(steps=4, batch_size=32, eval_every=2)
    h = train(POLICIES["fp8_hybrid"].replace(accumulate=accumulate), spirals, SMALL, config)
    blas = train("fp8_hybrid", spirals, SMALL, config)
    assert np.all(np.isfinite(h.loss)) and np.all(np.isfinite(h.test_loss))
    np.testing.assert_allclose(h.loss, blas.loss, rtol=1e-3 if accumulate == "fp32" else 2e-2)


class _GemmRecorder(Caster):
    """A Caster that keeps every GEMM's operands (ScaledTensor values) and result."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gemms = []

    def matmul(self, a, b, gemm=None):
        out = super().matmul(a, b, gemm)
        self.gemms.append((a, b, out))
        return out


@pytest.mark.parametrize("recipe", ["delayed", "current"])
@pytest.mark.parametrize("accumulate", sorted(FP8_GEMM_ERROR))
def test_each_fp8_gemm_of_a_step_is_the_exact_product_within_the_bound(spirals, accumulate, recipe):
    """Every GEMM of three training steps (fprop, dgrad, wgrad; E4M3 x E4M3, E5M2 x E4M3,
    E4M3 x E5M2) against the exact product of its dequantized operands (bound above)."""
    policy = POLICIES["fp8_hybrid"].replace(accumulate=accumulate, fp8_recipe=recipe)
    trainer = Trainer(policy, MLPConfig(sizes=(2, 8, 8, 3)), seed=0, caster=_GemmRecorder)
    recorder = trainer.caster
    for step in range(3):
        idx = batch_indices(len(spirals.x_train), 16, 0, step)
        trainer.step(spirals.x_train[idx], spirals.y_train[idx])
    assert len(recorder.gemms) == 3 * 8  # per step: 3 fprop, 3 wgrad, 2 dgrad
    for a, b, out in recorder.gemms:
        assert isinstance(a, ScaledTensor) and isinstance(b, ScaledTensor)
        _assert_fp8_gemm_bound(a.dequantize(), b.dequantize(), out, a.scale_inv, b.scale_inv,
                               TINY[a.fmt.name], TINY[b.fmt.name], FP8_GEMM_ERROR[accumulate])


def _sequential_fp32_exact(a, b):
    """c[i, j] = (((0 + a[i,0] b[0,j]) + a[i,1] b[1,j]) + ...), each sum rounded to FP32 exactly."""
    fa, fb = _exact(a), _exact(b)
    out = np.zeros((a.shape[0], b.shape[1]), np.float32)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            s = Fraction(0)
            for k in range(a.shape[1]):
                s = Fraction(round_exact(s + fa[i, k] * fb[k, j], FP32))
            out[i, j] = float(s)
    return out


def test_mx_gemm_with_fp32_accumulation_sums_the_block_scaled_values():
    """Under MX each block has its own power-of-two scale, so the values are not E4M3 numbers:
    a format accumulator sums their exact products (an FFMA GEMM of the dequantized tensors),
    and a tensor-core model without block-scaled MMA takes K-blocks of whole block FMAs only
    (else it is refused when the policy is made)."""
    rng = np.random.default_rng(5)
    policy = POLICIES["fp8_hybrid"].replace(fp8_recipe="mx", accumulate="fp32")
    x = (rng.standard_normal((3, 64)) * np.exp(rng.uniform(-8, 8, (1, 64)))).astype(np.float32)
    W = (rng.standard_normal((64, 2)) * np.exp(rng.uniform(-8, 8, (64, 1)))).astype(np.float32)
    cast = Caster(policy)
    cast.begin_step()
    x8, W8 = cast(x, "input", 0), cast(W, "weight", 0)
    assert x8.block_scaled and W8.block_scaled
    assert np.array_equal(cast.matmul(x8, W8, "fprop"),
                          _sequential_fp32_exact(x8.dequantize(), W8.dequantize()))
    with pytest.raises(ValueError, match="block-scaled"):  # 16-blocks: half an H100 FP8 block FMA
        policy.replace(accumulate="H100_FP8",
                       fp8_recipe=MXBlockScaling(fp8_format="hybrid", block_size=16))
