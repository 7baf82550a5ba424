"""MX block formats (OCP Microscaling v1.0): MXFP8, MXFP6, MXFP4, MXINT8 (ggml's block: :mod:`.ggml_mxfp4`).

A block of k = 32 consecutive values V_i shares one power-of-two scale X stored as an E8M0 byte; each
value keeps a narrow element code P_i, and decodes as ``V_i ≈ X · P_i``. The spec's conversion
(§6.3, "minimally supported"), with emax_elem the exponent of the element type's largest power of two::

    shared_exp = floor(log2(max_i |V_i|)) − emax_elem          (1)   scale_rounding="floor"
    X          = 2^clamp(shared_exp, −127, 127)                  (2)   E8M0 byte = shared_exp + 127
    P_i        = cast_elem(V_i / X), normal values clamped to ±max_normal of the element type   (3)

=========  ===========  ====  =====  ==========  =========  ======================================
elem       MX name      bits  emax   max normal  mbits      element encoding (§5.3)
=========  ===========  ====  =====  ==========  =========  ======================================
fp8_e4m3   MXFP8        8     8      448         3          OFP8 E4M3FN (S.1111.111 = NaN)
fp8_e5m2   MXFP8        8     15     57344       2          OFP8 E5M2 (IEEE-like Inf / NaN)
fp6_e2m3   MXFP6        6     2      7.5         3          bias 1, no Inf / NaN
fp6_e3m2   MXFP6        6     4      28          2          bias 3, no Inf / NaN
fp4_e2m1   MXFP4        4     2      6           1          bias 1, no Inf / NaN
int8       MXINT8       8     0      127/64      6          two's complement q, value q / 64
=========  ===========  ====  =====  ==========  =========  ======================================

E8M0 (§5.4.1): an unsigned biased exponent, bias 127, values 2^−127 … 2^127, 0xFF = NaN, no zero and no
Inf. An all-zero block has no log2; it stores byte 0x00 (2^−127: torchao, ggml; microxcaling gets
the same after clamping, except MXINT8: 0x01). Its codes are all 0, so any scale decodes it exactly.

Scale rules — the switch users meet (a = the block's amax, M = max normal, all on float32 a):

==========  ==================================================  ==============================================
rule        shared exponent s (then clamped to [−127, 127])     who
==========  ==================================================  ==============================================
floor       floor(log2 a) − emax          (1)                   OCP spec §6.3; torchao FLOOR (default)
ceil        ceil(log2 a) − emax                                 torchao CEIL: never saturates, wastes a binade
even        floor(log2 round_half_up(a, mbits)) − emax          torchao EVEN: a rounded to mbits first
rceil       ceil(log2 fl32(a / M))                              NVIDIA cuBLAS / cuDNN ("quantize_round_up(
                                                                amax / vmax)"), torchao RCEIL: the smallest X
                                                                with a / X ≤ M
==========  ==================================================  ==============================================

Under floor and even, a / X reaches up to 2^(emax+1) > M: elements with |V_i| / X > M are clamped to ±M
(for E2M1: a block amax with significand above 1.5); ceil and rceil never clamp, ceil may waste a binade.

Element rounding, ``element_rounding``:

==============  ============================================================================
half_even       nearest, ties to even (IEEE RNE): torchao, ml_dtypes / ONNX casts,
                microxcaling round="even" — the default
half_away       nearest, ties away from zero: microxcaling's default round="nearest"
                (``_round_mantissa``: sign(A) · floor(|A| + 0.5))
(toward zero)   nearest, ties toward zero: ggml's MXFP4, only in :mod:`refquant.formats.ggml_mxfp4`
==============  ============================================================================

Float codes keep the sign of V_i (a small negative value becomes −0, as torch and ml_dtypes casts give);
int8 codes are ``q & 0xFF``, q ∈ [−127, 127] (−128 is never produced, as in microxcaling). V_i / X is
exact in float64, so the element cast is the only rounding. Inputs are converted to float32 first, the
references' input type.

Differences not mirrored here: microxcaling (float32 ``torch.log2``) and ggml (``log2f``) round log2 of
an amax a few ulps below 2^k up to k, so their floor is one larger there (ggml is mirrored exactly in
:func:`ggml_mxfp4_quantize`); torchao 0.18 divides blocks with scale byte 0 (amax < 2^(emax − 126)) by
2^−126 instead of 2^−127, and its eager RCEIL takes ceil of a float32 ``torch.log2``, which misses the
round-up when a / M is a few ulps above 2^k, |k| ≥ 4 (then the largest element is clamped).

The spec's steps one block and one element at a time, in exact fractions, are the loop twin
:func:`refquant.formats.mx_ref.mx_quantize_ref`; :func:`mx_quantize` equals it byte for byte.

References
----------
OCP "Microscaling Formats (MX) Specification" v1.0 (2023), §5.3 (element types), §5.4.1 (E8M0),
§6.3 (conversion). Rouhani et al., "Microscaling Data Formats for Deep Learning", arXiv:2310.10537.
Mirrored code: torchao ``torchao/prototype/mx_formats/mx_tensor.py: to_mx`` (0.18.0);
microsoft/microxcaling ``mx/mx_ops.py: _quantize_mx``, ``mx/elemwise_ops.py: _quantize_elemwise_core``;
llama.cpp ``ggml/src/ggml-quants.c: quantize_row_mxfp4_ref, dequantize_row_mxfp4``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..core._checks import choice, float_array, int_array, int_value, to_float
from ..core._types import ArrayLike
from ..core.uniform import _CHUNK
from .codebook import codebook_quantize
from .minifloat import FORMATS as MINIFLOATS
from .minifloat import MinifloatFormat, minifloat_decode

F32 = np.float32
SCALE_RULES = ("floor", "ceil", "even", "rceil")
ELEMENT_ROUNDING = {"half_even": "even", "half_away": "up"}  # -> codebook ties on magnitudes


@dataclass(frozen=True)
class ElementFormat:
    name: str  # the elem= argument
    bits: int
    emax: int  # emax_elem: exponent of the largest power of two <= max_normal
    mbits: int  # fraction bits (the EVEN rule rounds amax to this many)
    max_normal: float
    minifloat: MinifloatFormat | None  # None: MXINT8, two's complement q with value q / 64


ELEMENTS = {
    "fp8_e4m3": ElementFormat("fp8_e4m3", 8, 8, 3, 448.0, MINIFLOATS["float8e4m3fn"]),
    "fp8_e5m2": ElementFormat("fp8_e5m2", 8, 15, 2, 57344.0, MINIFLOATS["float8e5m2"]),
    "fp6_e2m3": ElementFormat("fp6_e2m3", 6, 2, 3, 7.5, MinifloatFormat("float6e2m3fn", 2, 3, 1, "none")),
    "fp6_e3m2": ElementFormat("fp6_e3m2", 6, 4, 2, 28.0, MinifloatFormat("float6e3m2fn", 3, 2, 3, "none")),
    "fp4_e2m1": ElementFormat("fp4_e2m1", 4, 2, 1, 6.0, MINIFLOATS["float4e2m1"]),
    "int8": ElementFormat("int8", 8, 0, 6, 127 / 64, None),
}


def element_format(elem: str) -> ElementFormat:
    return ELEMENTS[choice(elem, "elem", ELEMENTS)]


@lru_cache(maxsize=None)
def code_values(elem: str) -> np.ndarray:
    """Value of every code 0 … 2^bits − 1 of ``elem`` (float64; NaN / ±Inf where the format has them)."""
    f = element_format(elem)
    codes = np.arange(1 << f.bits)
    m = f.minifloat
    if m is None:
        v = ((codes ^ 0x80) - 0x80) / 64.0  # the int8 two's complement q, over 64
    elif m.name in MINIFLOATS:
        v = minifloat_decode(codes, m.name).astype(np.float64)
    else:  # FP6: no special codes, (−1)^s 2^(e−bias) (1 + f / 2^M), subnormal 2^(1−bias) f / 2^M
        e, frac = (codes >> m.man_bits) & ((1 << m.exp_bits) - 1), (codes & ((1 << m.man_bits) - 1)) / (1 << m.man_bits)
        v = np.where(e > 0, np.ldexp(1.0 + frac, e - m.bias), np.ldexp(frac, 1 - m.bias))
        v = np.where(codes >> (f.bits - 1), -v, v)
    v.setflags(write=False)
    return v


def _magnitudes(f: ElementFormat) -> np.ndarray:
    # values of the codes with sign bit 0 (int8: q = 0 … 127), increasing; the finite ones are the grid
    v = code_values(f.name)[: 1 << (f.bits - 1)]
    return v[np.isfinite(v)]


def encode_elements(v: ArrayLike, elem: str, element_rounding: str = "half_even") -> np.ndarray:
    """Codes (uint8 bit patterns) of the values ``v`` already divided by X: equation (3), saturating."""
    f = element_format(elem)
    ties = ELEMENT_ROUNDING[choice(element_rounding, "element_rounding", ELEMENT_ROUNDING)]
    va = float_array(v, "v")
    pos = _magnitudes(f)
    k = codebook_quantize(np.abs(va), pos, ties=ties).astype(np.int64)  # beyond max: the largest code
    neg = np.signbit(va)
    if f.minifloat is None:
        return (np.where(neg, -k, k) & 0xFF).astype(np.uint8)
    return (k | (neg.astype(np.int64) << (f.bits - 1))).astype(np.uint8)


def shared_exponent(amax: ArrayLike, elem: str, scale_rounding: str = "floor") -> np.ndarray:
    """Unbiased shared exponent s of each block (int64), from its amax ``a`` ≥ 0 (float32; see the rule table).

    ``a == 0`` gives −127; s is clamped below at −127; s > 127 (only MXINT8 near float32's top with
    ceil / even / rceil) raises ValueError: E8M0 has no larger finite scale.
    """
    f = element_format(elem)
    choice(scale_rounding, "scale_rounding", SCALE_RULES)
    a = np.asarray(amax, dtype=F32)
    if scale_rounding == "rceil":
        a = np.divide(a, F32(f.max_normal), dtype=F32)  # NVIDIA: round_up(fl32(amax / max)) to 2^s
    m, e = np.frexp(a.astype(np.float64))  # a = m · 2^e, m ∈ [0.5, 1): floor(log2 a) = e − 1
    s = e - 1
    if scale_rounding in ("ceil", "rceil"):
        s = s + (m != 0.5)
    elif scale_rounding == "even":
        s = s + (2 * m >= 2 - 2.0 ** -(f.mbits + 1))  # significand rounds half up to 2.0 at mbits
    if scale_rounding != "rceil":
        s = s - f.emax
    s = np.where(a == 0, -127, np.maximum(s, -127)).astype(np.int64)
    if s.size and s.max() > 127:
        raise ValueError(f"x: a block's amax needs the scale 2^{int(s.max())}, beyond E8M0's largest 2^127 "
                         f"({elem}, scale_rounding={scale_rounding!r})")
    return s


def _as_f32(x, name="x") -> np.ndarray:
    xa = to_float(float_array(x, name), F32, name)
    if xa.ndim == 0:
        raise ValueError(f"{name}: expected an array with at least one axis, got a scalar")
    if np.isinf(xa).any():
        raise ValueError(f"{name} must be finite: a block holding ±Inf has the NaN scale 0xFF")
    return xa


def _blocks(xa: np.ndarray, axis: int, block_size: int):
    """(P, nb, block_size) zero-padded blocks along ``axis`` (zeros change no amax) and the moved shape."""
    xm = np.moveaxis(xa, axis, -1)
    n = xm.shape[-1]
    nb = -(-n // block_size)
    rows = xm.reshape(int(np.prod(xm.shape[:-1])), n)
    return np.pad(rows, ((0, 0), (0, nb * block_size - n))).reshape(rows.shape[0], nb, block_size), xm.shape


def _unblock(b: np.ndarray, moved_shape: tuple, axis: int) -> np.ndarray:
    n = moved_shape[-1]
    return np.moveaxis(b.reshape(b.shape[0], -1)[:, :n].reshape(moved_shape), -1, axis)


def _check_layout(ndim, axis, block_size):
    axis = int_value(axis, "axis", -ndim, ndim - 1) % ndim
    return axis, int_value(block_size, "block_size", 1)


@dataclass(frozen=True)
class MXTensor:
    """An MX-quantized tensor: element codes and E8M0 scale bytes (``x ≈ 2^(scale − 127) · value(code)``).

    The registry contract: ``.shape``, ``.dequantize()`` (float32), ``.storage_bits()`` — every code
    (``bits`` each) and every scale byte (8 each; a partial last block stores a whole scale).
    """

    codes: np.ndarray  # uint8 bit patterns, shape of x
    scales: np.ndarray  # uint8 E8M0 bytes, shape of x with axis -> ceil(n / block_size)
    elem: str  # key of ELEMENTS
    block_size: int = 32
    axis: int = -1

    @property
    def shape(self) -> tuple:
        return self.codes.shape

    def dequantize(self) -> np.ndarray:
        return mx_dequantize(self.codes, self.scales, self.elem, block_size=self.block_size, axis=self.axis)

    def storage_bits(self) -> int:
        return int(self.codes.size) * ELEMENTS[self.elem].bits + 8 * int(self.scales.size)


def mx_quantize(x: ArrayLike, elem: str = "fp4_e2m1", *, block_size: int = 32, scale_rounding: str = "floor",
                element_rounding: str = "half_even", axis: int = -1) -> MXTensor:
    """Quantize ``x`` to an MX format: blocks of ``block_size`` along ``axis``, equations (1)–(3).

    Parameters
    ----------
    x : ndarray of float, any shape with ≥ 1 axis; finite (converted to float32 first)
    elem : {"fp4_e2m1", "fp6_e2m3", "fp6_e3m2", "fp8_e4m3", "fp8_e5m2", "int8"}
    block_size : int — k, 32 in the spec; a partial last block is quantized as if zero-padded
    scale_rounding : {"floor", "ceil", "even", "rceil"} — see the module table
    element_rounding : {"half_even", "half_away"}
    axis : int — the axis the blocks run along

    Returns
    -------
    MXTensor with ``codes`` (uint8, shape of x) and ``scales`` (uint8 E8M0, the block shape)
    """
    xa = _as_f32(x)
    ax, bs = _check_layout(xa.ndim, axis, block_size)
    xm = np.moveaxis(xa, ax, -1)
    moved, n = xm.shape, xm.shape[-1]
    nb = -(-n // bs)
    rows = xm.reshape(-1, n)  # (P, n)
    codes = np.empty(rows.shape, np.uint8)
    s_all = np.empty((rows.shape[0], nb), np.int64)
    step = max(1, _CHUNK // 4 // max(1, nb * bs))  # rows per chunk: the float64 temporaries stay in cache
    for i in range(0, rows.shape[0], step):
        b, _ = _blocks(rows[i:i + step], 1, bs)  # (p, nb, bs), zero-padded
        s = shared_exponent(np.abs(b).max(axis=2, initial=F32(0)), elem, scale_rounding)  # (p, nb)
        v = np.ldexp(b.astype(np.float64), -s[..., None])  # V_i / X, exact
        codes[i:i + step] = encode_elements(v, elem, element_rounding).reshape(b.shape[0], -1)[:, :n]
        s_all[i:i + step] = s
    codes = np.moveaxis(codes.reshape(moved), -1, ax)
    scales = np.moveaxis((s_all + 127).astype(np.uint8).reshape(moved[:-1] + (nb,)), -1, ax)
    return MXTensor(codes, scales, elem, bs, ax)


def e8m0_to_float(scales: ArrayLike) -> np.ndarray:
    """2^(byte − 127) for E8M0 bytes (float64); 0xFF (NaN) raises ValueError."""
    s = int_array(scales, "scales", 0, 254, " (0xFF is E8M0's NaN; 0 … 254 encode 2^-127 … 2^127)")
    return np.ldexp(1.0, s.astype(np.int64) - 127)


def mx_dequantize(codes: ArrayLike, scales: ArrayLike, elem: str = "fp4_e2m1", *, block_size: int = 32, axis: int = -1) -> np.ndarray:
    """``2^(scale − 127) · value(code)`` as float32 (exact: an element has ≤ 7 significant bits).

    NaN / Inf element codes and the NaN scale 0xFF raise ValueError, and so does a product beyond float32.
    """
    f = element_format(elem)
    c = int_array(codes, "codes", 0, (1 << f.bits) - 1)
    if c.ndim == 0:
        raise ValueError("codes: expected an array with at least one axis, got a scalar")
    ax, bs = _check_layout(c.ndim, axis, block_size)
    table = code_values(elem)
    finite = np.isfinite(table)
    if not finite.all():
        bad = ~finite[c]
        if bad.any():
            raise ValueError(f"codes: {int(c[bad][0]):#04x} is not a finite {elem} value (NaN / Inf code)")
    x_scale = e8m0_to_float(scales)
    want = c.shape[:ax] + (-(-c.shape[ax] // bs),) + c.shape[ax + 1:]
    if x_scale.shape != want:
        raise ValueError(f"scales: expected shape {want} for codes of shape {c.shape} in blocks of {bs}, got {x_scale.shape}")
    cm = np.moveaxis(c, ax, -1)
    n = cm.shape[-1]
    rows, srows = cm.reshape(-1, n), np.moveaxis(x_scale, ax, -1).reshape(-1, want[ax])
    out = np.empty(rows.shape, F32)
    step = max(1, _CHUNK // 4 // max(1, n))  # rows per chunk: the float64 products stay in cache
    for i in range(0, rows.shape[0], step):
        y = table[rows[i:i + step]] * np.repeat(srows[i:i + step], bs, axis=-1)[:, :n]
        out[i:i + step] = to_float(y, F32, "dequantized values")
    return np.moveaxis(out.reshape(cm.shape), -1, ax)


# ggml's MXFP4 block moved to refquant.formats.ggml_mxfp4; its names stay importable from here
from .ggml_mxfp4 import (GGML_BLOCK_BYTES, GGML_QK, KVALUES_MXFP4, ggml_mxfp4_dequantize,  # noqa: E402,F401
                         ggml_mxfp4_quantize, ggml_mxfp4_quantize_block_ref)
