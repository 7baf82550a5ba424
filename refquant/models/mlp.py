"""A two-layer perceptron in NumPy with a hand-written backward pass: the small model on which
weight sharing and its fine-tuning are shown (the transformer comes later).

    h = relu(x W1 + b1),  logits = h W2 + b2,  loss = mean cross-entropy(softmax(logits), y)
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np



@dataclass(frozen=True)
class MLPConfig:
    n_in: int = 64  # input features (8x8 digits)
    n_hidden: int = 64  # hidden units
    n_out: int = 10  # classes


def init_mlp(cfg: MLPConfig, seed: int = 0) -> dict:
    """He-initialised float32 parameters ``{"W1", "b1", "W2", "b2"}``."""
    rng = np.random.default_rng(seed)
    return {
        "W1": (rng.standard_normal((cfg.n_in, cfg.n_hidden)) * np.sqrt(2 / cfg.n_in)).astype(np.float32),
        "b1": np.zeros(cfg.n_hidden, np.float32),
        "W2": (rng.standard_normal((cfg.n_hidden, cfg.n_out)) * np.sqrt(2 / cfg.n_hidden)).astype(np.float32),
        "b2": np.zeros(cfg.n_out, np.float32),
    }


def mlp_forward(p: dict, x: np.ndarray) -> np.ndarray:
    """Logits, shape (batch, n_out), for x of shape (batch, n_in)."""
    return np.maximum(x @ p["W1"] + p["b1"], 0) @ p["W2"] + p["b2"]


def mlp_loss_and_grads(p: dict, x: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    """Mean cross-entropy and its gradient with respect to every parameter."""
    a = x @ p["W1"] + p["b1"]  # (B, H)
    h = np.maximum(a, 0)
    z = h @ p["W2"] + p["b2"]  # (B, C)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    prob = e / e.sum(axis=1, keepdims=True)
    n = x.shape[0]
    loss = float(-np.mean(np.log(prob[np.arange(n), y] + 1e-12)))
    dz = prob
    dz[np.arange(n), y] -= 1
    dz /= n  # (B, C)
    dh = dz @ p["W2"].T
    da = dh * (a > 0)  # (B, H)
    grads = {"W2": h.T @ dz, "b2": dz.sum(0), "W1": x.T @ da, "b1": da.sum(0)}
    return loss, {k: v.astype(np.float32) for k, v in grads.items()}


def minibatches(n: int, batch: int, epochs: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Index arrays of shuffled minibatches, epoch after epoch (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, n, batch):
            yield order[i:i + batch]


def train_mlp(p: dict, x: np.ndarray, y: np.ndarray, *, epochs: int = 30, lr: float = 0.1, batch: int = 64,
              seed: int = 0) -> dict:
    """Plain minibatch SGD; returns new parameters (the input dict is not modified)."""
    p = {k: v.copy() for k, v in p.items()}
    for sl in minibatches(len(x), batch, epochs, seed):
        _, g = mlp_loss_and_grads(p, x[sl], y[sl])
        for k in p:
            p[k] -= lr * g[k]
    return p


def accuracy(p: dict, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(mlp_forward(p, x).argmax(axis=1) == y))


def digits_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1797 images, offline), scaled to [0, 1], split 75/25."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], d.target[order]
    cut = int(0.75 * len(x))
    return x[:cut], y[:cut], x[cut:], y[cut:]
