"""Block-scaled recipes inside the training loop: the policies train the MLP on the digits, the
Caster hands each GEMM operand the right blocks, transform and rounding, observation counts
clipped / flushed blocks and histograms the block scales, and a run resumes bit for bit.

References: counts and exponents worked out by hand from the OCP MX v1.0 floor rule (E2M1,
max 6) and per-block loops written here; ml_dtypes' BF16 cast; the orthogonality of the
Hadamard transform (x.T @ g is unchanged); the sample mean of stochastic rounding (unbiased).
"""
import ml_dtypes
import numpy as np
import pytest

from lowprec import data, tensorcore
from lowprec.nn import CAST_POINTS, POLICIES, Caster, MLPConfig, TrainConfig, train
from lowprec.observe import HIST_MIN_EXP, History, Observer, _blocks_with_any
from lowprec.scaling import ScaledTensor
from lowprec.scaling.hadamard import TE_WGRAD_SIGNS, rht
from lowprec.scaling.recipes import BLOCK_RECIPES, NVFP4, BlockScaling

BLOCK_POLICIES = ("nvfp4", "mxfp8", "mxfp4", "fp8_blockwise", "fp8_rowwise")
MODEL = MLPConfig(sizes=(64, 32, 32, 10))


@pytest.fixture(scope="module")
def digits():
    return data.digits(np.random.default_rng(0))


@pytest.mark.parametrize("name", BLOCK_POLICIES)
def test_each_block_policy_trains_the_mlp_on_the_digits(digits, name):
    h = train(name, digits, MODEL, TrainConfig(steps=60, batch_size=64, eval_every=0))
    assert np.all(np.isfinite(h.loss))
    assert h.loss[-10:].mean() < 0.6 * h.loss[:10].mean(), (h.loss[:10].mean(), h.loss[-10:])
    assert h.test_accuracy[-1] > 0.5  # chance is 0.1
    assert np.all(np.isnan(h.fp8_scale))  # block scaling has no per-tensor scale
    assert h.fp8_amax[-1, 1, CAST_POINTS.index("input")] > 0


def test_policies_name_their_recipes_and_gemm_accumulation():
    assert POLICIES["nvfp4"].fp8_recipe == NVFP4
    assert all(POLICIES[n].fp8_recipe == BLOCK_RECIPES[n] for n in BLOCK_POLICIES)
    assert POLICIES["fp8_blockwise"].accumulate == tensorcore.H100_FP8
    nvfp4 = POLICIES["nvfp4"]
    assert nvfp4.input.format.name == "e2m1" and nvfp4.fp8_points == (
        "weight", "input", "grad_output")
    assert "BlockScaling" in str(nvfp4.fingerprint()["fp8_recipe"]["type"])
    # 1x16 blocks are half an H100 FP8 block FMA: refused when the policy is made
    with pytest.raises(ValueError, match="K-blocks of 16 are not a multiple"):
        POLICIES["mxfp8"].replace(fp8_recipe=BlockScaling(
            fp8_format="e4m3", activation_block=16, weight_block=16, rule="rceil",
            scale_format="e8m0", stochastic_gradients=False, rht_gemms=(),
            high_precision_layers=()), accumulate="H100_FP8")
    with pytest.raises(ValueError, match="keeps layers .0, -1. in BF16"):
        nvfp4.replace(accumulate="H100_FP8")
    with pytest.raises(ValueError, match="rht_gemms"):
        BlockScaling(rht_gemms=("backward",))
    with pytest.raises(ValueError, match="weight_block"):
        BlockScaling(weight_block=(16, 16, 1))


def _caster(name, layers=3):
    cast = Caster(POLICIES[name], rng=np.random.default_rng(1), layers=layers)
    cast.begin_step()
    return cast


def test_nvfp4_keeps_first_and_last_layers_in_bf16_and_reuses_weight_tiles():
    rng = np.random.default_rng(2)
    cast = _caster("nvfp4")
    x = rng.standard_normal((32, 64)).astype(np.float32)
    W = rng.standard_normal((64, 32)).astype(np.float32)
    for layer in (0, 2):  # first and last of three layers: BF16, unscaled
        y = cast(x, "input", layer)
        assert not isinstance(y, ScaledTensor)
        assert np.array_equal(y, x.astype(ml_dtypes.bfloat16).astype(np.float32))
    Wq = cast(W, "weight", 1)
    assert isinstance(Wq, ScaledTensor) and Wq.block_size == (16, 16)
    assert cast.second_use(Wq, "weight", 1) is Wq  # dgrad reads the same 16x16 tiles
    xq = cast(x, "input", 1)
    assert xq.block_size == 16 and xq.axis == 1 and xq.fmt.name == "e2m1"
    with pytest.raises(ValueError, match="set the Caster's layers"):
        Caster(POLICIES["nvfp4"])(x, "input", 0)


def test_wgrad_operands_get_the_hadamard_transform_along_the_batch():
    """NVFP4 quantizes RHT(x) and RHT(g) along the batch for the wgrad GEMM; the transform is
    orthogonal, so their product approximates x.T @ g, as the untransformed product would."""
    rng = np.random.default_rng(3)
    cast = _caster("nvfp4")
    x = rng.standard_normal((64, 32)).astype(np.float32)
    g = (rng.standard_normal((64, 32)) * 1e-3).astype(np.float32)
    x[5, 3] = 40.0  # an outlier in one batch block
    cast(x, "input", 1)
    cast(g, "grad_output", 1)
    xw, gw = cast.second_use(None, "input", 1), cast.second_use(None, "grad_output", 1)
    assert xw.axis == 0 and gw.axis == 0 and xw.block_size == 16
    rx = rht(x, TE_WGRAD_SIGNS, axis=0, dtype="fp32")
    # the elements are those of the transformed tensor: dequantized, close to it, not to x
    assert np.abs(xw.dequantize() - rx).max() < np.abs(xw.dequantize() - x).max()
    exact = x.astype(np.float64).T @ g.astype(np.float64)
    got = cast.matmul(xw.T, gw, "wgrad")
    err = np.linalg.norm(got - exact) / np.linalg.norm(exact)
    assert err < 0.25, err
    # gradients round stochastically: another generator, other elements
    other = Caster(POLICIES["nvfp4"], rng=np.random.default_rng(99), layers=3)
    other.begin_step()
    assert not np.array_equal(other(g, "grad_output", 1).elements,
                              cast(g, "grad_output", 1).elements)


