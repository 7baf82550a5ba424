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

Bits per weight: 2.625, 3.4375, 4.5, 5.5, 6.5625, 4.5, 4.25 (every byte of the struct counted; the k-quants
PR's 2.5625 for Q2_K leaves out ``dmin``).

**The 6-bit scale packing of Q4_K / Q5_K** (``get_scale_min_k4``): 8 scales ``sc[0..7]`` and 8 minimums
``m[0..7]``, 6 bits each, in 12 bytes. Bytes 0–3 hold sc[0..3] in their low 6 bits, bytes 4–7 m[0..3];
bytes 8–11 hold the low nibbles of sc[4..7] (bits 0–3) and m[4..7] (bits 4–7); the two high bits of
sc[4+j] sit in bits 6–7 of byte j, those of m[4+j] in bits 6–7 of byte 4+j (:func:`pack_scale_min_k4`).

**How the bytes are chosen** (``quantize_row_<t>_ref``, or ``quantize_row_<t>_impl`` with an imatrix),
in three steps (:mod:`refquant.formats.kquants_blocks`, one function per type):
(1) a per-group scale search in float32 (:mod:`refquant.formats.kquants_search`: ``make_qkx2_quants`` —
weighted least squares for scale *and* minimum over a grid of candidate steps — for Q2/Q4/Q5_K,
``make_q3_quants`` for Q3_K, ``make_qx_quants`` for Q6_K, a 15-point grid over 16 levels for IQ4);
(2) the group scales quantized against the largest one, e.g. Q4_K ``sc = nearest_int(63/max_scale · scale)``,
``d = fp16(max_scale/63)`` (Q2_K: 4 bits; Q3_K, Q6_K, IQ4_XS: signed 6 / 8 / 6 bits); (3) every value
re-rounded with the *stored* scales, ``q = clamp(nearest_int((x + dmin·m)/(d·sc)), 0, 2^b − 1)``, so the
codes fit what dequantization will see.
With an importance matrix (per-column weights, llama.cpp's imatrix, length = row length) the group
searches weight each value by ``imatrix[j]·sqrt(σ² + x_j²)`` (σ² = 2·mean x² of the super-block; Q2_K: mean
x²) and step (2) becomes ``make_qp_quants``, a weighted search of its own (Q6_K uses the raw imatrix).
Rounding is ``nearest_int`` (half to even), not ``roundf``; fp16 conversion rounds to nearest even.

FMA: this module matches a C build **without** floating-point contraction (``-ffp-contract=off``; also
gcc's default on x86-64 without ``-march``, which has no FMA instruction to contract to, and the x86-64
``libggml-base`` of llama.cpp b11739 in the llama-cpp-py-sync wheel: no FMA instruction in it). A build that fuses ``a*b + c`` (gcc ``-O2 -march=native`` on an FMA
machine) chooses other bytes for some blocks: 46 of 896 on the recorded inputs, up to a third of the
blocks of some types on others. NaN and ±Inf in ``x`` raise; the C code would quantize garbage.

Evidence (tests/test_kquants.py, tests/data/make_ggml_kquants_goldens.py): byte-exact, with and without
imatrix, against the functions of ``ggml-quants.c`` at the commit below built with gcc 12.2
``-O2 -ffp-contract=off`` (goldens in CI), and against llama.cpp b11739's own ``libggml-base`` (checked
locally); dequantization bit-exact against both and against ``gguf.quants.dequantize`` (CI).

References
----------
llama.cpp ``ggml/src/ggml-quants.c`` (ggml-org/llama.cpp @ 01243c587fec): ``quantize_row_q{2,3,4,5,6}_K_ref``,
``quantize_row_q{2,3,4,5,6}_K_impl`` / ``quantize_q*_K``, ``dequantize_row_q*_K``, ``quantize_row_iq4_nl_impl``,
``quantize_iq4_nl``, ``quantize_row_iq4_nl_ref``, ``quantize_iq4_xs``, ``dequantize_row_iq4_{nl,xs}``;
``ggml/src/ggml-common.h``: ``block_q*_K``, ``block_iq4_{nl,xs}``, ``kvalues_iq4nl``.
Kawrakow, "k-quants", ggml-org/llama.cpp pull request #1684 (2023): the formats and their bits per weight.
"""
from __future__ import annotations

import numpy as np

from ..core._checks import finite_array
from ..core.uniform import _CHUNK
from ..core._types import ArrayLike
from . import kquants_blocks as kb
from .kquants_blocks import pack_scale_min_k4, unpack_scale_min_k4  # noqa: F401 (public)
from .kquants_search import F32, KVALUES_IQ4NL

QK_K = 256
BLOCK_SIZE = {"q2_K": 256, "q3_K": 256, "q4_K": 256, "q5_K": 256, "q6_K": 256, "iq4_nl": 32, "iq4_xs": 256}
BLOCK_BYTES = {"q2_K": 84, "q3_K": 110, "q4_K": 144, "q5_K": 176, "q6_K": 210, "iq4_nl": 18, "iq4_xs": 136}


def _check_qtype(qtype):
    if not isinstance(qtype, str) or qtype not in BLOCK_BYTES:
        raise ValueError(f"qtype: unknown k-quant type {qtype!r}; expected one of {tuple(BLOCK_BYTES)}")


_QUANTIZERS = {
    "q2_K": kb.quantize_q2_K, "q3_K": kb.quantize_q3_K, "q6_K": kb.quantize_q6_K,
    "q4_K": lambda b, w: kb.quantize_q45_K(b, w, 15), "q5_K": lambda b, w: kb.quantize_q45_K(b, w, 31),
    "iq4_xs": lambda b, w: kb.quantize_iq4(b, w, 7, 256),
}


def quantize(x: ArrayLike, qtype: str, imatrix: ArrayLike | None = None, *, row_ref: bool = False) -> np.ndarray:
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
    xa = finite_array(x, "x", F32)  # ±Inf has no k-quant code
    bs = BLOCK_SIZE[qtype]
    if xa.ndim == 0 or xa.shape[-1] % bs or xa.shape[-1] == 0:
        raise ValueError(f"x: the last axis must be a positive multiple of {bs} for {qtype}, got shape {xa.shape}")
    n = xa.shape[-1]
    qw = None
    if imatrix is not None:
        if row_ref:
            raise ValueError("row_ref: quantize_row_*_ref takes no imatrix; pass imatrix=None or row_ref=False")
        qw = finite_array(imatrix, "imatrix", F32)
        if qw.shape != (n,):
            raise ValueError(f"imatrix: expected shape ({n},), one weight per column of x, got {qw.shape}")
        if np.any(qw < 0):
            raise ValueError("imatrix: weights must be non-negative (mean squared activations)")
        qw = qw.reshape(-1, bs)  # (n / bs, bs): the column weights of one row's blocks
    blocks = xa.reshape(-1, bs)
    if qtype == "iq4_nl":
        def quantizer(b, w):
            return kb.quantize_iq4(b, w, -1 if row_ref else 7, 32)
    else:
        quantizer = _QUANTIZERS[qtype]
    out = np.empty((blocks.shape[0], BLOCK_BYTES[qtype]), np.uint8)
    step = max(1, _CHUNK // bs)  # blocks per chunk: the search's float temporaries stay a fixed few MiB
    with np.errstate(all="ignore"):  # Inf / NaN intermediates are C's too (e.g. 1/d for tiny d); no warnings
        for i in range(0, blocks.shape[0], step):
            b = blocks[i:i + step]  # every block is quantized on its own: chunking changes no byte
            w = None if qw is None else qw[np.arange(i, i + len(b)) % len(qw)]  # block i is column block i mod n/bs
            out[i:i + step] = quantizer(b, w)
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
    dl = _half(blk, 108)[:, None] * kb.unpack_q3_scales(blk[:, 96:108]).astype(F32, copy=False)
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


def dequantize(data: ArrayLike, qtype: str) -> np.ndarray:
    """Inverse of :func:`quantize` (``dequantize_row_<qtype>``): uint8 (..., n_blocks · BLOCK_BYTES) -> float32
    (..., n_blocks · BLOCK_SIZE).

    Each value is ``d·sc · q`` then ``− dmin·m``, with one float32 rounding per operation as the C loop
    (``d·sc`` rounded first; no fused multiply-add).
    """
    _check_qtype(qtype)
    lead, blk = byte_blocks(data, BLOCK_BYTES[qtype], qtype)
    bs = BLOCK_SIZE[qtype]
    y = np.empty((blk.shape[0], bs), F32)
    step = max(1, _CHUNK // bs)  # blocks per chunk: the int64 codes of a chunk, not of the tensor
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(0, blk.shape[0], step):
            y[i:i + step] = _DEQUANTIZERS[qtype](blk[i:i + step]).reshape(-1, bs)
    return y.reshape(lead + (-1,))


def byte_blocks(data: ArrayLike, nbytes: int, qtype: str) -> tuple[tuple, np.ndarray]:
    """``data`` (uint8, (..., n_blocks · nbytes)) checked and viewed as blocks: ``(leading shape, (n, nbytes))``.
    Shared by every ggml dequantizer (legacy types in :mod:`refquant.formats.ggml`, k-quants here)."""
    a = np.asarray(data)
    if a.dtype != np.uint8:
        raise ValueError(f"data: expected uint8 bytes, got dtype {a.dtype}")
    if a.ndim == 0 or a.shape[-1] % nbytes:
        raise ValueError(f"data: the last axis must be a multiple of {nbytes} bytes for {qtype}, got shape {a.shape}")
    return a.shape[:-1], np.ascontiguousarray(a).reshape(-1, nbytes)
