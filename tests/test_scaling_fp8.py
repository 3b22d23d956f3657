"""FP8 scaling recipes against Transformer Engine's rules, ml_dtypes rounding and gfloat's OCP MX.

References: element rounding is ml_dtypes' cast applied after clamping to +-max (CUDA's
__NV_SATFINITE rule); scales are exact rationals rounded by lowprec.reference; OCP MX blocks are
gfloat's ``quantize_block`` with ``compute_scale_amax``.
"""
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from lowprec.reference import floor_log2, round_exact
from lowprec import E4M3, E5M2, FP32
from lowprec.scaling import (CurrentScaling, DelayedScaling, MXBlockScaling, mx_quantize,
                             mx_scale_exponents, quantize)

FLT_MAX = float(np.finfo(np.float32).max)
ML = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2,
      "e2m1": ml_dtypes.float4_e2m1fn}
MAXES = {"e4m3": 448.0, "e5m2": 57344.0, "e2m1": 6.0}


def satfinite_ref(scaled32, fmt="e4m3"):
    """ml_dtypes' nearest-even cast after clamping to +-max: CUDA's SATFINITE conversion."""
    clamped = np.clip(scaled32, -MAXES[fmt], MAXES[fmt])
    return clamped.astype(ML[fmt]).astype(np.float32)


def scale_ref(fp8_max, amax):
    return round_exact(Fraction(fp8_max) / Fraction(float(amax)), FP32)


def same(a, b):
    np.testing.assert_array_equal(np.asarray(a, np.float32).view(np.uint32),
                                  np.asarray(b, np.float32).view(np.uint32))


# --- delayed scaling -------------------------------------------------------------------------
def test_delayed_defaults_and_hybrid_formats():
    recipe = DelayedScaling()
    assert (recipe.margin, recipe.amax_history_len, recipe.amax_compute_algo) == (0, 1024, "max")
    assert recipe.new_state("forward").fmt == E4M3 and recipe.new_state("backward").fmt == E5M2


def test_delayed_scale_is_used_one_step_late():
    rng = np.random.default_rng(0)
    x1, x2 = (rng.standard_normal((8, 16)).astype(np.float32) * 30 for _ in range(2))
    state = DelayedScaling().new_state("forward")
    values, record = quantize(x1, state)
    same(values, satfinite_ref(x1))  # the first step runs with scale 1
    assert record.scale == 1.0 and record.amax == float(np.abs(x1).max())
    scale = scale_ref(448, np.abs(x1).max())
    assert float(state.scale) == scale
    assert float(state.scale_inv) == round_exact(1 / Fraction(scale), FP32)
    s32, inv32 = np.float32(scale), np.float32(state.scale_inv)
    values, record = quantize(x2, state)
    assert record.scale == scale
    # the new scale is computed from x1 and x2 ("max" over the history)
    assert float(state.scale) == scale_ref(448, max(np.abs(x1).max(), np.abs(x2).max()))
    same(values, satfinite_ref(x2 * s32) * inv32)


@pytest.mark.parametrize("algo, amaxes_used", [("max", [8, 8, 8, 4, 2]),
                                               ("most_recent", [8, 4, 2, 1, 1])])
def test_delayed_history_window_and_roll(algo, amaxes_used):
    # history [0] holds the step's amax; the update rolls by -1 and zeroes [0], so with length 3
    # "max" covers the last three steps.
    state = DelayedScaling(amax_history_len=3, amax_compute_algo=algo).new_state()
    histories = [[0, 0, 8], [0, 8, 4], [0, 4, 2], [0, 2, 1], [0, 1, 1]]
    for amax, used, history in zip([8, 4, 2, 1, 1], amaxes_used, histories):
        quantize(np.array([amax, -amax / 2], np.float32), state)
        assert float(state.scale) == scale_ref(448, used)
        assert state.amax_history.tolist() == history


def test_delayed_keeps_previous_scale_for_zero_or_non_finite_amax():
    state = DelayedScaling(amax_history_len=1).new_state()
    quantize(np.array([2.0], np.float32), state)
    assert state.scale == 224.0
    for x in ([0.0, 0.0], [np.nan, np.nan], [np.inf, 1.0]):  # NaN is ignored, as fmaxf does
        values, _ = quantize(np.array(x, np.float32), state)
        assert state.scale == 224.0
    same(values, [2.0, 1.0])  # inf * 224 saturates to 448, read back as 2.0
    quantize(np.array([1e-45], np.float32), state)  # 448 / 1.4e-45 is inf in float32
    assert float(state.scale) == FLT_MAX


def test_delayed_inf_in_history_freezes_the_scale_for_the_window():
    state = DelayedScaling(amax_history_len=3).new_state()
    scales = []
    for amax in [2.0, np.inf, 1.0, 1.0, 1.0]:
        quantize(np.array([amax], np.float32), state)
        scales.append(float(state.scale))
    assert scales == [224.0, 224.0, 224.0, 224.0, 448.0]


