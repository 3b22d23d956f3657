"""Loss scalers that follow PyTorch, Apex and DeepSpeed to the bit, and say what overflowed.

A loss scaler multiplies the loss (so every gradient) by ``scale`` before the backward pass,
so that small FP16 gradients do not underflow, then divides the gradients by it again
(:func:`unscale_and_check`). A non-finite gradient means the scale was too large: the step is
skipped and the scale reduced. After a run of clean steps the scale is increased again.

Per step, the training loop does::

    scaler = make_loss_scaler("dynamic")          # or None, 1024.0, "deepspeed", "apex"
    seed = np.float32(scaler.scale)               # d(scaled loss)/d(loss), the backward seed
    ... backward pass with the seed ...
    grads, found_inf = unscale_and_check(grads, scaler)
    record = scaler.update(found_inf, source=culprit)   # a StepRecord; culprit: a NonFiniteSource
    if not record.skipped:
        optimizer step with grads

The scalers that follow the frameworks' rules live in :mod:`.dynamic`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["NON_FINITE_KINDS", "NonFiniteSource", "StepRecord", "LossScaler", "StaticLossScaler",
           "unscale_and_check"]


def _float32(value: float) -> float:
    """``value`` rounded once to float32 (nearest-even, subnormals kept), as a Python float."""
    with np.errstate(over="ignore"):
        return float(np.float32(value))


def _inverse(scale: float) -> float:
    # GradScaler.unscale_ takes the reciprocal in float64 and rounds it once to float32, so
    # the result does not depend on how float32 division was compiled.
    with np.errstate(divide="ignore"):
        return _float32(1.0 / scale) if scale != 0 else math.inf


NON_FINITE_KINDS = ("inf", "nan")  # what a NonFiniteSource can name; a NaN is reported first


@dataclass(frozen=True)
class NonFiniteSource:
    """Where a non-finite value first appeared in a step: the culprit. The training step's Caster
    finds it, the scaler's StepRecord carries it and the History stores it."""

    layer: int  # index of the layer (0 = the first), as the model counts them
    cast_point: str  # which cast produced it, e.g. "activation_grad", "weight_grad", "output"
    kind: str = "inf"  # "inf" or "nan": what was found first (a tensor holding both: "nan")

    def __post_init__(self):
        if isinstance(self.layer, bool) or not isinstance(self.layer, (int, np.integer)):
            raise TypeError(f"layer must be a layer index (an int), got {self.layer!r}")
        if self.layer < 0:
            raise ValueError(f"layer must be a layer index >= 0, got {self.layer}")
        object.__setattr__(self, "layer", int(self.layer))
        if not isinstance(self.cast_point, str):
            raise TypeError(f"cast_point must be a cast point name, got {self.cast_point!r}")
        if self.kind not in NON_FINITE_KINDS:
            raise ValueError(f"kind must be one of {NON_FINITE_KINDS}, got {self.kind!r}")

    def __str__(self) -> str:
        return f"{self.kind} in layer {self.layer} at cast point {self.cast_point!r}"


@dataclass(frozen=True)
class StepRecord:
    """What one ``scaler.update(found_inf)`` saw and did."""

    step: int  # 0-based index of this update
    scale: float  # scale the step was taken with
    found_inf: bool  # a gradient held inf or NaN
    skipped: bool  # the optimizer step must not be applied
    new_scale: float  # scale for the next step
    # PyTorch/Apex: consecutive clean steps counted towards growth
    growth_tracker: int | None = None
    hysteresis: int | None = None  # DeepSpeed: overflows still tolerated before the scale halves
    # first layer and cast point that produced a non-finite value
    source: NonFiniteSource | None = None

    def describe(self) -> str:
        """One plain sentence, e.g. for a log line."""
        if not self.found_inf:
            what = "gradients finite"
        else:
            what = "non-finite gradient" + (f" ({self.source})" if self.source else "")
        action = "step skipped" if self.skipped else "step applied"
        if self.new_scale != self.scale:
            change = f"scale {self.scale:g} -> {self.new_scale:g}"
        else:
            change = f"scale {self.scale:g} kept"
        if self.hysteresis is not None:
            change += f" (hysteresis left: {self.hysteresis})"
        return f"step {self.step}: {what}; {action}; {change}"


