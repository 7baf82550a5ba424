"""Deterministic sample tensors with the shapes of trouble that LLM quantization meets.

References
----------
Dettmers et al., "LLM.int8(): 8-bit Matrix Multiplication for Transformers at Scale", NeurIPS 2022,
section 4 (a few feature dimensions with magnitudes ~20x the rest: outlier features).
"""
from __future__ import annotations

import numpy as np

from ._checks import int_value, real_value


def _shape(shape, ndim=None) -> tuple:
    """``shape`` as a tuple of ints >= 0 with at most 2^31 elements (and ``ndim`` dimensions if given)."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or (ndim is not None and len(shape) != ndim):
        raise ValueError(f"shape: expected a tuple of {ndim or 'any number of'} ints, got {shape!r}")
    shape = tuple(int_value(n, "shape", 0) for n in shape)
    if np.prod(shape, dtype=object) > 2**31:
        raise ValueError(f"shape {shape} has more than 2^31 elements")
    return shape


def _rng(seed):
    return np.random.default_rng(int_value(seed, "seed", 0))


def gaussian_weights(shape: tuple[int, ...] = (256, 256), std: float = 0.02, seed: int = 0) -> np.ndarray:
    """N(0, std²) weights, float32: the easy case."""
    std = real_value(std, "std", 0, 1e30)
    return (_rng(seed).standard_normal(_shape(shape)) * std).astype(np.float32)


def heavy_tailed_weights(shape: tuple[int, ...] = (256, 256), df: float = 4.0, std: float = 0.02, seed: int =
                         1) -> np.ndarray:
    """Student-t(df) weights scaled to ``std``: trained LLM weights are closer to this than to a Gaussian."""
    df = real_value(df, "df", 2, 1e30, lo_open=True)  # the variance df / (df - 2) exists for df > 2
    std = real_value(std, "std", 0, 1e30)
    t = _rng(seed).standard_t(df, _shape(shape))
    return (t * std / np.sqrt(df / (df - 2))).astype(np.float32)


def weights_with_outlier_channel(shape: tuple[int, ...] = (256, 256), channel: int = 7, factor: float = 50.0,
                                 seed: int = 2) -> np.ndarray:
    """Gaussian weights (rows = output channels) with one row ``factor`` times larger."""
    shape = _shape(shape)
    if not shape or shape[0] == 0:
        raise ValueError(f"shape: expected at least one row (rows are output channels), got {shape}")
    channel = int_value(channel, "channel", 0, shape[0] - 1)
    factor = real_value(factor, "factor", -1e30, 1e30)
    w = gaussian_weights(shape, seed=seed)
    w[channel] *= np.float32(factor)
    return w


def activations_with_outliers(shape: tuple[int, ...] = (512, 256), n_outlier_features: int = 4, factor: float = 20.0,
                              seed: int = 3) -> np.ndarray:
    """(tokens, features) activations: N(0, 1) with a few feature columns ``factor`` times larger."""
    shape = _shape(shape, 2)
    n_outlier_features = int_value(n_outlier_features, "n_outlier_features", 0, shape[1])
    factor = real_value(factor, "factor", -1e30, 1e30)
    rng = _rng(seed)
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
