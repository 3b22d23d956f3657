"""A model of NVIDIA tensor-core accumulation: the block fused multiply-add (block FMA).

One block FMA computes ``d = a_1*b_1 + ... + a_n*b_n + c`` for each output element like this
(Fasi, Higham, Mikaitis & Pranesh, "Numerical behavior of NVIDIA tensor cores", PeerJ CS 2021;
Khattak & Mikaitis, arXiv:2512.07004, 2025; MMA-Sim, Xie et al., arXiv:2511.10909, which is
bit-validated on hardware):

1. NaN and infinity first: a NaN operand, inf*0 or inf - inf give NaN, else an infinity wins.
2. Every product is exact. Its exponent is e(a) + e(b), each read from the exponent field with
   subnormals clamped to emin (a zero counts as 2**-126, as in MMA-Sim); c's exponent is read
   the same way in the accumulator format.
3. All terms, c included, are aligned to the largest exponent emax and each is truncated toward
   zero to a multiple of ``2**(emax - F)``: F fraction bits survive (F = 23 + extra alignment
   bits). No sticky bit.
4. The truncated terms are added exactly and the sum is normalised once and rounded to the
   output: toward zero for FP32 (keeping only 13 fraction bits on Hopper FP8), to nearest even
   for FP16. A result that rounds to zero is +0; a result at or beyond 2**(emax_out + 1) is
   infinity, even when rounding toward zero.

A product longer than the block runs block after block along K, each block's result being the
next block's c. Optionally (DeepSeek-V3 tech. report sec. 3.3.2) the partial result is promoted
to an FP32 accumulator every ``promote_every`` products, and K can be split (split-K) into
slices whose results are added in FP32.

:func:`block_fma_scalar` (in :mod:`lowprec.reference`, importable from here) is the same model
written one term at a time in exact arithmetic, to read next to the papers; the tests check
the vectorised model against it.

Not modelled: FP8 ``mma.sync`` on sm_90, which has no FP8 MMA of its own: the SASS that ptxas
emits for it (``cuobjdump -sass``) converts to FP16 and runs two interleaved HMMA.16816 plus an
FADD of C; block-scaled MX instructions; AMD's matrix cores.
"""
from __future__ import annotations

import builtins
import dataclasses
import math
from dataclasses import dataclass
from types import MappingProxyType

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from ._deprecation import no_attribute, renamed
from .formats import BF16, E4M3, E5M2, FP16, FP32, TF32, FloatFormat, FormatLike, as_format
from .reference import ZERO_EXPONENT as _ZERO_EXPONENT
from .reference import block_fma_scalar
from .rounding import ModeLike, as_mode, as_real_array, round as _round

if TYPE_CHECKING:  # accumulate imports this module
    from .accumulate import FormatPair, Operand

__all__ = ["TensorCoreModel", "TENSOR_CORES", "FP32_E8M13", "block_fma", "block_fma_scalar", "dot",
           "matmul", "V100_FP16", "A100_FP16", "A100_BF16", "A100_TF32", "H100_FP16",
           "H100_BF16", "H100_TF32", "H100_FP8", "H100_FP8_PROMOTED"]

