"""A model of AMD CDNA matrix-core (MFMA) accumulation: MI100 (CDNA1), MI200 (CDNA2), MI300 (CDNA3).

Every rule here is read from MMA-Sim (Xie et al., "MMA-Sim: Bit-Accurate Reference Model of Tensor
Cores and Matrix Cores", arXiv:2511.10909; microsoft/MMA-Sim at commit c785138, files
``mmasim/simulator/amd.py``, class ``mfma``, and ``mmasim/simulator/arithmetic.py``, functions
``amd_fused_dot_rd_add``, ``fused_sum``, ``pairwise_dot``, ``flush_denormal``,
``truncate_to_tf32`` and ``extract_significand_exponent``), which reports bitwise agreement with
the hardware. The accumulator, c and the result are FP32. K runs in *groups* of products; each
group's result is the next group's c.

CDNA3 (MI300), FP16/BF16 (groups of 8), XF32 (groups of 4), FP8 (groups of 16) --
``amd_fused_dot_rd_add``:

1. NaN and infinity first: a NaN operand, inf*0 or inf - inf give NaN, else an infinity wins
   (a float64 sum of the exact products and c: MMA-Sim returns it when it is not finite).
2. A product at or beyond 2**128 in magnitude is an infinity of its sign (both signs: NaN),
   whatever c is.
3. Each operand's exponent is read with subnormals clamped to its format's emin and a zero
   counting as -126 (``extract_significand_exponent``); a product's exponent is the sum of its
   operands'. (So a product with a zero operand can raise the group's largest exponent: a zero
   times 2**100 in BF16 counts as 2**-26. That is what the source does; it is modelled as is.)
4. ``fused_sum``: the products are aligned to the largest product exponent E and each is
   **truncated toward zero** (``math.trunc``) to 24 fraction bits below 2**E; these are added
   exactly. FP8 (``is_fp8``) does this separately for the even- and the odd-indexed products of
   the group, then aligns the two half sums to the larger of their exponents and **floors**
   each (``math.floor``, toward minus infinity) to 24 fraction bits.
5. The group sum and c are aligned to M = max(E, exponent of c): the group sum is **floored** to
   31 fraction bits below 2**M, c is **floored** to 24 fraction bits below 2**M. (FP8 only: a c
   whose exponent is below M - 25 is dropped to 0 instead of floored.) This is the asymmetric
   rounding reported for CDNA3: products are truncated toward zero but the partial sum and c
   round toward minus infinity, so a tiny negative c takes a whole unit off:
   1 + (-2**-100) gives 1 - 2**-24 on FP16/BF16/XF32 (and 1 on FP8, which drops that c).
6. The exact sum of the two is rounded to nearest even into FP32 (``torch.tensor(..., float32)``
   in ``mfma.__call__``), with overflow to infinity and gradual underflow. An exact zero is +0;
   a negative sum that rounds to zero is -0.

XF32 operands are FP32 values whose 13 low bits are cleared (``truncate_to_tf32``: x >> 13 << 13),
i.e. truncated toward zero to TF32.

CDNA1 (MI100) and CDNA2 (MI200), FP16 and BF16 -- ``pairwise_dot``: each product is an FP32 fma
``fmaf(a, b, 0)`` (rounded to nearest into FP32; an exact zero product is +0), the products of a
group are added as a balanced binary tree of FP32 additions (rounded to nearest), and the group's
sum is added to the accumulator in FP32. Groups: 4 for FP16 and for CDNA2's BF16 ``_1k``
instructions, 2 for CDNA1's BF16. CDNA2 flushes subnormals: operands and c below their format's
smallest normal become +0 before anything else, and every product, every partial sum and the
accumulator after each group become a zero of their sign when below 2**-126 in magnitude.
(MMA-Sim's snapshot asserts float32 operands in ``pairwise_dot`` while ``mfma`` passes FP16/BF16
slices, so that path does not run as published; the model follows its evident intent, which
converts each FP16/BF16 operand exactly to FP32 for ``fmaf``.)

A K that is not a multiple of the group is padded with zero products, as a kernel pads its K
tiles (a zero product counts with exponent -252 and changes no alignment). More zero groups,
as an instruction with a longer K than the data pads, change nothing but a -0 result, which the
next group makes +0.

:func:`lowprec.reference_cdna.mfma_scalar` is the same model written one term at a time in exact
rational arithmetic, to read next to MMA-Sim's source; the tests check this module against it.
Not modelled: FP32 and FP64 MFMA (plain FMA chains), CDNA4's scaled (MX) MFMA.
"""
from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from .formats import BF16, E4M3FNUZ, E5M2FNUZ, FP16, FP32, TF32, FloatFormat, as_format
from .rounding import ModeLike, as_real_array
from .rounding import round as _round
from ._shapes import matmul_operands

