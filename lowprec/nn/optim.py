"""Optimizers and the rules that write an update into low-precision weights.

An optimizer turns a gradient into an update ``u`` (the weights then become ``w - u``) and new
state buffers; it computes in the working precision (FP32, like PyTorch's ``opmath``) and
stores its buffers through ``round_state`` (the ``optimizer_state`` cast point).

Writing ``w - u`` back:

* with master weights, ``w`` is the FP32 master copy and the compute copy is re-rounded from
  it next step (Micikevicius et al. 2018, sec. 3.1);
* without (pure low precision), ``w`` is the low-precision weight itself and ``w - u`` is
  rounded to its format: to nearest (updates below half an ulp vanish: "stagnation"),
  stochastically (unbiased: small updates survive on average), or with Kahan-compensated
  summation, which carries the rounding error into the next step (Zamirai et al.,
  "Revisiting BFloat16 Training", arXiv:2010.06192, 2020).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SGD:
    """SGD with momentum in PyTorch's form: v = momentum * v + g; u = lr * v."""

    lr: float = 0.1  # learning rate
    momentum: float = 0.9  # 0 keeps no velocity buffer

    def init_state(self, param, xp) -> dict:
        return {"velocity": xp.zeros_like(param)} if self.momentum else {}

    def update(self, grad, state: dict, step: int, round_state):
        """(u, new state) for one parameter; ``step`` counts from 1."""
        if not self.momentum:
            return grad * grad.dtype.type(self.lr), {}
        velocity = round_state(state["velocity"] * grad.dtype.type(self.momentum) + grad)
        return velocity * grad.dtype.type(self.lr), {"velocity": velocity}


@dataclass(frozen=True)
class Adam:
    """Adam (Kingma & Ba 2015) with bias correction, PyTorch's default form."""

    lr: float = 1e-3  # learning rate
    beta1: float = 0.9  # decay of the first-moment (mean) estimate
    beta2: float = 0.999  # decay of the second-moment (uncentred variance) estimate
    eps: float = 1e-8  # added to sqrt(v_hat); in FP32 arithmetic, so it does not underflow

    def init_state(self, param, xp) -> dict:
        return {"m": xp.zeros_like(param), "v": xp.zeros_like(param)}

    def update(self, grad, state: dict, step: int, round_state):
        f = grad.dtype.type
        m = round_state(state["m"] * f(self.beta1) + grad * f(1 - self.beta1))
        v = round_state(state["v"] * f(self.beta2) + grad * grad * f(1 - self.beta2))
        m_hat_scale = f(self.lr / (1 - self.beta1**step))
        sqrt_bias2 = f(np.sqrt(1 - self.beta2**step))
        u = m * m_hat_scale / (np.sqrt(v) / sqrt_bias2 + f(self.eps))
        return u, {"m": m, "v": v}


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def kahan_update(w, u, compensation, round_to_weights):
    """Kahan-compensated ``w - u`` in low precision: returns (new w, new compensation).

    ``compensation`` holds what earlier roundings lost (in the weights' format); adding it back
    before rounding lets many small updates accumulate instead of vanishing.
    """
    y = -u - compensation  # the step to take, corrected by the carried error (working precision)
    new_w = round_to_weights(w + y)
    # (new_w - w) is exact for neighbouring low-precision values; minus y leaves the error made
    new_compensation = round_to_weights((new_w - w) - y)
    return new_w, new_compensation