# FP32's range with 13 fraction bits: what Hopper/Ada FP8 tensor-core sums keep (MMA-Sim's
# "f32_e8m13"; DeepSeek-V3 sec. 3.3.2 measured "about 14 bits").
FP32_E8M13 = FloatFormat("fp32_e8m13", 8, 13, description="FP32 range, 13 fraction bits (FP8 MMA)")
_ALL64 = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class TensorCoreModel:
    """The numerics of one tensor-core instruction family (module docstring)."""

    name: str  # preset name, for tables and messages
    inputs: FloatFormat  # format of the a operands (and of b, unless inputs_b says otherwise)
    block: int  # n: products fused per normalisation
    fraction_bits: int  # F: bits kept below the largest exponent (23 + extra alignment bits)
    output: FloatFormat = FP32  # format of c and of every block's result (the accumulator)
    output_rounding: str = "toward_zero"  # how the normalised sum is rounded into `output`
    inputs_b: FloatFormat | None = None  # b's format where it differs (FP8: E4M3 x E5M2)
    c_format: FloatFormat | None = None  # format of the c operand where it differs from output
    truncate_inputs: bool = False  # operands are truncated to `inputs` (TF32 reads FP32's top bits)
    promote_every: int | None = None  # N_C: add the partial into an FP32 accumulator this often
    split_k: int = 1  # K is cut into this many slices, computed apart, then added in FP32

    def __post_init__(self):
        for name in ("inputs", "output", "inputs_b", "c_format"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, as_format(getattr(self, name)))
        object.__setattr__(self, "output_rounding", as_mode(self.output_rounding).value)
        if not (isinstance(self.block, int) and self.block >= 1):
            raise ValueError(f"block must be a positive int, got {self.block!r}")
        if not (isinstance(self.fraction_bits, int) and 1 <= self.fraction_bits <= 29):
            raise ValueError(f"fraction_bits must be an int in 1..29, got {self.fraction_bits!r}")
        if self.promote_every is not None and not (isinstance(self.promote_every, int)
                                                   and self.promote_every >= 1):
            raise ValueError(f"promote_every must be None or a positive int, "
                             f"got {self.promote_every!r}")
        if not (isinstance(self.split_k, int) and self.split_k >= 1):
            raise ValueError(f"split_k must be a positive int, got {self.split_k!r}")
        formats = (self.inputs, self.b_format, self.accumulator)
        if not all(f.fits_float32 for f in formats):
            raise ValueError("input and accumulator formats must fit in FP32, got "
                             + ", ".join(f.name for f in formats))
        if not (self.output.has_inf and self.output.fits_float32):
            raise ValueError(f"output must be an IEEE-style format within FP32 (with infinities), "
                             f"got {self.output.name}")

    @property
    def b_format(self) -> FloatFormat:
        return self.inputs_b or self.inputs

    @property
    def accumulator(self) -> FloatFormat:
        """Format of the c operand."""
        return self.c_format or self.output

    @property
    def result_format(self) -> FloatFormat:
        """Format of matmul's result: FP32 once promotion or split-K adds partials there."""
        return FP32 if self.promote_every or self.split_k > 1 else self.output

    # --- the accumulator protocol (lowprec.accumulate): options as lowprec.matmul's ---------------
    sum_format = None  # the block FMA imposes no format on a NaN check of the operands
    block_scales_supported = False  # block-scaled (MX) MMA is not modelled

    def matmul(self, a: Operand, b: Operand, *, inputs: FormatPair | None = None,
               held: FormatPair | None = None, output: FormatLike | None = None,
               mode: ModeLike = "nearest", rng: np.random.Generator | None = None,
               random_bits: int | None = None) -> np.ndarray:
        """``a @ b`` on this tensor core (see :func:`lowprec.matmul`)."""
        return _accumulate_module()._matmul(self, a, b, inputs, held, output, mode, rng,
                                            random_bits)

    def dot(self, a: Operand, b: Operand, *, inputs: FormatPair | None = None,
            held: FormatPair | None = None, output: FormatLike | None = None,
            mode: ModeLike = "nearest", rng: np.random.Generator | None = None,
            random_bits: int | None = None) -> np.ndarray:
        """``sum_k a[..., k] * b[..., k]`` on this tensor core (see :func:`lowprec.dot`)."""
        return _accumulate_module()._product_reduction(self, a, b, False, inputs, held, output,
                                                       mode, rng, random_bits)

    def sum(self, x: ArrayLike, axis: int | None = None, *, output: FormatLike | None = None,
            mode: ModeLike = "nearest", rng: np.random.Generator | None = None,
            random_bits: int | None = None) -> np.ndarray:
        """The sum of x along ``axis``: x times ones on this tensor core."""
        return _accumulate_module()._sum(self, x, axis, output, mode, rng, random_bits)

    def reading(self, fa: FloatFormat | None, fb: FloatFormat | None) -> TensorCoreModel:
        """This model reading operands of formats ``fa`` and ``fb``. FP8 MMA takes E4M3 or E5M2
        for each operand on its own (PTX ISA, ``wgmma.mma_async`` .atype/.btype), with the same
        alignment and rounding for all four pairs (MMA-Sim, mmasim/simulator/nv_ptx.py), as the
        dgrad (E5M2 x E4M3) and wgrad (E4M3 x E5M2) GEMMs of Format.HYBRID need."""
        fp8 = (E4M3, E5M2)
        if not (self.inputs in fp8 and fa in fp8 and fb in fp8):
            return self
        if (fa, fb) == (self.inputs, self.b_format):
            return self
        return dataclasses.replace(self, inputs=fa, inputs_b=None if fb == fa else fb)

    def _sum_of_products(self, a, b, fa, fb, gemm, mode, rng, random_bits):
        return (matmul if gemm else dot)(a, b, self.reading(fa, fb))

    def _sum_terms(self, x, known, mode, rng, random_bits):
        return dot(x, np.ones(x.shape[-1], x.dtype), self)


