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

Block-scaled MMA (Blackwell ``tcgen05.mma`` ``kind::mxf8f6f4`` and ``kind::mxf4nvf4``; PTX ISA,
"tcgen05.mma"; the model is MMA-Sim's, mmasim/simulator/arithmetic.py, ``nv_fused_dot_add`` with
scales and ``nv_fused_dot_add_with_block_scale``). Each operand carries one scale per
``scale_block`` elements along K, passed here decoded (float64) as ``scale_a`` and ``scale_b``:

* ``kind::mxf8f6f4`` (K = 32, one E8M0 scale per 32): product i is ``a_i*b_i*sa*sb``, exact, with
  exponent ``e(a_i) + e(b_i) + e(sa) + e(sb)``; then steps 1-4 above with F = 25.
* ``kind::mxf4nvf4`` (K = 64, E2M1 elements, UE4M3 scales per 16 or UE8M0 per 32): each run of
  ``sub_block`` = 16 products is summed exactly, and that sum times its two scales is one term
  whose exponent is ``e(sa) + e(sb)`` alone (the scales' exponent fields, not the sum's size);
  c and those terms are aligned to their largest exponent with F = 35, truncated, added exactly
  and rounded toward zero to FP32. A NaN scale or a NaN c gives NaN (E2M1 has no NaN or inf).

Which element and scale formats go together is the PTX ISA's table "valid combinations of
.scale_vec_size and .kind" (block scaling for mma): mxf8f6f4 takes e4m3/e5m2/e3m2/e2m3/e2m1 with
ue8m0 per 32; mxf4nvf4 e2m1 with ue8m0 per 32 or 16, or ue4m3 per 16. A zero element's exponent
reads as -126 plus its partner's and both scales' (MMA-Sim, extract_significand_exponent), so
huge scales on a block of zeros can still truncate c away. MMA-Sim leaves E3M2 and E2M3 untested
(a "TODO" in mmasim/isa/nv_ptx/nv_tcgen05mma.py) and its E2M1 path of kind::mxf8f6f4 does not
run; here their exponents are read like every other format's (subnormals at the format's emin):
an assumption, not a measurement. A K that is not a multiple of the instruction's K ends with a
shorter instruction (the scales: ceil(K / scale_block) of them), as the unscaled models do.

The FP16-output presets (suffix ``_OUT16``) are the same instructions with an FP16 D (and C),
rounded to nearest even, where the PTX ISA allows an FP16 D: FP16 inputs on every generation,
FP8 inputs on Ada, Hopper and Blackwell (not BF16, TF32 or the block-scaled kinds).

Not modelled: FP8 ``mma.sync`` on sm_90, which has no FP8 MMA of its own: the SASS that ptxas
emits for it (``cuobjdump -sass``) converts to FP16 and runs two interleaved HMMA.16816 plus an
FADD of C; AMD's matrix cores (a separate module).
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
from .formats import (BF16, E2M1, E2M3, E3M2, E4M3, E5M2, E8M0, FP16, FP32, TF32, FloatFormat,
                      FormatLike, as_format)
from ._shapes import matmul_operands
from .cdna import CDNA_PRESETS
from .reference import ZERO_EXPONENT as _ZERO_EXPONENT
from .reference import block_fma_scalar
from .rounding import ModeLike, as_mode, as_real_array, round as _round

if TYPE_CHECKING:  # accumulate imports this module
    from .accumulate import FormatPair, Operand

__all__ = ["TensorCoreModel", "TENSOR_CORES", "FP32_E8M13", "block_fma", "block_fma_scalar", "dot",
           "matmul", "V100_FP16", "A100_FP16", "A100_BF16", "A100_TF32", "H100_FP16",
           "H100_BF16", "H100_TF32", "H100_FP8", "H100_FP8_PROMOTED", "ADA_FP8", "B200_FP16",
           "B200_BF16", "B200_TF32", "B200_FP8", "B200_MXF8F6F4", "B200_MXF4NVF4",
           "B200_MXF4NVF4_E8M0", "V100_FP16_OUT16", "A100_FP16_OUT16", "H100_FP16_OUT16",
           "H100_FP8_OUT16", "ADA_FP8_OUT16", "B200_FP16_OUT16", "B200_FP8_OUT16",
           "FP8_FORMATS", "F8F6F4_FORMATS"]

