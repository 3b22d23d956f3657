"""The FP8/MX recipe states of a training run, one per (cast point, layer), and this step's
statistics of their casts.

Transformer Engine keeps one scaling state per tensor (its fp8 meta: scale, scale_inv, amax
history); :class:`RecipeStates` does the same for every (point, layer) whose cast the policy's
``fp8_recipe`` scales, creating each on first use, and sums this step's :class:`CastStats`
for the History.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..scaling import CastRecord, DelayedScalingState, ScaledTensor
from ..scaling.fp8 import RecipeState
from .policy import CAST_POINTS, FORWARD_POINTS, PrecisionPolicy


@dataclass
class CastStats:
    """One tensor's scaled casts in one step (a tensor cast twice, as MX does, adds up)."""

    amax: float = 0.0  # the largest |x| cast (NaN ignored)
    scale: float = math.nan  # the per-tensor scale used last; NaN for block scaling
    clipped: int = 0  # values whose scaled magnitude exceeded the format's max (saturated)
    flushed: int = 0  # nonzero finite values that became zero
    count: int = 0  # values cast

    def add(self, record: CastRecord, size: int) -> None:
        """Add a cast of ``size`` values, described by its CastRecord."""
        self.amax = max(self.amax, record.amax)
        if record.scale is not None:  # block records have none
            self.scale = record.scale
        # the record's fractions are count / size exactly
        self.clipped += int(round(record.clipped * size))
        self.flushed += int(round(record.flushed * size))
        self.count += size


class RecipeStates:
    """The recipe state of each scaled tensor and this step's stats, both keyed by (layer, point)
    (the layout Trainer.fp8_states and checkpoints use).

    ``frozen=True`` casts with the states' current scales but never updates them (evaluation
    must not change the training run)."""

    def __init__(self, policy: PrecisionPolicy, states: dict | None = None, frozen: bool = False):
        self.recipe = policy.fp8_recipe
        self.points = frozenset(policy.fp8_points) if self.recipe is not None else frozenset()
        self.states = {} if states is None else states  # (layer, point) -> recipe state
        self.frozen = frozen
        self.step_stats: dict = {}  # (layer, point) -> CastStats, this step

    def state(self, point: str, layer: int) -> RecipeState:
        """The recipe state of the tensor at (point, layer), created on first use: E4M3
        ("forward") for forward points, E5M2 ("backward") for gradients under HYBRID."""
        key = (layer, point)
        if key not in self.states:
            role = "forward" if point in FORWARD_POINTS else "backward"
            if getattr(self.recipe, "per_operand", False):  # weights and activations differ
                self.states[key] = self.recipe.new_state(role, point=point)
            else:
                self.states[key] = self.recipe.new_state(role)
        return self.states[key]

    def cast(self, x: np.ndarray, point: str, layer: int, axis: int = -1, *,
             gemm: str | None = None,
             rng: np.random.Generator | None = None) -> tuple[ScaledTensor, CastRecord]:
        """(ScaledTensor, CastRecord): ``x`` cast by the recipe with the state of (point, layer);
        blocks run along ``axis``. A per-operand (block-scaled) recipe also gets the GEMM the
        tensor feeds and the generator of its stochastic rounding. The cast is added to this
        step's stats."""
        state = self.state(point, layer)
        if self.frozen and isinstance(state, DelayedScalingState):
            tensor, record = state.cast(x, update=False)  # writes only the state's history[0]
        elif getattr(self.recipe, "per_operand", False):
            tensor, record = state.cast(x, axis=axis, gemm=gemm, rng=rng)
        else:
            tensor, record = state.cast(x, axis=axis)
        self.step_stats.setdefault((layer, point), CastStats()).add(record, x.size)
        return tensor, record

    def begin_step(self) -> None:
        self.step_stats = {}

    def step_arrays(self, layers: int) -> dict | None:
        """This step's stats as arrays (layers, points), or None without a recipe: amax, scale
        (NaN for block scaling), and the fractions of values clipped and flushed to zero."""
        if not self.points:
            return None
        shape = (layers, len(CAST_POINTS))
        out = {name: np.full(shape, np.nan) for name in ("amax", "scale", "clipped", "flushed")}
        for (layer, point), stats in self.step_stats.items():
            p = CAST_POINTS.index(point)
            out["amax"][layer, p], out["scale"][layer, p] = stats.amax, stats.scale
            out["clipped"][layer, p] = stats.clipped / max(stats.count, 1)
            out["flushed"][layer, p] = stats.flushed / max(stats.count, 1)
        return out
