"""AWQ's clipping search, eq. (6)–(7) of :mod:`refquant.ptq.awq`: per output row r and group g of the
(scaled) weight, the threshold that minimises the group's output error on sampled inputs::

    m_i = max |W_rg| · (1 − i/n_grid),  i < max_shrink · n_grid                                (6)
    err_i = mean_t (Σ_{k∈g} x_tk (Q(clamp(W, −m_i, m_i))_rk − W_rk))²    first minimum          (7)

with Q AWQ's pseudo-quantizer (:func:`refquant.ptq.awq.pseudo_quantize`, eq. 8–10) and x every
⌊n_tokens / n_sample_token⌋-th input row (AutoAWQ's step; llm-awq's fails when the step is 0).
``min_err`` starts at 1e9, as in both references, so a group whose every error exceeds it keeps no
clip. :func:`awq_clip_ref` is the loop twin; :func:`apply_clip` applies the thresholds.

References
----------
mit-han-lab/llm-awq ``awq/quantize/auto_clip.py: auto_clip_layer, apply_clip``; AutoAWQ
``awq/quantize/quantizer.py: AwqQuantizer._compute_best_clip``.
"""
from __future__ import annotations

import numpy as np

from ..core._checks import float_array
from ..core._types import ArrayLike
from .awq import _check, _pq, pseudo_quantize_ref

ACCUMULATE = ("sequential", "matmul")