if TYPE_CHECKING:  # accumulate imports tensorcore, which this module imports
    from .accumulate import FormatPair, Operand
    from .formats import FormatLike

__all__ = ["MFMAModel", "CDNA_PRESETS", "dot", "matmul", "CDNA1_FP16", "CDNA1_BF16",
           "CDNA2_FP16", "CDNA2_BF16", "CDNA3_FP16", "CDNA3_BF16", "CDNA3_XF32", "CDNA3_FP8",
           "CDNA3_BF8", "CDNA3_FP8_BF8", "CDNA3_BF8_FP8"]

# Widths in amd_fused_dot_rd_add (mmasim/simulator/arithmetic.py): n_fractional_bits=24 for the
# products (passed by mfma.__call__), 31 for the group sum and 24 for c against the common exponent.
PRODUCT_BITS = 24
SUM_BITS = 31
C_BITS = 24
C_DROP_BELOW = 25  # FP8: c counts only when its exponent is >= M - 25
ZERO_EXPONENT = -126  # extract_significand_exponent: a zero's exponent
_FNUZ = (E4M3FNUZ, E5M2FNUZ)


@dataclass(frozen=True)
class MFMAModel:
    """The numerics of one AMD MFMA instruction family (module docstring).

    fused: True for CDNA3's fused group (truncated products, floored sum and c, one rounding to
    nearest into FP32 per group); False for CDNA1/2's pairwise tree of FP32 FMAs.
    even_odd: (fused FP8) the even- and odd-indexed products are fused apart, then combined.
    flush_subnormals: (CDNA2) operands, products and partial sums below the smallest normal are
    flushed to zero. truncate_inputs: operands are FP32 values truncated to ``inputs`` (XF32).
    """

    name: str  # preset name, for tables and messages
    inputs: FloatFormat  # format of the a operands (and of b, unless inputs_b says otherwise)
    group: int  # products per group: each group's FP32 result is the next group's c
    fused: bool  # CDNA3 fused group (True) or CDNA1/2 pairwise FMA tree (False)
    inputs_b: FloatFormat | None = None  # b's format where it differs (FP8 x BF8)
    even_odd: bool = False  # FP8: two half groups (even / odd indices), then combined
    flush_subnormals: bool = False  # CDNA2
    truncate_inputs: bool = False  # XF32: FP32 operands with their 13 low bits cleared
    source: str = ""  # where the parameters are read from

    def __post_init__(self):
        for name in ("inputs", "inputs_b"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, as_format(getattr(self, name)))
        if not (isinstance(self.group, int) and self.group >= 1):
            raise ValueError(f"group must be a positive int, got {self.group!r}")
        for f in (self.inputs, self.b_format):
            # every product must be exact in float64 and its exponent at least -252
            if not (f.fits_float32 and f.has_zero):
                raise ValueError(f"input formats must fit in FP32, got {f.name}")
        if self.even_odd and not (self.fused and self.group % 2 == 0):
            raise ValueError("even_odd needs a fused model with an even group")
        if not self.fused and (self.truncate_inputs or self.even_odd):
            raise ValueError("a pairwise (CDNA1/2) model takes neither truncate_inputs nor "
                             "even_odd")
        if self.fused and self.flush_subnormals:
            raise ValueError("flush_subnormals is a pairwise (CDNA2) model's option")

    @property
    def b_format(self) -> FloatFormat:
        return self.inputs_b or self.inputs

    @property
    def output(self) -> FloatFormat:
        """Format of c and of every group's result: FP32."""
        return FP32

    accumulator = output
    result_format = output

    # --- the accumulator protocol (lowprec.accumulate), as lowprec.tensorcore.TensorCoreModel ---
    sum_format = None  # no format is imposed on a NaN check of the operands
    block_scaled_mma = False  # (lowprec.tensorcore: an instruction that takes block scales)

    def matmul(self, a: Operand, b: Operand, *, inputs: FormatPair | None = None,
               held: FormatPair | None = None, output: FormatLike | None = None,
               mode: ModeLike = "nearest", rng: np.random.Generator | None = None,
               random_bits: int | None = None) -> np.ndarray:
        """``a @ b`` on this matrix core (see :func:`lowprec.matmul`)."""
        return _accumulate_module()._matmul(self, a, b, inputs, held, output, mode, rng,
                                            random_bits)

    def dot(self, a: Operand, b: Operand, *, inputs: FormatPair | None = None,
            held: FormatPair | None = None, output: FormatLike | None = None,
            mode: ModeLike = "nearest", rng: np.random.Generator | None = None,
            random_bits: int | None = None) -> np.ndarray:
        """``sum_k a[..., k] * b[..., k]`` on this matrix core (see :func:`lowprec.dot`)."""
        return _accumulate_module()._product_reduction(self, a, b, False, inputs, held, output,
                                                       mode, rng, random_bits)

    def sum(self, x: ArrayLike, axis: int | None = None, *, output: FormatLike | None = None,
            mode: ModeLike = "nearest", rng: np.random.Generator | None = None,
            random_bits: int | None = None) -> np.ndarray:
        """The sum of x along ``axis``: x times ones on this matrix core."""
        return _accumulate_module()._sum(self, x, axis, output, mode, rng, random_bits)

    def reading(self, fa: FloatFormat | None, fb: FloatFormat | None) -> MFMAModel:
        """This model reading operands of formats ``fa`` and ``fb``: CDNA3's FP8 MFMA takes FP8
        (E4M3FNUZ) or BF8 (E5M2FNUZ) for each operand on its own (mfma ..._fp8_bf8 etc.,
        mmasim/isa/amd.py), with the same arithmetic for all four pairs."""
        if not (self.inputs in _FNUZ and fa in _FNUZ and fb in _FNUZ):
            return self
        if (fa, fb) == (self.inputs, self.b_format):
            return self
        return dataclasses.replace(self, inputs=fa, inputs_b=None if fb == fa else fb)

    def _sum_of_products(self, a, b, fa, fb, gemm, mode, rng, random_bits):
        return (matmul if gemm else dot)(a, b, self.reading(fa, fb))

    def _sum_terms(self, x, known, mode, rng, random_bits):
        return dot(x, np.ones(x.shape[-1], x.dtype), self)


