"""Losses, computed in the working precision (FP32), as autocast runs every loss in FP32.

Each returns ``(loss, grad)`` where ``grad`` is d(scale * loss)/d(output): the loss scale
multiplies the gradient that starts the backward pass, exactly as ``(loss * scale).backward()``.
"""
from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, xp: ModuleType,
                          scale: float = 1.0) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against integer class labels.

    logits (batch, classes), labels (batch,) ints. Returns (loss as a float, grad (batch, classes)).
    """
    n = logits.shape[0]
    rows = xp.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)  # (batch, classes); exp cannot overflow
    log_p = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))  # log softmax
    loss = -float(log_p[rows, labels].astype(xp.float64).mean())
    # d loss / d logits = (softmax - onehot) / n; the per-sample factor c = scale / n first,
    # as autograd's nll_loss backward then log_softmax backward compute it
    c = logits.dtype.type(scale) / logits.dtype.type(n)
    grad = xp.exp(log_p) * c  # (batch, classes)
    grad[rows, labels] -= c
    return loss, grad


def mse(pred: np.ndarray, target: np.ndarray, xp: ModuleType,
        scale: float = 1.0) -> tuple[float, np.ndarray]:
    """Mean over all elements of (pred - target)^2. pred, target (batch, d_out)."""
    diff = pred - target.astype(pred.dtype)  # (batch, d_out)
    loss = float((diff.astype(xp.float64) ** 2).mean())
    grad = diff * pred.dtype.type(2 * scale / diff.size)  # (batch, d_out)
    return loss, grad


def accuracy(logits: np.ndarray, labels: np.ndarray, xp: ModuleType) -> float:
    """Share of rows whose largest logit is at the label."""
    return float((logits.argmax(axis=1) == labels).mean())


LOSSES = {"cross_entropy": softmax_cross_entropy, "mse": mse}


def get_loss(name: str) -> Callable[..., tuple[float, np.ndarray]]:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    return LOSSES[name]
