"""Plots of QAT and mixed precision (notebook 09): STE, LSQ, sensitivities, Pareto fronts. Every function draws on ``ax`` and returns it.

The data come from the library (:mod:`refquant.qat`, :mod:`refquant.ptq.sensitivity_hessian`,
:mod:`refquant.ptq.mixed_precision`); these functions only draw them.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
import re
from typing import TYPE_CHECKING

import numpy as np

from ..core._types import ArrayLike

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["layer_kind", "METHOD_COLORS", "method_family", "plot_lsq_scale_gradient", "plot_pareto",
           "plot_qat_curves", "plot_sensitivity_bars", "plot_ste_landscape"]

METHOD_COLORS = {"float": "k", "uniform": "tab:blue", "greedy": "tab:orange", "dp": "tab:red",
                 "q4km": "tab:green", "ptq": "tab:gray", "qat": "tab:purple"}
_KIND_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                "tab:olive", "tab:cyan", "tab:gray")


def layer_kind(name: str) -> str:
    """The kind of a linear layer's weight name, without its block: ``blk.3.ffn_down.weight`` ->
    ``ffn_down``, ``h1.mlp.c_fc.w`` -> ``mlp.c_fc``, ``output.weight`` -> ``output``."""
    s = re.sub(r"^(blk\.\d+\.|h\d+\.)", "", name)
    return re.sub(r"\.(weight|w)$", "", s)


def _block(name: str) -> int | None:
    m = re.match(r"^(?:blk\.(\d+)\.|h(\d+)\.)", name)
    return None if m is None else int(m.group(1) or m.group(2))


def method_family(method: str) -> str:
    """``uniform-int4-g128`` -> ``uniform``; ``dp-kl-4.25`` -> ``dp``; ``q4km-rule…`` -> ``q4km``."""
    head = method.split("-", 1)[0]
    return "q4km" if head.startswith("q4km") else head


def plot_sensitivity_bars(ax: Axes, names: Sequence[str], values: ArrayLike, *, ylabel: str = "KL from float (nats)",
                          log: bool = True, top: int = 5) -> Axes:
    """One bar per layer in the order of ``names`` (forward order), coloured by :func:`layer_kind`,
    with block boundaries as faint vertical lines and the ``top`` largest labelled by name.

    ``values`` (len(names),): a column of a sensitivity table Ω (one format, each layer alone).
    ``log``: a log y axis (sensitivities span decades; values ≤ 0 are drawn at the axis floor).
    """
    v = np.asarray(values, np.float64)
    names = list(names)
    if v.shape != (len(names),):
        raise ValueError(f"values: expected shape ({len(names)},) for {len(names)} names, got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("values must be finite")
    kinds = list(dict.fromkeys(layer_kind(n) for n in names))
    color = {k: _KIND_COLORS[i % len(_KIND_COLORS)] for i, k in enumerate(kinds)}
    xs = np.arange(len(names))
    shown = v.copy()
    if log:
        pos = v[v > 0]
        floor = float(pos.min()) / 2 if pos.size else 1e-12
        shown = np.where(v > 0, v, floor)
        ax.set_yscale("log")
    for k in kinds:
        idx = [i for i, n in enumerate(names) if layer_kind(n) == k]
        ax.bar(xs[idx], shown[idx], width=0.85, color=color[k], label=k, linewidth=0)
    blocks = [_block(n) for n in names]
    for i in range(1, len(names)):
        if blocks[i] != blocks[i - 1] and blocks[i] is not None:
            ax.axvline(i - 0.5, color="0.85", lw=0.5, zorder=0)
    for i in np.argsort(-v, kind="stable")[:top]:
        ax.annotate(names[i].removesuffix(".weight").removesuffix(".w"), (xs[i], shown[i]), xytext=(0, 3),
                    textcoords="offset points", rotation=90, ha="center", va="bottom", fontsize=7)
    if log:  # headroom above the tallest bar for the rotated names
        lo_, hi_ = float(shown.min()), float(shown.max())
        ax.set_ylim(lo_ / 1.5, hi_ * max(10.0, (hi_ / lo_) ** 0.45))
    else:
        ax.set_ylim(min(0.0, float(v.min())), float(v.max()) * 1.45 or 1.0)
    ticks = [i for i in range(len(names)) if blocks[i] is not None and (i == 0 or blocks[i] != blocks[i - 1])]
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(blocks[i]) for i in ticks], fontsize=7)
    ax.set_xlabel("block (layers in forward order)")
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return ax


def plot_pareto(ax: Axes, rows: Sequence[Mapping], *, front: Sequence[Mapping] | None = None,
                float_perplexity: float | None = None, annotate: bool | Collection[str] = True, log: bool = False,
                ymax: float | None = None) -> Axes:
    """Size vs perplexity: one marker per row ``{"method", "bits_per_weight", "perplexity"}``,
    coloured by :func:`method_family`; ``front`` (e.g. :func:`refquant.ptq.mixed_precision.pareto_front`
    of the rows) joined by a dashed line; ``float_perplexity`` as a horizontal line.

    ``annotate``: label every point (True), none (False) or the points of these families (e.g.
    ``{"uniform", "dp", "q4km"}``); rows at the same point share one label. ``ymax``: rows above it
    (a collapsed model) are drawn at ``ymax`` with their value in the label, so they do not squash the rest.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("rows: nothing to plot")

    def y_of(r):
        return r["perplexity"] if ymax is None else min(r["perplexity"], ymax)

    seen, at = set(), {}
    for r in rows:
        fam = method_family(r["method"])
        ax.scatter(r["bits_per_weight"], y_of(r), color=METHOD_COLORS.get(fam, "tab:gray"), s=30, zorder=3,
                   marker={"dp": "o", "greedy": "s", "uniform": "D", "q4km": "^"}.get(fam, "x"),
                   label=None if fam in seen else fam, alpha=0.8)
        seen.add(fam)
        at.setdefault((round(r["bits_per_weight"], 4), round(y_of(r), 6)), []).append(r)
    if annotate:  # one label per point: rows that landed on the same allocation share it
        xs = [b for b, _ in at]
        near = 0.06 * ((max(xs) - min(xs)) or 1.0)  # labelled points this close in x form a cluster
        labelled = [(k, rs) for k, rs in sorted(at.items())
                    if any(annotate is True or method_family(r["method"]) in annotate for r in rs)]
        clusters = []
        for k, rs in labelled:
            if clusters and k[0] - clusters[-1][-1][0][0] < near:
                clusters[-1].append((k, rs))
            else:
                clusters.append([(k, rs)])
        for cluster in clusters:  # the highest point's label above it, the others below theirs, stacked
            for i, ((b, y), rs) in enumerate(sorted(cluster, key=lambda kv: -kv[0][1])):
                shown = [r for r in rs if annotate is True or method_family(r["method"]) in annotate]
                dy = 4 if i == 0 else -7 - 11 * (i - 1)
                text = shown[0]["method"] + (f" (= {len(rs) - 1} more)" if len(rs) > 1 else "")
                if ymax is not None and rs[0]["perplexity"] > ymax:
                    text += f": {rs[0]['perplexity']:.4g} ↑"
                ax.annotate(text, (b, y), xytext=(4, dy), textcoords="offset points", fontsize=6)
    if front:
        f = sorted(front, key=lambda r: r["bits_per_weight"])
        ax.plot([r["bits_per_weight"] for r in f], [y_of(r) for r in f], "--", color="0.4", lw=0.8,
                zorder=2, label="Pareto front")
    if float_perplexity is not None:
        ax.axhline(float_perplexity, color="k", lw=0.6, ls=":", label=f"float32 {float_perplexity:.3f}")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("bits per weight (linear layers)")
    ax.set_ylabel("perplexity")
    ax.legend(fontsize=7, frameon=False)
    return ax


