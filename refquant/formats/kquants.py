"""llama.cpp / ggml k-quants (Q2_K … Q6_K) and IQ4_NL / IQ4_XS, byte-exact with ggml's reference quantizers.

A k-quant **super-block** holds 256 consecutive values of a row, split into 16 groups of 16 (Q2_K, Q3_K,
Q6_K) or 8 groups of 32 (Q4_K, Q5_K, IQ4_XS). Each group gets its own scale (and, for Q2/Q4/Q5_K, its
own minimum); those per-group scales are themselves quantized to 4–8 bits against one fp16 super-scale
``d`` (and ``dmin``). Value j of group g is reconstructed as::

    Q2_K, Q4_K, Q5_K:  x ≈ d·sc[g] · q − dmin·m[g]          q in [0, 2^b − 1]    (scale, then minimum)
    Q3_K, Q6_K:        x ≈ d·sc[g] · (q − 2^(b−1))           sc[g] signed
    IQ4_NL, IQ4_XS:    x ≈ d·sc[g] · kvalues[q]              16 non-uniform int8 levels (IQ4_NL: one d per 32)

=======  ======  =====  =========================================================================================
qtype    values  bytes  block struct (``ggml-common.h``), little-endian, in this order
=======  ======  =====  =========================================================================================
q2_K     256     84     scales u8[16] (lo nibble sc, hi nibble m) | qs u8[64] (2-bit) | d f16 | dmin f16
q3_K     256     110    hmask u8[32] (3rd bit) | qs u8[64] (low 2 bits) | scales u8[12] (16 × 6 bit, −32) | d f16
q4_K     256     144    d f16 | dmin f16 | scales u8[12] (8 sc + 8 m, 6 bit each) | qs u8[128] (4-bit)
q5_K     256     176    d f16 | dmin f16 | scales u8[12] | qh u8[32] (5th bit) | qs u8[128]
q6_K     256     210    ql u8[128] (low 4 bits) | qh u8[64] (high 2 bits) | scales i8[16] | d f16
iq4_nl   32      18     d f16 | qs u8[16] (4-bit indices into kvalues)
iq4_xs   256     136    d f16 | scales_h u16 (2 high bits × 8) | scales_l u8[4] (4 low bits × 8, −32) | qs u8[128]
=======  ======  =====  =========================================================================================

Bits per weight: 2.625, 3.4375, 4.5, 5.5, 6.5625, 4.5, 4.25.

**The 6-bit scale packing of Q4_K / Q5_K** (``get_scale_min_k4``): 8 scales ``sc[0..7]`` and 8 minimums
``m[0..7]``, 6 bits each, in 12 bytes. Bytes 0–3 hold sc[0..3] in their low 6 bits, bytes 4–7 m[0..3];
bytes 8–11 hold the low nibbles of sc[4..7] (bits 0–3) and m[4..7] (bits 4–7); the two high bits of
sc[4+j] sit in bits 6–7 of byte j, those of m[4+j] in bits 6–7 of byte 4+j (:func:`pack_scale_min_k4`).

**How the bytes are chosen** (``quantize_row_<t>_ref``, or ``quantize_row_<t>_impl`` with an imatrix):
(1) a per-group scale search in float32 (:mod:`refquant.formats.kquants_search`: ``make_qkx2_quants`` for
Q2/Q4/Q5_K, ``make_q3_quants`` for Q3_K, ``make_qx_quants`` for Q6_K, a 15-point grid for IQ4);
(2) the group scales quantized against their largest: ``sc = nearest_int(63/max_scale · scale)`` (6 bit),
``d = fp16(max_scale/63)``; (3) every value re-rounded with the *stored* scales,
``q = clamp(nearest_int((x + dmin·m)/(d·sc)), 0, 2^b − 1)``, so the codes fit what dequantization sees.
With an importance matrix (per-column weights, llama.cpp's imatrix, length = row length) the group
searches weight each value by ``imatrix[j]·sqrt(σ² + x_j²)`` (σ² = 2·mean x² of the super-block; Q2_K: mean
x²) and step (2) becomes ``make_qp_quants``, a weighted search of its own (Q6_K uses the raw imatrix).
Rounding is ``nearest_int`` (half to even), not ``roundf``; fp16 conversion rounds to nearest even.

FMA: this module matches a C build **without** floating-point contraction (gcc's default on x86-64
without ``-march``; ``-ffp-contract=off``). A build that fuses ``a*b + c`` (e.g. gcc ``-O2 -march=native``
on an FMA machine) chooses different bytes for some blocks (tests/data/make_ggml_kquants_goldens.py
measures how many). NaN and ±Inf in ``x`` raise; the C code would quantize garbage.

References
----------
llama.cpp ``ggml/src/ggml-quants.c`` (ggml-org/llama.cpp @ 01243c587fec): ``quantize_row_q{2,3,4,5,6}_K_ref``,
``quantize_row_q{2,3,4,5,6}_K_impl`` / ``quantize_q*_K``, ``dequantize_row_q*_K``, ``quantize_row_iq4_nl_impl``,
``quantize_iq4_nl``, ``quantize_row_iq4_nl_ref``, ``quantize_iq4_xs``, ``dequantize_row_iq4_{nl,xs}``;
``ggml/src/ggml-common.h``: ``block_q*_K``, ``block_iq4_{nl,xs}``, ``kvalues_iq4nl``.
"""
from __future__ import annotations