# FP32's range with 13 fraction bits: what Hopper/Ada FP8 tensor-core sums keep (MMA-Sim's
# "f32_e8m13"; DeepSeek-V3 sec. 3.3.2 measured "about 14 bits").
FP32_E8M13 = FloatFormat("fp32_e8m13", 8, 13, description="FP32 range, 13 fraction bits (FP8 MMA)")
_ALL64 = 0xFFFFFFFFFFFFFFFF
FP8_FORMATS = (E4M3, E5M2)  # each FP8 operand may be either (reading())
F8F6F4_FORMATS = (E4M3, E5M2, E3M2, E2M3, E2M1)  # Blackwell kind::f8f6f4 / kind::mxf8f6f4


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
    # formats each operand may take on its own (reading()); empty: FP8 models take E4M3/E5M2
    operand_formats: tuple[FloatFormat, ...] = ()
    scale_block: int | None = None  # block-scaled MMA: one scale per this many elements along K
    scale_format: FloatFormat | None = None  # the scales' format (E8M0, or E4M3 read unsigned)
    sub_block: int | None = None  # mxf4nvf4: products summed exactly in runs of this many

    def __post_init__(self):
        for name in ("inputs", "output", "inputs_b", "c_format", "scale_format"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, as_format(getattr(self, name)))
        object.__setattr__(self, "operand_formats",
                           tuple(as_format(f) for f in self.operand_formats))
        object.__setattr__(self, "output_rounding", as_mode(self.output_rounding).value)
        if not (isinstance(self.block, int) and self.block >= 1):
            raise ValueError(f"block must be a positive int, got {self.block!r}")
        # the int32 sums of _fused hold F <= 29; the sub-block sums (float64) F <= 36
        top = 36 if self.sub_block is not None else 29
        if not (isinstance(self.fraction_bits, int) and 1 <= self.fraction_bits <= top):
            raise ValueError(f"fraction_bits must be an int in 1..{top}, "
                             f"got {self.fraction_bits!r}")
        self._check_block_scaling()
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

    def _check_block_scaling(self):
        if self.scale_block is None:
            if self.scale_format is not None or self.sub_block is not None:
                raise ValueError("scale_format and sub_block need scale_block (block-scaled MMA)")
            return
        if not (isinstance(self.scale_block, int) and self.scale_block >= 1
                and self.block % self.scale_block == 0):
            raise ValueError(f"scale_block must be a positive int dividing block={self.block}, "
                             f"got {self.scale_block!r}")
        if self.scale_format is None:
            raise ValueError("a block-scaled model needs scale_format (e8m0 or e4m3)")
        if self.sub_block is not None:
            if not (isinstance(self.sub_block, int) and self.sub_block >= 1
                    and self.scale_block % self.sub_block == 0):
                raise ValueError(f"sub_block must be a positive int dividing "
                                 f"scale_block={self.scale_block}, got {self.sub_block!r}")
            # E2M1 products are multiples of 1/4 below 36: float64 sums of them are exact
            if not self.inputs == self.b_format == E2M1:
                raise ValueError(f"sub_block sums are modelled for E2M1 operands only, got "
                                 f"{self.inputs.name} x {self.b_format.name}")

    @property
    def block_scaled_mma(self) -> bool:
        """Does the instruction take per-block scales (scale_a=, scale_b=) into its products?"""
        return self.scale_block is not None

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

    def matmul(self, a: Operand, b: Operand, *, inputs: FormatPair | None = None,
               held: FormatPair | None = None, output: FormatLike | None = None,
               mode: ModeLike = "nearest", rng: np.random.Generator | None = None,
               random_bits: int | None = None, scale_a: ArrayLike | None = None,
               scale_b: ArrayLike | None = None) -> np.ndarray:
        """``a @ b`` on this tensor core (see :func:`lowprec.matmul`); a block-scaled model
        (``block_scaled_mma``) takes the operands' decoded block scales as in :func:`matmul`."""
        if scale_a is None and scale_b is None:
            return _accumulate_module()._matmul(self, a, b, inputs, held, output, mode, rng,
                                                random_bits)
        return _accumulate_module()._product_reduction(
            _WithScales(self, scale_a, scale_b, np.ndim(a), np.ndim(b)), a, b, True, inputs,
            held, output, mode, rng, random_bits)

    def dot(self, a: Operand, b: Operand, *, inputs: FormatPair | None = None,
            held: FormatPair | None = None, output: FormatLike | None = None,
            mode: ModeLike = "nearest", rng: np.random.Generator | None = None,
            random_bits: int | None = None, scale_a: ArrayLike | None = None,
            scale_b: ArrayLike | None = None) -> np.ndarray:
        """``sum_k a[..., k] * b[..., k]`` on this tensor core (see :func:`lowprec.dot`)."""
        acc = self if scale_a is None and scale_b is None else _WithScales(self, scale_a,
                                                                           scale_b, 0, 0)
        return _accumulate_module()._product_reduction(acc, a, b, False, inputs, held, output,
                                                       mode, rng, random_bits)

    def sum(self, x: ArrayLike, axis: int | None = None, *, output: FormatLike | None = None,
            mode: ModeLike = "nearest", rng: np.random.Generator | None = None,
            random_bits: int | None = None) -> np.ndarray:
        """The sum of x along ``axis``: x times ones on this tensor core."""
        return _accumulate_module()._sum(self, x, axis, output, mode, rng, random_bits)

    def _block_scaled_matmul(self, a, b, held, output, mode, rng, random_bits):
        """``a @ b`` of block-scaled ScaledTensor operands: natively where the instruction takes
        block scales, else per K-block with the scales applied in FP32 (lowprec.accumulate)."""
        return _accumulate_module()._block_scaled_on_tensor_cores(self, a, b, held, output, mode,
                                                                  rng, random_bits)

    def reading(self, fa: FloatFormat | None, fb: FloatFormat | None) -> TensorCoreModel:
        """This model reading operands of formats ``fa`` and ``fb``. FP8 MMA takes E4M3 or E5M2
        for each operand on its own (PTX ISA, ``wgmma.mma_async`` .atype/.btype), with the same
        alignment and rounding for all four pairs (MMA-Sim, mmasim/simulator/nv_ptx.py), as the
        dgrad (E5M2 x E4M3) and wgrad (E4M3 x E5M2) GEMMs of Format.HYBRID need. Blackwell's
        ``kind::f8f6f4`` and ``kind::mxf8f6f4`` take any of :data:`F8F6F4_FORMATS` for each.
        Formats the instruction does not take leave the model as it is (its operand check
        then names the format it wants)."""
        allowed = self.operand_formats or (FP8_FORMATS if self.inputs in FP8_FORMATS else ())
        if not (fa in allowed and fb in allowed):
            return self
        if (fa, fb) == (self.inputs, self.b_format):
            return self
        return dataclasses.replace(self, inputs=fa, inputs_b=None if fb == fa else fb)

    def _sum_of_products(self, a, b, fa, fb, gemm, mode, rng, random_bits):
        return (matmul if gemm else dot)(a, b, self.reading(fa, fb))

    def _sum_terms(self, x, known, mode, rng, random_bits):
        return dot(x, np.ones(x.shape[-1], x.dtype), self)