def plot_ste_landscape(ax: Axes, w: ArrayLike, loss_float: ArrayLike, loss_quantized: ArrayLike, *,
                       ste_grad: ArrayLike | None = None, arrows: int = 9) -> Axes:
    """A 1-D loss landscape: the float loss L(w) and the quantized loss L(Q(w)) (a staircase whose
    true derivative is 0 almost everywhere) over ``w``; with ``ste_grad`` (the straight-through
    gradient at each w), ``arrows`` arrows on the staircase point downhill along −ste_grad."""
    w, lf, lq = (np.asarray(a, np.float64) for a in (w, loss_float, loss_quantized))
    if not (w.ndim == 1 and lf.shape == w.shape and lq.shape == w.shape):
        raise ValueError(f"w, loss_float, loss_quantized: expected three 1-D arrays of one length, got "
                         f"{w.shape}, {lf.shape}, {lq.shape}")
    ax.plot(w, lf, color="0.5", lw=1, label="float loss L(w)")
    ax.plot(w, lq, color="tab:blue", lw=1.5, label="quantized loss L(Q(w))")
    if ste_grad is not None:
        g = np.asarray(ste_grad, np.float64)
        if g.shape != w.shape:
            raise ValueError(f"ste_grad: expected shape {w.shape}, got {g.shape}")
        idx = np.linspace(0, len(w) - 1, arrows + 2).astype(int)[1:-1]
        span = float(w[-1] - w[0]) / (arrows + 1) * 0.6
        gmax = float(np.abs(g[idx]).max()) or 1.0
        for i in idx:
            ax.annotate("", xy=(w[i] - span * g[i] / gmax, lq[i]), xytext=(w[i], lq[i]),
                        arrowprops=dict(arrowstyle="->", color="tab:red", lw=1))
        ax.plot([], [], color="tab:red", label="−STE gradient (direction)")
    ax.set_xlabel("w")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7, frameon=False)
    return ax


