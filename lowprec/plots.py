"""Matplotlib figures. Each function returns a Figure and draws only from its arguments.

The figure command (``python -m lowprec figures``) is the only code that writes them to disk.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from .formats import BF16, E4M3, E5M2, FP16, FP32, as_format

FORMAT_COLORS = {"fp32": "#4c72b0", "tf32": "#64b5cd", "fp16": "#dd8452", "bf16": "#55a868",
                 "e4m3": "#c44e52", "e5m2": "#8172b3", "e3m2": "#937860", "e2m3": "#da8bc3",
                 "e2m1": "#8c8c8c", "e8m0": "#ccb974"}


def format_color(fmt) -> str:
    return FORMAT_COLORS.get(as_format(fmt).name, "#333333")


def _draw_ranges(ax, formats, label_eps: bool):
    for row, fmt in enumerate(formats):
        fmt = as_format(fmt)
        y = len(formats) - 1 - row
        lo_sub, lo, hi = (math.log2(fmt.smallest_subnormal), math.log2(fmt.tiny), math.log2(fmt.max))
        color = format_color(fmt)
        ax.barh(y, hi - lo, left=lo, height=0.5, color=color)
        if fmt.has_zero and lo_sub < lo:
            ax.barh(y, lo - lo_sub, left=lo_sub, height=0.5, color=color, alpha=0.35, hatch="///",
                    edgecolor="white")
        if label_eps:
            ax.text(hi + 0.6, y, f"max {fmt.max:g}\nmin subnormal 2^{lo_sub:.0f}\neps 2^-{fmt.mantissa_bits}",
                    va="center", fontsize=8)
    ax.set_yticks(range(len(formats)))
    ax.set_yticklabels([as_format(f).name.upper() for f in reversed(formats)])


def plot_number_lines(formats=(FP32, BF16, FP16, E5M2, E4M3)):
    """Representable magnitudes of each format on a log2 axis: normal and subnormal ranges, eps."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), gridspec_kw={"height_ratios": [1, 1]})
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


def _shade_format(ax, fmt, xlim):
    """Shade fmt's normal range, and mark with a dashed line where its values flush to zero."""
    fmt = as_format(fmt)
    color = format_color(fmt)
    lo_sub, lo, hi = math.log2(fmt.smallest_subnormal), math.log2(fmt.tiny), math.log2(fmt.max)
    ax.axvspan(max(lo, xlim[0]), min(hi, xlim[1]), color=color, alpha=0.08, lw=0)
    zero_below = lo_sub - 1  # below half the smallest subnormal, round-to-nearest gives 0
    label = f"{fmt.name.upper()}: normal range shaded; zero below 2^{zero_below:.0f}"
    if zero_below >= xlim[0]:
        ax.axvline(zero_below, color=color, lw=1.5, ls="--", label=label)
    else:  # the threshold is off the axis: a legend entry only, no line at the edge
        ax.plot([], [], color=color, lw=1.5, ls="--", label=label + " (off the axis)")


def plot_underflow_histogram(exp_hist, bin_log2, layer_name: str, scale: float,
                             formats=(FP16, BF16, E5M2, E4M3), xlim=(-50, 20)):
    """Micikevicius et al. 2018, Fig. 3 style: log2|gradient| histogram with format ranges.

    exp_hist: counts per bin, bin k holding values with floor(log2|x|) == bin_log2[k].
    scale: the loss scale shown in the second panel (the histogram moves right by log2(scale)).
    """
    counts = np.asarray(exp_hist, float)
    share = 100 * counts / max(counts.sum(), 1)
    bins = np.asarray(bin_log2, float)
    shift = math.log2(scale)
    fig, axes = plt.subplots(2, 1, figsize=(10, 7.5), sharex=True)
    for ax, offset, title in ((axes[0], 0.0, "without loss scaling"),
                              (axes[1], shift, f"loss scaled by 2^{shift:.0f}")):
        for fmt in formats:
            _shade_format(ax, fmt, xlim)
        ax.bar(bins + offset + 0.5, share, width=1.0, color="#333333", label=layer_name)
        fp16_zero = share[bins + offset < math.log2(FP16.smallest_subnormal) - 1].sum()
        ax.set_title(f"{title}: {fp16_zero:.1f}% of the values would become zero in FP16")
        ax.set_ylabel("% of non-zero values")
        ax.set_ylim(0, share.max() * 1.6)
        ax.legend(loc="upper left", fontsize=7.5)
    axes[1].set_xlabel(r"$\log_2 |\mathrm{activation\ gradient}|$")
    axes[1].set_xlim(*xlim)
    fig.tight_layout()
    return fig