def _accumulate_module():
    from . import accumulate  # accumulate imports this module (its presets and matmul_operands)
    return accumulate


# Presets. Block sizes and F: Fasi et al. 2021 (V100 n=4 with no extra bit, A100 one extra bit);
# Khattak & Mikaitis 2025 and MMA-Sim (microsoft/MMA-Sim, mmasim/simulator/nv.py: is_split_k and
# arch_accum_fractional_bits): A100 m16n8k16 runs as 2 x 8 (so n=8), TF32 m16n8k8 as 2 x 4;
# H100 fuses a whole instruction, F=25.
V100_FP16 = TensorCoreModel("V100_FP16", FP16, block=4, fraction_bits=23)  # Fasi et al. 2021
A100_FP16 = TensorCoreModel("A100_FP16", FP16, block=8, fraction_bits=24)  # Fasi et al.; MMA-Sim
A100_BF16 = TensorCoreModel("A100_BF16", BF16, block=8, fraction_bits=24)  # MMA-Sim (Ampere)
A100_TF32 = TensorCoreModel("A100_TF32", TF32, block=4, fraction_bits=24,  # Fasi et al.; MMA-Sim
                            truncate_inputs=True)  # MMA-Sim: TF32 operands truncated from FP32
H100_FP16 = TensorCoreModel("H100_FP16", FP16, block=16, fraction_bits=25)  # MMA-Sim (Hopper)
H100_BF16 = TensorCoreModel("H100_BF16", BF16, block=16, fraction_bits=25)  # MMA-Sim (Hopper)
H100_TF32 = TensorCoreModel("H100_TF32", TF32, block=8, fraction_bits=25,  # MMA-Sim (Hopper)
                            truncate_inputs=True)
# wgmma FP8, k32: 13 fraction bits and a 13-bit FP32 result (MMA-Sim; Khattak & Mikaitis 2025);
# DeepSeek-V3 sec. 3.3.2 measured the same "about 14 bits" on H800.
H100_FP8 = TensorCoreModel("H100_FP8", E4M3, block=32, fraction_bits=13, output=FP32_E8M13,
                           c_format=FP32)
# DeepSeek-V3 sec. 3.3.2: promote the partial sums to FP32 on CUDA cores every N_C = 128.
H100_FP8_PROMOTED = TensorCoreModel("H100_FP8_PROMOTED", E4M3, block=32, fraction_bits=13,
                                    output=FP32_E8M13, c_format=FP32, promote_every=128)

# Every preset model by name (read-only).
TENSOR_CORES = MappingProxyType({m.name: m for m in (
    V100_FP16, A100_FP16, A100_BF16, A100_TF32, H100_FP16, H100_BF16, H100_TF32, H100_FP8,
    H100_FP8_PROMOTED)})


def __getattr__(name: str):
    if name == "PRESETS":
        return renamed("lowprec.tensorcore.PRESETS", "lowprec.TENSOR_CORES", dict(TENSOR_CORES))
    raise no_attribute(__name__, name)


# --- the vectorised model ---------------------------------------------------------------------
def _exponent(x, fmt: FloatFormat, buf=None):
    """Exponent of each value as its exponent field reads: subnormals at emin, zero at -126.
    (Values of the formats modelled here are normal float64s: the field is read off the bits.)
    buf: _Buffers of x's shape, so that the block loop allocates nothing."""
    x = np.ascontiguousarray(x, np.float64)
    out = np.empty(x.shape, np.int16) if buf is None else buf.emax
    field = np.right_shift(x.view(np.uint64), np.uint64(52), out=None if buf is None else buf.bits)
    np.copyto(out, field, casting="unsafe")  # sign (bit 11) and the 11-bit exponent field
    np.bitwise_and(out, np.int16(0x7FF), out=out)
    np.subtract(out, np.int16(1023), out=out)
    floor = np.full(x.shape, fmt.emin, np.int16) if buf is None else buf.emin
    np.maximum(out, floor, out=out)  # (an array: NumPy is slow to broadcast a scalar here)
    if fmt.emin != _ZERO_EXPONENT:
        np.copyto(out, _ZERO_EXPONENT, where=x == 0)
    return out


