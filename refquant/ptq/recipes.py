"""Quantization recipes: which weights get which registry format, and how activations are quantized;
applying them to any model described by :class:`refquant.models.lm.LM` (the tiny GPT, LLaMA) and
measuring size and perplexity.

A :class:`Recipe` names a weight format for every linear layer (embeddings, LayerNorms and biases stay
float32, as in llama.cpp and most PTQ methods) and an activation mode for the inputs of those layers:

* ``activation=None`` — weight-only quantization (W4A16-style);
* ``"dynamic"`` — per-token symmetric int8, the scale computed from each token's row at run time
  (the "dynamic" quantization of PyTorch / ONNX Runtime, LLM.int8()'s vector-wise activations);
* ``"static"`` — per-tensor affine int8 with ranges calibrated beforehand on held-out batches
  (``act_calibration`` = min-max, percentile, MSE or KL).

Weights are fake-quantized (quantize then dequantize), so the float forward pass computes exactly
what an integer kernel with these codes and scales would, up to float32 summation order.

How the weights' codes are chosen is the recipe's ``method`` (:data:`WEIGHT_METHODS`):

* ``"rtn"`` (default) — round to nearest through the format registry, any format;
* ``"gptq"`` — :func:`refquant.ptq.gptq.gptq_quantize` on each linear's Hessian, block by block on
  the calibration batches' inputs from the already-quantized model
  (:func:`refquant.ptq.hessian.quantize_blockwise`); ``method_options={"head": "float"}`` leaves the
  output head in float, as IST-DASLab ``llama.py`` does (default ``"gptq"``: the head is GPTQ'd last);
* ``"awq"`` — :func:`refquant.ptq.awq_model.awq_quantize` (scale search folded into the norms / linears,
  clip search, AWQ's pseudo-quantizer; the head by round to nearest, or ``head="awq"`` / ``"float"``);
* ``"hqq"`` — :func:`refquant.ptq.hqq.hqq_quantize` per linear (no data).

The three algorithms take the grid from the recipe's ``int{b}`` format: ``bits``, ``group_size``
(0 = per output row) and ``symmetric`` (False: a zero point per group, as the GPTQ / AWQ papers'
tables; HQQ is asymmetric only, with a float zero); ``method_options`` are the algorithm's own
keyword arguments (e.g. ``{"act_order": True}`` for GPTQ). Every linear, the head included, is
quantized, as by ``"rtn"``, unless ``head="float"``: then the head is neither quantized nor counted. The storage counts: GPTQ's codes, float32 scales, b-bit zero points and
(act-order without static groups) a 32-bit ``g_idx`` per input column; AWQ the registry's ``int{b}``
count of the same grid; HQQ b-bit codes and a float32 scale and float32 zero per group.

References
----------
Nagel et al., "A White Paper on Neural Network Quantization", arXiv:2106.08295, §3 (PTQ pipeline,
static / dynamic activation quantization). Frantar et al., "GPTQ", ICLR 2023 (W4/W3 group-wise
weight-only baselines, group size 128). Dettmers et al., "LLM.int8()", NeurIPS 2022, §3.1 (per-token).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping
from collections.abc import Callable, Collection, Iterable

import numpy as np

from ..models.gpt import affine
from ..models.lm import LM, weight
from ..core.observers import calibrate
from ..formats import registry
from ..core.dynamic import fake_quantize_per_token
from ..core.uniform import fake_quantize
from .awq_model import awq_quantize
from .gptq import gptq_layer
from .hessian import quantize_blockwise
from .hqq import hqq_quantize

ACTIVATION_MODES = (None, "dynamic", "static")
WEIGHT_METHODS = ("rtn", "gptq", "awq", "hqq")
INT_FORMATS = tuple(f"int{b}" for b in range(2, 9))  # the grids GPTQ / AWQ / HQQ quantize to


@dataclass(frozen=True)
class Recipe:
    """Which format every linear weight gets, and how the linear layers' inputs are quantized."""

    name: str  # label in tables and plots
    weight_format: str | None = "int8"  # a key of refquant.formats.registry.FORMATS; None keeps float32
    weight_options: Mapping = field(default_factory=dict)  # the format's options, e.g. {"group_size": 32}
    activation: str | None = None  # one of ACTIVATION_MODES
    act_calibration: str = "minmax"  # static activations: minmax, percentile, mse, kl
    layers: tuple | None = None  # quantize only these linear layers (None: all)
    method: str = "rtn"  # how the weight codes are chosen: one of WEIGHT_METHODS (module docstring)
    method_options: Mapping = field(default_factory=dict)  # the method's own options, e.g. {"act_order": True}

    def __post_init__(self):
        opts = MappingProxyType(dict(self.weight_options))
        if self.weight_format is not None:
            registry.check_options(self.weight_format, opts)
        elif opts:
            raise ValueError(f"weight_options: float weights (weight_format=None) take none, got {dict(opts)}")
        object.__setattr__(self, "weight_options", opts)
        if self.activation not in ACTIVATION_MODES:
            raise ValueError(f"activation: unknown mode {self.activation!r}; expected one of {ACTIVATION_MODES}")
        if self.method not in WEIGHT_METHODS:
            raise ValueError(f"method: unknown {self.method!r}; expected one of {WEIGHT_METHODS}")
        object.__setattr__(self, "method_options", MappingProxyType(dict(self.method_options)))
        if self.method != "rtn":
            if self.weight_format not in INT_FORMATS or opts.get("calibration", "minmax") != "minmax":
                raise ValueError(f"weight_format: method {self.method!r} quantizes to a min-max int2 … int8 grid, "
                                 f"got {self.weight_format!r} {dict(opts)}")
            if opts.get("group_size", 0) is None:
                raise ValueError(f"weight_options: method {self.method!r} needs group_size 0 (per row) or > 0, not None")
            if self.method == "hqq" and opts.get("symmetric", True):
                raise ValueError("weight_options: HQQ's grid is asymmetric; set symmetric=False")
        elif self.method_options:
            raise ValueError(f"method_options: round to nearest takes none, got {dict(self.method_options)}")


