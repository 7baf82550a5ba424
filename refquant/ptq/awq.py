"""AWQ: activation-aware weight quantization — per-input-channel scales that protect the weights
multiplying large activations, searched on the output error and folded into the layer before;
then a per-group clipping search; then AWQ's own group-wise round-to-nearest. This module holds the
pseudo-quantizer and the scale search; :mod:`refquant.ptq.awq_clip` the clipping search (6)–(7);
:func:`refquant.ptq.awq_model.awq_quantize` runs them over a whole model.

For linears ``y = x Wᵀ`` sharing an input x (K channels) and a scale s (K,), folded by
:func:`refquant.models.lm.fold_scale` into the parameters that produce x::

    y ≈ (x / s) · Q(W · diag(s))ᵀ                         the quantized, scaled layer           (1)
    s(α) = x̄^α,  x̄_j = mean |x_j|                          llm-awq                              (2)
    s(α) = x̄^α / (w̄^(1−α) + 1e-4)                          AutoAWQ, duo_scaling=True            (3)
    w̄_j = mean over rows r of |W_rj| / (max_{j'∈group} |W_rj'| + 1e-6)   (all linears of the fold)
    s ← max(s, 1e-4);   s ← s / sqrt(max(s) · min(s))                                           (4)
    α* = argmin_{α = i/n_grid, i < n_grid} mean (y_float − y_α)²    first minimum               (5)

where y is the output of the fold's ``inspect`` linear (llm-awq's ``module2inspect``: the whole
attention or MLP for the linears after a norm — the rest of the block in float — the layer itself
for v → o, up → down), with the fold's linears replaced by ``Q(W·s)/s``. Then, on the scaled
weights and scaled inputs, per output row r and group g, the clipping search::

    m_i = max |W_rg| · (1 − i/n_grid),  i < max_shrink · n_grid                                (6)
    err_i = mean_t (Σ_{k∈g} x_tk (Q(clamp(W, −m_i, m_i))_rk − W_rk))²    first minimum          (7)

on every ⌊n_tokens / n_sample_token⌋-th input row. Finally every linear is quantized by the
pseudo-quantizer, per group of ``group_size`` input channels (``zero_point=True``)::

    scale = max(max w − min w, 1e-5) / (2^b − 1)     range NOT extended to 0                    (8)
    zero  = clamp(−round(min w / scale), 0, 2^b − 1)                                           (9)
    q     = clamp(round(w / scale) + zero, 0, 2^b − 1),   ŵ = (q − zero) · scale               (10)

round = half to even (torch.round). Because (9) clamps the zero point, an all-positive group gets
zero = 0 and the grid [0, (2^b−1)·scale] = [0, max − min]: weights above max − min clip (refquant's
core quantizer widens the range to contain 0 instead). ``zero_point=False`` (AutoAWQ; llm-awq's
branch raises NameError, "we actually never used this"): scale = max(max |w|, 1e-5) / (2^(b−1) − 1),
q = clamp(round(w / scale), −2^(b−1), 2^(b−1) − 1), zero = 0. Arithmetic is in the weight's dtype,
as torch's; losses and statistics in float64.

Where llm-awq and AutoAWQ differ (named arguments here):

* ``duo_scaling``: (2) is llm-awq's formula; (3) AutoAWQ's (its default), w̄ from the weights of all
  the fold's linears concatenated, each group normalised by its own absmax.
* ``clip_qk``: llm-awq skips clipping layers named ``q_``/``k_`` and clips a fused qkv weight
  whole (``"pure"``: skip only linears all of whose rows are queries/keys); AutoAWQ also skips
  fused ones (``"layer"``: skip any linear with query/key rows). ``"rows"`` (default) clips every
  row except the query/key rows (``LM.qk_rows``) — the same as both on LLaMA.
* The same in both: one scale per fold (q, k, v share it: the fold into the norm forces it), the
  layers scaled (LLaMA: norm → qkv, v → o without GQA, norm → gate/up, up → down), the loss (mean
  over every output element; llm-awq in one reduction, AutoAWQ chunked), inputs from the float
  model (scales and clips of every block are found on float activations). llm-awq's
  ``ScaledActivation`` (a divide inserted after a GELU, for GPT-2-like MLPs) is not a fold and is
  not done. ``K % group_size != 0`` is refused by both; here the last group is shorter.
* Checked against AutoAWQ 0.2.9 itself (tests/data/awq_record_autoawq.py): the pseudo-quantizer and
  the clipping thresholds bit-exactly, the scales to 1e-6 (float32 there). Run on a CPU, AutoAWQ's
  ``_compute_best_scale`` saves the weights with ``v.cpu()`` — no copy on a CPU — and its in-place
  ``mul_`` then evaluates every α > 0 on W·s(0) instead of W; harmless for s(0) = 1 (llm-awq's
  formula), wrong under ``duo_scaling``. The goldens are recorded with GPU semantics (a copy).

References
----------
Lin et al., "AWQ: Activation-aware Weight Quantization for On-Device LLM Compression and
Acceleration", MLSys 2024, §3.2 (eq. 4–5: s = s_X^α, grid search on α). Mirrored: mit-han-lab/llm-awq
``awq/quantize/auto_scale.py: auto_scale_block._search_module_scale``, ``auto_clip.py:
auto_clip_layer``, ``quantizer.py: pseudo_quantize_tensor``, ``pre_quant.py: run_awq``; AutoAWQ
``awq/quantize/quantizer.py: AwqQuantizer._search_best_scale, _compute_best_scale,
_compute_best_clip, pseudo_quantize_tensor``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..core._checks import float_array
from ..core._types import ArrayLike
from .hessian import update

CLIP_QK = ("rows", "pure", "layer")
INSPECT = ("module", "layer")
HEAD = ("float", "rtn", "awq")


@dataclass(frozen=True)
class AWQTensor:
    """One pseudo-quantized (rows, K) weight: ``w_hat[:, c] = scale[:, g] · (codes[:, c] − zero_point[:, g])``,
    g = c // group_size (``group_size=0``: one group per row)."""

    w_hat: np.ndarray  # (rows, K) the weight's dtype
    codes: np.ndarray  # (rows, K) uint8 in [0, 2^b − 1] (zero_point=True) or int8 in [−2^(b−1), 2^(b−1) − 1]
    scale: np.ndarray  # (rows, n_groups) the weight's dtype
    zero_point: np.ndarray  # (rows, n_groups) int32 (all 0 when zero_point=False)
    bits: int
    group_size: int


