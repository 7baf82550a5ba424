"""GPTQ on the grid of a ggml block type: the stored blocks are exactly what GPTQ chose.

GPTQ (:mod:`refquant.ptq.gptq`) quantizes one column at a time and needs, for each column, a
rounding rule ``w ↦ (q, ŵ)``. For a ggml type the rule of a block is fixed by the block's header —
its scale(s), minimum and, for the k-quants, the super-block's packed sub-block scales — and the
type's reference quantizer (``quantize_row_<t>_ref``) chooses that header from the block's 32 / 256
values. :func:`gptq_group_quantizer` therefore maps the type onto GPTQ's quantizer as:

* GPTQ's group = the type's block (32 values; 256 for the k-quants: one super-block);
* at the group's first column the type's own quantizer (:func:`quantize`, byte-exact with ggml)
  runs on the group's *error-updated* weights W[:, g:g+B] (GPTQ's ``group_params_from="updated"``)
  and its bytes fix the header;
* every column is then rounded the type's own way against that header (float32, as ggml):

=======  ===========================================================================================
qtype    column rule (d, m: the block's float32 scale / minimum before fp16 rounding; 1/d as ggml)
=======  ===========================================================================================
q8_0     q = clamp(roundf(w · (1/d)), −128, 127);           ŵ = fp16(d) · q
q4_0     q = clamp(trunc(w · (1/d) + 8.5), 0, 15);          ŵ = fp16(d) · (q − 8)      (q5_0: 16.5, 31, 16)
q4_1     q = clamp(trunc((w − m) · (1/d) + 0.5), 0, 15);    ŵ = fp16(d) · q + fp16(m)  (q5_1: 31)
q4_K     q = clamp(nearest_int((w + dmin·m_s)/(d·sc_s)), 0, 15);  ŵ = d·sc_s · q − dmin·m_s   (q5_K: 31)
q6_K     q = clamp(nearest_int(w/(d·sc_s)), −32, 31) + 32;  ŵ = d·sc_s · (q − 32)
iq4_nl   q = best_index_int8(kvalues, w · (1/d));           ŵ = fp16(d) · kvalues[q]
mxfp4    q = nearest of kvalues_mxfp4 · 2^(e−128), ties toward zero;   ŵ = kvalues_mxfp4[q] · 2^(e−128)
=======  ===========================================================================================

(s: the column's sub-block; d, dmin, sc_s, m_s as stored — these are step (3) of
:mod:`refquant.formats.kquants`, which re-rounds every value on the stored scales; a k-quant
sub-block whose d·sc_s is 0 keeps the code the search chose, as ggml's ``if (!d) continue``.) The
clamps are the type's saturation; ggml's own quantizers never reach them (the header was fitted to
the values), GPTQ's error feedback can. So with no error feedback (an identity Hessian) GPTQ's blocks
equal :func:`quantize` byte for byte (tests/test_ggml_grids.py), and with feedback every stored
block is a valid ggml block whose dequantization is GPTQ's ŵ.

References
----------
Frantar et al., GPTQ, ICLR 2023, Algorithm 1. llama.cpp ``ggml/src/ggml-quants.c``:
``quantize_row_{q8_0,q4_0,q4_1,q5_0,q5_1,q4_K,q5_K,q6_K,mxfp4}_ref``, ``quantize_row_iq4_nl_impl``
(ntry 7, as llama-quantize) and the matching ``dequantize_row_*``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..core._types import ArrayLike
from ..formats import ggml, kquants, mx
from ..formats.kquants_search import KVALUES_IQ4NL, best_index_int8, first_absmax, nearest_int, seqsum
from .gptq import GPTQResult, gptq_quantize

F32 = np.float32
BLOCK = {"q8_0": 32, "q4_0": 32, "q4_1": 32, "q5_0": 32, "q5_1": 32, "q4_K": 256, "q5_K": 256, "q6_K": 256,
         "iq4_nl": 32, "mxfp4": 32}
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "q4_1": 20, "q5_0": 22, "q5_1": 24, "q4_K": 144, "q5_K": 176, "q6_K": 210,
               "iq4_nl": 18, "mxfp4": 17}
GRID_TYPES = tuple(BLOCK)


def _check(qtype):
    if not isinstance(qtype, str) or qtype not in BLOCK:
        raise ValueError(f"qtype: {qtype!r} has no GPTQ grid here; expected one of {GRID_TYPES}")


def quantize(x: ArrayLike, qtype: str) -> np.ndarray:
    """ggml's reference quantizer of ``qtype`` on rows x (..., K): uint8 (..., K/B · bytes) (mxfp4 included)."""
    _check(qtype)
    return mx.ggml_mxfp4_quantize(x) if qtype == "mxfp4" else ggml.quantize(x, qtype)


