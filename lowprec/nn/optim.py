"""Optimizers, reproducing torch.optim on the CPU, and the rules that write an update into
low-precision weights.

``opt.apply(w, grad, state, step, round_state)`` returns ``(new_w, u, new_state)``:

* ``new_w``: the updated weights in FP32, computed operation by operation as torch.optim's
  default CPU path does (the single-tensor for-loop: ``foreach`` and ``fused`` are off for CPU
  tensors): SGD as ``_single_tensor_sgd`` (torch/optim/sgd.py), Adam and AdamW as
  ``_single_tensor_adam`` (torch/optim/adam.py; AdamW is Adam with decoupled weight decay);
* ``u``: the same step as an update to subtract, ``new_w ~ w - u``, for the writers that need one
  (Kahan summation, the update statistics);
* the new state buffers, each stored through ``round_state`` (the ``optimizer_state`` cast
  point; the identity for FP32 state, as in torch).

Hyperparameters are Python floats, as in torch: torch converts each scalar argument of a
float32 tensor op to float32 before using it, and does scalar-only arithmetic (``1 - beta1``,
``lr / (1 - beta1**step)``) in float64; so does this module. Measured against torch 2.13 CPU
(AVX-512 kernels) element by element, each torch op is (fma = one rounding of ``a * b + c``):

* ``x.mul_(s)``: ``x * s``; ``x.add_(y, alpha=a)`` and ``x.add(y, alpha=a)``: ``fma(a, y, x)``;
* ``x.addcmul_(y, z, value=s)``: ``fma(s * y, z, x)``; ``x.addcdiv_(y, z, value=s)``:
  ``x + (s * y) / z``;
* ``x.lerp_(y, w)``: ``fma(w, y - x, x)`` when ``|w| < 0.5``, else ``fma(w - 1, y - x, y)``;
* ``x.sqrt()``, ``x / s``, ``x.add_(s)``: rounded once each. torch's float32 ``sqrt`` on the CPU
  calls MKL's ``vmsSqrt``, which is *not* correctly rounded (on random inputs about 17% of
  results are 1 ulp off); this module takes the correctly rounded square root. So SGD (no
  square root) matches torch bit for bit; plain Adam matches it in the moments at every step
  and in each weight whose square roots MKL rounded correctly; with weight decay (Adam's L2,
  AdamW) the weights feed back into the step, so such a difference can spread. With a
  correctly rounded sqrt in torch, all of them match bit for bit (tests/test_torch_optim.py).

Writing the step back:

* with master weights, ``new_w`` is the master copy, rounded at ``master_weights`` (exact for
  FP32) and re-rounded for compute next step (Micikevicius et al. 2018, sec. 3.1);
* without (pure low precision), the weights' format holds ``new_w`` rounded to it: to nearest
  (updates below half an ulp vanish: "stagnation"), or stochastically (unbiased: small updates
  survive on average; ``new_w`` is within an FP32 rounding of the exact step, far below a 16-bit
  ulp); or ``w - u``
  with Kahan-compensated summation, which carries the rounding error into the next step
  (Zamirai et al., "Revisiting BFloat16 Training", arXiv:2010.06192, 2020).
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from ..arith import _sum_to_odd
from ..rounding import RoundingMode

_F32 = np.float32
RoundState = Callable[[np.ndarray], np.ndarray]  # rounds a buffer at its cast point


def _array_module(*arrays):
    for x in arrays:
        if type(x).__module__.split(".")[0] == "cupy":
            return sys.modules["cupy"]
    return np


def fma_fp32(a: np.ndarray | float, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``a * b + c`` for float32 arrays, rounded once to float32 (nearest, ties to even).

    The product of two float32s (24-bit significands) is exact in float64 (53 bits), but the
    float64 sum ``s`` can round, and rounding that to float32 is a double rounding. It can only
    go wrong where ``s`` lies exactly on a float32 midpoint: midpoints are float64 numbers, so
    rounding the exact sum to nearest float64 never crosses one, and off a midpoint both sums
    round to the same float32. Those few elements (and every result below float32's smallest
    normal, checked in full) take the exact path: the sum rounded to odd at 53 bits, which
    rounds once more to float32 correctly (``lowprec.arith._sum_to_odd``: Boldo & Melquiond,
    IEEE TC 57(4), 2008; 53 >= 24 + 2).
    """
    xp = _array_module(a, b, c)  # NumPy, or CuPy for the trainer on a GPU
    if np.ndim(a) == 0 and a == 1:  # 1 * b + c: a float32 addition is already rounded once
        with np.errstate(invalid="ignore", over="ignore"):
            return xp.asarray(b, _F32) + xp.asarray(c, _F32)
    with np.errstate(invalid="ignore", over="ignore"):  # inf and NaN operands are expected
        p = xp.asarray(a, _F32).astype(np.float64) * xp.asarray(b, _F32)
        c = xp.asarray(c, _F32).astype(np.float64)
        s = xp.asarray(p + c)
        # a normal float32 result drops 29 of s's 52 fraction bits: a midpoint drops 1000...0;
        # s == 0 is exact (float64 holds every float32 product and sum without underflow)
        bits = s.view(np.int64)
        exponent = bits & 0x7FF0000000000000
        suspect = ((bits & 0x1FFFFFFF) == 0x10000000) | ((exponent < (1023 - 126) << 52) & (s != 0))
        if suspect.any():  # rare: gather them
            p, c = xp.broadcast_to(p, s.shape), xp.broadcast_to(c, s.shape)
            s[suspect] = _sum_to_odd(p[suspect], c[suspect], RoundingMode.NEAREST)
        return s.astype(_F32)  # beyond float32's range: inf, as IEEE says