def _accumulate_module():
    from . import accumulate  # accumulate imports tensorcore; imported when first used
    return accumulate


_MMASIM = "MMA-Sim (arXiv:2511.10909), mmasim/simulator/amd.py mfma and arithmetic.py"
# CDNA1 (MI100): f32_32x32x8f16 etc. run pairwise_dot over groups of 4 (FP16) or 2 (BF16).
CDNA1_FP16 = MFMAModel("CDNA1_FP16", FP16, group=4, fused=False,
                       source=_MMASIM + " pairwise_dot; group 4")
CDNA1_BF16 = MFMAModel("CDNA1_BF16", BF16, group=2, fused=False,
                       source=_MMASIM + " pairwise_dot; group 2")
# CDNA2 (MI200): the same trees, subnormals flushed; BF16 is the _1k instructions' group of 4.
CDNA2_FP16 = MFMAModel("CDNA2_FP16", FP16, group=4, fused=False, flush_subnormals=True,
                       source=_MMASIM + " pairwise_dot, flush_denormal; group 4")
CDNA2_BF16 = MFMAModel("CDNA2_BF16", BF16, group=4, fused=False, flush_subnormals=True,
                       source=_MMASIM + " pairwise_dot, flush_denormal; bf16_1k, group 4")
# CDNA3 (MI300): amd_fused_dot_rd_add with n_fractional_bits=24.
CDNA3_FP16 = MFMAModel("CDNA3_FP16", FP16, group=8, fused=True,
                       source=_MMASIM + " amd_fused_dot_rd_add; group min(8, k)")
