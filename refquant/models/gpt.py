"""A tiny decoder-only GPT in NumPy with a hand-written backward pass — the model on which every
quantization technique in refquant is shown end to end.

    x = wte[idx] + wpe[:T]                                   (B, T, C)
    for each block:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
    logits = ln_f(x) @ lm_headᵀ                              (B, T, V)

Linear weights are stored (out, in), as PyTorch and TFLite do: ``y = x @ Wᵀ + b``, so "per output
channel" is axis 0 and groups run along the input dimension, axis 1. GELU is the exact erf form.
Every op has its backward written out (``_*_backward``); ``loss_and_grads`` returns the mean
cross-entropy and the gradient of every parameter, checked against finite differences in the tests.
The arithmetic follows the parameters' dtype (float32 to train, float64 for gradient checks).

References
----------
Vaswani et al., "Attention Is All You Need", NeurIPS 2017 (§3.2 attention).
Radford et al., "Language Models are Unsupervised Multitask Learners" (GPT-2), 2019 (pre-LayerNorm).
Karpathy, nanoGPT ``model.py`` (layout and naming). Hendrycks & Gimpel, "Gaussian Error Linear Units", 2016.
Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (AdamW), ICLR 2019, Algorithm 2.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import math

import numpy as np
from numpy.typing import ArrayLike, DTypeLike
from scipy.special import erf


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 48  # characters
    context_length: int = 64  # T: the longest sequence the model sees (positions embedded)
    n_layer: int = 2  # transformer blocks
    n_head: int = 4  # attention heads
    n_embd: int = 96  # embedding width C (head size C / n_head)


def linear_names(cfg: GPTConfig) -> list:
    """Names of the linear layers' weights, in forward order: the targets of weight quantization."""
    names = []
    for i in range(cfg.n_layer):
        names += [f"h{i}.attn.c_attn.w", f"h{i}.attn.c_proj.w", f"h{i}.mlp.c_fc.w", f"h{i}.mlp.c_proj.w"]
    return names + ["lm_head.w"]


def init_params(cfg: GPTConfig, seed: int = 0, dtype: DTypeLike = np.float32) -> dict:
    """GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2·n_layer)."""
    rng = np.random.default_rng(seed)
    C, V = cfg.n_embd, cfg.vocab_size
    n = lambda *shape, std=0.02: (rng.standard_normal(shape) * std).astype(dtype)  # noqa: E731
    proj_std = 0.02 / math.sqrt(2 * cfg.n_layer)
    p = {"wte": n(V, C), "wpe": n(cfg.context_length, C)}
    for i in range(cfg.n_layer):
        h = f"h{i}."
        p[h + "ln_1.g"], p[h + "ln_1.b"] = np.ones(C, dtype), np.zeros(C, dtype)
        p[h + "attn.c_attn.w"], p[h + "attn.c_attn.b"] = n(3 * C, C), np.zeros(3 * C, dtype)
        p[h + "attn.c_proj.w"], p[h + "attn.c_proj.b"] = n(C, C, std=proj_std), np.zeros(C, dtype)
        p[h + "ln_2.g"], p[h + "ln_2.b"] = np.ones(C, dtype), np.zeros(C, dtype)
        p[h + "mlp.c_fc.w"], p[h + "mlp.c_fc.b"] = n(4 * C, C), np.zeros(4 * C, dtype)
        p[h + "mlp.c_proj.w"], p[h + "mlp.c_proj.b"] = n(C, 4 * C, std=proj_std), np.zeros(C, dtype)
    p["ln_f.g"], p["ln_f.b"] = np.ones(C, dtype), np.zeros(C, dtype)
    p["lm_head.w"] = n(V, C)
    return p


# ---------------------------------------------------------------- ops and their backward passes
def _layernorm(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mu) * rstd
    return xhat * g + b, (xhat, rstd, g)


def _layernorm_backward(dy, cache):
    xhat, rstd, g = cache
    dg = (dy * xhat).reshape(-1, xhat.shape[-1]).sum(0)
    db = dy.reshape(-1, xhat.shape[-1]).sum(0)
    dxhat = dy * g
    dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    return dx, dg, db