def test_delayed_margin_and_accumulated_amax():
    state = DelayedScaling(margin=2).new_state()
    quantize(np.array([3.0], np.float32), state)
    assert float(state.scale) == scale_ref(448 / 4, 3.0)
    state = DelayedScaling().new_state("backward")
    state.quantize(np.array([5.0], np.float32), update=False)
    state.quantize(np.array([-7.0], np.float32), update=False)
    state.update()
    assert float(state.scale) == scale_ref(57344, 7.0)


def test_casts_saturate_unlike_ml_dtypes():
    x = np.array([1e6, -1e6, np.inf, np.nan, 60000.0], np.float32)
    values, record = quantize(x, DelayedScaling().new_state("backward"))
    same(values, [57344, -57344, 57344, np.nan, 57344])
    assert np.isinf(x[:1].astype(ml_dtypes.float8_e5m2).astype(np.float32)).all()  # ml_dtypes: inf
    assert record.clipped == 4 / 5  # 60000 exceeds 57344 (and would round to it anyway)
    values, _ = quantize(np.array([1000.0, -480.0], np.float32), DelayedScaling().new_state())
    same(values, [448, -448])  # ml_dtypes' E4M3 cast would give NaN


def test_clipped_and_flushed_fractions():
    # scale 1 on the first step; E4M3's smallest subnormal is 2**-9, so 2**-10 is a tie -> 0
    x = np.array([500, -1000, 1e-4, 0, 1, np.nan, 2.0**-10, 3 * 2.0**-11], np.float32)
    values, record = quantize(x, DelayedScaling().new_state())
    assert (record.clipped, record.flushed) == (2 / 8, 2 / 8)
    same(values, satfinite_ref(x))


def test_delayed_state_dict_round_trip():
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(50).astype(np.float32) * 10.0 ** k for k in range(-3, 4)]
    first = DelayedScaling(amax_history_len=4).new_state()
    for x in xs[:3]:
        quantize(x, first)
    second = DelayedScaling(amax_history_len=4).new_state()
    second.load_state_dict(first.state_dict())
    for x in xs[3:]:
        (a, ra), (b, rb) = quantize(x, first), quantize(x, second)
        same(a, b)
        assert ra == rb
    with pytest.raises(ValueError, match="amax_history"):
        DelayedScaling(amax_history_len=5).new_state().load_state_dict(first.state_dict())


# --- current scaling -------------------------------------------------------------------------
def test_current_scaling_uses_the_tensors_own_amax():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(1000).astype(np.float32) * 0.01
    values, record = quantize(x, CurrentScaling().new_state("forward"))
    scale = scale_ref(448, np.abs(x).max())
    assert record.scale == scale
    inv = np.float32(round_exact(1 / Fraction(scale), FP32))
    same(values, satfinite_ref(x * np.float32(scale)) * inv)
    assert record.clipped == 0.0  # the largest value maps to exactly 448


def test_current_scaling_power_of_two_and_epsilon():
    x = np.array([0.3, -0.01], np.float32)
    _, record = quantize(x, CurrentScaling(power_2_scale=True).new_state())
    assert record.scale == 2.0 ** floor_log2(Fraction(448) / Fraction(float(np.float32(0.3))))
    _, record = quantize(np.array([1e-9], np.float32),
                         CurrentScaling(amax_epsilon=1e-3).new_state())
    assert record.scale == scale_ref(448, np.float32(1e-3))
    _, record = quantize(np.zeros(4, np.float32), CurrentScaling().new_state())
    assert record.scale == 1.0
    _, record = quantize(np.array([1e-45], np.float32), CurrentScaling().new_state())
    assert record.scale == FLT_MAX


# --- MX block scaling ---------------------------------------------------------------------------
def random_blocks(rng, shape):
    magnitudes = 10.0 ** rng.integers(-20, 20, shape[:-1] + (1,))
    return (rng.standard_normal(shape) * magnitudes).astype(np.float32)


@pytest.mark.parametrize("fmt, gfloat_name", [("e4m3", "format_info_mxfp8_e4m3"),
                                              ("e2m1", "format_info_mxfp4_e2m1")])
def test_ocp_rule_matches_gfloat(fmt, gfloat_name):
    gfloat = pytest.importorskip("gfloat")
    from gfloat import formats as gf

    rng = np.random.default_rng(3)
    x = random_blocks(rng, (6, 32))
    x[0, :] = 0.0
    x[1, 5] = 480 * 2.0**-20  # a block whose largest element clips
    values, record = mx_quantize(x, fmt, rule="ocp")
    for row in range(x.shape[0]):
        expected = gfloat.quantize_block(getattr(gf, gfloat_name), x[row].astype(np.float64),
                                         gfloat.compute_scale_amax)
        same(values[row], expected.astype(np.float32))


def te_exponent(amax, fp8_max=448):
    """ceil(log2(amax / fp8_max)), exactly."""
    ratio = Fraction(float(amax)) / Fraction(fp8_max)
    k = floor_log2(ratio)
    return k if Fraction(2) ** k == ratio else k + 1


