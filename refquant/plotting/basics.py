"""Plots of what quantization does. Every function draws on a given ``ax`` and returns it;
nothing here creates figures or saves files (the CLI, benchmarks and notebooks do).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..core._types import ArrayLike, QRangeLike
from ..core.ranges import qrange as as_qrange
from ..core.uniform import dequantize, fake_quantize
from ..formats import registry

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def plot_levels(ax: Axes, x: ArrayLike, scale: float, zero_point: int = 0, qrange: QRangeLike = "int8", *,
                bins: int = 200, max_lines: int = 64, label: str | None = None, log: bool = False) -> Axes:
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


def plot_transfer(ax: Axes, scale: float, zero_point: int = 0, qrange: QRangeLike = "int8", *, lo: float, hi: float,
                  n: int = 2001, **quant_kw: object) -> Axes:
    """The staircase ``x ↦ fake_quantize(x)`` over [lo, hi], with the identity for reference."""
    x = np.linspace(lo, hi, n)
    ax.plot(x, x, color="0.7", lw=1, ls="--", label="identity")
    ax.plot(x, fake_quantize(x, scale, zero_point, qrange, **quant_kw), color="tab:red", lw=1.2,
            label=quant_kw.get("rounding", "half_even"))
    ax.set_xlabel("x")
    ax.set_ylabel("fake_quantize(x)")
    ax.legend(fontsize=8)
    return ax


def plot_curves(ax: Axes, curves: dict, *, xlabel: str = "bits per element", ylabel: str = "SQNR (dB)",
                marker: str = "o") -> Axes:
    """One line per entry ``name -> (xs, ys)`` (e.g. SQNR against bits per element)."""
    for name, (xs, ys) in curves.items():
        ax.plot(xs, ys, marker=marker, ms=4, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_ranges(ax: Axes, x: ArrayLike, ranges: dict, *, bins: int = 200, log: bool = True) -> Axes:
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


def plot_channel_ranges(ax: Axes, w: ArrayLike, axis: int = 0) -> Axes:
    """Per-channel min and max of ``w`` along ``axis`` as bars: outlier channels stand out."""
    w = np.moveaxis(np.asarray(w, dtype=np.float64), axis, 0).reshape(np.shape(w)[axis], -1)
    c = np.arange(w.shape[0])
    ax.bar(c, w.max(axis=1), color="tab:blue", width=1.0, label="max")
    ax.bar(c, w.min(axis=1), color="tab:orange", width=1.0, label="min")
    ax.set_xlabel("channel")
    ax.set_ylabel("value")
    ax.legend(fontsize=8)
    return ax


def plot_codebook(ax: Axes, x: ArrayLike, levels: ArrayLike, *, bins: int = 200, label: str = "values",
                  color: str = "tab:red", log: bool = True, max_lines: int = 300) -> Axes:
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


# One colour per format family (the registry's ``Format.family``), shared by every figure that compares
# formats (notebooks 03 and 06, the demo); within a family, curves differ by line style.
FAMILY_COLORS = {
    "float": "black",
    "uniform": "tab:blue",
    "ggml": "tab:cyan",  # uniform blocks of 32 with fp16 scales
    "kmeans": "tab:green",
    "log": "tab:red",
    "nf4": "tab:purple",
    "minifloat": "tab:orange",  # fp8_e4m3, fp8_e5m2, fp4_e2m1
}
_LINESTYLES = ["-", "--", ":", "-."]
_MARKERS = ["D", "s", "^", "v", "P", "X", "<", ">", "*"]


def family_of(key: str | None) -> str:
    """The family of ``key``: a family name itself, a registry format name (``"int4"`` → ``"uniform"``,
    ``"q4_0"`` → ``"ggml"``) or None (float weights, as ``Recipe.weight_format``) → ``"float"``."""
    if key is None:
        return "float"
    if key in FAMILY_COLORS:
        return key
    if key in registry.FORMATS:
        return registry.FORMATS[key].family
    raise ValueError(f"family: unknown {key!r}; expected a family ({', '.join(FAMILY_COLORS)}) "
                     f"or a format name ({', '.join(registry.FORMAT_NAMES)})")


def _family(key, where: str) -> str:
    try:
        return family_of(key)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def plot_family_curves(ax: Axes, curves: dict, points: dict | None = None, *, xlabel: str = "bits per weight",
                       ylabel: str = "error", legend: bool = True) -> Axes:
    """Curves ``label -> (family, xs, ys)`` and single points ``label -> (family, x, y)``, coloured by
    family (:data:`FAMILY_COLORS`): the same format has the same colour in every figure. ``family``
    is anything :func:`family_of` takes: a family, a registry format name, or None for float.

    Within a family, successive curves cycle through line styles; every point has its own marker,
    so a legend entry still picks out one recipe. The legend (if ``legend``) sits outside
    the axes, on the right.
    """
    n_lines: dict = {}
    for name, (key, xs, ys) in curves.items():
        fam = _family(key, f"curves[{name!r}]")
        ls = _LINESTYLES[n_lines.get(fam, 0) % len(_LINESTYLES)]
        n_lines[fam] = n_lines.get(fam, 0) + 1
        ax.plot(xs, ys, ls=ls, marker="o", ms=3.5, lw=1.5, color=FAMILY_COLORS[fam], label=name, zorder=2)
    for i, (name, (key, x, y)) in enumerate((points or {}).items()):
        fam = _family(key, f"points[{name!r}]")
        m = _MARKERS[i % len(_MARKERS)]  # one marker per point: coinciding points stay distinguishable
        ax.scatter([x], [y], s=40, marker=m, color=FAMILY_COLORS[fam], edgecolors="k", linewidths=0.5,
                   label=name, zorder=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return ax


def plot_ppl_vs_bits(ax: Axes, curves: dict, points: dict, base: float, *, zoom_ax: Axes | None = None,
                     zoom: tuple = (-0.25, 2.5), legend: bool = True) -> Axes:
    """Perplexity change against float, ``100·(ppl / base − 1)`` %, on a linear axis, against bits per
    weight (scales and codebooks included).

    ``curves`` maps a label to ``(family, bits per weight, perplexities)`` — one recipe family swept
    over bit widths; ``points`` maps a label to ``(family, bits per weight, perplexity)`` — single
    recipes. ``family`` may be the recipe's ``weight_format`` (see :func:`family_of`); it fixes the
    colour (:data:`FAMILY_COLORS`). The float model is the line Δ = 0.

    A percentage axis shows the differences the recipe tables quote (0.1 % vs 2 %) where a log
    perplexity axis would flatten them. Recipes that break (+100 %) and recipes that differ by tenths
    of a percent do not fit one linear axis, so with ``zoom_ax`` the same data are drawn there too,
    limited to ``zoom`` (Δ %, and the bit widths of the points inside it); the one legend then goes
    beside ``zoom_ax``.
    """
    base = float(base)
    if not base > 0:
        raise ValueError(f"base: the float perplexity must be > 0, got {base}")
    lo, hi = (float(v) for v in zoom)
    if not lo < hi:
        raise ValueError(f"zoom: expected (low, high) with low < high, got {zoom}")

    def delta(v):
        return 100.0 * (np.asarray(v, dtype=np.float64) / base - 1.0)

    lines = {k: (f, np.asarray(xs, dtype=np.float64), delta(ys)) for k, (f, xs, ys) in curves.items()}
    dots = {k: (f, float(x), float(delta(y))) for k, (f, x, y) in points.items()}
    for a, leg in [(ax, legend and zoom_ax is None)] + ([(zoom_ax, legend)] if zoom_ax is not None else []):
        a.axhline(0.0, color="k", lw=0.8, label=f"float32 (perplexity {base:.4g})", zorder=1)
        plot_family_curves(a, lines, dots, xlabel="bits per weight (scales included)",
                           ylabel="perplexity vs float32 (%)", legend=leg)
    if zoom_ax is not None:
        xs = np.concatenate([xs[(d >= lo) & (d <= hi)] for _, xs, d in lines.values()]
                            + [np.array([x for _, x, d in dots.values() if lo <= d <= hi])])
        if xs.size:
            zoom_ax.set_xlim(xs.min() - 0.3, xs.max() + 0.3)
        zoom_ax.set_ylim(lo, hi)
    return ax


def plot_layer_attribution(ax: Axes, rows: Sequence[dict], base_perplexity: float, *, sqnr_ax: Axes | None =
                           None) -> Axes:
    """One bar per layer, in the order of ``rows`` (``layer_attribution`` returns forward order): the
    perplexity change vs float (%) when only that layer is quantized. The y axis starts at 0 (or
    below, if a change is negative); each bar carries its value; the largest is drawn darker.

    With ``sqnr_ax`` (e.g. the lower axes of ``subplots(2, 1, sharex=True)``), each layer's output
    SQNR (dB) is drawn there as bars from 0, the lowest darker: the layer with the worst SQNR need
    not be the one that hurts the loss most.
    """
    base = float(base_perplexity)
    if not base > 0:
        raise ValueError(f"base_perplexity must be > 0, got {base}")
    names = [r["layer"].removesuffix(".w") for r in rows]
    inc = np.array([100.0 * (r["perplexity"] / base - 1.0) for r in rows])
    xs = np.arange(len(rows))
    worst = int(np.argmax(inc))
    colors = ["tab:red" if i == worst else "salmon" for i in xs]
    bars = ax.bar(xs, inc, color=colors, edgecolor="k", linewidth=0.4)
    ax.bar_label(bars, labels=[f"{v:+.2f}" if round(v, 2) else "0.00" for v in inc], fontsize=7, padding=2)
    lo, hi = min(float(inc.min()), 0.0), max(float(inc.max()), 0.0)
    span = hi - lo or 1.0
    ax.set_ylim(lo - 0.08 * span if lo < 0 else 0.0, hi + 0.15 * span)  # from 0: bar heights compare
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_ylabel("perplexity vs float32 (%)")
    for a in (ax,) if sqnr_ax is None else (ax, sqnr_ax):
        a.set_xticks(xs)
        a.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        a.set_xlim(-0.6, len(rows) - 0.4)
    if sqnr_ax is not None:
        s = np.array([r["output_sqnr_db"] for r in rows])
        low = int(np.argmin(s))
        sb = sqnr_ax.bar(xs, s, color=["tab:blue" if i == low else "lightsteelblue" for i in xs],
                         edgecolor="k", linewidth=0.4)
        sqnr_ax.bar_label(sb, labels=[f"{v:.1f}" for v in s], fontsize=7, padding=2)
        sqnr_ax.set_ylim(0.0, float(s.max()) * 1.15)
        sqnr_ax.set_ylabel("layer output SQNR (dB)")
    return ax


def plot_sqnr_vs_bits(ax: Axes, curves: dict, *, db_per_bit: float = 20 * np.log10(2), xlabel: str = "bits") -> Axes:
    """Measured SQNR curves ``name -> (bits, sqnr_db)`` over the rule ``SQNR ≈ db_per_bit · b``.

    The rule (6.02 dB per bit: each bit halves the step, ``20·log10 2``; exact for uniform data and
    many bits) is a wide pale band beneath the data, so a curve that follows it stays visible
    inside the band and a curve below it is plainly parallel and shifted.
    """
    xs = np.concatenate([np.asarray(b, dtype=np.float64) for b, _ in curves.values()])
    lo, hi = float(xs.min()), float(xs.max())
    ax.plot([lo, hi], [db_per_bit * lo, db_per_bit * hi], color="0.8", lw=7, solid_capstyle="butt", zorder=1,
            label=f"{db_per_bit:.2f} dB per bit")
    for name, (b, s) in curves.items():
        ax.plot(b, s, marker="o", ms=4, lw=1.3, label=name, zorder=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("SQNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_stochastic_transfer(ax: Axes, scale: float, zero_point: int = 0, qrange: QRangeLike = "int8", *, lo: float,
                             hi: float, rng: np.random.Generator, n: int = 801, n_draws: int = 1000) -> Axes:
    """Stochastic rounding is unbiased: its mean over ``n_draws`` independent roundings of each
    ``x`` in [lo, hi] lies on the identity (inside the clipping range), while one draw scatters
    between the two neighbouring levels and round-to-nearest is a staircase.

    Draws: ``fake_quantize(x, ..., rounding="stochastic", rng=rng)`` on an ``(n_draws, n)`` array.
    """
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")
    x = np.linspace(lo, hi, n)
    draws = fake_quantize(np.broadcast_to(x, (n_draws, n)), scale, zero_point, qrange, rounding="stochastic",
                          rng=rng)
    ax.plot(x, x, color="0.85", lw=6, solid_capstyle="butt", label="identity")  # a band: the mean runs inside it
    ax.plot(x, fake_quantize(x, scale, zero_point, qrange), color="0.35", lw=1, label="round to nearest")
    step = max(1, n // 200)
    ax.scatter(x[::step], draws[0, ::step], s=9, color="tab:orange", alpha=0.7, lw=0, label="one stochastic draw")
    ax.plot(x, draws.mean(axis=0), color="tab:red", lw=1.5, label=f"mean of {n_draws} draws")
    ax.set_xlabel("x")
    ax.set_ylabel("fake_quantize(x)")
    ax.legend(fontsize=8)
    return ax


def plot_dot_chart(ax: Axes, rows: Sequence[tuple], *, xlabel: str = "MSE", log: bool = True) -> Axes:
    """Rows ``(group, label, value, family)`` top to bottom in the order given: one dot per row,
    coloured by family (anything :func:`family_of` takes), groups (e.g. equal bits per weight) separated by a
    line and named on the right. For comparing formats at equal cost without a long legend.
    """
    rows = list(rows)
    ys = np.arange(len(rows))[::-1]
    for y, (group, label, value, key) in zip(ys, rows):
        c = FAMILY_COLORS[_family(key, f"rows[{label!r}]")]
        ax.plot([value], [y], "o", ms=7, color=c, markeredgecolor="k", markeredgewidth=0.5)
        ax.axhline(y, color="0.9", lw=0.6, zorder=0)
    ax.set_yticks(ys)
    ax.set_yticklabels([r[1] for r in rows], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    groups = [r[0] for r in rows]
    for i, g in enumerate(groups):
        if i == 0 or g != groups[i - 1]:
            end = i
            while end + 1 < len(groups) and groups[end + 1] == g:
                end += 1
            y_top, y_bottom = ys[i], ys[end]
            ax.text(1.01, (y_top + y_bottom) / 2, str(g), transform=ax.get_yaxis_transform(), va="center",
                    fontsize=8, color="0.3")
            if i > 0:
                ax.axhline(y_top + 0.5, color="0.5", lw=0.8)
    if log:
        ax.set_xscale("log")
    ax.margins(x=0.06)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    return ax


def plot_code_histogram(ax: Axes, codes: ArrayLike, mask: ArrayLike | None = None, *, label: str = "all",
                        mask_label: str = "selected", mask_color: str = "tab:red") -> Axes:
    """Histogram of integer ``codes`` with one bin per code (edges at ``k ± 0.5``: no aliasing
    between bins and grid); with a boolean ``mask``, the selected codes drawn over it."""
    codes = np.asarray(codes)
    if not np.issubdtype(codes.dtype, np.integer):
        raise TypeError(f"codes must be integers, got dtype {codes.dtype}")
    edges = np.arange(int(codes.min()), int(codes.max()) + 2) - 0.5
    ax.hist(codes, bins=edges, color="0.75", label=label)
    if mask is not None:
        ax.hist(codes[np.asarray(mask, dtype=bool)], bins=edges, color=mask_color, label=mask_label)
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    return ax
