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

and at each weight update (``w_new = round(w - u)``): ``update_nonzero`` (u != 0),
``update_lost`` (u != 0 but w_new == w: the update vanished in rounding), ``update_sq`` and
``weight_sq`` (sums of squares, for the update-to-weight ratio ||u|| / ||w||).

Observation off (no Observer) costs nothing; on, it costs a few passes over each tensor.
"""
from __future__ import annotations

import json

import numpy as np

HIST_MIN_EXP = -96  # exp_hist[..., k] counts values with floor(log2|x|) == HIST_MIN_EXP + k ...
HIST_BINS = 128  # ... for k in 0..127; the first and last bins also hold everything beyond
HIST_SAMPLE = 4096  # exp_hist looks at most at this many values per tensor (see exponent_fields)
CAST_STATS = ("count", "zeros", "underflow", "subnormal", "overflow")
UPDATE_STATS = ("update_nonzero", "update_lost", "update_sq", "weight_sq")
STEP_FIELDS = ("step", "loss", "scale", "found_inf", "skipped", "culprit_layer", "culprit_point")
EVAL_FIELDS = ("eval_step", "train_loss", "train_accuracy", "test_loss", "test_accuracy")
OBSERVED_FIELDS = ("observed_step",) + CAST_STATS + ("amax", "exp_hist") + UPDATE_STATS


def _field_to_bin():
    """Histogram bin of each float32 exponent field 1..254 (fields 0 and 255 are not counted)."""
    bins = np.clip(np.arange(256) - 127 - HIST_MIN_EXP, 0, HIST_BINS - 1)
    bins.setflags(write=False)
    return bins


_FIELD_TO_BIN = _field_to_bin()


def exponent_fields(x, xp=np):
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


def fold_exponent_fields(counts):
    """exp_hist bins (..., HIST_BINS) from exponent-field counts (..., 256)."""
    counts = np.asarray(counts)
    out = np.zeros(counts.shape[:-1] + (HIST_BINS,), np.int64)
    np.add.at(out, (..., _FIELD_TO_BIN), counts)  # sums the fields that share the end bins
    return out


def exponent_histogram(x, xp=np):
    """Histogram (HIST_BINS,) of floor(log2|x|) over the finite non-zero values of ``x``
    (above 2**-126; sampled for big tensors, see :func:`exponent_fields`)."""
    return fold_exponent_fields(exponent_fields(x, xp))


class Observer:
    """Accumulates the statistics of one training step (sums when a point is seen twice).

    ``points`` names the cast points (lowprec.nn.CAST_POINTS); ``record`` takes their index.
    """

    def __init__(self, layers: int, points: tuple, xp=np):
        self.layers = layers
        self.points = tuple(points)
        self.xp = xp
        self._limits = {}  # Cast -> (tiny, max, saturates): format properties computed once
        self.begin_step()

    def begin_step(self):
        shape = (self.layers, len(self.points))
        self.cast_stats = {name: np.zeros(shape, np.int64) for name in CAST_STATS}
        self.amax = np.zeros(shape)  # largest |value| after the cast (what FP8 recipes scale by)
        self.field_counts = np.zeros(shape + (256,), np.int64)
        self.update_stats = {name: np.zeros(self.layers, np.float64) for name in UPDATE_STATS}

    @property
    def exp_hist(self):
        return fold_exponent_fields(self.field_counts)

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

    def record(self, layer: int, point: int, before, after, spec):
        """Statistics of one cast: ``before`` rounded by ``spec`` gave ``after``."""
        xp = self.xp
        tiny, max_value, saturates = self._limits_of(spec, after.dtype)
        n = after.size
        zeros_after = int(xp.count_nonzero(after == 0))
        zeros_before = zeros_after if after is before else int(xp.count_nonzero(before == 0))
        abs_after = xp.abs(after)
        amax = float(abs_after.max()) if n else 0.0  # NaN if any NaN
        overflow = 0
        if not amax <= max_value:  # inf or NaN somewhere (rare): count them
            overflow = n - int(xp.count_nonzero(xp.isfinite(after)))
        if saturates and amax >= max_value:
            overflow += int(xp.count_nonzero(xp.abs(before) > max_value))
        s = self.cast_stats
        s["count"][layer, point] += n
        s["zeros"][layer, point] += zeros_after
        s["underflow"][layer, point] += zeros_after - zeros_before  # a cast never un-zeroes
        s["subnormal"][layer, point] += int(xp.count_nonzero(abs_after < tiny)) - zeros_after
        s["overflow"][layer, point] += overflow
        self.amax[layer, point] = max(self.amax[layer, point], amax) if amax == amax else np.nan
        self.field_counts[layer, point] += exponent_fields(before, xp)

    def record_update(self, layer: int, old, new, update):
        """Statistics of one weight update: ``new = round(old - update)``."""
        xp = self.xp
        moved = update != 0
        u = self.update_stats
        u["update_nonzero"][layer] += int(xp.count_nonzero(moved))
        u["update_lost"][layer] += int(xp.count_nonzero(moved & (new == old)))
        u["update_sq"][layer] += float(xp.vdot(update, update))  # float32 BLAS dot: plenty for a ratio
        u["weight_sq"][layer] += float(xp.vdot(old, old))


class History:
    """Per-step record of a training run. Fields read as attributes, e.g. ``history.loss``.

    Three tables, each a list of rows turned into arrays on access:

    * every step: ``step, loss, scale, found_inf, skipped, culprit_layer, culprit_point``
      (culprit: the first layer and cast point -- an index into ``points`` -- whose result
      held an inf or NaN in that step, -1 when none);
    * every evaluation: ``eval_step, train_loss, train_accuracy, test_loss, test_accuracy``;
    * every observed step: ``observed_step``, the cast statistics (``count``, ``zeros``,
      ``underflow``, ``subnormal``, ``overflow``, ``amax``, each (steps, layers, points)), ``exp_hist``
      (steps, layers, points, HIST_BINS) and the update statistics (steps, layers).
    """

    def __init__(self, layers: int, points: tuple, meta: dict | None = None):
        self.layers = layers
        self.points = tuple(points)  # names of the cast points, in the order of the stats' axis 2
        self.meta = dict(meta or {})  # JSON-able description: policy, configs, dataset
        self._rows = {name: [] for name in STEP_FIELDS + EVAL_FIELDS + OBSERVED_FIELDS}

    # --- recording ----------------------------------------------------------------------
    def record_step(self, **values):
        self._append(STEP_FIELDS, values)

    def record_eval(self, **values):
        self._append(EVAL_FIELDS, values)

    def record_observation(self, step: int, observer: Observer):
        values = {"observed_step": step, "exp_hist": observer.exp_hist.astype(np.int32),
                  "amax": observer.amax.copy()}
        values.update({k: v.copy() for k, v in observer.cast_stats.items()})
        values.update({k: v.copy() for k, v in observer.update_stats.items()})
        self._append(OBSERVED_FIELDS, values)

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
        return self._stack(name)

    def _stack(self, name):
        rows = self._rows[name]
        if rows:
            return np.stack([np.asarray(r) for r in rows])
        if name == "exp_hist":
            return np.zeros((0, self.layers, len(self.points), HIST_BINS), np.int32)
        if name in CAST_STATS or name == "amax":
            return np.zeros((0, self.layers, len(self.points)), np.float64 if name == "amax" else np.int64)
        if name in UPDATE_STATS:
            return np.zeros((0, self.layers), np.float64)
        return np.zeros(0)

    def __len__(self):
        return len(self._rows["step"])

    def point_index(self, point: str) -> int:
        if point not in self.points:
            raise ValueError(f"unknown cast point {point!r}; valid: {', '.join(self.points)}")
        return self.points.index(point)

    def fraction(self, stat: str, point: str, layer: int | None = None):
        """Per observed step: ``stat`` / ``count`` at ``point`` (all layers pooled if layer is None)."""
        if stat not in CAST_STATS[1:]:
            raise ValueError(f"unknown statistic {stat!r}; valid: {', '.join(CAST_STATS[1:])}")
        p = self.point_index(point)
        num, den = getattr(self, stat)[:, :, p], self.count[:, :, p]
        if layer is not None:
            num, den = num[:, layer], den[:, layer]
        else:
            num, den = num.sum(axis=1), den.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return num / den

    def update_lost_fraction(self, layer: int | None = None):
        """Per observed step: share of non-zero updates that rounding discarded."""
        lost, nonzero = self.update_lost, self.update_nonzero
        if layer is None:
            lost, nonzero = lost.sum(axis=1), nonzero.sum(axis=1)
        else:
            lost, nonzero = lost[:, layer], nonzero[:, layer]
        with np.errstate(invalid="ignore", divide="ignore"):
            return lost / nonzero

    def update_ratio(self, layer: int):
        """Per observed step: ||update|| / ||weights|| of one layer."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(self.update_sq[:, layer] / self.weight_sq[:, layer])

    def culprits(self) -> list:
        """[(step, layer, point name)] for every step where a cast produced an inf or NaN."""
        out = []
        for step, layer, point in zip(self.step, self.culprit_layer, self.culprit_point):
            if point >= 0:
                out.append((int(step), int(layer), self.points[int(point)]))
        return out

    # --- saving ---------------------------------------------------------------------------
    def to_arrays(self) -> dict:
        """Every field as an array, plus the metadata as JSON (what .npz files hold)."""
        arrays = {name: self._stack(name) for name in self._rows}
        arrays["meta"] = np.array(json.dumps({"layers": self.layers, "points": list(self.points),
                                              "meta": self.meta}, sort_keys=True))
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> "History":
        try:
            info = json.loads(str(arrays["meta"]))
            history = cls(int(info["layers"]), tuple(info["points"]), info["meta"])
            for name in history._rows:
                history._rows[name] = list(np.asarray(arrays[name]))
        except KeyError as missing:
            raise ValueError(f"not a lowprec History: field {missing} is missing") from None
        lengths = {len(history._rows[f]) for f in STEP_FIELDS}, {
            len(history._rows[f]) for f in EVAL_FIELDS}, {len(history._rows[f]) for f in OBSERVED_FIELDS}
        if any(len(s) > 1 for s in lengths):
            raise ValueError("not a consistent lowprec History: fields of one table differ in length")
        return history

    def save(self, path):
        """Write every field to ``path`` (.npz, compressed)."""
        np.savez_compressed(path, **self.to_arrays())

    @classmethod
    def load(cls, path) -> "History":
        with np.load(path, allow_pickle=False) as data:
            return cls.from_arrays({k: data[k] for k in data.files})


def summarize(histories: dict, layer: int = 0) -> str:
    """A table comparing runs (name -> History): final test accuracy and loss, mean training
    loss over the last half, skipped steps, final loss scale, and at ``layer`` the share of
    activation gradients that were zero / flushed by their cast, and of updates lost (last
    observed step; '-' when the run was not observed)."""
    header = ("run", "test acc", "test loss", "late train loss", "skipped", "scale",
              f"act-grad zero L{layer}", f"flushed L{layer}", f"updates lost L{layer}")
    rows = [header]
    for name, h in histories.items():
        observed = len(h.observed_step) > 0

        def share(values):
            return f"{values[-1]:.1%}" if observed else "-"
        rows.append((
            name, f"{h.test_accuracy[-1]:.3f}" if len(h.test_accuracy) else "-",
            f"{h.test_loss[-1]:.3g}" if len(h.test_loss) else "-",
            f"{h.loss[len(h) // 2:].mean():.3g}", str(int(h.skipped.sum())), f"{h.scale[-1]:g}",
            share(h.fraction("zeros", "activation_grad", layer) if observed else None),
            share(h.fraction("underflow", "activation_grad", layer) if observed else None),
            share(h.update_lost_fraction(layer) if observed else None)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