CDNA3_BF16 = MFMAModel("CDNA3_BF16", BF16, group=8, fused=True,
                       source=_MMASIM + " amd_fused_dot_rd_add; group min(8, k)")
CDNA3_XF32 = MFMAModel("CDNA3_XF32", TF32, group=4, fused=True, truncate_inputs=True,
                       source=_MMASIM + " amd_fused_dot_rd_add, truncate_to_tf32; group 4")
CDNA3_FP8 = MFMAModel("CDNA3_FP8", E4M3FNUZ, group=16, fused=True, even_odd=True,
                      source=_MMASIM + " amd_fused_dot_rd_add(is_fp8=True); group 16")
CDNA3_BF8 = dataclasses.replace(CDNA3_FP8, name="CDNA3_BF8", inputs=E5M2FNUZ)
CDNA3_FP8_BF8 = dataclasses.replace(CDNA3_FP8, name="CDNA3_FP8_BF8", inputs_b=E5M2FNUZ)
CDNA3_BF8_FP8 = dataclasses.replace(CDNA3_FP8, name="CDNA3_BF8_FP8", inputs=E5M2FNUZ,
                                    inputs_b=E4M3FNUZ)

# The presets, for lowprec.TENSOR_CORES.
CDNA_PRESETS = (CDNA1_FP16, CDNA1_BF16, CDNA2_FP16, CDNA2_BF16, CDNA3_FP16, CDNA3_BF16,
                CDNA3_XF32, CDNA3_FP8, CDNA3_BF8, CDNA3_FP8_BF8, CDNA3_BF8_FP8)


# --- the vectorised model ---------------------------------------------------------------------
Terms = Callable[[int], np.ndarray]  # k -> an array of the output's shape


