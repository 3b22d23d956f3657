"""A scaled low-precision tensor as a value: its elements and the scales that decode them.

An FP8 cast under a scaling recipe stores each value ``v`` as an element ``e`` of the element
format (E4M3, E5M2, or an MX element format) and keeps decode scales beside the elements:

* per tensor (Transformer Engine's delayed and current scaling): one float32 ``scale_inv``,
  and the value read back is ``float32(e * scale_inv)`` (TE's dequantize, a float32 product);
* per block (MX, OCP MX v1.0 sec. 5): one power-of-two scale per ``block_size`` consecutive
  elements along ``axis``, the axis the GEMM sums over; ``e * X`` is exact in float64.

A GEMM reads the elements and applies the scales itself (see :mod:`lowprec.accumulate`), as
the hardware does; the rest of a model reads :meth:`ScaledTensor.dequantize`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..formats import FloatFormat

__all__ = ["ScaledTensor", "held_values"]


@dataclass(frozen=True, eq=False)
class ScaledTensor:
    """Elements of ``fmt`` and their decode scale(s): per tensor or per block, never both."""

    elements: np.ndarray = field(repr=False)  # float32 numbers of fmt, unscaled (NaN: reads NaN)
    fmt: FloatFormat  # the element format
    scale_inv: np.float32 | None = None  # per-tensor decode scale (TE's scale_inv), or None
    block_scales: np.ndarray | None = field(default=None, repr=False)  # one per block, along axis
    block_size: int | None = None  # elements per block along `axis` (MX: 32)
    axis: int | None = None  # the axis blocks run along (the GEMM's reduction axis)

    def __post_init__(self):
        if not isinstance(self.fmt, FloatFormat):
            raise TypeError(f"fmt must be a FloatFormat, got {self.fmt!r}")
        if (self.scale_inv is None) == (self.block_scales is None):
            raise ValueError("a ScaledTensor has a per-tensor scale_inv or block_scales, "
                             "exactly one")
        if self.block_scales is not None:
            if not (isinstance(self.block_size, (int, np.integer)) and self.block_size >= 1):
                raise ValueError(f"block_size must be an int >= 1, got {self.block_size!r}")
            ndim = np.ndim(self.elements)
            if not (isinstance(self.axis, (int, np.integer)) and -ndim <= self.axis < ndim):
                raise ValueError(f"axis {self.axis!r} is out of range for {ndim}-dimensional "
                                 "elements")
            object.__setattr__(self, "axis", int(self.axis) % ndim)
        else:
            object.__setattr__(self, "scale_inv", np.float32(self.scale_inv))

    @property
    def shape(self) -> tuple:
        return self.elements.shape

    @property
    def dtype(self) -> np.dtype:
        """The dtype of :meth:`dequantize`'s values."""
        return np.dtype(np.float32)

    @property
    def block_scaled(self) -> bool:
        return self.block_scales is not None

    @property
    def T(self) -> ScaledTensor:  # noqa: N802 - numpy's name
        """The transpose (of a 2-D tensor): the same elements and scales, axes swapped."""
        if self.elements.ndim != 2:
            raise ValueError(f"T needs a 2-D ScaledTensor, got shape {self.shape}")
        if not self.block_scaled:
            transposed = ScaledTensor(self.elements.T, self.fmt, self.scale_inv)
        else:
            transposed = ScaledTensor(self.elements.T, self.fmt, block_scales=self.block_scales.T,
                                      block_size=self.block_size, axis=1 - self.axis)
        if "_values" in self.__dict__:
            transposed.__dict__["_values"] = self.__dict__["_values"].T
        return transposed

    def decode_scales(self) -> np.ndarray:
        """Each element's block scale, float64 (exact: the scales are powers of two), the shape
        of ``elements``; block scaling only."""
        if not self.block_scaled:
            raise ValueError("decode_scales is per block; this tensor has one scale_inv")
        expanded = np.repeat(self.block_scales.astype(np.float64), self.block_size, axis=self.axis)
        return np.take(expanded, np.arange(self.shape[self.axis]), axis=self.axis)

    def exact_values(self) -> np.ndarray:
        """The values the elements and scales stand for, float64: exact for the block scales and
        for a per-tensor scale_inv times an element of at most 29 significant bits."""
        scales = self.decode_scales() if self.block_scaled else np.float64(self.scale_inv)
        with np.errstate(over="ignore", invalid="ignore"):
            return self.elements.astype(np.float64) * scales

    def dequantize(self) -> np.ndarray:
        """The float32 values a model holds: per tensor ``float32(elements * scale_inv)``, a
        float32 product as TE's dequantize computes it; per block the exact ``element * X``
        rounded once to float32."""
        values = self.__dict__.get("_values")  # computed once: a GEMM and the model both read it
        if values is None:
            with np.errstate(over="ignore", invalid="ignore"):
                if not self.block_scaled:
                    values = self.elements * self.scale_inv
                else:
                    values = self.exact_values().astype(np.float32)
            self.__dict__["_values"] = values  # a cache on a frozen value, not a field
        return values


def held_values(x: np.ndarray | ScaledTensor) -> np.ndarray:
    """The values a model reads from ``x``: a ScaledTensor dequantized, an array as it is."""
    return x.dequantize() if isinstance(x, ScaledTensor) else x