def dequantize(data: ArrayLike, qtype: str) -> np.ndarray:
    """Inverse of :func:`quantize` (``dequantize_row_<qtype>``)."""
    _check(qtype)
    return mx.ggml_mxfp4_dequantize(data) if qtype == "mxfp4" else ggml.dequantize(data, qtype)


# ------------------------------------------------------------------ codes <-> bytes of one block
def _nib(blk, a, b):  # bytes a:b hold element j (low nibble) and j + (b − a) (high nibble)
    q = blk[:, a:b].astype(np.int64)
    return np.concatenate([q & 0xF, q >> 4], axis=1)


def _put_nib(out, a, b, q):
    h = b - a
    out[:, a:b] = (q[:, :h] & 0xF) | ((q[:, h:] & 0xF) << 4)


def _qh32(blk, at):  # the 5th bits of 32 codes, bit j of a little-endian uint32
    qh = blk[:, at:at + 4].copy().view("<u4").astype(np.int64)
    return (qh >> np.arange(32)) & 1


def unpack_codes(blk: np.ndarray, qtype: str) -> np.ndarray:
    """The codes of blocks ``blk`` (nb, bytes), (nb, B) int64 in the type's code range, in value order
    (q8_0: −128…127; q4_0: 0…15 before −8; q6_K: 0…63 before −32; iq4_nl / mxfp4: table indices)."""
    _check(qtype)
    nb = len(blk)
    if qtype == "q8_0":
        return blk[:, 2:].view(np.int8).astype(np.int64)
    if qtype in ("q4_0", "iq4_nl", "q4_1", "mxfp4"):
        a = {"q4_0": 2, "iq4_nl": 2, "q4_1": 4, "mxfp4": 1}[qtype]
        return _nib(blk, a, a + 16)
    if qtype in ("q5_0", "q5_1"):
        a = 2 if qtype == "q5_0" else 4
        return _nib(blk, a + 4, a + 20) | (_qh32(blk, a) << 4)
    if qtype in ("q4_K", "q5_K"):  # 4 pairs of 32: low nibbles the first 32, high nibbles the next
        qs = blk[:, -128:].reshape(nb, 4, 1, 32).astype(np.int64) >> np.array([0, 4]).reshape(1, 1, 2, 1) & 0xF
        if qtype == "q5_K":  # bit 2k (first 32 of pair k) / 2k+1 (next 32) of qh[j]
            qs = qs + 16 * ((blk[:, None, None, 16:48].astype(np.int64) >> np.arange(8).reshape(1, 4, 2, 1)) & 1)
        return qs.reshape(nb, 256)
    ql = blk[:, :128].reshape(nb, 2, 2, 32).astype(np.int64)  # q6_K
    qh = blk[:, 128:192].reshape(nb, 2, 1, 32).astype(np.int64) >> np.array([0, 2, 4, 6]).reshape(1, 1, 4, 1) & 3
    return (np.concatenate([ql & 0xF, ql >> 4], axis=2) | (qh << 4)).reshape(nb, 256)