@dataclass(frozen=True)
class ScaleSearch:
    """The result of (5): the chosen scale, its α, and the loss at every grid point."""

    scales: np.ndarray  # (K,) float64
    alpha: float
    losses: np.ndarray  # (n_grid,) float64


def _check(bits, group_size, K):
    if not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an int in [2, 8], got {bits!r}")
    if not isinstance(group_size, (int, np.integer)) or isinstance(group_size, bool) or group_size < 0:
        raise ValueError(f"group_size must be 0 (per row) or a positive int, got {group_size!r}")
    return K if group_size == 0 else int(group_size)


def _pq(wg, bits, zero_point):
    """Eq. (8)–(10) on groups along the last axis: (w_hat, q, scale, zero), scale and zero keepdims."""
    if zero_point:
        maxq, minq = 2 ** bits - 1, 0
        mx, mn = wg.max(-1, keepdims=True), wg.min(-1, keepdims=True)
        scale = np.maximum(mx - mn, 1e-5) / maxq
        zero = np.clip(-np.rint(mn / scale), minq, maxq)
    else:
        maxq, minq = 2 ** (bits - 1) - 1, -2 ** (bits - 1)
        scale = np.maximum(np.abs(wg).max(-1, keepdims=True), 1e-5) / maxq
        zero = np.zeros_like(scale)
    q = np.clip(np.rint(wg / scale) + zero, minq, maxq)
    return (q - zero) * scale, q, scale, zero


def _grouped(w, gs, fn):
    """Apply ``fn`` to the full groups (..., G, gs) and to the shorter last group (..., 1, K mod gs)."""
    K = w.shape[-1]
    n = K // gs * gs
    parts = [] if n == 0 else [fn(w[..., :n].reshape(w.shape[:-1] + (-1, gs)))]
    return parts + ([] if n == K else [fn(w[..., n:].reshape(w.shape[:-1] + (1, K - n)))])