@dataclass(frozen=True)
class SGD:
    """SGD as torch.optim.SGD: v = momentum * v + (1 - dampening) * g (v = g at step 1);
    w = w - lr * v (or w - lr * (g + momentum * v) with nesterov); weight_decay adds wd * w to g."""

    lr: float = 0.1  # learning rate
    momentum: float = 0.9  # 0 keeps no velocity buffer
    weight_decay: float = 0.0  # L2 penalty, added to the gradient
    dampening: float = 0.0  # scales the gradient added to the velocity (not at step 1)
    nesterov: bool = False  # Nesterov momentum, torch's form (Sutskever et al., ICML 2013)

    def init_state(self, param: np.ndarray, xp: ModuleType) -> dict:
        return {"velocity": xp.zeros_like(param)} if self.momentum else {}

    def apply(self, w: np.ndarray, grad: np.ndarray, state: dict, step: int,
              round_state: RoundState) -> tuple[np.ndarray, np.ndarray, dict]:
        """(new weights, update u, new state) for one parameter; ``step`` counts from 1."""
        # torch/optim/sgd.py, _single_tensor_sgd, op by op
        if self.weight_decay:
            grad = fma_fp32(_F32(self.weight_decay), w, grad)  # grad.add(param, alpha=wd)
        new_state = {}
        if self.momentum:
            if step == 1:  # torch creates the buffer as a copy of the gradient
                velocity = grad
            else:  # buf.mul_(momentum).add_(grad, alpha=1 - dampening)
                velocity = fma_fp32(_F32(1 - self.dampening), grad,
                                    state["velocity"] * _F32(self.momentum))
            velocity = round_state(velocity)
            new_state = {"velocity": velocity}
            # grad.add(buf, alpha=momentum), or buf itself
            grad = fma_fp32(_F32(self.momentum), velocity, grad) if self.nesterov else velocity
        new_w = fma_fp32(_F32(-self.lr), grad, w)  # param.add_(grad, alpha=-lr): one rounding
        return new_w, grad * _F32(self.lr), new_state


@dataclass(frozen=True)
class Adam:
    """Adam (Kingma & Ba 2015, Algorithm 1) in torch.optim.Adam's form: bias-corrected moments,
    eps added to sqrt(v_hat); weight_decay adds wd * w to the gradient (L2; see AdamW)."""

    lr: float = 1e-3  # learning rate
    beta1: float = 0.9  # decay of the first-moment (mean) estimate
    beta2: float = 0.999  # decay of the second-moment (uncentred variance) estimate
    eps: float = 1e-8  # added to sqrt(v_hat); in FP32 arithmetic, so it does not underflow
    weight_decay: float = 0.0

    decoupled = False  # AdamW: decay the weights instead of adding to the gradient

    def init_state(self, param: np.ndarray, xp: ModuleType) -> dict:
        return {"m": xp.zeros_like(param), "v": xp.zeros_like(param)}

    def apply(self, w: np.ndarray, grad: np.ndarray, state: dict, step: int,
              round_state: RoundState) -> tuple[np.ndarray, np.ndarray, dict]:
        """(new weights, update u, new state) for one parameter; ``step`` counts from 1."""
        # torch/optim/adam.py, _single_tensor_adam (amsgrad off), op by op
        decayed = w
        if self.weight_decay and self.decoupled:
            decayed = w * _F32(1 - self.lr * self.weight_decay)  # param.mul_(1 - lr * wd)
        elif self.weight_decay:
            grad = fma_fp32(_F32(self.weight_decay), w, grad)  # grad.add(param, alpha=wd)
        m = round_state(_lerp(state["m"], grad, _F32(1 - self.beta1)))  # exp_avg.lerp_(g, 1 - b1)
        # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        v = round_state(fma_fp32(grad * _F32(1 - self.beta2), grad, state["v"] * _F32(self.beta2)))
        bias_correction1 = 1 - self.beta1**step  # Python floats (float64), as in torch
        bias_correction2_sqrt = (1 - self.beta2**step) ** 0.5
        step_size = self.lr / bias_correction1
        denom = _array_module(v).sqrt(v) / _F32(bias_correction2_sqrt) + _F32(self.eps)
        # param.addcdiv_(exp_avg, denom, value=-step_size): param + (value * m) / denom
        change = (m * _F32(-step_size)) / denom
        new_w = decayed + change
        u = (w - decayed) - change if decayed is not w else -change
        return new_w, u, {"m": m, "v": v}


@dataclass(frozen=True)
class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay, w = (1 - lr * wd) * w before the Adam step
    (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Algorithm 2);
    torch.optim.AdamW's defaults."""

    weight_decay: float = 1e-2

    decoupled = True


def _lerp(start, end, weight):
    """torch's ``start.lerp_(end, weight)`` in float32 (aten/src/ATen/native/Lerp.h: the form
    that is exact at the nearer end; the CPU kernel fuses the multiply-add)."""
    if abs(weight) < 0.5:
        return fma_fp32(weight, end - start, start)
    return fma_fp32(weight - _F32(1), end - start, end)


def kahan_update(w: np.ndarray, u: np.ndarray, compensation: np.ndarray,
                 round_to_weights: RoundState) -> tuple[np.ndarray, np.ndarray]:
    """Kahan-compensated ``w - u`` in low precision: returns (new w, new compensation).

    ``compensation`` holds what earlier roundings lost (in the weights' format); adding it back
    before rounding lets many small updates accumulate instead of vanishing.
    """
    y = -u - compensation  # the step to take, corrected by the carried error (working precision)
    new_w = round_to_weights(w + y)
    # (new_w - w) is exact for neighbouring low-precision values; minus y leaves the error made
    new_compensation = round_to_weights((new_w - w) - y)
    return new_w, new_compensation
