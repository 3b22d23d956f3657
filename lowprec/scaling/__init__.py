"""Loss scaling and FP8 scaling recipes, matching PyTorch, Apex, DeepSpeed and Transformer Engine.

* :mod:`.loss`: the loss-scaler interface, a static scaler, ``unscale_and_check`` and the per-step
  :class:`StepRecord` that can name the layer and cast point that overflowed.
* :mod:`.dynamic`: PyTorch ``GradScaler``, Apex and DeepSpeed (hysteresis) rules,
  ``make_loss_scaler``.
* :mod:`.fp8`: per-tensor FP8 recipes (TE delayed scaling with an amax history, current scaling).
* :mod:`.mx`: MX block scaling (E8M0 scale per 32 values), OCP MX v1.0 rule and TE's rule.
* :mod:`.block`: the block quantizer (``block_cast``, ``block_quantize``): MX, NVFP4, 1x128 /
  128x128 and rowwise blocks under every scale rule in use (OCP, TE, torchao, DeepSeek-V3).
* :mod:`.recipes`: block-scaled training recipes (NVFP4, MXFP8, MXFP4, DeepSeek-V3 blockwise,
  torchao rowwise) for the MLP's GEMMs.
* :mod:`.hadamard`: the random Hadamard transform NVFP4 and MXFP4 training apply to GEMM inputs.
* :mod:`.tensor`: :class:`ScaledTensor`, what a scaled cast returns: elements and decode scales.
"""
from .loss import (NON_FINITE_KINDS, LossScaler, NonFiniteSource, StaticLossScaler, StepRecord,
                   unscale_and_check)
from .dynamic import (APEX, PYTORCH, DeepSpeedConfig, DynamicLossScaler, DynamicScalingConfig,
                      HysteresisLossScaler, LossScaleAtMinimumError, make_loss_scaler)
from .fp8 import (FP8_FORMATS, ROLES, CastRecord, CurrentScaling, CurrentScalingState,
                  DelayedScaling, DelayedScalingState, format_for, quantize, satfinite_cast,
                  scaled_cast)
from .block import BLOCK_RULES, BlockRecord, block_cast, block_quantize
from .mx import (MX_ELEMENTS, MX_RULES, MXBlockScaling, MXState, mx_cast, mx_quantize,
                 mx_scale_exponents)
from .tensor import ScaledTensor, held_values
from .recipes import (BLOCK_RECIPES, FP8_BLOCKWISE, FP8_ROWWISE, MXFP4, MXFP8, NVFP4, BlockScaling,
                      BlockScalingState)
from .hadamard import TE_WGRAD_SIGNS, hadamard_matrix, inverse_rht, random_signs, rht

__all__ = [
    "APEX", "PYTORCH", "DeepSpeedConfig", "DynamicLossScaler", "DynamicScalingConfig",
    "HysteresisLossScaler", "LossScaleAtMinimumError", "LossScaler", "NonFiniteSource",
    "NON_FINITE_KINDS", "StaticLossScaler", "StepRecord", "make_loss_scaler", "unscale_and_check",
    "FP8_FORMATS", "ROLES", "CastRecord", "CurrentScaling", "CurrentScalingState",
    "DelayedScaling", "DelayedScalingState", "format_for", "quantize", "satfinite_cast",
    "scaled_cast", "ScaledTensor", "held_values", "mx_cast",
    "BLOCK_RULES", "BlockRecord", "block_cast", "block_quantize",
    "MX_ELEMENTS", "MX_RULES", "MXBlockScaling", "MXState", "mx_quantize", "mx_scale_exponents",
    "BLOCK_RECIPES", "FP8_BLOCKWISE", "FP8_ROWWISE", "MXFP4", "MXFP8", "NVFP4", "BlockScaling",
    "BlockScalingState", "TE_WGRAD_SIGNS", "hadamard_matrix", "inverse_rht", "random_signs", "rht",
]
