"""The tiny GPT run end to end in integers: int8 linear layers, integer LayerNorm, i-GELU, integer
softmax attention, and an int32 residual stream — no floating point touches a tensor between the
token ids and the output logits.

Built once from a float checkpoint and calibration batches (scales, int8 weights, int32 biases).
At run time floats appear only as scalars: the fixed-point multipliers of the requantizations after
each integer LayerNorm are derived per call, because its output scale carries a power of two that
depends on the input (``refquant.integer.nonlinear._to_int32``); no tensor is ever float.

Every activation scale is static and symmetric over the calibration batches, widened by ``headroom``:
int8 scales are the core's ``qparams_from_range(−a, a, "int8_narrow", symmetric=True)`` =
``max(a / 127, eps)`` with ``a = headroom · max|x|`` — its eps floor (float32 epsilon) is the one guard
for an all-zero range — and every requantization to int8 is :func:`refquant.integer.gemm.requantize`
on [−127, 127]. The int32 residual stream uses ``s_res = headroom · max|r| / (2^30 − 1)`` on the 31-bit
range ``RESIDUAL = QRange(31, limits=(−(2^30 − 1), 2^30 − 1))`` (one addition of two such values still fits int32): the
embeddings are ``quantize(wte, s_res, 0, RESIDUAL)`` and every requantization into the stream is
``requantize(acc, M, shift, 0, RESIDUAL)`` — the same core quantizers, on a 31-bit range.

Pipeline of one block (``→`` is a fixed-point requantization, ``multiply_by_quantized_multiplier``)::

    r (int32, s_r) ─ i-LayerNorm ─ (int32, s_ln·γ per channel) → int8 a ─ c_attn → int8 qkv
      ─ per head: int_attention → int8 y ─ c_proj → int8 → (int32, s_r) ─ + r
    r ─ i-LayerNorm → int8 ─ c_fc → int8 u ─ i-GELU (int32) → int8 ─ c_proj → int8 → (int32, s_r) ─ + r

References
----------
Kim et al., "I-BERT: Integer-only BERT Quantization", ICML 2021, fig. 2 and §3 (integer-only
transformer inference). Jacob et al., CVPR 2018, §2 (integer arithmetic with fixed-point multipliers).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.ranges import QRange
from ..core.uniform import qparams_from_range, quantize
from ..integer.fixedpoint import quantize_multiplier
from ..integer.gemm import requantize
from ..integer.layers import int_attention, quantize_linear_layer
from ..integer.nonlinear import int_gelu, int_layernorm
from ..models.gpt import GPTConfig, affine, forward

R_MAX = 2**30 - 1  # the residual stream's int32 range (headroom for one addition)
RESIDUAL = QRange(31, limits=(-R_MAX, R_MAX))  # a 31-bit custom range, stored in int32


def _to_int8(q, s_from, s_to):
    """int32 ``q`` at scale(s) ``s_from`` (scalar or per-channel along the last axis) requantized to int8
    at ``s_to`` on [−127, 127]: ``requantize(q, M)`` with ``M = s_from / s_to`` in fixed point."""
    m, sh = quantize_multiplier(np.asarray(s_from, np.float64) / s_to)
    return requantize(q, m, sh, 0, "int8_narrow")


def _to_residual(q, s_from, s_res):
    """int32 ``q`` at scale ``s_from`` requantized to the residual scale on ±R_MAX: ``requantize(q, M)``
    with ``M = s_from / s_res`` in fixed point and the 31-bit range ``RESIDUAL``."""
    m, sh = quantize_multiplier(np.asarray(s_from, np.float64) / s_res)
    return requantize(q, m, sh, 0, RESIDUAL)


@dataclass(frozen=True)
class IntGPT:
    """Integer-only tiny GPT: call :func:`int_forward`. Built by :func:`build_int_gpt`."""

    cfg: GPTConfig
    wte: np.ndarray  # int32 (V, C): token embeddings at the residual scale
    wpe: np.ndarray  # int32 (T, C): position embeddings at the residual scale
    s_res: float  # residual stream scale
    ln: dict  # name -> (gamma, beta) float (folded into integer biases / scales by int_layernorm)
    s_act: dict  # name -> int8 scale of each linear layer's input, and of its output
    layers: dict  # name -> refquant.integer.layers.QuantizedLinear
    s_logits: float


def _calibrate_ranges(p, cfg, batches):
    """max |·| of every linear layer's input and output, each GELU output and the residual stream."""
    amax: dict = {}

    def upd(key, v):
        amax[key] = max(amax.get(key, 0.0), float(np.abs(v).max()))

    def lin(name, x, w, b):
        y = affine(x, w, b)
        upd(name + ":in", x)
        upd(name + ":out", y)
        return y

    for xb in batches:
        forward(p, xb, cfg, linear=lin, tap=upd)
    return amax