def pack_codes(blk: np.ndarray, codes: np.ndarray, qtype: str) -> np.ndarray:
    """Blocks ``blk`` (nb, bytes) with their code fields replaced by ``codes`` (nb, B) (headers kept);
    the inverse of :func:`unpack_codes`. Returns a new uint8 array."""
    _check(qtype)
    out = np.array(blk, np.int64)
    q = np.asarray(codes, np.int64)
    nb = len(out)
    if qtype == "q8_0":
        out[:, 2:] = q & 0xFF
    elif qtype in ("q4_0", "iq4_nl", "q4_1", "mxfp4"):
        a = {"q4_0": 2, "iq4_nl": 2, "q4_1": 4, "mxfp4": 1}[qtype]
        _put_nib(out, a, a + 16, q)
    elif qtype in ("q5_0", "q5_1"):
        a = 2 if qtype == "q5_0" else 4
        _put_nib(out, a + 4, a + 20, q)
        qh = (((q >> 4) & 1) << np.arange(32)).sum(axis=1).astype("<u4")
        out[:, a:a + 4] = qh.view(np.uint8).reshape(nb, 4)
    elif qtype in ("q4_K", "q5_K"):
        L = q.reshape(nb, 4, 2, 32)
        out[:, -128:] = ((L[:, :, 0] & 0xF) | ((L[:, :, 1] & 0xF) << 4)).reshape(nb, 128)
        if qtype == "q5_K":
            out[:, 16:48] = sum(((L[:, k, 0] >> 4) << (2 * k)) | ((L[:, k, 1] >> 4) << (2 * k + 1)) for k in range(4))
    else:  # q6_K
        L = q.reshape(nb, 2, 4, 32)
        out[:, :128] = np.concatenate([(L[:, :, 0] & 0xF) | ((L[:, :, 2] & 0xF) << 4),
                                       (L[:, :, 1] & 0xF) | ((L[:, :, 3] & 0xF) << 4)], axis=2).reshape(nb, 128)
        out[:, 128:192] = sum((L[:, :, k] >> 4) << (2 * k) for k in range(4)).reshape(nb, 64)
    return out.astype(np.uint8)


# ------------------------------------------------------------------ the column rule of one block
def _recip(d):  # ggml: id = d ? 1/d : 0 (and 0 where 1/d overflows, as refquant.formats.ggml)
    with np.errstate(divide="ignore", over="ignore"):
        r = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
    return np.where(np.isfinite(r), r, F32(0)).astype(F32)


def _half(blk, at):
    return blk[:, at:at + 2].copy().view("<f2").astype(F32)[:, 0]


def _iq4nl_scale(x):
    """The float32 scale ``quantize_row_iq4_nl_impl`` (ntry 7, no imatrix) fits to blocks x (nb, 32), before
    fp16 rounding: its re-indexing uses 1/scale. The search of :func:`refquant.formats.kquants_blocks.quantize_iq4`."""
    vals = KVALUES_IQ4NL
    w = x * x
    amax, mx_ = first_absmax(x)
    mx_ = np.where(amax < F32(1e-15), F32(1), mx_).astype(F32)

    def fit(idv):
        q = vals[best_index_int8(vals, idv[:, None] * x)].astype(F32)
        return seqsum(w * q * x), seqsum(w * q * q)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        sumqx, sumq2 = fit(F32(1) / (-mx_ / F32(vals[0])))
        d = np.where(sumq2 > 0, sumqx / sumq2, F32(0)).astype(F32)
        best = d * sumqx
        for k in range(-7, 8):
            sumqx, sumq2 = fit(F32(k + int(vals[0])) / mx_)
            better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
            d = np.where(better, sumqx / sumq2, d).astype(F32)
            best = np.where(better, d * sumqx, best).astype(F32)
    return np.where(amax < F32(1e-15), F32(0), d).astype(F32)


def _roundf(v):  # C roundf: half away from zero (not floor(v + 0.5): v + 0.5 itself may round up)
    t = np.trunc(v)
    return t + np.where(np.abs(v - t) >= 0.5, np.sign(v), 0)


