"""The same overflow flags give the same scales and skipped steps as torch.amp.GradScaler, bit
for bit.

A real GradScaler on CPU drives a one-parameter SGD model whose gradient is made inf or finite
on purpose; a step "was taken" when the parameter moved.
"""
import struct

import numpy as np
import pytest

from lowprec.scaling import (DynamicLossScaler, DynamicScalingConfig, make_loss_scaler,
                             unscale_and_check)

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def torch_run(flags, scaler=None, **kwargs):
    """(scales after each update, step taken?, scaler) from torch.amp.GradScaler on CPU."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scaler = scaler or torch.amp.GradScaler("cpu", **kwargs)
    scales, stepped = [], []
    for overflow in flags:
        optimizer.zero_grad()
        loss = scaler.scale(param.sum())  # initialises the scale; the gradient is the scale
        loss.backward()
        if overflow:
            param.grad.fill_(float("inf"))
        before = param.detach().clone()
        scaler.step(optimizer)
        scaler.update()
        stepped.append(bool((param.detach() != before).item()))
        scales.append(scaler.get_scale())
    return scales, stepped, scaler


def ours_run(flags, **kwargs):
    scaler = DynamicLossScaler(DynamicScalingConfig(**kwargs))
    records = [scaler.update(bool(f)) for f in flags]
    return [r.new_scale for r in records], [not r.skipped for r in records], scaler


def bits(values):
    return [struct.pack("<f", v) for v in values]


CASES = {
    "random, interval 3": (np.random.default_rng(0).random(300) < 0.3, dict(growth_interval=3)),
    "random, interval 5, odd factors": (np.random.default_rng(1).random(300) < 0.2,
                                        dict(init_scale=1000.0, growth_factor=1.7,
                                             backoff_factor=0.3, growth_interval=5)),
    "long all-inf run": ([True] * 200 + [False] * 20, dict(growth_interval=4)),
    "growth near 2**127": ([False] * 12 + [True] + [False] * 6,
                           dict(init_scale=2.0**124, growth_interval=2)),
}


@pytest.mark.parametrize("name", CASES)
def test_same_scales_and_skips_as_torch(name):
    flags, kwargs = CASES[name]
    t_scales, t_stepped, t_scaler = torch_run(flags, **kwargs)
    o_scales, o_stepped, o_scaler = ours_run(flags, **kwargs)
    assert bits(o_scales) == bits(t_scales)
    assert o_stepped == t_stepped
    ours = o_scaler.state_dict()
    assert {k: ours[k] for k in t_scaler.state_dict()} == t_scaler.state_dict()


def test_state_dicts_interchange_with_torch():
    flags = np.random.default_rng(2).random(60) < 0.3
    _, _, t_scaler = torch_run(flags[:30], growth_interval=3)
    ours = make_loss_scaler("dynamic")
    ours.load_state_dict(t_scaler.state_dict())  # torch -> lowprec
    back = torch.amp.GradScaler("cpu")
    back.load_state_dict({k: v for k, v in ours.state_dict().items() if k in t_scaler.state_dict()})
    assert back.state_dict() == t_scaler.state_dict()  # lowprec -> torch
    t_scales, _, _ = torch_run(flags[30:], scaler=t_scaler)
    assert bits(ours.update(bool(f)).new_scale for f in flags[30:]) == bits(t_scales)


def test_inverse_scale_matches_torch():
    rng = np.random.default_rng(3)
    extremes = np.array([2.0**-149, 2.0**-128, 2.0**-127, 2.0**127], np.float32)
    for scale in np.concatenate([np.exp(rng.uniform(-80, 80, 200)).astype(np.float32), extremes]):
        ours = make_loss_scaler(float(scale))
        expected = torch.tensor(float(scale),
                                dtype=torch.float32).double().reciprocal().float().item()
        assert struct.pack("<f", ours.inv_scale) == struct.pack("<f", expected)


def test_unscale_matches_torch_kernel():
    rng = np.random.default_rng(4)
    grads = [(rng.standard_normal(257) * 10.0 ** rng.integers(-30, 30, 257)).astype(np.float32)
             for _ in range(3)]
    grads[1][17] = np.nan
    for scale in (65536.0, 3.0, 2.0**-20, 1e30, 2.0**-149):
        scaler = make_loss_scaler(scale)
        ours, found = unscale_and_check(grads, scaler)
        tensors = [torch.from_numpy(g.copy()) for g in grads]
        found_inf = torch.zeros(())
        inv = torch.tensor(scaler.scale, dtype=torch.float32).double().reciprocal().float()
        torch._amp_foreach_non_finite_check_and_unscale_(tensors, found_inf, inv)
        assert found == bool(found_inf.item()) is True
        for mine, theirs in zip(ours, tensors):
            assert mine.tobytes() == theirs.numpy().tobytes()
