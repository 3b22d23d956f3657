"""Dynamic loss scalers with the rules of PyTorch, Apex and DeepSpeed, and make_loss_scaler.

The rules, and the sources they come from:

* :class:`DynamicLossScaler` with the default :class:`DynamicScalingConfig` is
  ``torch.amp.GradScaler``: the scale lives in a float32 tensor; ``update`` is
  ``_amp_update_scale_`` (aten/src/ATen/native/cpu/AmpGradScalerKernels.cpp): on overflow
  ``scale = float32(scale * backoff)`` and the tracker resets; otherwise the tracker counts up
  and at ``growth_interval`` ``new = float32(scale * growth)`` is kept only if finite. The
  products are taken in double (the factors are C++ doubles) and rounded once to float32.
  There is no lower bound: an all-overflow run drives the scale through the float32
  subnormals to 0.
* ``APEX`` is the same machinery as Apex's ``LossScaler`` (apex/amp/scaler.py): a Python
  float (double), growth capped at ``max_loss_scale = 2**24``, optional ``min_loss_scale``.
* :class:`HysteresisLossScaler` is DeepSpeed's ``DynamicLossScaler``
  (deepspeed/runtime/fp16/loss_scaler.py, 0.19): overflow halves the scale only when the
  hysteresis is used up, growth needs ``(iter - last_overflow) - 1`` to be a positive
  multiple of the window (so the first growth comes after window + 1 clean steps, one later
  than PyTorch), and it raises at ``min_scale`` by default.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from .loss import LossScaler, StaticLossScaler, _float32, _positive_finite, _positive_int

__all__ = ["DynamicScalingConfig", "PYTORCH", "APEX", "DynamicLossScaler", "DeepSpeedConfig",
           "HysteresisLossScaler", "LossScaleAtMinimumError", "make_loss_scaler"]


class LossScaleAtMinimumError(RuntimeError):
    """DeepSpeed's stop: an overflow when the scale already equals ``min_scale``."""


@dataclass(frozen=True)
class DynamicScalingConfig:
    """Grow-after-N-clean-steps, back-off-on-overflow scaling. Defaults: torch.amp.GradScaler."""

    init_scale: float = 2.0**16  # first scale (GradScaler init_scale; Apex init_scale)
    growth_factor: float = 2.0  # multiplier after growth_interval clean steps (must be > 1)
    backoff_factor: float = 0.5  # multiplier after a non-finite step (0 < backoff < 1)
    growth_interval: int = 2000  # consecutive clean steps before the scale grows
    # floor for backoff (Apex min_loss_scale); None: no floor, as PyTorch
    min_scale: float | None = None
    # cap for growth (Apex max_loss_scale); None: growth refused only at inf
    max_scale: float | None = None
    # True: scale held in float32 (PyTorch); False: a Python float (Apex)
    float32_scale: bool = True
    name: str = "dynamic"  # label used in messages and reprs

    def __post_init__(self):
        _positive_finite(self.init_scale, "init_scale")
        if _positive_finite(self.growth_factor, "growth_factor") <= 1.0:
            raise ValueError("growth_factor must be > 1 (GradScaler asserts it), got "
                             f"{self.growth_factor}")
        if not 0 < _positive_finite(self.backoff_factor, "backoff_factor") < 1.0:
            raise ValueError(f"backoff_factor must be in (0, 1), got {self.backoff_factor}")
        _positive_int(self.growth_interval, "growth_interval")
        for bound in ("min_scale", "max_scale"):
            if getattr(self, bound) is not None:
                _positive_finite(getattr(self, bound), bound)
        if (self.min_scale is not None and self.max_scale is not None
                and self.min_scale > self.max_scale):
            raise ValueError(f"min_scale {self.min_scale} exceeds max_scale {self.max_scale}")


PYTORCH = DynamicScalingConfig()
APEX = DynamicScalingConfig(growth_interval=2000, max_scale=2.0**24, float32_scale=False,
                            name="apex")


