"""Sums and products with an accumulation model: :func:`sum`, :func:`dot` and :func:`matmul`.

An *accumulator* says how a sum of products is added up. Three kinds, one protocol: each has
``matmul(a, b, *, inputs=None, held=None, output=None, mode=..., rng=..., random_bits=...)``,
``dot(a, b, ...)`` with the same options, and ``sum(x, axis=None, *, output=None, mode=...,
rng=..., random_bits=...)``:

* :data:`BLAS` -- the sums in the operands' dtype (FP32 for float32 arrays), in the BLAS
  library's own order, as a GPU GEMM library adds; nothing is rounded on the way.
* :class:`FormatAccumulation` -- every addition rounded to a format (``acc = round(acc + a*b)``,
  the product exact and fused, as an FP32 GEMM on CUDA cores does with FFMA), in sequential or
  pairwise order, optionally in blocks.
* :class:`lowprec.tensorcore.TensorCoreModel` -- the block-FMA model of a tensor core.

:func:`as_accumulator` turns ``"blas"``, a format (or its name) or a tensor-core preset name
into an accumulator and passes accumulators through; the module functions take any of these.

``matmul`` also takes :class:`lowprec.scaling.ScaledTensor` operands, and computes what the
hardware computes for them. Per-tensor scales (FP8 delayed/current scaling): the elements go
through the accumulator and the decode scales multiply the sum in FP32, as cuBLASLt's FP8
matmul does, ``D = scale_a * scale_b * (A @ B)`` with Transformer Engine passing each operand's
scale_inv as its scale (transformer_engine/common/gemm/cublaslt_gemm.cu; the order of the two
FP32 products is not documented: the scalar ``scale_a * scale_b`` is formed first).

Block scales (MX, NVFP4, 1x128 / 128x128 blocks, rowwise): ``a``'s scales run along its last
axis and ``b``'s along its first, so every block of K has one scale pair (``ScaledTensor.k_scales``)
and the hardware applies them inside the sum. How depends on the accumulator:

* :data:`BLAS` multiplies the dequantized values, as a model holding them would.
* :class:`FormatAccumulation` sums the exact products ``(e_a X_a)(e_b X_b)`` (exact in float64
  for elements of at most 4 significant bits and power-of-two scales; otherwise fused through
  :func:`lowprec.arith.fma`) in its order: an FFMA GEMM of the dequantized tensors.
* A tensor-core model with ``block_scaled_mma = True`` (Blackwell's ``mma...block_scale``) gets
  the elements and the decoded block scales, ``tensorcore.matmul(ea, eb, model, scale_a=,
  scale_b=)``; NVFP4's per-tensor scales then multiply the result in FP32,
  ``fp32(fp32(ta * tb) * D)``, as the GEMM's alpha.
* A tensor-core model without it (Hopper, ``H100_FP8``) runs DeepSeek-V3's fine-grained scheme
  (arXiv 2412.19437, sec. 3.3.2, "fine-grained quantization" and "increasing accumulation
  precision"; deepseek-ai/DeepGEMM, deep_gemm/include/deep_gemm/fp8_gemm.cuh): the tensor core
  computes each K-block's element dot product ``p_j`` on its own (the model's block-FMA chain
  over that K-block, starting from 0), then on CUDA cores, in FP32, per output element and in
  order of j: ``s_j = fp32(scale_a[i, j] * scale_b[j, n])``, then
  ``acc = fp32(acc + s_j * p_j)`` rounded once (DeepGEMM's ``final_accum += scale * accum`` is
  contracted to an FFMA by nvcc), from ``acc = 0``. Each operand's decode scale is taken as an
  FP32 number (exact for E8M0 and FP32 scales). The K-block must be a multiple of the model's
  block of products (else ValueError), unless K holds a single block, which the kernel pads with
  zeros (rowwise scales).

A block-scaled operand times a per-tensor scaled one is refused (ValueError); a plain array next
to a block-scaled operand counts as elements with scale 1.
"""
from __future__ import annotations

import builtins
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from . import tensorcore
from .arith import _arith_format, _reject_invalid, _reject_nan_operands, _sum_to_odd, fma
from .arith import add as _add
from .formats import FP32, FloatFormat, FormatLike, as_format
from .rounding import ModeLike, RoundingMode, as_mode, as_real_array, round as _round
from .scaling.tensor import ScaledTensor
from .cdna import MFMAModel
from .tensorcore import TensorCoreModel