def test_stochastic_rounding_of_gradient_blocks_is_unbiased():
    """The mean of many stochastic MXFP4 casts of the same gradient approaches it."""
    rng = np.random.default_rng(4)
    g = rng.standard_normal((8, 32)).astype(np.float32)
    state = BLOCK_RECIPES["mxfp4"].new_state("backward", point="grad_output")
    draws = np.mean([state.cast(g, axis=1, rng=rng)[0].dequantize() for _ in range(400)], axis=0)
    nearest = BLOCK_RECIPES["mxfp4"].new_state("forward", point="input").cast(g, axis=1)[0]
    assert np.abs(draws - g).mean() < 0.25 * np.abs(nearest.dequantize() - g).mean()
    with pytest.raises(ValueError, match="pass rng="):
        state.cast(g, axis=1)


def test_observation_counts_clipped_and_flushed_blocks_and_histograms_block_scales():
    """MXFP4 (E2M1, max 6) with the OCP floor rule, X = 2**(floor(log2 amax) - 2): a block with
    amax 7 gets X = 1 and 7 clips to 6; a block with amax 6 and a value 0.1 gets X = 1 and 0.1
    rounds to 0 (E2M1's smallest subnormal is 0.5); a block with amax 3 gets X = 2**-1."""
    x = np.zeros((2, 64), np.float32)
    x[0, :32] = 1.0
    x[0, 0] = 7.0  # block (0, 0): clipped, X = 2**0
    x[0, 32:] = 6.0
    x[0, 40] = 0.1  # block (0, 1): flushed, X = 2**0
    x[1, :32] = 3.0  # block (1, 0): X = 2**-1
    x[1, 32:] = 2.0 ** -10  # block (1, 1): X = 2**-12
    observer = Observer(1, CAST_POINTS)
    cast = Caster(POLICIES["mxfp4"], rng=np.random.default_rng(5), layers=1)
    cast.begin_step(observer)
    cast(x, "input", 0)
    p = CAST_POINTS.index("input")
    assert observer.block_stats["blocks"][0, p] == 4
    assert observer.block_stats["blocks_clipped"][0, p] == 1
    assert observer.block_stats["blocks_flushed"][0, p] == 1
    hist = observer.scale_hist[0, p]
    want = np.zeros_like(hist)
    for e in (0, 0, -1, -12):
        want[e - HIST_MIN_EXP] += 1
    assert np.array_equal(hist, want)


def test_block_grouping_of_tiles_and_rows_matches_a_loop():
    rng = np.random.default_rng(6)
    mask = rng.random((37, 21)) < 0.02
    tiles = _blocks_with_any(mask, (16, 8), None)
    want = np.array([[mask[i:i + 16, j:j + 8].any() for j in range(0, 21, 8)]
                     for i in range(0, 37, 16)])
    assert np.array_equal(tiles, want)
    cols = _blocks_with_any(mask, 16, 0)
    want = np.array([[mask[i:i + 16, j].any() for j in range(21)] for i in range(0, 37, 16)])
    assert np.array_equal(cols, want)


def test_history_keeps_block_statistics_and_reads_older_files(digits, tmp_path):
    h = train("mxfp4", digits, MODEL, TrainConfig(steps=4, batch_size=64, eval_every=0,
                                                  observe_every=2))
    p = CAST_POINTS.index("input")
    assert h.blocks.shape == (2, 3, len(CAST_POINTS)) and np.all(h.blocks[:, :, p] > 0)
    assert h.scale_hist.shape[-1] == h.exp_hist.shape[-1]
    assert np.array_equal(h.scale_hist[:, :, p].sum(axis=-1), h.blocks[:, :, p])
    h.save(tmp_path / "h")
    assert np.array_equal(History.load(tmp_path / "h").blocks_flushed, h.blocks_flushed)
    old = {k: v for k, v in h.to_arrays().items()
           if k not in ("blocks", "blocks_clipped", "blocks_flushed", "scale_hist")}
    back = History.from_arrays(old)  # a History saved before block statistics existed
    assert back.blocks.shape == h.blocks.shape and not back.blocks.any()


@pytest.mark.parametrize("name", ("nvfp4", "fp8_blockwise"))
def test_a_block_scaled_run_resumes_from_its_checkpoint_bit_for_bit(digits, tmp_path, name):
    """Block recipes keep no state; stochastic rounding draws from the trainer's rounding
    generator, which the checkpoint carries, and the History keeps the block statistics."""
    config = TrainConfig(steps=8, batch_size=64, eval_every=4, observe_every=3, checkpoint_every=2)
    whole = train(name, digits, MODEL, config)
    path = tmp_path / "run.npz"
    train(name, digits, MODEL, config, checkpoint=path, stop_after=5)
    resumed = train(name, digits, MODEL, config, resume=path)
    for field, value in whole.to_arrays().items():
        assert np.array_equal(value, resumed.to_arrays()[field], equal_nan=field != "meta"), field
    assert whole.blocks.any()