def build_int_gpt(p: dict, cfg: GPTConfig, calib_batches: Sequence[np.ndarray], *, headroom: float = 1.25) -> IntGPT:
    """Quantize a float checkpoint for integer-only inference; ``headroom`` widens every calibrated range.

    ``calib_batches``: a non-empty list of token-id arrays (B, T), held out from evaluation.
    """
    if len(calib_batches) == 0:
        raise ValueError("calib_batches: integer-only inference needs at least one calibration batch")
    if not headroom >= 1:
        raise ValueError(f"headroom must be >= 1, got {headroom!r}")
    amax = _calibrate_ranges(p, cfg, calib_batches)
    s_res = headroom * amax["res"] / R_MAX
    names = [k for k in amax if k != "res"]
    a = headroom * np.array([amax[k] for k in names])
    s8 = dict(zip(names, qparams_from_range(-a, a, "int8_narrow", symmetric=True, dtype=np.float64)[0].tolist()))
    layers = {}
    for name in [n for n in p if n.endswith(".w") and (".attn." in n or ".mlp." in n or n == "lm_head.w")]:
        layers[name] = quantize_linear_layer(p[name], p.get(name[:-2] + ".b"), s8[name + ":in"], 0, s8[name + ":out"])
    ln = {k[:-2]: (p[k], p[k[:-2] + ".b"]) for k in p if k.endswith(".g")}
    # x / s_res in the embeddings' dtype (a Python-float scale takes it), rounded half to even, clamped to ±R_MAX
    wte = quantize(p["wte"], s_res, 0, RESIDUAL)  # (V, C) int32
    wpe = quantize(p["wpe"], s_res, 0, RESIDUAL)  # (T, C) int32
    return IntGPT(cfg, wte, wpe, float(s_res), ln, s8, layers, s8["lm_head.w:out"])


def _norm_to_int8(m: IntGPT, r, ln_name, s_in):
    g, b = m.ln[ln_name]
    q, s_ch = int_layernorm(r, m.s_res, g, b)  # int32, per-channel scale
    return _to_int8(q, s_ch, s_in)


def int_forward(m: IntGPT, idx: np.ndarray) -> np.ndarray:
    """int8 logits (B, T, V) at scale ``m.s_logits`` for token ids (B, T): integers throughout."""
    cfg = m.cfg
    B, T = idx.shape
    r = m.wte[idx].astype(np.int64) + m.wpe[:T]  # (B, T, C) residual stream, int at s_res
    C, nh = cfg.n_embd, cfg.n_head
    hs = C // nh
    flat = lambda t: t.reshape(-1, t.shape[-1])  # noqa: E731
    for i in range(cfg.n_layer):
        h = f"h{i}."
        L: dict = {k: v for k, v in m.layers.items() if k.startswith(h)}
        a = _norm_to_int8(m, r, h + "ln_1", m.s_act[h + "attn.c_attn.w:in"])
        qkv = L[h + "attn.c_attn.w"](flat(a)).reshape(B, T, 3 * C)  # int8 at s_qkv
        s_qkv = m.s_act[h + "attn.c_attn.w:out"]
        s_y = m.s_act[h + "attn.c_proj.w:in"]
        q, k, v = (np.ascontiguousarray(qkv[..., j * C:(j + 1) * C].reshape(B, T, nh, hs).transpose(0, 2, 1, 3))
                   for j in range(3))  # (B, nh, T, hs) each
        y = int_attention(q, k, v, s_qkv, s_qkv, s_qkv, s_y).transpose(0, 2, 1, 3).reshape(B, T, C)
        o = L[h + "attn.c_proj.w"](flat(y)).reshape(B, T, C)
        r += _to_residual(o.astype(np.int32), m.s_act[h + "attn.c_proj.w:out"], m.s_res)
        mm = _norm_to_int8(m, r, h + "ln_2", m.s_act[h + "mlp.c_fc.w:in"])
        u = L[h + "mlp.c_fc.w"](flat(mm))  # int8 at s_u
        gq, s_g = int_gelu(u.astype(np.int32), m.s_act[h + "mlp.c_fc.w:out"])
        g8 = _to_int8(gq, s_g, m.s_act[h + "mlp.c_proj.w:in"])
        o = L[h + "mlp.c_proj.w"](g8).reshape(B, T, C)
        r += _to_residual(o.astype(np.int32), m.s_act[h + "mlp.c_proj.w:out"], m.s_res)
    xf = _norm_to_int8(m, r, "ln_f", m.s_act["lm_head.w:in"])
    return m.layers["lm_head.w"](flat(xf)).reshape(B, T, -1)
