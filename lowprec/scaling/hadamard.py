"""The random Hadamard transform (RHT) of NVFP4 and MXFP4 training.

A block-scaled format gives each block of 16 or 32 values one scale, so a single outlier sets
the scale of its whole block and the small values beside it round to zero. NVIDIA's NVFP4
recipe (arXiv 2509.25149, its random Hadamard transform section) therefore rotates the two
inputs of the weight-gradient GEMM before quantizing them: tile by tile along the reduction
dimension, each tile ``x`` of ``d = 16`` values becomes ::

    y = x @ M,      M = (1/sqrt(d)) * diag(s) @ H_d

where ``H_d`` is the Sylvester Hadamard matrix (entries +-1, ``H_d @ H_d.T = d * I``) and ``s``
one fixed vector of random signs shared by every layer (Transformer Engine:
transformer_engine/pytorch/tensor/nvfp4_tensor.py ``get_rht_matrix`` builds
``diag(s) @ H_16 * 0.25`` from the hard-coded ``get_wgrad_sign_vector``, kept here as
:data:`TE_WGRAD_SIGNS`; TE docs features/low_precision_training/nvfp4). ``M`` is orthogonal, so
a GEMM that transforms both operands along K gets the same product, ``(A M)(M^T B) = A B``, while
each rotated tile mixes all ``d`` values and an outlier's energy spreads over the whole tile.
Tseng, Yu and Park (arXiv 2502.20586) use the same transform for MXFP4 backward GEMMs.

Functions
---------
* :func:`hadamard_matrix` ``(d)``: the unnormalised Sylvester ``H_d`` (float64, +-1).
* :func:`random_signs` ``(d, seed)``: ``d`` random signs +-1.0 from a NumPy generator.
* :func:`rht` ``(x, signs, *, axis, dtype)`` and :func:`inverse_rht`: the transform and its
  inverse ``x = y @ M.T = ((y @ H_d) / sqrt(d)) * s``, tile by tile along ``axis`` with
  ``d = len(signs)``; ``x.shape[axis]`` must be a multiple of ``d``.

Precision: what is rounded where
--------------------------------
* ``dtype=None`` (the reference): float64 throughout, by the fast Walsh-Hadamard butterflies
  (``log2(d)`` stages of ``a + b, a - b``) and one multiplication by ``1/sqrt(d)``. The sign
  flips are exact and, for ``d`` a power of 4 (16 included), so is ``1/sqrt(d) = 2**-k``; the only
  roundings are float64 additions, so the result is within a few float64 ulps of the exact
  transform (zero error when the partial sums fit in 53 bits, e.g. values of FP16/BF16/FP8
  data within a modest exponent range).
* ``dtype`` a format (``"fp32"``, ``"bf16"``, ``"fp16"``, ... anything ``lowprec.round`` takes):
  the transform is computed as the small GEMM that Transformer Engine runs on tensor cores
  (transformer_engine/common/hadamard_transform/hadamard_transform.cu, ``mma`` on 16x16 tiles
  with ``k16x16HadamardScale = 0.25f``), every operation rounded to nearest-even in ``dtype``:

  1. the input is rounded once to ``dtype``;
  2. the matrix entries ``M[i, j] = s[i] * H[i, j] / sqrt(d)`` are rounded to ``dtype`` (exact
     for ``d`` a power of 4);
  3. each product ``x[i] * M[i, j]`` is rounded to ``dtype`` (exact for ``d`` a power of 4
     unless it underflows);
  4. output ``j`` is the running sum over ``i = 0, 1, ..., d - 1`` in that order, rounded to
     ``dtype`` after every addition (the first term is the product itself).

  Overflow follows the format's default policy of :func:`lowprec.round`. The result holds
  values of ``dtype`` as float32. TE's own kernel feeds BF16 operands and accumulates in FP32
  in the tensor core's order; ``rht(lowprec.round(x, "bf16"), s, dtype="fp32")`` is the
  closest model here (the FP32 additions happen in index order).

The inverse uses the same procedure with ``M.T`` in place of ``M``.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .. import arith
from ..formats import FP32, FormatLike, as_format
from ..rounding import as_real_array
from ..rounding import round as _round

__all__ = ["TE_WGRAD_SIGNS", "hadamard_matrix", "random_signs", "rht", "inverse_rht"]

# Transformer Engine's fixed sign vector for NVFP4 weight-gradient RHT
# (transformer_engine/pytorch/tensor/nvfp4_tensor.py, get_wgrad_sign_vector).
TE_WGRAD_SIGNS = np.array([1, 1, 1, -1, 1, -1, -1, -1, -1, -1, -1, 1, -1, 1, -1, -1],
                          dtype=np.float64)
TE_WGRAD_SIGNS.flags.writeable = False


def _check_length(d: object, what: str) -> int:
    if isinstance(d, bool) or not isinstance(d, int | np.integer):
        raise TypeError(f"{what} must be an int, got {type(d).__name__}")
    d = int(d)
    if d < 1 or d & (d - 1):
        raise ValueError(f"{what} must be a power of two (1, 2, 4, 8, 16, ...), got {d}")
    return d


def hadamard_matrix(d: int) -> np.ndarray:
    """The Sylvester Hadamard matrix ``H_d`` (float64 entries +-1, symmetric, ``H H^T = d I``).

    ``H_1 = [[1]]`` and ``H_2n = [[H_n, H_n], [H_n, -H_n]]``, so ``H[i, j] = (-1)**popcount(i & j)``
    (the natural order used by scipy.linalg.hadamard and Transformer Engine)."""
    d = _check_length(d, "d")
    h = np.ones((1, 1))
    while h.shape[0] < d:
        h = np.block([[h, h], [h, -h]])
    return h


def random_signs(d: int = 16, seed: int | np.random.Generator = 0) -> np.ndarray:
    """``d`` independent random signs (+1.0 or -1.0, float64), drawn from ``seed`` (an int, or a
    ``np.random.Generator`` whose state advances). NVFP4 training draws one such vector and shares
    it across all layers; :data:`TE_WGRAD_SIGNS` is the one Transformer Engine hard-codes."""
    d = _check_length(d, "d")
    if isinstance(seed, np.random.Generator):
        rng = seed
    elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        rng = np.random.default_rng(int(seed))
    else:
        raise TypeError(f"seed must be an int or a numpy.random.Generator, got "
                        f"{type(seed).__name__}")
    return np.where(rng.integers(0, 2, size=d) == 1, 1.0, -1.0)


def _check_signs(signs: ArrayLike) -> np.ndarray:
    s = as_real_array(signs, "signs")
    if s.ndim != 1:
        raise ValueError(f"signs must be a 1-D vector, got shape {s.shape}")
    _check_length(s.shape[0], "len(signs)")
    if not np.all((s == 1) | (s == -1)):
        bad = s[(s != 1) & (s != -1)][:3]
        raise ValueError(f"signs must all be +1 or -1, got {bad.tolist()}")
    return s.astype(np.float64)


def _tiles(x: np.ndarray, axis: int, d: int) -> tuple[np.ndarray, int]:
    """x with ``axis`` moved last and split into tiles: shape (..., n // d, d)."""
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} is out of range for x of shape {x.shape}")
    moved = np.moveaxis(x, axis, -1)
    n = moved.shape[-1]
    if n % d:
        raise ValueError(f"x.shape[{axis}] = {n} is not a multiple of the Hadamard size "
                         f"d = len(signs) = {d}")
    return moved.reshape(moved.shape[:-1] + (n // d, d)), n


def _untile(t: np.ndarray, x_shape: tuple[int, ...], axis: int) -> np.ndarray:
    axis %= len(x_shape)
    moved_shape = x_shape[:axis] + x_shape[axis + 1:] + (x_shape[axis],)
    return np.moveaxis(t.reshape(moved_shape), -1, axis)


def _walsh_hadamard(t: np.ndarray) -> np.ndarray:
    """``t @ H_d`` on the last axis (length d) by butterflies, in float64."""
    t = t.astype(np.float64)  # a fresh array
    d = t.shape[-1]
    h = 1
    while h < d:
        pairs = t.reshape(t.shape[:-1] + (d // (2 * h), 2, h))
        a, b = pairs[..., 0, :].copy(), pairs[..., 1, :]
        pairs[..., 0, :] += b
        pairs[..., 1, :] = a - b
        h *= 2
    return t


def _gemm_in_format(t: np.ndarray, m: np.ndarray, fmt) -> np.ndarray:
    """``t @ m`` on the last axis with every product and addition rounded to ``fmt`` in index
    order (module docstring, steps 2-4); t already holds values of fmt."""
    m = _round(m, fmt)
    d = m.shape[0]
    if fmt == FP32:  # IEEE float32 operations are correctly rounded: NumPy does them exactly so
        t32 = t.astype(np.float32)
        m32 = m.astype(np.float32)
        acc = t32[..., 0, None] * m32[0]
        for i in range(1, d):
            acc = acc + t32[..., i, None] * m32[i]
        return acc
    acc = arith.mul(t[..., 0, None], m[0], fmt)
    for i in range(1, d):
        acc = arith.add(acc, arith.mul(t[..., i, None], m[i], fmt), fmt)
    return acc.astype(np.float32)


def _transform(x: ArrayLike, signs: ArrayLike, axis: int, dtype: FormatLike | None,
               inverse: bool) -> np.ndarray:
    s = _check_signs(signs)
    d = s.shape[0]
    x = as_real_array(x, "x")
    t, _ = _tiles(x, axis, d)
    if dtype is None:
        if inverse:  # x = (y @ H) / sqrt(d) * s
            out = _walsh_hadamard(t) * (1.0 / np.sqrt(d)) * s
        else:  # y = (x * s) @ H / sqrt(d)
            out = _walsh_hadamard(t * s) * (1.0 / np.sqrt(d))
    else:
        fmt = as_format(dtype)
        m = s[:, None] * hadamard_matrix(d) / np.sqrt(d)  # M = diag(s) H / sqrt(d)
        out = _gemm_in_format(_round(t.astype(np.float64), fmt), m.T if inverse else m, fmt)
    return _untile(out, x.shape, axis)


def rht(x: ArrayLike, signs: ArrayLike, *, axis: int = -1,
        dtype: FormatLike | None = None) -> np.ndarray:
    """The random Hadamard transform of ``x``, tile by tile along ``axis``: each run of
    ``d = len(signs)`` consecutive values ``t`` becomes ``t @ M`` with
    ``M = diag(signs) @ H_d / sqrt(d)``.

    ``dtype=None`` computes in float64 (float64 result); a format (``"fp32"``, ``"bf16"``, ...)
    rounds the input and every multiply and add to that format in a fixed order and returns its
    values as float32 (module docstring). Raises ValueError when ``x.shape[axis]`` is not a
    multiple of d, d is not a power of two, or a sign is not +-1."""
    return _transform(x, signs, axis, dtype, inverse=False)


def inverse_rht(y: ArrayLike, signs: ArrayLike, *, axis: int = -1,
                dtype: FormatLike | None = None) -> np.ndarray:
    """The inverse of :func:`rht` (same ``signs`` and ``axis``): each tile ``t`` becomes
    ``t @ M.T = (t @ H_d) / sqrt(d) * signs``; ``dtype`` as in :func:`rht`."""
    return _transform(y, signs, axis, dtype, inverse=True)
