"""Block-scaled training recipes: which blocks, scale rule and rounding each GEMM operand gets.

A recipe says, for the three GEMMs of a Linear layer (fprop ``x @ W``, dgrad ``g @ W.T``, wgrad
``x.T @ g``), how each operand is quantized by :func:`lowprec.scaling.block.block_cast`:

* the element format (``fp8_format``, per role: "forward" for activations and weights,
  "backward" for gradients; "hybrid" is E4M3 forward, E5M2 backward);
* the block of the activations and gradients (``activation_block``: an int, 1-D blocks along the
  GEMM's reduction axis, or "row": one block over the whole reduction axis) and of the weights
  (``weight_block``: the same, or a 2-D tile ``(bm, bn)``, which serves both GEMMs of the
  weight, so that the transpose holds the same quantized values);
* the scale rule and the format the block scales are stored in (``rule``, ``scale_format``:
  see :func:`lowprec.scaling.block.block_cast`);
* stochastic rounding of the gradients (``stochastic_gradients``), from a
  ``np.random.Generator`` passed to the cast;
* the random Hadamard transform (:func:`lowprec.scaling.hadamard.rht`) of both operands of
  the GEMMs named in ``rht_gemms``, along their reduction axis, before they are quantized (the
  transform is orthogonal, so the GEMM needs no inverse);
* the layers kept out of the recipe (``high_precision_layers``: rounded to BF16, unscaled).

:class:`BlockScaling` holds these; ``recipe.new_state(role, point=...)`` gives the per-tensor
handle whose ``cast(x, axis=, gemm=, rng=)`` returns ``(ScaledTensor, record)``.
:data:`BLOCK_RECIPES` holds the published recipes, each cited at its definition.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from numpy.typing import ArrayLike

from ..formats import BF16, FloatFormat
from .block import block_cast
from .fp8 import ROLES, RecipeState, format_for
from .tensor import ScaledTensor

__all__ = ["BLOCK_RECIPES", "GEMMS", "BlockScaling", "BlockScalingState", "NVFP4", "MXFP8",
           "MXFP4", "FP8_BLOCKWISE", "FP8_ROWWISE"]

GEMMS = ("fprop", "dgrad", "wgrad")  # Transformer Engine's names for a Linear layer's GEMMs


def _check_block(name: str, block, tile_ok: bool) -> None:
    ok_int = isinstance(block, (int, np.integer)) and not isinstance(block, bool) and block >= 1
    ok_tile = (tile_ok and isinstance(block, tuple) and len(block) == 2
               and all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) and b >= 1
                       for b in block))
    if not (ok_int or ok_tile or block == "row"):
        what = "an int >= 1, a (bm, bn) tile or 'row'" if tile_ok else "an int >= 1 or 'row'"
        raise ValueError(f"{name} must be {what}, got {block!r}")


@dataclass(frozen=True)
class BlockScaling:
    """A block-scaled recipe (module docstring); the defaults are NVIDIA's NVFP4 recipe."""

    fp8_format: str = "e2m1"  # element format: a format name, or "hybrid" (E4M3 / E5M2)
    activation_block: int | str = 16  # inputs and gradients: 1-D blocks along K, or "row"
    weight_block: int | tuple | str = (16, 16)  # weights: 1-D blocks, a 2-D tile, or "row"
    rule: str = "nvfp4"  # scale rule (lowprec.scaling.block.block_cast)
    scale_format: str = "e4m3"  # "e8m0", "e4m3" or "fp32"
    stochastic_gradients: bool = True  # round gradients ("backward" role) stochastically
    rht_gemms: tuple = ("wgrad",)  # GEMMs whose operands get the random Hadamard transform
    rht_signs: str | int = "te"  # "te": Transformer Engine's fixed signs; an int: a seed
    rht_size: int = 16  # d of the transform (a power of two)
    high_precision_layers: tuple = (0, -1)  # layers in BF16 (negative: from the last)

    block_scaled = True  # one scale per block along the GEMM's reduction axis
    per_operand = True  # new_state takes the cast point (weights and activations differ)

    def __post_init__(self):
        for role in ROLES:
            format_for(self.fp8_format, role)  # a known format, or "hybrid"
        _check_block("activation_block", self.activation_block, tile_ok=False)
        _check_block("weight_block", self.weight_block, tile_ok=True)
        if isinstance(self.weight_block, tuple):
            object.__setattr__(self, "weight_block", tuple(int(b) for b in self.weight_block))
        if self.scale_format not in ("e8m0", "e4m3", "fp32"):
            raise ValueError(f"unknown scale_format {self.scale_format!r}; valid: 'e8m0', "
                             "'e4m3', 'fp32'")
        if not isinstance(self.rule, str):
            raise TypeError(f"rule must be a rule name, got {self.rule!r}")
        if not isinstance(self.stochastic_gradients, bool):
            raise TypeError(f"stochastic_gradients must be True or False, got "
                            f"{self.stochastic_gradients!r}")
        gemms = tuple(self.rht_gemms)
        if any(g not in GEMMS for g in gemms):
            raise ValueError(f"rht_gemms {self.rht_gemms!r}: valid GEMMs are {', '.join(GEMMS)}")
        object.__setattr__(self, "rht_gemms", gemms)
        size = self.rht_size
        if not (isinstance(size, (int, np.integer)) and size >= 1 and size & (size - 1) == 0):
            raise ValueError(f"rht_size must be a power of two, got {size!r}")
        if not (self.rht_signs == "te" or (isinstance(self.rht_signs, (int, np.integer))
                                           and not isinstance(self.rht_signs, bool))):
            raise ValueError(f"rht_signs must be 'te' or an int seed, got {self.rht_signs!r}")
        if self.rht_signs == "te" and size != 16:
            raise ValueError("Transformer Engine's signs are 16; pass an int seed for "
                             f"rht_size={size}")
        layers = tuple(self.high_precision_layers)
        if not all(isinstance(l, (int, np.integer)) and not isinstance(l, bool) for l in layers):
            raise TypeError(f"high_precision_layers must be ints, got "
                            f"{self.high_precision_layers!r}")
        object.__setattr__(self, "high_precision_layers", tuple(int(l) for l in layers))

    @property
    def high_precision(self) -> FloatFormat:
        """The format of the layers kept out of the recipe."""
        return BF16

    def block_for(self, point: str | None) -> int | tuple | str:
        """The block of the tensor at a cast point: ``weight_block`` for "weight", else
        ``activation_block``."""
        return self.weight_block if point == "weight" else self.activation_block

    def k_blocks(self) -> tuple:
        """The K-block lengths of this recipe's GEMM operands ("row": all of K, left out)."""
        out = []
        for block in (self.activation_block, self.weight_block):
            if isinstance(block, tuple):
                out.extend(block)
            elif block != "row":
                out.append(block)
        return tuple(sorted(set(out)))

    def signs(self) -> np.ndarray:
        """The sign vector of the random Hadamard transform, shared by every layer."""
        from .hadamard import TE_WGRAD_SIGNS, random_signs
        if self.rht_signs == "te":
            return np.array(TE_WGRAD_SIGNS)
        return random_signs(self.rht_size, int(self.rht_signs))

    def new_state(self, role: str = "forward", *, point: str | None = None) -> BlockScalingState:
        """The handle of one tensor: its role ("forward" or "backward") and cast point (the
        weights take ``weight_block``)."""
        return BlockScalingState(self, role, point)


