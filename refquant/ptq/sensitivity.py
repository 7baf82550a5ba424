"""Which layer hurts: each linear layer quantized alone, its weight and output SQNR and the perplexity.

References
----------
Nagel et al., "A White Paper on Neural Network Quantization", arXiv:2106.08295, §3.7 (layer-wise
sensitivity / debugging: quantize one layer at a time).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..core.metrics import sqnr_db
from ..models.gpt import GPTConfig, affine, cross_entropy, forward, linear_names
from .recipes import Recipe, apply_weights


def layer_attribution(p: dict, cfg: GPTConfig, r: Recipe, val: np.ndarray, *, n_windows: int = 64):
    """For each linear layer alone quantized with ``r``: weight SQNR (dB), output SQNR (dB) on the
    validation windows, and perplexity. Returns a list of dicts, in forward order."""
    T = cfg.context_length
    x = val[: n_windows * T].reshape(n_windows, T).astype(np.int64)
    y = val[1: n_windows * T + 1].reshape(n_windows, T).astype(np.int64)  # the windows of train.evaluate
    outs_f: dict = {}

    def record(store):
        def f(name, xx, w, b):
            y = affine(xx, w, b)
            store[name] = y
            return y
        return f

    forward(p, x, cfg, linear=record(outs_f))
    rows = []
    for name in linear_names(cfg):
        rl = replace(r, layers=(name,))
        q, _ = apply_weights(p, cfg, rl)
        outs_q: dict = {}
        nll, _ = cross_entropy(forward(q, x, cfg, linear=record(outs_q)), y)  # one pass: outputs and loss
        rows.append({"layer": name, "weight_sqnr_db": sqnr_db(p[name], q[name]),
                     "output_sqnr_db": sqnr_db(outs_f[name], outs_q[name]), "perplexity": float(np.exp(nll))})
    return rows


