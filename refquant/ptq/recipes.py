"""Quantization recipes for the tiny GPT: which weights get which quantizer, and how activations
are quantized; applying them, measuring size, perplexity and which layer hurts.

A :class:`Recipe` names a weight format for every linear layer (embeddings, LayerNorms and biases stay
float32, as in llama.cpp and most PTQ methods) and an activation mode for the inputs of those layers:

* ``activation=None`` — weight-only quantization (W4A16-style);
* ``"dynamic"`` — per-token symmetric int8, the scale computed from each token's row at run time
  (the "dynamic" quantization of PyTorch / ONNX Runtime, LLM.int8()'s vector-wise activations);
* ``"static"`` — per-tensor affine int8 with ranges calibrated beforehand on held-out batches
  (``act_calibration`` = min-max, percentile, MSE or KL).

Weights are fake-quantized (quantize then dequantize), so the float forward pass computes exactly
what an integer kernel with these codes and scales would, up to float32 summation order.

References
----------
Nagel et al., "A White Paper on Neural Network Quantization", arXiv:2106.08295, §3 (PTQ pipeline,
static / dynamic activation quantization). Frantar et al., "GPTQ", ICLR 2023 (W4/W3 group-wise
weight-only baselines, group size 128). Dettmers et al., "LLM.int8()", NeurIPS 2022, §3.1 (per-token).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..formats.codebook import absmax_scale, codebook_fake_quantize
from ..formats.logquant import log_quantize
from ..core.metrics import sqnr_db
from ..formats.minifloat import minifloat_codebook
from ..models.gpt import GPTConfig, affine, forward, linear_names
from ..formats.nf4 import nf4_quantize
from ..core.observers import calibrate
from ..core.qtensor import quantize_tensor
from ..core.uniform import fake_quantize
from ..formats.weight_sharing import share_weights

WEIGHT_FORMATS = (None, "uniform", "nf4", "fp8", "fp4", "kmeans", "log")
ACTIVATION_MODES = (None, "dynamic", "static")


@dataclass(frozen=True)
class Recipe:
    name: str  # label in tables and plots
    weight: str | None = "uniform"  # one of WEIGHT_FORMATS; None keeps float32 weights
    bits: int = 8  # weight bits (uniform, kmeans: log2 of the codebook size, log)
    group_size: int = 0  # uniform: 0 = per output channel, else groups along the input dimension
    symmetric: bool = True  # uniform weights: symmetric (no zero point) or affine
    calibration: str = "minmax"  # uniform weights: minmax, percentile, mse
    activation: str | None = None  # one of ACTIVATION_MODES
    act_calibration: str = "minmax"  # static activations: minmax, percentile, mse, kl
    layers: tuple | None = None  # quantize only these linear layers (None: all)

    def __post_init__(self):
        if self.weight not in WEIGHT_FORMATS:
            raise ValueError(f"weight: unknown format {self.weight!r}; expected one of {WEIGHT_FORMATS}")
        if self.activation not in ACTIVATION_MODES:
            raise ValueError(f"activation: unknown mode {self.activation!r}; expected one of {ACTIVATION_MODES}")
        if not 2 <= self.bits <= 16:
            raise ValueError(f"bits must be in [2, 16], got {self.bits}")
        if self.group_size < 0:
            raise ValueError(f"group_size must be >= 0, got {self.group_size}")


def quantize_weight(w: np.ndarray, r: Recipe):
    """Fake-quantize one (out, in) weight matrix: returns ``(w_hat float32, storage bits)``."""
    n = w.size
    if r.weight is None:
        return w, 32 * n
    if r.weight == "uniform":
        axis, block = (0, 0) if r.group_size == 0 else (1, r.group_size)
        qt = quantize_tensor(w, f"int{r.bits}", symmetric=r.symmetric, axis=axis, block_size=block, calibration=r.calibration)
        return qt.dequantize().astype(np.float32), qt.storage_bits()
    if r.weight == "nf4":
        t = nf4_quantize(w, 64)
        return t.dequantize(), round(t.bits_per_element() * n)
    if r.weight in ("fp8", "fp4"):
        fmt, top, bits = ("float8e4m3fn", 448.0, 8) if r.weight == "fp8" else ("float4e2m1", 6.0, 4)
        axis, block = (0, 0) if r.weight == "fp8" else (1, 32)
        s = absmax_scale(w, top, axis=axis, block_size=block)
        return (codebook_fake_quantize(w, minifloat_codebook(fmt), scale=s, axis=axis, block_size=block)
                .astype(np.float32), bits * n + 32 * s.size)
    if r.weight == "kmeans":
        sw = share_weights(w, 2 ** r.bits)
        return sw.dequantize(), r.bits * n + 32 * sw.codebook.size
    t = log_quantize(w, r.bits)  # "log"
    return t.dequantize().astype(np.float32), r.bits * n + 8  # one exponent per tensor


def _targets(cfg: GPTConfig, r: Recipe):
    names = linear_names(cfg)
    if r.layers is None:
        return names
    unknown = set(r.layers) - set(names)
    if unknown:
        raise ValueError(f"layers: unknown linear layers {sorted(unknown)}; the model has {names}")
    return [n for n in names if n in r.layers]


def _apply(p: dict, cfg: GPTConfig, r: Recipe):
    """(quantized parameters, total bits, bits of the quantized layers)."""
    q = dict(p)
    total = target_bits = 0
    targets = set(_targets(cfg, r))
    for name, v in p.items():
        if name in targets:
            q[name], b = quantize_weight(v, r)
            target_bits += b
        else:
            b = 32 * v.size  # embeddings, LayerNorms, biases and unquantized layers: float32
        total += b
    return q, total, target_bits


def apply_weights(p: dict, cfg: GPTConfig, r: Recipe):
    """Parameters with the recipe's linear weights fake-quantized, and the model's size in bytes."""
    q, total, _ = _apply(p, cfg, r)
    return q, total / 8


def calibrate_activations(p: dict, cfg: GPTConfig, batches, r: Recipe) -> dict:
    """Per-layer (scale, zero point) of the linear layers' inputs, from float forward passes."""
    seen: dict = {}

    def record(name, x, w, b):
        seen.setdefault(name, []).append(x.reshape(-1, x.shape[-1]))
        return affine(x, w, b)

    for xb in batches:
        forward(p, xb, cfg, linear=record)
    return {name: calibrate(np.concatenate(xs), "int8", r.act_calibration) for name, xs in seen.items()}


