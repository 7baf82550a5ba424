"""Weight sharing (Deep Compression): many weights, few distinct values.

A layer's n weights are clustered into k shared values (a k-means codebook); the layer stores one
log2(k)-bit index per weight plus the k b-bit centroids. The compression ratio (Han et al., eq. 1)::

    r = n·b / (n·log2(k) + k·b)

Fine-tuning keeps the sharing: the gradient of the loss with respect to a centroid is the sum of
the gradients of all weights that share it (Han et al., §3.3, fig. 3)::

    ∂L/∂c_j = Σ_{i : index_i = j} ∂L/∂w_i,        c_j ← c_j − lr · ∂L/∂c_j

References
----------
Han, Mao & Dally, "Deep Compression: Compressing Deep Neural Networks with Pruning, Trained
Quantization and Huffman Coding", ICLR 2016, §3 (weight sharing, eq. 1; initialisation; centroid
fine-tuning).
"""
from __future__ import annotations

from dataclasses import dataclass

import math

import numpy as np

from ..core._checks import float_array, int_array, int_value, real_value
from ..core._types import ArrayLike
from .codebook import codebook_quantize, index_bits
from .kmeans import _prepare, kmeans_codebook


@dataclass(frozen=True)
class SharedWeights:
    """``w ≈ codebook[indices]``; the codebook may be unsorted after fine-tuning."""

    indices: np.ndarray  # uint8 / uint16, shape of the layer's weight
    codebook: np.ndarray  # float32, (k,)

    @property
    def shape(self) -> tuple:
        return self.indices.shape

    def dequantize(self) -> np.ndarray:
        return self.codebook[self.indices]

    def storage_bits(self, codebook_bits: int = 32) -> int:
        """``n · index_bits(k)`` + the float32 codebook (``k`` = the stored codebook's size)."""
        return self.indices.size * index_bits(self.codebook.size) + codebook_bits * self.codebook.size

    def compression_ratio(self, b: int = 32) -> float:
        return compression_ratio(self.indices.size, self.codebook.size, b)


def compression_ratio(n: int, k: int, b: int = 32) -> float:
    """``n·b / (n·log2(k) + k·b)`` (Han et al. 2016, eq. 1); k = 1 stores no index."""
    n, k, b = int_value(n, "n", 1), int_value(k, "k", 1), int_value(b, "b", 1)
    return n * b / (n * math.log2(k) + k * b)  # Python ints and floats: no overflow for any n, k, b


def share_weights(w: ArrayLike, k: int, *, algorithm: str = "auto", **kmeans_options: object) -> SharedWeights:
    """Cluster the weights ``w`` (any shape) into at most ``k`` shared values (see :func:`kmeans_codebook`)."""
    wa = float_array(w, "w")
    _prepare(wa, None, "w")  # the checks of kmeans_codebook, naming w
    cb = kmeans_codebook(wa, k, algorithm=algorithm, **kmeans_options)
    idx = codebook_quantize(wa, cb)
    return SharedWeights(idx, cb.astype(np.float32))


def centroid_gradient(indices: ArrayLike, grad: ArrayLike, k: int) -> np.ndarray:
    """Sum of ``grad`` over the weights sharing each centroid: shape (k,), float64."""
    k = int_value(k, "k", 1, 1 << 24)
    idx = int_array(indices, "indices", 0, k - 1, f" (k = {k} centroids)")
    g = float_array(grad, "grad")
    if idx.shape != g.shape:
        raise ValueError(f"indices and grad must have the same shape, got {idx.shape} and {g.shape}")
    return np.bincount(idx.ravel(), weights=g.ravel().astype(np.float64), minlength=k)


def update_centroids(shared: SharedWeights, grad: ArrayLike, lr: float) -> SharedWeights:
    """One step of centroid fine-tuning: ``c ← c − lr · ∂L/∂c`` with the indices unchanged."""
    if not isinstance(shared, SharedWeights):
        raise ValueError(f"shared: expected a SharedWeights, got {type(shared).__name__}")
    lr = real_value(lr, "lr")
    g = centroid_gradient(shared.indices, grad, shared.codebook.size)
    with np.errstate(over="ignore", invalid="ignore"):
        c = (shared.codebook - lr * g).astype(np.float32)
    if not np.all(np.isfinite(c)):
        raise ValueError(f"lr={lr!r}, grad: the updated centroids leave the float32 range")
    return SharedWeights(shared.indices, c)
