"""Precision policies: presets, validation, and the "already in this format" shortcut."""
import itertools

import numpy as np
import pytest

import lowprec
from lowprec.nn import CAST_POINTS, POLICIES, Cast, PrecisionPolicy, get_policy


def test_presets_say_what_the_frameworks_do():
    amp = POLICIES["fp16_mixed"]
    assert amp.weight.format == lowprec.FP16 and amp.activation_grad.format == lowprec.FP16
    assert amp.master_weights.format == lowprec.FP32 and amp.optimizer_state.format == lowprec.FP32
    assert amp.loss_scale == "dynamic"
    pure = POLICIES["fp16_pure"]
    assert pure.master_weights is None and pure.loss_scale is None
    assert pure.optimizer_state.format == lowprec.FP16
    assert POLICIES["bf16_mixed"].loss_scale is None
    hybrid = POLICIES["fp8_hybrid"]
    assert hybrid.input.format == lowprec.E4M3 and hybrid.weight.overflow == "saturate"
    assert hybrid.grad_output.format == lowprec.E5M2
    for name, policy in POLICIES.items():
        assert policy.name == name and get_policy(name) is policy
        text = policy.describe()
        assert all(point in text for point in CAST_POINTS)


def test_strings_tuples_and_dicts_become_casts():
    p = PrecisionPolicy(weight="bf16", input=("fp16", "stochastic"),
                        output={"format": "e4m3", "overflow": "saturate"})
    assert p.weight == Cast(lowprec.BF16)
    assert p.input.mode == "stochastic" and p.output.overflow == "saturate"
    assert p.replace(weight=None).weight is None and p.weight is not None  # replace copies


@pytest.mark.parametrize("bad, error, message", [
    ({"weight": "fp12"}, ValueError, "unknown format"),
    ({"weight": ("fp16", "sideways")}, ValueError, "unknown rounding mode"),
    ({"weight": 3}, TypeError, "cast point takes"),
    ({"update": "magic"}, ValueError, "unknown update rule"),
    ({"weight": "fp16", "master_weights": "fp32", "update": "stochastic"}, ValueError, "master"),
    ({"update": "kahan"}, ValueError, "needs a low-precision"),
    ({"loss_scale": -1.0}, ValueError, "loss_scale"),
    ({"accumulate": "fp99"}, ValueError, "unknown accumulation"),
])
def test_bad_policies_are_refused(bad, error, message):
    with pytest.raises(error, match=message):
        PrecisionPolicy(**bad)


def test_unknown_names():
    with pytest.raises(ValueError, match="presets: fp32"):
        get_policy("fp64")
    with pytest.raises(ValueError, match="unknown cast point"):
        POLICIES["fp32"].cast("gradient")
    with pytest.raises(ValueError, match="overflow"):
        Cast("fp16", overflow="wrap")


FORMATS = ["fp16", "bf16", "e4m3", "e5m2", "e3m2", "e2m3", "e2m1"]


@pytest.mark.parametrize("outer, inner", list(itertools.permutations(FORMATS, 2)))
def test_contains_agrees_with_the_value_sets(outer, inner):
    """Cast.contains may only claim what the formats' full value sets confirm."""
    if Cast(outer).contains(Cast(inner)):
        values = lowprec.all_values(inner)
        values = values[np.isfinite(values)]
        assert np.array_equal(lowprec.round(values, outer), values)


def test_contains_finds_the_obvious_cases():
    assert Cast("fp16").contains(Cast("e4m3")) and Cast("fp16").contains(Cast("e5m2"))
    assert Cast("fp32").contains(Cast("bf16")) and Cast("tf32").contains(Cast("fp16"))
    assert not Cast("bf16").contains(Cast("fp16")) and not Cast("fp16").contains(Cast("bf16"))
    assert not Cast("fp16", subnormals=False).contains(Cast("fp16"))


def test_a_numpy_loss_scale_is_stored_as_the_same_plain_number():
    policy = POLICIES["fp16_mixed"].replace(loss_scale=np.float32(1024.0))
    assert policy.fingerprint()["loss_scale"] == 1024.0 and type(policy.loss_scale) is float
    with pytest.raises(ValueError, match="loss_scale must be"):
        POLICIES["fp16_mixed"].replace(loss_scale=np.int64(-4))


def test_which_cast_writes_the_weights_the_optimizer_updates():
    """Micikevicius et al. 2018, sec. 3.1: with a master copy the optimizer updates FP32 weights
    and compute rounds them each step; pure low precision updates the weight-format copy itself,
    rounded as ``update`` says (Kahan summation rounds to nearest)."""
    amp = POLICIES["fp16_mixed"]
    assert amp.keeps_master_weights and amp.stored_point == "master_weights"
    assert (amp.stored_cast == Cast("fp32") and amp.weight_already is None
            and amp.pure_update_cast is None)
    pure = POLICIES["fp16_pure"]
    assert (not pure.keeps_master_weights and pure.stored_point == "weight"
            and pure.stored_cast == Cast("fp16"))
    assert pure.weight_already == Cast("fp16") and pure.pure_update_cast == Cast("fp16")
    stochastic = pure.replace(update="stochastic", weight=Cast("bf16", subnormals=False))
    assert stochastic.pure_update_cast == Cast("bf16", "stochastic", subnormals=False)
    kahan = pure.replace(update="kahan")
    assert kahan.uses_kahan and kahan.pure_update_cast == Cast("fp16") and not pure.uses_kahan
    assert PrecisionPolicy().pure_update_cast is None  # nothing rounded: nothing to write into