import numpy as np

from ..core._checks import float_array
from . import kquants_search as ks
from .kquants_search import F32, KVALUES_IQ4NL, nearest_int, seqsum

QK_K = 256
BLOCK_SIZE = {"q2_K": 256, "q3_K": 256, "q4_K": 256, "q5_K": 256, "q6_K": 256, "iq4_nl": 32, "iq4_xs": 256}
BLOCK_BYTES = {"q2_K": 84, "q3_K": 110, "q4_K": 144, "q5_K": 176, "q6_K": 210, "iq4_nl": 18, "iq4_xs": 136}


def _f16(v) -> np.ndarray:  # GGML_FP32_TO_FP16 as bytes: round to nearest even, overflow to ±Inf
    with np.errstate(over="ignore"):
        return np.asarray(v, F32).astype("<f2")


def _f16_bytes(v) -> np.ndarray:
    return _f16(v).view(np.uint8).reshape(-1, 2)


def _u8(v) -> np.ndarray:  # C's conversion of an int to uint8_t: modulo 256
    return (np.asarray(v, np.int64) & 0xFF).astype(np.uint8)


def pack_scale_min_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Pack 8 scales and 8 minimums (B, 8) of 6 bits into the 12 bytes of Q4_K / Q5_K, statement for statement
    as ``quantize_row_q4_K_ref`` does (``ls``, ``lm`` as uint8 values; bits above 6 spill as in C)."""
    ls, lm = np.asarray(ls, np.int64), np.asarray(lm, np.int64)
    s = np.zeros((len(ls), 12), np.int64)
    s[:, 0:4], s[:, 4:8] = ls[:, :4], lm[:, :4]
    s[:, 8:12] = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    s[:, 0:4] |= (ls[:, 4:] >> 4) << 6
    s[:, 4:8] |= (lm[:, 4:] >> 4) << 6
    return _u8(s)


def unpack_scale_min_k4(s: np.ndarray):
    """``get_scale_min_k4`` for j = 0 … 7: the (B, 8) scales and minimums of the (B, 12) packed bytes."""
    s = np.asarray(s, np.int64)
    sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)], axis=1)
    m = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
    return sc, m


def _requantize(x, L, d, sc, dmin=None, m=None, lo=0, hi=15, off=0):
    """Step (3): codes from the stored scales, ``clamp(nearest_int((x + dmin·m)/(d·sc)), lo, hi) + off``;
    groups whose ``d·sc`` is 0 keep the search's codes (C: ``if (!d) continue;``)."""
    dd = (d[:, None] * sc.astype(F32))[..., None]  # (nb, groups, 1)
    xg = x.reshape(dd.shape[0], dd.shape[1], -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        num = xg if dmin is None else xg + (dmin[:, None] * m.astype(F32))[..., None]
        l = ks.clamp(nearest_int(num / dd), lo, hi) + off
    return np.where(dd != 0, l, L.reshape(xg.shape)).reshape(L.shape)


def _sumsq_sigma2(x, factor):  # σ² of a super-block: factor·Σx²/256 (sequential sum)
    return F32(factor) * seqsum(x * x) / F32(QK_K) if factor != 1 else seqsum(x * x) / F32(QK_K)


def _imatrix_weights(x, qw, sigma2, gsize):
    """``qw[j]·sqrtf(σ² + x_j²)`` grouped (nb·groups, gsize)."""
    return (qw * np.sqrt(sigma2[:, None] + x * x)).astype(F32).reshape(-1, gsize)


def _pos_max(v):  # `if (v > best) best = v` from best = 0
    return np.where(v > 0, v, F32(0)).max(axis=1).astype(F32, copy=False)


def _q2_K(x, qw):
    nb = len(x)
    xs = x.reshape(-1, 16)
    if qw is None:
        scales, L, mins = ks.make_qkx_quants(xs, np.abs(xs), 3, -0.5, 0.1, 15, True)
        scales, mins = scales.reshape(nb, 16), mins.reshape(nb, 16)
        max_scale, max_min = _pos_max(scales), _pos_max(mins)
        with np.errstate(divide="ignore", invalid="ignore"):
            ls = np.where((max_scale > 0)[:, None], nearest_int((F32(15) / max_scale)[:, None] * scales), 0)
            lm = np.where((max_min > 0)[:, None], nearest_int((F32(15) / max_min)[:, None] * mins), 0)
        sc = _u8(_u8(ls).astype(np.int64) | (lm << 4))
        d = _f16(np.where(max_scale > 0, max_scale / F32(15), F32(0)))
        dmin = _f16(np.where(max_min > 0, max_min / F32(15), F32(0)))
    else:
        w = _imatrix_weights(x, qw, _sumsq_sigma2(x, 1), 16)
        scales, L, mins = ks.make_qkx_quants(xs, w, 3, -0.9, 0.05, 36, False, variant=3)
        sw = seqsum(w).reshape(nb, 16)
        dm, Ls = ks.make_qp_quants(scales.reshape(nb, 16), 15, sw)
        mm, Lm = ks.make_qp_quants(mins.reshape(nb, 16), 15, sw)
        d, dmin = _f16(dm), _f16(mm)
        sc = _u8(Ls | (Lm << 4))
    L = _requantize(x, L, d.astype(F32), sc & 0xF, dmin.astype(F32), sc >> 4, 0, 3)
    q = L.reshape(nb, 2, 4, 32)  # (half, shift group, byte)
    qs = (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(nb, 64)
    return np.concatenate([sc, _u8(qs), _f16_bytes(d), _f16_bytes(dmin)], axis=1)


def _pack_q3_scales(l):  # (nb, 16) values in [0, 63] -> 12 bytes, as quantize_row_q3_K_ref
    l = np.asarray(l, np.int64)
    s = np.zeros((len(l), 12), np.int64)
    s[:, :8] = (l[:, :8] & 0xF) | ((l[:, 8:] & 0xF) << 4)
    hi = (l >> 4) & 3  # (nb, 16): bits 4-5 of scale j go to byte 8 + j%4 at bit 2·(j//4)
    s[:, 8:] = sum(hi[:, 4 * k:4 * k + 4] << (2 * k) for k in range(4))
    return _u8(s)


def _unpack_q3_scales(s):  # -> (nb, 16) signed scales (l − 32)
    s = np.asarray(s, np.int64)
    lo = np.concatenate([s[:, :8] & 0xF, s[:, :8] >> 4], axis=1)
    hi = np.concatenate([(s[:, 8:] >> (2 * k)) & 3 for k in range(4)], axis=1)
    return (lo | (hi << 4)) - 32


def _q3_K(x, qw):
    nb = len(x)
    xs = x.reshape(-1, 16)
    if qw is None:
        scales, L = ks.make_q3_quants(xs, 4)
        scales = scales.reshape(nb, 16)
        amax, max_scale = ks.first_absmax(scales)
        with np.errstate(divide="ignore", invalid="ignore"):
            iscale = F32(-32) / np.where(max_scale != 0, max_scale, F32(1))
            l8 = _u8(nearest_int(iscale[:, None] * scales)).view(np.int8).astype(np.int64)  # int8_t l = ...
        lsc = np.where((max_scale != 0)[:, None], ks.clamp(l8, -32, 31) + 32, 0)
        d = _f16(np.where(max_scale != 0, F32(1) / iscale, F32(0)))
        packed = _pack_q3_scales(lsc)
    else:
        w = _imatrix_weights(x, qw, _sumsq_sigma2(x, 2), 16)
        scales, L = ks.make_qx_quants(xs, 4, w)
        d_block, Ls = ks.make_qx_quants(scales.reshape(nb, 16), 32, seqsum(w).reshape(nb, 16))
        d, packed = _f16(d_block), _pack_q3_scales(Ls)
    L = _requantize(x, L, d.astype(F32), _unpack_q3_scales(packed), lo=-4, hi=3, off=4)
    hmask = np.zeros((nb, 32), np.int64)
    hm = (L > 3).reshape(nb, 8, 32)  # element j: byte j % 32, bit j // 32
    for b in range(8):
        hmask |= hm[:, b].astype(np.int64) << b
    q = np.where(L > 3, L - 4, L).reshape(nb, 2, 4, 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(nb, 64)
    return np.concatenate([_u8(hmask), _u8(qs), packed, _f16_bytes(d)], axis=1)


def _q45_K(x, qw, nmax):
    nb = len(x)
    xs = x.reshape(-1, 32)
    if qw is None:
        av_x = np.sqrt(seqsum(xs * xs) / F32(32))
        w = (av_x[:, None] + np.abs(xs)).astype(F32, copy=False)
        rmin, nstep = (-1.0, 20) if nmax == 15 else (-0.5, 15)
        scales, L, mins = ks.make_qkx_quants(xs, w, nmax, rmin, 0.1, nstep, False)
        scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
        max_scale, max_min = _pos_max(scales), _pos_max(mins)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
            inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
        ls = np.minimum(63, _u8(nearest_int(inv_scale[:, None] * scales)))  # uint8_t ls = nearest_int(...)
        lm = np.minimum(63, _u8(nearest_int(inv_min[:, None] * mins)))
        d, dmin = _f16(max_scale / F32(63)), _f16(max_min / F32(63))
    else:
        w = _imatrix_weights(x, qw, _sumsq_sigma2(x, 2), 32)
        scales, L, mins = ks.make_qkx_quants(xs, w, nmax, -0.9, 0.05, 36, False, variant=3)
        sw = seqsum(w).reshape(nb, 8)
        d_block, ls = ks.make_qp_quants(scales.reshape(nb, 8), 63, sw)
        m_block, lm = ks.make_qp_quants(mins.reshape(nb, 8), 63, sw)
        if nmax == 31:  # quantize_row_q5_K_impl clamps, q4_K's does not
            ls, lm = np.minimum(63, ls), np.minimum(63, lm)
        d, dmin = _f16(d_block), _f16(m_block)
    packed = pack_scale_min_k4(ls, lm)
    sc, m = unpack_scale_min_k4(packed)
    L = _requantize(x, L, d.astype(F32), sc, dmin.astype(F32), m, 0, nmax).reshape(nb, 4, 2, 32)
    head = [_f16_bytes(d), _f16_bytes(dmin), packed]
    if nmax == 15:
        return np.concatenate(head + [_u8(L[:, :, 0] | (L[:, :, 1] << 4)).reshape(nb, 128)], axis=1)
    qh = np.zeros((nb, 32), np.int64)
    for k in range(4):  # pair k: bit 2k for the first 32 values, bit 2k+1 for the next 32
        qh |= ((L[:, k, 0] >> 4) << (2 * k)) | ((L[:, k, 1] >> 4) << (2 * k + 1))
    ql = (L[:, :, 0] & 0xF) | ((L[:, :, 1] & 0xF) << 4)
    return np.concatenate(head + [_u8(qh), _u8(ql).reshape(nb, 128)], axis=1)


def _q6_K(x, qw):
    nb = len(x)
    xs = x.reshape(-1, 16)
    scales, L = ks.make_qx_quants(xs, 32, None if qw is None else qw.reshape(-1, 16))  # the raw imatrix
    scales = scales.reshape(nb, 16)
    max_abs, max_scale = ks.first_absmax(scales)
    zero = max_abs < ks.GROUP_MAX_EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = F32(-128) / np.where(zero, F32(1), max_scale)
        d = _f16(np.where(zero, F32(0), F32(1) / iscale))
        sc = _u8(np.minimum(127, nearest_int(iscale[:, None] * scales))).view(np.int8)
    sc = np.where(zero[:, None], np.int8(0), sc)
    L = _requantize(x, L, d.astype(F32), sc, lo=-32, hi=31, off=32)
    L = np.where(zero[:, None], 0, L.reshape(nb, QK_K)).reshape(nb, 2, 4, 32)  # memset(&y[i], 0, ...) for all-zero blocks
    ql = np.concatenate([(L[:, :, 0] & 0xF) | ((L[:, :, 2] & 0xF) << 4),
                         (L[:, :, 1] & 0xF) | ((L[:, :, 3] & 0xF) << 4)], axis=2).reshape(nb, 128)
    qh = sum((L[:, :, k] >> 4) << (2 * k) for k in range(4)).reshape(nb, 64)
    return np.concatenate([_u8(ql), _u8(qh), sc.view(np.uint8), _f16_bytes(d)], axis=1)


def _iq4(x, qw, ntry, super_block):
    """``quantize_row_iq4_nl_impl`` (block_size 32, 16 kvalues) for super-blocks of 32 (IQ4_NL) or 256 (IQ4_XS)."""
    nb = len(x)
    xs = x.reshape(-1, 32)
    vals = KVALUES_IQ4NL
    v0 = F32(vals[0])
    sigma2 = seqsum(x * x) * (F32(2) / F32(super_block))
    w = xs * xs if qw is None else _imatrix_weights(x, qw, sigma2, 32)
    amax, mx = ks.first_absmax(xs)
    zero = amax < ks.GROUP_MAX_EPS
    mx = np.where(zero, F32(1), mx).astype(F32, copy=False)

    def fit(idv):
        l = ks.best_index_int8(vals, idv[:, None] * xs)
        q = vals[l].astype(F32)
        return l, seqsum(w * q * xs), seqsum(w * q * q)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = (-mx if ntry > 0 else mx) / v0
        L, sumqx, sumq2 = fit(F32(1) / d)
        d = np.where(sumq2 > 0, sumqx / sumq2, F32(0)).astype(F32, copy=False)
        best = d * sumqx
        for k in range(-ntry, ntry + 1):
            _, sumqx, sumq2 = fit(F32(k + int(vals[0])) / mx)
            better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
            d = np.where(better, sumqx / sumq2, d).astype(F32, copy=False)
            best = np.where(better, d * sumqx, best).astype(F32, copy=False)
        scales = np.where(zero, F32(0), d).astype(F32, copy=False)
        L = np.where(zero[:, None], 0, L)
        if super_block == 32:
            dh = _f16(scales)
            if ntry > 0:
                idv = np.where(scales != 0, F32(1) / scales, F32(0)).astype(F32, copy=False)
                L = ks.best_index_int8(vals, idv[:, None] * xs)
            return np.concatenate([_f16_bytes(dh), _u8(L[:, :16] | (L[:, 16:] << 4))], axis=1)
        scales = scales.reshape(nb, 8)
        _, max_scale = ks.first_absmax(scales)
        dsb = (-max_scale / F32(32)).astype(F32, copy=False)
        idsb = np.where(dsb != 0, F32(1) / dsb, F32(0)).astype(F32, copy=False)
        l = ks.clamp(nearest_int(idsb[:, None] * scales), -32, 31)  # (nb, 8)
        dl = dsb[:, None] * l.astype(F32)
        idl = np.where(dl != 0, F32(1) / dl, F32(0)).astype(F32, copy=False)
        L = ks.best_index_int8(vals, idl[:, :, None] * x.reshape(nb, 8, 32)).reshape(nb * 8, 32)
    l = l + 32
    scales_l = (l[:, 0::2] & 0xF) | ((l[:, 1::2] & 0xF) << 4)
    scales_h = sum((l[:, k] >> 4) << (2 * k) for k in range(8)).astype("<u2")
    qs = (L[:, :16] | (L[:, 16:] << 4)).reshape(nb, 128)
    return np.concatenate([_f16_bytes(dsb), scales_h.view(np.uint8).reshape(nb, 2), _u8(scales_l), _u8(qs)], axis=1)


def _check_qtype(qtype):
    if qtype not in BLOCK_BYTES:
        raise ValueError(f"qtype: unknown k-quant type {qtype!r}; expected one of {tuple(BLOCK_BYTES)}")


_QUANTIZERS = {
    "q2_K": _q2_K, "q3_K": _q3_K, "q6_K": _q6_K,
    "q4_K": lambda b, w: _q45_K(b, w, 15), "q5_K": lambda b, w: _q45_K(b, w, 31),
    "iq4_xs": lambda b, w: _iq4(b, w, 7, 256),
}


def quantize(x, qtype: str, imatrix=None, *, row_ref: bool = False) -> np.ndarray:
    """Quantize rows into ggml k-quant / IQ4 blocks, byte for byte as llama.cpp does.

    Parameters
    ----------
    x : ndarray of float, shape (..., n), n a multiple of ``BLOCK_SIZE[qtype]`` (converted to float32; finite)
    qtype : {"q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "iq4_nl", "iq4_xs"}
    imatrix : ndarray of shape (n,), optional
        llama.cpp's importance matrix for this tensor: one non-negative weight per column (input
        channel), shared by every row. Given, this mirrors ``quantize_<qtype>(…, imatrix)``, i.e. the
        ``quantize_row_<qtype>_impl`` search; None mirrors ``quantize_row_<qtype>_ref``.
    row_ref : bool
        Only matters for iq4_nl without imatrix: ``quantize_iq4_nl(…, NULL)``, which llama-quantize
        calls, searches 15 scales (ntry = 7; the default); ``row_ref=True`` mirrors
        ``quantize_row_iq4_nl_ref`` (ntry = −1: the first scale and its least-squares refit only).
        For the other types the two entry points give the same bytes.

    Returns
    -------
    ndarray of uint8, shape (..., n / BLOCK_SIZE · BLOCK_BYTES): the blocks' bytes, as in a GGUF file
    """
    _check_qtype(qtype)
    xa = float_array(x, "x").astype(F32, copy=False)
    bs = BLOCK_SIZE[qtype]
    if xa.ndim == 0 or xa.shape[-1] % bs or xa.shape[-1] == 0:
        raise ValueError(f"x: the last axis must be a positive multiple of {bs} for {qtype}, got shape {xa.shape}")
    if not np.all(np.isfinite(xa)):
        raise ValueError("x must be finite (±Inf has no k-quant code)")
    n = xa.shape[-1]
    qw = None
    if imatrix is not None:
        if row_ref:
            raise ValueError("row_ref: quantize_row_*_ref takes no imatrix; pass imatrix=None or row_ref=False")
        qw = float_array(imatrix, "imatrix").astype(F32, copy=False)
        if qw.shape != (n,):
            raise ValueError(f"imatrix: expected shape ({n},), one weight per column of x, got {qw.shape}")
        if not np.all(np.isfinite(qw)) or np.any(qw < 0):
            raise ValueError("imatrix: weights must be finite and non-negative")
        qw = np.broadcast_to(qw, xa.shape).reshape(-1, bs)  # every row sees the same column weights
    blocks = xa.reshape(-1, bs)
    with np.errstate(all="ignore"):  # Inf / NaN intermediates are C's too (e.g. 1/d for tiny d); no warnings
        if qtype == "iq4_nl":
            out = _iq4(blocks, qw, -1 if row_ref else 7, 32)
        else:
            out = _QUANTIZERS[qtype](blocks, qw)
    return out.reshape(xa.shape[:-1] + (-1,))


def _half(blk, at):  # fp16 field at byte offset `at` -> float32 (nb,)
    return blk[:, at:at + 2].copy().view("<f2").astype(F32)[:, 0]


def _deq_q2_K(blk):
    nb = len(blk)
    sc, d, dmin = blk[:, :16].astype(np.int64), _half(blk, 80), _half(blk, 82)
    dl, ml = d[:, None] * (sc & 0xF).astype(F32), dmin[:, None] * (sc >> 4).astype(F32)  # (nb, 16)
    q = (blk[:, 16:80].reshape(nb, 2, 1, 32) >> np.array([0, 2, 4, 6]).reshape(1, 1, 4, 1)) & 3
    return dl[..., None] * q.reshape(nb, 16, 16).astype(F32) - ml[..., None]


def _deq_q3_K(blk):
    nb = len(blk)
    dl = _half(blk, 108)[:, None] * _unpack_q3_scales(blk[:, 96:108]).astype(F32, copy=False)
    q = (blk[:, 32:96].reshape(nb, 2, 1, 32) >> np.array([0, 2, 4, 6]).reshape(1, 1, 4, 1)) & 3
    hbit = (blk[:, None, None, :32] >> np.arange(8).reshape(1, 2, 4, 1)) & 1  # bit 4h + j of hmask[r]
    q = q.astype(np.int64) - np.where(hbit == 1, 0, 4)
    return dl[..., None] * q.reshape(nb, 16, 16).astype(F32, copy=False)


def _deq_q45_K(blk):
    nb = len(blk)
    d, dmin = _half(blk, 0), _half(blk, 2)
    sc, m = unpack_scale_min_k4(blk[:, 4:16])
    qs = blk[:, -128:].reshape(nb, 4, 1, 32) >> np.array([0, 4]).reshape(1, 1, 2, 1) & 0xF
    q = qs.astype(np.int64)
    if blk.shape[1] == 176:  # q5_K: the 5th bit of group 2k + h is bit 2k + h of qh[r]
        q = q + 16 * ((blk[:, None, None, 16:48] >> np.arange(8).reshape(1, 4, 2, 1)) & 1)
    d1, m1 = d[:, None] * sc.astype(F32), dmin[:, None] * m.astype(F32)
    return d1[..., None] * q.reshape(nb, 8, 32).astype(F32) - m1[..., None]


def _deq_q6_K(blk):
    nb = len(blk)
    ql = blk[:, :128].reshape(nb, 2, 2, 32).astype(np.int64)
    qh = blk[:, 128:192].reshape(nb, 2, 1, 32).astype(np.int64) >> np.array([0, 2, 4, 6]).reshape(1, 1, 4, 1) & 3
    low = np.concatenate([ql & 0xF, ql >> 4], axis=2)  # groups of 32: ql[0..31] lo, ql[32..63] lo, then hi
    q = (low | (qh << 4)) - 32
    dsc = _half(blk, 208)[:, None] * blk[:, 192:208].view(np.int8).astype(F32)  # d * sc[p // 16]
    return dsc[..., None] * q.reshape(nb, 16, 16).astype(F32, copy=False)


def _deq_iq4_nl(blk):
    q = np.concatenate([blk[:, 2:] & 0xF, blk[:, 2:] >> 4], axis=1)
    return _half(blk, 0)[:, None] * KVALUES_IQ4NL[q].astype(F32)


def _deq_iq4_xs(blk):
    nb = len(blk)
    sh = blk[:, 2:4].copy().view("<u2").astype(np.int64)  # (nb, 1)
    sl = blk[:, 4:8].astype(np.int64)
    ls = np.stack([sl & 0xF, sl >> 4], axis=2).reshape(nb, 8) | (((sh >> (2 * np.arange(8))) & 3) << 4)
    dl = _half(blk, 0)[:, None] * (ls - 32).astype(F32, copy=False)
    qs = blk[:, 8:].reshape(nb, 8, 16)
    q = np.concatenate([qs & 0xF, qs >> 4], axis=2)
    return dl[..., None] * KVALUES_IQ4NL[q].astype(F32)


_DEQUANTIZERS = {"q2_K": _deq_q2_K, "q3_K": _deq_q3_K, "q4_K": _deq_q45_K, "q5_K": _deq_q45_K,
                 "q6_K": _deq_q6_K, "iq4_nl": _deq_iq4_nl, "iq4_xs": _deq_iq4_xs}


def dequantize(data, qtype: str) -> np.ndarray:
    """Inverse of :func:`quantize` (``dequantize_row_<qtype>``): uint8 (..., n_blocks · BLOCK_BYTES) -> float32
    (..., n_blocks · BLOCK_SIZE).

    Each value is ``d·sc · q`` then ``− dmin·m``, with one float32 rounding per operation as the C loop
    (``d·sc`` rounded first; no fused multiply-add).
    """
    _check_qtype(qtype)
    a = np.asarray(data)
    if a.dtype != np.uint8:
        raise ValueError(f"data: expected uint8 bytes, got dtype {a.dtype}")
    nbytes = BLOCK_BYTES[qtype]
    if a.ndim == 0 or a.shape[-1] % nbytes:
        raise ValueError(f"data: the last axis must be a multiple of {nbytes} bytes for {qtype}, got shape {a.shape}")
    blk = np.ascontiguousarray(a).reshape(-1, nbytes)
    with np.errstate(over="ignore", invalid="ignore"):
        y = _DEQUANTIZERS[qtype](blk)
    return y.astype(F32).reshape(a.shape[:-1] + (-1,))
