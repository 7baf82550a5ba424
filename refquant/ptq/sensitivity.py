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
from ..models.gpt import affine, cross_entropy
from ..models.lm import LM, weight
from .recipes import Recipe, apply_weights


def layer_attribution(lm: LM, p: dict, r: Recipe, windows: tuple) -> list:
    """For each linear layer alone quantized with ``r``: weight SQNR (dB), output SQNR (dB) and
    perplexity on ``windows`` = (inputs (n, T), next-token targets (n, T)). Returns a list of dicts,
    in forward order."""
    x, y = windows
    outs_f: dict = {}

    def record(store):
        def f(name, xx, w, b):
            out = affine(xx, w, b)
            store[name] = out
            return out
        return f

    lm.forward(p, x, linear=record(outs_f))
    rows = []
    for name in lm.linear_names:
        q, _ = apply_weights(lm, p, replace(r, layers=(name,)))
        outs_q: dict = {}
        nll, _ = cross_entropy(lm.forward(q, x, linear=record(outs_q)), y)  # one pass: outputs and loss
        rows.append({"layer": name, "weight_sqnr_db": sqnr_db(weight(lm, p, name), q[name]),
                     "output_sqnr_db": sqnr_db(outs_f[name], outs_q[name]), "perplexity": float(np.exp(nll))})
    return rows
