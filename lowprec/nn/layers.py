"""The layers of the MLP, each backward written right under its forward.

Shapes: ``x (batch, d_in)``, ``W (d_in, d_out)``, ``b (d_out,)``, ``z = x @ W + b (batch, d_out)``.
The layers round nothing themselves; the model rounds their inputs and outputs at the cast
points. ``xp`` is the array namespace (NumPy here, CuPy later), ``matmul`` the policy's matmul:
``matmul(a, b, gemm)``, ``gemm`` naming the GEMM ("fprop", "dgrad", "wgrad") so the Caster
knows which cast points its operands come from. A GEMM operand may be a scaled FP8 tensor
(:class:`lowprec.scaling.ScaledTensor`), which only the matmul reads as elements and scales.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType

import numpy as np

from ..scaling.tensor import ScaledTensor, held_values

Tensor = np.ndarray | ScaledTensor  # a GEMM operand: an array, or an FP8 / block-scaled value
MatmulFn = Callable[[Tensor, Tensor, str], np.ndarray]  # (a, b, gemm) -> a @ b; Caster.matmul


def linear(x: Tensor, W: Tensor, b: np.ndarray, matmul: MatmulFn) -> np.ndarray:
    """z = x @ W + b."""
    return matmul(x, W, "fprop") + b  # (batch, d_out); the bias is added in the working precision


def linear_backward(grad_z: Tensor, x: Tensor, W: Tensor, matmul: MatmulFn,
                    need_grad_x: bool = True, grad_z_for_wgrad: Tensor | None = None
                    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of z = x @ W + b given dL/dz: returns (dL/dx or None, dL/dW, dL/db).

    ``grad_z_for_wgrad``: dL/dz as the wgrad GEMM's operand when it differs from ``grad_z``
    (block scaling quantizes it along the batch for that GEMM); by default ``grad_z``.
    """
    grad_z_w = grad_z if grad_z_for_wgrad is None else grad_z_for_wgrad
    grad_W = matmul(x.T, grad_z_w, "wgrad")  # (d_in, d_out)
    grad_b = held_values(grad_z).sum(axis=0)  # (d_out,)
    grad_x = matmul(grad_z, W.T, "dgrad") if need_grad_x else None  # (batch, d_in)
    return grad_x, grad_W, grad_b


class ReLU:
    """max(z, 0). Its outputs are its rounded inputs or 0, so they need no rounding again."""

    name = "relu"
    keeps_values = True  # every output (and gradient) is an input value or zero

    @staticmethod
    def forward(z: np.ndarray, xp: ModuleType) -> np.ndarray:
        return xp.maximum(z, z.dtype.type(0))  # (batch, d)

    @staticmethod
    def backward(grad_a: np.ndarray, z: np.ndarray, a: np.ndarray, xp: ModuleType
                 ) -> np.ndarray:
        # z > 0 passes the gradient, everything else gets 0 (as torch's threshold_backward)
        return xp.where(z > 0, grad_a, grad_a.dtype.type(0))  # (batch, d)


class Tanh:
    """tanh(z); the backward uses the (rounded) output, as autograd does."""

    name = "tanh"
    keeps_values = False

    @staticmethod
    def forward(z: np.ndarray, xp: ModuleType) -> np.ndarray:
        return xp.tanh(z)

    @staticmethod
    def backward(grad_a: np.ndarray, z: np.ndarray, a: np.ndarray, xp: ModuleType
                 ) -> np.ndarray:
        return grad_a * (1 - a * a)


_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_C = 0.044715


class GELU:
    """GELU, tanh approximation (torch's ``GELU(approximate="tanh")``), Hendrycks & Gimpel 2016:
    0.5 z (1 + tanh(k (z + c z^3))) with k = sqrt(2/pi), c = 0.044715."""

    name = "gelu"
    keeps_values = False

    @staticmethod
    def forward(z: np.ndarray, xp: ModuleType) -> np.ndarray:
        inner = _SQRT_2_OVER_PI * (z + _GELU_C * z * z * z)
        return 0.5 * z * (1 + xp.tanh(inner))

    @staticmethod
    def backward(grad_a: np.ndarray, z: np.ndarray, a: np.ndarray, xp: ModuleType
                 ) -> np.ndarray:
        inner = _SQRT_2_OVER_PI * (z + _GELU_C * z * z * z)
        t = xp.tanh(inner)
        d_inner = _SQRT_2_OVER_PI * (1 + 3 * _GELU_C * z * z)
        return grad_a * (0.5 * (1 + t) + 0.5 * z * (1 - t * t) * d_inner)


ACTIVATIONS = {cls.name: cls for cls in (ReLU, GELU, Tanh)}


def get_activation(name: str) -> type[ReLU | GELU | Tanh]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]