class _WithScales:
    """A block-scaled model with one product's scales bound: what lowprec.accumulate's
    _product_reduction calls (it shapes the operands as numpy.matmul does, so a 1-D operand's
    scales gain the same axis here)."""

    sum_format = None

    def __init__(self, model: TensorCoreModel, scale_a, scale_b, ndim_a: int, ndim_b: int):
        self.model, self.name, self.result_format = model, model.name, model.result_format
        self.scale_a, self.scale_b, self.ndim_a, self.ndim_b = scale_a, scale_b, ndim_a, ndim_b

    def _sum_of_products(self, a, b, fa, fb, gemm, mode, rng, random_bits):
        model = self.model.reading(fa, fb)
        if not gemm:
            return dot(a, b, model, scale_a=self.scale_a, scale_b=self.scale_b)
        sa, sb = self.scale_a, self.scale_b
        if self.ndim_a == 1 and sa is not None:
            sa = np.asarray(sa)[None, :]
        if self.ndim_b == 1 and sb is not None:
            sb = np.asarray(sb)[:, None]
        return matmul(a, b, model, scale_a=sa, scale_b=sb)


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

# Ada Lovelace (sm_89) mma.sync m16n8k32 FP8: run as two halves of k = 16, each fused with 13
# fraction bits and rounded toward zero to 13 fraction bits, the first half's result being the
# second half's c (MMA-Sim, mmasim/simulator/nv_ptx.py, class mma: is_split_k for "Ada Lovelace"
# FP8 k32, n_accum_fractional_bits = 13, output "f32_e8m13"). Chaining halves is block=16.
ADA_FP8 = TensorCoreModel("ADA_FP8", E4M3, block=16, fraction_bits=13, output=FP32_E8M13,
                          c_format=FP32)
