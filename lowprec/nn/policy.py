"""The precision policy: which format and rounding mode each cast point of a training step uses.

A *cast point* is a place where mixed-precision training holds a tensor in a narrower format.
Their names follow the frameworks' docs: Micikevicius et al. 2018 (arXiv:1710.03740) speak of
weights, activations, activation gradients, weight gradients and master weights; Transformer
Engine names the tensors around one GEMM ``input``, ``weight``, ``output``, ``grad_output``
and ``grad_input``. In the order a training step meets them, per Linear layer:

====================  =========================================================================
forward
``weight``            the weights (and bias) as used in compute: the low-precision copy
``input``             the layer input, cast before the matmul (fprop GEMM input)
``output``            z = x @ W + b after accumulation (fprop GEMM output)
``activation``        a = f(z), the activation function's output (not in the last layer)
backward
``activation_grad``   dL/da, the gradient of the layer's activation: the dgrad GEMM output of
                      the layer above (TE's ``grad_input`` of that layer); for the last layer
                      dL/dlogits from the loss
``grad_output``       dL/dz = f'(z) dL/da, as the input of the layer's backward GEMMs
``weight_grad``       dL/dW, the wgrad GEMM output
``bias_grad``         dL/db, the sum of ``grad_output`` over the batch
update
``optimizer_state``   momentum / Adam moments
``master_weights``    the higher-precision copy the optimizer updates
====================  =========================================================================

``None`` at a cast point means "no rounding": the values stay in the working dtype (float32,
or float64 in the gradient checks).

Two run-wide settings sit beside the cast points:

* ``loss_scale`` -- the loss scaler (:func:`lowprec.scaling.make_loss_scaler`): ``None`` (no
  scaling, nothing skipped), a static scale, ``"dynamic"`` (torch.amp.GradScaler),
  ``"deepspeed"`` (hysteresis) or ``"apex"``, or a scaler config;
* ``fp8_recipe`` -- how the FP8 cast points are scaled: ``None`` (cast unscaled),
  ``"delayed"`` (Transformer Engine's DelayedScaling), ``"current"`` (Float8CurrentScaling),
  ``"mx"`` (MX blocks of 32 with E8M0 scales), a block-scaled recipe's name (``"nvfp4"``,
  ``"mxfp8"``, ``"mxfp4"``, ``"fp8_blockwise"``, ``"fp8_rowwise"``: see
  :mod:`lowprec.scaling.recipes`) or a recipe object from :mod:`lowprec.scaling`.
  The recipe applies at every forward/backward cast point whose format is 8 bits or narrower
  ("FP8 points"); each (layer, point) keeps its own scaling state, as TE keeps one per tensor.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from .._deprecation import no_attribute, renamed
from ..accumulate import BLAS, as_accumulator
from ..formats import BF16, E4M3, E5M2, FP16, FP32, FloatFormat, as_format
from ..rounding import OVERFLOW_POLICIES, as_mode
from ..scaling import CurrentScaling, DelayedScaling, MXBlockScaling, format_for
from ..scaling.recipes import BLOCK_RECIPES, BlockScaling
from .. import tensorcore
from ..tensorcore import TensorCoreModel

Recipe = DelayedScaling | CurrentScaling | MXBlockScaling | BlockScaling  # a scaling recipe

FORWARD_POINTS = ("weight", "input", "output", "activation")
BACKWARD_POINTS = ("activation_grad", "grad_output", "weight_grad", "bias_grad")
UPDATE_POINTS = ("optimizer_state", "master_weights")
CAST_POINTS = FORWARD_POINTS + BACKWARD_POINTS + UPDATE_POINTS  # execution order in one step

UPDATE_RULES = ("nearest", "stochastic", "kahan")
FP8_MAX_BITS = 8  # a cast point whose format is this narrow is an "FP8 point": the recipe scales it


@dataclass(frozen=True)
class Cast:
    """How one cast point rounds: a format and a rounding mode, plus the rarer switches."""

    format: FloatFormat  # the format values are rounded to (a FloatFormat or a name like "fp16")
    mode: str = "nearest"  # a lowprec.RoundingMode value ("nearest", "stochastic", ...)
    overflow: str | None = None  # None: the format's default (FP16: inf, E4M3: NaN); or "saturate"
    subnormals: bool = True  # False flushes results below format.tiny to zero (FTZ hardware)

    def __post_init__(self):
        object.__setattr__(self, "format", as_format(self.format))
        object.__setattr__(self, "mode", as_mode(self.mode).value)
        if self.overflow is not None and self.overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"unknown overflow policy {self.overflow!r}; valid: None, "
                             f"{', '.join(map(repr, OVERFLOW_POLICIES))}")
        if not isinstance(self.subnormals, bool):
            raise TypeError(f"subnormals must be True or False, got {self.subnormals!r}")

    def __str__(self) -> str:
        extras = [self.mode] if self.mode != "nearest" else []
        extras += [f"overflow={self.overflow}"] if self.overflow else []
        extras += ["no subnormals"] if not self.subnormals else []
        return self.format.name + (f" ({', '.join(extras)})" if extras else "")

    def contains(self, other: Cast) -> bool:
        """True when every value ``other`` can produce is a value of this cast, unchanged by it.

        Then rounding an already ``other``-rounded tensor here is the identity and can be skipped
        (rounding a representable value is exact in every mode).
        """
        f, g = self.format, other.format
        return (f == g or (f.mantissa_bits >= g.mantissa_bits and f.emax >= g.emax
                           and f.emin <= g.emin and f.signed >= g.signed
                           and (f.has_inf or not g.has_inf) and (f.has_nan or not g.has_nan))
                ) and self.subnormals and (self.overflow is None or f == g)


def as_cast(spec: Cast | FloatFormat | str | tuple | dict | None) -> Cast | None:
    """A Cast from ``None``, a Cast, a format (or its name), ``(format, mode)`` or a dict of
    fields."""
    if spec is None or isinstance(spec, Cast):
        return spec
    if isinstance(spec, (str, FloatFormat)):
        return Cast(spec)
    if isinstance(spec, tuple) and len(spec) == 2:
        return Cast(*spec)
    if isinstance(spec, dict):
        return Cast(**spec)
    raise TypeError("a cast point takes None, a Cast, a format, (format, mode) or a dict, "
                    f"got {spec!r}")


@dataclass(frozen=True)
class PrecisionPolicy:
    """Which format and rounding mode every cast point uses; ``None`` everywhere = no rounding.

    Make variants with ``policy.replace(update="stochastic")``.
    """

    name: str = "custom"  # label used in histories, plots and checkpoints
    weight: Cast | None = None  # weights and biases as used in compute (AMP: cast each forward)
    input: Cast | None = None  # layer input before the matmul (AMP casts the FP32 data to FP16)
    output: Cast | None = None  # matmul + bias result (FP16 under FP16 autocast)
    activation: Cast | None = None  # activation function output
    activation_grad: Cast | None = None  # dL/da: dgrad output of the layer above (or dL/dlogits)
    grad_output: Cast | None = None  # dL/dz as backward-GEMM input (FP8 E5M2 in TE's HYBRID)
    weight_grad: Cast | None = None  # dL/dW from the wgrad GEMM
    bias_grad: Cast | None = None  # dL/db, batch sum of grad_output
    optimizer_state: Cast | None = None  # momentum / Adam moment buffers
    # the copy the optimizer updates; None = pure: it updates `weight`
    master_weights: Cast | None = None
    accumulate: object = BLAS  # matmul accumulator: "blas", a format, a tensor-core preset name...
    # pure low precision only: round w - u by "nearest", "stochastic" or "kahan"
    update: str = "nearest"
    # lowprec.scaling.make_loss_scaler spec: a float, "dynamic", "deepspeed"...
    loss_scale: object = None
    fp8_recipe: object = None  # None, "delayed", "current", "mx" or a lowprec.scaling recipe object

    def __post_init__(self):
        for point in CAST_POINTS:
            object.__setattr__(self, point, as_cast(getattr(self, point)))
        if self.update not in UPDATE_RULES:
            raise ValueError(f"unknown update rule {self.update!r}; "
                             f"valid: {', '.join(UPDATE_RULES)}")
        if self.update != "nearest" and self.master_weights is not None:
            raise ValueError(f"update={self.update!r} rounds pure low-precision weights; this "
                             "policy keeps master weights (set master_weights=None to use it)")
        if self.update != "nearest" and self.weight is None:
            raise ValueError(f"update={self.update!r} needs a low-precision `weight` cast point")
        object.__setattr__(self, "accumulate", as_accumulator(self.accumulate))
        spec = self.loss_scale  # names and configs are checked by make_loss_scaler when used
        if isinstance(spec, (np.integer, np.floating)):  # a NumPy number: the same value, plain
            spec = spec.item()
            object.__setattr__(self, "loss_scale", spec)
        if isinstance(spec, bool) or (isinstance(spec, (int, float)) and not spec > 0):
            raise ValueError(f"loss_scale must be None, a positive number, a scaler name such as "
                             f"'dynamic' or 'deepspeed', or a scaler config; got {spec!r}")
        object.__setattr__(self, "fp8_recipe", as_recipe(self.fp8_recipe))
        if self.fp8_recipe is not None:
            self._check_recipe_points()

    @property
    def fp8_points(self) -> tuple:
        """The forward/backward cast points whose format is 8 bits or narrower, in step order."""
        return tuple(p for p in FORWARD_POINTS + BACKWARD_POINTS
                     if getattr(self, p) is not None
                     and getattr(self, p).format.bits <= FP8_MAX_BITS)

    @property
    def bias_cast(self) -> Cast | None:
        """How the bias is rounded at the ``weight`` point: like the weights, unless those are
        FP8. FP8 holds GEMM operands only: Transformer Engine adds the bias in the GEMM epilogue
        in the output's precision, so under an FP8 ``weight`` cast the bias takes the ``output``
        cast (unscaled)."""
        if self.weight is not None and self.weight.format.bits <= FP8_MAX_BITS:
            return self.output
        return self.weight

    # --- which cast applies to the weights the optimizer updates (train.py asks these) --------
    @property
    def keeps_master_weights(self) -> bool:
        """True when the optimizer updates a master copy (rounded at ``master_weights``), False
        for pure low-precision training, where it updates the ``weight``-format weights."""
        return self.master_weights is not None

    @property
    def stored_point(self) -> str:
        """The cast point of the weights the optimizer updates: "master_weights" or "weight"."""
        return "master_weights" if self.keeps_master_weights else "weight"

    @property
    def stored_cast(self) -> Cast | None:
        """How the initial weights are rounded into the stored copy (the ``stored_point``'s
        Cast)."""
        return self.cast(self.stored_point)

    @property
    def weight_already(self) -> Cast | None:
        """The Cast whose values the stored weights already hold when they are cast at
        ``weight`` for compute: pure weights hold ``weight`` (so that cast changes nothing and
        is skipped); a master copy is None (it is rounded every step)."""
        return None if self.keeps_master_weights else self.weight

    @property
    def pure_update_cast(self) -> Cast | None:
        """How an optimizer step is written into pure low-precision weights: the ``weight``
        format, rounded to nearest or stochastically as ``update`` says (Kahan summation rounds
        to nearest). None with master weights (the ``master_weights`` cast writes those) or
        without a ``weight`` cast (nothing to round)."""
        if self.keeps_master_weights or self.weight is None:
            return None
        mode = "stochastic" if self.update == "stochastic" else "nearest"
        return Cast(self.weight.format, mode, self.weight.overflow, self.weight.subnormals)

    @property
    def uses_kahan(self) -> bool:
        """True when pure low-precision weights carry a Kahan compensation buffer."""
        return self.update == "kahan"

    def _check_recipe_points(self) -> None:
        recipe = self.fp8_recipe
        acc = self.accumulate
        if recipe.block_scaled:
            _check_block_gemm(recipe, acc)
        points = self.fp8_points
        if not points:
            raise ValueError(f"fp8_recipe {recipe!r} needs at least one FP8 cast point (a "
                             f"format of {FP8_MAX_BITS} bits or fewer at a forward or backward "
                             "point)")
        for point in points:
            c = getattr(self, point)
            role = "forward" if point in FORWARD_POINTS else "backward"
            expected = format_for(recipe.fp8_format, role)
            if c.format != expected:
                raise ValueError(
                    f"cast point {point!r} is {c.format.name}, but the recipe's fp8_format "
                    f"{recipe.fp8_format!r} casts {role} tensors to {expected.name}; make them "
                    f"agree (e.g. fp8_format='hybrid': E4M3 forward, E5M2 backward)")
            if c.mode != "nearest" or not c.subnormals or c.overflow not in (None, "saturate"):
                raise ValueError(f"cast point {point!r} is {c}; a scaling recipe casts to nearest "
                                 "with subnormals and saturates (CUDA's __NV_SATFINITE), so use "
                                 f"Cast({c.format.name!r}, overflow='saturate')")

    def cast(self, point: str) -> Cast | None:
        """The Cast at ``point`` (one of CAST_POINTS)."""
        if point not in CAST_POINTS:
            raise ValueError(f"unknown cast point {point!r}; valid: {', '.join(CAST_POINTS)}")
        return getattr(self, point)

    def replace(self, **changes: object) -> PrecisionPolicy:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """One line per cast point, for printing and notebooks."""
        lines = [f"policy {self.name!r}"]
        for point in CAST_POINTS:
            lines.append(f"  {point:<16} {self.cast(point) or 'not rounded'}")
        acc = self.accumulate
        lines.append(f"  {'accumulate':<16} {'FP32, BLAS order' if acc is BLAS else acc.name}")
        if self.master_weights is None and self.weight is not None:
            lines.append(f"  {'update':<16} {self.update} (into the `weight` format)")
        lines.append(f"  {'loss_scale':<16} {self.loss_scale}")
        if self.fp8_recipe is not None:
            lines.append(f"  {'fp8_recipe':<16} {self.fp8_recipe} at {', '.join(self.fp8_points)}")
        return "\n".join(lines)

    def fingerprint(self) -> dict:
        """Plain values that identify the policy (stored in checkpoints and histories)."""
        scale = self.loss_scale
        plain = scale is None or isinstance(scale, (str, int, float))
        out = {"name": self.name, "update": self.update,
               "loss_scale": scale if plain else repr(scale)}
        for point in CAST_POINTS:
            c = self.cast(point)
            out[point] = None if c is None else [c.format.name, c.mode, c.overflow, c.subnormals]
        out["accumulate"] = self.accumulate.name
        recipe = self.fp8_recipe
        out["fp8_recipe"] = None if recipe is None else {"type": type(recipe).__name__,
                                                         **dataclasses.asdict(recipe)}
        return out


def _check_block_gemm(recipe, acc) -> None:
    """Refuse a block-scaled recipe whose K-blocks the accumulator cannot take: a tensor-core
    model without block-scaled MMA computes each K-block's partial in whole block FMAs (see
    lowprec.accumulate), one with it applies one scale per ``scale_block`` of K."""
    k_blocks = recipe.k_blocks() if hasattr(recipe, "k_blocks") else (recipe.block_size,)
    kept = getattr(recipe, "high_precision_layers", ())
    if kept and isinstance(acc, TensorCoreModel):
        raise ValueError(f"fp8_recipe {recipe!r} keeps layers {kept} in BF16, whose GEMMs the "
                         f"tensor-core model {acc.name} cannot take (it reads its own formats "
                         f"only); use accumulate={BLAS.name!r} or a format such as 'fp32', or "
                         "high_precision_layers=()")
    if getattr(acc, "block_scaled_mma", False):
        step, what = int(acc.scale_block), "block-scaled MMA applies one scale per"
    elif isinstance(acc, TensorCoreModel):
        step, what = acc.block, "has no block-scaled MMA; its block-scaled GEMM runs block FMAs of"
    else:
        return
    bad = [kb for kb in k_blocks if kb % step]
    if bad:
        raise ValueError(f"fp8_recipe {recipe!r} with accumulate={acc.name!r}: {acc.name} {what} "
                         f"{step} products, and the recipe's K-blocks of {bad[0]} are not a "
                         f"multiple; use accumulate={BLAS.name!r} or a format such as 'fp32'")


def _recipes() -> dict:
    """The recipe names ``fp8_recipe`` accepts. "mx" uses the HYBRID formats (E5M2 gradients) so
    it fits the FP8 hybrid policy; TE's MXFP8BlockScaling default is E4M3 everywhere. The
    block-scaled recipes of lowprec.scaling.recipes go by their names."""
    return {"delayed": DelayedScaling(), "current": CurrentScaling(),
            "mx": MXBlockScaling(fp8_format="hybrid"), **BLOCK_RECIPES}


def as_recipe(spec: Recipe | str | None) -> Recipe | None:
    """None, a recipe object (DelayedScaling, CurrentScaling, MXBlockScaling, BlockScaling) or
    its name."""
    if spec is None:
        return None
    if isinstance(spec, (DelayedScaling, CurrentScaling, MXBlockScaling, BlockScaling)):
        return spec
    if isinstance(spec, str):
        recipes = _recipes()
        if spec in recipes:
            return recipes[spec]
        raise ValueError(f"unknown fp8_recipe {spec!r}; valid: None, "
                         f"{', '.join(map(repr, recipes))} "
                         "or a DelayedScaling / CurrentScaling / MXBlockScaling / BlockScaling "
                         "object")
    raise TypeError("fp8_recipe takes None, a recipe name or a recipe object from "
                    f"lowprec.scaling, got {spec!r}")


def _uniform(name, fmt, **fields) -> PrecisionPolicy:
    """A policy that rounds every compute cast point to ``fmt``, then applies ``fields``."""
    compute = {p: fmt for p in FORWARD_POINTS + BACKWARD_POINTS}
    return PrecisionPolicy(name=name, **{**compute, **fields})


def _amp(name, fmt, **fields) -> PrecisionPolicy:
    """Autocast-style mixed precision: ``fmt`` compute, FP32 master weights and optimizer state."""
    return _uniform(name, fmt, optimizer_state=FP32, master_weights=FP32, **fields)


def _fp8_hybrid(name, recipe) -> PrecisionPolicy:
    """Transformer Engine's Format.HYBRID: E4M3 GEMM inputs forward, E5M2 gradients backward;
    GEMM outputs in BF16, weight gradients and master weights in FP32. TE's FP8 casts saturate
    (__NV_SATFINITE; see lowprec/scaling/fp8.py)."""
    def fp8(fmt):
        return Cast(fmt, overflow="saturate")
    return PrecisionPolicy(
        name=name, weight=fp8(E4M3), input=fp8(E4M3), output=BF16, activation=BF16,
        activation_grad=BF16, grad_output=fp8(E5M2), weight_grad=FP32, bias_grad=FP32,
        optimizer_state=FP32, master_weights=FP32, fp8_recipe=recipe)


def _block_policy(name, recipe_name, accumulate=BLAS) -> PrecisionPolicy:
    """A block-scaled recipe at the three GEMM operand points (input, weight, grad_output);
    GEMM outputs and activations in BF16, weight gradients, optimizer state and master weights
    in FP32, as Transformer Engine runs its block recipes under the HYBRID layout above."""
    recipe = BLOCK_RECIPES[recipe_name]

    def operand(role):
        return Cast(format_for(recipe.fp8_format, role), overflow="saturate")
    return PrecisionPolicy(
        name=name, weight=operand("forward"), input=operand("forward"), output=BF16,
        activation=BF16, activation_grad=BF16, grad_output=operand("backward"),
        weight_grad=FP32, bias_grad=FP32, optimizer_state=FP32, master_weights=FP32,
        accumulate=accumulate, fp8_recipe=recipe)


# The presets people run. Weight and bias gradients hold values of the compute format even where
# the framework stores them in FP32 tensors: under autocast the wgrad GEMM writes FP16/BF16 and
# the cast's backward only widens the dtype (checked against torch in tests/test_torch_mlp.py).
POLICIES = MappingProxyType({
    # Plain FP32 training: every cast point is FP32, which on float32 arrays rounds nothing.
    "fp32": _uniform("fp32", FP32, optimizer_state=FP32),
    # Apex O3 / model.half(): everything FP16, the optimizer updates FP16 weights directly,
    # momentum in FP16, no loss scaling.
    "fp16_pure": _uniform("fp16_pure", FP16, optimizer_state=FP16),
    # PyTorch AMP (autocast + GradScaler) and Apex O2: FP16 compute, FP32 master weights and
    # optimizer state, dynamic loss scaling with GradScaler's defaults.
    "fp16_mixed": _amp("fp16_mixed", FP16, loss_scale="dynamic"),
    # The same without the GradScaler (a teaching counterpart: what loss scaling rescues).
    "fp16_mixed_unscaled": _amp("fp16_mixed_unscaled", FP16),
    # Autocast with bfloat16: FP32's exponent range, so no loss scaling.
    "bf16_mixed": _amp("bf16_mixed", BF16),
    # TE's fp8_autocast(fp8_recipe=DelayedScaling(fp8_format=Format.HYBRID)): TE always has a
    # recipe, DelayedScaling by default; each tensor is scaled from its own amax history.
    "fp8_hybrid": _fp8_hybrid("fp8_hybrid", "delayed"),
    # The same casts with no scale at all (scale 1; a teaching counterpart, not something TE does).
    "fp8_hybrid_unscaled": _fp8_hybrid("fp8_hybrid_unscaled", None),
    # Block-scaled recipes (lowprec.scaling.recipes, each cited there): NVIDIA's NVFP4 (arXiv
    # 2509.25149), TE's MXFP8BlockScaling, MXFP4 after Tseng et al. (arXiv 2502.20586), and
    # torchao's float8 rowwise, with FP32 (BLAS) GEMMs of the dequantized operands.
    "nvfp4": _block_policy("nvfp4", "nvfp4"),
    "mxfp8": _block_policy("mxfp8", "mxfp8"),
    "mxfp4": _block_policy("mxfp4", "mxfp4"),
    # DeepSeek-V3 (arXiv 2412.19437, sec. 3.3): 1x128 / 128x128 E4M3 blocks on the H100 FP8
    # tensor-core model, each 128-long K-block's partial scaled and added in FP32 on CUDA cores.
    "fp8_blockwise": _block_policy("fp8_blockwise", "fp8_blockwise", tensorcore.H100_FP8),
    "fp8_rowwise": _block_policy("fp8_rowwise", "fp8_rowwise"),
})


def __getattr__(name: str):
    if name == "PRESETS":
        return renamed("lowprec.nn.policy.PRESETS", "lowprec.POLICIES", dict(POLICIES))
    raise no_attribute(__name__, name)


def get_policy(policy: PrecisionPolicy | str) -> PrecisionPolicy:
    """A PrecisionPolicy, or the preset of that name."""
    if isinstance(policy, PrecisionPolicy):
        return policy
    if isinstance(policy, str) and policy in POLICIES:
        return POLICIES[policy]
    raise ValueError(f"unknown precision policy {policy!r}; presets: {', '.join(POLICIES)}")
