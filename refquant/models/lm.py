"""A language model as the quantization algorithms see it: one description for the tiny GPT and LLaMA.

Recipes, calibration, GPTQ, AWQ and SmoothQuant never name a model: they take an :class:`LM` and call
its ``forward`` with a ``linear=`` hook (the contract of :func:`refquant.models.gpt.call_linear`), read
and replace the weights named in ``linear_names``, and quantize in the order of ``sequential_groups``
(GPTQ's "true sequential": a group's inputs are computed with every earlier group already quantized).

``weight(params, name)`` resolves a tied output head: a LLaMA checkpoint without ``output.weight``
multiplies by ``token_embd.weight``; quantizing the head then stores a separate ``output.weight``
(llama.cpp does the same when the output type differs from the embedding's).

``scale_folds`` says where a per-input-channel scale can be moved without changing the float model
(AWQ, SmoothQuant): for linears ``y = x Wᵀ`` that share the input x, and parameters P that produce x
linearly per channel (a norm's gain and bias, or rows of a preceding linear),

    x' = x / s  (P_j ← P_j / s_j),   W' = W · diag(s)   ⇒   x' W'ᵀ = x Wᵀ                        (1)

:func:`fold_scale` applies (1). Not foldable: an input that passes a non-linearity after its producer
(the tiny GPT's GELU before ``mlp.c_proj``, LLaMA's SwiGLU gate; llm-awq inserts an extra
``ScaledActivation`` there instead), and LLaMA's v → o when the heads are grouped (GQA: one row of
W_v feeds n_head / n_kv_head input channels of W_o, which would all need the same scale — llm-awq
and AutoAWQ skip the pair exactly when the two weights differ in shape).

Block by block. ``embed``, ``block`` and ``head`` are the same forward pass cut at the residual stream
between blocks (:func:`run_blocks`): ``head(block(n−1, … block(0, embed(ids))))`` equals ``forward(ids)``
exactly, hooks included. GPTQ's sequential driver and AWQ cache the calibration batches' residual
stream before block i and run only block i on it — as IST-DASLab ``llama.py: llama_sequential`` and
llm-awq ``pre_quant.py: run_awq`` do — instead of re-running the prefix (L/2 times less compute for L
blocks). ``block_groups[i]`` are block i's sequential groups; the head's group is
``sequential_groups[-1]``, reached after the last block (:func:`block_of` gives n_block for it).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from numpy.typing import ArrayLike

import numpy as np

from . import gpt, llama


@dataclass(frozen=True)
class ScaleFold:
    """Linears that read one input, and where a per-channel scale of that input can go (eq. 1)."""

    linears: tuple  # names of the linears that read the input: their columns are multiplied by s
    prev: tuple  # (param name, start, stop): rows start:stop (axis 0) of the param are divided by s
    inspect: str  # the linear whose output measures the group's error (AWQ's module2inspect ends there)


@dataclass(frozen=True)
class LM:
    """Everything a PTQ / QAT algorithm needs to know about a model."""

    name: str  # "tiny-gpt", "llama", for tables
    forward: Callable  # forward(params, ids (B, T), *, linear=None, tap=None) -> logits (B, T, V)
    linear_names: tuple  # the linear layers' weight names, in forward order
    sequential_groups: tuple  # tuples of linear names quantized together, in forward order
    context_length: int  # the longest sequence forward accepts
    tied: tuple = ()  # (linear name, stored name) pairs: a linear whose weight may be another tensor
    scale_folds: tuple = ()  # ScaleFold per group of linears sharing a foldable input, in forward order
    qk_rows: tuple = ()  # (linear name, start, stop): output rows that become attention queries or keys
    embed: Callable | None = None  # embed(params, ids (B, T), *, tap=None) -> x (B, T, C) entering block 0
    block: Callable | None = None  # block(params, i, x, *, linear=None, tap=None) -> x after block i
    head: Callable | None = None  # head(params, x, *, linear=None) -> logits (B, T, V)
    block_groups: tuple = ()  # per block, its tuples of sequential groups (the head's group is not in them)

    @property
    def n_block(self) -> int:
        """Number of blocks (``len(block_groups)``)."""
        return len(self.block_groups)


def weight(lm: LM, params: dict, name: str) -> np.ndarray:
    """The (out, in) weight the linear layer ``name`` multiplies by (following a tied head)."""
    if name in params:
        return params[name]
    for lin, stored in lm.tied:
        if lin == name and stored in params:
            return params[stored]
    names = lm.linear_names
    shown = ", ".join(names[:8]) + (f", … ({len(names)} in all)" if len(names) > 8 else "")
    raise ValueError(f"name: no weight {name!r} in the parameters (linear layers: {shown})")


def block_of(lm: LM, name: str) -> int:
    """The block whose groups hold the linear ``name``; ``lm.n_block`` for the head."""
    for i, groups in enumerate(lm.block_groups):
        if any(name in g for g in groups):
            return i
    if name in lm.sequential_groups[-1]:
        return lm.n_block
    raise ValueError(f"name: no linear {name!r} in the model (linear layers: {', '.join(lm.linear_names)})")


def run_blocks(lm: LM, params: dict, x: np.ndarray, start: int, stop: int, *, linear: Callable | None = None,
               tap: Callable | None = None) -> np.ndarray:
    """Blocks ``start`` … ``stop − 1`` on the residual stream x (B, T, C): the middle of ``lm.forward``."""
    if lm.block is None:
        raise ValueError(f"lm: the model {lm.name!r} has no block entry points")
    if not 0 <= start <= stop <= lm.n_block:
        raise ValueError(f"start, stop: expected 0 <= start <= stop <= {lm.n_block}, got {start}, {stop}")
    for i in range(start, stop):
        x = lm.block(params, i, x, linear=linear, tap=tap)
    return x


def fold_scale(lm: LM, params: dict, fold: ScaleFold, s: ArrayLike) -> dict:
    """Parameters with the scale ``s`` (K,) folded in by eq. (1): every ``fold.prev`` slice divided by s,
    every column of the ``fold.linears`` multiplied by it (a tied head gets its own ``output.weight``).

    The float model computes the same function up to rounding. Arithmetic in each parameter's dtype;
    ``params`` is not modified (the changed entries are new arrays).
    """
    s = np.asarray(s)
    if s.ndim != 1 or not np.all(np.isfinite(s)) or not np.all(s > 0):
        raise ValueError(f"s: expected a 1-D array of finite scales > 0, got shape {s.shape}")
    out = dict(params)
    for name, a, b in fold.prev:
        p = np.array(params[name])
        if b - a != s.size:
            raise ValueError(f"s: {s.size} scales for {b - a} rows of {name!r}")
        sv = s.astype(p.dtype).reshape((-1,) + (1,) * (p.ndim - 1))
        p[a:b] = p[a:b] / sv
        out[name] = p
    for name in fold.linears:
        w = weight(lm, params, name)
        if w.shape[1] != s.size:
            raise ValueError(f"s: {s.size} scales for the {w.shape[1]} input channels of {name!r}")
        out[name] = w * s.astype(w.dtype)
    return out


def tiny_gpt(cfg: gpt.GPTConfig) -> LM:
    """The tiny GPT: per block c_attn → attn.c_proj → mlp.c_fc → mlp.c_proj, then the LM head.

    Scale folds per block: ln_1 (gain, bias) → c_attn (attention output checked at attn.c_proj);
    the V rows of c_attn (weight and bias) → attn.c_proj; ln_2 → c_fc (checked at mlp.c_proj, the
    MLP's output); and ln_f → lm_head. Rows 0:2C of c_attn are the queries and keys.
    """
    C = cfg.n_embd
    groups = [(f"h{i}.{n}",) for i in range(cfg.n_layer)
              for n in ("attn.c_attn.w", "attn.c_proj.w", "mlp.c_fc.w", "mlp.c_proj.w")]
    folds, qk = [], []
    for i in range(cfg.n_layer):
        h = f"h{i}."
        folds += [ScaleFold((h + "attn.c_attn.w",), ((h + "ln_1.g", 0, C), (h + "ln_1.b", 0, C)), h + "attn.c_proj.w"),
                  ScaleFold((h + "attn.c_proj.w",), ((h + "attn.c_attn.w", 2 * C, 3 * C),
                                                     (h + "attn.c_attn.b", 2 * C, 3 * C)), h + "attn.c_proj.w"),
                  ScaleFold((h + "mlp.c_fc.w",), ((h + "ln_2.g", 0, C), (h + "ln_2.b", 0, C)), h + "mlp.c_proj.w")]
        qk.append((h + "attn.c_attn.w", 0, 2 * C))
    folds.append(ScaleFold(("lm_head.w",), (("ln_f.g", 0, C), ("ln_f.b", 0, C)), "lm_head.w"))
    return LM("tiny-gpt", partial(_gpt_forward, cfg=cfg), tuple(gpt.linear_names(cfg)),
              tuple(groups) + (("lm_head.w",),), cfg.context_length, scale_folds=tuple(folds), qk_rows=tuple(qk),
              embed=partial(_gpt_embed, cfg=cfg), block=partial(_gpt_block, cfg=cfg), head=_gpt_head,
              block_groups=tuple(tuple(groups[4 * i:4 * i + 4]) for i in range(cfg.n_layer)))


def llama_lm(cfg: llama.LlamaConfig) -> LM:
    """A LLaMA model: per block (q, k, v) → o → (gate, up) → down — the order in which each group's
    input is first computed (AutoGPTQ's ``inside_layer_modules`` for LLaMA) — then the output head.

    Scale folds per block, as llm-awq's ``auto_scale_block`` for LlamaDecoderLayer: attn_norm →
    (q, k, v) checked at attn_output (the attention's output); v → o only without GQA (n_kv_head ==
    n_head); ffn_norm → (gate, up) checked at ffn_down (the MLP's output); up → down. And
    output_norm → the head.
    """
    C, F, kv = cfg.n_embd, cfg.n_ff, cfg.n_kv_head * cfg.head_dim
    groups, folds, qk = [], [], []
    for i in range(cfg.n_layer):
        b = f"blk.{i}."
        q, k, v, o = (b + n for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight"))
        gate, up, down = (b + n for n in ("ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"))
        groups += [(q, k, v), (o,), (gate, up), (down,)]
        folds.append(ScaleFold((q, k, v), ((b + "attn_norm.weight", 0, C),), o))
        if cfg.n_kv_head == cfg.n_head:
            folds.append(ScaleFold((o,), ((v, 0, C),), o))
        folds += [ScaleFold((gate, up), ((b + "ffn_norm.weight", 0, C),), down),
                  ScaleFold((down,), ((up, 0, F),), down)]
        qk += [(q, 0, C), (k, 0, kv)]
    folds.append(ScaleFold(("output.weight",), (("output_norm.weight", 0, C),), "output.weight"))
    return LM("llama", partial(_llama_forward, cfg=cfg), tuple(llama.linear_names(cfg)),
              tuple(groups) + (("output.weight",),), cfg.context_length,
              tied=(("output.weight", "token_embd.weight"),), scale_folds=tuple(folds), qk_rows=tuple(qk),
              embed=partial(_llama_embed, cfg=cfg), block=partial(_llama_block, cfg=cfg),
              head=partial(_llama_head, cfg=cfg),
              block_groups=tuple(tuple(groups[4 * i:4 * i + 4]) for i in range(cfg.n_layer)))


def _gpt_forward(p, idx, *, cfg, linear=None, tap=None):
    return gpt.forward(p, np.asarray(idx), cfg, linear=linear, tap=tap)


def _llama_forward(p, idx, *, cfg, linear=None, tap=None):
    return llama.forward(p, np.asarray(idx), cfg, linear=linear, tap=tap)


def _gpt_embed(p, idx, *, cfg, tap=None):
    x = gpt.embed(p, np.asarray(idx), cfg)
    if tap is not None:
        tap("res", x)
    return x


def _gpt_block(p, i, x, *, cfg, linear=None, tap=None):
    return gpt.block(p, i, x, cfg, linear=linear, tap=tap)


def _gpt_head(p, x, *, linear=None):
    return gpt.head(p, x, linear=linear)


def _llama_embed(p, idx, *, cfg, tap=None):
    x = llama.embed(p, idx)
    if x.shape[1] > cfg.context_length:  # llama.forward's check, for a sequence without a cache
        raise ValueError(f"idx: 0 cached + {x.shape[1]} new positions exceed context_length {cfg.context_length}")
    if tap is not None:
        tap("res", x)
    return x


def _llama_block(p, i, x, *, cfg, linear=None, tap=None):
    return llama.block(p, i, x, cfg, linear=linear, tap=tap)[0]


def _llama_head(p, x, *, cfg, linear=None):
    return llama.head(p, x, cfg, linear=linear)