# Blackwell (sm_100) tcgen05.mma: the whole instruction K fused with 25 fraction bits for every
# kind, FP8 included, result rounded toward zero to FP32 (MMA-Sim, mmasim/simulator/nv_ptx.py,
# class tcgen05mma: n_accum_fractional_bits = 25, no split-K; the K per kind from
# mmasim/isa/nv_ptx/nv_tcgen05mma.py: kind::f16 k16, kind::tf32 k8, kind::f8f6f4 k32).
# Khattak & Mikaitis, arXiv:2512.07004, model B200 the same way.
B200_FP16 = TensorCoreModel("B200_FP16", FP16, block=16, fraction_bits=25)
B200_BF16 = TensorCoreModel("B200_BF16", BF16, block=16, fraction_bits=25)
B200_TF32 = TensorCoreModel("B200_TF32", TF32, block=8, fraction_bits=25, truncate_inputs=True)
# kind::f8f6f4 takes E4M3, E5M2, E3M2, E2M3 or E2M1 for each operand (PTX ISA, tcgen05.mma).
B200_FP8 = TensorCoreModel("B200_FP8", E4M3, block=32, fraction_bits=25,
                           operand_formats=F8F6F4_FORMATS)

# Block-scaled MMA (PTX ISA, tcgen05.mma "kind::mxf8f6f4" and "kind::mxf4nvf4"; MMA-Sim,
# mmasim/simulator/nv_ptx.py, class tcgen05mma_block_scale: F = 25 for k32, 35 for k64;
# arithmetic.py: nv_fused_dot_add with scale_a/scale_b, nv_fused_dot_add_with_block_scale).
B200_MXF8F6F4 = TensorCoreModel("B200_MXF8F6F4", E4M3, block=32, fraction_bits=25,
                                operand_formats=F8F6F4_FORMATS, scale_block=32,
                                scale_format=E8M0)
# NVFP4: E2M1 elements, one UE4M3 scale per 16 (read unsigned: MMA-Sim takes abs()).
B200_MXF4NVF4 = TensorCoreModel("B200_MXF4NVF4", E2M1, block=64, fraction_bits=35,
                                scale_block=16, scale_format=E4M3, sub_block=16)
# MXFP4 on the same instruction: one UE8M0 scale per 32 (the 16-element sub-sums stay).
B200_MXF4NVF4_E8M0 = TensorCoreModel("B200_MXF4NVF4_E8M0", E2M1, block=64, fraction_bits=35,
                                     scale_block=32, scale_format=E8M0, sub_block=16)


def _out16(model: TensorCoreModel) -> TensorCoreModel:
    """The instruction with an FP16 D and C, rounded to nearest even (MMA-Sim, arithmetic.py,
    nv_fused_dot_add, output_type "f16"; Fasi et al. 2021 sec. 4 for V100/T4/A100)."""
    return dataclasses.replace(model, name=model.name + "_OUT16", output=FP16, c_format=None,
                               output_rounding="nearest")


