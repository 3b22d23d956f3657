"""One block quantizer for every block-scaling rule in use (MX, NVFP4, 1x128/128x128, rowwise).

``block_cast(x, fmt, block=..., scale_format=..., rule=...)`` splits ``x`` into blocks, picks
one decode scale ``X`` per block from the block's amax by ``rule``, stores the elements
``P = round(x / X)`` in ``fmt`` and returns a :class:`ScaledTensor` (value = ``P * X``, times
a per-tensor ``tensor_scale`` for NVFP4) with a :class:`BlockRecord`. ``block_quantize``
returns the values read back instead of the tensor.

Blocks (``block``): an int ``b`` (1-D blocks of ``b`` consecutive values along ``axis``), a
tile ``(bm, bn)`` over the last two axes, ``"row"`` (one scale per row: 1-D blocks spanning the
last axis), ``"column"`` (one per column: spanning axis -2) or ``"tensor"`` (one scale for a
1-D or 2-D array). A last block shorter than the block size holds what is left; its amax is
taken over the values it has (the libraries below pad with zeros, which gives the same amax).

Rules, each with the reference whose bits it reproduces (``emax`` is the element format's
largest exponent, ``max`` its largest value; "amax" ignores NaN unless said):

==================  ==========  ===============================================================
rule                scale       decode scale X of a block with amax ``a``
==================  ==========  ===============================================================
``floor``           e8m0        ``2**(floor(log2 a) - emax)``: OCP MX v1.0 sec. 6.3, as
                                microsoft/microxcaling mx/mx_ops.py ``_quantize_mx`` runs it,
                                with the floor read exactly from the exponent bits. The top
                                element may clip. Clamped below at 2**-127 (all-zero blocks).
                                inf or NaN in the block: NaN scale, the block reads NaN.
``rceil``           e8m0        ``2**ceil(log2(a / max))`` exactly, clamped to [2**-127,
                                2**127]: the round-up rule of cuBLAS (docs: "Computing scaling
                                and conversion factors for FP8 with UE8M0 scales") and
                                Transformer Engine; nothing clips. inf or NaN in the block:
                                NaN scale, the block reads NaN.
``rceil_te``        e8m0        Transformer Engine's kernel bit for bit (common/util/ptx.cuh
                                ``float_to_e8m0`` on the float32 ``a * (1/max)``,
                                ``exp2f_rcp``; mx_cast's "te"). Equal to ``rceil`` whenever
                                ``a / max`` is a normal float32 (checked exhaustively over a
                                binade for each MX element format); below that the product is
                                rounded to float32's subnormal grid first. TE's corners: amax
                                ignores NaN; code 0 multiplies by 1 (flushes the block); inf
                                gives code 254 whose reciprocal is 0 (finite elements 0, the
                                inf NaN).
``ceil``            e8m0        ``2**(ceil(log2 a) - emax)``: torchao ``ScaleCalculationMode.CEIL``
                                (torchao/prototype/mx_formats/mx_tensor.py ``to_mx``), exact.
``even``            e8m0        ``2**(floor(log2 a') - emax)`` where ``a'`` is ``a`` rounded to the
                                element's mantissa bits, ties up: torchao ``EVEN``, exact.
``pow2_floor``      e8m0/fp32   ``1 / S`` with ``S = max / a`` (float32) rounded down to a power
                                of two by zeroing its mantissa: TE Float8BlockScaling
                                (common/recipe/recipe_common.cuh ``compute_scale_from_amax``:
                                amax 0, inf or NaN give S = 1; an infinite S becomes FLT_MAX).
                                Elements are ``satfinite(x * S)``.
``fp32``            fp32        ``X = float32(a / max)``, unrounded: DeepSeek-V3 (arXiv
                                2412.19437 sec. 3.3; inference/kernel.py ``act_quant_kernel``:
                                ``s = amax / 448; y = x / s`` in float32). A scale of 0 (an
                                all-zero block, or ``a / max`` below float32's range) becomes 1
                                (the kernel would divide by 0; TE's rule also gives 1); inf or
                                NaN in the block: NaN scale.
``nvfp4``           e4m3        two levels (TE common/cast/nvfp4/core_nvfp4.cuh and
                                quantize_transpose_nvfp4.cuh): ``S_enc = 448*6 / global_amax``
                                (float32; 1 when amax is 0 or S_enc is 0, FLT_MAX when
                                infinite), ``S_dec = float32(1 / S_enc)``; per block
                                ``X_b = e4m3(a / 6 * S_enc)`` (float32, in that order); elements
                                ``x * min(1 / (X_b * S_dec), FLT_MAX)``; value ``P * X_b * S_dec``.
                                A product with a float32 reciprocal, as TE's kernel and its
                                test reference compute it: for ``X_b = 1.875`` the element
                                ``-4.6875`` gives ``-3`` where the exact quotient ``-2.5``
                                would round to ``-2`` (tests/test_torch_torchao.py).
==================  ==========  ===============================================================

Where torchao 0.18's CPU path claims one of these rules and gives other bits, lowprec models
it under its own name (tested against torchao in tests/test_torch_torchao.py):

* ``floor_torchao``, ``ceil_torchao``, ``even_torchao``: the code from the float32 bits (a
  float32-subnormal amax counts as 2**-127); code-0 blocks are divided by 2**-126 (torchao
  clamps the float scale to the smallest normal) but the code says 2**-127, so they read back
  at half; inf/NaN follow torchao (NaN: code 255, the elements divided by +inf; inf: a finite
  code, the inf saturates).
* ``rceil_torchao``: ``ceil(log2(float32(a / max)))`` with log2 in float32, so just above
  ``max * 2**k`` the code comes out one low (the top element then clips); amax propagates NaN
  (code 255); code 0 multiplies by 1; inf gives code 254 and multiplies by 2**-127.
* ``pow2_floor_torchao``: torchao float8 rowwise with power-of-two scales
  (torchao/float8/float8_utils.py ``amax_to_scale``, ``_round_scale_down_to_power_of_2``):
  ``S = float32(max / max(a, 1e-12))`` computed in float64, then ``exp2(floor(log2 S))`` with
  log2 in float32: just below a power of two S rounds up a binade. NaN propagates; an inf
  amax gives S = 0.
* ``nvfp4_torchao``: torchao nvfp4_tensor.py ``nvfp4_quantize``: ``X_b = e4m3(clamp(a / 6 /
  s, 2**-6, 448))`` (amax propagates NaN) and elements ``x * ((1 / s) / X_b)``: a product with a
  rounded reciprocal, not a division; ``tensor_scale=None`` computes ``s = amax / (448 * 6)``
  (torchao ``per_tensor_amax_to_scale``); a zero tensor gives ``s = 0`` and NaN.

``tensor_scale`` (NVFP4 rules only): None computes the per-tensor decode scale from the global
amax; a number is used as the decode scale ``S_dec`` (1.0 gives one-level NVFP4, which is TE's
and torchao's single-level path bit for bit).

Elements round to nearest-even and saturate to +-max (``mode="nearest"``, CUDA's
``__NV_SATFINITE``), or stochastically (``mode="stochastic"`` with ``rng``, as NVFP4 training
rounds gradients; TE's ``cvt.rs``), or in any other mode of :func:`lowprec.round`, always
saturating; the value rounded is the float32 the reference kernel computes (``x * reciprocal``
or ``x / scale``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from ..bits import encode
from ..formats import E2M1, E2M3, E3M2, E4M3, E5M2, FloatFormat, FormatLike, as_format
from ..rounding import ModeLike, as_mode
from ..rounding import round as round_to
from .fp8 import CastRecord, amax_of, as_float32_array, cast_statistics
from .tensor import SCALE_FORMATS, ScaledTensor

__all__ = ["BLOCK_RULES", "BlockRecord", "block_cast", "block_quantize"]

_E8M0_RULES = ("floor", "rceil", "ceil", "even", "rceil_te", "floor_torchao", "ceil_torchao",
               "even_torchao", "rceil_torchao")
_NVFP4_RULES = ("nvfp4", "nvfp4_torchao")
BLOCK_RULES = _E8M0_RULES + ("pow2_floor", "pow2_floor_torchao", "fp32") + _NVFP4_RULES
_SCALE_FORMATS_OF = {**{r: ("e8m0",) for r in _E8M0_RULES},
                     "pow2_floor": ("e8m0", "fp32"), "pow2_floor_torchao": ("fp32",),
                     "fp32": ("fp32",), "nvfp4": ("e4m3",), "nvfp4_torchao": ("e4m3",)}
_ELEMENTS = (E4M3, E5M2, E3M2, E2M3, E2M1)  # OCP MX v1.0 element formats (and FP8)
_F32_MAX = np.float32(np.finfo(np.float32).max)
_F32 = np.float32


@dataclass(frozen=True)
class BlockRecord(CastRecord):
    """A :class:`CastRecord` (amax, clipped, flushed, block_scales) with the codes of a block
    cast. ``block_scales`` are the decoded block scales (float32, grid shape; NaN for a NaN
    scale); ``scale_codes`` are E8M0 (uint8, 255 = NaN) or E4M3 codes (uint8), or float32
    decode scales for ``scale_format="fp32"``; ``element_codes`` are ``fmt``'s codes, shape of
    ``x`` (an element that reads NaN in a format without NaN gets code 0)."""

    scale_codes: np.ndarray | None = field(default=None, compare=False, repr=False)
    tensor_scale: float | None = None  # NVFP4's per-tensor decode scale
    scale_format: str | None = None
    rule: str | None = None
    tensor: ScaledTensor | None = field(default=None, compare=False, repr=False)

    @property
    def element_codes(self) -> np.ndarray:
        """The element format's codes, shape of x; encoded on first use (a training step
        that never reads them does not pay for them)."""
        codes = self.__dict__.get("_element_codes")
        if codes is None:
            elements, fmt = self.tensor.elements, self.tensor.fmt
            codes = _element_codes(elements, fmt)
            self.__dict__["_element_codes"] = codes  # a cache on a frozen value, not a field
        return codes


# --- blocking -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Layout:
    """How x maps to a (..., n_blocks, block_elems) array and back."""

    shape: tuple
    tile: tuple[int, int] | None  # (bm, bn) for 2-D tiles
    size: int  # 1-D block length
    axis: int | None  # 1-D blocks: the axis they run along

    def to_blocks(self, x: np.ndarray) -> np.ndarray:
        if self.tile is None:
            moved = np.moveaxis(x, self.axis, -1)
            pad = (-moved.shape[-1]) % self.size
            if pad:
                moved = np.concatenate([moved, np.zeros(moved.shape[:-1] + (pad,), x.dtype)], -1)
            return moved.reshape(moved.shape[:-1] + (moved.shape[-1] // self.size, self.size))
        bm, bn = self.tile
        m, n = x.shape[-2:]
        padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, (-m) % bm), (0, (-n) % bn)])
        lead = padded.shape[:-2]
        tiles = padded.reshape(lead + (padded.shape[-2] // bm, bm, padded.shape[-1] // bn, bn))
        tiles = np.swapaxes(tiles, -3, -2)  # (..., Mb, Nb, bm, bn)
        return tiles.reshape(tiles.shape[:-2] + (bm * bn,))

    def from_blocks(self, blocks: np.ndarray) -> np.ndarray:
        if self.tile is None:
            flat = blocks.reshape(blocks.shape[:-2] + (blocks.shape[-2] * self.size,))
            flat = flat[..., :self.shape[self.axis]]
            return np.moveaxis(flat, -1, self.axis)
        bm, bn = self.tile
        tiles = blocks.reshape(blocks.shape[:-1] + (bm, bn))
        tiles = np.swapaxes(tiles, -3, -2)  # (..., Mb, bm, Nb, bn)
        lead = tiles.shape[:-4]
        full = tiles.reshape(lead + (tiles.shape[-4] * bm, tiles.shape[-2] * bn))
        return full[..., :self.shape[-2], :self.shape[-1]]

    def grid(self, per_block: np.ndarray) -> np.ndarray:
        """Per-block values (..., n_blocks) in the ScaledTensor's block_scales layout."""
        return per_block if self.tile is not None else np.moveaxis(per_block, -1, self.axis)