__all__ = ["BLAS", "Blas", "FormatAccumulation", "ORDERS", "as_accumulator", "dot", "matmul",
           "sum"]

ORDERS = ("sequential", "pairwise")


# --- the accumulators -----------------------------------------------------------------------------
class _Protocol:
    """The protocol's public methods, around each accumulator's ``_sum_of_products`` (the sums
    of products, in its result format) and ``_sum_terms`` (the sums of x along its last axis).
    TensorCoreModel (lowprec.tensorcore) defines the same three methods."""

    def matmul(self, a: Operand, b: Operand, *, inputs: FormatPair | None = None,
               held: FormatPair | None = None, output: FormatLike | None = None,
               mode: ModeLike = "nearest", rng: np.random.Generator | None = None,
               random_bits: int | None = None) -> np.ndarray:
        """``a @ b``: see :func:`lowprec.matmul`."""
        return _matmul(self, a, b, inputs, held, output, mode, rng, random_bits)

    def dot(self, a: Operand, b: Operand, *, inputs: FormatPair | None = None,
            held: FormatPair | None = None, output: FormatLike | None = None,
            mode: ModeLike = "nearest", rng: np.random.Generator | None = None,
            random_bits: int | None = None) -> np.ndarray:
        """``sum_k a[..., k] * b[..., k]``: see :func:`lowprec.dot`."""
        return _product_reduction(self, a, b, False, inputs, held, output, mode, rng, random_bits)

    def sum(self, x: ArrayLike, axis: int | None = None, *, output: FormatLike | None = None,
            mode: ModeLike = "nearest", rng: np.random.Generator | None = None,
            random_bits: int | None = None) -> np.ndarray:
        """The sum of x along ``axis`` (None: all of x), stored in ``output`` (None: the
        accumulator's own format)."""
        return _sum(self, x, axis, output, mode, rng, random_bits)

    def _block_scaled_matmul(self, a, b, held, output, mode, rng, random_bits):
        """``a @ b`` of block-scaled operands (module docstring): the exact values, element
        times block scale, multiplied and summed as this accumulator sums any products."""
        a, b = (m.exact_values() if isinstance(m, ScaledTensor) else m for m in (a, b))
        return self.matmul(a, b, output=output, mode=mode, rng=rng, random_bits=random_bits)


class Blas(_Protocol):
    """FP32 sums (the operands' dtype) in the BLAS library's order: NumPy's matmul and sum.

    Use the singleton :data:`BLAS`. Products of 16-bit (or narrower) inputs are exact in
    float32, so only the order of the FP32 additions is left to the library, as cuBLAS leaves
    it on a GPU."""

    name = "blas"
    sum_format = None  # no format is imposed on the partial sums (none rejects a NaN)
    result_format = FP32  # what float32 operands give

    def __repr__(self) -> str:
        return "BLAS"

    def __reduce__(self):
        return "BLAS"  # copies and pickles are the singleton (this module's BLAS)

    def matmul(self, a: Operand, b: Operand, *, inputs: FormatPair | None = None,
               held: FormatPair | None = None, output: FormatLike | None = None,
               mode: ModeLike = "nearest", rng: np.random.Generator | None = None,
               random_bits: int | None = None) -> np.ndarray:
        if isinstance(a, ScaledTensor):
            a = a.dequantize()
        if isinstance(b, ScaledTensor):
            b = b.dequantize()
        if inputs is None and output is None and _native_float(a) and _native_float(b):
            return a @ b  # NumPy or CuPy arrays alike, in their own dtype
        return super().matmul(a, b, inputs=inputs, held=held, output=output, mode=mode, rng=rng,
                              random_bits=random_bits)

    def _sum_of_products(self, a, b, fa, fb, gemm, mode, rng, random_bits):
        if gemm:
            return np.matmul(a, b)
        return np.matmul(a[..., None, :], b[..., :, None])[..., 0, 0]  # a row times a column

    def _sum_terms(self, x, known, mode, rng, random_bits):
        return np.sum(x, axis=-1)


BLAS = Blas()  # the accumulator a policy uses unless it says otherwise