def test_te_rule_rounds_the_scale_up():
    rng = np.random.default_rng(4)
    x = random_blocks(rng, (5, 64))
    x[2] = rng.uniform(-1, 1, 64)
    x[2, 3] = 448.0 * 2.0**-7  # a block amax of exactly fp8_max times a power of two: X = 2**-7
    values, record = mx_quantize(x, "e4m3", rule="te")
    for row in range(5):
        for block in range(2):
            part = x[row, 32 * block:32 * (block + 1)]
            k = te_exponent(np.abs(part).max())
            assert record.block_scales[row, block] == 2.0**k
            expected = satfinite_ref(part * np.float32(2.0**-k)) * np.float32(2.0**k)
            same(values[row, 32 * block:32 * (block + 1)], expected)
    assert record.clipped == 0.0 and record.block_scales[2, 0] == 2.0**-7


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_te_scale_exponent_at_every_binade_boundary(fmt):
    # TE multiplies by float32(1 / max) instead of dividing; at and around amax = max * 2**k the
    # rounded-up exponent must still be ceil(log2(amax / max)).
    fp8_max = MAXES[fmt]
    centres = np.float32(fp8_max) * np.exp2(np.arange(-110, 110)).astype(np.float32)
    amaxes = np.concatenate([centres, np.nextafter(centres, np.float32(0)),
                             np.nextafter(centres, np.float32(np.inf))])
    got = mx_scale_exponents(amaxes, fmt, "te")
    assert got.tolist() == [te_exponent(a, fp8_max) for a in amaxes]


def test_ocp_and_te_rules_differ_when_the_significand_exceeds_1_75():
    block = np.ones(32, np.float32)
    block[0] = 480.0  # 480 = 1.875 * 2**8
    ocp, ocp_record = mx_quantize(block, "e4m3", rule="ocp")
    te, te_record = mx_quantize(block, "e4m3", rule="te")
    # OCP: X = 2**(floor(log2 480) - 8) = 1, and 480 saturates to 448
    assert ocp_record.block_scales.tolist() == [1.0] and ocp[0] == 448.0
    assert ocp_record.clipped == 1 / 32
    # TE: X = 2**ceil(log2(480 / 448)) = 2, and 480 = 240 * 2 is kept
    assert te_record.block_scales.tolist() == [2.0] and te[0] == 480.0
    same(ocp[1:], te[1:])


def test_blocks_follow_the_axis_and_pad_the_last_block():
    rng = np.random.default_rng(5)
    x = random_blocks(rng, (3, 40)).T.copy()  # blocks along axis 0, 40 = 32 + 8
    values, record = quantize(x, MXBlockScaling().new_state(), axis=0)
    values_t, record_t = mx_quantize(x.T, "e4m3", rule="te", axis=-1)
    same(values, values_t.T)
    assert record.block_scales.shape == (2, 3)
    same(record.block_scales, record_t.block_scales.T)
    same(values[32:, 0], mx_quantize(x[32:, 0], "e4m3")[0])  # the short block stands alone


def test_special_values_and_tiny_blocks():
    x = np.ones((2, 32), np.float32)
    x[0, 0] = np.inf
    ocp, _ = mx_quantize(x, "e4m3", rule="ocp")
    assert np.isnan(ocp[0]).all() and (ocp[1] == 1.0).all()  # a NaN scale spoils the block
    te, record = mx_quantize(x, "e4m3", rule="te")
    assert np.isnan(te[0, 0]) and (te[0, 1:] == 0).all() and record.block_scales[0, 0] == 2.0**127
    tiny = np.full(32, 2.0**-125, np.float32)
    assert (mx_quantize(tiny, "e4m3", rule="te")[0] == 0).all()  # TE's code 0: reciprocal 1
    same(mx_quantize(tiny, "e4m3", rule="ocp")[0], tiny)  # OCP: X = 2**-127, element 4


# --- bad input ---------------------------------------------------------------------------------
def test_bad_input_is_named():
    with pytest.raises(ValueError, match="amax_compute_algo"):
        DelayedScaling(amax_compute_algo="mean")
    with pytest.raises(ValueError, match="fp8_format"):
        DelayedScaling(fp8_format="e2m1")
    with pytest.raises(ValueError, match="role"):
        DelayedScaling().new_state("sideways")
    with pytest.raises(ValueError, match="MX rule"):
        MXBlockScaling(rule="nvidia")
    with pytest.raises(ValueError, match="not an MX element"):
        mx_quantize(np.ones(32), "bf16")
    with pytest.raises(ValueError, match="e4m3 and e5m2"):
        mx_quantize(np.ones(32), "e2m1", rule="te")
    with pytest.raises(TypeError, match="real numbers"):
        quantize(np.ones(3, complex), CurrentScaling().new_state())
    with pytest.raises(TypeError, match="new_state"):
        quantize(np.ones(3), DelayedScaling())
