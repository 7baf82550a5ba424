"""A language model as the quantization algorithms see it: one description for the tiny GPT and LLaMA.

Recipes, calibration, GPTQ, AWQ and SmoothQuant never name a model: they take an :class:`LM` and call
its ``forward`` with a ``linear=`` hook (the contract of :func:`refquant.models.gpt.call_linear`), read
and replace the weights named in ``linear_names``, and quantize in the order of ``sequential_groups``
(GPTQ's "true sequential": a group's inputs are computed with every earlier group already quantized).

``weight(params, name)`` resolves a tied output head: a LLaMA checkpoint without ``output.weight``
multiplies by ``token_embd.weight``; quantizing the head then stores a separate ``output.weight``
(llama.cpp does the same when the output type differs from the embedding's).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from . import gpt, llama


@dataclass(frozen=True)
class LM:
    """Everything a PTQ / QAT algorithm needs to know about a model."""

    name: str  # "tiny-gpt", "llama", for tables
    forward: Callable  # forward(params, ids (B, T), *, linear=None, tap=None) -> logits (B, T, V)
    linear_names: tuple  # the linear layers' weight names, in forward order
    sequential_groups: tuple  # tuples of linear names quantized together, in forward order
    context_length: int  # the longest sequence forward accepts
    tied: tuple = ()  # (linear name, stored name) pairs: a linear whose weight may be another tensor


def weight(lm: LM, params: dict, name: str) -> np.ndarray:
    """The (out, in) weight the linear layer ``name`` multiplies by (following a tied head)."""
    if name in params:
        return params[name]
    for lin, stored in lm.tied:
        if lin == name and stored in params:
            return params[stored]
    raise ValueError(f"name: no weight {name!r} in the parameters (linear layers: {', '.join(lm.linear_names)})")


def tiny_gpt(cfg: gpt.GPTConfig) -> LM:
    """The tiny GPT: per block c_attn → attn.c_proj → mlp.c_fc → mlp.c_proj, then the LM head."""
    groups = [(f"h{i}.{n}",) for i in range(cfg.n_layer)
              for n in ("attn.c_attn.w", "attn.c_proj.w", "mlp.c_fc.w", "mlp.c_proj.w")]
    return LM("tiny-gpt", partial(_gpt_forward, cfg=cfg), tuple(gpt.linear_names(cfg)),
              tuple(groups) + (("lm_head.w",),), cfg.context_length)


def llama_lm(cfg: llama.LlamaConfig) -> LM:
    """A LLaMA model: per block (q, k, v) → o → (gate, up) → down — the order in which each group's
    input is first computed (AutoGPTQ's ``inside_layer_modules`` for LLaMA) — then the output head."""
    groups = []
    for i in range(cfg.n_layer):
        b = f"blk.{i}."
        groups += [(b + "attn_q.weight", b + "attn_k.weight", b + "attn_v.weight"), (b + "attn_output.weight",),
                   (b + "ffn_gate.weight", b + "ffn_up.weight"), (b + "ffn_down.weight",)]
    return LM("llama", partial(_llama_forward, cfg=cfg), tuple(llama.linear_names(cfg)),
              tuple(groups) + (("output.weight",),), cfg.context_length,
              tied=(("output.weight", "token_embd.weight"),))


def _gpt_forward(p, idx, *, cfg, linear=None, tap=None):
    return gpt.forward(p, np.asarray(idx), cfg, linear=linear, tap=tap)


def _llama_forward(p, idx, *, cfg, linear=None, tap=None):
    return llama.forward(p, np.asarray(idx), cfg, linear=linear, tap=tap)