class DynamicLossScaler(LossScaler):
    """torch.amp.GradScaler's rule (and Apex's, with ``APEX``); see the module docstring."""

    def __init__(self, config: DynamicScalingConfig = PYTORCH) -> None:
        super().__init__()
        if not isinstance(config, DynamicScalingConfig):
            raise TypeError(f"config must be a DynamicScalingConfig, got {type(config).__name__}")
        self.config = config
        self.name = config.name
        self._scale = self._round(config.init_scale)  # torch.full((), init_scale, dtype=float32)
        self.growth_tracker = 0  # consecutive clean steps since the last growth or overflow

    def _round(self, value: float) -> float:
        return _float32(value) if self.config.float32_scale else float(value)

    @property
    def scale(self) -> float:
        return self._scale

    def _advance(self, found_inf: bool) -> bool:
        cfg = self.config
        if found_inf:
            new = self._round(self._scale * cfg.backoff_factor)  # double product, one rounding
            if cfg.min_scale is not None:
                new = max(self._round(cfg.min_scale), new)  # Apex: max(min_loss_scale, scale / 2)
            self._scale = new
            self.growth_tracker = 0
            return True
        successful = self.growth_tracker + 1  # the tracker counts up before the comparison
        if successful == cfg.growth_interval:
            new = self._round(self._scale * cfg.growth_factor)
            if cfg.max_scale is not None:
                new = min(self._round(cfg.max_scale), new)  # Apex: min(max_loss_scale, scale * 2)
            if math.isfinite(new):  # growth that would reach inf in float32 is refused
                self._scale = new
            self.growth_tracker = 0
        else:
            self.growth_tracker = successful
        return False

    def _counters(self) -> dict:
        return {"growth_tracker": self.growth_tracker}

    def _state(self) -> dict:
        # The first five keys are torch.amp.GradScaler.state_dict()'s, so the dicts interchange.
        cfg = self.config
        return {"scale": self._scale, "growth_factor": cfg.growth_factor,
                "backoff_factor": cfg.backoff_factor, "growth_interval": cfg.growth_interval,
                "_growth_tracker": self.growth_tracker, "min_scale": cfg.min_scale,
                "max_scale": cfg.max_scale, "float32_scale": cfg.float32_scale}

    def _load(self, state: dict) -> None:
        cfg = self.config
        names = ("growth_factor", "backoff_factor", "growth_interval", "min_scale", "max_scale",
                 "float32_scale")
        updates = {key: state[key] for key in names if key in state}
        self.config = DynamicScalingConfig(**{**asdict(cfg), **updates})
        self._scale = self._round(state.get("scale", self._scale))
        self.growth_tracker = int(state.get("_growth_tracker", self.growth_tracker))


