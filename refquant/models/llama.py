"""A LLaMA-family decoder in NumPy float32 (SmolLM2, Llama 2/3 and their GQA relatives): the forward
pass block by block, with a KV cache. Sampling, generation and the ChatML prompt of the instruct models
are in :mod:`refquant.models.llama_generate`.

    x = token_embd[idx]                                                        (B, T, C)
    for each block i:
        h = rmsnorm(x) · attn_norm
        q, k, v = h W_qᵀ, h W_kᵀ, h W_vᵀ                      (B, nh, T, hd), (B, nkv, T, hd) × 2
        q, k = rope(q, pos), rope(k, pos)
        x = x + softmax(q kᵀ / √hd + causal mask) v W_oᵀ     each kv head serves nh / nkv query heads
        h = rmsnorm(x) · ffn_norm
        x = x + (silu(h W_gateᵀ) ⊙ h W_upᵀ) W_downᵀ                                        (SwiGLU)
    logits = (rmsnorm(x) · output_norm) W_outᵀ               W_out = token_embd when the head is tied

Parameters are a flat dict named as in a GGUF file (``token_embd.weight``, ``blk.{i}.attn_q.weight``,
…, ``output_norm.weight``; ``output.weight`` absent = tied to ``token_embd.weight``). Linear weights
are stored (out, in) like the tiny GPT's, so ``y = x @ Wᵀ`` and the hooks are the same:
``linear(name, x, w, b)`` (contract: :func:`refquant.models.gpt.call_linear`, ``b`` is always None
here; names are the weights' names, the head is ``"output.weight"``) and ``tap(name, v)``, which sees
the residual stream (``"res"``, after the embedding and after every update, 2·n_layer + 1 calls) and
each SwiGLU product (``"blk.{i}.ffn_act"``, the input of ``ffn_down``).

RoPE pairs. Rotary embeddings rotate pairs of features of each head by ``pos · base^(−2i/d)``.
llama.cpp runs the ``llama`` architecture with rope type NORM: pairs of *adjacent* features
(2i, 2i + 1). Hugging Face's ``rotate_half`` pairs features (i, i + d/2). The GGUF converter makes the
two agree by permuting the rows of W_q and W_k within each head (:func:`permute_qk`: new row 2i + j
= old row i + j·d/2), so a GGUF file is run with ``rope_pairs="adjacent"`` and the original Hugging
Face weights with ``"half"``; a test checks that both give the same logits.

The model is written layer by layer (:func:`embed`, :func:`block`, :func:`head`) so that a caller can
load one block's weights, run it, and release it (``refquant.io.gguf`` streams a checkpoint so).

References
----------
Touvron et al., "LLaMA: Open and Efficient Foundation Language Models", arXiv:2302.13971, §2.2.
Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding", 2021, §3.4 (RoPE).
Ainslie et al., "GQA: Training Generalized Multi-Query Transformer Models from Multi-Head
Checkpoints", EMNLP 2023 (grouped-query attention). Shazeer, "GLU Variants Improve Transformer",
2020 (SwiGLU). Zhang & Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019 (RMSNorm).
llama.cpp ``src/llama-model.cpp`` (``llama_model_rope_type``: LLM_ARCH_LLAMA → LLAMA_ROPE_TYPE_NORM),
``convert_hf_to_gguf.py`` (``LlamaModel.permute``, applied to q_proj with (n_head, n_head) and to
k_proj with (n_head, n_head_kv)).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import math

import numpy as np
from numpy.typing import ArrayLike, DTypeLike
from scipy.special import expit
from .gpt import call_linear


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int = 49152  # V: tokens in the vocabulary
    context_length: int = 8192  # the longest sequence (prompt + generated) the model was trained on
    n_layer: int = 30  # transformer blocks
    n_embd: int = 576  # C: width of the residual stream
    n_ff: int = 1536  # F: hidden width of the SwiGLU feed-forward
    n_head: int = 9  # nh: query heads (head size hd = C / nh)
    n_kv_head: int = 3  # nkv: key/value heads; nh / nkv query heads share one (GQA; nkv = nh is MHA)
    rope_base: float = 100000.0  # θ base: pair i of a head turns by pos · base^(−2i / rope_dim)
    rope_dim: int = 64  # features of each head that RoPE rotates (the first rope_dim; = hd here)
    rope_pairs: str = "adjacent"  # "adjacent" (2i, 2i+1): llama.cpp / GGUF; "half" (i, i+d/2): Hugging Face
    norm_eps: float = 1e-5  # ε inside RMSNorm's square root

    def __post_init__(self):
        if self.n_embd % self.n_head or self.n_head % self.n_kv_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head}), "
                             f"and n_head of n_kv_head ({self.n_kv_head})")
        if self.rope_pairs not in ("adjacent", "half"):
            raise ValueError(f"rope_pairs: expected 'adjacent' or 'half', got {self.rope_pairs!r}")
        if self.rope_dim % 2 or not 0 < self.rope_dim <= self.head_dim:
            raise ValueError(f"rope_dim must be even and in (0, head size {self.head_dim}], got {self.rope_dim}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


SMOLLM2_135M = LlamaConfig()  # SmolLM2-135M(-Instruct), as its GGUF metadata states


def block_names(i: int) -> list:
    """The tensors of block ``i``, GGUF names, in forward order (norms and linear weights)."""
    b = f"blk.{i}."
    return [b + n for n in ("attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
                            "attn_output.weight", "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight",
                            "ffn_down.weight")]


def linear_names(cfg: LlamaConfig) -> list:
    """Names of the linear layers, in forward order: the targets of weight quantization."""
    names = [n for i in range(cfg.n_layer) for n in block_names(i) if "norm" not in n]
    return names + ["output.weight"]


def init_params(cfg: LlamaConfig, seed: int = 0, *, tied: bool = True, dtype: DTypeLike = np.float32) -> dict:
    """Random parameters (N(0, 0.02) weights, norm gains near 1) for tests and synthetic checkpoints."""
    rng = np.random.default_rng(seed)
    C, F, hd = cfg.n_embd, cfg.n_ff, cfg.head_dim
    n = lambda *shape: (rng.standard_normal(shape) * 0.02).astype(dtype)  # noqa: E731
    g = lambda: (1 + 0.1 * rng.standard_normal(C)).astype(dtype)  # noqa: E731
    p = {"token_embd.weight": n(cfg.vocab_size, C)}
    for i in range(cfg.n_layer):
        b = f"blk.{i}."
        p[b + "attn_norm.weight"], p[b + "ffn_norm.weight"] = g(), g()
        p[b + "attn_q.weight"], p[b + "attn_output.weight"] = n(C, C), n(C, C)
        p[b + "attn_k.weight"], p[b + "attn_v.weight"] = n(cfg.n_kv_head * hd, C), n(cfg.n_kv_head * hd, C)
        p[b + "ffn_gate.weight"], p[b + "ffn_up.weight"], p[b + "ffn_down.weight"] = n(F, C), n(F, C), n(C, F)
    p["output_norm.weight"] = g()
    if not tied:
        p["output.weight"] = n(cfg.vocab_size, C)
    return p


# ---------------------------------------------------------------- the ops
def rmsnorm(x: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
    """``x / sqrt(mean(x²) + ε) · g`` over the last axis (Zhang & Sennrich 2019, eq. 4; no mean, no bias)."""
    ms = np.mean(np.square(x), axis=-1, keepdims=True)
    return x / np.sqrt(ms + x.dtype.type(eps)) * g


def rope_angles(positions: ArrayLike, dim: int, base: float) -> np.ndarray:
    """Angles (T, dim/2) in float64: ``θ[t, i] = positions[t] · base^(−2i/dim)``."""
    inv_freq = base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
    return np.asarray(positions, np.float64)[:, None] * inv_freq[None, :]


def rope(x: np.ndarray, positions: ArrayLike, base: float, dim: int | None = None, pairs: str =
         "adjacent") -> np.ndarray:
    """Rotate pairs of the first ``dim`` features of ``x`` (..., T, hd) by the angles of ``positions`` (T,).

    For a pair (a, b) and angle θ: ``(a cos θ − b sin θ, a sin θ + b cos θ)``. ``pairs="adjacent"``
    takes (2i, 2i+1) — ggml's ``rope`` mode 0 (NORM); ``"half"`` takes (i, i + dim/2) — Hugging Face
    ``rotate_half`` and ggml's NEOX mode. Pair i turns at frequency ``base^(−2i/dim)`` in both.
    Features beyond ``dim`` pass unchanged. The angles are computed in float64 and their cos / sin
    rounded to x's dtype (ggml accumulates θ in float32 by repeated multiplication: it differs by
    ~1e-7 relative).
    """
    hd = x.shape[-1]
    dim = hd if dim is None else dim
    ang = rope_angles(positions, dim, base)  # (T, dim/2)
    cos, sin = np.cos(ang).astype(x.dtype), np.sin(ang).astype(x.dtype)
    if pairs == "adjacent":
        i0, i1 = slice(0, dim, 2), slice(1, dim, 2)
    elif pairs == "half":
        i0, i1 = slice(0, dim // 2), slice(dim // 2, dim)
    else:
        raise ValueError(f"pairs: expected 'adjacent' or 'half', got {pairs!r}")
    a, b = x[..., i0], x[..., i1]
    out = x.copy()
    out[..., i0] = a * cos - b * sin
    out[..., i1] = a * sin + b * cos
    return out


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """The GGUF converter's row permutation of a q/k projection (out, in): within each head of size
    hd, new row ``2i + j`` = old row ``i + j·hd/2`` (j ∈ {0, 1}), so that adjacent-pair RoPE on the
    permuted weights equals rotate-half RoPE on the original ones. ``n_head``: heads in ``w`` (the KV
    heads for W_k). Mirrors ``LlamaModel.permute`` of llama.cpp's ``convert_hf_to_gguf.py``."""
    w = np.asarray(w)
    out = w.shape[0]
    if out % (2 * n_head):
        raise ValueError(f"w: {out} rows is not a multiple of 2·n_head = {2 * n_head}")
    return w.reshape(n_head, 2, out // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of :func:`permute_qk`: GGUF row order back to Hugging Face's."""
    w = np.asarray(w)
    out = w.shape[0]
    if out % (2 * n_head):
        raise ValueError(f"w: {out} rows is not a multiple of 2·n_head = {2 * n_head}")
    return w.reshape(n_head, out // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def causal_mask(T: int, S: int, dtype: DTypeLike = np.float32) -> np.ndarray:
    """Additive mask (T, S): query t (at position S − T + t) sees keys 0 … S − T + t; −inf elsewhere."""
    allowed = np.arange(S)[None, :] <= np.arange(S - T, S)[:, None]
    return np.where(allowed, 0.0, -np.inf).astype(dtype)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Causal grouped-query attention. q (B, nh, T, hd); k, v (B, nkv, S, hd) with S ≥ T: the queries
    are the last T positions. Query head h reads kv head ``h // (nh / nkv)`` (Hugging Face
    ``repeat_kv``; llama.cpp broadcasts the same way). Returns (B, nh, T, hd)."""
    B, nh, T, hd = q.shape
    nkv, S = k.shape[1], k.shape[2]
    g = nh // nkv
    qg = q.reshape(B, nkv, g * T, hd)  # the g query heads of one kv head, stacked along time
    att = qg @ k.transpose(0, 1, 3, 2)  # (B, nkv, g·T, S); then in place: one (g·T, S) array per kv head
    att *= q.dtype.type(1.0 / math.sqrt(hd))
    a5 = att.reshape(B, nkv, g, T, S)  # a view
    a5 += causal_mask(T, S, q.dtype)
    att -= att.max(-1, keepdims=True)
    np.exp(att, out=att)
    att /= att.sum(-1, keepdims=True)
    return (att @ v).reshape(B, nh, T, hd)


def silu(u: np.ndarray) -> np.ndarray:
    """``u · σ(u)`` (the Swish of SwiGLU)."""
    s = expit(u)
    s *= u
    return s


# ---------------------------------------------------------------- the model, layer by layer
def embed(p: dict, idx: ArrayLike) -> np.ndarray:
    """Token embeddings (B, T, C) of ids ``idx`` (B, T)."""
    idx = np.asarray(idx)
    if idx.ndim != 2 or idx.dtype.kind not in "iu":
        raise ValueError(f"idx: expected integer token ids of shape (B, T), got {idx.dtype} {idx.shape}")
    V = p["token_embd.weight"].shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= V):
        raise ValueError(f"idx: token ids must be in [0, {V}), got [{idx.min()}, {idx.max()}]")
    return p["token_embd.weight"][idx]


def block(p: dict, i: int, x: np.ndarray, cfg: LlamaConfig, *, past: tuple | None = None,
          linear: Callable | None = None, tap: Callable | None =
          None) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Block ``i`` on the residual stream x (B, T, C): returns ``(x', (k, v))``.

    ``past``: None or the (k, v) of the earlier positions (B, nkv, S0, hd) each (a KV cache); the
    queries sit at positions S0 … S0 + T − 1. The returned (k, v) cover all S0 + T positions. Only
    the tensors of block i are read from ``p``.
    """
    B, T, C = x.shape
    nh, nkv, hd = cfg.n_head, cfg.n_kv_head, cfg.head_dim
    b = f"blk.{i}."
    lin = lambda name, h: call_linear(linear, b + name, h, p[b + name], None)[0]  # noqa: E731
    tap = tap or (lambda name, v: None)
    s0 = 0 if past is None else past[0].shape[2]
    pos = np.arange(s0, s0 + T)

    h = rmsnorm(x, p[b + "attn_norm.weight"], cfg.norm_eps)
    q = lin("attn_q.weight", h).reshape(B, T, nh, hd).transpose(0, 2, 1, 3)  # (B, nh, T, hd)
    k = lin("attn_k.weight", h).reshape(B, T, nkv, hd).transpose(0, 2, 1, 3)  # (B, nkv, T, hd)
    v = lin("attn_v.weight", h).reshape(B, T, nkv, hd).transpose(0, 2, 1, 3)  # (B, nkv, T, hd)
    q = rope(q, pos, cfg.rope_base, cfg.rope_dim, cfg.rope_pairs)
    k = rope(k, pos, cfg.rope_base, cfg.rope_dim, cfg.rope_pairs)
    if past is not None:
        k, v = np.concatenate([past[0], k], axis=2), np.concatenate([past[1], v], axis=2)  # (B, nkv, S, hd)
    y = attention(q, k, v).transpose(0, 2, 1, 3).reshape(B, T, C)  # (B, T, C)
    x = x + lin("attn_output.weight", y)
    tap("res", x)

    h = rmsnorm(x, p[b + "ffn_norm.weight"], cfg.norm_eps)
    a = silu(lin("ffn_gate.weight", h))  # (B, T, F)
    a *= lin("ffn_up.weight", h)
    tap(b + "ffn_act", a)
    x = x + lin("ffn_down.weight", a)
    tap("res", x)
    return x, (k, v)


def head(p: dict, x: np.ndarray, cfg: LlamaConfig, *, linear: Callable | None = None) -> np.ndarray:
    """Logits (B, T, V): the final RMSNorm and the output projection (tied to the embedding if no
    ``output.weight``)."""
    h = rmsnorm(x, p["output_norm.weight"], cfg.norm_eps)
    w = p["output.weight"] if "output.weight" in p else p["token_embd.weight"]
    return call_linear(linear, "output.weight", h, w, None)[0]


def forward(p: dict, idx: ArrayLike, cfg: LlamaConfig, *, linear: Callable | None = None, tap: Callable | None = None,
            cache: tuple | None = None) -> np.ndarray | tuple[np.ndarray, tuple]:
    """Logits (B, T, V) for token ids ``idx`` (B, T).

    With ``cache`` (a tuple of per-block (k, v), ``()`` to start) the ids continue the cached
    sequence, and ``(logits, cache')`` is returned: generation prefills the prompt once, then feeds
    one token at a time.
    """
    x = embed(p, idx)
    s0 = cache[0][0].shape[2] if cache else 0
    if s0 + x.shape[1] > cfg.context_length:
        raise ValueError(f"idx: {s0} cached + {x.shape[1]} new positions exceed context_length {cfg.context_length}")
    if tap is not None:
        tap("res", x)
    new = []
    for i in range(cfg.n_layer):
        x, kv = block(p, i, x, cfg, past=cache[i] if cache else None, linear=linear, tap=tap)
        new.append(kv)
    logits = head(p, x, cfg, linear=linear)
    return logits if cache is None else (logits, tuple(new))
