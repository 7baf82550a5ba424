"""Plots of the formats zoo (notebook 10): levels, MSE vs bits per weight, k-quant search, MX scale rules.

Every ``plot_*`` function draws on ``ax`` and returns it. :func:`qkx2_trace` records the candidate grids
of ggml's ``make_qkx2_quants`` one by one, for drawing the search (the byte-exact search itself is
:func:`refquant.formats.kquants_search.make_qkx_quants`; a test checks that the trace ends where it does).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..core._types import ArrayLike
from ..formats.kquants_search import F32, clamp, nearest_int, seqsum
from .basics import FAMILY_COLORS

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["ZOO_COLORS", "qkx2_trace", "plot_format_levels", "plot_mse_vs_bits", "plot_qkx2_search",
           "plot_mx_rules"]

ZOO_COLORS = {**FAMILY_COLORS, "mx": "tab:brown", "nvfp4": "tab:olive"}  # registry family -> colour


def plot_format_levels(ax: Axes, x: ArrayLike, levels: Mapping[str, ArrayLike], *,
                       families: Mapping[str, str] | None = None) -> Axes:
    """One row per entry ``name -> values``: the values a format reconstructs (or offers) for the block ``x``.

    ``x`` (n,) is drawn as grey dots on every row and as the top row "x"; each format's distinct values are
    vertical ticks, coloured by ``families[name]`` (a :data:`ZOO_COLORS` key; default grey). Rows run top
    to bottom in the order given.
    """
    x = np.asarray(x, np.float64).ravel()
    names = list(levels)
    ys = np.arange(len(names) + 1)[::-1]
    ax.plot(x, np.full(x.shape, ys[0]), "o", ms=4, color="k")
    for y, name in zip(ys[1:], names):
        v = np.unique(np.asarray(levels[name], np.float64).ravel())
        c = ZOO_COLORS.get((families or {}).get(name, ""), "0.4")
        ax.plot(x, np.full(x.shape, y), "o", ms=2.5, color="0.75", zorder=1)
        ax.vlines(v, y - 0.35, y + 0.35, color=c, lw=1.2, zorder=2)
        ax.text(1.01, y, f"{len(v)}", transform=ax.get_yaxis_transform(), va="center", fontsize=7, color="0.3")
    ax.set_yticks(ys)
    ax.set_yticklabels(["x"] + names, fontsize=8)
    ax.set_ylim(-0.7, len(names) + 0.7)
    ax.set_xlabel("value")
    ax.grid(axis="x", alpha=0.3)
    return ax


def plot_mse_vs_bits(ax: Axes, points: Sequence[tuple], *, curves: Mapping[str, tuple] | None = None,
                     ylabel: str = "relative MSE  ‖x̂ − x‖² / ‖x‖²", label_points: bool = True) -> Axes:
    """Points ``(name, family, bits_per_weight, mse)`` as coloured dots with their names, and optional
    ``curves`` ``label -> (family, bits (k,), mse (k,))`` as lines (e.g. int2 … int8 at one group size;
    solid, dashed, dotted in turn). The y axis is logarithmic; bits per weight count every stored bit (scales,
    minimums, exponents). A point with MSE exactly 0 (a lossless re-quantization) is drawn as a triangle at a
    third of the smallest non-zero MSE, named ``"<name> (0)"``.
    """
    for i, (label, (fam, xs, ys)) in enumerate((curves or {}).items()):
        ax.plot(xs, ys, ("-", "--", ":", "-.")[i % 4], color=ZOO_COLORS.get(fam, "0.4"), lw=1, alpha=0.6, label=label)
    nonzero = [p[3] for p in points if p[3] > 0]
    floor = min(nonzero) / 3 if nonzero else 1.0
    seen = set()
    for name, fam, b, e in points:
        c = ZOO_COLORS.get(fam, "0.4")
        zero = e == 0
        ax.plot([b], [floor if zero else e], "v" if zero else "o", ms=5, color=c, markeredgecolor="k",
                markeredgewidth=0.4, label=fam if fam not in seen else None)
        seen.add(fam)
        if label_points:
            ax.annotate(f"{name} (0)" if zero else name, (b, floor if zero else e), xytext=(3, 2),
                        textcoords="offset points", fontsize=6, color="0.25")
    ax.set_yscale("log")
    ax.set_xlabel("bits per weight (scale overhead included)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    return ax


def qkx2_trace(x: ArrayLike, w: ArrayLike, nmax: int = 15, rmin: float = -1.0, rdelta: float = 0.1,
               nstep: int = 20) -> dict:
    """The candidate grids of ``make_qkx2_quants`` for one group, one by one (float32, C order of operations).

    Parameters
    ----------
    x, w : ndarray of shape (n,) — the group's values and weights (Q4_K: ``w = sqrt(mean x²) + |x|``)
    nmax, rmin, rdelta, nstep : the search's arguments (Q4_K: 15, −1, 0.1, 20; Q5_K: 31, −0.5, 0.1, 15)

    Returns
    -------
    dict with ``init`` (the min–max guess: ``scale``, ``min``, ``err``) and ``steps``: one dict per candidate
    ``k`` with ``iscale = (rmin + rdelta·k + nmax)/(max − min)`` (``min`` = the best minimum so far), the
    refitted ``scale`` and ``min`` (weighted least squares for the fixed codes ``L``), its weighted squared
    error ``err`` and ``accepted`` (err below the best so far); plus ``best`` (scale, min, L). The group
    must not be flat (max > min after ``min = min(min x, 0)``).

    Notes
    -----
    Mirrors :func:`refquant.formats.kquants_search.make_qkx_quants` (variant 2, ``use_mad=False``) step by
    step; ``min`` here is the offset added (``x ≈ scale·L + min``, min ≤ 0), stored negated as Q4_K's m.
    """
    xs, ws = np.asarray(x, F32).ravel(), np.asarray(w, F32).ravel()
    if xs.shape != ws.shape or xs.size == 0:
        raise ValueError(f"w: expected the shape of x {xs.shape}, got {ws.shape}")
    mn, mx = min(F32(xs.min()), F32(0)), F32(xs.max())
    if not mx > mn:
        raise ValueError("x: a flat group (max == min) has no search")
    sum_w, sum_x = seqsum(ws[None], True)[0], seqsum((ws * xs)[None], True)[0]

    def err(scale, lf, m):
        d = scale * lf + m - xs
        return F32(seqsum((ws * (d * d))[None])[0])

    iscale = F32(nmax) / (mx - mn)
    scale = F32(1) / iscale
    L = clamp(nearest_int(iscale * (xs - mn)), 0, nmax)
    best = err(scale, L.astype(F32), mn)
    out = {"init": {"scale": float(scale), "min": float(mn), "err": float(best)}, "steps": []}
    for k in range(nstep + 1):
        iscale = (F32(rmin) + F32(rdelta) * F32(k) + F32(nmax)) / (mx - mn)
        laux = clamp(nearest_int(iscale * (xs - mn)), 0, nmax)
        lf = laux.astype(F32)
        wl = ws * lf
        sum_l, sum_l2, sum_xl = (seqsum(a[None])[0] for a in (wl, wl * lf, wl * xs))
        D = sum_w * sum_l2 - sum_l * sum_l
        step = {"k": k, "iscale": float(iscale), "accepted": False}
        if D > 0:
            s_k = (sum_w * sum_xl - sum_x * sum_l) / D
            m_k = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if m_k > 0:
                m_k, s_k = F32(0), sum_xl / sum_l2
            cur = err(s_k, lf, m_k)
            step.update(scale=float(s_k), min=float(m_k), err=float(cur))
            if cur < best:
                L, best, scale, mn = laux, cur, s_k, m_k
                step["accepted"] = True
        out["steps"].append(step)
    out["best"] = {"scale": float(scale), "min": float(mn), "err": float(best), "L": np.asarray(L)}
    return out


def plot_qkx2_search(ax: Axes, trace: dict) -> Axes:
    """The candidates of :func:`qkx2_trace`: weighted squared error against the candidate index k (dots;
    filled where the candidate became the best so far), the min–max starting point (dashed), and the running
    best (step line)."""
    steps = [s for s in trace["steps"] if "err" in s]
    k = np.array([s["k"] for s in steps])
    e = np.array([s["err"] for s in steps])
    acc = np.array([s["accepted"] for s in steps], bool)
    ax.axhline(trace["init"]["err"], color="0.4", ls="--", lw=1, label="min–max grid (start)")
    ax.plot(k[~acc], e[~acc], "o", mfc="white", color="tab:blue", ms=5, label="candidate (rejected)")
    ax.plot(k[acc], e[acc], "o", color="tab:blue", ms=6, label="candidate (new best)")
    running = np.minimum.accumulate(np.r_[trace["init"]["err"], e])[1:]
    ax.step(k, running, where="post", color="tab:red", lw=1.2, label="best so far")
    ax.set_yscale("log")
    ax.set_xlabel("candidate k:  iscale = (rmin + rdelta·k + nmax) / (max − min)")
    ax.set_ylabel("Σ w·(scale·l + min − x)²")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return ax


def plot_mx_rules(ax: Axes, rows: Sequence[tuple], *, clamp_ax: Axes | None = None) -> Axes:
    """Bars ``(rule, relative_mse, clamped_fraction)``: the MSE of each MX scale rule on the same blocks, and
    (on ``clamp_ax``, or annotated on the bars) the fraction of elements clamped to ±max normal."""
    names = [r[0] for r in rows]
    mse = np.array([r[1] for r in rows], float)
    clamped = np.array([r[2] for r in rows], float)
    pos = np.arange(len(rows))
    ax.bar(pos, mse, color="tab:brown", alpha=0.8)
    ax.set_xticks(pos)
    ax.set_xticklabels(names)
    ax.set_ylabel("relative MSE")
    if clamp_ax is None:
        for p, m, c in zip(pos, mse, clamped):
            ax.text(p, m, f"{100 * c:.2f} % clamped", ha="center", va="bottom", fontsize=7)
    else:
        clamp_ax.bar(pos, 100 * clamped, color="tab:red", alpha=0.7)
        clamp_ax.set_xticks(pos)
        clamp_ax.set_xticklabels(names)
        clamp_ax.set_ylabel("elements clamped to ±max (%)")
    ax.grid(axis="y", alpha=0.3)
    return ax