def quantize_weight(w: np.ndarray, r: Recipe) -> tuple[np.ndarray, int]:
    """Fake-quantize one (out, in) weight matrix through the format registry:
    ``(w_hat float32, storage bits)`` — bits as the registry counts them (scales, zero points,
    codebooks and exponents included)."""
    if r.weight_format is None:
        return w, 32 * w.size
    t = registry.quantize(w, r.weight_format, **r.weight_options)
    return t.dequantize().astype(np.float32), t.storage_bits()


def _targets(lm: LM, r: Recipe) -> list:
    names = list(lm.linear_names)
    if r.layers is None:
        return names
    unknown = set(r.layers) - set(names)
    if unknown:
        raise ValueError(f"layers: unknown linear layers {sorted(unknown)}; the model has {names}")
    return [n for n in names if n in r.layers]


def _grid(r: Recipe) -> tuple:
    """(bits, group_size, symmetric) of an ``int{b}`` recipe, with the registry's defaults."""
    opts = {**registry.FORMATS[r.weight_format].defaults, **r.weight_options}
    return int(r.weight_format[3:]), int(opts["group_size"]), bool(opts["symmetric"])


def apply_method(lm: LM, p: dict, r: Recipe, calib_batches: Iterable[np.ndarray] = ()) -> tuple[dict, dict]:
    """The recipe's weights chosen by its ``method`` (module docstring): ``(params', {name: bits})`` —
    every quantized linear's ŵ (float32; AWQ also changes the norms / linears it folds scales into)
    and its storage bits. ``calib_batches`` (token ids (B, T) each) are needed by GPTQ and AWQ.

    ``r.layers`` must be None for GPTQ / AWQ (they quantize the whole model in order).
    """
    names = _targets(lm, r)
    if r.method == "rtn":
        q, bits = dict(p), {}
        for name in names:  # a tied head is quantized into its own entry; the embedding stays float
            q[name], bits[name] = quantize_weight(weight(lm, p, name), r)
        return q, bits
    b, gs, sym = _grid(r)
    opts = dict(r.method_options)
    if r.method == "hqq":
        q, bits = dict(p), {}
        for name in names:
            t = hqq_quantize(weight(lm, p, name), bits=b, group_size=gs or None, **opts)
            q[name], bits[name] = t.w_hat, t.storage_bits(param_bits=32)
        return q, bits
    if r.layers is not None:
        raise ValueError(f"layers: method {r.method!r} quantizes every linear layer; got layers={r.layers}")
    batches = list(calib_batches)
    if not batches:
        raise ValueError(f"calib_batches: method {r.method!r} needs calibration batches")
    if r.method == "gptq":
        head = opts.pop("head", "gptq")
        if head not in ("gptq", "float"):
            raise ValueError(f"method_options: GPTQ's head must be 'gptq' or 'float', got {head!r}")
        layer, head_name = gptq_layer(bits=b, group_size=gs, symmetric=sym, **opts), lm.sequential_groups[-1][-1]

        def quantize(name, w, stats):  # a float head is passed through unchanged
            return w if head == "float" and name == head_name else layer(name, w, stats)

        q, res = quantize_blockwise(lm, p, batches, quantize)
        return q, {n: res[n].storage_bits() for n in names if not (head == "float" and n == head_name)}
    q, res = awq_quantize(lm, p, batches, bits=b, group_size=gs, zero_point=not sym, **opts)
    return q, {n: registry.storage_bits(r.weight_format, weight(lm, p, n).shape, group_size=gs, symmetric=sym)
               for n in names if n in res.tensors}  # head="float" leaves the head unquantized: not counted