def plot_underflow_heatmaps(runs: dict, point: str = "activation_grad", stat: str = "underflow"):
    """Per layer and observed step: share of values a cast flushed to zero, one panel per run."""
    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4.2), squeeze=False,
                             layout="constrained")
    image = None
    for ax, (label, history) in zip(axes[0], runs.items()):
        shares = np.stack([history.fraction(stat, point, layer) for layer in range(history.layers)])
        steps = history.observed_step
        image = ax.imshow(100 * shares, aspect="auto", origin="lower", cmap="magma", vmin=0, vmax=100,
                          extent=(steps[0] - 0.5, steps[-1] + 0.5, -0.5, history.layers - 0.5),
                          interpolation="nearest")
        ax.set_title(label)
        ax.set_xlabel("training step")
        ax.set_ylabel("layer (0 = first)")
        ax.set_yticks(range(history.layers))
    what = "zero (flushed here or upstream)" if stat == "zeros" else "flushed to zero by this cast"
    fig.colorbar(image, ax=axes[0].tolist(), label="% of the layer's values")
    fig.suptitle(f"Share of {point} values that are {what}, per layer and step")
    return fig


def plot_loss_scale(runs: dict):
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


def plot_master_weights(runs: dict, layer: int = 0):
    """Loss curves and the share of weight updates lost to rounding, per run."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (label, history) in enumerate(runs.items()):
        style = {"lw": 3.5, "alpha": 0.5} if i == 0 else {"lw": 1.2}  # the reference, drawn wide
        line, = left.plot(history.step, _smooth(history.loss), label=label, **style)
        if len(history.observed_step):
            right.plot(history.observed_step, 100 * history.update_lost_fraction(layer), "o-",
                       ms=3, color=line.get_color(), label=label, **style)
    left.set_xlabel("training step")
    left.set_ylabel("training loss (running mean of 20 steps)")
    left.set_title("Loss: nearest rounding stalls, the others learn alike")
    right.set_xlabel("training step")
    right.set_ylabel(f"% of layer-{layer} updates lost (w + u rounds back to w)")
    right.set_title("Lost updates")
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


def plot_accumulation_error(ks, errors: dict, description: str):
    """Median relative error of a dot product against K, one line per accumulation model."""
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for label, values in errors.items():
        ax.loglog(ks, values, "o-", label=label)
    for fmt, ls in ((FP32, ":"), (FP16, "--")):
        unit = fmt.eps / 2
        ax.loglog(ks, [k * unit for k in ks], ls, color="gray", lw=1)
        ax.text(ks[-1], ks[-1] * unit, f"  K·u ({fmt.name.upper()})", color="gray", va="center", fontsize=8)
    ax.set_xlabel("K (length of the dot product)")
    ax.set_ylabel("median relative error")
    ax.set_title(f"Accumulation error against K: {description}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_fp8_scaling(history, tensors):
    """Per-tensor amax and scale over the steps of an FP8 delayed-scaling run."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    steps = history.fp8_step
    for layer, point in tensors:
        label = f"layer {layer} {point}"
        line, = top.semilogy(steps, history.fp8("amax", point, layer), label=label)
        bottom.semilogy(steps, history.fp8("scale", point, layer), color=line.get_color(), label=label)
    top.set_ylabel("amax of the tensor")
    top.set_title("FP8 delayed scaling: each tensor's amax, and the scale taken from the amax history")
    bottom.set_ylabel("scale (fp8 max / history amax)")
    bottom.set_xlabel("training step")
    for ax in (top, bottom):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig
