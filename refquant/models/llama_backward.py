"""The backward pass of the LLaMA decoder (:mod:`refquant.models.llama`): the mean cross-entropy of
next-token prediction and the gradient of every parameter, each op differentiated from its equation.

The forward is recomputed here with the model's own ops (``rmsnorm``, ``rope``, ``silu``, the
grouped attention written out as ``llama.attention`` does, operation for operation), so the logits —
and the loss — are bit-identical to ``llama.forward``'s; what the backward needs is kept on the way.
Per block, with ``r = 1 / sqrt(mean(x²) + ε)`` and ``x̃ = x · r``::

    RMSNorm    y = x̃ · g                     dg = Σ dy · x̃          dx = r · (d − x̃ · mean(d · x̃)),  d = dy · g   (1)
    linear     y = x Wᵀ                      dW = dyᵀ x_used         dx = dy W_used                              (2)
    RoPE       y = R(θ) x  (2×2 rotations)   dx = R(θ)ᵀ dy = R(−θ) dy: the inverse rotation                     (3)
    attention  P = softmax(q kᵀ/√hd + M)     dv = Pᵀ dy,  dP = dy vᵀ,  dS = P ⊙ (dP − Σ_s dP ⊙ P) / √hd,
               y = P v                       dq = dS k,   dk = dSᵀ q                                             (4)
    GQA        query heads h = j·G … j·G + G − 1 read kv head j (G = nh / nkv):
               dk_j = Σ_h dk_h,  dv_j = Σ_h dv_h  — one matmul over the G heads stacked along time             (5)
    SwiGLU     a = silu(z_g) ⊙ z_u           dz_u = da ⊙ silu(z_g),  dz_g = da ⊙ z_u ⊙ σ(z_g)(1 + z_g(1 − σ(z_g)))   (6)
    loss       L = −mean_t log softmax(z_t)[y_t]              dz = (softmax(z) − onehot(y)) / (B·T)            (7)

The masked scores are −inf, so P is 0 there and (4) sends them no gradient. The residual stream adds
the gradients of both branches; the embedding gathers ``dx`` into the rows of the ids (``np.add.at``,
repeated ids summed); a tied head (no ``output.weight``) adds its ``dW`` to ``token_embd.weight``.

Hooks: the same contract as the tiny GPT's (:func:`refquant.models.gpt.call_linear`): a ``linear=``
hook that returns ``(y, x_used, w_used)`` is differentiated at those operands (2), so ``g[name]`` is
``dL/dŵ`` for a fake-quantized weight; ``linear_backward(name, dx_used)`` maps ``dL/dx̂`` to the
gradient passed on to the layer's input (default: the identity STE). Arithmetic in the parameters'
dtype (float32 to train, float64 for gradient checks).

References
----------
Zhang & Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019, eq. 4 (RMSNorm).
Su et al., "RoFormer", 2021, §3.4 (RoPE: an orthogonal rotation, so its adjoint is the inverse).
Ainslie et al., "GQA", EMNLP 2023, §2 (shared key/value heads). Shazeer, "GLU Variants Improve
Transformer", 2020 (SwiGLU). Vaswani et al., "Attention Is All You Need", NeurIPS 2017, §3.2.
The tiny GPT's :func:`refquant.models.gpt.loss_and_grads` (same structure, same hooks).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit

from .gpt import _linear_backward, call_linear, cross_entropy
from .llama import LlamaConfig, causal_mask, embed, rmsnorm, rope


# ---------------------------------------------------------------- the ops' backward passes
def rmsnorm_backward(dy: np.ndarray, x: np.ndarray, g: np.ndarray, eps: float) -> tuple:
    """``(dx, dg)`` of ``y = x / sqrt(mean(x²) + ε) · g`` over the last axis, eq. (1).

    ``dy``, ``x``: (..., C); ``g``: (C,). ``dg`` sums over every leading axis.
    """
    r = 1.0 / np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True) + x.dtype.type(eps))
    xt = x * r  # x̃
    dg = (dy * xt).reshape(-1, x.shape[-1]).sum(0)
    d = dy * g
    dx = r * (d - xt * np.mean(d * xt, axis=-1, keepdims=True))
    return dx, dg


def rope_backward(dy: np.ndarray, positions: ArrayLike, base: float, dim: int | None = None,
                  pairs: str = "adjacent") -> np.ndarray:
    """``dx`` of ``y = rope(x, positions)``, eq. (3): each pair turned back by −θ.

    RoPE multiplies every pair (a, b) by the rotation R(θ) = [[cos θ, −sin θ], [sin θ, cos θ]];
    its Jacobian is R(θ) itself, and R(θ)ᵀ = R(−θ). So the backward is ``rope`` at the negated
    positions (cos(−θ) = cos θ and sin(−θ) = −sin θ exactly, so the same rounded table is used).
    """
    return rope(dy, -np.asarray(positions), base, dim, pairs)


def _attention(q, k, v):
    """``llama.attention`` operation for operation, returning also the probabilities (B, nkv, G·T, S)."""
    B, nh, T, hd = q.shape
    nkv, S = k.shape[1], k.shape[2]
    G = nh // nkv
    qg = q.reshape(B, nkv, G * T, hd)
    att = qg @ k.transpose(0, 1, 3, 2)  # (B, nkv, G·T, S)
    att *= q.dtype.type(1.0 / math.sqrt(hd))
    a5 = att.reshape(B, nkv, G, T, S)
    a5 += causal_mask(T, S, q.dtype)
    att -= att.max(-1, keepdims=True)
    np.exp(att, out=att)
    att /= att.sum(-1, keepdims=True)
    return (att @ v).reshape(B, nh, T, hd), att


def attention_backward(dy: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, att: np.ndarray) -> tuple:
    """``(dq, dk, dv)`` of causal grouped-query attention, eqs. (4)-(5).

    dy, q: (B, nh, T, hd); k, v: (B, nkv, S, hd); att: the probabilities (B, nkv, G·T, S) with the G
    query heads of each kv head stacked along time (as the forward computes them). The products over
    the stacked axis sum the G query heads' contributions to their shared k and v (the GQA sum).
    """
    B, nh, T, hd = q.shape
    nkv = k.shape[1]
    G = nh // nkv
    dyg = dy.reshape(B, nkv, G * T, hd)
    dv = att.transpose(0, 1, 3, 2) @ dyg  # (B, nkv, S, hd): Σ over the G heads and their T queries
    datt = dyg @ v.transpose(0, 1, 3, 2)  # (B, nkv, G·T, S)
    ds = att * (datt - (datt * att).sum(-1, keepdims=True))  # softmax backward; 0 where masked
    ds *= q.dtype.type(1.0 / math.sqrt(hd))
    dq = (ds @ k).reshape(B, nh, T, hd)
    dk = ds.transpose(0, 1, 3, 2) @ q.reshape(B, nkv, G * T, hd)  # (B, nkv, S, hd)
    return dq, dk, dv


def silu_backward(da: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``dz`` of ``a = silu(z) = z · σ(z)``: ``da · σ(z) (1 + z (1 − σ(z)))``, eq. (6)."""
    s = expit(z)
    return da * (s * (1 + z * (1 - s)))