def _layout(shape: tuple, block: int | tuple[int, int] | str, axis: int) -> _Layout:
    ndim = len(shape)
    if ndim == 0:
        raise ValueError("block scaling needs an array with at least one dimension")
    if not (isinstance(axis, (int, np.integer)) and not isinstance(axis, bool)):
        raise TypeError(f"axis must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an array with {ndim} dimensions")
    if isinstance(block, (int, np.integer)) and not isinstance(block, (bool, np.bool_)):
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        return _Layout(shape, None, int(block), int(axis) % ndim)
    if isinstance(block, str) or isinstance(block, tuple):
        if axis != -1:
            raise ValueError(f"axis applies to int blocks only; block={block!r} fixes its axes "
                             f"(got axis={axis})")
    if isinstance(block, tuple):
        if not (len(block) == 2 and all(isinstance(b, (int, np.integer))
                                         and not isinstance(b, bool) and b >= 1 for b in block)):
            raise ValueError(f"a tile block must be two ints >= 1, got {block!r}")
        if ndim < 2:
            raise ValueError(f"a {block} tile needs an array with at least 2 dimensions")
        return _Layout(shape, (int(block[0]), int(block[1])), 0, None)
    if block == "row":
        return _Layout(shape, None, max(shape[-1], 1), ndim - 1)
    if block == "column":
        if ndim < 2:
            raise ValueError("block='column' needs an array with at least 2 dimensions")
        return _Layout(shape, None, max(shape[-2], 1), ndim - 2)
    if block == "tensor":
        if ndim == 1:
            return _Layout(shape, None, max(shape[0], 1), 0)
        if ndim == 2:
            return _Layout(shape, (max(shape[0], 1), max(shape[1], 1)), 0, None)
        raise ValueError(f"block='tensor' takes a 1-D or 2-D array, got {ndim} dimensions")
    raise ValueError(f"unknown block {block!r}: give an int, a (bm, bn) tile, 'row', 'column' "
                     "or 'tensor'")