@dataclass(frozen=True)
class FormatAccumulation(_Protocol):
    """Every addition rounded to ``format``: ``acc = round(acc + a*b)`` with the product exact.

    Products of inputs of at most 26 significant bits are exact in float64; others go through
    :func:`lowprec.arith.fma`, fused into the addition (sequential order only)."""

    format: FloatFormat  # the accumulator's format (a FloatFormat or a name like "fp32")
    order: str = "sequential"  # "sequential": ((0 + t0) + t1) + ...; "pairwise": a balanced tree
    block: int | None = None  # sum runs of `block` terms in order, then the run sums in `order`


    def __post_init__(self):
        object.__setattr__(self, "format", _arith_format(self.format))
        if self.order not in ORDERS:
            raise ValueError(f"unknown order {self.order!r}; valid orders: {', '.join(ORDERS)}")
        block = self.block
        if block is not None and (isinstance(block, bool)
                                  or not (isinstance(block, (int, np.integer)) and block >= 1)):
            raise ValueError(f"block must be None or a positive int, got {block!r}")

    @property
    def name(self) -> str:
        """The format's name, with the order and block when they are not the defaults."""
        extras = [self.order] if self.order != "sequential" else []
        extras += [f"block={self.block}"] if self.block is not None else []
        return "/".join([self.format.name, *extras])

    @property
    def sum_format(self) -> FloatFormat:
        return self.format

    @property
    def result_format(self) -> FloatFormat:
        return self.format

    def _sum_of_products(self, a, b, fa, fb, gemm, mode, rng, random_bits):
        fa, fb = _known_format(a, fa), _known_format(b, fb)
        if _exact_in(fa, fb, 24, 2.0**-149, 2.0**127):
            work = np.float32  # products exact in float32 (FP16, FP8 inputs)
        elif _exact_in(fa, fb, 53, 2.0**-1074, 2.0**500):
            work = np.float64  # products exact in float64 (up to 26-bit significands)
        else:
            work = None  # fused: acc + a*b through fma, sequential order only
        if work is None and (self.order != "sequential" or self.block is not None):
            raise ValueError("products of these inputs are not exact in float64; for pairwise "
                             "or blocked sums pass inputs= (at most 26 significant bits)")
        fast = (self.format == FP32 and as_mode(mode) is RoundingMode.NEAREST and work is not None
                and fa.mantissa_bits + fb.mantissa_bits + 2 <= 24 and self.order == "sequential")
        a_term, b_term = (_matmul_a, _matmul_b) if gemm else (_last, _last)
        if work is None:
            term = lambda k, out: (a_term(a, k), b_term(b, k))  # noqa: E731
        else:
            # C order, as a rounding copy would give: NumPy's products then run fastest
            aw, bw = np.ascontiguousarray(a, work), np.ascontiguousarray(b, work)

            def term(k, out):
                return np.multiply(a_term(aw, k), b_term(bw, k), out=out)
        if gemm:  # (..., m, K) @ (..., K, n): one (..., m, n) addend per k
            shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
        else:
            shape = a.shape[:-1]
        return _accumulate(term, a.shape[-1], shape, self, mode, rng, random_bits, fast,
                           "inf - inf or 0 * inf", work)

    def _sum_terms(self, x, known, mode, rng, random_bits):
        known = _known_format(x, known)
        fast = (self.format == FP32 and as_mode(mode) is RoundingMode.NEAREST
                and self.order == "sequential" and known is not None and known.mantissa_bits <= 23)
        xs = x.astype(np.float32) if fast and known.fits_float32 else x
        return _accumulate(lambda k, out: xs[..., k], x.shape[-1], x.shape[:-1], self, mode, rng,
                           random_bits, fast, "inf - inf")


# What the accumulation functions take (annotations only).
Operand = ArrayLike | ScaledTensor  # an array, or a scaled (FP8 / block-scaled) value
FormatPair = FormatLike | tuple[FormatLike, FormatLike]  # one format for a and b, or one each
Accumulator = Blas | FormatAccumulation | TensorCoreModel | MFMAModel
AccumulatorLike = Accumulator | FormatLike  # FormatLike includes "blas" and preset names


