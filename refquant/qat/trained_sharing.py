"""Deep Compression's trained quantization: fine-tune the centroids of shared weights (the cluster
assignment fixed), on the NumPy MLP. The first quantization-aware training in refquant.

References
----------
Han, Mao & Dally, "Deep Compression", ICLR 2016, §3.3 (centroid fine-tuning: the gradient of a centroid
is the sum of the gradients of the weights assigned to it).
"""
from __future__ import annotations

import numpy as np

from ..formats.weight_sharing import update_centroids
from ..models.mlp import minibatches, mlp_loss_and_grads


def with_shared(p: dict, shared: dict) -> dict:
    """Parameters with the shared layers (``name -> SharedWeights``) replaced by their dequantized values."""
    q = dict(p)
    q.update({name: s.dequantize() for name, s in shared.items()})
    return q


def finetune_shared(p: dict, shared: dict, x: np.ndarray, y: np.ndarray, *, epochs: int = 5, lr: float = 0.01,
                    batch: int = 64, seed: int = 0) -> tuple[dict, dict]:
    """Deep Compression's trained quantization: SGD on the centroids of the shared layers (their
    gradient is the sum over each cluster, :func:`refquant.weight_sharing.update_centroids`) and on
    the unshared parameters; the cluster assignment stays fixed. Returns ``(params, shared)``."""
    p = {k: v.copy() for k, v in p.items()}
    for sl in minibatches(len(x), batch, epochs, seed):
        _, g = mlp_loss_and_grads(with_shared(p, shared), x[sl], y[sl])
        shared = {name: update_centroids(s, g[name], lr) for name, s in shared.items()}
        for k in p:
            if k not in shared:
                p[k] -= lr * g[k]
    return p, shared