@dataclass(frozen=True)
class DeepSpeedConfig:
    """DeepSpeed's fp16 dynamic loss scaling; defaults are DeepSpeed 0.19's config defaults."""

    init_scale: float = 2.0**16  # 2 ** fp16.initial_scale_power (16)
    scale_window: int = 1000  # fp16.loss_scale_window
    # fp16.hysteresis (DeepSpeed's delayed_shift): overflows tolerated per halving
    hysteresis: int = 2
    # fp16.consecutive_hysteresis: refill hysteresis on every clean step
    consecutive_hysteresis: bool = False
    min_scale: float = 1.0  # fp16.min_loss_scale: the scale never goes below this
    # DynamicLossScaler(raise_error_at_min_scale=True): stop the run
    raise_at_min_scale: bool = True
    scale_factor: float = 2.0  # fixed at 2.0 inside DeepSpeed

    def __post_init__(self):
        _positive_finite(self.init_scale, "init_scale")
        _positive_int(self.scale_window, "scale_window")
        _positive_int(self.hysteresis, "hysteresis")
        _positive_finite(self.min_scale, "min_scale")
        if _positive_finite(self.scale_factor, "scale_factor") <= 1.0:
            raise ValueError(f"scale_factor must be > 1, got {self.scale_factor}")
        for flag in ("consecutive_hysteresis", "raise_at_min_scale"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be True or False, got {getattr(self, flag)!r}")


class HysteresisLossScaler(LossScaler):
    """DeepSpeed 0.19's ``DynamicLossScaler.update_scale``, re-implemented from its rule."""

    name = "deepspeed"

    def __init__(self, config: DeepSpeedConfig = DeepSpeedConfig()) -> None:
        super().__init__()
        if not isinstance(config, DeepSpeedConfig):
            raise TypeError(f"config must be a DeepSpeedConfig, got {type(config).__name__}")
        self.config = config
        self.cur_scale = float(config.init_scale)  # a Python float in DeepSpeed
        self.cur_iter = 0
        self.last_overflow_iter = -1
        self.cur_hysteresis = config.hysteresis

    @property
    def scale(self) -> float:
        return self.cur_scale

    def _advance(self, found_inf: bool) -> bool:
        cfg = self.config
        if found_inf:
            if cfg.hysteresis == 1 or self.cur_hysteresis == 1:
                if self.cur_scale == cfg.min_scale and cfg.raise_at_min_scale:
                    raise LossScaleAtMinimumError(
                        f"step {self.steps}: gradients overflowed with the loss scale already "
                        f"at its minimum {cfg.min_scale:g}; DeepSpeed stops the run here ('Current "
                        "loss scale already at minimum'); lower min_scale or pass "
                        "raise_at_min_scale=False")
                self.cur_scale = max(self.cur_scale / cfg.scale_factor, cfg.min_scale)
            else:
                self.cur_hysteresis -= 1
            self.last_overflow_iter = self.cur_iter
        else:
            if cfg.consecutive_hysteresis:
                self.cur_hysteresis = cfg.hysteresis
            stable_interval = (self.cur_iter - self.last_overflow_iter) - 1
            if stable_interval > 0 and stable_interval % cfg.scale_window == 0:
                if not cfg.consecutive_hysteresis:
                    self.cur_hysteresis = cfg.hysteresis  # refilled only when the scale grows
                self.cur_scale *= cfg.scale_factor
        self.cur_iter += 1
        return found_inf  # DeepSpeed skips every overflowing step

    def _counters(self) -> dict:
        return {"hysteresis": self.cur_hysteresis}

    def _state(self) -> dict:
        return {"cur_scale": self.cur_scale, "cur_iter": self.cur_iter,
                "last_overflow_iter": self.last_overflow_iter,
                "cur_hysteresis": self.cur_hysteresis, **asdict(self.config)}

    def _load(self, state: dict) -> None:
        config_keys = {f.name for f in fields(DeepSpeedConfig)}
        self.config = DeepSpeedConfig(**{**asdict(self.config),
                                         **{k: v for k, v in state.items() if k in config_keys}})
        self.cur_scale = float(state.get("cur_scale", self.cur_scale))
        self.cur_iter = int(state.get("cur_iter", self.cur_iter))
        self.last_overflow_iter = int(state.get("last_overflow_iter", self.last_overflow_iter))
        self.cur_hysteresis = int(state.get("cur_hysteresis", self.cur_hysteresis))


_NAMED = {
    "none": lambda: StaticLossScaler(1.0, name="none"),
    "dynamic": lambda: DynamicLossScaler(PYTORCH),
    "pytorch": lambda: DynamicLossScaler(PYTORCH),
    "apex": lambda: DynamicLossScaler(APEX),
    "deepspeed": lambda: HysteresisLossScaler(DeepSpeedConfig()),
}


def make_loss_scaler(spec: LossScaler | float | str | DynamicScalingConfig | DeepSpeedConfig
                     | None = None) -> LossScaler:
    """Build a loss scaler from a short description.

    ``None`` or ``"none"``: no scaling (scale 1.0; non-finite steps are still skipped);
    a number: that static scale; ``"dynamic"``/``"pytorch"``: torch.amp.GradScaler;
    ``"apex"``: Apex's LossScaler; ``"deepspeed"``: DeepSpeed's hysteresis scaler;
    a :class:`DynamicScalingConfig` or :class:`DeepSpeedConfig`: that configuration;
    a :class:`LossScaler`: returned as it is.
    """
    if spec is None:
        return _NAMED["none"]()
    if isinstance(spec, LossScaler):
        return spec
    if isinstance(spec, DynamicScalingConfig):
        return DynamicLossScaler(spec)
    if isinstance(spec, DeepSpeedConfig):
        return HysteresisLossScaler(spec)
    if isinstance(spec, str):
        build = _NAMED.get(spec.strip().lower())
        if build is None:
            raise ValueError(f"unknown loss scaler {spec!r}; valid: None, a number, "
                             + ", ".join(repr(k) for k in _NAMED) + ", a config or a LossScaler")
        return build()
    if isinstance(spec, (int, float, np.integer, np.floating)) and not isinstance(spec, bool):
        return StaticLossScaler(spec)
    raise TypeError(f"cannot make a loss scaler from {type(spec).__name__} {spec!r}; expected "
                    "None, a number, a name, a DynamicScalingConfig/DeepSpeedConfig or a "
                    "LossScaler")
