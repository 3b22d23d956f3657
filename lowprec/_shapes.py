"""numpy.matmul's shape rules, shared by the tensor-core models (NVIDIA and AMD)."""
from __future__ import annotations

import numpy as np


def matmul_operands(a: np.ndarray, b: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, list[int], tuple[int, ...]]:
    """numpy.matmul's shape rules for two arrays: ``(a, b, squeeze, shape)``, with 1-D operands
    made matrices, the result axes to squeeze away afterwards, and the result's shape."""
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul needs arrays of at least one dimension")
    squeeze = [axis for axis, arr in ((-2, a), (-1, b)) if arr.ndim == 1]
    a = a[None, :] if a.ndim == 1 else a
    b = b[:, None] if b.ndim == 1 else b
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: a has {a.shape[-1]} columns but b has {b.shape[-2]} rows")
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    return a, b, squeeze, shape