@dataclass(frozen=True)
class BlockGrid:
    """One group's grid: the blocks' bytes from the type's quantizer and what rounding a column needs."""

    qtype: str
    blocks: np.ndarray  # (rows, bytes) uint8: quantize(group weights) — the header is kept
    codes: np.ndarray  # (rows, B) int64: the codes quantize chose (kept where a k-quant sub-block's d·sc = 0)
    mul: np.ndarray  # (rows, n_sub) float32: legacy / iq4_nl: 1/d (code ~ (w − shift)·mul); k-quants: d·sc_s (a divisor)
    shift: np.ndarray  # (rows, n_sub) float32: subtracted before rounding (q4_1 / q5_1: m; q4_K / q5_K: −dmin·m_s)
    step: np.ndarray  # (rows, n_sub) float32: ŵ = step · level + offset, as dequantize computes it
    offset: np.ndarray  # (rows, n_sub) float32


def block_grid(xg: ArrayLike, qtype: str) -> BlockGrid:
    """The grid of one group (rows, B) of weights: the type's reference quantizer's choice of header."""
    _check(qtype)
    x = np.asarray(xg, F32)
    blk = quantize(x, qtype)
    codes = unpack_codes(blk, qtype)
    z = np.zeros((len(x), 1), F32)
    if qtype in ("q8_0", "q4_0", "q5_0", "iq4_nl"):
        if qtype == "q8_0":
            d = (np.abs(x).max(axis=1) / F32(127)).astype(F32)
        elif qtype == "iq4_nl":
            d = _iq4nl_scale(x)
        else:
            d = (first_absmax(x)[1] / F32(-8 if qtype == "q4_0" else -16)).astype(F32)
        return BlockGrid(qtype, blk, codes, _recip(d)[:, None], z, _half(blk, 0)[:, None], z)
    if qtype in ("q4_1", "q5_1"):
        lo = x[np.arange(len(x)), np.argmin(x, axis=1)]
        hi = x[np.arange(len(x)), np.argmax(x, axis=1)]
        d = ((hi - lo) / F32(15 if qtype == "q4_1" else 31)).astype(F32)
        return BlockGrid(qtype, blk, codes, _recip(d)[:, None], lo[:, None].astype(F32), _half(blk, 0)[:, None],
                         _half(blk, 2)[:, None])
    if qtype in ("q4_K", "q5_K"):
        sc, m = kquants.unpack_scale_min_k4(blk[:, 4:16])
        dd = _half(blk, 0)[:, None] * sc.astype(F32)  # d·sc_s (rows, 8)
        dm = _half(blk, 2)[:, None] * m.astype(F32)  # dmin·m_s
        return BlockGrid(qtype, blk, codes, dd, -dm, dd, -dm)
    if qtype == "q6_K":
        dd = _half(blk, 208)[:, None] * blk[:, 192:208].view(np.int8).astype(F32)  # (rows, 16)
        return BlockGrid(qtype, blk, codes, dd, np.zeros_like(dd), dd, np.zeros_like(dd))
    e = blk[:, 0]  # mxfp4
    return BlockGrid(qtype, blk, codes, z, z, np.ldexp(F32(1), e.astype(np.int32) - 128).astype(F32)[:, None], z)


