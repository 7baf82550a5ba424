"""Error metrics between a float tensor and its quantized reconstruction (all computed in float64).

References
----------
Gray & Neuhoff, "Quantization", IEEE Trans. Inf. Theory 44(6), 1998 (SQNR; 6.02 dB per bit).
"""
from __future__ import annotations

import numpy as np

from ._checks import finite_array, positive_scale
from .packing import bits_per_element  # noqa: F401  (re-exported: storage is a metric too)
from ._types import ArrayLike


def _pair(x, x_hat):
    a = finite_array(x, "x", what="an error metric of an infinite value is undefined").astype(np.float64)
    b = finite_array(x_hat, "x_hat", what="an error metric of an infinite value is undefined").astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"x and x_hat must have the same shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("x is empty; an error metric of no elements is undefined")
    return a, b


def _scaled(a, b):
    """``a / m, b / m`` with m = max |a|, |b| (a power of two: exact), for sums that overflow float64."""
    e = int(np.frexp(max(np.abs(a).max(), np.abs(b).max()))[1])
    return np.ldexp(a, -e), np.ldexp(b, -e)


def mse(x: ArrayLike, x_hat: ArrayLike) -> float:
    """Mean squared error ``mean((x - x̂)²)`` (float64; +inf only when the true value exceeds float64)."""
    a, b = _pair(x, x_hat)
    with np.errstate(over="ignore"):
        return float(np.mean((a - b) ** 2))


def sqnr_db(x: ArrayLike, x_hat: ArrayLike) -> float:
    """Signal-to-quantization-noise ratio ``10·log10(Σx² / Σ(x − x̂)²)`` in dB.

    +inf when the reconstruction is exact, −inf when x is all zero; about 6.02·b + const dB for
    b-bit uniform quantization. Sums that would overflow float64 are formed on x / 2^k instead.
    """
    a, b = _pair(x, x_hat)
    with np.errstate(over="ignore"):
        noise, signal = float(np.sum((a - b) ** 2)), float(np.sum(a ** 2))
    if not (np.isfinite(noise) and np.isfinite(signal)):
        a, b = _scaled(a, b)
        noise, signal = float(np.sum((a - b) ** 2)), float(np.sum(a ** 2))
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return 10.0 * np.log10(signal / noise)


def max_error_lsb(x: ArrayLike, x_hat: ArrayLike, scale: ArrayLike) -> float:
    """Largest error in units of the step: ``max |x − x̂| / scale``.

    ``scale`` broadcasts against ``x`` (pass a per-channel scale reshaped, or a scalar). A correct
    round-to-nearest quantizer gives <= 0.5 inside its range (plus float rounding).
    """
    a, b = _pair(x, x_hat)
    s = positive_scale(scale, "scale").astype(np.float64)
    try:
        np.broadcast_shapes(s.shape, a.shape)
    except ValueError:
        raise ValueError(f"scale of shape {s.shape} does not broadcast against x of shape {a.shape}") from None
    with np.errstate(over="ignore"):
        return float(np.max(np.abs(a - b) / s))


def cosine_similarity(x: ArrayLike, x_hat: ArrayLike) -> float:
    """``<x, x̂> / (‖x‖·‖x̂‖)`` over all elements; ValueError if either is all zero."""
    a, b = _pair(x, x_hat)
    with np.errstate(over="ignore"):
        na, nb, dot = np.linalg.norm(a), np.linalg.norm(b), np.dot(a.ravel(), b.ravel())
    if not (np.isfinite(na) and np.isfinite(nb) and np.isfinite(dot)):
        a, b = _scaled(a, b)
        na, nb, dot = np.linalg.norm(a), np.linalg.norm(b), np.dot(a.ravel(), b.ravel())
    if na == 0 or nb == 0:
        raise ValueError("x, x_hat: cosine similarity is undefined for an all-zero tensor")
    return float(dot / (na * nb))