def pseudo_quantize(w: ArrayLike, *, bits: int = 4, group_size: int = 128, zero_point: bool = True) -> AWQTensor:
    """AWQ's ``pseudo_quantize_tensor``, eq. (8)–(10), for w (rows, K) — or (..., rows, K), quantized
    per row and group along the last axis (then every field has the leading axes)."""
    w = float_array(w, "w")
    if w.ndim < 2 or not np.all(np.isfinite(w)):
        raise ValueError(f"w: expected a finite (rows, K) weight, got shape {w.shape}")
    gs = _check(bits, group_size, w.shape[-1])
    parts = _grouped(w, gs, lambda g: _pq(g, bits, zero_point))
    flat = lambda a: a.reshape(a.shape[:-2] + (-1,))  # noqa: E731  (..., G, size) -> (..., G·size)
    w_hat, q = (np.concatenate([flat(p[i]) for p in parts], -1) for i in (0, 1))
    scale, zero = (np.concatenate([p[i][..., 0] for p in parts], -1) for i in (2, 3))
    return AWQTensor(w_hat, q.astype(np.uint8 if zero_point else np.int8), scale, zero.astype(np.int32), bits, gs)


def pseudo_quantize_ref(w: ArrayLike, *, bits: int = 4, group_size: int = 128, zero_point: bool = True) -> AWQTensor:
    """Loop twin of :func:`pseudo_quantize` for a (rows, K) weight: one group at a time, scalars."""
    w = np.asarray(w)
    rows, K = w.shape
    gs = _check(bits, group_size, K)
    t = w.dtype.type
    out, codes = np.empty_like(w), np.empty(w.shape, np.int64)
    n_g = -(-K // gs)
    scale, zeros = np.empty((rows, n_g), w.dtype), np.zeros((rows, n_g), np.int32)
    for r in range(rows):
        for g in range(n_g):
            cols = range(g * gs, min(K, (g + 1) * gs))
            vals = [w[r, c] for c in cols]
            if zero_point:
                maxq, minq = 2 ** bits - 1, 0
                s = max(max(vals) - min(vals), t(1e-5)) / t(maxq)
                z = min(max(-np.rint(min(vals) / s), t(0)), t(maxq))
            else:
                maxq, minq = 2 ** (bits - 1) - 1, -2 ** (bits - 1)
                s, z = max(max(abs(v) for v in vals), t(1e-5)) / t(maxq), t(0)
            scale[r, g], zeros[r, g] = s, int(z)
            for c in cols:
                q = min(max(np.rint(w[r, c] / s) + z, t(minq)), t(maxq))
                codes[r, c], out[r, c] = int(q), (q - z) * s
    return AWQTensor(out, codes.astype(np.uint8 if zero_point else np.int8), scale, zeros, bits, gs)


def weight_mean(w_list: Sequence[ArrayLike], group_size: int) -> np.ndarray:
    """AutoAWQ's w̄ (K,) float64 for eq. (3): the linears' weights stacked by rows, each group divided
    by its absmax + 1e-6, averaged over all rows."""
    w = np.concatenate([np.abs(np.asarray(w, np.float64)) for w in w_list], axis=0)
    gs = _check(4, group_size, w.shape[1])
    parts = _grouped(w, gs, lambda g: g / (g.max(-1, keepdims=True) + 1e-6))
    return np.concatenate([p.reshape(p.shape[0], -1) for p in parts], 1).mean(0)


def scale_candidates(x_mean: ArrayLike, n_grid: int = 20, *, w_mean: ArrayLike | None = None) -> np.ndarray:
    """(n_grid, K) float64: eq. (2) (or (3) when ``w_mean`` is given) and (4) for α = i / n_grid."""
    x_mean = np.asarray(x_mean, np.float64)
    alphas = np.arange(n_grid) / n_grid
    if w_mean is None:
        s = x_mean[None, :] ** alphas[:, None]
    else:
        w_mean = np.asarray(w_mean, np.float64)
        s = x_mean[None, :] ** alphas[:, None] / (w_mean[None, :] ** (1 - alphas[:, None]) + 1e-4)
    s = np.maximum(s, 1e-4)
    return s / np.sqrt(s.max(1, keepdims=True) * s.min(1, keepdims=True))


def scale_candidates_ref(x_mean: ArrayLike, n_grid: int = 20, *, w_mean: ArrayLike | None = None) -> np.ndarray:
    """Loop twin of :func:`scale_candidates` (one α and one channel at a time, Python floats)."""
    out = np.empty((n_grid, len(x_mean)))
    for i in range(n_grid):
        a = i / n_grid
        s = [float(xm) ** a if w_mean is None else float(xm) ** a / (float(wm) ** (1 - a) + 1e-4)
             for xm, wm in zip(x_mean, x_mean if w_mean is None else w_mean)]
        s = [max(v, 1e-4) for v in s]
        norm = (max(s) * min(s)) ** 0.5
        out[i] = [v / norm for v in s]
    return out


def layer_loss(x: ArrayLike, w_list: Sequence[ArrayLike]) -> Callable[[Sequence[np.ndarray]], float]:
    """The default loss of (5): ``loss(w_hats)`` = mean over tokens and all outputs of the linears
    (concatenated) of ``(x Wᵀ − x Ŵᵀ)²``, in float64."""
    x = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
    w = np.concatenate([np.asarray(w, np.float64) for w in w_list], 0)
    y = x @ w.T

    def loss(w_hats):
        d = y - x @ np.concatenate([np.asarray(v, np.float64) for v in w_hats], 0).T
        return float(np.mean(d * d))
    return loss


def _search(w_list, x, bits, group_size, zero_point, duo_scaling, n_grid, loss, ref):
    w_list = [float_array(w, f"w_list[{i}]") for i, w in enumerate(w_list)]
    x = float_array(x, "x")
    K = x.shape[-1]
    if not w_list or any(w.ndim != 2 or w.shape[1] != K for w in w_list):
        raise ValueError(f"w_list: expected (rows, {K}) weights for x with {K} channels, got "
                         f"{[w.shape for w in w_list]}")
    if not isinstance(n_grid, (int, np.integer)) or n_grid < 1:
        raise ValueError(f"n_grid must be a positive int, got {n_grid!r}")
    x_mean = update(None, x.reshape(-1, K)).abs_mean
    w_mean = weight_mean(w_list, group_size) if duo_scaling else None
    loss = loss or layer_loss(x, w_list)
    opts = dict(bits=bits, group_size=group_size, zero_point=zero_point)
    cands = (scale_candidates_ref if ref else scale_candidates)(x_mean, n_grid, w_mean=w_mean)
    if ref:  # (1) one α at a time: Q(W·s)/s in the weight's dtype
        hats = [[pseudo_quantize_ref(w * s.astype(w.dtype), **opts).w_hat / s.astype(w.dtype) for w in w_list]
                for s in cands]
    else:  # (1) for every α at once: (n_grid, rows, K) per linear
        per_w = [pseudo_quantize(w[None] * cands.astype(w.dtype)[:, None, :], **opts).w_hat
                 / cands.astype(w.dtype)[:, None, :] for w in w_list]
        hats = [[h[i] for h in per_w] for i in range(n_grid)]
    losses = np.array([loss(h) for h in hats], np.float64)
    if not np.all(np.isfinite(losses)):
        raise ValueError(f"loss: not finite on the grid ({losses})")
    best = int(np.argmin(losses))  # the first minimum, as the references' strict `loss < best_error`
    return ScaleSearch(cands[best], best / n_grid, losses)


def awq_search_scale(w_list: Sequence[ArrayLike], x: ArrayLike, *, bits: int = 4, group_size: int = 128, zero_point: bool = True,
                     duo_scaling: bool = False, n_grid: int = 20, loss: Callable | None = None) -> ScaleSearch:
    """Eq. (2)–(5) for the linears ``w_list`` ((rows_i, K) each) sharing the input ``x`` (..., K).

    ``loss(w_hats) -> float`` measures a list of candidate weights ``Q(W·s)/s``; default
    :func:`layer_loss` (the linears' own outputs). :func:`refquant.ptq.awq_model.awq_quantize` passes the
    error at the fold's ``inspect`` linear. The candidates for all α are formed at once; :func:`awq_search_scale_ref`
    is the one-α-at-a-time twin, equal to it exactly.
    """
    return _search(w_list, x, bits, group_size, zero_point, duo_scaling, n_grid, loss, False)


def awq_search_scale_ref(w_list: Sequence[ArrayLike], x: ArrayLike, *, bits: int = 4, group_size: int = 128, zero_point: bool = True,
                         duo_scaling: bool = False, n_grid: int = 20, loss: Callable | None = None) -> ScaleSearch:
    """Loop twin of :func:`awq_search_scale` (scalar candidates and quantizer, same loss)."""
    return _search(w_list, x, bits, group_size, zero_point, duo_scaling, n_grid, loss, True)