# --- scale rules --------------------------------------------------------------------------------
def _amax(blocks: np.ndarray, propagate_nan: bool) -> np.ndarray:
    """Per-block max |x| (float32): NaN-propagating (torch.amax) or NaN-ignoring (fmaxf)."""
    if blocks.shape[-1] == 0:
        return np.zeros(blocks.shape[:-1], np.float32)
    # On the float32 bit patterns with the sign cleared, unsigned integer order is |x|'s
    # order, and every NaN pattern (above 0x7F800000) sorts above +inf: the integer maximum is
    # the NaN-propagating amax. Pairs of neighbours are reduced over the whole contiguous array
    # at once (an even block never mixes two blocks): 4M values in 1.8 ms, where a max over
    # the short last axis takes 3.7 ms on the integers and 7.5 ms on float32.
    mags = np.empty(blocks.shape, np.uint32)
    np.bitwise_and(blocks.view(np.uint32), np.uint32(0x7FFFFFFF), out=mags)
    while mags.shape[-1] % 2 == 0:
        pairs = mags.reshape(-1, 2)
        mags = np.maximum(pairs[:, 0], pairs[:, 1]).reshape(mags.shape[:-1]
                                                            + (mags.shape[-1] // 2,))
    while mags.shape[-1] > 1:  # an odd length: halves that overlap by one, which max ignores
        n = mags.shape[-1]
        half = (n + 1) // 2
        mags = np.maximum(mags[..., :half], mags[..., n - half:])
    amax = np.ascontiguousarray(mags[..., 0]).view(np.float32)
    if not propagate_nan:  # fmaxf skips NaN: redo the (rare) blocks holding one
        nan = np.isnan(amax)
        if nan.any():
            amax[nan] = np.fmax.reduce(np.abs(blocks[nan]), axis=-1, initial=0.0)
    return amax


def _bits(a32: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(biased exponent field, mantissa field) of float32 values."""
    u = np.ascontiguousarray(a32, np.float32).view(np.uint32)
    return ((u >> 23) & 0xFF).astype(np.int64), (u & 0x7FFFFF).astype(np.int64)


def _exact_exponent(a32: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(floor(log2 a), a / 2**floor) exactly for positive finite float32 a (subnormals too)."""
    frac, exp = np.frexp(np.where((a32 > 0) & np.isfinite(a32), a32, 1).astype(np.float64))
    return exp - 1, 2 * frac


def _e8m0_exact(amax: np.ndarray, fmt: FloatFormat, rule: str) -> np.ndarray:
    """Unbiased E8M0 exponents (float64; NaN for inf/NaN blocks) of the floor/ceil/even rules."""
    k, sig = _exact_exponent(amax)
    if rule == "ceil":
        k = k + (sig > 1)
    elif rule == "even":  # a rounded to the element's mantissa bits, ties up, reaches 2**(k+1)
        k = k + (sig >= 2 - 2.0 ** -(fmt.mantissa_bits + 1))
    e = np.where(amax > 0, np.maximum(k - fmt.emax, -127), -127).astype(np.float64)
    return np.where(np.isfinite(amax), e, np.nan)


def _rceil_exact(amax: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """Unbiased exponents ceil(log2(amax / max)), clamped to [-127, 127]; NaN for inf/NaN.
    The float64 quotient is enough: a float32 amax above max * 2**k exceeds it by at least
    2**-26 relative, far above float64's rounding, so the quotient never rounds onto 2**k."""
    q = np.where((amax > 0) & np.isfinite(amax), amax, 1).astype(np.float64) / fmt.max
    frac, exp = np.frexp(q)
    e = np.where(frac == 0.5, exp - 1, exp)
    e = np.where(amax > 0, np.clip(e, -127, 127), -127).astype(np.float64)
    return np.where(np.isfinite(amax), e, np.nan)


def _e8m0_torchao(amax: np.ndarray, fmt: FloatFormat, rule: str) -> np.ndarray:
    """torchao to_mx's biased codes (0..255) for FLOOR/CEIL/EVEN, from the float32 bits."""
    a = amax.astype(np.float32)
    if rule == "even":
        u = a.view(np.uint32).astype(np.int64) + (1 << (23 - fmt.mantissa_bits - 1))
        a = (u & (0x1FF << 23)).astype(np.uint32).view(np.float32)
    field_, mantissa = _bits(a)
    e = field_ - 127
    if rule == "ceil":
        e = e + (mantissa > 0)
    code = np.clip(e - fmt.emax, -127, 128) + 127
    return np.where(np.isnan(amax), 255, code).astype(np.int64)


def _te_codes(amax32: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """TE's biased E8M0 codes (0..255): float_to_e8m0(amax * float32(1 / max))."""
    max_norm_rcp = _F32(1.0 / fmt.max)  # Quantized_Limits::max_norm_rcp, a float constant
    with np.errstate(over="ignore"):
        val = amax32 * max_norm_rcp  # float32 product
    exponent, mantissa = _bits(val)
    # Round the exponent up unless val is a power of two, saturate at 0xFE, and let subnormal
    # values up to 2**-127 keep code 0 (which stands for 2**-127).
    round_up = (mantissa > 0) & (exponent != 0xFE) & ~((exponent == 0) & (mantissa <= 0x400000))
    codes = exponent + round_up
    codes = np.where(val == 0, 0, codes)
    codes = np.where(np.isinf(val), 0xFE, codes)
    return np.where(np.isnan(val), 0xFF, codes)


def _te_reciprocal(codes: np.ndarray) -> np.ndarray:
    """ptx.cuh exp2f_rcp: float bits (254 - code) << 23, except code 0 -> 1.0 (254 -> 0.0)."""
    bits = ((254 - codes.astype(np.int64)) << 23) & 0xFFFFFFFF
    recip = bits.astype(np.uint32).view(np.float32)
    return np.where(codes == 0, _F32(1.0), recip)


def _pow2(codes: np.ndarray) -> np.ndarray:
    """Decoded E8M0 codes, float64 (255 -> NaN)."""
    return np.where(codes == 255, np.nan, np.exp2(codes.astype(np.float64) - 127))


def _log2_f32(s: np.ndarray) -> np.ndarray:
    """log2 of float32 values rounded to float32 (torch's CPU log2 is faithful to float32)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log2(s.astype(np.float64)).astype(np.float32)


def _scales(blocks: np.ndarray, fmt: FloatFormat, rule: str, x32: np.ndarray,
            tensor_scale) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                   np.float32 | None]:
    """For one rule: (amax per block as the rule takes it, scaled float32 blocks to round,
    decode scales float64 per block, scale codes per block, tensor decode scale or None)."""
    fmax = _F32(fmt.max)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        if rule in ("floor", "ceil", "even", "rceil"):
            amax = _amax(blocks, propagate_nan=True)  # NaN and inf give a NaN scale
            e = _rceil_exact(amax, fmt) if rule == "rceil" else _e8m0_exact(amax, fmt, rule)
            recip = np.exp2(-np.nan_to_num(e)).astype(np.float32)  # exact
            recip[np.isnan(e)] = np.nan  # a NaN scale makes its whole block NaN
            scaled = blocks * recip[..., None]
            codes = np.where(np.isnan(e), 255, np.nan_to_num(e) + 127).astype(np.uint8)
            return amax, scaled, np.exp2(e), codes, None
        if rule in ("floor_torchao", "ceil_torchao", "even_torchao"):
            amax = _amax(blocks, propagate_nan=True)  # torch.amax
            codes = _e8m0_torchao(amax, fmt, rule[:-len("_torchao")])
            divisor = (codes.astype(np.int64) << 23).astype(np.uint32).view(np.float32)
            divisor = np.maximum(divisor, _F32(2.0 ** -126))  # 255 -> +inf stays
            scaled = blocks / divisor[..., None]
            return amax, scaled, _pow2(codes), codes.astype(np.uint8), None
        if rule == "rceil_te":
            amax = _amax(blocks, propagate_nan=False)  # TE's fmaxf ignores NaN
            codes = _te_codes(amax, fmt)
            scaled = blocks * _te_reciprocal(codes)[..., None]
            return amax, scaled, _pow2(codes), codes.astype(np.uint8), None
        if rule == "rceil_torchao":
            amax = _amax(blocks, propagate_nan=True)
            descale = amax / fmax  # float32 division
            log = np.ceil(_log2_f32(descale))
            normal = (np.clip(np.nan_to_num(log, neginf=-127), -127, 127) + 127).astype(np.int64)
            codes = np.where(np.isnan(descale), 255, np.where(np.isinf(descale), 254, normal))
            rcp = np.where(codes == 0, _F32(1.0),
                           np.exp2(127 - codes.astype(np.float32)).astype(np.float32))
            rcp = np.where(codes == 254, _F32(2.0 ** -127), rcp)
            rcp = np.where(codes == 255, descale, rcp).astype(np.float32)
            scaled = blocks * rcp[..., None]
            return amax, scaled, _pow2(codes), codes.astype(np.uint8), None
        if rule == "pow2_floor":
            amax = _amax(blocks, propagate_nan=False)
            bad = np.isinf(amax) | (amax == 0)
            scale = np.where(bad, _F32(1.0), fmax / np.where(bad, _F32(1.0), amax))
            scale = np.where(np.isinf(scale), _F32_MAX, scale).astype(np.float32)
            scale = (scale.view(np.uint32) & np.uint32(0xFF800000)).view(np.float32)
            scaled = blocks * scale[..., None]
            decode = 1.0 / scale.astype(np.float64)  # exact: a power of two
            codes = (np.log2(decode) + 127).astype(np.uint8)
            return amax, scaled, decode, codes, None
        if rule == "pow2_floor_torchao":
            amax = _amax(blocks, propagate_nan=True)
            scale = (fmt.max / np.maximum(amax.astype(np.float64), 1e-12)).astype(np.float32)
            scale = np.exp2(np.floor(_log2_f32(scale))).astype(np.float32)
            scaled = blocks * scale[..., None]
            decode = 1.0 / scale.astype(np.float64)
            return amax, scaled, decode, decode.astype(np.float32), None
        if rule == "fp32":
            amax = _amax(blocks, propagate_nan=True)
            s = (amax / fmax).astype(np.float32)
            s = np.where(s == 0, _F32(1.0), s).astype(np.float32)  # 0 / 0 -> 1 (see above)
            s = np.where(np.isfinite(amax), s, _F32(np.nan)).astype(np.float32)
            scaled = blocks / s[..., None]
            return amax, scaled, s.astype(np.float64), s, None
        if rule == "nvfp4":
            if tensor_scale is None:
                g = amax_of(x32)  # TE's amax kernels ignore NaN
                s_enc = np.minimum(_F32(448.0 * 6.0) / g, _F32_MAX)
                if g == 0 or s_enc == 0:
                    s_enc = _F32(1.0)
                s_dec = _F32(1.0 / np.float64(s_enc))  # `1.0 / S_enc`: a double division
            else:  # the decode scale given; the encode scale is its float32 reciprocal
                s_dec = _F32(tensor_scale)
                s_enc = _F32(1.0 / np.float64(s_dec))
            amax = _amax(blocks, propagate_nan=False)
            s_dec_b = np.minimum((amax / _F32(6.0)) * s_enc, _F32_MAX)
            x_b = round_to(s_dec_b.astype(np.float32), E4M3, overflow="saturate")  # __nv_fp8_e4m3
            inverse = np.minimum(_F32(1.0) / (x_b * s_dec), _F32_MAX)
            scaled = blocks * inverse[..., None]
            return amax, scaled, x_b.astype(np.float64), _element_codes(x_b, E4M3), s_dec
        if rule == "nvfp4_torchao":
            if tensor_scale is None:  # per_tensor_amax_to_scale(torch.max(torch.abs(x)))
                g = np.abs(x32).max() if x32.size else _F32(0)
                s = _F32(g) / _F32(448.0 * 6.0)
            else:
                s = _F32(tensor_scale)
            amax = _amax(blocks, propagate_nan=True)
            block_scale = (amax / _F32(6.0)) / s
            clamped = np.clip(block_scale, _F32(2.0 ** -6), _F32(448.0))  # NaN passes
            x_b = round_to(clamped.astype(np.float32), E4M3)
            recip = (_F32(1.0) / s) / x_b
            scaled = blocks * recip.astype(np.float32)[..., None]
            return amax, scaled, x_b.astype(np.float64), _element_codes(x_b, E4M3), s
    raise AssertionError(rule)  # pragma: no cover - rules are checked by the caller


# --- the cast -----------------------------------------------------------------------------------
def _check(fmt: FloatFormat, scale_format: str, rule: str, tensor_scale, mode, rng) -> None:
    if rule not in BLOCK_RULES:
        raise ValueError(f"unknown rule {rule!r}; valid: {', '.join(BLOCK_RULES)}")
    if scale_format not in SCALE_FORMATS:
        raise ValueError(f"unknown scale_format {scale_format!r}; valid: "
                         + ", ".join(SCALE_FORMATS))
    if scale_format not in _SCALE_FORMATS_OF[rule]:
        raise ValueError(f"rule {rule!r} gives {' or '.join(_SCALE_FORMATS_OF[rule])} scales, "
                         f"not {scale_format!r}")
    if rule in _NVFP4_RULES:
        if fmt != E2M1:
            raise ValueError(f"NVFP4 rules take e2m1 elements, not {fmt.name}")
    elif fmt not in _ELEMENTS:
        raise ValueError(f"{fmt.name} is not a block-scaled element format; valid: "
                         + ", ".join(f.name for f in _ELEMENTS))
    if tensor_scale is not None:
        if rule not in _NVFP4_RULES:
            raise ValueError(f"tensor_scale is NVFP4's second level; rule {rule!r} has none")
        number = isinstance(tensor_scale, (int, float, np.integer, np.floating)) \
            and not isinstance(tensor_scale, (bool, np.bool_))
        if not number or not (np.isfinite(tensor_scale) and tensor_scale > 0):
            raise ValueError(f"tensor_scale must be a positive finite number, got "
                             f"{tensor_scale!r}")
    if mode.value != "stochastic" and rng is not None:
        raise ValueError(f"rng is only used by mode='stochastic', not {mode.value!r}")
    if mode.value == "stochastic" and not isinstance(rng, np.random.Generator):
        raise TypeError(f"mode='stochastic' needs rng, a np.random.Generator; got {rng!r}")


def _round_elements(scaled: np.ndarray, fmt: FloatFormat, mode, rng) -> np.ndarray:
    """Round float32 values to fmt, saturating (SATFINITE); NaN stays NaN (as a float)."""
    nan = np.isnan(scaled)
    any_nan = nan.any()
    clean = np.where(nan, _F32(0), scaled) if any_nan else scaled
    if fmt.has_inf:  # lowprec.round keeps an infinite input infinite there: clamp first
        fmax = _F32(fmt.max)
        clean = np.clip(clean, -fmax, fmax)
    # Without infinities, overflow="saturate" sends every |x| > max (inf included) to +-max
    # in every mode, as clamping first would.
    out = round_to(clean, fmt, mode, overflow="saturate", rng=rng)
    return np.where(nan, _F32(np.nan), out).astype(np.float32) if any_nan else out


def _element_codes(elements: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """``fmt``'s codes (uint8) of float32 values that are already values of ``fmt``: what
    :func:`lowprec.encode` gives, read from the float32 bits instead of rounding again (4M E4M3
    values: 7 ms instead of 97 ms). A normal value's code is its float32 exponent and top m
    mantissa bits with the exponent re-biased; a zero or subnormal's is
    ``|v| / smallest_subnormal`` (exact). NaN gets encode's NaN code where the format has one,
    else 0."""
    m = fmt.mantissa_bits
    bits = np.ascontiguousarray(elements, np.float32).view(np.uint32).reshape(-1)
    magnitude = bits & np.uint32(0x7FFFFFFF)
    codes = magnitude >> np.uint32(23 - m)
    codes -= np.uint32((127 - fmt.bias) << m)  # wraps for zeros and subnormals: replaced next
    small = np.flatnonzero(magnitude < np.float32(fmt.tiny).view(np.uint32))
    codes[small] = (magnitude[small].view(np.float32) * np.float32(2.0 ** (m - fmt.emin))
                    ).astype(np.uint32)
    codes = codes.astype(np.uint8)
    codes |= (bits >> np.uint32(31)).astype(np.uint8) << np.uint8(fmt.bits - 1)
    nan = np.flatnonzero(magnitude > np.uint32(0x7F800000))
    if nan.size:
        codes[nan] = encode(bits[nan].view(np.float32), fmt) if fmt.has_nan else 0
    return codes.reshape(np.shape(elements))


def _global_amax(block_amax: np.ndarray, x32: np.ndarray) -> np.float32:
    """:func:`amax_of` (max |x| ignoring NaN) read from the blocks' amax when none is NaN:
    the blocks cover x, and their zero padding does not change a maximum of magnitudes."""
    if block_amax.size == 0 or x32.size == 0:
        return amax_of(x32)
    top = block_amax.max()
    return amax_of(x32) if np.isnan(top) else _F32(top)


def block_cast(x: ArrayLike, fmt: FormatLike, mode: ModeLike = "nearest", *,
               block: int | tuple[int, int] | str, scale_format: str, rule: str, axis: int = -1,
               tensor_scale: float | None = None,
               rng: np.random.Generator | None = None) -> tuple[ScaledTensor, BlockRecord]:
    """Block-scale ``x``: ``(ScaledTensor, BlockRecord)``. See the module docstring for
    ``block``, ``scale_format``, ``rule``, ``tensor_scale``; ``axis`` is the axis int blocks
    run along (other blocks fix their axes and take the default); ``mode`` rounds the elements
    (saturating): "nearest" (ties to even), "stochastic" (with ``rng``) or any other mode of
    :func:`lowprec.round`."""
    fmt = as_format(fmt)
    mode = as_mode(mode)
    _check(fmt, scale_format, rule, tensor_scale, mode, rng)
    x32 = as_float32_array(x)
    layout = _layout(x32.shape, block, axis)
    blocks = layout.to_blocks(x32)  # (..., n_blocks, block_elems)
    block_amax, scaled, decode, codes, t_scale = _scales(blocks, fmt, rule, x32, tensor_scale)
    elements = _round_elements(scaled, fmt, mode, rng)
    block_scales = layout.grid(decode.astype(np.float32))  # exact: the scales are float32s
    st = ScaledTensor(layout.from_blocks(elements), fmt, block_scales=block_scales,
                      block_size=layout.tile if layout.tile is not None else layout.size,
                      axis=layout.axis, tensor_scale=t_scale, scale_format=scale_format)
    values = st.dequantize()
    clipped, flushed = cast_statistics(x32, layout.from_blocks(scaled), values, fmt)
    record = BlockRecord(fmt.name, float(_global_amax(block_amax, x32)), None, None, clipped,
                         flushed,
                         block_scales=block_scales, tensor=st,
                         scale_codes=layout.grid(codes if scale_format != "fp32"
                                                 else decode.astype(np.float32)),
                         tensor_scale=None if t_scale is None else float(t_scale),
                         scale_format=scale_format, rule=rule)
    return st, record


def block_quantize(x: ArrayLike, fmt: FormatLike, mode: ModeLike = "nearest", *,
                   block: int | tuple[int, int] | str, scale_format: str, rule: str,
                   axis: int = -1, tensor_scale: float | None = None,
                   rng: np.random.Generator | None = None) -> tuple[np.ndarray, BlockRecord]:
    """:func:`block_cast`, read back: ``(values, BlockRecord)`` with ``values`` the float32
    ``element * block_scale * tensor_scale`` (exact, rounded once), the shape of ``x``."""
    tensor, record = block_cast(x, fmt, block=block, scale_format=scale_format, rule=rule,
                                axis=axis, tensor_scale=tensor_scale, mode=mode, rng=rng)
    return tensor.dequantize(), record
