"""Deterministic sample tensors with the shapes of trouble that LLM quantization meets.

References
----------
Dettmers et al., "LLM.int8(): 8-bit Matrix Multiplication for Transformers at Scale", NeurIPS 2022,
section 4 (a few feature dimensions with magnitudes ~20x the rest: outlier features).
"""
from __future__ import annotations

import numpy as np


def gaussian_weights(shape=(256, 256), std: float = 0.02, seed: int = 0) -> np.ndarray:
    """N(0, std²) weights, float32: the easy case."""
    return (np.random.default_rng(seed).standard_normal(shape) * std).astype(np.float32)


def heavy_tailed_weights(shape=(256, 256), df: float = 4.0, std: float = 0.02, seed: int = 1) -> np.ndarray:
    """Student-t(df) weights scaled to ``std``: trained LLM weights are closer to this than to a Gaussian."""
    t = np.random.default_rng(seed).standard_t(df, shape)
    return (t * std / np.sqrt(df / (df - 2))).astype(np.float32)


def weights_with_outlier_channel(shape=(256, 256), channel: int = 7, factor: float = 50.0, seed: int = 2) -> np.ndarray:
    """Gaussian weights (rows = output channels) with one row ``factor`` times larger."""
    w = gaussian_weights(shape, seed=seed)
    w[channel] *= factor
    return w


def activations_with_outliers(shape=(512, 256), n_outlier_features: int = 4, factor: float = 20.0,
                              seed: int = 3) -> np.ndarray:
    """(tokens, features) activations: N(0, 1) with a few feature columns ``factor`` times larger."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    cols = rng.choice(shape[1], n_outlier_features, replace=False)
    x[:, cols] *= factor
    return x.astype(np.float32)


def sample_tensors() -> dict:
    """The demo's tensors, by name."""
    return {
        "gaussian weights": gaussian_weights(),
        "heavy-tailed weights": heavy_tailed_weights(),
        "outlier-channel weights": weights_with_outlier_channel(),
        "outlier activations": activations_with_outliers(),
    }