# FP16 output where the PTX ISA allows an FP16 D (and MMA-Sim lists the qualifier): mma .f16
# (V100, A100), wgmma .f16 with f16 or e4m3/e5m2 inputs (H100), mma m16n8k32 .f16 FP8 (Ada),
# tcgen05 kind::f16 with f16 inputs and kind::f8f6f4 (B200). BF16, TF32 and block-scaled
# kinds have FP32 D only.
V100_FP16_OUT16, A100_FP16_OUT16, H100_FP16_OUT16, H100_FP8_OUT16, ADA_FP8_OUT16, \
    B200_FP16_OUT16, B200_FP8_OUT16 = (_out16(m) for m in (
        V100_FP16, A100_FP16, H100_FP16, H100_FP8, ADA_FP8, B200_FP16, B200_FP8))

# Every preset model by name (read-only).
# (AMD's matrix cores, lowprec.cdna.CDNA_PRESETS, are listed here too: the same accumulator
# protocol, another arithmetic.)
TENSOR_CORES = MappingProxyType({m.name: m for m in (
    V100_FP16, A100_FP16, A100_BF16, A100_TF32, H100_FP16, H100_BF16, H100_TF32, H100_FP8,
    H100_FP8_PROMOTED, ADA_FP8, B200_FP16, B200_BF16, B200_TF32, B200_FP8, B200_MXF8F6F4,
    B200_MXF4NVF4, B200_MXF4NVF4_E8M0, V100_FP16_OUT16, A100_FP16_OUT16, H100_FP16_OUT16,
    H100_FP8_OUT16, ADA_FP8_OUT16, B200_FP16_OUT16, B200_FP8_OUT16, *CDNA_PRESETS)})


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
    if model.block_scaled_mma:  # products times scales up to 2**254: float64
        return np.dtype(np.float64)
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


def _scales(scale, name: str, shape: tuple[int, ...], model: TensorCoreModel,
            broadcast: bool = False):
    """Decoded block scales, checked: float64 values and their exponents (fields read as the
    elements' are: a UE4M3 subnormal at emin, zero at -126). broadcast: dot's scales may
    broadcast to ``shape`` (as its operands broadcast together); matmul's must match it."""
    if not model.block_scaled_mma:
        if scale is not None:
            raise ValueError(f"{name} given, but {model.name} has no block-scaled MMA; scales "
                             f"are for models such as B200_MXF8F6F4 (block_scaled_mma = True)")
        return None, None
    if scale is None and math.prod(shape) == 0:  # K = 0: no blocks, so no scales to give
        return np.zeros(shape), np.zeros(shape, np.int32)
    if scale is None:
        raise ValueError(f"{model.name} takes block scales into its products: pass scale_a and "
                         f"scale_b (decoded, one per {model.scale_block} elements along K) to "
                         f"tensorcore.matmul/dot or to the model's matmul/dot")
    arr = as_real_array(scale, name).astype(np.float64, order="C")
    if broadcast and arr.shape[-1:] == shape[-1:]:
        try:
            arr = np.ascontiguousarray(np.broadcast_to(arr, shape))
        except ValueError:
            pass
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}; {model.name} needs {shape}: the "
                         f"operand's shape with K replaced by ceil(K / {model.scale_block})")
    known = arr[~np.isnan(arr)]  # a NaN scale (E8M0 0xFF) makes its products NaN
    fmt = model.scale_format
    if (known < 0).any() or not _representable(known, fmt):
        raise ValueError(f"{name} holds values that are not unsigned {fmt.name} scales; apply "
                         f"a per-tensor scale (NVFP4's second level) after the product")
    return arr, _exponent(arr, fmt).astype(np.int32)


def _per_element(scales, exps, axis: int, K: int, model: TensorCoreModel):
    """Block scales repeated along ``axis`` to one per element (K of them)."""
    return (np.repeat(x, model.scale_block, axis=axis).take(np.arange(K), axis=axis)
            for x in (scales, exps))


