"""The seven block quantizers behind :func:`refquant.formats.kquants.quantize`: for each ggml type, the
group search, the quantization of the group scales against one fp16 super-scale, the re-rounding of
every value on the *stored* scales, and the packing into the block struct — vectorised over blocks.

Each ``quantize_<t>(x, qw)`` takes blocks ``x`` (nb, block size) of float32 and, optionally, the imatrix
weights of the same shape (the per-column importance repeated for every row), and returns the blocks'
bytes (nb, block bytes). Layouts and equations: the module docstring of :mod:`refquant.formats.kquants`.

References
----------
llama.cpp ``ggml/src/ggml-quants.c`` (ggml-org/llama.cpp @ 01243c587fec): ``quantize_row_q{2,3,4,5,6}_K_ref``
and ``quantize_row_q{2,3,4,5,6}_K_impl``, ``quantize_row_iq4_nl_impl``, ``get_scale_min_k4``.
"""
from __future__ import annotations

import numpy as np

from ..core._checks import int_array
from . import kquants_search as ks
from .kquants_search import F32, KVALUES_IQ4NL, nearest_int, seqsum

QK_K = 256


def _f16(v) -> np.ndarray:  # GGML_FP32_TO_FP16 as bytes: round to nearest even, overflow to ±Inf
    with np.errstate(over="ignore"):
        return np.asarray(v, F32).astype("<f2")


def _f16_bytes(v) -> np.ndarray:
    return _f16(v).view(np.uint8).reshape(-1, 2)


def _u8(v) -> np.ndarray:  # C's conversion of an int to uint8_t: modulo 256
    return (np.asarray(v, np.int64) & 0xFF).astype(np.uint8)


def _bytes_rows(a, name, width):  # integer byte values in [0, 255], shape (B, width)
    a = int_array(a, name, 0, 255).astype(np.int64)
    if a.ndim != 2 or a.shape[1] != width:
        raise ValueError(f"{name}: expected shape (B, {width}), got {a.shape}")
    return a


def pack_scale_min_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Pack 8 scales and 8 minimums (B, 8) of 6 bits into the 12 bytes of Q4_K / Q5_K, statement for statement
    as ``quantize_row_q4_K_ref`` does (``ls``, ``lm`` as uint8 values; bits above 6 spill as in C)."""
    ls, lm = _bytes_rows(ls, "ls", 8), _bytes_rows(lm, "lm", 8)
    if ls.shape != lm.shape:
        raise ValueError(f"lm: expected the shape of ls {ls.shape}, got {lm.shape}")
    s = np.zeros((len(ls), 12), np.int64)
    s[:, 0:4], s[:, 4:8] = ls[:, :4], lm[:, :4]
    s[:, 8:12] = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    s[:, 0:4] |= (ls[:, 4:] >> 4) << 6
    s[:, 4:8] |= (lm[:, 4:] >> 4) << 6
    return _u8(s)


def unpack_scale_min_k4(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``get_scale_min_k4`` for j = 0 … 7: the (B, 8) scales and minimums of the (B, 12) packed bytes."""
    s = _bytes_rows(s, "s", 12)
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


def _sigma2(x, factor):  # the imatrix searches' σ² = factor·Σx²/256 over the super-block (x·1 is exact)
    return F32(factor) * seqsum(x * x) / F32(QK_K)


def _imatrix_weights(x, qw, sigma2, gsize):
    """``qw[j]·sqrtf(σ² + x_j²)`` grouped (nb·groups, gsize)."""
    return (qw * np.sqrt(sigma2[:, None] + x * x)).astype(F32).reshape(-1, gsize)


def _pos_max(v):  # `if (v > best) best = v` from best = 0
    return np.where(v > 0, v, F32(0)).max(axis=1).astype(F32, copy=False)