class BlockScalingState(RecipeState):
    """Per-tensor handle for :class:`BlockScaling` (it keeps no history)."""

    recipe_type = BlockScaling

    def __init__(self, recipe: BlockScaling, role: str = "forward", point: str | None = None):
        super().__init__(recipe, role)
        self.point = point
        self.block = recipe.block_for(point)
        self.stochastic = role == "backward" and recipe.stochastic_gradients
        self._signs = None

    def cast(self, x: ArrayLike, *, axis: int | None = None, gemm: str | None = None,
             rng: np.random.Generator | None = None) -> tuple[ScaledTensor, object]:
        """(ScaledTensor, BlockRecord): ``x`` quantized for ``gemm`` (one of GEMMS, or None),
        whose reduction axis is ``axis`` (default -1). Gradients under stochastic rounding draw
        from ``rng`` (required then); operands of the recipe's ``rht_gemms`` are transformed
        first, along ``axis``."""
        r = self.recipe
        axis = -1 if axis is None else axis
        if gemm is not None and gemm not in GEMMS:
            raise ValueError(f"unknown GEMM {gemm!r}; valid: None, {', '.join(GEMMS)}")
        if self.stochastic and rng is None:
            raise ValueError("this recipe rounds gradients stochastically: pass rng= (a "
                             "numpy.random.Generator)")
        x = np.asarray(x)
        if gemm in r.rht_gemms:
            from .hadamard import rht
            if self._signs is None:
                self._signs = r.signs()
            # the transform in FP32, every product and sum rounded (lowprec.scaling.hadamard)
            x = rht(x, self._signs, axis=axis, dtype="fp32").astype(x.dtype, copy=False)
        block = self.block
        if block == "row":  # one block over the whole reduction axis
            block = int(np.shape(x)[axis])
        return block_cast(x, self.fmt, block=block, scale_format=r.scale_format, rule=r.rule,
                          axis=-1 if isinstance(block, tuple) else axis,  # tiles: last two axes
                          mode="stochastic" if self.stochastic else "nearest",
                          rng=rng if self.stochastic else None)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"block scaling keeps no state, got keys {sorted(state)}")