def affine(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``x @ wᵀ + b`` for x (..., in), w (out, in), b (out,) or None: every linear layer of the model."""
    y = x @ w.T
    return y if b is None else y + b


def _linear_backward(dy, x, w):
    """For ``y = x @ wᵀ + b``: (dw, db, dx) from dy, with x, dy of shape (..., in) and (..., out)."""
    dy2, x2 = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])
    return dy2.T @ x2, dy2.sum(0), dy @ w


def _gelu(u):
    return 0.5 * u * (1.0 + erf(u / math.sqrt(2.0)))


def _gelu_backward(du_out, u):
    cdf = 0.5 * (1.0 + erf(u / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)
    return du_out * (cdf + u * pdf)


def _attention(qkv, n_head):
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    q, k, v = (t.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3) for t in np.split(qkv, 3, axis=-1))  # (B, nh, T, hs)
    att = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs)  # (B, nh, T, T)
    att = np.where(np.tril(np.ones((T, T), bool)), att, -np.inf)
    att = np.exp(att - att.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)  # (B, T, C)
    return y, (q, k, v, att)


def _attention_backward(dy, cache):
    q, k, v, att = cache
    B, nh, T, hs = q.shape
    dy = dy.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)  # (B, nh, T, hs)
    datt = dy @ v.transpose(0, 1, 3, 2)
    dv = att.transpose(0, 1, 3, 2) @ dy
    ds = att * (datt - (datt * att).sum(-1, keepdims=True)) / math.sqrt(hs)  # softmax backward (masked entries are 0)
    dq = ds @ k
    dk = ds.transpose(0, 1, 3, 2) @ q
    merge = lambda t: t.transpose(0, 2, 1, 3).reshape(B, T, nh * hs)  # noqa: E731
    return np.concatenate([merge(dq), merge(dk), merge(dv)], axis=-1)


def call_linear(linear: Callable | None, name: str, x: np.ndarray, w: np.ndarray, b: np.ndarray |
                None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply a ``linear=`` hook and normalise what it returns to ``(y, x_used, w_used)``.

    The hook contract, shared by every model in :mod:`refquant.models`: ``linear(name, x, w, b)``
    computes the layer ``y ≈ x @ wᵀ + b`` (x (..., in), w (out, in), b (out,) or None) and returns
    either ``y`` alone — the operands were used as given — or ``(y, x_used, w_used)``, the operands the
    layer actually multiplied (a fake-quantized activation x̂ and weight ŵ). The backward pass forms
    ``dW = dyᵀ x_used`` and ``dx = dy w_used``: the weight gradient of a layer with a quantized input
    uses x̂, not x, and the gradient reaches x and w straight through the quantizers (the STE; a QAT
    hook that needs the quantizers' own masks applies them to what it returns).
    """
    if linear is None:
        return affine(x, w, b), x, w
    out = linear(name, x, w, b)
    if isinstance(out, tuple):
        if len(out) != 3:
            raise ValueError(f"linear: the hook for {name!r} returned a tuple of {len(out)}; expected y or (y, x_used, w_used)")
        return out
    return out, x, w


def embed(p: dict, idx: np.ndarray, cfg: GPTConfig) -> np.ndarray:
    """The residual stream entering block 0: ``wte[idx] + wpe[:T]`` (B, T, C) for token ids ``idx`` (B, T)."""
    T = idx.shape[1]
    if T > cfg.context_length:
        raise ValueError(f"idx: sequence length {T} exceeds context_length {cfg.context_length}")
    return p["wte"][idx] + p["wpe"][:T]  # (B, T, C)


def _block(p, i, x, cfg, lin, tap):
    """Block ``i`` on x (B, T, C) with ``lin(name, x, w, b) -> y``: (x', the backward pass's cache)."""
    h = f"h{i}."
    a, c_ln1 = _layernorm(x, p[h + "ln_1.g"], p[h + "ln_1.b"])
    qkv = lin(h + "attn.c_attn.w", a, p[h + "attn.c_attn.w"], p[h + "attn.c_attn.b"])  # (B, T, 3C)
    y, c_att = _attention(qkv, cfg.n_head)
    x = x + lin(h + "attn.c_proj.w", y, p[h + "attn.c_proj.w"], p[h + "attn.c_proj.b"])
    tap("res", x)
    m, c_ln2 = _layernorm(x, p[h + "ln_2.g"], p[h + "ln_2.b"])
    u = lin(h + "mlp.c_fc.w", m, p[h + "mlp.c_fc.w"], p[h + "mlp.c_fc.b"])  # (B, T, 4C)
    g = _gelu(u)
    tap(h + "gelu", g)
    x = x + lin(h + "mlp.c_proj.w", g, p[h + "mlp.c_proj.w"], p[h + "mlp.c_proj.b"])
    tap("res", x)
    return x, (c_ln1, c_att, c_ln2, u)  # the linear layers' inputs are kept by `lin` when needed


def block(p: dict, i: int, x: np.ndarray, cfg: GPTConfig, *, linear: Callable | None = None,
          tap: Callable | None = None) -> np.ndarray:
    """Block ``i`` on the residual stream x (B, T, C): ``x + attn(ln_1(x))``, then ``+ mlp(ln_2(·))``.

    The same arithmetic as inside :func:`forward` (hooks included), so ``head(block(…block(embed(idx))))``
    equals ``forward(idx)`` exactly: quantization algorithms that cache each block's inputs (GPTQ's
    sequential driver, AWQ) run one block at a time through it."""
    lin = lambda name, h, w, b: call_linear(linear, name, h, w, b)[0]  # noqa: E731
    return _block(p, i, x, cfg, lin, tap or (lambda name, v: None))[0]


def head(p: dict, x: np.ndarray, *, linear: Callable | None = None) -> np.ndarray:
    """Logits (B, T, V) of the residual stream x (B, T, C): ``ln_f(x) @ lm_headᵀ``."""
    xf, _ = _layernorm(x, p["ln_f.g"], p["ln_f.b"])
    return call_linear(linear, "lm_head.w", xf, p["lm_head.w"], None)[0]


def forward(p: dict, idx: np.ndarray, cfg: GPTConfig, *, linear: Callable | None = None, tap: Callable | None = None,
            cache: bool = False) -> np.ndarray | tuple[np.ndarray, tuple]:
    """Logits (B, T, V) for token ids ``idx`` (B, T).

    ``linear(name, x, w, b)`` replaces ``x @ wᵀ + b`` when given (contract: :func:`call_linear`):
    quantization recipes use it to quantize activations (weights are quantized by passing modified
    parameters, or by the hook itself). With ``cache=True`` the operands each layer multiplied are kept
    for :func:`loss_and_grads`. ``tap(name, v)``,
    when given, sees the residual stream (``"res"``, after every update) and each GELU output
    (``"h<i>.gelu"``): calibration for integer-only inference uses it. The same computation, layer
    by layer: :func:`embed`, :func:`block`, :func:`head`.
    """
    used: dict = {}  # name -> (x_used, w_used): what the backward pass multiplies by

    def lin(name, x, w, b):
        y, x_used, w_used = call_linear(linear, name, x, w, b)
        if cache:
            used[name] = (x_used, w_used)
        return y

    tap = tap or (lambda name, v: None)
    x = embed(p, idx, cfg)  # (B, T, C)
    tap("res", x)
    caches = []
    for i in range(cfg.n_layer):
        x, c = _block(p, i, x, cfg, lin, tap)
        caches.append(c)
    xf, c_lnf = _layernorm(x, p["ln_f.g"], p["ln_f.b"])
    logits = lin("lm_head.w", xf, p["lm_head.w"], None)  # (B, T, V)
    return (logits, (idx, caches, xf, c_lnf, used)) if cache else logits


def generate(p: dict, cfg: GPTConfig, ids: ArrayLike, n: int) -> np.ndarray:
    """Greedy continuation: ``ids`` (T0,) token ids extended by ``n`` argmax predictions, int64 (T0 + n,)."""
    out = [int(i) for i in np.asarray(ids).ravel()]
    for _ in range(n):
        logits = forward(p, np.array([out[-cfg.context_length:]]), cfg)  # (1, T, V)
        out.append(int(logits[0, -1].argmax()))
    return np.array(out, np.int64)


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood (nats) and the softmax probabilities."""
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, targets[..., None], axis=-1).mean()
    return float(nll), np.exp(logp)


def loss_and_grads(p: dict, idx: np.ndarray, targets: np.ndarray, cfg: GPTConfig, *, linear: Callable | None = None,
                   linear_backward: Callable | None = None) -> tuple[float, dict]:
    """Mean cross-entropy of next-token prediction and the gradient of every parameter.

    With a ``linear=`` hook the gradients are those of the hooked model, each linear layer
    differentiated at the operands it actually multiplied (see :func:`call_linear`).
    ``linear_backward(name, dx_used)``, when given, receives each linear layer's gradient with respect
    to the input it multiplied (dL/dx̂, shape of x) and returns the gradient passed on to its input x
    (default: dx_used itself, the identity STE): the hook of a quantization-aware activation
    quantizer, which applies its window and reads dL/dx̂ for its own parameters' gradients.
    """
    logits, (idx, caches, xf, c_lnf, used) = forward(p, idx, cfg, linear=linear, cache=True)
    loss, prob = cross_entropy(logits, targets)
    B, T, V = logits.shape
    dlogits = prob
    np.put_along_axis(dlogits, targets[..., None], np.take_along_axis(prob, targets[..., None], -1) - 1, -1)
    dlogits /= B * T
    g = {k: np.zeros_like(v) for k, v in p.items()}

    def lin_back(dy, name):
        x_used, w_used = used[name]
        dw, db, dx = _linear_backward(dy, x_used, w_used)
        return dw, db, (dx if linear_backward is None else linear_backward(name, dx))

    g["lm_head.w"], _, dxf = lin_back(dlogits, "lm_head.w")
    dx, g["ln_f.g"], g["ln_f.b"] = _layernorm_backward(dxf, c_lnf)
    for i in reversed(range(cfg.n_layer)):
        h = f"h{i}."
        c_ln1, c_att, c_ln2, u = caches[i]
        # MLP: x = x + gelu(m Wfcᵀ + bfc) Wprojᵀ + bproj
        g[h + "mlp.c_proj.w"], g[h + "mlp.c_proj.b"], dgl = lin_back(dx, h + "mlp.c_proj.w")
        g[h + "mlp.c_fc.w"], g[h + "mlp.c_fc.b"], dm = lin_back(_gelu_backward(dgl, u), h + "mlp.c_fc.w")
        dm, g[h + "ln_2.g"], g[h + "ln_2.b"] = _layernorm_backward(dm, c_ln2)
        dx = dx + dm
        # attention: x = x + attn(a Wattnᵀ + battn) Wprojᵀ + bproj
        g[h + "attn.c_proj.w"], g[h + "attn.c_proj.b"], dy = lin_back(dx, h + "attn.c_proj.w")
        dqkv = _attention_backward(dy, c_att)
        g[h + "attn.c_attn.w"], g[h + "attn.c_attn.b"], da = lin_back(dqkv, h + "attn.c_attn.w")
        da, g[h + "ln_1.g"], g[h + "ln_1.b"] = _layernorm_backward(da, c_ln1)
        dx = dx + da
    np.add.at(g["wte"], idx, dx)
    g["wpe"][:T] = dx.sum(0)
    return loss, g


def adamw_step(p: dict, g: dict, state: dict, *, lr: float, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
               weight_decay: float = 0.1) -> dict:
    """One AdamW step, in place on ``p`` and ``state`` (``{"t": 0}`` to start); decay on 2-D weights only."""
    b1, b2 = betas
    state["t"] = t = state.get("t", 0) + 1
    for k in p:
        m = state.setdefault("m." + k, np.zeros_like(p[k]))
        v = state.setdefault("v." + k, np.zeros_like(p[k]))
        m *= b1
        m += (1 - b1) * g[k]
        v *= b2
        v += (1 - b2) * g[k] * g[k]
        mhat = m / (1 - b1**t)
        vhat = v / (1 - b2**t)
        if p[k].ndim == 2 and weight_decay:
            p[k] *= 1 - lr * weight_decay
        p[k] -= (lr * mhat / (np.sqrt(vhat) + eps)).astype(p[k].dtype)
    return state
