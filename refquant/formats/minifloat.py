"""Minifloats — FP8 E4M3FN, FP8 E5M2, FP4 E2M1 — built from their bit layouts, as codebooks.

A code ``s eeee mmm`` (E4M3) means ``(−1)^s · 2^(e − bias) · (1 + m / 2^M)`` for e > 0 and the
subnormal ``(−1)^s · 2^(1 − bias) · (m / 2^M)`` for e = 0. The formats differ in what the top
codes mean:

==========  ====  =====  ==========  ============================  ===========================
format      bias  max    min normal  special codes                  spec
==========  ====  =====  ==========  ============================  ===========================
E4M3FN      7     448    2^-6        S.1111.111 = NaN; no Inf       OCP 8-bit FP (2023), §5.1
E5M2        15    57344  2^-14       S.11111.00 = ±Inf, .01-.11 NaN  OCP 8-bit FP, §5.1 (IEEE-like)
E2M1        1     6      1           none (all 16 codes finite)     OCP Microscaling (MX) v1.0, §5.3.3
==========  ====  =====  ==========  ============================  ===========================

Encoding is round-to-nearest-even: for non-negative values the codes 0, 1, 2, … are in
increasing order of value, so nearest-codeword assignment with ties to the even *index* is
exactly IEEE RNE (the index's parity is the mantissa's last bit). Saturation (the default, as
ONNX ``saturate=1``): finite values and ±Inf beyond the largest finite value become ±max. Without
saturation values that round past max become NaN (E4M3FN) or ±Inf (E5M2); E2M1 always saturates.
−0.0 keeps its sign bit. NaN input raises ValueError.

References
----------
Micikevicius et al., "FP8 Formats for Deep Learning", arXiv:2209.05433, table 1.
OCP "8-bit Floating Point Specification (OFP8)" rev. 1.0, 2023; OCP "Microscaling Formats (MX)
Specification" v1.0, 2023 (FP4 E2M1). ONNX Cast / QuantizeLinear: saturation table for float 8 types.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..core._checks import float_array, int_array
from ..core._types import ArrayLike
from .codebook import codebook_quantize


@dataclass(frozen=True)
class MinifloatFormat:
    name: str  # ONNX type name
    exp_bits: int
    man_bits: int
    bias: int
    special: str  # "fn": top code of the top exponent is NaN; "ieee": top exponent is Inf/NaN; "none"

    @property
    def bits(self) -> int:
        return 1 + self.exp_bits + self.man_bits


FORMATS = {
    "float8e4m3fn": MinifloatFormat("float8e4m3fn", 4, 3, 7, "fn"),
    "float8e5m2": MinifloatFormat("float8e5m2", 5, 2, 15, "ieee"),
    "float4e2m1": MinifloatFormat("float4e2m1", 2, 1, 1, "none"),
}


def minifloat_format(fmt: str | MinifloatFormat) -> MinifloatFormat:
    if isinstance(fmt, MinifloatFormat):
        return fmt
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise ValueError(f"fmt: unknown minifloat format {fmt!r}; expected one of {tuple(FORMATS)}")
    return FORMATS[fmt]


@lru_cache(maxsize=None)
def _decode_table(name: str) -> np.ndarray:
    f = FORMATS[name]
    n = 1 << f.bits
    codes = np.arange(n)
    sign = np.where(codes >> (f.bits - 1), -1.0, 1.0)
    e = (codes >> f.man_bits) & ((1 << f.exp_bits) - 1)
    m = codes & ((1 << f.man_bits) - 1)
    frac = m / (1 << f.man_bits)
    val = np.where(e > 0, np.ldexp(1.0 + frac, e - f.bias), np.ldexp(frac, 1 - f.bias)) * sign
    top_e = (1 << f.exp_bits) - 1
    if f.special == "fn":
        val[(e == top_e) & (m == (1 << f.man_bits) - 1)] = np.nan
    elif f.special == "ieee":
        val[(e == top_e) & (m == 0)] = sign[(e == top_e) & (m == 0)] * np.inf
        val[(e == top_e) & (m != 0)] = np.nan
    val.setflags(write=False)
    return val


def minifloat_decode(codes: ArrayLike, fmt: str | MinifloatFormat) -> np.ndarray:
    """Value of each code (float32; NaN / ±Inf codes decode to NaN / ±Inf). ``codes``: integer array."""
    f = minifloat_format(fmt)
    c = int_array(codes, "codes")
    if c.size and (c.min() < 0 or c.max() >= 1 << f.bits):
        raise ValueError(f"codes must lie in [0, {(1 << f.bits) - 1}] for {f.name}")
    return _decode_table(f.name)[c].astype(np.float32)


def minifloat_codebook(fmt: str | MinifloatFormat) -> np.ndarray:
    """All finite values of the format, sorted, with a single 0 (float64): the codebook view."""
    f = minifloat_format(fmt)
    v = _decode_table(f.name)
    return np.unique(v[np.isfinite(v)])


def _positive_table(f: MinifloatFormat):
    v = _decode_table(f.name)[: 1 << (f.bits - 1)]  # sign bit 0: codes in increasing value order
    finite = v[np.isfinite(v)]
    return finite  # finite[k] is the value of code k


def minifloat_encode(x: ArrayLike, fmt: str | MinifloatFormat, *, saturate: bool = True) -> np.ndarray:
    """Round to nearest even into the format; returns the codes (bit patterns) as uint8.

    Parameters
    ----------
    x : ndarray of float, any shape (NaN raises)
    fmt : {"float8e4m3fn", "float8e5m2", "float4e2m1"}
    saturate : bool — overflow to ±max (True, ONNX default) or to NaN / ±Inf (False)
    """
    f = minifloat_format(fmt)
    xa = float_array(x, "x")
    pos = _positive_table(f)
    mag = np.abs(xa)
    if saturate or f.special == "none":
        idx = codebook_quantize(mag, pos, ties="even").astype(np.uint8)
    else:  # one more codeword: the value just past max, whose code is the overflow code
        top = pos[-1]
        nxt = top + np.ldexp(1.0, int(np.floor(np.log2(top))) - f.man_bits)  # max + ulp: 480 or 65536
        idx = codebook_quantize(mag, np.append(pos, nxt), ties="even").astype(np.uint8)
        over = idx == pos.size
        overflow_code = pos.size if f.special == "ieee" else (1 << (f.bits - 1)) - 1  # Inf, or NaN 0x7F
        idx[over] = overflow_code
    return idx | (np.signbit(xa).astype(np.uint8) << (f.bits - 1))