def plot_lsq_scale_gradient(ax: Axes, x: ArrayLike, grad: ArrayLike, *, scale: float, qmin: int, qmax: int,
                            label: str = "∂x̂/∂s (LSQ)") -> Axes:
    """LSQ's ∂x̂/∂s over ``x`` (from :func:`refquant.qat.lsq.lsq_grad` with dy = 1 and no gradient
    scale): the saw-tooth round(v) − v inside the range, qmin and qmax outside; the clip points
    qmin·s and qmax·s dotted."""
    x, g = np.asarray(x, np.float64), np.asarray(grad, np.float64)
    if x.ndim != 1 or g.shape != x.shape:
        raise ValueError(f"x, grad: expected two 1-D arrays of one length, got {x.shape} and {g.shape}")
    ax.plot(x, g, color="tab:purple", lw=1.2, label=label)
    for q in (qmin, qmax):
        ax.axvline(q * scale, color="0.6", lw=0.6, ls=":")
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel("x")
    ax.set_ylabel("∂x̂/∂s")
    ax.legend(fontsize=7, frameon=False)
    return ax


def plot_qat_curves(ax: Axes, curves: Mapping[str, ArrayLike], *, ptq: Mapping[str, float] | None = None,
                    float_value: float | None = None, ylabel: str = "training loss (nats)") -> Axes:
    """QAT training curves ``{label: losses per step}``, with PTQ's value per label (``ptq``, same
    labels, drawn as dashed lines of the curve's colour) and the float model's (``float_value``)."""
    if not curves:
        raise ValueError("curves: nothing to plot")
    for i, (label, ys) in enumerate(curves.items()):
        ys = np.asarray(ys, np.float64)
        c = _KIND_COLORS[i % len(_KIND_COLORS)]
        ax.plot(np.arange(1, len(ys) + 1), ys, color=c, lw=1, label=f"QAT {label}")
        if ptq is not None and label in ptq:
            ax.axhline(ptq[label], color=c, lw=0.8, ls="--", label=f"PTQ {label}")
    if float_value is not None:
        ax.axhline(float_value, color="k", lw=0.6, ls=":", label="float32")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, frameon=False)
    return ax