def _apply(lm: LM, p: dict, r: Recipe, calib_batches=()):
    """(quantized parameters, total bits, bits of the quantized linear weights, their element count)."""
    quantized = _targets(lm, r) if r.weight_format is not None else []
    q, bits = apply_method(lm, p, r, calib_batches) if quantized else (dict(p), {})
    w_bits = sum(bits.values())
    total = w_bits + sum(32 * v.size for k, v in q.items() if k not in quantized)  # the rest: float32
    n_w = sum(weight(lm, p, n).size for n in (quantized or lm.linear_names))
    return q, total, (w_bits if quantized else 32 * n_w), n_w


def apply_weights(lm: LM, p: dict, r: Recipe, calib_batches: Iterable[np.ndarray] = ()) -> tuple[dict, float]:
    """Parameters with the recipe's linear weights fake-quantized, and the model's size in bytes
    (embeddings, norms, biases and unquantized layers counted as float32). ``calib_batches``: for
    the GPTQ and AWQ methods."""
    q, total, _, _ = _apply(lm, p, r, calib_batches)
    return q, total / 8


def calibrate_activations(lm: LM, p: dict, batches: Iterable[np.ndarray], r: Recipe) -> dict:
    """Per-layer (scale, zero point) of the linear layers' inputs, from float forward passes over
    ``batches`` (token ids (B, T) each), with the recipe's ``act_calibration``."""
    seen: dict = {}

    def record(name, x, w, b):
        seen.setdefault(name, []).append(x.reshape(-1, x.shape[-1]))
        return affine(x, w, b)

    for xb in batches:
        lm.forward(p, xb, linear=record)
    return {name: calibrate(np.concatenate(xs), "int8", r.act_calibration) for name, xs in seen.items()}


def linear_hook(r: Recipe, act_qparams: dict | None = None, targets: Collection[str] | None = None) -> Callable | None:
    """The ``linear`` replacement that quantizes activations as the recipe says (None: float)."""
    if r.activation is None:
        return None

    def hook(name, x, w, b):
        if targets is not None and name not in targets:
            return affine(x, w, b)
        if r.activation == "dynamic":  # one symmetric int8 scale per token (row), chosen at run time
            xq = fake_quantize_per_token(x, "int8")
        else:  # static: the calibrated per-tensor affine parameters
            s, z = act_qparams[name]
            xq = fake_quantize(x, s.astype(x.dtype), z, "int8")
        return affine(xq, w, b)
    return hook


def run_recipe(lm: LM, p: dict, r: Recipe, evaluate: Callable, calib_batches: Iterable[np.ndarray] = ()) -> dict:
    """Apply a recipe and evaluate it.

    ``evaluate(params, linear)`` scores a model (e.g. :func:`refquant.models.train.evaluator` for the
    tiny GPT) and returns a dict of metrics; ``calib_batches`` (token ids) calibrate static activations
    and feed the GPTQ / AWQ methods.
    Returns ``{"method", "bits_per_weight", "size_bytes", **metrics}``; bits per weight count the
    quantized linear layers only, scales and zero points included.
    """
    q, total_bits, w_bits, n_w = _apply(lm, p, r, calib_batches)
    targets = _targets(lm, r)
    acts = calibrate_activations(lm, p, calib_batches, r) if r.activation == "static" else None
    metrics = evaluate(q, linear_hook(r, acts, set(targets)))
    return {"method": r.name, "bits_per_weight": w_bits / n_w, "size_bytes": int(round(total_bits / 8)), **metrics}


def standard_recipes() -> list:
    """The recipes of the demo table (issue 6): weight-only uniform, W8A8, and the non-uniform formats."""
    return [
        Recipe("float", None),
        Recipe("w8-per-channel", "int8"),
        Recipe("w4-g128", "int4", {"group_size": 128}),
        Recipe("w4-g32", "int4", {"group_size": 32}),
        Recipe("w3-g32", "int3", {"group_size": 32}),
        Recipe("w4-g32-mse", "int4", {"group_size": 32, "calibration": "mse"}),
        Recipe("w8a8-static", "int8", activation="static", act_calibration="minmax"),
        Recipe("w8a8-static-pct", "int8", activation="static", act_calibration="percentile"),
        Recipe("w8a8-dynamic", "int8", activation="dynamic"),
        Recipe("nf4", "nf4"),
        Recipe("fp8-e4m3", "fp8_e4m3"),
        Recipe("fp4-e2m1-g32", "fp4_e2m1"),
        Recipe("kmeans-16", "kmeans", {"bits": 4}),
        Recipe("log2-4bit", "log2", {"bits": 4}),
    ]