def linear_hook(r: Recipe, act_qparams: dict | None = None, targets=None):
    """The ``linear`` replacement that quantizes activations as the recipe says (None: float)."""
    if r.activation is None:
        return None

    def hook(name, x, w, b):
        if targets is not None and name not in targets:
            return affine(x, w, b)
        if r.activation == "dynamic":
            x2 = x.reshape(-1, x.shape[-1])  # one symmetric int8 scale per token (row)
            s = np.maximum(np.abs(x2).max(axis=1), np.float32(1e-8)) / np.float32(127)
            xq = fake_quantize(x2, s.astype(np.float32), 0, "int8", axis=0).reshape(x.shape)
        else:  # static: the calibrated per-tensor affine parameters
            s, z = act_qparams[name]
            xq = fake_quantize(x, s.astype(x.dtype), z, "int8")
        return affine(xq, w, b)
    return hook


def run_recipe(p: dict, cfg: GPTConfig, r: Recipe, val: np.ndarray, calib_batches=(), *, n_windows: int = 64):
    """Apply a recipe and evaluate: ``{"method", "bits_per_weight", "size_bytes", "perplexity", "accuracy"}``."""
    from ..models.train import evaluate

    q, total_bits, w_bits = _apply(p, cfg, r)
    targets = _targets(cfg, r)
    n_w = sum(p[n].size for n in targets)
    acts = calibrate_activations(p, cfg, calib_batches, r) if r.activation == "static" else None
    ppl, acc = evaluate(q, val, cfg, n_windows=n_windows, linear=linear_hook(r, acts, set(targets)))
    return {"method": r.name, "bits_per_weight": w_bits / n_w, "size_bytes": int(round(total_bits / 8)),
            "perplexity": ppl, "accuracy": acc}


def standard_recipes() -> list:
    """The recipes of the demo table (issue 6): weight-only uniform, W8A8, and the non-uniform formats."""
    return [
        Recipe("float", weight=None),
        Recipe("w8-per-channel", bits=8),
        Recipe("w4-g128", bits=4, group_size=128),
        Recipe("w4-g32", bits=4, group_size=32),
        Recipe("w3-g32", bits=3, group_size=32),
        Recipe("w4-g32-mse", bits=4, group_size=32, calibration="mse"),
        Recipe("w8a8-static", bits=8, activation="static", act_calibration="minmax"),
        Recipe("w8a8-static-pct", bits=8, activation="static", act_calibration="percentile"),
        Recipe("w8a8-dynamic", bits=8, activation="dynamic"),
        Recipe("nf4", weight="nf4", bits=4),
        Recipe("fp8-e4m3", weight="fp8", bits=8),
        Recipe("fp4-e2m1-g32", weight="fp4", bits=4),
        Recipe("kmeans-16", weight="kmeans", bits=4),
        Recipe("log2-4bit", weight="log", bits=4),
    ]
