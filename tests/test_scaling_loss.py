"""Loss scalers against the frameworks' published rules and the sequences measured from them.

Expected sequences were measured by running torch.amp.GradScaler (torch/amp/grad_scaler.py,
whose update is _amp_update_scale_ in aten/src/ATen/native/cpu/AmpGradScalerKernels.cpp) and
DeepSpeed's DynamicLossScaler (deepspeed/runtime/fp16/loss_scaler.py), or are derived by hand
from those rules in the comments; float32 values come from the exact rational reference in
lowprec.reference. tests/test_torch_gradscaler.py drives the real torch.amp.GradScaler.
"""
import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest

from lowprec.reference import round_exact
from lowprec import FP32, FloatFormat
from lowprec.scaling import (APEX, PYTORCH, DeepSpeedConfig, DynamicLossScaler,
                             DynamicScalingConfig, HysteresisLossScaler, LossScaleAtMinimumError,
                             NonFiniteSource,
                             StaticLossScaler, make_loss_scaler, unscale_and_check)

FP64 = FloatFormat("fp64", 11, 52)


def run(scaler, flags):
    return [scaler.update(bool(f)) for f in flags]


def torch_like(**changes):
    return DynamicLossScaler(dataclasses.replace(PYTORCH, **changes))


# --- PyTorch GradScaler ------------------------------------------------------------------------
def test_pytorch_defaults():
    assert (PYTORCH.init_scale, PYTORCH.growth_factor, PYTORCH.backoff_factor,
            PYTORCH.growth_interval) == (2.0**16, 2.0, 0.5, 2000)
    assert make_loss_scaler("dynamic").scale == 65536.0