def _work_dtype(model: TensorCoreModel):
    """float32 where every product of the input formats is a float32 (FP16, FP8), which halves
    the inner loop's memory traffic; float64 otherwise (every product is a float64)."""
    fa, fb = model.inputs, model.b_format
    smallest = fa.smallest_subnormal * fb.smallest_subnormal
    fits = (fa.mantissa_bits + fb.mantissa_bits + 2 <= 24 and smallest >= 2.0**-149
            and fa.max * fb.max < 2.0**126
            # scales above 2**127 then meet only zero products (see _fused)
            and smallest >= 2.0 ** (model.fraction_bits - 126))
    return np.dtype(np.float32 if fits else np.float64)


class _Buffers:
    """Arrays of the output's shape that every block reuses: a fresh array of this size costs
    page faults on each allocation, more than the arithmetic done in it."""

    def __init__(self, shape, work, model: TensorCoreModel):
        self.emax, self.e = np.empty(shape, np.int16), np.empty(shape, np.int16)
        self.emin = np.full(shape, model.accumulator.emin, np.int16)
        self.scale_limit = np.full(shape, 127, np.int32)
        self.shift, self.units, self.partial = (np.empty(shape, np.int32) for _ in "abc")
        self.total, self.bits = np.empty(shape), np.empty(shape, np.uint64)
        self.term, self.scale = np.empty(shape, work), np.empty(shape, work)
        self.results = [np.empty(shape), np.empty(shape)]  # block results, used in turn

    def next_result(self, c):
        """An output array that is not c."""
        return self.results[0] if self.results[0] is not c else self.results[1]


_ABS64 = np.uint64(0x7FFFFFFFFFFFFFFF)
_FP32_TINY_BITS = np.float64(2.0**-126).view(np.uint64)


def _round_output(s, model: TensorCoreModel, out, magnitude):
    """Normalise and round the exact block sums ``s`` (float64) into the output format, into
    ``out``; ``magnitude`` is a uint64 scratch array."""
    fmt = model.output
    np.bitwise_and(s.view(np.uint64), _ABS64, out=magnitude)
    if model.output_rounding == "toward_zero" and fmt.exponent_bits == 8 and fmt.emin == -126:
        # FP32 and FP32_E8M13, fast: in FP32's normal range, clearing the float64 fraction bits
        # the output does not keep is truncation; below it the grid is fixed at 2**(-126-m).
        mask = np.uint64((_ALL64 << (52 - fmt.mantissa_bits)) & _ALL64)
        np.bitwise_and(s.view(np.uint64), mask, out=out.view(np.uint64))
        if magnitude.min(initial=_ABS64) < _FP32_TINY_BITS:
            quantum = 2.0 ** (fmt.emin - fmt.mantissa_bits)
            np.copyto(out, np.trunc(s / quantum) * quantum, where=magnitude < _FP32_TINY_BITS)
    else:
        out[...] = _round(s, fmt, model.output_rounding)
    # At or beyond 2**(emax+1) the hardware gives infinity even when truncating (MMA-Sim).
    overflow = np.float64(2.0 ** (fmt.emax + 1)).view(np.uint64)
    if magnitude.max(initial=0) >= overflow:
        np.copyto(out, np.copysign(np.inf, s), where=magnitude >= overflow)
    out += 0.0  # zero results of either sign come back +0 (-0 + +0 is +0)
    return out


