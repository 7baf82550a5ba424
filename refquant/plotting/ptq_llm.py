"""Plots of LLM post-training algorithms (notebook 08): GPTQ, AWQ, SmoothQuant, LLM.int8().

Every function draws on ``ax`` and returns it; none creates a figure or saves a file. They draw
numbers the caller computed (errors, losses, per-channel statistics): what the numbers mean is in
:mod:`refquant.ptq.gptq`, :mod:`refquant.ptq.awq`, :mod:`refquant.ptq.smoothquant` and
:mod:`refquant.ptq.llm_int8`.

- :func:`plot_error_plane` — weight error against output error, one point per method (RTN has the
  smaller weight error, GPTQ the smaller output error).
- :func:`plot_error_concentration` — where a layer's output error comes from: the input channels
  sorted by ``H_jj``, cumulative shares of the weight error and of the output error's diagonal part.
- :func:`plot_column_losses` — GPTQ's loss per column (cumulative), against RTN's in the same frame.
- :func:`plot_channel_magnitude` — one statistic per input channel (mean |x|, max |x|) with chosen
  channels highlighted (AWQ's salient 1 %, LLM.int8()'s outlier columns) and an optional threshold.
- :func:`plot_alpha_search` — a loss against the migration strength α (AWQ's grid, SmoothQuant's sweep).
- :func:`plot_act_weight_ranges` — per-channel activation and weight maxima (SmoothQuant before / after).
- :func:`plot_outlier_threshold` — LLM.int8()'s output error against its outlier threshold.
- :func:`plot_method_comparison` — the rows of ``refquant llm compare`` as a bar per method.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from ..core._checks import float_array
from ..core._types import ArrayLike

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_error_plane", "plot_error_concentration", "plot_column_losses", "plot_channel_magnitude",
           "plot_alpha_search", "plot_act_weight_ranges", "plot_outlier_threshold", "plot_method_comparison"]

_COLORS = ("tab:gray", "tab:blue", "tab:green", "tab:red", "tab:purple", "tab:orange", "tab:brown", "tab:pink",
           "tab:olive", "tab:cyan")


def _vector(x: ArrayLike, name: str, *, nonnegative: bool = False, size: int | None = None) -> np.ndarray:
    """A 1-D, non-empty, finite float64 array (optionally ≥ 0 and of a given length)."""
    a = float_array(x, name).astype(np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: must be finite (got ±Inf)")
    if nonnegative and np.any(a < 0):
        raise ValueError(f"{name}: must be >= 0, got a minimum of {a.min():g}")
    if size is not None and a.size != size:
        raise ValueError(f"{name}: expected {size} values (one per entry of the first array), got {a.size}")
    return a


def _mapping(m: Mapping, name: str) -> dict:
    if not isinstance(m, Mapping) or not m:
        raise ValueError(f"{name}: expected a non-empty mapping label -> values, got {type(m).__name__}"
                         f"{'' if not isinstance(m, Mapping) else ' (empty)'}")
    return dict(m)


def plot_error_plane(ax: Axes, points: Mapping[str, tuple[float, float]], *, log: bool = True,
                     colors: Mapping[str, str] | None = None, xlabel: str = "weight error ‖ΔW‖² / ‖W‖²",
                     ylabel: str = "output error ‖ΔW X‖² / ‖W X‖²") -> Axes:
    """One labelled marker per method at ``(weight error, output error)``.

    Parameters
    ----------
    ax : matplotlib Axes
    points : mapping label -> (weight_error, output_error)
        Both > 0 with ``log=True`` (relative squared errors, e.g. ‖Ŵ − W‖²_F / ‖W‖²_F and
        ‖(Ŵ − W) Xᵀ‖²_F / ‖W Xᵀ‖²_F on held-out inputs X).
    log : bool
        Logarithmic axes (the errors of 3- and 4-bit methods span decades).
    colors : mapping label -> matplotlib colour, or None
        E.g. one colour per method across bit widths; labels not in it (or None) cycle a palette.

    Returns
    -------
    ax, with one ``Line2D`` per point and its label written beside it.
    """
    pts = _mapping(points, "points")
    if colors is not None and not isinstance(colors, Mapping):
        raise ValueError(f"colors: expected a mapping label -> colour or None, got {type(colors).__name__}")
    for i, (label, pair) in enumerate(pts.items()):
        xy = _vector(np.asarray(pair, dtype=np.float64), f"points[{label!r}]", nonnegative=True, size=2)
        if log and np.any(xy == 0):
            raise ValueError(f"points[{label!r}]: a log plot needs errors > 0, got {tuple(xy)}")
        c = (colors or {}).get(label, _COLORS[i % len(_COLORS)])
        ax.plot([xy[0]], [xy[1]], "o", ms=7, color=c, markeredgecolor="k", markeredgewidth=0.5, label=label)
        ax.annotate(label, xy, xytext=(6, 4), textcoords="offset points", fontsize=8, color=c)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    return ax


def plot_error_concentration(ax: Axes, h_diag: ArrayLike, weight_err: ArrayLike) -> Axes:
    """Cumulative shares of a layer's weight error and output error over its input channels.

    With ΔW = Ŵ − W (rows, K) and the Hessian H = (2/n) Σ x xᵀ of the inputs, the layer's output
    error is ½·tr(ΔW H ΔWᵀ) = (1/n) Σ_x ‖ΔW x‖², whose diagonal part is ½ Σ_j H_jj e_j with
    e_j = Σ_r ΔW_rj² the weight error of input channel j. Channels are sorted by H_jj (mean x_j²)
    descending; the curves are the shares of Σ e_j (weight error) and of Σ H_jj e_j (output error,
    diagonal part) carried by the first channels, against the fraction of channels (log axis).
    A round-to-nearest quantizer spreads e_j evenly; H_jj does not.

    Parameters
    ----------
    h_diag : (K,) array, >= 0 — diag(H)
    weight_err : (K,) array, >= 0 — e_j, not all zero

    Returns
    -------
    ax, with three lines: weight error share, output error share and the uniform diagonal.
    """
    h = _vector(h_diag, "h_diag", nonnegative=True)
    e = _vector(weight_err, "weight_err", nonnegative=True, size=h.size)
    if not e.any() or not (h * e).any():
        raise ValueError("weight_err: all zero (or zero wherever h_diag is not): no error to share out")
    order = np.argsort(-h, kind="stable")
    frac = np.arange(1, h.size + 1) / h.size
    ax.plot(frac, np.cumsum(e[order]) / e.sum(), color="tab:blue", lw=1.5, label="weight error Σ_r ΔW_rj²")
    ax.plot(frac, np.cumsum((h * e)[order]) / (h * e).sum(), color="tab:red", lw=1.5,
            label="output error, diagonal part H_jj Σ_r ΔW_rj²")
    ax.plot(frac, frac, color="0.7", ls="--", lw=1, label="uniform")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("fraction of input channels, largest H_jj (∝ mean x_j²) first")
    ax.set_ylabel("cumulative share")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    return ax


def plot_column_losses(ax: Axes, losses: Mapping[str, ArrayLike], *, cumulative: bool = True,
                       group_size: int = 0) -> Axes:
    """Loss per quantized column, one line per method, in the order the columns are quantized.

    GPTQ's loss of column j is ``½ Σ_r E_rj²`` with E = (W − Ŵ) U⁻¹, U the upper Cholesky factor
    of H⁻¹ (the reference's ``Losses``; the columns' losses add up to ½ tr(ΔW H ΔWᵀ)); the same
    decomposition applies to any Ŵ, so RTN's columns can be drawn in the same frame.

    Parameters
    ----------
    losses : mapping label -> (K,) array >= 0, all of one length
    cumulative : bool
        Draw the running sum (the objective after the first j columns) instead of each column's loss.
    group_size : int
        > 0 draws a faint vertical line at every group boundary.

    Returns
    -------
    ax, with one line per method (plus the group lines).
    """
    curves = _mapping(losses, "losses")
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 0:
        raise ValueError(f"group_size must be an int >= 0, got {group_size!r}")
    K = None
    for i, (label, v) in enumerate(curves.items()):
        a = _vector(v, f"losses[{label!r}]", nonnegative=True, size=K)
        K = a.size
        ax.plot(np.arange(K), np.cumsum(a) if cumulative else a, lw=1.2, color=_COLORS[(i + 1) % len(_COLORS)],
                label=f"{label} (total {a.sum():.3g})")
    if group_size:
        for g in range(group_size, K, group_size):
            ax.axvline(g, color="0.9", lw=0.8, zorder=0)
    ax.set_xlabel("column, in the order quantized")
    ax.set_ylabel("cumulative loss ½ Σ_{i≤j} ‖E_:,i‖²" if cumulative else "column loss ½ ‖E_:,j‖²")
    if not cumulative:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_channel_magnitude(ax: Axes, values: ArrayLike, highlight: ArrayLike | None = None, *,
                           threshold: float | None = None, log: bool = True, ylabel: str = "mean |x|",
                           highlight_label: str = "highlighted") -> Axes:
    """One value per input channel (mean |x| for AWQ, max |x| for LLM.int8() / SmoothQuant), in
    channel order, with the channels of ``highlight`` marked and an optional horizontal threshold.

    Parameters
    ----------
    values : (K,) array >= 0
    highlight : (K,) bool array or None — channels drawn as red markers (e.g. the top 1 %, or |x| ≥ 6)
    threshold : float or None — a dashed horizontal line (LLM.int8()'s α = 6.0)
    log : bool — logarithmic y axis (zeros are then not drawn)

    Returns
    -------
    ax, with one line (all channels), one marker line if any channel is highlighted, and the threshold.
    """
    v = _vector(values, "values", nonnegative=True)
    ax.plot(np.arange(v.size), v, color="tab:blue", lw=0.7, label="every channel")
    if highlight is not None:
        m = np.asarray(highlight)
        if m.dtype != bool or m.shape != v.shape:
            raise ValueError(f"highlight: expected a bool array of shape {v.shape}, got {m.dtype} {m.shape}")
        if m.any():
            idx = np.flatnonzero(m)
            ax.plot(idx, v[idx], "o", ms=4, color="tab:red", label=f"{highlight_label} ({idx.size})")
    if threshold is not None:
        t = float(_vector([threshold], "threshold", nonnegative=True)[0])
        ax.axhline(t, color="k", ls="--", lw=0.8, label=f"threshold {t:g}")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("input channel")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return ax


def plot_alpha_search(ax: Axes, alphas: ArrayLike, losses: ArrayLike, *, label: str | None = None,
                      mark_best: bool = True, baseline: float | None = None, baseline_label: str = "baseline",
                      color: str | None = None) -> Axes:
    """A loss against the migration strength α, with its first minimum marked (AWQ's choice: the
    references keep a grid point only if its loss is strictly smaller).

    Parameters
    ----------
    alphas : (n,) array — e.g. AWQ's grid i/20, SmoothQuant's sweep
    losses : (n,) array >= 0 — e.g. ``ScaleSearch.losses``, or a held-out output error
    baseline : float or None — a dashed horizontal line (e.g. no scaling at all)

    Returns
    -------
    ax, with the curve, the best point (``mark_best``) and the baseline line.
    """
    a = _vector(alphas, "alphas")
    loss = _vector(losses, "losses", nonnegative=True, size=a.size)
    line, = ax.plot(a, loss, "-", marker=".", ms=5, lw=1.2, color=color, label=label)
    if mark_best:
        b = int(np.argmin(loss))
        ax.plot([a[b]], [loss[b]], "*", ms=12, color=line.get_color(), markeredgecolor="k", markeredgewidth=0.5,
                label=f"best α = {a[b]:.2f}")
    if baseline is not None:
        base = float(_vector([baseline], "baseline", nonnegative=True)[0])
        ax.axhline(base, color=line.get_color(), ls="--", lw=0.8, label=baseline_label)
    ax.set_xlabel("α (migration strength)")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return ax


def plot_act_weight_ranges(ax: Axes, act_max: ArrayLike, w_max: ArrayLike, *, log: bool = True) -> Axes:
    """Per input channel j: max |X_j| over the calibration tokens and max |W_:,j| over the rows.

    SmoothQuant divides channel j of X by s_j and multiplies column j of W by it: drawn before and
    after, the activations' outliers shrink and the weights' columns grow — α = 0.5 gives both the
    range √(a_j w_j) (the activation line is drawn wider, so that it shows where the two coincide).

    Parameters
    ----------
    act_max, w_max : (K,) arrays > 0 with ``log=True`` (≥ 0 otherwise)

    Returns
    -------
    ax, with two lines (activation, weight).
    """
    a = _vector(act_max, "act_max", nonnegative=True)
    w = _vector(w_max, "w_max", nonnegative=True, size=a.size)
    if log and (np.any(a == 0) or np.any(w == 0)):
        raise ValueError("act_max / w_max: a log plot needs maxima > 0 (a dead channel has max 0)")
    k = np.arange(a.size)
    ax.plot(k, a, color="tab:red", lw=1.4, label=f"activation max|X_j| (max/median {a.max() / np.median(a):.0f}×)")
    ax.plot(k, w, color="tab:blue", lw=0.7, label=f"weight max|W_:,j| (max/median {w.max() / np.median(w):.0f}×)")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("input channel j")
    ax.set_ylabel("max |·| per channel")
    ax.legend(fontsize=8, loc="upper right")
    return ax


def plot_outlier_threshold(ax: Axes, thresholds: ArrayLike, errors: ArrayLike, n_columns: ArrayLike, *,
                           baseline: float | None = None, mark: float | None = 6.0) -> Axes:
    """LLM.int8()'s output error against its outlier threshold α, each point labelled with the
    number of outlier columns (columns with some |x| ≥ α) that take the float path.

    Parameters
    ----------
    thresholds : (n,) array > 0 — α values (log x axis)
    errors : (n,) array >= 0 — e.g. relative output error ‖Y − Y_float‖² / ‖Y_float‖²
    n_columns : (n,) array of counts >= 0
    baseline : float or None — the error without decomposition (pure vector-wise int8, α = 0)
    mark : float or None — a vertical line at the paper's α = 6.0

    Returns
    -------
    ax, with the curve, the baseline and the α line; one text label per point.
    """
    t = _vector(thresholds, "thresholds", nonnegative=True)
    if np.any(t == 0):
        raise ValueError("thresholds: must be > 0 on the log axis (α = 0, no decomposition, goes in baseline=)")
    e = _vector(errors, "errors", nonnegative=True, size=t.size)
    n = _vector(n_columns, "n_columns", nonnegative=True, size=t.size)
    if np.any(n != np.round(n)):
        raise ValueError("n_columns: expected whole numbers of columns")
    ax.plot(t, e, "o-", ms=4, color="tab:purple", label="int8 + float outlier columns")
    for x, y, c in zip(t, e, n):
        ax.annotate(f"{int(c)}", (x, y), xytext=(0, 5), textcoords="offset points", fontsize=7, ha="center")
    if baseline is not None:
        b = float(_vector([baseline], "baseline", nonnegative=True)[0])
        ax.axhline(b, color="tab:gray", ls="--", lw=1, label="no decomposition (all int8)")
    if mark is not None:
        m = float(_vector([mark], "mark", nonnegative=True)[0])
        ax.axvline(m, color="k", ls=":", lw=0.8, label=f"α = {m:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("outlier threshold α (labels: outlier columns)")
    ax.set_ylabel("relative output error")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return ax


def plot_method_comparison(ax: Axes, rows: Sequence[Mapping], *, metric: str = "perplexity",
                           reference: str = "float", log: bool = False) -> Axes:
    """A horizontal bar per method, top to bottom in the order given, from ``refquant llm compare``
    rows (``{"method", "bits_per_weight", metric, ...}``); the ``reference`` method's value is a
    vertical line, and each bar is labelled with its value and bits per weight.

    Parameters
    ----------
    rows : sequence of mappings with "method", "bits_per_weight" and ``metric`` (finite, >= 0)
    metric : the key to draw (``"perplexity"``, ``"kl_divergence"``, ``"seconds"``)
    reference : the method drawn as a line instead of a bar (absent: no line)

    Returns
    -------
    ax, with one bar per row other than the reference.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("rows: expected at least one row")
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping) or "method" not in r or metric not in r or "bits_per_weight" not in r:
            raise ValueError(f"rows[{i}]: expected a mapping with 'method', 'bits_per_weight' and {metric!r}")
    vals = _vector([r[metric] for r in rows], f"rows[…][{metric!r}]", nonnegative=True)
    ref = [v for r, v in zip(rows, vals) if r["method"] == reference]
    bars = [(r, v) for r, v in zip(rows, vals) if r["method"] != reference]
    ys = np.arange(len(bars))[::-1]
    for y, (r, v) in zip(ys, bars):
        ax.barh(y, v, color="tab:blue", height=0.7)
        ax.annotate(f"{v:.4g}  ({float(r['bits_per_weight']):.3g} bpw)", (v, y), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=7)
    if ref:
        ax.axvline(ref[0], color="k", ls="--", lw=1, label=f"{reference} {ref[0]:.4g}")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_yticks(ys)
    ax.set_yticklabels([str(r["method"]) for r, _ in bars], fontsize=8)
    if log:
        from matplotlib.ticker import NullFormatter
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # under two decades the minor labels collide
    ax.set_xlabel(metric)
    return ax
