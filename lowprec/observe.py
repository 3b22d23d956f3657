"""What happened at every cast point, per layer and per step, and the History that keeps it.

At each cast point the :class:`Observer` compares the tensor before rounding with the result:

``count``       values in the tensor
``zeros``       zeros after the cast (ReLU zeros included)
``underflow``   values that were not zero and became zero: the cast flushed them
``subnormal``   non-zero results below the format's smallest normal (``tiny``)
``overflow``    results that are inf/NaN, plus values clamped to +-max by a saturating cast
``amax``        the largest magnitude after the cast (what per-tensor FP8 scaling divides by)
``exp_hist``    histogram of floor(log2|x|) of the finite non-zero values *before* the cast,
                the view of Micikevicius et al. 2018, Fig. 3 (what part falls below a format);
                from a systematic sample of at most HIST_SAMPLE values per tensor; values
                below 2**-126 (float32's subnormals) are left out

and at a block-scaled cast (MX, NVFP4, 1x128 / 128x128 blocks, rowwise: one decode scale per
block; see :func:`block_statistics`):

``blocks``          blocks cast
``blocks_clipped``  blocks with at least one value whose scaled magnitude exceeded the format's
                    max (saturated)
``blocks_flushed``  blocks with at least one non-zero finite value that became zero
``scale_hist``      histogram of floor(log2) of the blocks' decode scales (block scale times the
                    tensor scale), in the bins of ``exp_hist``

and at each weight update (``w_new = round(w - u)``): ``update_nonzero`` (u != 0),
``update_lost`` (u != 0 but w_new == w: the update vanished in rounding), ``update_sq`` and
``weight_sq`` (sums of squares, for the update-to-weight ratio ||u|| / ||w||).

Observation off (no Observer) costs nothing; on, it costs a few passes over each tensor. It is
off by default (``TrainConfig(observe_every=0)``): asking a History for a statistic that was not
recorded raises :class:`NotRecordedError`, which says how to turn it on.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from types import ModuleType
from typing import IO, TYPE_CHECKING

import numpy as np

from .scaling.loss import NON_FINITE_KINDS, NonFiniteSource

if TYPE_CHECKING:  # the name only, for the hints: observe must not import nn
    from .nn.policy import Cast
    from .scaling.tensor import ScaledTensor

HIST_MIN_EXP = -96  # exp_hist[..., k] counts values with floor(log2|x|) == HIST_MIN_EXP + k ...
HIST_BINS = 128  # ... for k in 0..127; the first and last bins also hold everything beyond
HIST_SAMPLE = 4096  # exp_hist looks at most at this many values per tensor (see exponent_fields)
CAST_STATS = ("count", "zeros", "underflow", "subnormal", "overflow")
BLOCK_STATS = ("blocks", "blocks_clipped", "blocks_flushed")  # block-scaled casts only
UPDATE_STATS = ("update_nonzero", "update_lost", "update_sq", "weight_sq")
STEP_FIELDS = ("step", "loss", "scale", "new_scale", "found_inf", "skipped", "growth_tracker",
               "hysteresis", "culprit_layer", "culprit_point", "culprit_kind")
CULPRIT_KINDS = NON_FINITE_KINDS  # culprit_kind indexes this; -1: no culprit
FP8_STATS = ("amax", "scale", "clipped", "flushed")
FP8_FIELDS = ("fp8_step",) + tuple(f"fp8_{name}" for name in FP8_STATS)
EVAL_FIELDS = ("eval_step", "train_loss", "train_accuracy", "test_loss", "test_accuracy")
OBSERVED_FIELDS = (("observed_step",) + CAST_STATS + ("amax", "exp_hist") + UPDATE_STATS
                   + BLOCK_STATS + ("scale_hist",))


class NotRecordedError(LookupError):
    """A History was asked for a statistic its run never recorded (observation off, or no FP8
    recipe). Raised instead of an empty array or NaN, which would read as "nothing happened"."""


_CULPRIT_COLUMNS = ("culprit_layer", "culprit_point", "culprit_kind")  # a NonFiniteSource, stored

# Fields added with block scaling; a History saved without them loads with zero counts.
_ADDED_BLOCK_FIELDS = BLOCK_STATS + ("scale_hist",)

# What __getattr__ refuses when never recorded (the index columns are not statistics)
_STATISTICS = frozenset(OBSERVED_FIELDS[1:] + FP8_FIELDS[1:])


def _field_to_bin():
    """Histogram bin of each float32 exponent field 1..254 (fields 0 and 255 are not counted)."""
    bins = np.clip(np.arange(256) - 127 - HIST_MIN_EXP, 0, HIST_BINS - 1)
    bins.setflags(write=False)
    return bins


_FIELD_TO_BIN = _field_to_bin()


def exponent_fields(x: np.ndarray, xp: ModuleType = np) -> np.ndarray:
    """Counts (256,) of the float32 exponent field of x's values: field f holds the normal values
    with floor(log2|x|) == f - 127. Zeros, inf/NaN and values below 2**-126 are not counted.

    A tensor of more than HIST_SAMPLE values is sampled systematically: every k-th value, k
    odd (so that a power-of-two row length does not pin the sample to a few columns). The
    shape of the distribution is then an estimate (each bin's share to within 1-2%); the counts in
    :class:`Observer` are exact.
    """
    flat = x.reshape(-1)
    if flat.size > HIST_SAMPLE:
        flat = flat[::(-(-flat.size // HIST_SAMPLE)) | 1]
    if flat.dtype == np.float32:
        fields = ((flat.view(np.uint32) >> 23) & 0xFF).astype(xp.intp)  # one shift, one mask
    else:  # float64 (the gradient checks): exponents from frexp, clamped into float32's fields
        mantissa, exponent = xp.frexp(flat)
        fields = xp.where(xp.isfinite(flat) & (flat != 0), xp.clip(exponent + 126, 1, 254), 0)
    counts = xp.bincount(fields, minlength=256)
    counts = np.array(counts.get() if hasattr(counts, "get") else counts)
    counts[0] = counts[255] = 0
    return counts


def fold_exponent_fields(counts: np.ndarray) -> np.ndarray:
    """exp_hist bins (..., HIST_BINS) from exponent-field counts (..., 256)."""
    counts = np.asarray(counts)
    out = np.zeros(counts.shape[:-1] + (HIST_BINS,), np.int64)
    np.add.at(out, (..., _FIELD_TO_BIN), counts)  # sums the fields that share the end bins
    return out


def _blocks_with_any(mask: np.ndarray, block_size, axis) -> np.ndarray:
    """Per block, whether ``mask`` (the elements' shape) holds a True in it: 1-D blocks of
    ``block_size`` along ``axis``, or 2-D ``(bm, bn)`` tiles over the last two axes (a last
    block shorter than the others is padded with False)."""
    if isinstance(block_size, tuple):
        bm, bn = block_size
        m, n = mask.shape[-2:]
        pad = [(0, 0)] * (mask.ndim - 2) + [(0, (-m) % bm), (0, (-n) % bn)]
        padded = np.pad(mask, pad)
        tiles = padded.reshape(padded.shape[:-2] + (padded.shape[-2] // bm, bm,
                                                    padded.shape[-1] // bn, bn))
        return tiles.any(axis=(-3, -1))
    moved = np.moveaxis(mask, axis, -1)
    padded = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(0, (-moved.shape[-1]) % block_size)])
    blocks = padded.reshape(padded.shape[:-1] + (-1, block_size)).any(axis=-1)
    return np.moveaxis(blocks, -1, axis)  # the grid of block_scales


def block_statistics(before: np.ndarray, tensor: ScaledTensor) -> dict:
    """Per-block statistics of a block-scaled cast of ``before`` that gave ``tensor`` (a
    :class:`lowprec.scaling.ScaledTensor`): ``blocks``, ``blocks_clipped``, ``blocks_flushed``
    (counts; see the module docstring) and ``scale_fields``, the exponent-field counts (256,)
    of the blocks' decode scales (see :func:`exponent_fields`; zero and non-finite scales are
    not counted). Host NumPy arrays."""
    x = np.asarray(before.get() if hasattr(before, "get") else before, np.float64)
    decode = tensor.decode_scales()  # each element's decode scale, float64
    values = tensor.dequantize()
    with np.errstate(divide="ignore", invalid="ignore"):
        clipped = np.abs(x / decode) > tensor.fmt.max  # inf included, NaN not
    flushed = (values == 0) & (x != 0) & np.isfinite(x)
    tensor_scale = getattr(tensor, "tensor_scale", None)
    scales = tensor.block_scales.astype(np.float64) * (1.0 if tensor_scale is None
                                                       else float(tensor_scale))
    scales = scales[np.isfinite(scales) & (scales > 0)]
    _, exponent = np.frexp(scales)  # scale = m * 2**exponent, 0.5 <= m < 1
    fields = np.clip(exponent - 1 + 127, 1, 254)
    return {"blocks": int(tensor.block_scales.size),
            "blocks_clipped": int(_blocks_with_any(clipped, tensor.block_size, tensor.axis).sum()),
            "blocks_flushed": int(_blocks_with_any(flushed, tensor.block_size, tensor.axis).sum()),
            "scale_fields": np.bincount(fields.astype(np.intp), minlength=256)}


def exponent_histogram(x: np.ndarray, xp: ModuleType = np) -> np.ndarray:
    """Histogram (HIST_BINS,) of floor(log2|x|) over the finite non-zero values of ``x``
    (above 2**-126; sampled for big tensors, see :func:`exponent_fields`)."""
    return fold_exponent_fields(exponent_fields(x, xp))


class Observer:
    """Accumulates the statistics of one training step (sums when a point is seen twice).

    ``points`` names the cast points (lowprec.nn.CAST_POINTS); ``record`` takes their index.
    """

    def __init__(self, layers: int, points: tuple, xp: ModuleType = np) -> None:
        self.layers = layers
        self.points = tuple(points)
        self.xp = xp
        self._limits = {}  # Cast -> (tiny, max, saturates): format properties computed once
        self.begin_step()

    def begin_step(self) -> None:
        shape = (self.layers, len(self.points))
        self.cast_stats = {name: np.zeros(shape, np.int64) for name in CAST_STATS}
        self.amax = np.zeros(shape)  # largest |value| after the cast (what FP8 recipes scale by)
        self.field_counts = np.zeros(shape + (256,), np.int64)
        self.block_stats = {name: np.zeros(shape, np.int64) for name in BLOCK_STATS}
        self.scale_fields = np.zeros(shape + (256,), np.int64)  # block decode scales' exponents
        self.update_stats = {name: np.zeros(self.layers, np.float64) for name in UPDATE_STATS}

    @property
    def exp_hist(self) -> np.ndarray:
        return fold_exponent_fields(self.field_counts)

    @property
    def scale_hist(self) -> np.ndarray:
        """Histogram (layers, points, HIST_BINS) of floor(log2) of the block decode scales."""
        return fold_exponent_fields(self.scale_fields)

    def _limits_of(self, spec, dtype):
        key = spec if spec is not None else np.dtype(dtype)
        if key not in self._limits:
            if spec is None:
                info = np.finfo(dtype)
                self._limits[key] = (float(info.tiny), float(info.max), False)
            else:
                fmt = spec.format
                saturates = (spec.overflow or fmt.default_overflow) == "saturate"
                self._limits[key] = (fmt.tiny, fmt.max, saturates)
        return self._limits[key]

    def record(self, layer: int, point: int, before: np.ndarray, after: np.ndarray,
               spec: Cast | None, *, decode_scale: np.float32 | np.ndarray | None = None,
               clipped: int | None = None, blocks: dict | None = None) -> None:
        """Statistics of one cast: ``before`` rounded by ``spec`` gave ``after``.

        A scaled FP8 cast (lowprec.scaling recipes) rounds ``before * scale`` and returns the
        result times ``decode_scale`` (= scale_inv; an array of per-value block scales for MX):
        then the format's smallest normal sits at ``tiny * decode_scale``, and ``clipped`` (the
        recipe's count of saturated values) replaces the comparison with the format's max.
        ``blocks``: a block-scaled cast's :func:`block_statistics`.
        """
        xp = self.xp
        tiny, max_value, saturates = self._limits_of(spec, after.dtype)
        n = after.size
        zeros_after = int(xp.count_nonzero(after == 0))
        zeros_before = zeros_after if after is before else int(xp.count_nonzero(before == 0))
        abs_after = xp.abs(after)
        amax = float(abs_after.max()) if n else 0.0  # NaN if any NaN
        overflow = 0
        if amax != amax or amax == float("inf"):  # inf or NaN somewhere (rare): count them
            overflow = n - int(xp.count_nonzero(xp.isfinite(after)))
        if clipped is not None:
            overflow += clipped
        elif saturates and amax >= max_value:
            overflow += int(xp.count_nonzero(xp.abs(before) > max_value))
        if decode_scale is not None:
            # float32 product, monotone: a value below the scaled tiny came from a subnormal
            tiny = np.float32(tiny) * xp.asarray(decode_scale, dtype=np.float32)
        s = self.cast_stats
        s["count"][layer, point] += n
        s["zeros"][layer, point] += zeros_after
        s["underflow"][layer, point] += zeros_after - zeros_before  # a cast never un-zeroes
        s["subnormal"][layer, point] += int(xp.count_nonzero(abs_after < tiny)) - zeros_after
        s["overflow"][layer, point] += overflow
        self.amax[layer, point] = max(self.amax[layer, point], amax) if amax == amax else np.nan
        self.field_counts[layer, point] += exponent_fields(before, xp)
        if blocks is not None:
            for name in BLOCK_STATS:
                self.block_stats[name][layer, point] += blocks[name]
            self.scale_fields[layer, point] += blocks["scale_fields"]

    def record_update(self, layer: int, old: np.ndarray, new: np.ndarray,
                      update: np.ndarray) -> None:
        """Statistics of one weight update: ``new = round(old - update)``."""
        xp = self.xp
        moved = update != 0
        u = self.update_stats
        u["update_nonzero"][layer] += int(xp.count_nonzero(moved))
        u["update_lost"][layer] += int(xp.count_nonzero(moved & (new == old)))
        u["update_sq"][layer] += float(xp.vdot(update, update))  # float32 BLAS dot: ample here
        u["weight_sq"][layer] += float(xp.vdot(old, old))


class History:
    """Per-step record of a training run. Fields read as attributes, e.g. ``history.loss``.

    Four tables, each a list of rows turned into arrays on access:

    * every step: ``step, loss``; the loss scaler's ``scale`` (used in this step), ``new_scale``
      (for the next), ``found_inf``, ``skipped``, ``growth_tracker`` (PyTorch/Apex) and
      ``hysteresis`` (DeepSpeed), -1 where the scaler has none; and the culprit:
      ``culprit_layer, culprit_point, culprit_kind``, the first layer and cast point (an index
      into ``points``) whose result held an inf or NaN, and which (an index into CULPRIT_KINDS),
      -1 when none: the step's :class:`~lowprec.scaling.NonFiniteSource`, stored (``culprit(i)``
      gives it back);
    * every evaluation: ``eval_step, train_loss, train_accuracy, test_loss, test_accuracy``;
    * every observed step: ``observed_step``, the cast statistics (``count``, ``zeros``,
      ``underflow``, ``subnormal``, ``overflow``, ``amax``, each (steps, layers, points)),
      ``exp_hist`` (steps, layers, points, HIST_BINS), the update statistics (steps, layers),
      and at block-scaled casts ``blocks``, ``blocks_clipped``, ``blocks_flushed`` (steps,
      layers, points; zero elsewhere) and ``scale_hist`` (steps, layers, points, HIST_BINS);
    * every step of a run with an FP8 scaling recipe: ``fp8_step`` and, per (layer, point) at
      the FP8 cast points (NaN elsewhere), ``fp8_amax`` (max |x| cast), ``fp8_scale`` (the
      per-tensor scale used; NaN for block scaling), ``fp8_clipped`` and ``fp8_flushed`` (the
      fractions of values saturated and flushed to zero), each (steps, layers, points).
    """

    def __init__(self, layers: int, points: tuple, meta: dict | None = None) -> None:
        self.layers = layers
        self.points = tuple(points)  # names of the cast points, in the order of the stats' axis 2
        self.meta = dict(meta or {})  # JSON-able description: policy, configs, dataset
        self._rows = {name: [] for name in STEP_FIELDS + EVAL_FIELDS + OBSERVED_FIELDS + FP8_FIELDS}

    # --- recording ----------------------------------------------------------------------
    def record_step(self, *, culprit: NonFiniteSource | None = None, **values: float) -> None:
        """One step's fields (STEP_FIELDS but the culprit columns) and its culprit, the
        NonFiniteSource of the step's first non-finite cast or None; stored as the columns
        ``culprit_layer``, ``culprit_point`` (index into ``points``) and ``culprit_kind``
        (index into CULPRIT_KINDS), -1 for none."""
        if set(values) & set(_CULPRIT_COLUMNS):
            raise TypeError("record_step takes the culprit as culprit=NonFiniteSource(...) or "
                            f"None, not as {sorted(set(values) & set(_CULPRIT_COLUMNS))}")
        if culprit is not None and not isinstance(culprit, NonFiniteSource):
            raise TypeError(f"culprit must be a lowprec.scaling.NonFiniteSource or None, "
                            f"got {type(culprit).__name__}")
        columns = ((culprit.layer, self.point_index(culprit.cast_point),
                    CULPRIT_KINDS.index(culprit.kind)) if culprit is not None else (-1, -1, -1))
        self._append(STEP_FIELDS, {**values, **dict(zip(_CULPRIT_COLUMNS, columns))})

    def record_eval(self, **values: float) -> None:
        self._append(EVAL_FIELDS, values)

    def record_observation(self, step: int, observer: Observer) -> None:
        values = {"observed_step": step, "exp_hist": observer.exp_hist.astype(np.int32),
                  "amax": observer.amax.copy(), "scale_hist": observer.scale_hist.astype(np.int32)}
        values.update({k: v.copy() for k, v in observer.cast_stats.items()})
        values.update({k: v.copy() for k, v in observer.block_stats.items()})
        values.update({k: v.copy() for k, v in observer.update_stats.items()})
        self._append(OBSERVED_FIELDS, values)

    def record_fp8(self, step: int, stats: dict) -> None:
        """One step's FP8 cast statistics: ``stats`` maps FP8_STATS to (layers, points) arrays."""
        self._append(FP8_FIELDS, {"fp8_step": step, **{f"fp8_{k}": np.asarray(v, np.float32)
                                                       for k, v in stats.items()}})

    def _append(self, fields, values):
        if set(values) != set(fields):
            raise ValueError(f"expected exactly the fields {fields}, got {sorted(values)}")
        for name in fields:
            self._rows[name].append(values[name])

    # --- reading --------------------------------------------------------------------------
    def __getattr__(self, name):
        rows = self.__dict__.get("_rows", {})
        if name not in rows:
            raise AttributeError(f"History has no field {name!r}; fields: {', '.join(rows)}")
        if not rows[name] and name in _STATISTICS:
            self._require(name)
        return self._stack(name)

    def _require(self, name: str):
        """Raise NotRecordedError unless the table holding ``name`` has rows. The index
        columns (``observed_step``, ``fp8_step``) are how to check first: they are never refused."""
        if name in OBSERVED_FIELDS and not self._rows["observed_step"]:
            every = self.meta.get("train", {}).get("observe_every")
            why = ("observation was off (TrainConfig(observe_every=0), the default)" if every == 0
                   else "no step has been observed yet")
            raise NotRecordedError(
                f"{name!r} was not recorded: {why}. Train with TrainConfig(observe_every=N) to "
                f"record the cast-point and update statistics every N steps "
                f"(history.observed_step lists the steps that were observed)")
        if name in FP8_FIELDS and not self._rows["fp8_step"]:
            why = ("this run's policy has no FP8 scaling recipe (policy.fp8_recipe is None)"
                   if len(self._rows["step"]) else "no step has been recorded yet")
            raise NotRecordedError(f"{name!r} was not recorded: {why}; FP8 statistics come from "
                                   f"policies with a recipe, e.g. 'fp8_hybrid'")

    def _stack(self, name):
        rows = self._rows[name]
        if rows:
            return np.stack([np.asarray(r) for r in rows])
        if name in ("exp_hist", "scale_hist"):
            return np.zeros((0, self.layers, len(self.points), HIST_BINS), np.int32)
        if name in CAST_STATS + BLOCK_STATS or name == "amax" or name in FP8_FIELDS[1:]:
            return np.zeros((0, self.layers, len(self.points)),
                            np.float64 if name == "amax" else np.int64)
        if name in UPDATE_STATS:
            return np.zeros((0, self.layers), np.float64)
        return np.zeros(0)

    def __len__(self):
        return len(self._rows["step"])

    def point_index(self, point: str) -> int:
        if point not in self.points:
            raise ValueError(f"unknown cast point {point!r}; valid: {', '.join(self.points)}")
        return self.points.index(point)

    def fraction(self, stat: str, point: str, layer: int | None = None) -> np.ndarray:
        """Per observed step: ``stat`` / ``count`` at ``point`` (all layers pooled if layer is
        None)."""
        if stat not in CAST_STATS[1:]:
            raise ValueError(f"unknown statistic {stat!r}; valid: {', '.join(CAST_STATS[1:])}")
        p = self.point_index(point)
        self._require(stat)
        num, den = getattr(self, stat)[:, :, p], self.count[:, :, p]
        if layer is not None:
            num, den = num[:, layer], den[:, layer]
        else:
            num, den = num.sum(axis=1), den.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return num / den

    def update_lost_fraction(self, layer: int | None = None) -> np.ndarray:
        """Per observed step: share of non-zero updates that rounding discarded."""
        self._require("update_lost")
        lost, nonzero = self.update_lost, self.update_nonzero
        if layer is None:
            lost, nonzero = lost.sum(axis=1), nonzero.sum(axis=1)
        else:
            lost, nonzero = lost[:, layer], nonzero[:, layer]
        with np.errstate(invalid="ignore", divide="ignore"):
            return lost / nonzero

    def update_ratio(self, layer: int) -> np.ndarray:
        """Per observed step: ||update|| / ||weights|| of one layer."""
        self._require("update_sq")
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(self.update_sq[:, layer] / self.weight_sq[:, layer])

    def culprit(self, index: int) -> NonFiniteSource | None:
        """The culprit of the step at row ``index`` (as stored by :meth:`record_step`), or None."""
        layer, point, kind = (int(self._rows[name][index]) for name in _CULPRIT_COLUMNS)
        if point < 0:
            return None
        return NonFiniteSource(layer, self.points[point], CULPRIT_KINDS[kind])

    def culprits(self) -> list:
        """[(step, layer, point name, "inf" or "nan")] for every step where a cast produced an
        inf or NaN: the first such cast of the step, in execution order (its NonFiniteSource's
        fields after the step number)."""
        out = []
        for index, step in enumerate(self._rows["step"]):
            source = self.culprit(index)
            if source is not None:
                out.append((int(step), source.layer, source.cast_point, source.kind))
        return out

    def fp8(self, stat: str, point: str, layer: int) -> np.ndarray:
        """Per step of an FP8-recipe run: ``stat`` (one of FP8_STATS) of the tensor at (layer,
        point)."""
        if stat not in FP8_STATS:
            raise ValueError(f"unknown FP8 statistic {stat!r}; valid: {', '.join(FP8_STATS)}")
        self._require(f"fp8_{stat}")
        return getattr(self, f"fp8_{stat}")[:, layer, self.point_index(point)]

    def pooled(self, stat: str, point: str) -> np.ndarray:
        """Per layer: ``stat`` / ``count`` at ``point`` pooled over all observed steps (NaN
        only for a layer whose cast point saw no values)."""
        if stat not in CAST_STATS[1:]:
            raise ValueError(f"unknown statistic {stat!r}; valid: {', '.join(CAST_STATS[1:])}")
        p = self.point_index(point)
        self._require(stat)
        with np.errstate(invalid="ignore", divide="ignore"):
            return getattr(self, stat)[:, :, p].sum(axis=0) / self.count[:, :, p].sum(axis=0)

    def log2_histogram(self, point: str, layer: int | None = None) -> dict:
        """The values at ``point`` over every observed step, of one layer or of all layers pooled:
        ``counts`` of non-zero values per log2 bin (bin k holds floor(log2|x|) == ``bin_log2[k]``),
        ``zeros`` (exactly zero) and ``amax``: the arguments of
        :func:`lowprec.plots.plot_underflow_histogram`.

        The histograms look at a sample of each tensor (HIST_SAMPLE values), so each (step, layer)
        histogram is scaled to that tensor's count of non-zero values: pooled layers then weigh by
        their size, and the zeros (counted exactly) sit on the same footing.
        """
        p = self.point_index(point)
        self._require("exp_hist")
        layers = slice(None) if layer is None else slice(layer, layer + 1)
        hist = self.exp_hist[:, layers, p].astype(float)  # (steps, layers, bins)
        zeros = self.zeros[:, layers, p]
        nonzero = self.count[:, layers, p] - zeros
        sampled = hist.sum(axis=-1)
        weight = np.divide(nonzero, sampled, out=np.zeros_like(sampled), where=sampled > 0)
        return {"counts": (hist * weight[..., None]).sum(axis=(0, 1)),
                "bin_log2": HIST_MIN_EXP + np.arange(HIST_BINS),
                "zeros": float(zeros.sum()), "amax": float(np.nanmax(self.amax[:, layers, p]))}

    def summary(self) -> dict:
        """The numbers a comparison of runs reports, as plain Python values:

        ``final_loss`` (mean training loss of the last 10% of steps, skipped steps included),
        ``train_accuracy``, ``test_loss``, ``test_accuracy`` (last evaluation; NaN if none),
        ``steps``, ``skipped`` (steps whose update was not applied), ``non_finite`` (steps with
        an inf/NaN gradient), ``final_scale`` (the loss scale after the last step; NaN without a
        scaler), ``first_culprit`` ((step, layer, point, kind) or None), and per layer, pooled
        over the observed steps (NaN when none were): ``act_grad_zero`` (share of activation
        gradients that are zero), ``act_grad_underflow`` (share flushed to zero by their own
        FP16/BF16/FP8 cast) and ``updates_lost`` (share of non-zero weight updates that rounding
        discarded). Those three are None when observation was off (``observe_every=0``): a
        summary reports what there is, where the statistic accessors raise NotRecordedError.
        """
        n = len(self)
        tail = self.loss[n - max(n // 10, 1):] if n else np.zeros(0)
        evals = len(self.eval_step) > 0
        observed = len(self.observed_step) > 0

        def last(field):
            return float(getattr(self, field)[-1]) if evals else float("nan")
        if observed:
            with np.errstate(invalid="ignore", divide="ignore"):
                lost = (self.update_lost.sum(axis=0) / self.update_nonzero.sum(axis=0)).tolist()
            zero = self.pooled("zeros", "activation_grad").tolist()
            flushed = self.pooled("underflow", "activation_grad").tolist()
        else:
            lost = zero = flushed = None
        culprits = self.culprits()
        return {
            "final_loss": float(tail.mean()) if n else float("nan"),
            "train_accuracy": last("train_accuracy"), "test_loss": last("test_loss"),
            "test_accuracy": last("test_accuracy"), "steps": n, "skipped": int(self.skipped.sum()),
            "non_finite": int(self.found_inf.sum()),
            "final_scale": float(self.new_scale[-1]) if n else float("nan"),
            "first_culprit": culprits[0] if culprits else None,
            "act_grad_zero": zero, "act_grad_underflow": flushed, "updates_lost": lost,
        }

    # --- saving ---------------------------------------------------------------------------
    def to_arrays(self) -> dict:
        """Every field as an array, plus the metadata as JSON (what .npz files hold)."""
        arrays = {name: self._stack(name) for name in self._rows}
        arrays["meta"] = np.array(json.dumps({"layers": self.layers, "points": list(self.points),
                                              "meta": self.meta}, sort_keys=True))
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> History:
        try:
            info = json.loads(str(arrays["meta"]))
            history = cls(int(info["layers"]), tuple(info["points"]), info["meta"])
            for name in history._rows:
                if name in _ADDED_BLOCK_FIELDS and name not in arrays:
                    continue  # a History saved before block statistics existed: filled below
                history._rows[name] = list(np.asarray(arrays[name]))
        except KeyError as missing:
            raise ValueError(f"not a lowprec History: field {missing} is missing") from None
        observed = len(history._rows["observed_step"])
        for name in _ADDED_BLOCK_FIELDS:
            if name not in arrays:  # no block-scaled casts were recorded then: zero counts
                history._rows[name] = list(np.zeros_like(history._stack(name)[:0], shape=(
                    observed,) + history._stack(name).shape[1:]))
        lengths = [{len(history._rows[f]) for f in table}
                   for table in (STEP_FIELDS, EVAL_FIELDS, OBSERVED_FIELDS, FP8_FIELDS)]
        if any(len(s) > 1 for s in lengths):
            raise ValueError("not a consistent lowprec History: fields of one table differ in "
                             "length")
        return history

    def save(self, path: str | os.PathLike | IO[bytes]) -> None:
        """Write every field to ``path`` (.npz, compressed; the suffix is added if missing)."""
        np.savez_compressed(_npz_path(path), **self.to_arrays())

    @classmethod
    def load(cls, path: str | os.PathLike | IO[bytes]) -> History:
        """The History saved at ``path`` (with or without the .npz suffix, as in :meth:`save`)."""
        with np.load(_npz_path(path), allow_pickle=False) as data:
            return cls.from_arrays({k: data[k] for k in data.files})


def _npz_path(path):
    """``path`` (a str or os.PathLike) ending in .npz, as numpy.savez writes it; file objects
    pass unchanged."""
    if hasattr(path, "read") or hasattr(path, "write"):
        return path
    path = os.fspath(path)
    return path if path.endswith(".npz") else path + ".npz"


def summarize(histories: Mapping[str, History], layer: int = 0) -> str:
    """A table comparing runs (name -> History), from :meth:`History.summary`: final test
    accuracy and loss, final training loss, skipped steps, final loss scale ('-' without a
    scaler), and at ``layer`` the share of activation gradients that were zero / flushed by
    their cast and of updates lost, pooled over the observed steps ('-' when none were)."""
    header = ("run", "test acc", "test loss", "final train loss", "skipped", "scale",
              f"act-grad zero L{layer}", f"flushed L{layer}", f"updates lost L{layer}")
    rows = [header]

    def number(value, spec):
        return "-" if value is None or value != value else format(value, spec)  # not measured
    for name, h in histories.items():
        s = h.summary()
        for key in ("act_grad_zero", "act_grad_underflow", "updates_lost"):
            s[key] = s[key] or [None] * h.layers  # None: observation was off
        rows.append((name, number(s["test_accuracy"], ".3f"), number(s["test_loss"], ".3g"),
                     number(s["final_loss"], ".3g"), str(s["skipped"]),
                     number(s["final_scale"], "g"),
                     number(s["act_grad_zero"][layer], ".1%"),
                     number(s["act_grad_underflow"][layer], ".1%"),
                     number(s["updates_lost"][layer], ".1%")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
