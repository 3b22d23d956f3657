"""The MLP's hand-written backward pass against central finite differences, in float64.

With the policy that rounds nothing and float64 arrays, the backward pass must agree with
(L(w + h) - L(w - h)) / 2h for every weight and bias, every activation and both losses.
"""
import numpy as np
import pytest

from lowprec.nn import MLP, Caster, MLPConfig, PrecisionPolicy

EXACT = PrecisionPolicy(name="exact")  # no cast point rounds


def _loss_and_grads(model, params, x, y):
    cast = Caster(EXACT)
    out, cache = model.forward(params, x, cast)
    loss, grad_out = model.loss(out, y)
    return loss, model.backward(params, cache, grad_out, cast)


def _finite_difference(model, params, x, y, layer, name, index, h=1e-6):
    def loss_at(delta):
        shifted = [{k: v.copy() for k, v in p.items()} for p in params]
        shifted[layer][name][index] += delta
        return _loss_and_grads(model, shifted, x, y)[0]
    return (loss_at(h) - loss_at(-h)) / (2 * h)


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_backward_matches_finite_differences(activation, loss):
    rng = np.random.default_rng(1)
    config = MLPConfig(sizes=(5, 7, 6, 3), activation=activation, loss=loss, dtype="float64",
                       init="he")
    model = MLP(config)
    params = model.init_params(rng)
    for p in params:  # non-zero biases so their gradients are exercised
        p["bias"] = rng.standard_normal(p["bias"].shape) * 0.1
    x = rng.standard_normal((4, 5))
    y = rng.integers(0, 3, 4) if loss == "cross_entropy" else rng.standard_normal((4, 3))
    _, grads = _loss_and_grads(model, params, x, y)
    worst = 0.0
    for layer, p in enumerate(params):
        for name, value in p.items():
            for index in np.ndindex(value.shape):
                numeric = _finite_difference(model, params, x, y, layer, name, index)
                analytic = grads[layer][name][index]
                worst = max(worst, abs(numeric - analytic) / max(1e-3, abs(numeric)))
    print(f"{activation}/{loss}: worst relative error {worst:.2e}")
    assert worst < 1e-6


def test_loss_scale_multiplies_the_gradient_exactly():
    """d(scale * loss)/dw: a power-of-two scale changes no bit but the exponent."""
    rng = np.random.default_rng(2)
    model = MLP(MLPConfig(sizes=(4, 8, 3)))
    params = model.init_params(rng)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    cast = Caster(EXACT)
    out, cache = model.forward(params, x, cast)
    _, g1 = model.loss(out, y, scale=1.0)
    _, g1024 = model.loss(out, y, scale=1024.0)
    assert np.array_equal(g1 * np.float32(1024), g1024)


def test_gradients_of_a_known_case():
    """One linear layer, MSE: dL/dW = 2 x^T (xW + b - y) / n, written out by hand."""
    model = MLP(MLPConfig(sizes=(2, 1), loss="mse", dtype="float64"))
    params = [{"weight": np.array([[0.5], [-1.0]]), "bias": np.array([0.25])}]
    x = np.array([[1.0, 2.0], [3.0, -1.0]])
    y = np.array([[0.0], [1.0]])
    loss, grads = _loss_and_grads(model, params, x, y)
    residual = x @ params[0]["weight"] + params[0]["bias"] - y  # [[-1.25], [1.75]]
    assert loss == pytest.approx(float((residual**2).mean()))
    np.testing.assert_allclose(grads[0]["weight"], 2 * x.T @ residual / 2)
    np.testing.assert_allclose(grads[0]["bias"], 2 * residual.sum(axis=0) / 2)