def as_accumulator(spec: AccumulatorLike, *, order: str = "sequential",
                   block: int | None = None) -> Accumulator:
    """The accumulator ``spec`` names: an accumulator (passed through), ``"blas"``, a format or
    its name (with ``order`` and ``block``: a :class:`FormatAccumulation`) or the name of a
    tensor-core preset (:data:`lowprec.tensorcore.TENSOR_CORES`, AMD's included)."""
    if isinstance(spec, (TensorCoreModel, MFMAModel)):
        if order != "sequential" or block is not None:
            raise ValueError("a tensor-core model fixes its own order and blocks; leave order and "
                             "block at their defaults")
        return spec
    if isinstance(spec, (Blas, FormatAccumulation)):
        if order != "sequential" or block is not None:
            raise ValueError(f"accumulator {spec.name!r} fixes its own order and block; pass "
                             "them to FormatAccumulation(format, order, block) instead")
        return spec
    if isinstance(spec, str) and spec.strip().lower() == BLAS.name:
        return as_accumulator(BLAS, order=order, block=block)
    if isinstance(spec, str) and spec in tensorcore.TENSOR_CORES:
        return as_accumulator(tensorcore.TENSOR_CORES[spec], order=order, block=block)
    dtype_like = isinstance(spec, np.dtype) or (isinstance(spec, type)
                                                and issubclass(spec, np.generic))
    if isinstance(spec, (str, FloatFormat)) or dtype_like:
        try:
            fmt = as_format(spec)
        except ValueError:
            raise ValueError(
                f"unknown accumulation {spec!r}: expected {BLAS.name!r}, a format name (such as "
                f"'fp32', 'bf16', 'fp16'), or one of the tensor-core presets "
                f"{', '.join(tensorcore.TENSOR_CORES)}") from None
        return FormatAccumulation(fmt, order, block)
    raise TypeError(f"an accumulation takes {BLAS.name!r}, a format, a tensor-core preset name or "
                    f"an accumulator (BLAS, FormatAccumulation, TensorCoreModel), got {spec!r}")


# --- the public functions -------------------------------------------------------------------------
_ACCUMULATION_DOC = """
    inputs : format (or a pair, for a and b) the operands are first rounded to, to nearest as a
        ``.half()`` cast does; None takes them as given.
    accumulate : the accumulator: ``"blas"``, a format (``"fp32"``) or a tensor-core model or
        preset name, or any accumulator (see :func:`as_accumulator`). With a format, every step
        is ``acc = round(acc + a*b)`` with the product exact and fused into the addition, as an
        FP32 GEMM on CUDA cores does with FFMA; products of inputs of at most 26 significant
        bits are exact in float64, others go through :func:`lowprec.arith.fma`.
    output : the format the result is stored in (rounded with ``mode``); None keeps the
        accumulator's values.
    mode, rng, random_bits : rounding of every accumulation step and of the output.
        An accumulator or output format without NaN raises ValueError for a NaN operand and for
        a NaN made on the way (inf - inf, 0 * inf); an empty sum (K = 0) is +0.
    order : ``"sequential"`` or ``"pairwise"`` (see :func:`sum`); block : sum each block of
        ``block`` consecutive products sequentially, then combine the block sums in ``order``
        (format accumulators only).
    held : a format (or a pair) the operands are known to hold already: not checked and not
        rounded, it only lets a format accumulator use exact float32 products (a fast path) and
        a tensor-core model read E5M2 x E4M3 operands. The training step's Caster passes it.

    Vectorised over the output elements (a Python loop over k only, no m x k x n temporaries).
    Sequential FP32 accumulation to nearest of inputs with at most 11 significant bits (FP16,
    BF16, TF32, FP8) uses NumPy's own float32 rounding (a fast path, about 30-50x np.matmul's
    time); other accumulators and modes round every step through :func:`lowprec.round` (256**3:
    about half a second), stochastic rounding through :func:`lowprec.arith.add` (a few seconds).
    """


def matmul(a: Operand, b: Operand, *, inputs: FormatPair | None = None,
           accumulate: AccumulatorLike = "fp32", output: FormatLike | None = None,
           mode: ModeLike = "nearest", order: str = "sequential", block: int | None = None,
           rng: np.random.Generator | None = None, random_bits: int | None = None,
           held: FormatPair | None = None) -> np.ndarray:
    """``a @ b`` (shapes as numpy.matmul) with an accumulation model; a and b may be
    :class:`lowprec.scaling.ScaledTensor` values (module docstring)."""
    return as_accumulator(accumulate, order=order, block=block).matmul(
        a, b, inputs=inputs, held=held, output=output, mode=mode, rng=rng, random_bits=random_bits)


def dot(a: Operand, b: Operand, *, inputs: FormatPair | None = None,
        accumulate: AccumulatorLike = "fp32", output: FormatLike | None = None,
        mode: ModeLike = "nearest", order: str = "sequential", block: int | None = None,
        rng: np.random.Generator | None = None, random_bits: int | None = None,
        held: FormatPair | None = None) -> np.ndarray:
    """``sum_k a[..., k] * b[..., k]`` (a and b broadcast) with an accumulation model."""
    return as_accumulator(accumulate, order=order, block=block).dot(
        a, b, inputs=inputs, held=held, output=output, mode=mode, rng=rng, random_bits=random_bits)


