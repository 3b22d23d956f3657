"""The multilayer perceptron: Linear layers with an activation between them.

Parameters are a list with one dict per layer, ``{"weight": W (d_in, d_out), "bias": b (d_out,)}``.
``forward`` and ``backward`` take the weights as used in compute (already rounded at the
``weight`` cast point) and a :class:`~lowprec.nn.cast.Caster` that rounds every other tensor
at its cast point; they are pure functions of their arguments.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from .cast import Caster
from .layers import get_activation, linear, linear_backward
from .losses import get_loss


@dataclass(frozen=True)
class MLPConfig:
    """Shape and numerics of the MLP."""

    sizes: tuple = (64, 64, 64, 10)  # layer widths, input first, output last
    activation: str = "relu"  # between layers: "relu", "gelu" (tanh approximation) or "tanh"
    loss: str = "cross_entropy"  # "cross_entropy" (integer labels) or "mse" (regression)
    init: str = "torch"  # "torch": W, b ~ U(-k, k), k = 1/sqrt(d_in), as torch.nn.Linear;
    #                      "he": W ~ N(0, 2/d_in), b = 0 (He et al. 2015)
    init_gain: float = 1.0  # multiplies the initial weights and biases
    dtype: str = "float32"  # working dtype every array is held in; "float64" for gradient checks

    def __post_init__(self):
        object.__setattr__(self, "sizes", tuple(int(s) for s in self.sizes))
        if len(self.sizes) < 2 or min(self.sizes) < 1:
            raise ValueError("sizes needs at least an input and an output width >= 1, "
                             f"got {self.sizes}")
        if self.init not in ("torch", "he"):
            raise ValueError(f"init must be 'torch' or 'he', got {self.init!r}")
        get_activation(self.activation)
        get_loss(self.loss)
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")


class MLP:
    """Forward, backward and loss of an MLP described by an :class:`MLPConfig`."""

    def __init__(self, config: MLPConfig = MLPConfig(), xp: ModuleType = np) -> None:
        self.config = config
        self.xp = xp
        self.act = get_activation(config.activation)
        self.loss_fn = get_loss(config.loss)
        self.dtype = xp.dtype(config.dtype)
        self.layers = len(config.sizes) - 1

    def init_params(self, rng: np.random.Generator) -> list:
        """Initial weights, drawn in float64 on the host from ``rng``, then held in the working
        dtype."""
        params, gain = [], self.config.init_gain
        for d_in, d_out in zip(self.config.sizes[:-1], self.config.sizes[1:]):
            if self.config.init == "torch":
                k = 1.0 / np.sqrt(d_in)
                W, b = rng.uniform(-k, k, (d_in, d_out)), rng.uniform(-k, k, d_out)
            else:
                W, b = rng.standard_normal((d_in, d_out)) * np.sqrt(2.0 / d_in), np.zeros(d_out)
            params.append({"weight": self.xp.asarray(W * gain, dtype=self.dtype),
                           "bias": self.xp.asarray(b * gain, dtype=self.dtype)})
        return params

    def forward(self, weights: list[dict], x: np.ndarray, cast: Caster) -> tuple[np.ndarray, list]:
        """Output (batch, d_out) of the network, and the cache the backward pass needs."""
        xp, last = self.xp, self.layers - 1
        a = xp.asarray(x, dtype=self.dtype)  # (batch, d_in)
        held = None  # the Cast that a's values are already rounded to, if any
        cache = []
        for l, p in enumerate(weights):
            x_c = cast(a, "input", l, already=held)  # (batch, d_in)
            z = cast(linear(x_c, p["weight"], p["bias"], cast.matmul), "output",
                     l)  # (batch, d_out)
            if l < last:
                kept = cast.spec("output") if self.act.keeps_values else None
                a = cast(self.act.forward(z, xp), "activation", l, already=kept)  # (batch, d_out)
                held = cast.spec("activation") or kept
            else:
                a = z
            cache.append((x_c, z, a))
        return a, cache

    def backward(self, weights: list[dict], cache: list, grad_out: np.ndarray,
                 cast: Caster) -> list:
        """Weight and bias gradients given dL/d(output) (batch, d_out), one dict per layer."""
        xp, last = self.xp, self.layers - 1
        grads = [None] * self.layers
        g = grad_out  # dL/d(output of layer l): from the loss, then from the dgrad GEMM above
        for l in reversed(range(self.layers)):
            x_c, z, a = cache[l]
            g = cast(g, "activation_grad", l)  # (batch, d_out) dL/da, or dL/dlogits when l == last
            if l == last:
                g_z, kept = g, cast.spec("activation_grad")  # no activation after the last layer
            else:
                g_z = self.act.backward(g, z, a, xp)  # (batch, d_out) dL/dz
                kept = cast.spec("activation_grad") if self.act.keeps_values else None
            g_z = cast(g_z, "grad_output", l, already=kept)  # the backward GEMMs' input
            # Each GEMM operand as its second GEMM uses it: the same array, except under block
            # scaling (MX), which quantizes it again along that GEMM's reduction axis.
            W = cast.second_use(weights[l]["weight"], "weight", l) if l > 0 else None  # dgrad
            x_w = cast.second_use(x_c, "input", l)  # wgrad operands
            g_w = cast.second_use(g_z, "grad_output", l)
            grad_x, grad_W, grad_b = linear_backward(g_z, x_w, W, cast.matmul, need_grad_x=l > 0,
                                                     grad_z_for_wgrad=g_w)
            grads[l] = {"weight": cast(grad_W, "weight_grad", l),
                        "bias": cast(grad_b, "bias_grad", l)}
            g = grad_x  # (batch, d_in) = dL/d(activation of layer l-1), rounded at the loop's top
        return grads

    def loss(self, output: np.ndarray, target: np.ndarray,
             scale: float = 1.0) -> tuple[float, np.ndarray]:
        """(loss, d(scale * loss)/d(output)) in the working precision."""
        return self.loss_fn(output, target, self.xp, scale=scale)