def _exponent(x: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """extract_significand_exponent's exponent: floor(log2|x|), at least fmt.emin; -126 for 0."""
    _, e = np.frexp(x)  # x = f * 2**e with 1/2 <= |f| < 1 (e = 0 for 0, inf, NaN)
    e = np.maximum(e.astype(np.int64) - 1, fmt.emin)
    return np.where(x == 0, ZERO_EXPONENT, e)


def _fused_sum(products: list[np.ndarray], exponents: list[np.ndarray]):
    """fused_sum: (S, E) with E the largest exponent and S the sum of the products truncated
    toward zero to multiples of 2**(E - 24), in those units (an exact integer in float64: each
    term is below 2**26 in magnitude)."""
    E = np.maximum.reduce(exponents)
    scale = np.ldexp(1.0, PRODUCT_BITS - E)  # between 2**-103 and 2**276: a float64
    S = np.zeros(E.shape)
    for p in products:
        S += np.trunc(p * scale)  # exact: a power-of-two scaling, no product is above 2**(E+2)
    return S, E


@np.errstate(invalid="ignore", over="ignore")  # NaN and inf operands: replaced at the end
def _cdna3_group(products: list[np.ndarray], exponents: list[np.ndarray], c: np.ndarray,
                 model: MFMAModel, finite: bool) -> np.ndarray:
    """amd_fused_dot_rd_add for every output element: one group, c of FP32 values; finite: no
    operand is NaN or infinite."""
    if model.even_odd:
        S0, E0 = _fused_sum(products[0::2], exponents[0::2])
        S1, E1 = _fused_sum(products[1::2], exponents[1::2])
        E = np.maximum(E0, E1)
        S = np.floor(np.ldexp(S0, E0 - E)) + np.floor(np.ldexp(S1, E1 - E))  # units 2**(E-24)
    else:
        S, E = _fused_sum(products, exponents)
    ec = _exponent(c, FP32)
    M = np.maximum(E, ec)
    # the group sum floored to 31 fraction bits below 2**M, c to 24: both in units 2**(M - 31)
    total = np.floor(np.ldexp(S, SUM_BITS - PRODUCT_BITS + E - M))
    cq = np.floor(np.ldexp(c, C_BITS - M))
    if model.even_odd:
        cq = np.where(ec >= M - C_DROP_BELOW, cq, 0.0)
    total += np.ldexp(cq, SUM_BITS - C_BITS)  # |total| < 2**37: exact
    # one rounding to nearest even into FP32 (NumPy's float64 -> float32 cast); zero is +0
    # (a negative sum that rounds to zero is -0, as torch.tensor(-2.0**-160, dtype=float32))
    result = np.ldexp(total, M - SUM_BITS).astype(np.float32).astype(np.float64)
    huge = 2.0**128
    if model.inputs.max * model.b_format.max >= huge:  # BF16, XF32: products beyond FP32's range
        pos = np.logical_or.reduce([p >= huge for p in products])
        neg = np.logical_or.reduce([p <= -huge for p in products])
        if pos.any() or neg.any():
            big = np.where(pos & neg, np.nan, np.where(pos, np.inf, -np.inf))
            result = np.where(pos | neg, big, result)
    if not (finite and np.isfinite(c).all()):
        # NaN and infinity first: the float64 sum of the exact products and c has them right
        special = c.copy()
        for p in products:
            special += p
        result = np.where(np.isfinite(special), result, special)
    return result


def _flush(x: np.ndarray, tiny: float) -> np.ndarray:
    """flush_denormal(keep_sign=True): below tiny in magnitude -> a zero of the same sign.
    (The zero is made in x's dtype: under NumPy 1.x a float32 scalar times the Python float 0.0
    is a float64, which would move the rest of the FP32 tree to float64.)"""
    return np.where(np.abs(x) < tiny, np.copysign(np.zeros_like(x), x), x)


@np.errstate(invalid="ignore", over="ignore")
def _pairwise_group(products: list[np.ndarray], c: np.ndarray, model: MFMAModel) -> np.ndarray:
    """pairwise_dot then ``sum + group_sum``, all in float32 (NumPy's float32 arithmetic is IEEE
    round to nearest even, with signed zeros as IEEE 754 clause 6.3 says)."""
    tiny = np.float32(2.0**-126)
    flush = model.flush_subnormals

    def tree(ps):
        if len(ps) == 1:
            s = ps[0]
        else:
            m = len(ps) // 2
            s = tree(ps[:m]) + tree(ps[m:])  # fmaf(sum_l, 1.0, sum_r)
        return _flush(s, tiny) if flush else s

    # fmaf(a, b, 0.0): the exact product rounded once; an exactly zero product is +0
    leaves = [np.where(p == 0, np.float32(0), p.astype(np.float32)) for p in products]
    total = c.astype(np.float32) + tree(leaves)
    return (_flush(total, tiny) if flush else total).astype(np.float64)


@np.errstate(invalid="ignore", over="ignore")  # inf * 0 and the like: NaN, as the source has
def _run(products: Terms, exponents: Terms, K: int, c: np.ndarray, model: MFMAModel,
         finite: bool) -> np.ndarray:
    """The whole K, group after group (K already padded to a multiple of the group)."""
    if model.flush_subnormals:
        c = np.where(np.abs(c) < FP32.tiny, 0.0, c)  # flush_denormal(C): +0
    for k0 in builtins.range(0, K, model.group):
        ks = builtins.range(k0, k0 + model.group)
        if model.fused:
            c = _cdna3_group([products(k) for k in ks], [exponents(k) for k in ks], c, model,
                             finite)
        else:
            c = _pairwise_group([products(k) for k in ks], c, model)
    return c


def _operand(x: ArrayLike, fmt: FloatFormat, name: str, truncate: bool = False,
             flush: bool = False) -> np.ndarray:
    """x as float64 values of fmt (truncate, XF32: FP32 values truncated to TF32); flush (CDNA2):
    subnormal operands become +0 (flush_denormal)."""
    arr = as_real_array(x, name).astype(np.float64, order="C")
    check = FP32 if truncate else fmt
    with np.errstate(over="ignore", invalid="ignore"):
        ok = np.array_equal(_round(arr, check), arr, equal_nan=True)
    if not ok:
        raise ValueError(f"{name} holds values that are not {check.name} numbers: round them "
                         f"first, e.g. lowprec.round({name}, '{check.name}')")
    if truncate:  # truncate_to_tf32: x >> 13 << 13 on the FP32 bits
        bits = arr.astype(np.float32).view(np.uint32) & np.uint32(0xFFFFE000)
        arr = bits.view(np.float32).astype(np.float64)
    if flush:
        arr = np.where(np.abs(arr) < fmt.tiny, 0.0, arr)
    return arr


def _accumulator(c: ArrayLike | None, shape: tuple[int, ...], model: MFMAModel) -> np.ndarray:
    if c is None:
        return np.zeros(shape)
    c = _operand(c, FP32, "c")  # (CDNA2 flushes c in _run)
    return np.array(np.broadcast_to(c, shape), np.float64)


def _all_finite(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.isfinite(a).all() and np.isfinite(b).all())


def _padded(a: np.ndarray, axis: int, group: int) -> np.ndarray:
    """a with zeros appended along ``axis`` up to a multiple of ``group``."""
    extra = -a.shape[axis] % group
    if not extra:
        return a
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, extra)
    return np.pad(a, pad)