def sum(x: ArrayLike, fmt: FormatLike, mode: ModeLike = "nearest", *,  # noqa: A001 - numpy's name
        axis: int | None = None, accumulate: AccumulatorLike | None = None,
        order: str = "sequential", block: int | None = None,
        rng: np.random.Generator | None = None, random_bits: int | None = None) -> np.ndarray:
    """The sum of x along ``axis`` (None: all of x), accumulated in ``accumulate`` (None meaning
    fmt; or any accumulator; a tensor-core model sums x times ones) and stored in fmt.

    Each addition is rounded to the accumulator with ``mode``: sequential is
    ``((0 + x0) + x1) + ...``; pairwise adds adjacent pairs level by level, an odd last one
    passing up unchanged (a balanced tree when the count is a power of two); ``block=b`` sums
    each run of b terms sequentially, then combines the block sums in ``order``. The x values
    are taken exactly as given (round them first to model low-precision addends). An empty sum
    is +0. An accumulator or fmt without NaN raises ValueError for a NaN in x or an inf - inf.
    """
    if not isinstance(mode, str):  # in lowprec 0.1 the third positional argument was axis
        raise TypeError(f"sum(x, fmt, mode): the third argument is the rounding mode, got "
                        f"{mode!r}; pass the axis as a keyword, axis={mode!r}")
    acc = as_accumulator(fmt if accumulate is None else accumulate, order=order, block=block)
    return acc.sum(x, axis, output=_arith_format(fmt), mode=mode, rng=rng, random_bits=random_bits)


dot.__doc__ += _ACCUMULATION_DOC
matmul.__doc__ += _ACCUMULATION_DOC


# --- what every accumulator shares ----------------------------------------------------------
def _native_float(m) -> bool:
    """A NumPy or CuPy array of float32/float64 with a dimension at least (what a model holds)."""
    return (hasattr(m, "__array_priority__") and getattr(m, "ndim", 0) >= 1
            and getattr(m, "dtype", None) in (np.float32, np.float64))


def _pair(formats):
    fa, fb = formats if isinstance(formats, tuple) else (formats, formats)
    return (None if fa is None else as_format(fa)), (None if fb is None else as_format(fb))


def _product_reduction(acc, a, b, gemm: bool, inputs, held, output, mode, rng, random_bits):
    """dot (gemm False) or matmul (gemm True) with ``acc``: the options every accumulator shares
    (input rounding, NaN checks, output rounding, the result's dtype) around its
    ``_sum_of_products``, which returns the sums in its result format."""
    ha, hb = _pair(held)
    ha, hb = ha or _dtype_format(a), hb or _dtype_format(b)  # float16, ml_dtypes arrays
    a, b = as_real_array(a, "a"), as_real_array(b, "b")
    if gemm:
        a, b, squeeze, _ = tensorcore.matmul_operands(a, b)
    else:
        a, b = np.broadcast_arrays(a, b)
        if a.ndim == 0:
            raise ValueError("dot needs arrays of at least one dimension")
        squeeze = ()
    fa, fb = _pair(inputs)
    out_fmt = None if output is None else _arith_format(output)
    for name, arr, fmt in (("a", a, fa), ("b", b, fb)):
        _reject_nan_operands([(name, arr)], [fmt, acc.sum_format, out_fmt])
    if fa is not None:
        a, ha = _round(a, fa), fa
    if fb is not None:
        b, hb = _round(b, fb), fb
    out32 = a.dtype == b.dtype == np.float32
    result = acc._sum_of_products(a, b, ha, hb, gemm, mode, rng, random_bits)
    result = np.asarray(result, np.float64)
    if out_fmt is not None:
        _reject_invalid(result, out_fmt, "inf - inf or 0 * inf")
        result = _round(result, out_fmt, mode, rng=rng, random_bits=random_bits)
    if out32 and (out_fmt or acc.result_format).fits_float32:
        result = result.astype(np.float32)
    result = result[()] if result.ndim == 0 else result
    return np.squeeze(result, axis=tuple(squeeze)) if squeeze else result


def _sum(acc, x, axis, output, mode, rng, random_bits):
    """x summed along ``axis`` by ``acc``, stored in ``output`` (None: the accumulator's format)."""
    known = _dtype_format(x)
    x = as_real_array(x, "x")
    x = x.reshape(-1) if axis is None else np.moveaxis(x, axis, -1)
    fmt = acc.result_format if output is None else _arith_format(output)
    _reject_nan_operands([("x", x)], [fmt, acc.sum_format])
    total = np.asarray(acc._sum_terms(x, known, mode, rng, random_bits), np.float64)
    _reject_invalid(total, fmt, "inf - inf")
    result = _round(total, fmt, mode, rng=rng, random_bits=random_bits)
    if x.dtype == np.float32 and fmt.fits_float32:
        result = result.astype(np.float32)
    return result[()] if result.ndim == 0 else result


def _matmul(acc, a, b, inputs, held, output, mode, rng, random_bits):
    """matmul with ``acc``, of arrays or ScaledTensor values (module docstring)."""
    if isinstance(a, ScaledTensor) or isinstance(b, ScaledTensor):
        return _scaled_matmul(acc, a, b, inputs, held, output, mode, rng, random_bits)
    return _product_reduction(acc, a, b, True, inputs, held, output, mode, rng, random_bits)


def _scaled_matmul(acc, a, b, inputs, held, output, mode, rng, random_bits):
    """``a @ b`` for ScaledTensor operands (either or both): the module docstring's rule."""
    if inputs is not None:
        raise ValueError("inputs= rounds plain operands; a ScaledTensor already holds its elements")
    scaled = [m for m in (a, b) if isinstance(m, ScaledTensor)]
    if any(m.block_scaled for m in scaled):
        if not all(m.block_scaled for m in scaled):
            raise ValueError("a GEMM of a block-scaled and a per-tensor scaled operand is not "
                             "modelled")
        stored = FP32 if output is None else as_format(output)
        how = getattr(acc, "_block_scaled_matmul", None)  # each accumulator's own way
        if how is None:
            raise ValueError(f"a block-scaled GEMM takes each block's scales into its products, "
                             f"and the accumulator {acc.name!r} does not say how; use "
                             f"{BLAS.name!r}, a format such as 'fp32' or a tensor-core model")
        out = how(a, b, held, output, mode, rng, random_bits)
        fits = stored.fits_float32 and acc.result_format.fits_float32
        return np.asarray(out, np.float32) if fits else out
    ha, hb = _pair(held)
    decode = np.float32(1)
    operands = []
    for m, fmt in ((a, ha), (b, hb)):
        if isinstance(m, ScaledTensor):
            m, fmt, decode = m.elements, m.fmt, decode * m.scale_inv  # float32 products
        operands.append((m, fmt))
    (ea, fa), (eb, fb) = operands
    out = acc.matmul(ea, eb, held=(fa, fb), mode=mode, rng=rng, random_bits=random_bits)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(out, np.float32) * decode  # D = scale_a * scale_b * (A @ B), in FP32
    if output is not None:
        out = _round(out, output, mode, rng=rng, random_bits=random_bits)
    return out


def _block_operand(m, k_axis: int, held):
    """(elements, float64 scales per K-block, kb or None, element format) of one operand; a
    plain array has scale 1 on the other operand's K-blocks (kb None: not set by it)."""
    if isinstance(m, ScaledTensor):
        if m.elements.ndim != 2:
            raise ValueError(f"a block-scaled GEMM on a tensor-core model takes 2-D operands, got "
                             f"shape {m.shape}")
        scales, kb = m.k_scales(k_axis)
        return m.elements, scales, int(kb), m.fmt
    arr = as_real_array(m, "a" if k_axis == -1 else "b")
    if arr.ndim != 2:
        raise ValueError(f"a block-scaled GEMM on a tensor-core model takes 2-D operands, got "
                         f"shape {arr.shape}")
    return arr, None, None, (held or _dtype_format(arr))


def _tensor_scale(m) -> float:
    """A ScaledTensor's per-tensor second level (NVFP4), or 1."""
    scale = m.tensor_scale if isinstance(m, ScaledTensor) else None
    return 1.0 if scale is None else float(scale)


def _per_block(scales, kb_from: int, kb: int, K: int, k_axis: int, like_shape) -> np.ndarray:
    """Scales on blocks of kb_from along K, repeated onto blocks of kb (kb divides kb_from, or
    kb_from covers all of K)."""
    blocks = -(-K // kb)
    if scales is None:
        shape = list(like_shape)
        shape[k_axis] = blocks
        return np.ones(shape)
    repeats = -(-kb_from // kb)  # kb divides kb_from, or kb_from spans all of K (one block)
    return np.take(np.repeat(scales, repeats, axis=k_axis), np.arange(blocks), axis=k_axis)


def _block_scaled_on_tensor_cores(model, a, b, held, output, mode, rng,
                                  random_bits) -> np.ndarray:
    """Block-scaled ``a @ b`` on a tensor-core model (module docstring), then rounded to
    ``output`` if given."""
    out = _block_scaled_sum(model, a, b, held)
    if output is None:
        return out
    return _round(np.asarray(out, np.float64), output, mode, rng=rng, random_bits=random_bits)


def _block_scaled_sum(model, a, b, held) -> np.ndarray:
    """Natively with ``block_scaled_mma``, else DeepSeek-V3's per-K-block partials scaled and
    added in FP32."""
    ha, hb = _pair(held)
    ea, sa, kba, fa = _block_operand(a, -1, ha)
    eb, sb, kbb, fb = _block_operand(b, 0, hb)
    K = ea.shape[-1]
    if eb.shape[0] != K:
        raise ValueError(f"matmul: a has {K} columns but b has {eb.shape[0]} rows")
    kbs = [kb for kb in (kba, kbb) if kb is not None]
    kb = math.gcd(*kbs) if len(kbs) == 2 else kbs[0]  # blocks of both operands start at k = 0
    kb = min(kb, K) if K else 1
    sa = _per_block(sa, kba or kb, kb, K, -1, (ea.shape[0], 1))
    sb = _per_block(sb, kbb or kb, kb, K, 0, (1, eb.shape[1]))
    core = model.reading(fa, fb)  # each operand's element format (mixed FP8, f8f6f4 pairs)
    if model.block_scaled_mma:
        step = int(model.scale_block)
        if kb % step and sa.shape[-1] > 1:  # a single K-block is padded with zeros
            raise ValueError(f"{model.name} applies one scale per {step} elements of K; these "
                             f"operands have K-blocks of {kb}")
        # NVFP4's per-tensor level is not a block scale: the MMA takes the E4M3 block scales and
        # the two tensor scales multiply the result as the GEMM's FP32 alpha (cuBLASLt's
        # D = alpha * (A @ B); Transformer Engine passes them so, common/gemm/cublaslt_gemm.cu)
        ta, tb = (_tensor_scale(m) for m in (a, b))
        sa = _per_block(sa / ta, kb, step, K, -1, None)  # exact: the tensor scale divides out
        sb = _per_block(sb / tb, kb, step, K, 0, None)
        out = np.asarray(tensorcore.matmul(ea, eb, core, scale_a=sa, scale_b=sb))
        if ta == 1 and tb == 1:
            return out
        with np.errstate(over="ignore", invalid="ignore"):
            alpha = np.float32(ta) * np.float32(tb)  # FP32 product
            return np.asarray(out, np.float32) * alpha  # FP32 product
    blocks = sa.shape[-1]
    if blocks > 1 and kb % model.block:
        raise ValueError(f"{model.name} has no block-scaled MMA: each K-block's partial sum comes "
                         f"from its tensor core, {model.block} products per block FMA, and the "
                         f"scales are applied on CUDA cores; a K-block of {kb} is not a multiple "
                         f"of {model.block}")
    if model.split_k != 1:
        raise ValueError(f"{model.name} splits K; a block-scaled GEMM already adds its K-blocks "
                         "in FP32 (use a model with split_k=1)")
    sa32, sb32 = sa.astype(np.float32), sb.astype(np.float32)  # each decode scale as FP32
    acc = np.zeros((ea.shape[0], eb.shape[1]))
    nearest = RoundingMode.NEAREST
    with np.errstate(over="ignore", invalid="ignore"):
        for j in builtins.range(blocks):
            ks = builtins.slice(j * kb, min((j + 1) * kb, K))
            partial = np.asarray(tensorcore.matmul(ea[:, ks], eb[ks, :], core), np.float64)
            s = (sa32[:, j, None] * sb32[None, j, :]).astype(np.float64)  # FP32 product
            product = s * partial  # exact in float64: at most 24 x 24 significant bits
            acc = _round(_sum_to_odd(acc, product, nearest), FP32, nearest)  # FFMA, one rounding
    return acc


# --- the format accumulator's loop ----------------------------------------------------------
def _dtype_format(x) -> FloatFormat | None:
    """The format of ``x``'s dtype (float16, float32, ml_dtypes arrays), or None."""
    try:
        return as_format(np.asarray(x).dtype)
    except (TypeError, ValueError):
        return None


def _known_format(arr, fmt):
    """A format that every value of ``arr`` lies in (``fmt`` if given), or None if unknown."""
    if fmt is not None:
        return fmt
    with np.errstate(over="ignore"):
        return FP32 if np.array_equal(arr.astype(np.float32), arr, equal_nan=True) else None


def _exact_in(fa, fb, bits, smallest, largest) -> bool:
    """Is every product of a value of fa and one of fb exact in a binary format with `bits`
    significant bits whose values reach down to `smallest` and below `largest`?"""
    return (fa is not None and fb is not None
            and fa.mantissa_bits + fb.mantissa_bits + 2 <= bits
            and fa.smallest_subnormal * fb.smallest_subnormal >= smallest
            and fa.max * fb.max < largest)


def _reduce(terms, add, order, zero):
    """Combine addends (an iterable of arrays) with add(partial, addend), which rounds.

    sequential: ((0 + t0) + t1) + ... . pairwise: adjacent pairs are added level by level, an odd
    last one passing up unchanged (a balanced tree for a power-of-two count); it runs as a binary
    counter, so only log2(K) partial sums are alive at a time. Addends are never rounded on their
    own (except a lone one, as 0 + t0)."""
    if order == "sequential":
        acc = zero()
        for t in terms:
            acc = add(acc, t)
        return acc
    stack = []  # (number of addends, partial sum)
    for t in terms:
        stack.append((1, t))
        while len(stack) > 1 and stack[-1][0] == stack[-2][0]:
            (n, right), (_, left) = stack.pop(), stack.pop()
            stack.append((2 * n, add(left, right)))
    while len(stack) > 1:
        (_, right), (n, left) = stack.pop(), stack.pop()
        stack.append((n, add(left, right)))
    if not stack:
        return zero()
    count, result = stack[0]
    return add(zero(), result) if count == 1 else result


def _accumulate(term, K, shape, acc: FormatAccumulation, mode, rng, random_bits, fast, invalid,
                work=None):
    """Sum term(k, out) for k < K (arrays of `shape`; out: None or a buffer to write into) as
    ``acc`` says. fast: FP32, nearest, sequential, and every addend has at most 24 significant
    bits (work: the addends' dtype). invalid: what can make a NaN partial sum, for the error."""
    acc_fmt, buffer = acc.format, None
    if fast:
        # each addend is used up before the next is made: one buffer serves them all (a fresh
        # array of the output's size per k would cost more in page faults than the addition)
        buffer = np.empty(shape, work)

        def add(partial, t):
            # float32 + float32 is a correctly rounded FP32 addition. For a float64 addend t with
            # at most 24 significant bits, partial + t in float64 and then float32() is too:
            # either the float64 sum is exact, or the exponents differ by >= 29 and the sum lies
            # within 2**-28 of the larger term, which is on the FP32 grid (if it is t and below
            # FP32's normal range, partial is 0 and the sum exact), while FP32's midpoints are
            # >= 2**-25 away: the float64 rounding cannot reach or cross one.
            np.add(partial, t, out=partial)
            return partial
        zero = lambda: np.zeros(shape, np.float32)  # noqa: E731
    else:
        mode = as_mode(mode)

        def add(partial, t):
            if not acc_fmt.has_nan:  # the operands hold no NaN: a NaN here is an invalid sum
                with np.errstate(invalid="ignore"):
                    _reject_invalid(partial + (t[0] * t[1] if isinstance(t, tuple) else t),
                                    acc_fmt, invalid, "a partial sum")
            if isinstance(t, tuple):  # a product that float64 cannot hold: fused, acc + a*b
                return fma(t[0], t[1], partial, acc_fmt, mode, rng=rng, random_bits=random_bits)
            if mode is RoundingMode.STOCHASTIC:
                return _add(partial, t, acc_fmt, mode, rng=rng, random_bits=random_bits)
            return _round(_sum_to_odd(partial, t, mode), acc_fmt, mode)
        zero = lambda: np.zeros(shape)  # noqa: E731
    if acc.block is None:
        return _reduce((term(k, buffer) for k in builtins.range(K)), add, acc.order, zero)
    block = acc.block
    block_sums = (_reduce((term(k, buffer) for k in builtins.range(s, min(s + block, K))), add,
                          "sequential", zero) for s in builtins.range(0, K, block))
    return _reduce(block_sums, add, acc.order, zero)


def _matmul_a(arr, k):
    return arr[..., :, k, None]


def _matmul_b(arr, k):
    return arr[..., None, k, :]


def _last(arr, k):
    return arr[..., k]
