"""Text from a LLaMA-family model: next-token sampling, generation with the KV cache of
:func:`refquant.models.llama.forward`, and the ChatML prompt of the SmolLM2 instruct models.

    greedy:       t = argmax_v logits[v]                               (ties: the lowest id)
    temperature:  t = min{v : CDF(v) > u},  CDF = cumsum softmax(logits / T),  u = rng.random()

References
----------
SmolLM2-135M-Instruct ``tokenizer_config.json: chat_template`` (the ChatML text, its default system message).
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
import math

import numpy as np
from numpy.typing import ArrayLike

from .llama import LlamaConfig, forward


def sample_next(logits: np.ndarray, temperature: float = 0.0, rng: np.random.Generator | None = None) -> int:
    """One token from next-token logits (V,): argmax for ``temperature == 0`` (ties: the lowest id),
    else a draw from ``softmax(logits / temperature)`` by inverse CDF with one ``rng.random()``."""
    z = np.asarray(logits, np.float64).reshape(-1)
    if temperature < 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
    if temperature == 0:
        return int(np.argmax(z))
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: sampling with temperature {temperature} needs a numpy Generator, got {type(rng).__name__}")
    pr = np.exp((z - z.max()) / temperature)
    cdf = np.cumsum(pr / pr.sum())
    return int(min(np.searchsorted(cdf, rng.random(), side="right"), len(cdf) - 1))


def generate(p: dict, cfg: LlamaConfig, ids: ArrayLike, n: int, *, temperature: float = 0.0,
             rng: np.random.Generator | None = None, stop: Collection[int] = (), linear: Callable | None =
             None) -> np.ndarray:
    """Continue ``ids`` (T0,) by up to ``n`` tokens with a KV cache; stops after a token in ``stop``.

    Returns int64 (T0 + m,), m ≤ n. Greedy for ``temperature == 0``; else sampled with ``rng``
    (explicit, so a run is reproducible).
    """
    out = [int(t) for t in np.asarray(ids).ravel()]
    if not out:
        raise ValueError("ids: need at least one prompt token")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if temperature and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: sampling with temperature {temperature} needs a numpy Generator, got {type(rng).__name__}")
    cache, new = (), out
    for _ in range(n):
        logits, cache = forward(p, np.array([new], np.int64), cfg, linear=linear, cache=cache)
        tok = sample_next(logits[0, -1], temperature, rng)
        out.append(tok)
        new = [tok]
        if tok in stop:
            break
    return np.array(out, np.int64)


SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chat_prompt(messages: Sequence[dict], *, add_generation_prompt: bool = True,
                default_system: str | None = SMOLLM_SYSTEM) -> str:
    """The ChatML text of ``messages`` (a list of ``{"role", "content"}``), as SmolLM2-Instruct's
    ``tokenizer.chat_template`` renders it::

        <|im_start|>system\\n{default_system}<|im_end|>\\n     (only if the first role is not "system")
        <|im_start|>{role}\\n{content}<|im_end|>\\n            (each message)
        <|im_start|>assistant\\n                             (add_generation_prompt)

    The special markers must then be tokenized as special tokens.
    """
    text = ""
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise TypeError(f"messages[{j}]: expected a dict with str 'role' and 'content', got {m!r}")
        if j == 0 and m["role"] != "system" and default_system is not None:
            text += f"<|im_start|>system\n{default_system}<|im_end|>\n"
        text += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")