@np.errstate(invalid="ignore", over="ignore")  # NaN and inf operands: handled at the end
def _fused(products, exponents, n, c, model: TensorCoreModel, finite_inputs: bool, buf):
    """One block FMA for every output element: ``products(j, out)`` and ``exponents(j, out)``
    write term j's exact product and exponent into arrays of the output's shape; c holds the
    accumulator values (float64); buf: _Buffers; finite_inputs: no operand is NaN or inf."""
    emax = _exponent(c, model.accumulator, buf)
    for j in builtins.range(n):
        np.maximum(emax, exponents(j, buf.e), out=emax)
    shift = np.subtract(model.fraction_bits, emax, out=buf.shift)  # 2**shift = 1 / last bit
    total = np.trunc(np.ldexp(c, shift, out=buf.total), out=buf.total)
    scale = buf.scale
    if scale.dtype == np.float32:  # 2**shift as float32; above 2**127 it meets only zero products
        bits = np.minimum(shift, buf.scale_limit, out=buf.units)
        np.add(bits, np.int32(127), out=bits)
        np.left_shift(bits, np.int32(23), out=scale.view(np.int32))
    else:
        np.ldexp(1.0, shift, out=scale)
    # Each scaled product is below 2**(F+2) (significands below 2 each), so converting it to
    # int32, which truncates toward zero, and adding up to 2**(29-F) of them cannot overflow.
    term, units, partial = buf.term, buf.units, buf.partial
    per_int32 = 2 ** (29 - model.fraction_bits)
    for start in builtins.range(0, n, per_int32):
        partial.fill(0)
        for j in builtins.range(start, min(start + per_int32, n)):
            products(j, term)
            term *= scale  # exact: a power-of-two scaling (what underflows truncates to 0)
            np.copyto(units, term, casting="unsafe")  # truncation toward zero
            partial += units
        total += partial
    np.negative(shift, out=shift)
    result = _round_output(np.ldexp(total, shift, out=total), model, buf.next_result(c), buf.bits)
    if not (finite_inputs and np.isfinite(c).all()):
        # NaN and infinity first: a float64 sum of the exact products and c has them right.
        special = c.copy()
        for j in builtins.range(n):
            special += products(j, term)
        np.copyto(result, special, where=~np.isfinite(special))
    return result


def _fp32_add(x, y):
    """Round-to-nearest FP32 addition of FP32 values (float32 addition is correctly rounded)."""
    return (np.asarray(x, np.float32) + np.asarray(y, np.float32)).astype(np.float64)


