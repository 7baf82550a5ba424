"""Plots of what quantization does. Every function draws on a given ``ax`` and returns it;
nothing here creates figures or saves files (the CLI, benchmarks and notebooks do).
"""
from __future__ import annotations

import numpy as np

from .core.ranges import qrange as as_qrange
from .core.uniform import dequantize, fake_quantize


def plot_levels(ax, x, scale, zero_point=0, qrange="int8", *, bins: int = 200, max_lines: int = 64, label=None,
                log: bool = False):
    """Histogram of ``x`` with the representable values ``scale·(q − zero_point)`` drawn over it.

    The clipping range [scale·(qmin−zp), scale·(qmax−zp)] is shaded; with more than ``max_lines``
    levels only the range is drawn (the lines would merge).
    """
    r = as_qrange(qrange)
    x = np.asarray(x, dtype=np.float64).ravel()
    ax.hist(x, bins=bins, color="0.6", label=label or "values", log=log)
    lo = float(dequantize(np.array([r.qmin], dtype=np.int64), scale, zero_point)[0])
    hi = float(dequantize(np.array([r.qmax], dtype=np.int64), scale, zero_point)[0])
    ax.axvspan(lo, hi, color="tab:blue", alpha=0.08, label=f"{r.name} range")
    if r.levels <= max_lines:
        levels = dequantize(np.arange(r.qmin, r.qmax + 1, dtype=np.int64), scale, zero_point)
        for i, v in enumerate(levels):
            ax.axvline(v, color="tab:blue", lw=0.8, alpha=0.7, label="levels" if i == 0 else None)
    ax.set_xlabel("value")
    ax.set_ylabel("count (log)" if log else "count")
    ax.legend(loc="upper right", fontsize=8)
    return ax


def plot_transfer(ax, scale, zero_point=0, qrange="int8", *, lo: float, hi: float, n: int = 2001, **quant_kw):
    """The staircase ``x ↦ fake_quantize(x)`` over [lo, hi], with the identity for reference."""
    x = np.linspace(lo, hi, n)
    ax.plot(x, x, color="0.7", lw=1, ls="--", label="identity")
    ax.plot(x, fake_quantize(x, scale, zero_point, qrange, **quant_kw), color="tab:red", lw=1.2,
            label=quant_kw.get("rounding", "half_even"))
    ax.set_xlabel("x")
    ax.set_ylabel("fake_quantize(x)")
    ax.legend(fontsize=8)
    return ax


def plot_curves(ax, curves: dict, *, xlabel: str = "bits per element", ylabel: str = "SQNR (dB)", marker="o"):
    """One line per entry ``name -> (xs, ys)`` (e.g. SQNR against bits per element)."""
    for name, (xs, ys) in curves.items():
        ax.plot(xs, ys, marker=marker, ms=4, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_ranges(ax, x, ranges: dict, *, bins: int = 200, log: bool = True):
    """Histogram of ``x`` (log counts) with each calibrator's ``name -> (lo, hi)`` as a pair of lines."""
    x = np.asarray(x, dtype=np.float64).ravel()
    ax.hist(x, bins=bins, color="0.6", log=log)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for (name, (lo, hi)), c in zip(ranges.items(), colors * 4):
        ax.axvline(float(lo), color=c, lw=1.2, label=f"{name} [{float(lo):.3g}, {float(hi):.3g}]")
        ax.axvline(float(hi), color=c, lw=1.2)
    ax.set_xlabel("value")
    ax.set_ylabel("count" + (" (log)" if log else ""))
    ax.legend(fontsize=8)
    return ax


def plot_channel_ranges(ax, w, axis: int = 0):
    """Per-channel min and max of ``w`` along ``axis`` as bars: outlier channels stand out."""
    w = np.moveaxis(np.asarray(w, dtype=np.float64), axis, 0).reshape(np.shape(w)[axis], -1)
    c = np.arange(w.shape[0])
    ax.bar(c, w.max(axis=1), color="tab:blue", width=1.0, label="max")
    ax.bar(c, w.min(axis=1), color="tab:orange", width=1.0, label="min")
    ax.set_xlabel("channel")
    ax.set_ylabel("value")
    ax.legend(fontsize=8)
    return ax


def plot_codebook(ax, x, levels, *, bins: int = 200, label: str = "values", color: str = "tab:red",
                  log: bool = True, max_lines: int = 300):
    """Histogram of ``x`` with a codebook's levels as vertical lines (non-uniform grids included)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    ax.hist(x, bins=bins, color="0.6", log=log, label=label)
    lv = np.asarray(levels, dtype=np.float64).ravel()
    for i, v in enumerate(lv[:: max(1, lv.size // max_lines)]):
        ax.axvline(v, color=color, lw=0.7, alpha=0.8, label=f"{lv.size} levels" if i == 0 else None)
    ax.set_xlabel("value")
    ax.set_ylabel("count (log)" if log else "count")
    ax.legend(loc="upper right", fontsize=8)
    return ax


def plot_layer_attribution(ax, rows, base_perplexity: float):
    """Bars: perplexity increase (%) when only that layer is quantized; line: its output SQNR (dB)."""
    names = [r["layer"].replace(".w", "") for r in rows]
    inc = [100 * (r["perplexity"] / base_perplexity - 1) for r in rows]
    xs = np.arange(len(rows))
    ax.bar(xs, inc, color="tab:red", alpha=0.75, label="perplexity increase (%)")
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("perplexity increase (%)")
    ax2 = ax.twinx()
    ax2.plot(xs, [r["output_sqnr_db"] for r in rows], "o-", color="tab:blue", label="output SQNR (dB)")
    ax2.set_ylabel("layer output SQNR (dB)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")
    return ax
