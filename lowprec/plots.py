"""Matplotlib figures. Each function returns a Figure and draws only from its arguments.

The figure command (``python -m lowprec figures``) is the only code that writes them to disk.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from .formats import BF16, E4M3, E5M2, FP16, FP32, FormatLike, as_format

if TYPE_CHECKING:  # annotations only
    from .observe import History

__all__ = ["FORMAT_COLORS", "format_color", "plot_number_lines", "fp16_shares", "tail_scale",
           "plot_underflow_histogram", "plot_underflow_heatmaps", "plot_loss_scale",
           "plot_master_weights", "plot_accumulation_error", "plot_fp8_scaling",
           "plot_accumulation_bounds"]

FORMAT_COLORS = {"fp32": "#4c72b0", "tf32": "#64b5cd", "fp16": "#dd8452", "bf16": "#55a868",
                 "e4m3": "#c44e52", "e5m2": "#8172b3", "e3m2": "#937860", "e2m3": "#da8bc3",
                 "e2m1": "#8c8c8c", "e8m0": "#ccb974"}


def format_color(fmt: FormatLike) -> str:
    return FORMAT_COLORS.get(as_format(fmt).name, "#333333")


def _draw_ranges(ax, formats, label_eps: bool):
    for row, fmt in enumerate(formats):
        fmt = as_format(fmt)
        y = len(formats) - 1 - row
        lo_sub, lo, hi = (math.log2(fmt.smallest_subnormal), math.log2(fmt.tiny),
                          math.log2(fmt.max))
        color = format_color(fmt)
        ax.barh(y, hi - lo, left=lo, height=0.5, color=color)
        if fmt.has_zero and lo_sub < lo:
            ax.barh(y, lo - lo_sub, left=lo_sub, height=0.5, color=color, alpha=0.35, hatch="///",
                    edgecolor="white")
        if label_eps:
            ax.text(hi + 0.6, y, f"max {fmt.max:g}\nmin subnormal 2^{lo_sub:.0f}\n"
                    f"eps 2^-{fmt.mantissa_bits}",
                    va="center", fontsize=8)
    ax.set_yticks(range(len(formats)))
    ax.set_yticklabels([as_format(f).name.upper() for f in reversed(formats)])


def plot_number_lines(formats: tuple = (FP32, BF16, FP16, E5M2, E4M3)) -> Figure:
    """Representable magnitudes of each format on a log2 axis: normal and subnormal ranges, eps."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5),
                                      gridspec_kw={"height_ratios": [1, 1]})
    _draw_ranges(top, formats, label_eps=False)
    top.set_xlim(-155, 135)
    top.set_title("Representable magnitudes (log2 scale): full range")
    from matplotlib.patches import Patch
    top.legend(handles=[Patch(color="#777777", label="normal range"),
                        Patch(facecolor="#777777", alpha=0.35, hatch="///", edgecolor="white",
                              label="subnormal range (fewer significant bits)")],
               loc="lower right", fontsize=8)
    small = [f for f in formats if as_format(f).emax < 100]
    _draw_ranges(bottom, small, label_eps=True)
    bottom.set_xlim(-26, 30)
    bottom.set_title("Zoom on the 16- and 8-bit formats (label: largest value, eps = spacing at 1)")
    for ax in (top, bottom):
        ax.set_xlabel(r"$\log_2 |x|$")
        ax.axvline(0, color="black", lw=0.6, ls=":")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


# round to nearest sends |x| <= 2^-25 (half FP16's smallest subnormal) to 0
FP16_ZERO_LOG2 = int(math.log2(FP16.smallest_subnormal)) - 1


def fp16_shares(counts: ArrayLike, bin_log2: ArrayLike, zeros: float, log2_scale: int = 0) -> dict:
    """What FP16 makes of values scaled by 2**log2_scale, in percent of all values.

    counts: non-zero values per bin, bin k holding floor(log2|x|) == bin_log2[k]; zeros: the
    values that are exactly 0 already. Returns ``percent`` (per bin), ``zero`` (the zero bin),
    ``flushed`` (non-zero values that FP16 rounds to 0: floor(log2|x|) + log2_scale <= -26; a
    value of exactly 2^-25 also rounds to 0 but is invisible in a log2 histogram) and
    ``overflow`` (floor(log2|x|) + log2_scale >= 16: above FP16's max 65504 or in its last binade).
    """
    counts = np.asarray(counts, float)
    bins = np.asarray(bin_log2) + log2_scale
    total = max(counts.sum() + zeros, 1)
    percent = 100 * counts / total
    return {"percent": percent, "zero": 100 * zeros / total,
            "flushed": float(percent[bins < FP16_ZERO_LOG2].sum()),
            "overflow": float(percent[bins >= 16].sum())}


