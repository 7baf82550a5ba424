"""Error metrics between a float tensor and its quantized reconstruction (all computed in float64).

References
----------
Gray & Neuhoff, "Quantization", IEEE Trans. Inf. Theory 44(6), 1998 (SQNR; 6.02 dB per bit).
"""
from __future__ import annotations

import numpy as np

from ._checks import float_array, positive_scale
from .packing import bits_per_element  # noqa: F401  (re-exported: storage is a metric too)


def _pair(x, x_hat):
    a = float_array(x, "x").astype(np.float64)
    b = float_array(x_hat, "x_hat").astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"x and x_hat must have the same shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("x is empty; an error metric of no elements is undefined")
    return a, b


def mse(x, x_hat) -> float:
    """Mean squared error ``mean((x - x̂)²)``."""
    a, b = _pair(x, x_hat)
    return float(np.mean((a - b) ** 2))


def sqnr_db(x, x_hat) -> float:
    """Signal-to-quantization-noise ratio ``10·log10(Σx² / Σ(x − x̂)²)`` in dB.

    +inf when the reconstruction is exact; about 6.02·b + const dB for b-bit uniform quantization.
    """
    a, b = _pair(x, x_hat)
    noise = float(np.sum((a - b) ** 2))
    signal = float(np.sum(a ** 2))
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return 10.0 * np.log10(signal / noise)


def max_error_lsb(x, x_hat, scale) -> float:
    """Largest error in units of the step: ``max |x − x̂| / scale``.

    ``scale`` broadcasts against ``x`` (pass a per-channel scale reshaped, or a scalar). A correct
    round-to-nearest quantizer gives <= 0.5 inside its range (plus float rounding).
    """
    a, b = _pair(x, x_hat)
    s = positive_scale(scale, "scale").astype(np.float64)
    return float(np.max(np.abs(a - b) / s))


def cosine_similarity(x, x_hat) -> float:
    """``<x, x̂> / (‖x‖·‖x̂‖)`` over all elements; ValueError if either is all zero."""
    a, b = _pair(x, x_hat)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise ValueError("x, x_hat: cosine similarity is undefined for an all-zero tensor")
    return float(np.dot(a.ravel(), b.ravel()) / (na * nb))
