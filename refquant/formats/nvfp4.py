"""NVFP4: FP4 E2M1 elements in blocks of 16, an FP8 E4M3 scale per block and a float32 scale per tensor.

Two-level scaling (NVIDIA Blackwell; "Pretraining Large Language Models with NVFP4"), as torchao's
``nvfp4_quantize`` computes it — every step in float32, rounded to nearest even::

    g    = amax(|x|) / (448 · 6)                      per-tensor scale (448 = E4M3 max, 6 = E2M1 max)   (1)
    b    = amax_block / 6                             the block scale that maps the block amax to 6    (2)
    s    = e4m3(clamp(b / g, 2^−6, 448))              stored E4M3 byte: RNE, never subnormal or NaN     (3)
    r    = (1 / g) / s                                the element multiplier                            (4)
    q_i  = e2m1(clamp(x_i · r, −6, 6))                E2M1 code: RNE, sign kept (−0 for small negatives) (5)
    x̂_i  = value(q_i) · (g · s)                       dequantization (torchao ``to_dtype``)             (6)

Each arrow is one float32 operation (``a / b``, ``a · b`` rounded), in this order; (4) and (5) multiply by
a reciprocal, as torchao 0.18 does "to match the MSLK triton kernel" (earlier torchao divided x by
fl32(g · s); the codes can differ where x · r lands on an E2M1 rounding boundary). Without a per-tensor
scale (``per_tensor_scale=None``, single level): s = e4m3(clamp(b, 2^−6, 448)) and r = 1 / s.
Because of the clamp at 2^−6 (E4M3's smallest normal), a block whose amax is below 2^−6 · 6 · g has too
large a scale and its values shrink toward zero; an all-zero block stores s = 2^−6 (byte 0x08).

Where references differ: an all-zero tensor has g = 0 and torchao's b / g is NaN; here g = 1 (as
TransformerEngine's global encode scale 1 for amax = 0). TransformerEngine stores the encode scale
S = 448 · 6 / amax and multiplies where torchao divides, so its bytes can differ in the last place of
b · S. ggml's NVFP4 (GGML_TYPE_NVFP4) is another layout: 64-value blocks of 4 × 16 with UE4M3 scales and
no per-tensor scale — not this format.

Storage: 4 bits per value, 8 per block of 16, 32 per tensor: 4 + 8/16 + 32/n = 4.5 + 32/n bits per value.

References
----------
NVIDIA, "Pretraining Large Language Models with NVFP4", arXiv:2509.25149 (the NVFP4 format: 16-value
blocks, E4M3 block scales, an FP32 tensor scale). Mirrored code: torchao 0.18.0 ``torchao/prototype/mx_formats/nvfp4_tensor.py:
nvfp4_quantize, per_tensor_amax_to_scale, NVFP4Tensor.to_dtype``; cuDNN "Block Scaling" operations.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..core._checks import float_array, int_array, positive_scale, to_float
from ..core.uniform import _CHUNK
from ..core._types import ArrayLike
from .minifloat import minifloat_decode, minifloat_encode

F32 = np.float32
BLOCK = 16
E4M3_MAX, E2M1_MAX, E4M3_TINY = F32(448), F32(6), F32(2.0 ** -6)


def _as_f32(x) -> np.ndarray:
    xa = to_float(float_array(x, "x"), F32, "x")
    if xa.ndim == 0:
        raise ValueError("x: expected an array with at least one axis, got a scalar")
    if not np.all(np.isfinite(xa)):
        raise ValueError("x must be finite (NaN or ±Inf found): NVFP4 has no code for them")
    return xa


def _per_tensor(xa: np.ndarray, per_tensor_scale):
    """g of equation (1) as a float32 scalar (None: single-level), checked so that 1 / g is finite."""
    if per_tensor_scale is None:
        return None
    if isinstance(per_tensor_scale, str):
        if per_tensor_scale != "amax":
            raise ValueError(f"per_tensor_scale: expected 'amax', None or a positive float, got {per_tensor_scale!r}")
        amax = np.maximum(xa.max(initial=F32(0)), -xa.min(initial=F32(0)))  # max|x| without a full |x| copy
        g = F32(amax / F32(448.0 * 6.0)) if amax > 0 else F32(1)
    else:
        if np.ndim(per_tensor_scale):
            raise ValueError("per_tensor_scale: expected one number (a per-tensor scale)")
        g = F32(positive_scale(per_tensor_scale, "per_tensor_scale", F32))
    with np.errstate(over="ignore", divide="ignore"):
        if g == 0 or not np.isfinite(F32(1) / g):
            raise ValueError(f"per_tensor_scale: g = {float(g):.3g} has no finite float32 reciprocal "
                             "(x's amax is too small for a two-level NVFP4 scale)")
    return g


def _blocks(xa: np.ndarray) -> np.ndarray:
    n = xa.shape[-1]
    rows = xa.reshape(int(np.prod(xa.shape[:-1])), n)
    nb = -(-n // BLOCK)
    return np.pad(rows, ((0, 0), (0, nb * BLOCK - n))).reshape(rows.shape[0], nb, BLOCK)


@dataclass(frozen=True)
class NVFP4Tensor:
    """NVFP4 codes and scales; ``.shape``, ``.dequantize()`` (float32, equation (6)), ``.storage_bits()``."""

    codes: np.ndarray  # uint8 E2M1 bit patterns 0 … 15, shape of x
    block_scales: np.ndarray  # uint8 E4M3 bit patterns, shape (..., ceil(K / 16))
    per_tensor_scale: float | None  # g (a float32 value), None for single-level scaling

    @property
    def shape(self) -> tuple:
        return self.codes.shape

    def dequantize(self) -> np.ndarray:
        return nvfp4_dequantize(self.codes, self.block_scales, self.per_tensor_scale)

    def storage_bits(self) -> int:
        return 4 * int(self.codes.size) + 8 * int(self.block_scales.size) + (32 if self.per_tensor_scale is not None else 0)


def nvfp4_quantize(x: ArrayLike, *, per_tensor_scale: str | float | None = "amax") -> NVFP4Tensor:
    """Quantize ``x`` to NVFP4 along its last axis (blocks of 16; a partial last block as if zero-padded).

    Parameters
    ----------
    x : ndarray of float, shape (..., K); finite (converted to float32 first)
    per_tensor_scale : "amax" (equation (1) from x), a positive float (a calibrated g), or None (single level)

    Returns
    -------
    NVFP4Tensor
    """
    xa = _as_f32(x)
    g = _per_tensor(xa, per_tensor_scale)
    n = xa.shape[-1]
    rows = xa.reshape(-1, n)  # (P, K)
    nb = -(-n // BLOCK)
    codes = np.empty(rows.shape, np.uint8)
    s_code = np.empty((rows.shape[0], nb), np.uint8)
    step = max(1, _CHUNK // 4 // max(1, nb * BLOCK))  # rows per chunk: its temporaries stay in cache
    for i in range(0, rows.shape[0], step):
        b = _blocks(rows[i:i + step])  # (p, nb, 16)
        bs = np.divide(np.abs(b).max(axis=2, initial=F32(0)), E2M1_MAX, dtype=F32)  # (2)
        sb = bs if g is None else np.divide(bs, g, dtype=F32)
        sc = minifloat_encode(np.clip(sb, E4M3_TINY, E4M3_MAX), "float8e4m3fn")  # (3)
        s = minifloat_decode(sc, "float8e4m3fn")
        r = np.divide(F32(1) if g is None else np.divide(F32(1), g, dtype=F32), s, dtype=F32)  # (4)
        v = np.clip(np.multiply(b, r[..., None], dtype=F32), -E2M1_MAX, E2M1_MAX)
        codes[i:i + step] = minifloat_encode(v, "float4e2m1").reshape(b.shape[0], -1)[:, :n]  # (5)
        s_code[i:i + step] = sc
    return NVFP4Tensor(codes.reshape(xa.shape), s_code.reshape(xa.shape[:-1] + (nb,)),
                       None if g is None else float(g))


def nvfp4_dequantize(codes: ArrayLike, block_scales: ArrayLike, per_tensor_scale: float | None = None) -> np.ndarray:
    """Equation (6): ``value(code) · fl32(g · s)`` in float32 (single level: ``value(code) · s``)."""
    c = int_array(codes, "codes", 0, 15)
    sc = int_array(block_scales, "block_scales", 0, 255)
    if c.ndim == 0:
        raise ValueError("codes: expected an array with at least one axis, got a scalar")
    want = c.shape[:-1] + (-(-c.shape[-1] // BLOCK),)
    if sc.shape != want:
        raise ValueError(f"block_scales: expected shape {want} for codes of shape {c.shape}, got {sc.shape}")
    s = minifloat_decode(sc, "float8e4m3fn")
    if np.isnan(s).any():
        raise ValueError("block_scales: 0x7F / 0xFF is E4M3's NaN")
    if per_tensor_scale is not None:
        s = np.multiply(positive_scale(per_tensor_scale, "per_tensor_scale", F32), s, dtype=F32)
    n = c.shape[-1]
    rows, srows = c.reshape(-1, n), s.reshape(-1, want[-1])
    out = np.empty(rows.shape, F32)
    step = max(1, _CHUNK // 4 // max(1, n))  # rows per chunk: no full-size float64 temporaries
    for i in range(0, rows.shape[0], step):
        y = minifloat_decode(rows[i:i + step], "float4e2m1") * np.repeat(srows[i:i + step], BLOCK, axis=-1)[:, :n]
        out[i:i + step] = to_float(y.astype(np.float64), F32, "dequantized values")
    return out.reshape(c.shape)


def _nearest_ref(t: Fraction, values: list, ties_even: bool = True) -> int:
    # index of the value nearest to t among sorted non-negative `values`; a tie goes to the even index
    d = [abs(t - Fraction(float(v))) for v in values]
    near = [k for k, dk in enumerate(d) if dk == min(d)]
    return near[0] if len(near) == 1 or near[0] % 2 == 0 else near[1]


def nvfp4_quantize_ref(x: ArrayLike, *, per_tensor_scale: str | float | None =
                       "amax") -> tuple[np.ndarray, np.ndarray, float | None]:
    """Loop twin of :func:`nvfp4_quantize` over the last axis: one float32 scalar operation per step of (1)–(5),
    E4M3 and E2M1 by exhaustive nearest search with exact fractions. Returns ``(codes, block_scales, g)``."""
    xa = _as_f32(x)
    g = _per_tensor(xa, per_tensor_scale)
    e4m3 = [float(v) for v in minifloat_decode(np.arange(127), "float8e4m3fn")]  # 0 … 448, codes 0 … 0x7E
    e2m1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    rows = xa.reshape(-1, xa.shape[-1])
    codes = np.zeros(rows.shape, np.uint8)
    scales = np.zeros((rows.shape[0], -(-rows.shape[1] // BLOCK)), np.uint8)
    for r_i, row in enumerate(rows):
        for j in range(scales.shape[1]):
            blk = row[j * BLOCK:(j + 1) * BLOCK]
            amax = F32(0)
            for v in blk:
                amax = max(amax, abs(v))
            sb = F32(amax / E2M1_MAX) if g is None else F32(F32(amax / E2M1_MAX) / g)
            sb = min(max(sb, E4M3_TINY), E4M3_MAX)
            scales[r_i, j] = code = _nearest_ref(Fraction(float(sb)), e4m3)
            r = F32(F32(1) / F32(e4m3[code])) if g is None else F32(F32(F32(1) / g) / F32(e4m3[code]))
            for i, v in enumerate(blk):
                t = min(max(F32(v * r), -E2M1_MAX), E2M1_MAX)
                codes[r_i, j * BLOCK + i] = _nearest_ref(Fraction(float(abs(t))), e2m1) | (8 if np.signbit(t) else 0)
    return codes.reshape(xa.shape), scales.reshape(xa.shape[:-1] + (scales.shape[1],)), None if g is None else float(g)