def round_column(g: BlockGrid, i: int, w: ArrayLike) -> tuple:
    """Column ``i`` of the block, values ``w`` (rows,): ``(codes (rows,) int64, ŵ (rows,) float64)`` by the
    type's rule (module docstring), in float32 as ggml computes it."""
    qt, v = g.qtype, np.asarray(w, F32)
    s = i // (BLOCK[qt] // g.step.shape[1])  # the sub-block (0 for the 32-value types)
    mul, shift, step, off = g.mul[:, s], g.shift[:, s], g.step[:, s], g.offset[:, s]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if qt == "q8_0":
            q = np.clip(_roundf(v * mul), -128, 127)
            val = F32(1) * q
        elif qt in ("q4_0", "q5_0"):
            h = 8 if qt == "q4_0" else 16
            q = np.clip(np.trunc(v * mul + F32(h + 0.5)), 0, 2 * h - 1)
            val = q - h
        elif qt in ("q4_1", "q5_1"):
            q = np.clip(np.trunc((v - shift) * mul + F32(0.5)), 0, 15 if qt == "q4_1" else 31)
            val = q
        elif qt in ("q4_K", "q5_K"):
            q = np.clip(nearest_int((v - shift) / mul), 0, 15 if qt == "q4_K" else 31)
            q = np.where(mul != 0, q, g.codes[:, i])
            val = q
        elif qt == "q6_K":
            q = np.clip(nearest_int(v / mul), -32, 31) + 32
            q = np.where(mul != 0, q, g.codes[:, i])
            val = q - 32
        elif qt == "iq4_nl":
            q = best_index_int8(KVALUES_IQ4NL, mul * v)
            val = KVALUES_IQ4NL[q]
        else:  # mxfp4: the nearest magnitude, ties toward zero (strict <), the sign in bit 3
            mags = mx.KVALUES_MXFP4[:8].astype(np.float64)
            t = np.abs(v).astype(np.float64) / step.astype(np.float64)
            k = np.argmin(np.abs(t[:, None] - mags[None, :]), axis=1)  # the first (smaller) of equal distances
            q = np.where((v < 0) & (k > 0), k | 8, k)
            val = mx.KVALUES_MXFP4[q]
        w_hat = (step * np.asarray(val, F32) + off).astype(F32)
    return np.asarray(q, np.int64), w_hat.astype(np.float64)


def gptq_group_quantizer(qtype: str) -> Callable[[np.ndarray], tuple]:
    """The ``group_quantizer`` for :func:`refquant.ptq.gptq.gptq_quantize` that puts a weight on the grid of
    ``qtype`` (``group_size`` = :data:`BLOCK` [qtype]): ``f(Wg) -> (BlockGrid, round_column)``."""
    _check(qtype)

    def quantizer(wg):
        g = block_grid(wg, qtype)
        return g, lambda i, w: round_column(g, i, w)
    return quantizer


def gptq_blocks(r: GPTQResult, qtype: str) -> np.ndarray:
    """The ggml bytes (rows, K/B · bytes) of a GPTQ result computed with :func:`gptq_group_quantizer`:
    each group's header with GPTQ's codes packed in."""
    _check(qtype)
    if len(r.group_params) * BLOCK[qtype] != r.codes.shape[1]:
        raise ValueError(f"r: expected a result of gptq_group_quantizer({qtype!r}) ({r.codes.shape[1] // BLOCK[qtype]} groups), "
                         f"got {len(r.group_params)} group parameters")
    B = BLOCK[qtype]
    parts = [pack_codes(g.blocks, r.codes[:, k * B:(k + 1) * B], qtype) for k, g in enumerate(r.group_params)]
    return np.concatenate(parts, axis=1)


def gptq_ggml(w: ArrayLike, hessian: ArrayLike, qtype: str, *, percdamp: float = 0.01, block_size: int = 128,
              damp_auto_increment: float = 0.0) -> tuple:
    """GPTQ of a weight ``w`` (rows, K) on the grid of ``qtype``: ``(ggml bytes (rows, K/B · bytes), GPTQResult)``.

    ``dequantize(bytes, qtype)`` equals the result's ``w_hat`` exactly. Groups are the type's blocks; their
    headers come from the error-updated weights at each block's first column (``group_params_from="updated"``).
    """
    _check(qtype)
    r = gptq_quantize(w, hessian, group_size=BLOCK[qtype], percdamp=percdamp, block_size=block_size,
                      group_params_from="updated", damp_auto_increment=damp_auto_increment,
                      group_quantizer=gptq_group_quantizer(qtype))
    return gptq_blocks(r, qtype), r