def quantize_q2_K(x: np.ndarray, qw: np.ndarray | None = None) -> np.ndarray:
    """Q2_K: 16 groups of 16, 2-bit codes, 4-bit scale and 4-bit minimum per group.

    Without imatrix (``quantize_row_q2_K_ref``): ``make_qkx2_quants`` (nmax 3, weights |x|, 16 grids from
    −0.5 in steps of 0.1, mean *absolute* error), then ``sc = nearest_int(15/max_scale · scale)``,
    ``d = fp16(max_scale/15)``, the same for the minimums. With imatrix (``quantize_row_q2_K_impl``):
    ``make_qkx3_quants`` (37 grids from −0.9 in steps of 0.05, squared error) and ``make_qp_quants`` for
    the 4-bit scales and minimums.
    """
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
        w = _imatrix_weights(x, qw, _sigma2(x, 1), 16)
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


def pack_q3_scales(l: np.ndarray) -> np.ndarray:  # (nb, 16) values in [0, 63] -> 12 bytes, as quantize_row_q3_K_ref
    l = np.asarray(l, np.int64)
    s = np.zeros((len(l), 12), np.int64)
    s[:, :8] = (l[:, :8] & 0xF) | ((l[:, 8:] & 0xF) << 4)
    hi = (l >> 4) & 3  # (nb, 16): bits 4-5 of scale j go to byte 8 + j%4 at bit 2·(j//4)
    s[:, 8:] = sum(hi[:, 4 * k:4 * k + 4] << (2 * k) for k in range(4))
    return _u8(s)


def unpack_q3_scales(s: np.ndarray) -> np.ndarray:  # -> (nb, 16) signed scales (l − 32)
    s = np.asarray(s, np.int64)
    lo = np.concatenate([s[:, :8] & 0xF, s[:, :8] >> 4], axis=1)
    hi = np.concatenate([(s[:, 8:] >> (2 * k)) & 3 for k in range(4)], axis=1)
    return (lo | (hi << 4)) - 32


def quantize_q3_K(x: np.ndarray, qw: np.ndarray | None = None) -> np.ndarray:
    """Q3_K: 16 groups of 16, symmetric 3-bit codes (l + 4), signed 6-bit scales (stored + 32).

    Without imatrix (``quantize_row_q3_K_ref``): ``make_q3_quants`` (coordinate descent, weights x²), then
    ``sc = clamp(nearest_int(−32/max_scale · scale), −32, 31)`` with ``max_scale`` the scale of largest
    magnitude, ``d = fp16(max_scale/−32)``. With imatrix (``quantize_row_q3_K_impl``): ``make_qx_quants``
    per group and again (nmax 32, weights = the groups' weight sums) for the 16 scales.
    The third bit of code j goes to bit j // 32 of ``hmask[j % 32]``; the low two bits to ``qs``.
    """
    nb = len(x)
    xs = x.reshape(-1, 16)
    if qw is None:
        scales, L = ks.make_q3_quants(xs, 4)
        scales = scales.reshape(nb, 16)
        _, max_scale = ks.first_absmax(scales)
        with np.errstate(divide="ignore", invalid="ignore"):
            iscale = F32(-32) / np.where(max_scale != 0, max_scale, F32(1))
            l8 = _u8(nearest_int(iscale[:, None] * scales)).view(np.int8).astype(np.int64)  # int8_t l = ...
        lsc = np.where((max_scale != 0)[:, None], ks.clamp(l8, -32, 31) + 32, 0)
        d = _f16(np.where(max_scale != 0, F32(1) / iscale, F32(0)))
        packed = pack_q3_scales(lsc)
    else:
        w = _imatrix_weights(x, qw, _sigma2(x, 2), 16)
        scales, L = ks.make_qx_quants(xs, 4, w)
        d_block, Ls = ks.make_qx_quants(scales.reshape(nb, 16), 32, seqsum(w).reshape(nb, 16))
        d, packed = _f16(d_block), pack_q3_scales(Ls)
    L = _requantize(x, L, d.astype(F32), unpack_q3_scales(packed), lo=-4, hi=3, off=4)
    hmask = np.zeros((nb, 32), np.int64)
    hm = (L > 3).reshape(nb, 8, 32)  # element j: byte j % 32, bit j // 32
    for b in range(8):
        hmask |= hm[:, b].astype(np.int64) << b
    q = np.where(L > 3, L - 4, L).reshape(nb, 2, 4, 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(nb, 64)
    return np.concatenate([_u8(hmask), _u8(qs), packed, _f16_bytes(d)], axis=1)


def quantize_q45_K(x: np.ndarray, qw: np.ndarray | None = None, nmax: int = 15) -> np.ndarray:
    """Q4_K (nmax 15) and Q5_K (nmax 31): 8 groups of 32, codes in [0, nmax], 6-bit scales and minimums.

    Without imatrix (``quantize_row_q{4,5}_K_ref``): ``make_qkx2_quants`` with weights
    ``sqrt(mean x²) + |x|`` (Q4_K: 21 grids from −1 in steps of 0.1; Q5_K: 16 grids from −0.5), then
    ``sc = min(63, nearest_int(63/max_scale · scale))``, ``d = fp16(max_scale/63)`` (and the same for the
    minimums), packed by :func:`pack_scale_min_k4`. With imatrix (``quantize_row_q{4,5}_K_impl``):
    ``make_qkx3_quants`` and ``make_qp_quants`` for the 6-bit scales and minimums.
    Q5_K's 5th bits: code j of pair k (64 values) sets bit 2k (first 32) or 2k + 1 (next 32) of ``qh[j % 32]``.
    """
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
        w = _imatrix_weights(x, qw, _sigma2(x, 2), 32)
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


def quantize_q6_K(x: np.ndarray, qw: np.ndarray | None = None) -> np.ndarray:
    """Q6_K: 16 groups of 16, symmetric 6-bit codes (l + 32), int8 scales against one fp16 ``d``.

    ``make_qx_quants`` (nmax 32, weights x², or the raw imatrix in ``quantize_row_q6_K_impl``), then
    ``sc = min(127, nearest_int(−128/max_scale · scale))`` — the scale of largest magnitude maps to −128 —
    and ``d = fp16(max_scale/−128)``. A super-block whose scales are all below 1e-15 is all zero bytes.
    Code j of half h (128 values), quarter g: low 4 bits in ``ql`` (g = 0, 1 low nibbles; g = 2, 3 high),
    high 2 bits at bit 2g of ``qh[32h + j % 32]``.
    """
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
    L = np.where(zero[:, None], 0, L.reshape(nb, QK_K)).reshape(nb, 2, 4, 32)  # all-zero block: memset 0
    ql = np.concatenate([(L[:, :, 0] & 0xF) | ((L[:, :, 2] & 0xF) << 4),
                         (L[:, :, 1] & 0xF) | ((L[:, :, 3] & 0xF) << 4)], axis=2).reshape(nb, 128)
    qh = sum((L[:, :, k] >> 4) << (2 * k) for k in range(4)).reshape(nb, 64)
    return np.concatenate([_u8(ql), _u8(qh), sc.view(np.uint8), _f16_bytes(d)], axis=1)


def quantize_iq4(x: np.ndarray, qw: np.ndarray | None = None, ntry: int = 7, super_block: int = 32) -> np.ndarray:
    """IQ4_NL (``super_block`` 32) and IQ4_XS (256): ``quantize_row_iq4_nl_impl`` with 16 non-uniform levels.

    Per group of 32 (max = the signed value of largest magnitude): weights x² (or the imatrix ones), a first
    scale ``d = max/−127`` — the largest value lands on the widest level, −127 (ntry > 0 starts from the
    mirrored ``d = max/127`` instead) — codes by :func:`best_index_int8`, the least-squares refit
    ``d = Σ w q x / Σ w q²``, then ``2·ntry + 1`` further grids ``1/d = (k − 127)/max``, k = −ntry … ntry
    (the largest value near −127 ± ntry), each kept if it raises ``(Σ w q x)² / Σ w q²``. IQ4_NL stores
    ``fp16(d)`` and re-indexes with it (only if ``ntry > 0``); IQ4_XS quantizes the 8 group scales to
    signed 6 bits against ``d = −max_scale/32`` (unrounded) and re-indexes each group with its own scale.
    llama-quantize uses ntry 7; ``quantize_row_iq4_nl_ref`` uses −1 (no grid, no re-indexing).
    """
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
    scales_h = scales_h.view(np.uint8).reshape(nb, 2)
    return np.concatenate([_f16_bytes(dsb), scales_h, _u8(scales_l), _u8(qs)], axis=1)