def _clip_check(w, x, bits, group_size, n_grid, max_shrink, n_sample_token, rows):
    w = float_array(w, "w")
    x = float_array(x, "x")
    if w.ndim != 2 or not np.all(np.isfinite(w)):
        raise ValueError(f"w: expected a finite (rows, K) weight, got shape {w.shape}")
    if x.shape[-1] != w.shape[1] or x.ndim < 2:
        raise ValueError(f"x: expected inputs (..., {w.shape[1]}) for w of shape {w.shape}, got {x.shape}")
    if not 0 < max_shrink <= 1 or not isinstance(n_grid, (int, np.integer)) or n_grid < 1:
        raise ValueError(f"max_shrink must be in (0, 1] and n_grid a positive int, got {max_shrink!r}, {n_grid!r}")
    if not isinstance(n_sample_token, (int, np.integer)) or n_sample_token < 1:
        raise ValueError(f"n_sample_token must be a positive int, got {n_sample_token!r}")
    gs = _check(bits, group_size, w.shape[1])
    x = x.reshape(-1, x.shape[-1])
    x = x[::max(1, len(x) // n_sample_token)].astype(np.float64)  # AutoAWQ's step (llm-awq: step 0 fails)
    rows = np.arange(w.shape[0]) if rows is None else np.arange(w.shape[0])[rows]
    return w, x, gs, rows


def awq_clip(w: ArrayLike, x: ArrayLike, *, bits: int = 4, group_size: int = 128, zero_point: bool = True, n_grid: int = 20,
             max_shrink: float = 0.5, n_sample_token: int = 512, rows: ArrayLike | None = None, row_batch: int = 64,
             accumulate: str = "sequential") -> np.ndarray:
    """Eq. (6)–(7): the clipping threshold ``max_val`` (rows, n_groups) of w (rows, K) for inputs x (..., K).

    ``rows`` (index or mask) limits the search to those rows; the others keep max |W_rg| (no clip).
    Apply with :func:`apply_clip`. ``accumulate="sequential"`` (default): the output error of each
    (row, group) is accumulated in float64, first over the group's channels, then over the sampled
    tokens, one at a time in order, so that :func:`awq_clip_ref` equals it exactly.
    ``"matmul"``: the same float64 sums as BLAS products (``d · xᵀ``, then Σ e²), in BLAS's order —
    equal to the sequential sums to ~1e-15 relative (a threshold can differ only where two grid
    points' errors tie to that precision) and ~50× faster: what makes the search practical on a
    real LLM (SmolLM2: 4 min per block sequentially). ``row_batch`` rows are searched at a time (memory).
    """
    if accumulate not in ACCUMULATE:
        raise ValueError(f"accumulate: expected one of {ACCUMULATE}, got {accumulate!r}")
    w, x, gs, rows = _clip_check(w, x, bits, group_size, n_grid, max_shrink, n_sample_token, rows)
    K = w.shape[1]
    bounds = [(a, min(K, a + gs)) for a in range(0, K, gs)]
    org_max = np.stack([np.abs(w[:, a:b]).max(1) for a, b in bounds], 1)  # (rows, G) in w's dtype
    best = org_max.copy()
    shrink = [w.dtype.type(1 - i / n_grid) for i in range(int(max_shrink * n_grid))]
    for r0 in range(0, len(rows), row_batch):
        rr = rows[r0:r0 + row_batch]
        for g, (a, b) in enumerate(bounds):
            wg = w[rr, a:b]  # (R, size)
            m = np.stack([org_max[rr, g] * f for f in shrink])[:, :, None]  # (I, R, 1)
            cur = np.clip(wg[None], -m, m)
            d = _pq(cur, bits, zero_point)[0].astype(np.float64) - wg[None].astype(np.float64)  # (I, R, size)
            if accumulate == "matmul":
                e = d @ x[:, a:b].T  # (I, R, T)
                err = np.einsum("irt,irt->ir", e, e)
            else:
                e = np.zeros(d.shape[:2] + (len(x),))  # (I, R, T)
                for k in range(b - a):
                    e += d[:, :, k, None] * x[None, None, :, a + k]
                err = np.zeros(d.shape[:2])
                for t in range(len(x)):
                    err += e[:, :, t] * e[:, :, t]
            err /= len(x)
            min_err = np.full(len(rr), 1e9)  # the references' initial "min_errs"
            for i in range(len(shrink)):
                better = err[i] < min_err
                min_err = np.where(better, err[i], min_err)
                best[rr, g] = np.where(better, m[i, :, 0], best[rr, g])
    return best


def awq_clip_ref(w: ArrayLike, x: ArrayLike, *, bits: int = 4, group_size: int = 128, zero_point: bool = True, n_grid: int = 20,
                 max_shrink: float = 0.5, n_sample_token: int = 512, rows: ArrayLike | None = None) -> np.ndarray:
    """Loop twin of :func:`awq_clip`: one row, group, grid point, token and channel at a time."""
    w, x, gs, rows = _clip_check(w, x, bits, group_size, n_grid, max_shrink, n_sample_token, rows)
    K = w.shape[1]
    n_g = -(-K // gs)
    best = np.empty((w.shape[0], n_g), w.dtype)
    for r in range(w.shape[0]):
        for g in range(n_g):
            a, b = g * gs, min(K, (g + 1) * gs)
            org = np.abs(w[r, a:b]).max()
            best[r, g] = org
            if r not in rows:
                continue
            min_err = 1e9
            for i in range(int(max_shrink * n_grid)):
                m = org * w.dtype.type(1 - i / n_grid)
                cur = np.array([min(max(v, -m), m) for v in w[r, a:b]], w.dtype)[None]
                qg = pseudo_quantize_ref(cur, bits=bits, group_size=0, zero_point=zero_point).w_hat[0]
                err = 0.0
                for t in range(len(x)):
                    e = 0.0
                    for k in range(b - a):
                        e += (float(qg[k]) - float(w[r, a + k])) * x[t, a + k]
                    err += e * e
                err /= len(x)
                if err < min_err:
                    min_err, best[r, g] = err, m
    return best


def apply_clip(w: ArrayLike, max_val: ArrayLike, group_size: int) -> np.ndarray:
    """``clamp(W_rg, −max_val[r, g], max_val[r, g])`` per row and group of ``group_size`` columns, the
    last possibly shorter (llm-awq ``apply_clip``)."""
    w = np.asarray(w)
    gs = _check(4, group_size, w.shape[1])
    g = np.arange(w.shape[1]) // gs
    if np.shape(max_val) != (w.shape[0], g[-1] + 1):
        raise ValueError(f"max_val: expected shape {(w.shape[0], g[-1] + 1)} for w {w.shape} and group_size "
                         f"{group_size}, got {np.shape(max_val)}")
    m = np.asarray(max_val)[:, g]
    return np.clip(w, -m, m)
