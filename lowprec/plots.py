"""Matplotlib figures. Each function returns a Figure and draws only from its arguments.

The figure command (``python -m lowprec figures``) is the only code that writes them to disk.
"""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg") if matplotlib.get_backend().lower() == "agg" else None
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .formats import BF16, E4M3, E5M2, FP16, FP32, as_format  # noqa: E402

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
        ax.barh(y, hi - lo, left=lo, height=0.5, color=color, label="normal range" if row == 0 else None)
        if fmt.has_zero and lo_sub < lo:
            ax.barh(y, lo - lo_sub, left=lo_sub, height=0.5, color=color, alpha=0.35, hatch="///",
                    edgecolor="white", label="subnormal range" if row == 0 else None)
        if label_eps:
            ax.text(hi + 1, y, f"max {fmt.max:.4g}\neps 2^{-fmt.mantissa_bits}", va="center", fontsize=8)
    ax.set_yticks(range(len(formats)))
    ax.set_yticklabels([as_format(f).name.upper() for f in reversed(formats)])


def plot_number_lines(formats=(FP32, BF16, FP16, E5M2, E4M3)):
    """Representable magnitudes of each format on a log2 axis: normal and subnormal ranges, eps."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), gridspec_kw={"height_ratios": [1, 1]})
    _draw_ranges(top, formats, label_eps=False)
    top.set_xlim(-155, 135)
    top.set_title("Representable magnitudes (log2 scale): full range")
    top.legend(loc="lower right", fontsize=8)
    small = [f for f in formats if as_format(f).emax < 100]
    _draw_ranges(bottom, small, label_eps=True)
    bottom.set_xlim(-26, 26)
    bottom.set_title("Zoom on the 16- and 8-bit formats (label: largest value, eps = spacing at 1)")
    for ax in (top, bottom):
        ax.set_xlabel(r"$\log_2 |x|$")
        ax.axvline(0, color="black", lw=0.6, ls=":")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