def _accumulate(products, exponents, K, c, model: TensorCoreModel, finite_inputs: bool):
    """The whole K: blocks in order, with promotion and split-K as the model says."""
    buf = _Buffers(c.shape, _work_dtype(model), model)

    def chain(start, stop, acc):
        for k0 in builtins.range(start, stop, model.block):
            n = min(model.block, stop - k0)
            # _fused calls both lambdas before it returns, within this iteration
            acc = _fused(lambda j, out: products(k0 + j, out),  # noqa: B023
                         lambda j, out: exponents(k0 + j, out),  # noqa: B023
                         n, acc, model, finite_inputs, buf)
        return acc.copy() if any(acc is r for r in buf.results) else acc

    def slice_sum(start, stop, acc):
        if model.promote_every is None:
            return chain(start, stop, acc)
        for k0 in builtins.range(start, stop, model.promote_every):
            partial = chain(k0, min(k0 + model.promote_every, stop), np.zeros_like(acc))
            acc = _fp32_add(acc, partial)
        return acc

    if model.split_k == 1:
        return slice_sum(0, K, c)
    bounds = [K * i // model.split_k for i in builtins.range(model.split_k + 1)]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        c = _fp32_add(c, slice_sum(start, stop, np.zeros_like(c)))
    return c


def _representable(arr, fmt: FloatFormat) -> bool:
    """Are all values of the float64 array in fmt (NaN allowed)? Every format modelled fits in
    float32; a value is in a format iff a cast there and back returns it, whatever the rounding
    of the cast, which NumPy does quickly for FP16 and, for formats that share float32's
    exponent range (BF16, TF32), is clearing float32's extra fraction bits."""
    with np.errstate(over="ignore", invalid="ignore"):
        narrow = arr.astype(np.float32)
        if not np.array_equal(narrow, arr, equal_nan=True):
            return False
        if fmt == FP16:
            back = narrow.astype(np.float16).astype(np.float32)
        elif fmt.exponent_bits == 8 and fmt.emin == -126 and fmt.specials == "ieee":
            mask = np.uint32((0xFFFFFFFF << (23 - fmt.mantissa_bits)) & 0xFFFFFFFF)
            back = (narrow.view(np.uint32) & mask).view(np.float32)
        else:
            back = _round(narrow, fmt)
    return np.array_equal(back, narrow, equal_nan=True)


def _operand(x, fmt: FloatFormat, name: str, truncate: bool = False):
    # a C-ordered copy: matmul reads a column of a and a row of b per k, and a GEMM's operands
    # often arrive as transposed views (x.T, W.T), which would make every slice strided
    arr = as_real_array(x, name).astype(np.float64, order="C")
    if truncate:
        return _round(arr, fmt, "toward_zero")
    if not _representable(arr, fmt):
        raise ValueError(f"{name} holds values that are not {fmt.name} numbers: round them "
                         f"first, e.g. lowprec.round({name}, '{fmt.name}')")
    return arr


def _all_finite(a, b) -> bool:
    return bool(np.isfinite(a).all() and np.isfinite(b).all())


def _accumulator(c, shape, model: TensorCoreModel):
    if c is None:
        return np.zeros(shape)
    c = np.broadcast_to(_operand(c, model.accumulator, "c"), shape)
    return np.array(c, np.float64)


def _rows(a, b, c, model: TensorCoreModel):
    """a, b broadcast and flattened to (P, n) rows, c to (P,), and the leading shape."""
    a = _operand(a, model.inputs, "a", model.truncate_inputs)
    b = _operand(b, model.b_format, "b", model.truncate_inputs)
    a, b = np.broadcast_arrays(a, b)
    if a.ndim == 0:
        raise ValueError("a and b need at least one dimension (the products' axis)")
    lead, n = a.shape[:-1], a.shape[-1]
    rows = math.prod(lead)  # not -1: with n = 0 (an empty sum, +0) the row count is ambiguous
    a, b = a.reshape(rows, n), b.reshape(rows, n)
    work = _work_dtype(model)
    ea, eb = _exponent(a, model.inputs), _exponent(b, model.b_format)
    aw, bw = a.astype(work), b.astype(work)
    products = lambda k, out: np.multiply(aw[:, k], bw[:, k], out=out)  # noqa: E731
    exponents = lambda k, out: np.add(ea[:, k], eb[:, k], out=out)  # noqa: E731
    return products, exponents, n, _accumulator(c, lead, model).reshape(-1), lead, \
        _all_finite(a, b), work


def block_fma(a: ArrayLike, b: ArrayLike, c: ArrayLike, model: TensorCoreModel) -> np.ndarray:
    """One block FMA, ``sum_i a[..., i] * b[..., i] + c``, all n products fused, for every
    leading index (a, b of shape (..., n), c of shape (...)); float64 values in model.output."""
    products, exponents, n, c, lead, finite, work = _rows(a, b, c, model)
    return _fused(products, exponents, n, c, model, finite, _Buffers(c.shape, work, model)
                  ).reshape(lead)[()]


def dot(a: ArrayLike, b: ArrayLike, model: TensorCoreModel,
        c: ArrayLike | None = None) -> np.ndarray:
    """``sum_k a[..., k] * b[..., k] (+ c)`` the way the tensor core runs a long K: blocks of
    ``model.block`` in order (plus promotion / split-K); float64 in model.result_format."""
    products, exponents, K, c, lead, finite, _ = _rows(a, b, c, model)
    return _accumulate(products, exponents, K, c, model, finite).reshape(lead)[()]


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


def matmul(a: ArrayLike, b: ArrayLike, model: TensorCoreModel,
           c: ArrayLike | None = None) -> np.ndarray:
    """``a @ b (+ c)`` on the modelled tensor core, shapes as numpy.matmul; float64 values in
    model.result_format. Vectorised over the output; one pass per k, no m x k x n temporaries."""
    a = _operand(a, model.inputs, "a", model.truncate_inputs)
    b = _operand(b, model.b_format, "b", model.truncate_inputs)
    a, b, squeeze, shape = matmul_operands(a, b)
    ea, eb = _exponent(a, model.inputs), _exponent(b, model.b_format)
    aw, bw = a.astype(_work_dtype(model)), b.astype(_work_dtype(model))
    out = _accumulate(lambda k, out: np.multiply(aw[..., :, k, None], bw[..., None, k, :], out=out),
                      lambda k, out: np.add(ea[..., :, k, None], eb[..., None, k, :], out=out),
                      a.shape[-1], _accumulator(c, shape, model), model, _all_finite(a, b))
    return out.squeeze(axis=tuple(squeeze)) if squeeze else out
