"""Language-model metrics from logits: perplexity in the two conventions the quantization literature
uses, next-token top-1 accuracy, and the KL divergence of a quantized model's next-token distribution
from the float model's.

A window of T tokens gives T − 1 predictions: logits[t] predicts ids[t + 1], t = 0 … T − 2.
``nll[t] = −log softmax(logits[t])[ids[t + 1]] = lse[t] − logits[t, ids[t + 1]]``, with
``lse = max + log Σ_v exp(z_v − max)`` taken as llama.cpp does: exp in float32, the sum in float64
(llama.cpp also rounds ``logit − max`` to float32 before subtracting the log: ~1e-8 relative).

* **GPTQ / AWQ convention** (``perplexity``): every prediction of every window counts;
  ``ppl = exp(Σ nll / count)``. GPTQ's ``llama_eval`` averages the windows' mean losses, which is the
  same number for windows of equal length (seqlen 2048 there; 512 in our tables).
* **llama.cpp convention** (``perplexity_llamacpp``): ``tools/perplexity/perplexity.cpp:
  perplexity()`` scores only the second half of each window of ``n_ctx`` tokens, so that every
  scored token has at least ``n_ctx/2`` tokens of context: ``first = n_ctx/2``, predictions
  t = first … n_ctx − 2, i.e. ``n_ctx − first − 1`` = 255 per window of 512.
* **KL divergence** (llama.cpp ``--kl-divergence``): ``KL(P_base ‖ P) = Σ_v p_base,v (log p_base,v −
  log p_v)`` per prediction, averaged; computed as ``Σ_v e_v (zb_v − z_v) / Σ_v e_v − (lse_base − lse)``
  with ``e = exp(zb − max zb)`` — exactly 0 for equal or shifted logits, else within ~1e-7 (the
  float32 exp): a KL below that is noise. llama.cpp stores the base
  log-probabilities as 16-bit codes and skips terms with log p_base ≤ −16: differences of ~1e-6.
  ``same_top``: the fraction of predictions where both models' argmax agree (llama.cpp "Same top p").
* **top-1**: the fraction of predictions whose argmax is the actual next token.

Every metric is reported over both position sets (suffix ``_llamacpp`` for the second halves).

References
----------
Frantar et al., "GPTQ", ICLR 2023, §5 and ``llama.py: llama_eval`` (IST-DASLab/gptq).
llama.cpp ``tools/perplexity/perplexity.cpp``: ``perplexity``, ``log_softmax``, ``kl_divergence``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

_ROWS = 64  # rows of (T, V) logits processed at a time: bounds the float64 temporaries


def _check(logits, ids):
    z = np.asarray(logits)
    ids = np.asarray(ids)
    if z.ndim != 2 or ids.ndim != 1 or len(ids) != len(z):
        raise ValueError(f"logits (T, V) and ids (T,) expected, got {z.shape} and {ids.shape}")
    if len(ids) < 2:
        raise ValueError("ids: a window needs at least 2 tokens")
    if ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() >= z.shape[1]:
        raise ValueError(f"ids: token ids must be integers in [0, {z.shape[1]})")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits must be finite")
    return z, ids


def _lse(z):
    """(lse (rows,) float64, e = exp(z − max) float32) of float32 rows (rows, V)."""
    m = z.max(-1, keepdims=True)
    e = np.exp(z - m)
    return m[:, 0].astype(np.float64) + np.log(e.sum(-1, dtype=np.float64)), e


def log_softmax(z: ArrayLike) -> np.ndarray:
    """``z − lse(z)`` over the last axis (float64), lse as in the module docstring."""
    z = np.asarray(z, np.float32)
    lse, _ = _lse(z.reshape(-1, z.shape[-1]))
    return z.astype(np.float64) - lse.reshape(z.shape[:-1] + (1,))


def score_window(logits: ArrayLike, ids: ArrayLike, base_logits: ArrayLike | None = None) -> dict:
    """Per-prediction scores of one window: logits (T, V) float, ids (T,) int.

    Returns arrays of length T − 1 (prediction t is of ids[t + 1]): ``nll`` (float64), ``top1`` (bool);
    with ``base_logits`` (T, V) of the reference model also ``kl`` (float64, KL(P_base ‖ P)) and
    ``same_top`` (bool).
    """
    z, ids = _check(logits, ids)
    z = z.astype(np.float32, copy=False)
    if base_logits is not None:
        zb, _ = _check(base_logits, ids)
        if zb.shape != z.shape:
            raise ValueError(f"base_logits: shape {zb.shape} differs from logits {z.shape}")
        zb = zb.astype(np.float32, copy=False)
    T = len(ids)
    out = {"nll": np.empty(T - 1), "top1": np.empty(T - 1, bool)}
    if base_logits is not None:
        out["kl"], out["same_top"] = np.empty(T - 1), np.empty(T - 1, bool)
    for r0 in range(0, T - 1, _ROWS):
        r = np.arange(r0, min(T - 1, r0 + _ROWS))
        lse, _ = _lse(z[r])
        out["nll"][r] = lse - z[r, ids[r + 1]]
        top = z[r].argmax(-1)
        out["top1"][r] = top == ids[r + 1]
        if base_logits is not None:
            lse_b, e_b = _lse(zb[r])
            diff = zb[r].astype(np.float64)
            diff -= z[r]  # in float64: a float32 difference would not cancel against lse_b − lse
            dot = (diff * e_b).sum(-1)
            out["kl"][r] = dot / e_b.sum(-1, dtype=np.float64) - (lse_b - lse)
            out["same_top"][r] = top == zb[r].argmax(-1)
    return out


def summarize(scores: Sequence[dict], n_ctx: int) -> dict:
    """Aggregate :func:`score_window` results of windows of ``n_ctx`` tokens, both conventions.

    Keys: ``perplexity`` / ``perplexity_llamacpp``, ``top1`` / ``top1_llamacpp``, ``tokens`` /
    ``tokens_llamacpp`` (predictions counted), and when scored against a base model ``kl_divergence``
    / ``kl_divergence_llamacpp``, ``same_top`` / ``same_top_llamacpp``.
    """
    scores = list(scores)
    if not scores:
        raise ValueError("scores: no windows")
    if any(len(s["nll"]) != n_ctx - 1 for s in scores):
        raise ValueError(f"scores: every window must have n_ctx − 1 = {n_ctx - 1} predictions")
    first = n_ctx // 2  # llama.cpp: predictions from position n_ctx/2 on
    out = {}
    for suffix, sl in (("", slice(0, None)), ("_llamacpp", slice(first, None))):
        cat = {k: np.concatenate([s[k][sl] for s in scores]) for k in scores[0]}
        out["perplexity" + suffix] = float(np.exp(cat["nll"].mean()))
        out["top1" + suffix] = float(cat["top1"].mean())
        out["tokens" + suffix] = int(cat["nll"].size)
        if "kl" in cat:
            out["kl_divergence" + suffix] = float(cat["kl"].mean())
            out["same_top" + suffix] = float(cat["same_top"].mean())
    return out


def evaluate(logits_fn: Callable[[np.ndarray], np.ndarray], windows: np.ndarray,
             base_logits_fn: Callable[[np.ndarray], np.ndarray] | None = None,
             progress: Callable[[int, int], object] | None = None) -> dict:
    """Score a model on token windows (n, n_ctx): ``logits_fn(w)`` maps one window (1, n_ctx) to its
    logits (1, n_ctx, V). ``base_logits_fn``: the reference model, for KL and same-top. ``progress(i,
    n)`` is called after each window. Returns :func:`summarize`'s dict."""
    windows = np.asarray(windows)
    if windows.ndim != 2:
        raise ValueError(f"windows: expected (n, n_ctx) token ids, got shape {windows.shape}")
    scores = []
    for i, w in enumerate(windows):
        base = None if base_logits_fn is None else base_logits_fn(w[None])[0]
        scores.append(score_window(logits_fn(w[None])[0], w, base))
        if progress is not None:
            progress(i + 1, len(windows))
    return summarize(scores, windows.shape[1])
