"""Training and evaluation of the tiny GPT (deterministic for a seed); checkpoints are in :mod:`refquant.io.checkpoint`."""
from __future__ import annotations

from collections.abc import Callable
import math

import numpy as np

from .gpt import GPTConfig, adamw_step, cross_entropy, forward, init_params, loss_and_grads

def get_batch(data: np.ndarray, batch: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random windows: inputs (batch, length) and next-character targets, as int64."""
    ix = rng.integers(0, len(data) - length - 1, batch)
    x = np.stack([data[i:i + length] for i in ix]).astype(np.int64)
    y = np.stack([data[i + 1:i + 1 + length] for i in ix]).astype(np.int64)
    return x, y


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to lr / 10."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train(cfg: GPTConfig, data: np.ndarray, *, steps: int = 2000, batch: int = 32, lr: float = 3e-3,
          warmup: int = 100, seed: int = 0, log: Callable[[int, float], object] | None = None) -> dict:
    """AdamW training from scratch; ``log(step, loss)`` is called every 50 steps. Returns the parameters."""
    p = init_params(cfg, seed)
    rng = np.random.default_rng(seed + 1)
    state: dict = {}
    for step in range(steps):
        x, y = get_batch(data, batch, cfg.context_length, rng)
        loss, g = loss_and_grads(p, x, y, cfg)
        if not math.isfinite(loss):
            raise FloatingPointError(f"training diverged at step {step} (loss {loss})")
        adamw_step(p, g, state, lr=lr_at(step, steps, lr, warmup))
        if log is not None and (step % 50 == 0 or step == steps - 1):
            log(step, loss)
    return p


def evaluate(p: dict, data: np.ndarray, cfg: GPTConfig, *, n_windows: int = 64, linear: Callable | None =
             None) -> tuple[float, float]:
    """Perplexity (exp of the mean NLL per character) and next-character accuracy on the first
    ``n_windows`` non-overlapping windows of ``data``."""
    x, y = windows(data, cfg.context_length, n_windows)
    logits = forward(p, x, cfg, linear=linear)
    nll, _ = cross_entropy(logits, y)
    return math.exp(nll), float(np.mean(logits.argmax(-1) == y))


def windows(data: np.ndarray, length: int, n_windows: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n_windows`` non-overlapping windows of ``data``: inputs (n, length) and
    next-character targets (n, length), int64 — what :func:`evaluate` scores."""
    n = min(n_windows, (len(data) - 1) // length)
    x = data[: n * length].reshape(n, length).astype(np.int64)
    y = data[1: n * length + 1].reshape(n, length).astype(np.int64)
    return x, y


def evaluator(data: np.ndarray, cfg: GPTConfig, *, n_windows: int = 64) -> Callable[..., dict]:
    """``evaluate`` as a function of the parameters and a ``linear=`` hook, for
    :func:`refquant.ptq.recipes.run_recipe`: returns ``{"perplexity", "accuracy"}``."""
    def f(p: dict, linear=None) -> dict:
        ppl, acc = evaluate(p, data, cfg, n_windows=n_windows, linear=linear)
        return {"perplexity": ppl, "accuracy": acc}
    return f