def tail_scale(counts: ArrayLike, bin_log2: ArrayLike, amax: float) -> int:
    """log2 of the loss scale for the second panel: the smallest power of two that lifts the
    smallest observed value to FP16's smallest subnormal 2^-24, but no more than the largest
    2^k with amax * 2^k <= 65504 (so nothing overflows); 0 if nothing needs lifting."""
    lowest = int(np.asarray(bin_log2)[np.nonzero(np.asarray(counts))[0][0]])
    lift = math.ceil(math.log2(FP16.smallest_subnormal)) - lowest
    no_overflow = math.floor(math.log2(FP16.max / amax)) if amax > 0 else lift
    return max(min(lift, no_overflow), 0)


def plot_underflow_histogram(counts: ArrayLike, bin_log2: ArrayLike, zeros: float, amax: float,
                             what: str, log2_scale: int | None = None) -> Figure:
    """Micikevicius et al. 2018 ("Mixed Precision Training", ICLR), Fig. 3: the histogram of
    log2|activation gradient| of an FP32 run, in percent of all values, with a separate bin for
    the exact zeros, FP16's normal and subnormal ranges, and where FP16 rounds values to zero;
    a second panel shows the same values multiplied by a loss scale 2^log2_scale
    (default: :func:`tail_scale`).

    counts, bin_log2: non-zero values per log2 bin (see :func:`fp16_shares`); zeros: values that
    are exactly 0; amax: the largest magnitude; what: names the values (the figure's title).
    """
    chosen = log2_scale is None
    if chosen:
        log2_scale = tail_scale(counts, bin_log2, amax)
    bins = np.asarray(bin_log2, float)
    seen = bins[np.nonzero(np.asarray(counts))[0]]
    lo = min(seen.min(), FP16_ZERO_LOG2 - 2)  # every observed bin on the axis
    hi = max(seen.max() + log2_scale, math.log2(FP16.max)) + 2
    zero_x = lo - 4  # the zero bin sits left of everything, on its own tick
    color = format_color(FP16)
    fig, axes = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
    why = ("the smallest power of two that lifts the smallest value to 2^-24,\ncapped so that "
           if chosen else "\n")
    texts = (("as computed in FP32", 0),
             (f"multiplied by the loss scale 2^{log2_scale}: {why}max|g| * 2^{log2_scale} "
              f"= {amax * 2.0**log2_scale:.3g}" + (" <= 65504 (FP16 max)" if chosen else ""),
              log2_scale))
    for ax, (title, shift) in zip(axes, texts):
        shares = fp16_shares(counts, bins, zeros, shift)
        ax.axvspan(math.log2(FP16.tiny), math.log2(FP16.max), color=color, alpha=0.15, lw=0)
        ax.axvspan(math.log2(FP16.smallest_subnormal), math.log2(FP16.tiny), facecolor=color,
                   alpha=0.3,
                   hatch="///", edgecolor="white", lw=0)
        ax.axvline(FP16_ZERO_LOG2, color="#c44e52", lw=1.5, ls="--")
        ax.bar(bins + shift + 0.5, shares["percent"], width=1.0, color="#333333")
        ax.bar(zero_x, shares["zero"], width=1.0, color="#8172b3")
        top = max(shares["percent"].max(), shares["zero"]) * 1.35
        ax.set_ylim(0, top)
        ax.text(zero_x, shares["zero"] + top * 0.02, f"{shares['zero']:.1f}%", ha="center",
                fontsize=8)
        ax.text(0.01, 0.96, f"become zero in FP16: {shares['flushed']:.1f}% of all values\n"
                f"(zero already: {shares['zero']:.1f}%; overflow: {shares['overflow']:.1f}%)",
                transform=ax.transAxes, va="top", fontsize=9,
                bbox={"facecolor": "white", "edgecolor": "#c44e52", "alpha": 0.9})
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("% of all values")
        ax.grid(axis="y", alpha=0.3)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    axes[0].legend(handles=[
        Patch(facecolor=color, alpha=0.15, label="FP16 normal range (2^-14 .. 65504)"),
        Patch(facecolor=color, alpha=0.3, hatch="///", edgecolor="white",
              label="FP16 subnormal range (2^-24 .. 2^-14)"),
        Line2D([], [], color="#c44e52", ls="--", lw=1.5, label="FP16 rounds |x| <= 2^-25 to zero"),
        Patch(color="#8172b3", label="exactly zero in FP32 (e.g. ReLU)")],
        loc="upper right", fontsize=8)
    ticks = [t for t in range(int(math.ceil(lo / 5) * 5), int(hi) + 1, 5)]
    axes[1].set_xticks([zero_x] + ticks, ["zero"] + [str(t) for t in ticks])
    axes[1].set_xlim(zero_x - 1.5, hi)
    axes[1].set_xlabel(r"$\log_2 |g|$  (left: the separate bin of exact zeros)")
    fig.suptitle(f"Micikevicius et al. 2018, Fig. 3: {what}")
    fig.tight_layout()
    return fig


def plot_underflow_heatmaps(runs: dict, point: str = "activation_grad", stat: str = "underflow",
                            task: str = "", empty_text: str | None = None) -> Figure:
    """Per layer and observed step: share of values a cast flushed to zero, one panel per run.
    A panel whose shares all stay below 0.5% (black on the colour scale) says so in words
    (``empty_text``) with its largest share, since an all-black heatmap reads like missing data."""
    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4.2), squeeze=False,
                             layout="constrained")
    what = "zero (flushed here or upstream)" if stat == "zeros" else "flushed to zero by this cast"
    image = None
    for ax, (label, history) in zip(axes[0], runs.items()):
        shares = np.stack([history.fraction(stat, point, layer) for layer in range(history.layers)])
        steps = history.observed_step
        image = ax.imshow(100 * shares, aspect="auto", origin="lower", cmap="magma", vmin=0,
                          vmax=100,
                          extent=(steps[0] - 0.5, steps[-1] + 0.5, -0.5, history.layers - 0.5),
                          interpolation="nearest")
        peak = 100 * float(np.nanmax(shares, initial=0))
        if peak < 0.5:  # below one step of the colour scale: the panel looks empty, say why
            note = "every share is exactly 0%" if peak == 0 else f"largest share: {peak:.2g}%"
            ax.text(0.5, 0.5, f"{empty_text or f'no {point} value is {what}'}\n({note})",
                    transform=ax.transAxes, ha="center", va="center", fontsize=9, wrap=True,
                    bbox={"facecolor": "white", "alpha": 0.9})
        ax.set_title(label)
        ax.set_xlabel("training step")
        ax.set_ylabel("layer (0 = first)")
        ax.set_yticks(range(history.layers))
    fig.colorbar(image, ax=axes[0].tolist(), label="% of the layer's values")
    fig.suptitle((f"{task}: " if task else "") + f"share of {point} values that are {what}, "
                 "per layer and step")
    return fig


def plot_loss_scale(runs: dict) -> Figure:
    """Loss-scale history of each run, skipped steps marked."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for label, history in runs.items():
        steps, scale, skipped = history.step, history.scale, history.skipped.astype(bool)
        line, = ax.step(steps, np.log2(np.maximum(scale, 2.0**-160)), where="post", label=label)
        ax.plot(steps[skipped], np.log2(scale[skipped]), "x", color=line.get_color(), ms=7,
                label=f"{label}: skipped step ({int(skipped.sum())})")
    ax.set_xlabel("training step")
    ax.set_ylabel(r"$\log_2$ loss scale")
    ax.set_title("Dynamic loss scaling: scale per step, skipped steps marked")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_master_weights(runs: dict, layer: int = 0) -> Figure:
    """Loss curves and the share of weight updates lost to rounding, per run. The first run is
    the reference: drawn last, black and dashed, so that the runs that match it cannot hide it."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for i, (label, history) in enumerate(runs.items()):
        style = {"color": "black", "ls": "--", "lw": 2.2, "zorder": 10} if i == 0 else {"lw": 1.3}
        left.plot(history.step, _smooth(history.loss), label=label, **style)
        if len(history.observed_step):
            right.plot(history.observed_step, 100 * history.update_lost_fraction(layer),
                       marker="o", ms=3, label=label, **style)
    left.set_xlabel("training step")
    left.set_ylabel("training loss (running mean of 20 steps)")
    left.set_title("Loss (dashed black: FP32 master weights)")
    right.set_xlabel("training step")
    right.set_ylabel(f"% of layer-{layer} weight updates lost")
    right.set_title("Lost updates: u != 0 but w - u rounds back to w,\n"
                    "so the weight does not move at all", fontsize=10)
    right.set_ylim(-2, 102)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _smooth(values, window: int = 20):
    values = np.asarray(values, float)
    if len(values) < window:
        return values
    kernel = np.ones(window) / window
    head = np.cumsum(values[:window - 1]) / np.arange(1, window)
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def plot_accumulation_error(ks: list[int], errors: dict, description: str) -> Figure:
    """Median relative error of a dot product against K, one line per accumulation model."""
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for label, values in errors.items():
        ax.loglog(ks, values, "o-", label=label)
    for fmt, ls in ((FP32, ":"), (FP16, "--")):
        unit = fmt.eps / 2
        ax.loglog(ks, [k * unit for k in ks], ls, color="gray", lw=1)
        ax.text(ks[-1], ks[-1] * unit, f"  K·u ({fmt.name.upper()})", color="gray",
                va="center", fontsize=8)
    ax.set_xlabel("K (length of the dot product)")
    ax.set_ylabel("median relative error")
    ax.set_title(f"Accumulation error against K: {description}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_accumulation_bounds(ks: list[int], panels: dict, description: str) -> Figure:
    """Observed dot-product error against K beside its bounds, one panel per input format.

    panels: ``{title: {label: {"observed": [...], "bound": [...], "probabilistic": [...] or
    None}}}`` (:func:`lowprec.demo.accumulation_bounds`): the observed errors as solid lines
    with a marker each, each deterministic bound dashed in the same colour (an infinite bound, which
    says nothing, is left out), a probabilistic bound dotted."""
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 6), squeeze=False)
    from matplotlib.lines import Line2D
    for ax, (title, lines) in zip(axes[0], panels.items()):
        for i, (label, line) in enumerate(lines.items()):
            color = f"C{i}"
            marker = "osD^vP*X"[i % 8]  # lines that nearly coincide stay apart
            ax.loglog(ks, line["observed"], "-", marker=marker, color=color, label=label)
            finite = [(k, v) for k, v in zip(ks, line["bound"]) if math.isfinite(v)]
            if finite:
                ax.loglog(*zip(*finite), "--", color=color, lw=1.2)
            if line.get("probabilistic"):
                ax.loglog(ks, line["probabilistic"], ":", color=color, lw=1.5)
        handles, _ = ax.get_legend_handles_labels()
        styles = [Line2D([], [], color="gray", ls="-", marker="o", label="observed (largest)"),
                  Line2D([], [], color="gray", ls="--", label="deterministic bound")]
        if any(line.get("probabilistic") for line in lines.values()):
            styles.append(Line2D([], [], color="gray", ls=":",
                                 label="probabilistic bound, P >= 0.99 (Higham & Mary 2019)"))
        ax.legend(handles=handles + styles, fontsize=8, loc="upper left")
        ax.set_xlabel("K (length of the dot product)")
        ax.set_ylabel(r"$|\hat s - s| \,/\, \sum\, |a_i b_i|$  (s: the exact dot product)")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"Accumulation error and its bounds against K ({description})")
    fig.tight_layout()
    return fig