def test_pytorch_measured_pattern_interval_3():
    # measured with torch.amp.GradScaler(init_scale=2**16, growth_interval=3)
    found = [1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    stepped = "F F F T T T T T F T T T T T T T".split()
    scale = [32768, 16384, 8192, 8192, 8192, 16384, 16384, 16384, 8192, 8192, 8192, 16384, 16384,
             16384, 32768, 32768]
    tracker = [0, 0, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1]
    records = run(torch_like(growth_interval=3), found)
    assert [r.new_scale for r in records] == scale
    assert [r.growth_tracker for r in records] == tracker
    assert [("F" if r.skipped else "T") for r in records] == stepped
    assert [r.scale for r in records] == [65536] + scale[:-1]  # the scale each step used


def test_pytorch_growth_refused_at_float32_limit():
    # 2**127 * 2 is inf in float32: the growth is refused, the tracker still resets.
    scaler = torch_like(init_scale=2.0**127, growth_interval=1)
    records = run(scaler, [0, 0, 0])
    assert [r.new_scale for r in records] == [2.0**127] * 3
    assert records[0].new_scale == pytest.approx(1.70e38, rel=1e-3)
    assert [r.growth_tracker for r in records] == [0, 0, 0]


def test_pytorch_all_inf_collapse_has_no_floor():
    # measured with torch.amp.GradScaler, inf every step: 1.0 after 16 steps, 0.5 after 17,
    # 1.4e-45 at 165, 0.0 by 170 (_amp_update_scale_ has no lower bound)
    scales = [r.new_scale for r in run(make_loss_scaler("dynamic"), [1] * 170)]
    assert scales[15] == 1.0 and scales[16] == 0.5
    assert scales[164] == math.ldexp(1.0, -149) == pytest.approx(1.4e-45, rel=0.01)
    # 2**-150 is exactly half the smallest float32 subnormal: the tie goes to even, 0.
    assert scales[165] == 0.0 and scales[169] == 0.0
    assert all(s == math.ldexp(1.0, 15 - i) for i, s in enumerate(scales[:165]))


def test_pytorch_scale_and_inverse_are_float32():
    scaler = torch_like(init_scale=0.1, growth_factor=1.1, backoff_factor=0.7, growth_interval=1)
    s0 = round_exact(Fraction(0.1), FP32)
    assert scaler.scale == s0
    assert scaler.inv_scale == round_exact(1 / Fraction(s0), FP32)  # float32(1 / float64(scale))
    # growth: the C++ kernel multiplies float * double in double, then stores a float
    s1 = round_exact(Fraction(round_exact(Fraction(s0) * Fraction(1.1), FP64)), FP32)
    assert scaler.update(False).new_scale == s1
    s2 = round_exact(Fraction(round_exact(Fraction(s1) * Fraction(0.7), FP64)), FP32)
    assert scaler.update(True).new_scale == s2


def test_inverse_of_a_scale_not_a_power_of_two():
    scaler = make_loss_scaler(3.0)
    assert scaler.inv_scale == round_exact(Fraction(1, 3), FP32)
    assert np.float32(scaler.inv_scale) == np.float32(1) / np.float32(3)


def test_tiny_scale_overflows_the_inverse_without_flagging():
    # float32(2**149) is inf: unscaled gradients become inf while found_inf, which looks at
    # the scaled gradients, stays False (what GradScaler does once the scale is below 2**-128).
    scaler = make_loss_scaler(2.0**-149)
    assert scaler.inv_scale == math.inf
    out, found = unscale_and_check([np.array([2.0**-149, 0.0], np.float32)], scaler)
    assert not found and out[0][0] == np.inf and np.isnan(out[0][1])


# --- Apex ----------------------------------------------------------------------------------
def test_apex_caps_growth_at_2_24_and_keeps_a_python_float():
    assert (APEX.init_scale, APEX.growth_interval, APEX.max_scale) == (2.0**16, 2000, 2.0**24)
    scaler = DynamicLossScaler(dataclasses.replace(APEX, init_scale=2.0**23, growth_interval=2))
    assert [r.new_scale for r in run(scaler, [0] * 6)] == [2**23, 2**24, 2**24, 2**24, 2**24, 2**24]
    # Apex halves a double: no float32 underflow to 0 after 170 overflows
    scaler = make_loss_scaler("apex")
    assert run(scaler, [1] * 170)[-1].new_scale == math.ldexp(1.0, 16 - 170)


def test_apex_optional_floor():
    scaler = DynamicLossScaler(dataclasses.replace(APEX, init_scale=32.0, min_scale=4.0))
    assert [r.new_scale for r in run(scaler, [1] * 5)] == [16, 8, 4, 4, 4]


# --- DeepSpeed -----------------------------------------------------------------------------
def test_deepspeed_defaults():
    cfg = DeepSpeedConfig()
    assert (cfg.init_scale, cfg.scale_window, cfg.hysteresis, cfg.consecutive_hysteresis,
            cfg.min_scale, cfg.raise_at_min_scale) == (2.0**16, 1000, 2, False, 1.0, True)


def pattern(text):
    return [c == "X" for c in text]


def test_deepspeed_window_4_hysteresis_2_measured_pattern():
    # X.X..XX.......: the first overflow only spends hysteresis; the hysteresis is not refilled
    # by clean steps, so each later overflow halves; growth after window + 1 clean steps
    # (stable_interval = iter - last_overflow - 1 reaches 4 at iter 11) refills it.
    records = run(HysteresisLossScaler(DeepSpeedConfig(scale_window=4)), pattern("X.X..XX......."))
    assert [r.new_scale for r in records] == [65536, 65536, 32768, 32768, 32768, 16384, 8192, 8192,
                                              8192, 8192, 8192, 16384, 16384, 16384]
    assert [r.hysteresis for r in records] == [1] * 11 + [2] * 3
    assert [r.skipped for r in records] == pattern("X.X..XX.......")


def test_deepspeed_consecutive_hysteresis():
    # Every clean step refills the hysteresis, so only the back-to-back pair halves.
    cfg = DeepSpeedConfig(scale_window=4, consecutive_hysteresis=True)
    records = run(HysteresisLossScaler(cfg), pattern("X.X..XX......."))
    assert [r.new_scale for r in records] == [65536] * 6 + [32768] * 5 + [65536] * 3


def test_deepspeed_first_growth_is_one_step_later_than_pytorch():
    # measured with DeepSpeed's DynamicLossScaler, window 3, no overflow, from scale 1:
    # 1,1,1,2,2,2,4,4 (growth when (iter - last_overflow) - 1 is a positive multiple of the window)
    ds = HysteresisLossScaler(DeepSpeedConfig(init_scale=1.0, scale_window=3))
    assert [r.new_scale for r in run(ds, [0] * 8)] == [1, 1, 1, 2, 2, 2, 4, 4]
    torch = torch_like(init_scale=1.0, growth_interval=3)
    assert [r.new_scale for r in run(torch, [0] * 8)] == [1, 1, 2, 2, 2, 4, 4, 4]


def test_deepspeed_raises_at_min_scale_by_default():
    scaler = HysteresisLossScaler(DeepSpeedConfig(init_scale=2.0, hysteresis=1))
    assert scaler.update(True).new_scale == 1.0
    with pytest.raises(LossScaleAtMinimumError, match="minimum"):
        scaler.update(True)
    assert scaler.scale == 1.0 and scaler.steps == 1  # nothing advanced
    quiet = HysteresisLossScaler(DeepSpeedConfig(init_scale=2.0, hysteresis=1,
                                                 raise_at_min_scale=False))
    assert [r.new_scale for r in run(quiet, [1, 1, 1])] == [1.0, 1.0, 1.0]


# --- static and none -------------------------------------------------------------------------
def test_no_scaling_still_skips_non_finite_steps():
    scaler = make_loss_scaler(None)
    record = scaler.update(True)
    assert (record.scale, record.skipped, record.new_scale) == (1.0, True, 1.0)
    assert not scaler.update(False).skipped


def test_static_scale_can_apply_non_finite_steps_like_apex():
    scaler = StaticLossScaler(1024.0, skip_non_finite=False)
    record = scaler.update(True)
    assert record.found_inf and not record.skipped and record.new_scale == 1024.0


def test_record_names_the_layer_and_cast_point():
    source = NonFiniteSource(3, "activation_grad")
    record = make_loss_scaler(2.0**40).update(True, source=source)
    assert record.source == source
    text = record.describe()
    assert "inf in layer 3 at cast point 'activation_grad'" in text and "skipped" in text
    assert make_loss_scaler(8.0).update(False, source=source).source is None


def test_non_finite_source_takes_a_layer_index_and_a_known_kind():
    assert NonFiniteSource(np.int64(2), "output", "nan") == NonFiniteSource(2, "output", "nan")
    assert type(NonFiniteSource(np.int64(2), "output").layer) is int
    with pytest.raises(TypeError, match="layer index"):
        NonFiniteSource("fc3", "output")
    with pytest.raises(ValueError, match=">= 0"):
        NonFiniteSource(-1, "output")
    with pytest.raises(ValueError, match="'inf', 'nan'"):
        NonFiniteSource(0, "output", "overflow")


# --- checkpoints --------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [None, 512.0, "dynamic", "apex", "deepspeed"])
def test_state_dict_round_trip_continues_identically(spec):
    rng = np.random.default_rng(5)
    flags = rng.random(60) < 0.3
    first = make_loss_scaler(spec)
    if spec in ("dynamic", "apex"):
        first = DynamicLossScaler(dataclasses.replace(first.config, growth_interval=4))
    elif spec == "deepspeed":
        first = HysteresisLossScaler(DeepSpeedConfig(scale_window=4, raise_at_min_scale=False))
    run(first, flags[:30])
    second = make_loss_scaler(spec)
    second.load_state_dict(first.state_dict())
    assert second.state_dict() == first.state_dict()
    assert run(second, flags[30:]) == run(first, flags[30:])


def test_torch_state_dict_keys_load():
    scaler = make_loss_scaler("dynamic")
    scaler.load_state_dict({"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                            "growth_interval": 3, "_growth_tracker": 2})
    assert scaler.update(False).new_scale == 2048.0
    with pytest.raises(ValueError, match="unknown state keys"):
        scaler.load_state_dict({"bogus": 1})


# --- unscale_and_check ----------------------------------------------------------------------
def test_unscale_multiplies_by_float32_inverse():
    scaler = make_loss_scaler(3.0)
    inv = Fraction(round_exact(Fraction(1, 3), FP32))
    grads = {"w": np.array([1.0, 3.0, 1e-3, -7.5], np.float32), "b": np.array([2.0], np.float64)}
    before = {k: v.copy() for k, v in grads.items()}
    out, found = unscale_and_check(grads, scaler)
    assert not found and out["w"].dtype == np.float32 and out["b"].dtype == np.float64
    assert [float(v) for v in out["w"]] == [round_exact(Fraction(float(g)) * inv, FP32)
                                            for g in grads["w"]]
    assert float(out["b"][0]) == round_exact(2 * inv, FP64)
    assert all(np.array_equal(before[k], grads[k]) for k in grads)  # inputs untouched


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_unscale_finds_non_finite(bad):
    grads = [{"w": np.ones(4, np.float32)}, {"w": np.array([1.0, bad], np.float32)}]
    out, found = unscale_and_check(grads, make_loss_scaler("dynamic"))
    assert found and isinstance(out, list) and list(out[1]) == ["w"]
    assert out[0]["w"].tolist() == [2.0**-16] * 4
    assert not unscale_and_check(grads[:1], make_loss_scaler("dynamic"))[1]


def test_unscale_rejects_fp16_and_non_scalers():
    with pytest.raises(ValueError, match="FP16"):
        unscale_and_check([np.ones(2, np.float16)], make_loss_scaler(None))
    with pytest.raises(TypeError, match="LossScaler"):
        unscale_and_check([np.ones(2, np.float32)], 2.0)


# --- bad input ---------------------------------------------------------------------------------
def test_bad_specs_and_configs_are_named():
    with pytest.raises(ValueError, match="valid: None, a number, 'none', 'dynamic'"):
        make_loss_scaler("grow")
    with pytest.raises(TypeError):
        make_loss_scaler(True)
    with pytest.raises(ValueError, match="positive"):
        make_loss_scaler(-1.0)
    with pytest.raises(ValueError, match="growth_factor"):
        DynamicScalingConfig(growth_factor=1.0)
    with pytest.raises(ValueError, match="backoff_factor"):
        DynamicScalingConfig(backoff_factor=1.5)
    with pytest.raises(ValueError, match="scale_window"):
        DeepSpeedConfig(scale_window=0)
    with pytest.raises(TypeError, match="found_inf"):
        make_loss_scaler(None).update(None)