# ---------------------------------------------------------------- the model
def _forward(p, idx, cfg, linear):
    """Logits (B, T, V) as ``llama.forward`` (no cache), and what the backward needs."""
    used: dict = {}

    def lin(name, x, w):
        y, x_used, w_used = call_linear(linear, name, x, w, None)
        used[name] = (x_used, w_used)
        return y

    x = embed(p, idx)
    B, T, C = x.shape
    if T > cfg.context_length:
        raise ValueError(f"idx: sequence length {T} exceeds context_length {cfg.context_length}")
    nh, nkv, hd = cfg.n_head, cfg.n_kv_head, cfg.head_dim
    pos = np.arange(T)
    caches = []
    for i in range(cfg.n_layer):
        b = f"blk.{i}."
        x0 = x
        h = rmsnorm(x, p[b + "attn_norm.weight"], cfg.norm_eps)
        q = lin(b + "attn_q.weight", h, p[b + "attn_q.weight"]).reshape(B, T, nh, hd).transpose(0, 2, 1, 3)
        k = lin(b + "attn_k.weight", h, p[b + "attn_k.weight"]).reshape(B, T, nkv, hd).transpose(0, 2, 1, 3)
        v = lin(b + "attn_v.weight", h, p[b + "attn_v.weight"]).reshape(B, T, nkv, hd).transpose(0, 2, 1, 3)
        q = rope(q, pos, cfg.rope_base, cfg.rope_dim, cfg.rope_pairs)  # (B, nh, T, hd)
        k = rope(k, pos, cfg.rope_base, cfg.rope_dim, cfg.rope_pairs)  # (B, nkv, T, hd)
        y, att = _attention(q, k, v)
        y = y.transpose(0, 2, 1, 3).reshape(B, T, C)
        x = x + lin(b + "attn_output.weight", y, p[b + "attn_output.weight"])
        x1 = x
        h = rmsnorm(x, p[b + "ffn_norm.weight"], cfg.norm_eps)
        zg = lin(b + "ffn_gate.weight", h, p[b + "ffn_gate.weight"])  # (B, T, F)
        zu = lin(b + "ffn_up.weight", h, p[b + "ffn_up.weight"])
        a = expit(zg)  # silu(zg) ⊙ zu, in llama.silu's order
        a *= zg
        a *= zu
        x = x + lin(b + "ffn_down.weight", a, p[b + "ffn_down.weight"])
        caches.append((x0, q, k, v, att, x1, zg, zu))
    xf = x
    h = rmsnorm(x, p["output_norm.weight"], cfg.norm_eps)
    w = p["output.weight"] if "output.weight" in p else p["token_embd.weight"]
    logits = lin("output.weight", h, w)  # (B, T, V)
    return logits, (caches, xf, used)


