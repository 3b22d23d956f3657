"""A scaled low-precision tensor as a value: its elements and the scales that decode them.

A scaled cast stores each value ``v`` as an element ``e`` of the element format (E4M3, E5M2,
an MX element format, E2M1 for NVFP4) and keeps decode scales beside the elements:

* per tensor (Transformer Engine's delayed and current scaling): one float32 ``scale_inv``,
  and the value read back is ``float32(e * scale_inv)`` (TE's dequantize, a float32 product);
* per block: one decode scale per block, and the value read back is the exact
  ``e * block_scale * tensor_scale`` rounded once to float32. A block is either

  - 1-D: ``block_size`` (an int) consecutive elements along ``axis``, the axis the GEMM sums
    over (MX, OCP MX v1.0 sec. 5: 32; NVFP4: 16; DeepSeek-V3 activations: 128);
    ``block_scales`` has the elements' shape with ``axis`` replaced by the block count; or
  - a 2-D tile ``block_size = (bm, bn)`` over the last two axes (NVFP4 weights 16x16,
    DeepSeek-V3 weights 128x128); ``block_scales`` has shape ``(..., ceil(M/bm), ceil(N/bn))``.

  A last block shorter than the block size covers what is left. ``tensor_scale`` is NVFP4's
  second, per-tensor FP32 level (None: no second level). ``scale_format`` ("e8m0", "e4m3",
  "fp32") says how the block scales are stored; it is informational.

A GEMM reads the elements and applies the scales itself (see :mod:`lowprec.accumulate` and
:meth:`ScaledTensor.k_scales`), as the hardware does; the rest of a model reads
:meth:`ScaledTensor.dequantize`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..formats import FloatFormat

__all__ = ["ScaledTensor", "held_values", "SCALE_FORMATS"]

SCALE_FORMATS = ("e8m0", "e4m3", "fp32")


def _is_int(n) -> bool:
    return isinstance(n, (int, np.integer)) and not isinstance(n, (bool, np.bool_))


def _expand(scales: np.ndarray, repeats: int, axis: int, length: int) -> np.ndarray:
    """Repeat each scale ``repeats`` times along ``axis`` and cut to ``length``."""
    return np.take(np.repeat(scales, repeats, axis=axis), np.arange(length), axis=axis)


@dataclass(frozen=True, eq=False)
class ScaledTensor:
    """Elements of ``fmt`` and their decode scale(s): per tensor or per block, never both."""

    elements: np.ndarray = field(repr=False)  # float32 numbers of fmt, unscaled (NaN: reads NaN)
    fmt: FloatFormat  # the element format
    scale_inv: np.float32 | None = None  # per-tensor decode scale (TE's scale_inv), or None
    block_scales: np.ndarray | None = field(default=None, repr=False)  # one per block
    block_size: int | tuple[int, int] | None = None  # int: 1-D along axis; (bm, bn): 2-D tiles
    axis: int | None = None  # the axis 1-D blocks run along (the GEMM's reduction axis)
    tensor_scale: np.float32 | None = None  # NVFP4's per-tensor second level, or None
    scale_format: str | None = None  # how block scales are stored: "e8m0", "e4m3", "fp32"

    def __post_init__(self):
        if not isinstance(self.fmt, FloatFormat):
            raise TypeError(f"fmt must be a FloatFormat, got {self.fmt!r}")
        if (self.scale_inv is None) == (self.block_scales is None):
            raise ValueError("a ScaledTensor has a per-tensor scale_inv or block_scales, "
                             "exactly one")
        if self.scale_format is not None and self.scale_format not in SCALE_FORMATS:
            raise ValueError(f"unknown scale_format {self.scale_format!r}; valid: "
                             + ", ".join(SCALE_FORMATS))
        ndim = np.ndim(self.elements)
        if self.block_scales is None:
            if self.tensor_scale is not None:
                raise ValueError("tensor_scale is the second level of block scaling; a "
                                 "per-tensor ScaledTensor has only scale_inv")
            object.__setattr__(self, "scale_inv", np.float32(self.scale_inv))
            return
        if self.tensor_scale is not None:
            object.__setattr__(self, "tensor_scale", np.float32(self.tensor_scale))
        if isinstance(self.block_size, tuple):
            if not (len(self.block_size) == 2 and all(_is_int(b) and b >= 1
                                                       for b in self.block_size)):
                raise ValueError(f"a tile block_size must be two ints >= 1, got "
                                 f"{self.block_size!r}")
            if ndim < 2:
                raise ValueError(f"2-D tiles need elements with at least 2 dimensions, got {ndim}")
            if self.axis is not None:
                raise ValueError("2-D tiles run over the last two axes; axis must be None")
            object.__setattr__(self, "block_size", tuple(int(b) for b in self.block_size))
            bm, bn = self.block_size
            m, n = np.shape(self.elements)[-2:]
            want = np.shape(self.elements)[:-2] + (-(-m // bm), -(-n // bn))
        else:
            if not (_is_int(self.block_size) and self.block_size >= 1):
                raise ValueError(f"block_size must be an int >= 1 or a (bm, bn) tile, got "
                                 f"{self.block_size!r}")
            if not (_is_int(self.axis) and -ndim <= self.axis < ndim):
                raise ValueError(f"axis {self.axis!r} is out of range for {ndim}-dimensional "
                                 "elements")
            object.__setattr__(self, "axis", int(self.axis) % ndim)
            object.__setattr__(self, "block_size", int(self.block_size))
            shape = list(np.shape(self.elements))
            shape[self.axis] = -(-shape[self.axis] // self.block_size)
            want = tuple(shape)
        if np.shape(self.block_scales) != want:
            raise ValueError(f"block_scales has shape {np.shape(self.block_scales)}; elements "
                             f"of shape {np.shape(self.elements)} in blocks of "
                             f"{self.block_size} need {want}")

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
    def tiled(self) -> bool:
        """True for 2-D tiles ``(bm, bn)``, False for 1-D blocks or a per-tensor scale."""
        return isinstance(self.block_size, tuple)

    @property
    def T(self) -> ScaledTensor:  # noqa: N802 - numpy's name
        """The transpose (of a 2-D tensor): the same elements and scales, axes swapped."""
        if self.elements.ndim != 2:
            raise ValueError(f"T needs a 2-D ScaledTensor, got shape {self.shape}")
        if not self.block_scaled:
            transposed = ScaledTensor(self.elements.T, self.fmt, self.scale_inv)
        elif self.tiled:
            transposed = ScaledTensor(self.elements.T, self.fmt, block_scales=self.block_scales.T,
                                      block_size=self.block_size[::-1],
                                      tensor_scale=self.tensor_scale,
                                      scale_format=self.scale_format)
        else:
            transposed = ScaledTensor(self.elements.T, self.fmt, block_scales=self.block_scales.T,
                                      block_size=self.block_size, axis=1 - self.axis,
                                      tensor_scale=self.tensor_scale,
                                      scale_format=self.scale_format)
        if "_values" in self.__dict__:
            transposed.__dict__["_values"] = self.__dict__["_values"].T
        return transposed

    def _tensor_factor(self) -> np.float64:
        return np.float64(1.0 if self.tensor_scale is None else self.tensor_scale)

    def decode_scales(self) -> np.ndarray:
        """Each element's full decode scale (block scale times tensor scale), float64, the shape
        of ``elements``; block scaling only. Exact: a block scale (E8M0, E4M3 or float32) times
        a float32 tensor scale needs at most 48 significant bits."""
        if not self.block_scaled:
            raise ValueError("decode_scales is per block; this tensor has one scale_inv")
        scales = self.block_scales.astype(np.float64)
        if self.tiled:
            bm, bn = self.block_size
            scales = _expand(scales, bm, -2, self.shape[-2])
            scales = _expand(scales, bn, -1, self.shape[-1])
        else:
            scales = _expand(scales, self.block_size, self.axis, self.shape[self.axis])
        if self.tensor_scale is not None:
            scales = scales * self._tensor_factor()
        return scales

    def k_scales(self, k_axis: int) -> tuple[np.ndarray, int]:
        """The scales a GEMM summing over ``k_axis`` applies per block of K: ``(scales, kb)``.

        ``scales`` (float64, tensor_scale folded in) has the elements' shape with ``k_axis``
        replaced by ``ceil(K / kb)``: one scale per K-block per row (or column); ``kb`` is the
        K-block length. A per-tensor scale gives one block of the whole K. Raises ValueError
        when 1-D blocks run along another axis than ``k_axis``.
        """
        ndim = self.elements.ndim
        if not (_is_int(k_axis) and -ndim <= k_axis < ndim):
            raise ValueError(f"k_axis {k_axis!r} is out of range for {ndim}-dimensional elements")
        k_axis = int(k_axis) % ndim
        if not self.block_scaled:
            shape = list(self.shape)
            shape[k_axis] = 1
            return np.full(shape, np.float64(self.scale_inv)), max(self.shape[k_axis], 1)
        scales = self.block_scales.astype(np.float64) * self._tensor_factor()
        if self.tiled:
            if k_axis < ndim - 2:
                raise ValueError(f"2-D tiles cover the last two axes; k_axis {k_axis} is not one")
            bm, bn = self.block_size
            if k_axis == ndim - 1:  # scales run along K in steps of bn; rows repeat per bm
                return _expand(scales, bm, -2, self.shape[-2]), bn
            return _expand(scales, bn, -1, self.shape[-1]), bm
        if k_axis != self.axis:
            raise ValueError(f"the blocks run along axis {self.axis}, not along k_axis {k_axis}: "
                             "a GEMM summing over k_axis cannot apply them per block of K")
        return scales, self.block_size

    def exact_values(self) -> np.ndarray:
        """The values the elements and scales stand for, float64: exact for block scales (an
        element of at most 4 significant bits times at most 48) and for a per-tensor scale_inv
        times an element of at most 29 significant bits."""
        scales = self.decode_scales() if self.block_scaled else np.float64(self.scale_inv)
        with np.errstate(over="ignore", invalid="ignore"):
            return self.elements.astype(np.float64) * scales

    def _products_exact_in_f32(self) -> bool:
        """Whether every ``element * block_scale`` is exact in float32, so that multiplying it
        by the tensor scale in float32 rounds the exact three-factor product once, as
        :meth:`exact_values` does (NVFP4: 2-bit E2M1 elements times 4-bit E4M3 scales). True
        when each finite nonzero block scale is a normal float32 whose significand leaves room
        for the element's (at most ``mantissa_bits + 1`` bits) and the products stay within
        float32's normal range; zero, infinite and NaN scales give the same special either
        way. Relies on the elements being numbers of ``fmt``, as the class requires."""
        fmt = self.fmt
        scales = self.block_scales.reshape(-1)
        finite = scales[np.isfinite(scales) & (scales != 0)]
        if finite.size == 0:
            return True
        mags = np.abs(finite)
        low_bits = np.uint32((1 << (fmt.mantissa_bits + 1)) - 1)  # must be zero: 24 in all
        smallest = 2.0 ** (fmt.emin - fmt.mantissa_bits)  # the element format's subnormal step
        return bool(mags.min() >= np.finfo(np.float32).tiny
                    and float(mags.min()) * smallest >= np.finfo(np.float32).tiny
                    and float(mags.max()) * fmt.max <= np.finfo(np.float32).max
                    and not np.any(mags.view(np.uint32) & low_bits))

    def _block_product_f32(self) -> np.ndarray:
        """``element * block_scale`` as one float32 multiplication per element: the same bits as
        :meth:`exact_values` rounded to float32 (no tensor scale). Why: a float32 element and
        a float32 scale have at most 24 significant bits each, so their product has at most
        48 bits and an exponent between -298 and 256: float64 holds it exactly, and its cast
        to float32 rounds it once, to nearest-even, subnormal and overflow results included.
        IEEE 754-2019 sec. 4.3 and 5.4.1 define the float32 product as that same exact product
        rounded once in the same way, so the two agree bit for bit, NaN and infinities included
        (tests/test_block_fast_paths.py checks adversarial values)."""
        elements, scales = self.elements, self.block_scales  # both float32
        if self.tiled:
            bm, bn = self.block_size
            scales = _expand(_expand(scales, bm, -2, self.shape[-2]), bn, -1, self.shape[-1])
            return elements * scales
        axis, size = self.axis, self.block_size
        length = self.shape[axis]
        if length % size:  # a partial last block: repeat each scale along the axis
            return elements * _expand(scales, size, axis, length)
        # Whole blocks: split the axis into (blocks, block) and broadcast one scale per block.
        split = self.shape[:axis] + (length // size, size) + self.shape[axis + 1:]
        product = elements.reshape(split) * np.expand_dims(scales, axis + 1)
        return product.reshape(self.shape)

    def dequantize(self) -> np.ndarray:
        """The float32 values a model holds: per tensor ``float32(elements * scale_inv)``, a
        float32 product as TE's dequantize computes it; per block the exact
        ``element * block_scale * tensor_scale`` rounded once to float32."""
        values = self.__dict__.get("_values")  # computed once: a GEMM and the model both read it
        if values is None:
            with np.errstate(over="ignore", invalid="ignore"):
                if not self.block_scaled:
                    values = self.elements * self.scale_inv
                elif (getattr(self.elements, "dtype", None) == np.float32
                      and getattr(self.block_scales, "dtype", None) == np.float32
                      and (self.tensor_scale is None or self._products_exact_in_f32())):
                    values = self._block_product_f32()
                    if self.tensor_scale is not None:  # (element * block scale) is exact
                        values *= self.tensor_scale
                else:
                    values = self.exact_values().astype(np.float32)
            self.__dict__["_values"] = values  # a cache on a frozen value, not a field
        return values


def held_values(x: np.ndarray | ScaledTensor) -> np.ndarray:
    """The values a model reads from ``x``: a ScaledTensor dequantized, an array as it is."""
    return x.dequantize() if isinstance(x, ScaledTensor) else x