def plot_fp8_scaling(history: History, tensors: list[tuple[int, str]],
                     unscaled: History | None = None) -> Figure:
    """Per-tensor amax and scale over the steps of an FP8 delayed-scaling run; with ``unscaled``
    (the same training with scale 1, observed), a third panel compares, per tensor, the share
    of values each cast flushed to zero or saturated, pooled over the observed steps."""
    rows = 3 if unscaled is not None else 2
    fig = plt.figure(figsize=(10, 3.3 * rows))
    grid = fig.add_gridspec(rows, 1)
    top = fig.add_subplot(grid[0])
    middle = fig.add_subplot(grid[1], sharex=top)
    steps = history.fp8_step
    for layer, point in tensors:
        label = f"layer {layer} {point}"
        line, = top.semilogy(steps, history.fp8("amax", point, layer), label=label)
        middle.semilogy(steps, history.fp8("scale", point, layer), color=line.get_color(),
                        label=label)
    top.set_ylabel("amax of the tensor")
    top.set_xlabel("training step")
    top.set_title("FP8 delayed scaling: each tensor's amax, and the scale taken from the amax "
                  "history")
    middle.set_ylabel("scale (fp8 max / history amax)")
    middle.set_xlabel("training step")
    for ax in (top, middle):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, ncol=2)
    if unscaled is not None:
        ax = fig.add_subplot(grid[2])
        x = np.arange(len(tensors))
        bars = (("flushed to zero, unscaled", unscaled, "underflow", "#c44e52", None),
                ("flushed to zero, delayed scaling", history, "underflow", "#4c72b0", None),
                ("saturated, unscaled", unscaled, "overflow", "#c44e52", "///"),
                ("saturated, delayed scaling", history, "overflow", "#4c72b0", "///"))
        for i, (label, run, stat, color, hatch) in enumerate(bars):
            values = [100 * run.pooled(stat, point)[layer] for layer, point in tensors]
            ax.bar(x + (i - 1.5) * 0.2, values, width=0.2, color=color, hatch=hatch,
                   edgecolor="white", alpha=1.0 if hatch is None else 0.6, label=label)
            for xi, v in zip(x + (i - 1.5) * 0.2, values):
                ax.text(xi, v, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, [f"layer {layer} {point}" for layer, point in tensors])
        ax.set_ylabel("% of the tensor's values")
        ax.set_title("Each FP8 cast without a scale (scale 1: fp8_hybrid_unscaled) and with "
                     "delayed scaling (fp8_hybrid):\nshare of values flushed to zero or "
                     "saturated, pooled over the observed steps", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig
