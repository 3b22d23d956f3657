"""The training step's unscale against PyTorch's own kernel (optional: skipped without torch).

The gradients a lowprec training step produces under a loss scale are handed to
``torch._amp_foreach_non_finite_check_and_unscale_`` with GradScaler's inverse
(``scale.double().reciprocal().float()``): the step's found_inf and unscaled gradients must
agree bit for bit, including the scales where the rule surprises (an inverse that is inf).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from lowprec import data  # noqa: E402
from lowprec.nn import POLICIES, MLPConfig, Trainer  # noqa: E402


def _torch_unscale(grads, scale):
    tensors = [torch.from_numpy(g.copy()) for layer in grads for g in layer.values()]
    found = torch.zeros(1)
    inv = torch.full((), scale, dtype=torch.float32).double().reciprocal().float()
    torch._amp_foreach_non_finite_check_and_unscale_(tensors, found, inv)
    return [t.numpy() for t in tensors], bool(found.item())


@pytest.mark.parametrize("scale", [2.0**16, 3.0, 2.0**40, 2.0**-130])
def test_step_unscales_as_gradscaler(monkeypatch, scale):
    spirals = data.spirals(np.random.default_rng(0), points_per_class=60)
    seen = {}
    original = Trainer._unscale

    def spy(self, grads):
        seen["scaled"] = [{k: v.copy() for k, v in layer.items()} for layer in grads]
        seen["result"] = original(self, grads)
        return seen["result"]
    monkeypatch.setattr(Trainer, "_unscale", spy)
    trainer = Trainer(POLICIES["fp16_mixed"].replace(loss_scale=scale),
                      MLPConfig(sizes=(2, 16, 16, 3)))
    with np.errstate(over="ignore", invalid="ignore"):
        record = trainer.step(spirals.x_train[:64], spirals.y_train[:64])
    expected, found = _torch_unscale(seen["scaled"], scale)
    ours, our_found = seen["result"]
    assert record["found_inf"] == our_found == found
    flat = [g for layer in ours for g in layer.values()]
    for a, b in zip(flat, expected):
        assert (np.array_equal(a.view(np.uint32), b.view(np.uint32))
                or np.array_equal(a, b, equal_nan=True))