def _rows(a, b, c, model: TensorCoreModel, scale_a=None, scale_b=None):
    """a, b broadcast and flattened to (P, n) rows, c to (P,), and the leading shape;
    products and exponents per k (block scales folded in), or the sub-block terms."""
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
    c = _accumulator(c, lead, model).reshape(-1)
    if model.block_scaled_mma:
        nb = -(-n // model.scale_block)
        sa, esa = _scales(scale_a, "scale_a", lead + (nb,), model, broadcast=True)
        sb, esb = _scales(scale_b, "scale_b", lead + (nb,), model, broadcast=True)
        sa, esa, sb, esb = (x.reshape(rows, nb) for x in (sa, esa, sb, esb))
        if model.sub_block:
            def terms(k0, k1):
                group = (a[:, k0:k1] * b[:, k0:k1]).sum(axis=-1)  # exact (module docstring)
                i = k0 // model.scale_block
                return group * sa[:, i] * sb[:, i], esa[:, i] + esb[:, i]
            return terms, None, n, c, lead, None, work
        sa, esa = _per_element(sa, esa, 1, n, model)
        sb, esb = _per_element(sb, esb, 1, n, model)
        a, b = a * sa, b * sb  # exact: powers of two (E8M0)
        ea, eb = ea + esa, eb + esb
    else:
        _scales(scale_a, "scale_a", (), model)
        _scales(scale_b, "scale_b", (), model)
    aw, bw = a.astype(work), b.astype(work)
    products = lambda k, out: np.multiply(aw[:, k], bw[:, k], out=out)  # noqa: E731
    exponents = lambda k, out: np.add(ea[:, k], eb[:, k], out=out)  # noqa: E731
    return products, exponents, n, c, lead, _all_finite(a, b), work


def block_fma(a: ArrayLike, b: ArrayLike, c: ArrayLike, model: TensorCoreModel, *,
              scale_a: ArrayLike | None = None, scale_b: ArrayLike | None = None) -> np.ndarray:
    """One block FMA, ``sum_i a[..., i] * b[..., i] + c``, all n products fused, for every
    leading index (a, b of shape (..., n), c of shape (...)); float64 values in model.output.
    A block-scaled model takes scale_a, scale_b of shape (..., ceil(n / scale_block))."""
    products, exponents, n, c, lead, finite, work = _rows(a, b, c, model, scale_a, scale_b)
    if model.sub_block:
        return _fused_sub_blocks(products, 0, n, c, model).reshape(lead)[()]
    return _fused(products, exponents, n, c, model, finite, _Buffers(c.shape, work, model)
                  ).reshape(lead)[()]


def dot(a: ArrayLike, b: ArrayLike, model: TensorCoreModel, c: ArrayLike | None = None, *,
        scale_a: ArrayLike | None = None, scale_b: ArrayLike | None = None) -> np.ndarray:
    """``sum_k a[..., k] * b[..., k] (+ c)`` the way the tensor core runs a long K: blocks of
    ``model.block`` in order (plus promotion / split-K); float64 in model.result_format.
    A block-scaled model (``model.block_scaled_mma``) needs the decoded block scales of both
    operands, each of shape (..., ceil(K / model.scale_block)) (broadcast with a and b)."""
    products, exponents, K, c, lead, finite, _ = _rows(a, b, c, model, scale_a, scale_b)
    if model.sub_block:
        return _chain_sub_blocks(products, K, c, model).reshape(lead)[()]
    return _accumulate(products, exponents, K, c, model, finite).reshape(lead)[()]


def matmul(a: ArrayLike, b: ArrayLike, model: TensorCoreModel, c: ArrayLike | None = None, *,
           scale_a: ArrayLike | None = None, scale_b: ArrayLike | None = None) -> np.ndarray:
    """``a @ b (+ c)`` on the modelled tensor core, shapes as numpy.matmul; float64 values in
    model.result_format. Vectorised over the output; one pass per k, no m x k x n temporaries.

    A block-scaled model (``model.block_scaled_mma``: B200_MXF8F6F4, B200_MXF4NVF4) needs each
    operand's decoded block scales (float64, e.g. E8M0 2**e), one per ``model.scale_block``
    elements along K: ``scale_a`` of shape ``a.shape[:-1] + (ceil(K / scale_block),)`` and
    ``scale_b`` of shape ``b.shape[:-2] + (ceil(K / scale_block),) + b.shape[-1:]`` (for a
    1-D operand, ``(ceil(K / scale_block),)``)."""
    a = _operand(a, model.inputs, "a", model.truncate_inputs)
    b = _operand(b, model.b_format, "b", model.truncate_inputs)
    K = a.shape[-1] if a.ndim else 0
    nb = -(-K // model.scale_block) if model.block_scaled_mma else 0
    sa, esa = _scales(scale_a, "scale_a", a.shape[:-1] + (nb,), model)
    sb, esb = _scales(scale_b, "scale_b",
                      b.shape[:-2] + (nb,) + b.shape[-1:] if b.ndim > 1 else (nb,), model)
    a_vector, b_vector = a.ndim == 1, b.ndim == 1
    a, b, squeeze, shape = matmul_operands(a, b)
    c = _accumulator(c, shape, model)
    ea, eb = _exponent(a, model.inputs), _exponent(b, model.b_format)
    if model.block_scaled_mma:
        sa, esa = (x[None, :] for x in (sa, esa)) if a_vector else (sa, esa)
        sb, esb = (x[:, None] for x in (sb, esb)) if b_vector else (sb, esb)
        if model.sub_block:
            def terms(k0, k1):
                i = k0 // model.scale_block  # exact sums of E2M1 products (module docstring)
                scale = sa[..., :, i, None] * sb[..., None, i, :]
                return (np.matmul(a[..., :, k0:k1], b[..., k0:k1, :]) * scale,
                        esa[..., :, i, None] + esb[..., None, i, :])
            out = _chain_sub_blocks(terms, K, c, model)
            return out.squeeze(axis=tuple(squeeze)) if squeeze else out
        sa, esa = _per_element(sa, esa, -1, K, model)
        sb, esb = _per_element(sb, esb, -2, K, model)
        a, b = a * sa, b * sb  # exact: powers of two (E8M0)
        ea, eb = ea + esa, eb + esb
    aw, bw = a.astype(_work_dtype(model)), b.astype(_work_dtype(model))
    out = _accumulate(lambda k, out: np.multiply(aw[..., :, k, None], bw[..., None, k, :], out=out),
                      lambda k, out: np.add(ea[..., :, k, None], eb[..., None, k, :], out=out),
                      K, c, model, _all_finite(a, b))
    return out.squeeze(axis=tuple(squeeze)) if squeeze else out


# --- kind::mxf4nvf4: exact sub-block sums as terms ----------------------------------------------
@np.errstate(invalid="ignore", over="ignore")
def _fused_sub_blocks(terms, start: int, stop: int, c, model: TensorCoreModel):
    """One mxf4nvf4 instruction over k in [start, stop): ``terms(k0, k1)`` gives the exact sum
    of products k0..k1-1 times its two scales, and its exponent (the scales' exponents); c and
    the terms are aligned to their largest exponent, truncated to F fraction bits, added
    exactly (float64: each term is below 2**(F+12), a handful of them below 2**53) and rounded
    toward zero into FP32 (MMA-Sim, arithmetic.py, nv_fused_dot_add_with_block_scale)."""
    parts = [terms(k0, min(k0 + model.sub_block, stop))
             for k0 in builtins.range(start, stop, model.sub_block)]
    emax = _exponent(c, model.accumulator).astype(np.int32)
    for _, e in parts:
        np.maximum(emax, e, out=emax)
    shift = model.fraction_bits - emax
    total = np.trunc(np.ldexp(c, shift))
    for value, _ in parts:
        total += np.trunc(np.ldexp(value, shift))
    s = np.ldexp(total, -shift)
    result = _round_output(s, model, np.empty_like(s), np.empty(s.shape, np.uint64))
    np.copyto(result, np.nan, where=np.isnan(s))  # a NaN scale or c (an infinite c stays)
    return result


def _chain_sub_blocks(terms, K: int, c, model: TensorCoreModel):
    """mxf4nvf4 along a long K: instruction after instruction, each result the next one's c."""
    c = np.asarray(c, np.float64)
    for k0 in builtins.range(0, K, model.block):
        c = _fused_sub_blocks(terms, k0, min(k0 + model.block, K), c, model)
    if K == 0:  # an empty sum of an exact +0 c is +0 (the other models' rule)
        c = c + 0.0
    return c