def loss_and_grads(p: dict, idx: ArrayLike, targets: ArrayLike, cfg: LlamaConfig, *, linear: Callable | None = None,
                   linear_backward: Callable | None = None) -> tuple:
    """Mean cross-entropy of next-token prediction and the gradient of every parameter of a LLaMA model.

    Parameters
    ----------
    p : dict of arrays — the model (:mod:`refquant.models.llama` names; without ``output.weight`` the
        head is tied to ``token_embd.weight``, which then receives both gradients)
    idx, targets : int arrays (B, T) — input ids and the ids to predict (usually ``idx`` shifted by one)
    cfg : LlamaConfig
    linear : hook ``(name, x, w, None) -> y | (y, x_used, w_used)``
        (:func:`refquant.models.gpt.call_linear`); each layer is differentiated at the operands returned
    linear_backward : callable ``(name, dx_used) -> dx`` or None — the gradient passed to a layer's input
        from ``dL/dx̂`` (None: the identity, the straight-through estimator)

    Returns
    -------
    (loss, grads) : float, and a dict with an array of each parameter's shape and dtype (eqs. 1-7)
    """
    targets = np.asarray(targets)
    logits, (caches, xf, used) = _forward(p, idx, cfg, linear)
    if targets.shape != logits.shape[:2] or targets.dtype.kind not in "iu":
        raise ValueError(f"targets: expected integer ids of shape {logits.shape[:2]}, got {targets.dtype} {targets.shape}")
    loss, prob = cross_entropy(logits, targets)
    del logits
    B, T, V = prob.shape
    C, nh, nkv, hd = cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.head_dim
    pos = np.arange(T)
    dz = prob  # eq. (7), in place
    np.put_along_axis(dz, targets[..., None], np.take_along_axis(prob, targets[..., None], -1) - 1, -1)
    dz /= B * T
    g = {"token_embd.weight": np.zeros_like(p["token_embd.weight"])}  # every other entry is assigned once

    def lin_back(dy, name):
        x_used, w_used = used.pop(name)
        dw, _, dx = _linear_backward(dy, x_used, w_used)
        return dw, (dx if linear_backward is None else linear_backward(name, dx))

    dw_head, dh = lin_back(dz, "output.weight")
    del dz, prob
    if "output.weight" in p:
        g["output.weight"] = dw_head
    else:
        g["token_embd.weight"] += dw_head
    dx, g["output_norm.weight"] = rmsnorm_backward(dh, xf, p["output_norm.weight"], cfg.norm_eps)
    for i in reversed(range(cfg.n_layer)):
        b = f"blk.{i}."
        x0, q, k, v, att, x1, zg, zu = caches.pop()
        # SwiGLU: x2 = x1 + (silu(zg) ⊙ zu) W_downᵀ, zg / zu = rmsnorm(x1) W_gate / W_upᵀ
        g[b + "ffn_down.weight"], da = lin_back(dx, b + "ffn_down.weight")
        s = expit(zg)
        dzu = da * (s * zg)
        dzg = silu_backward(da * zu, zg)
        g[b + "ffn_up.weight"], dh = lin_back(dzu, b + "ffn_up.weight")
        g[b + "ffn_gate.weight"], dh2 = lin_back(dzg, b + "ffn_gate.weight")
        dh += dh2
        dn, g[b + "ffn_norm.weight"] = rmsnorm_backward(dh, x1, p[b + "ffn_norm.weight"], cfg.norm_eps)
        dx = dx + dn
        # attention: x1 = x0 + attn(rope(q), rope(k), v) W_oᵀ, q / k / v = rmsnorm(x0) W_q / W_k / W_vᵀ
        g[b + "attn_output.weight"], dy = lin_back(dx, b + "attn_output.weight")
        dy = dy.reshape(B, T, nh, hd).transpose(0, 2, 1, 3)  # (B, nh, T, hd)
        dq, dk, dv = attention_backward(dy, q, k, v, att)
        dq = rope_backward(dq, pos, cfg.rope_base, cfg.rope_dim, cfg.rope_pairs)
        dk = rope_backward(dk, pos, cfg.rope_base, cfg.rope_dim, cfg.rope_pairs)
        dh = None
        for name, d, n in (("attn_q.weight", dq, nh), ("attn_k.weight", dk, nkv), ("attn_v.weight", dv, nkv)):
            g[b + name], dhi = lin_back(d.transpose(0, 2, 1, 3).reshape(B, T, n * hd), b + name)
            dh = dhi if dh is None else dh + dhi
        dn, g[b + "attn_norm.weight"] = rmsnorm_backward(dh, x0, p[b + "attn_norm.weight"], cfg.norm_eps)
        dx = dx + dn
    np.add.at(g["token_embd.weight"], np.asarray(idx), dx)
    return loss, {k: g[k] for k in p}