def dot(a: ArrayLike, b: ArrayLike, model: MFMAModel, c: ArrayLike | None = None) -> np.ndarray:
    """``sum_k a[..., k] * b[..., k] (+ c)`` (a and b broadcast) the way the matrix core runs a
    long K: groups of ``model.group`` in order; float64 values in FP32."""
    a = _operand(a, model.inputs, "a", model.truncate_inputs, model.flush_subnormals)
    b = _operand(b, model.b_format, "b", model.truncate_inputs, model.flush_subnormals)
    a, b = np.broadcast_arrays(a, b)
    if a.ndim == 0:
        raise ValueError("a and b need at least one dimension (the products' axis)")
    lead = a.shape[:-1]
    c = _accumulator(c, lead, model)
    a, b = _padded(a, -1, model.group), _padded(b, -1, model.group)
    ea, eb = _exponent(a, model.inputs), _exponent(b, model.b_format)
    return _run(lambda k: a[..., k] * b[..., k], lambda k: ea[..., k] + eb[..., k],
                a.shape[-1], c, model, _all_finite(a, b))[()]


def matmul(a: ArrayLike, b: ArrayLike, model: MFMAModel, c: ArrayLike | None = None
           ) -> np.ndarray:
    """``a @ b (+ c)`` on the modelled matrix core, shapes as numpy.matmul; float64 values in
    FP32. Vectorised over the output: a Python loop over k only."""
    a = _operand(a, model.inputs, "a", model.truncate_inputs, model.flush_subnormals)
    b = _operand(b, model.b_format, "b", model.truncate_inputs, model.flush_subnormals)
    a, b, squeeze, shape = matmul_operands(a, b)
    c = _accumulator(c, shape, model)
    a, b = _padded(a, -1, model.group), _padded(b, -2, model.group)
    ea, eb = _exponent(a, model.inputs), _exponent(b, model.b_format)
    out = _run(lambda k: a[..., :, k, None] * b[..., None, k, :],
               lambda k: ea[..., :, k, None] + eb[..., None, k, :], a.shape[-1], c, model,
               _all_finite(a, b))
    return out.squeeze(axis=tuple(squeeze)) if squeeze else out