# --- the published recipes ------------------------------------------------------------------------
# NVIDIA, "Pretraining Large Language Models with NVFP4" (arXiv 2509.25149, sec. 4): E2M1
# elements; 1x16 blocks for activations and gradients, 16x16 for weights; E4M3 block scales with
# an FP32 per-tensor scale (the two-level rule); stochastic rounding on gradients; a 16-point
# random Hadamard transform on the weight-gradient GEMM's inputs; the first and last layers in
# BF16 (the paper keeps a few layers in BF16; Transformer Engine's NVFP4BlockScaling recipe,
# transformer_engine/common/recipe/__init__.py, has the same switches).
NVFP4 = BlockScaling()

# Transformer Engine MXFP8BlockScaling (transformer_engine/common/recipe/__init__.py; docs
# features/low_precision_training/mxfp8): E4M3 everywhere by default, E8M0 scales rounded up,
# 2**ceil(log2(amax / 448)), with TE's kernel bits (rceil_te: common/util/ptx.cuh
# float_to_e8m0), 1x32 blocks along the reduction axis, rowwise and columnwise copies both from
# the high-precision source.
MXFP8 = BlockScaling(fp8_format="e4m3", activation_block=32, weight_block=32, rule="rceil_te",
                     scale_format="e8m0", stochastic_gradients=False, rht_gemms=(),
                     high_precision_layers=())

# Tseng, Yu & Park, "Training LLMs with MXFP4" (arXiv 2502.20586): E2M1 with E8M0 scales per
# 32 (OCP MX v1.0 floor rule), stochastic rounding and the random Hadamard transform in the
# backward pass. Here the transform is applied to the wgrad GEMM, whose reduction axis is the
# batch (the dgrad GEMM's is a layer width, which need not be a multiple of 32), with d = 32
# signs from a fixed seed; the forward GEMMs use MXFP4 rounded to nearest.
MXFP4 = BlockScaling(fp8_format="e2m1", activation_block=32, weight_block=32, rule="floor",
                     scale_format="e8m0", stochastic_gradients=True, rht_gemms=("wgrad",),
                     rht_signs=0, rht_size=32, high_precision_layers=())

# DeepSeek-V3 technical report (arXiv 2412.19437, sec. 3.3.2 "fine-grained quantization"): E4M3
# for every GEMM input, online scales amax / 448 in FP32 per 1x128 activation tile and per
# 128x128 weight block; on Hopper the per-block partials are promoted to FP32 (see
# lowprec.accumulate).
FP8_BLOCKWISE = BlockScaling(fp8_format="e4m3", activation_block=128, weight_block=(128, 128),
                             rule="fp32", scale_format="fp32", stochastic_gradients=False,
                             rht_gemms=(), high_precision_layers=())

# torchao float8 rowwise (torchao/float8/config.py, Float8LinearRecipeName.ROWWISE): every GEMM
# operand E4M3 with one scale per row along the reduction axis, 448 / amax rounded down to a
# power of two (round_scales_to_power_of_2=True), saturating casts.
FP8_ROWWISE = BlockScaling(fp8_format="e4m3", activation_block="row", weight_block="row",
                           rule="pow2_floor", scale_format="fp32", stochastic_gradients=False,
                           rht_gemms=(), high_precision_layers=())

# The recipes by name (read-only).
BLOCK_RECIPES = MappingProxyType({"nvfp4": NVFP4, "mxfp8": MXFP8, "mxfp4": MXFP4,
                                  "fp8_blockwise": FP8_BLOCKWISE, "fp8_rowwise": FP8_ROWWISE})