class LossScaler:
    """Common interface: ``scale``, ``inv_scale``, ``update(found_inf)``, ``state_dict()``."""

    name = "loss scaler"

    def __init__(self) -> None:
        self.steps = 0  # updates so far (the next StepRecord.step)

    @property
    def scale(self) -> float:
        """The current scale as a Python float."""
        raise NotImplementedError

    @property
    def inv_scale(self) -> float:
        """float32(1 / float64(scale)), the factor the gradients are multiplied by."""
        return _inverse(self.scale)

    def update(self, found_inf: bool, source: NonFiniteSource | None = None) -> StepRecord:
        """Advance one step: ``found_inf`` says whether any gradient was inf or NaN."""
        if isinstance(found_inf, np.ndarray) and found_inf.size == 1:
            found_inf = found_inf.item()
        if not isinstance(found_inf, (bool, int, float, np.bool_, np.number)):
            raise TypeError(f"found_inf must be a bool (or 0/1), got {type(found_inf).__name__}")
        if source is not None and not isinstance(source, NonFiniteSource):
            raise TypeError("source must be a NonFiniteSource or None, got "
                            f"{type(source).__name__}")
        found_inf = bool(found_inf)
        used = self.scale
        skipped = self._advance(found_inf)
        record = StepRecord(self.steps, used, found_inf, skipped, self.scale,
                            source=source if found_inf else None, **self._counters())
        self.steps += 1
        return record

    def state_dict(self) -> dict:
        """Everything needed to continue exactly where this scaler is (for checkpoints)."""
        return {**self._state(), "steps": self.steps}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a :meth:`state_dict`; keys this scaler does not know raise a ValueError."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, got {type(state).__name__}")
        unknown = set(state) - set(self.state_dict())
        if unknown:
            raise ValueError(f"unknown state keys for {self.name} scaler: {sorted(unknown)}")
        state = dict(state)
        self.steps = int(state.pop("steps", 0))
        self._load(state)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} scale={self.scale:g} steps={self.steps}>"

    # --- what subclasses provide ----------------------------------------------------------
    def _advance(self, found_inf: bool) -> bool:
        """Apply the rule for one step; return whether the step is skipped."""
        raise NotImplementedError

    def _counters(self) -> dict:
        return {}

    def _state(self) -> dict:
        raise NotImplementedError

    def _load(self, state: dict) -> None:
        raise NotImplementedError


def _positive_finite(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be positive and finite, got {value!r}")
    return float(value)


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be an int >= 1, got {value!r}")
    return int(value)


class StaticLossScaler(LossScaler):
    """A fixed scale (kept as float32, like GradScaler's tensor).

    With ``skip_non_finite=True`` (the default, also for "no scaling") a step whose gradients
    hold inf/NaN is skipped, so a non-finite gradient never silently reaches the weights; this
    is what DeepSpeed's FP16 optimizer does with a static scale (its overflow check does not
    depend on the scaler). ``skip_non_finite=False`` reproduces Apex's static scale, which does
    not check and applies the update anyway; the record still says ``found_inf=True``.
    """

    def __init__(self, scale: float = 1.0, *, skip_non_finite: bool = True,
                 name: str = "static") -> None:
        super().__init__()
        self._scale = _float32(_positive_finite(scale, "static loss scale"))
        if not isinstance(skip_non_finite, bool):
            raise TypeError(f"skip_non_finite must be True or False, got {skip_non_finite!r}")
        self.skip_non_finite = skip_non_finite
        self.name = name

    @property
    def scale(self) -> float:
        return self._scale

    def _advance(self, found_inf: bool) -> bool:
        return found_inf and self.skip_non_finite

    def _state(self) -> dict:
        return {"scale": self._scale, "skip_non_finite": self.skip_non_finite}

    def _load(self, state: dict) -> None:
        self._scale = _float32(_positive_finite(state.get("scale", self._scale), "scale"))
        self.skip_non_finite = bool(state.get("skip_non_finite", self.skip_non_finite))


def _unscale_one(grad, inv32: np.float32):
    # CuPy arrays stay on the device (np.asarray would refuse them); NumPy ufuncs dispatch to CuPy.
    arr = grad if hasattr(grad, "__cuda_array_interface__") else np.asarray(grad)
    if arr.dtype == np.float16:
        # GradScaler.unscale_ refuses float16 gradients too: master gradients belong in float32.
        raise ValueError("cannot unscale FP16 (float16) gradients: keep the gradients to unscale "
                         "in float32 arrays (FP16 values stored in float32 are fine)")
    if arr.dtype not in (np.float32, np.float64):
        raise TypeError(f"gradients must be float32 or float64 arrays, got dtype {arr.dtype}")
    found = not bool(np.isfinite(arr).all())  # checked on the scaled input, as the kernel does
    if arr.dtype == np.float32:
        return arr * inv32, found  # float32 product, one rounding
    return arr * np.float64(inv32), found  # a double gradient times the float inverse, in double


def _unscale_tree(grads, inv32: np.float32):
    """(same container of unscaled arrays, found_inf) for nested dicts, lists and tuples."""
    if isinstance(grads, Mapping):
        pairs = {key: _unscale_tree(g, inv32) for key, g in grads.items()}
        return {key: p[0] for key, p in pairs.items()}, any(p[1] for p in pairs.values())
    if isinstance(grads, (list, tuple)):
        pairs = [_unscale_tree(g, inv32) for g in grads]
        return type(grads)(p[0] for p in pairs), any(p[1] for p in pairs)
    return _unscale_one(grads, inv32)


def unscale_and_check(grads: Any, scaler: LossScaler) -> tuple[Any, bool]:
    """Multiply every gradient by ``scaler.inv_scale``; report whether any was inf or NaN.

    ``grads`` is one array or nested lists/tuples/dicts of arrays (e.g. one dict per layer);
    the result has the same structure, with new arrays (the inputs are not modified). As
    ``torch._amp_foreach_non_finite_check_and_unscale_``: float32 gradients are multiplied in
    float32 by ``float32(1 / float64(scale))``, and ``found_inf`` looks at the *scaled*
    inputs, so a product that overflows (scale below 1, or below 2**-128 where the inverse
    itself is inf) is not flagged, exactly as in PyTorch.
    """
    if not isinstance(scaler, LossScaler):
        raise TypeError("scaler must be a LossScaler (see make_loss_scaler), got "
                        f"{type(scaler).__name__}")
    with np.errstate(over="ignore", invalid="ignore"):
        return _unscale_tree(grads, np.float32(scaler.inv_scale))
