"""llama.cpp / ggml legacy block formats, byte-exact with ggml's reference quantizers.

``quantize(x, qtype)`` mirrors ``quantize_row_<qtype>_ref`` ("reference implementation for
deterministic creation of model files") and ``dequantize(data, qtype)`` mirrors
``dequantize_row_<qtype>`` from ``ggml/src/ggml-quants.c``. Rows are blocks of 32 consecutive
values along the last axis; each block becomes a little-endian struct (``ggml-common.h``):

=======  =====  ==============================================  ========================================
qtype    bytes  layout                                          encoding of a block (float32 arithmetic)
=======  =====  ==============================================  ========================================
q8_0     34     d: fp16 | qs: int8[32]                          d = amax/127; q = roundf(x·(1/d))
q4_0     18     d: fp16 | qs: uint8[16]                         d = m/−8, m = the value of largest |x|;
                                                                q = min(15, (int8)(x·(1/d) + 8.5))
q4_1     20     d: fp16 | m: fp16 | qs: uint8[16]               d = (max−min)/15; q = min(15, (int8)((x−min)·(1/d) + 0.5))
q5_0     22     d: fp16 | qh: uint32 | qs: uint8[16]            d = m/−16; q = min(31, (int8)(x·(1/d) + 16.5))
q5_1     24     d: fp16 | m: fp16 | qh: uint32 | qs: uint8[16]  d = (max−min)/31; q = (uint8)((x−min)·(1/d) + 0.5)
=======  =====  ==============================================  ========================================

Rounding: ``roundf`` rounds half away from zero; ``(int8)(v + 8.5)`` truncates toward zero, i.e.
rounds ``v + 8`` half up for the non-negative values that occur. ``1/d`` is the float32 reciprocal of
the float32 ``d`` (before fp16 rounding), and 0 for an all-zero block (``id = d ? 1/d : 0``) — and,
where C's behaviour is undefined (d subnormal, so 1/d = Inf and 0·Inf = NaN is cast to an integer),
also 0: such a block stores d = 0 in fp16 and dequantizes to 0 either way.
fp16 conversion is round-to-nearest-even; a block whose d is below fp16's range (|x| ≲ 1e-6) stores
d = 0 and dequantizes to 0, as in ggml. "m" is the first value of largest magnitude (strict ``<``).
Nibble order: ``qs[j]`` holds element j in its low nibble and element j + 16 in its high nibble;
the 5th bits of q5 go to bit j (element j) and bit j + 16 (element j + 16) of ``qh``.
Dequantization: ``q·d`` (q4_0, q5_0 after subtracting 8 / 16; q8_0) or ``q·d + m`` (q4_1, q5_1),
rounded after the multiply and again after the add (a C build that contracts to FMA can differ
by one ulp there). NaN in the input raises (ggml would propagate it).

fp16 overflow: a block whose scale d (or, for q4_1 / q5_1, minimum m) rounds to Inf in fp16 —
|d| >= 65520, i.e. max|x| beyond about 8.3e6 for q8_0, 5.2e5 for q4_0 — raises ValueError naming x
and the block. ggml's C code would store Inf there and dequantize the block to NaN / Inf (0 · Inf);
refquant refuses instead of writing such a block. :func:`dequantize` likewise refuses blocks whose
stored d or m is Inf or NaN (a corrupt or hand-made file).

The same two entry points serve every other ggml block type (:data:`TYPE_TRAITS`, ggml's ``type_traits``
table: type id, values and bytes per block): the k-quants and IQ4 (:mod:`.kquants`), ggml's MXFP4
(:mod:`.ggml_mxfp4`, ``"mxfp4"``) and, dequantize-only, the IQ1 / IQ2 / IQ3 grid types (:mod:`.iquants`).

References
----------
llama.cpp ``ggml/src/ggml-quants.c``: ``quantize_row_q{8_0,4_0,4_1,5_0,5_1}_ref``,
``dequantize_row_q{8_0,4_0,4_1,5_0,5_1}``; ``ggml/src/ggml-common.h``: ``block_q*`` structs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import ggml_mxfp4, iquants, kquants
from ..core._checks import float_array, to_float
from ..core._types import ArrayLike
from ..core.uniform import _CHUNK

QK = 32
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "q4_1": 20, "q5_0": 22, "q5_1": 24}  # the legacy types of this module
F32 = np.float32


@dataclass(frozen=True)
class TypeTraits:
    """One row of ggml's ``type_traits`` table (``ggml/src/ggml.c``) for a block type refquant reads."""

    name: str  # ggml_type_name: "q4_0", "q4_K", "mxfp4", "iq2_xxs", ...
    type_id: int  # enum ggml_type (= gguf.GGMLQuantizationType), as stored in a GGUF tensor header
    block_size: int  # values per block (blck_size)
    type_size: int  # bytes per block
    quantize: bool  # False: dequantize-only in refquant (the IQ1 / IQ2 / IQ3 grid types)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.type_size / self.block_size


_IDS = {"q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "q2_K": 10, "q3_K": 11, "q4_K": 12, "q5_K": 13,
        "q6_K": 14, "iq2_xxs": 16, "iq2_xs": 17, "iq3_xxs": 18, "iq1_s": 19, "iq4_nl": 20, "iq3_s": 21, "iq2_s": 22,
        "iq4_xs": 23, "iq1_m": 29, "mxfp4": 39}


def _traits() -> dict:
    sizes = {**{t: (QK, b, True) for t, b in BLOCK_BYTES.items()},
             **{t: (kquants.BLOCK_SIZE[t], b, True) for t, b in kquants.BLOCK_BYTES.items()},
             "mxfp4": (ggml_mxfp4.GGML_QK, ggml_mxfp4.GGML_BLOCK_BYTES, True),
             **{t: (iquants.BLOCK_SIZE[t], b, False) for t, b in iquants.BLOCK_BYTES.items()}}
    return {t: TypeTraits(t, _IDS[t], *sizes[t]) for t in sorted(sizes, key=_IDS.get)}


TYPE_TRAITS = _traits()  # every block type: legacy, k-quants, IQ4, MXFP4, and the dequantize-only IQ1-IQ3


def _check_qtype(qtype):
    if not isinstance(qtype, str) or qtype not in BLOCK_BYTES:
        raise ValueError(f"qtype: unknown ggml type {qtype!r}; expected one of {tuple(TYPE_TRAITS)}")


def _check_fp16(v: np.ndarray, what: str, first: int = 0):
    """ValueError where a block's fp16 field would overflow to Inf (|v| >= 65520 rounds to Inf).
    ``first``: the index of ``v[0]``'s block in the tensor (for the message)."""
    with np.errstate(over="ignore"):
        bad = np.isinf(v.astype(np.float16))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"x: block {first + i} needs {what} = {float(v[i]):.6g}, beyond fp16 (max 65504); ggml would store "
                         "Inf and dequantize the block to NaN / Inf. Scale x down or use a wider type")


def _fp16_bytes(v: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return v.astype("<f2").view(np.uint8).reshape(v.shape + (2,))


def _recip(d: np.ndarray) -> np.ndarray:
    # id = d ? 1/d : 0, and also 0 where 1/d overflows float32 (subnormal d): there C would compute
    # 0·Inf = NaN and cast it to an integer (undefined behaviour); d is stored as fp16 0 either way
    with np.errstate(divide="ignore", over="ignore"):
        r = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
    return np.where(np.isfinite(r), r, F32(0)).astype(F32)


def _signed_absmax(b: np.ndarray) -> np.ndarray:
    # the first element of largest |x| (ggml's strict `amax < fabsf(v)` keeps the first), with its sign
    i = np.argmax(np.abs(b), axis=1)
    m = b[np.arange(len(b)), i]
    return np.where(m == 0, F32(0), m)  # an all-(±)zero block keeps C's initial max = +0.0f


def _first_extreme(b: np.ndarray, fn) -> np.ndarray:
    # C's `if (v < min) min = v` keeps the first of equal extremes: matters only for ±0.0
    m = fn(b, axis=1)
    first = np.argmax(b == m[:, None], axis=1)
    return b[np.arange(len(b)), first]


def _nibbles(q: np.ndarray) -> np.ndarray:
    # (nb, 32) codes -> (nb, 16) bytes: element j low nibble, element j + 16 high nibble
    return ((q[:, :16] & 0x0F) | ((q[:, 16:] & 0x0F) << 4)).astype(np.uint8)


def _qh(q: np.ndarray) -> np.ndarray:
    bits = ((q >> 4) & 1).astype(np.uint64)  # (nb, 32): bit j of qh is the 5th bit of element j
    qh = (bits << np.arange(32, dtype=np.uint64)).sum(axis=1).astype("<u4")
    return qh.view(np.uint8).reshape(-1, 4)


def quantize(x: ArrayLike, qtype: str, imatrix: ArrayLike | None = None) -> np.ndarray:
    """Quantize rows into ggml blocks.

    The k-quants and IQ4 types (``q2_K`` … ``q6_K``, ``iq4_nl``, ``iq4_xs``; blocks of 256, iq4_nl 32)
    are forwarded to :func:`refquant.formats.kquants.quantize`, which also takes llama.cpp's importance
    matrix ``imatrix`` (one weight per column); the legacy types below take none. ``"mxfp4"`` is
    ggml's MXFP4 block (:mod:`refquant.formats.ggml_mxfp4`, 17 bytes per 32). The IQ1 / IQ2 / IQ3 grid
    types (:mod:`refquant.formats.iquants`) are dequantize-only: quantizing to them raises ValueError.
    :data:`TYPE_TRAITS` lists every type with its block size and bytes.

    Parameters
    ----------
    x : ndarray of float, shape (..., n) with n a multiple of 32 (converted to float32)
    qtype : {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1"}

    Returns
    -------
    ndarray of uint8, shape (..., n / 32 · bytes_per_block): the blocks' bytes, as in a GGUF file
    """
    if isinstance(qtype, str) and qtype in kquants.BLOCK_BYTES:
        return kquants.quantize(x, qtype, imatrix)
    if isinstance(qtype, str) and qtype in iquants.BLOCK_BYTES:
        return iquants.quantize(x, qtype, imatrix)  # raises: dequantize-only
    if qtype == "mxfp4":
        if imatrix is not None:
            raise ValueError("imatrix: mxfp4 is quantized by quantize_row_mxfp4_ref, which takes none")
        return ggml_mxfp4.ggml_mxfp4_quantize(x)
    if imatrix is not None:
        raise ValueError(f"imatrix: the legacy type {qtype!r} is quantized by its _ref function, which takes none")
    _check_qtype(qtype)
    xa = float_array(x, "x")
    if not np.all(np.isfinite(xa)):
        raise ValueError("x must be finite (ggml's scales would be Inf)")
    xa = to_float(xa, F32, "x")
    if xa.ndim == 0 or xa.shape[-1] % QK:
        raise ValueError(f"x: the last axis must be a multiple of {QK}, got shape {xa.shape}")
    if not np.all(np.isfinite(xa)):
        raise ValueError("x must be finite (ggml's scales would be Inf)")
    lead = xa.shape[:-1]
    blocks = xa.reshape(-1, QK)  # (nb, 32)
    out = np.empty((blocks.shape[0], BLOCK_BYTES[qtype]), np.uint8)
    step = max(1, _CHUNK // QK)  # blocks per chunk: the float temporaries stay in cache
    for i in range(0, blocks.shape[0], step):
        out[i:i + step] = _quantize_blocks(blocks[i:i + step], qtype, i)
    return out.reshape(lead + (-1,))


def _quantize_blocks(b: np.ndarray, qtype: str, first: int) -> np.ndarray:
    """Blocks ``b`` (nb, 32) float32 -> their bytes (nb, BLOCK_BYTES[qtype]); ``first``: index of b[0]."""
    if qtype == "q8_0":
        d = (np.abs(b).max(axis=1) / F32(127)).astype(F32)
        _check_fp16(d, "the scale d", first)
        v = b * _recip(d)[:, None]
        q = (np.trunc(v) + np.where(np.abs(v - np.trunc(v)) >= 0.5, np.sign(v), 0)).astype(np.int8)  # roundf
        out = np.concatenate([_fp16_bytes(d), q.view(np.uint8)], axis=1)
    elif qtype in ("q4_0", "q5_0"):
        half = 8 if qtype == "q4_0" else 16
        d = (_signed_absmax(b) / F32(-half)).astype(F32)
        _check_fp16(d, "the scale d", first)
        v = b * _recip(d)[:, None] + F32(half + 0.5)  # float32 add, then (int8) truncation
        q = np.minimum(2 * half - 1, np.trunc(v)).astype(np.uint8)
        parts = [_fp16_bytes(d)] + ([_qh(q)] if qtype == "q5_0" else []) + [_nibbles(q)]
        out = np.concatenate(parts, axis=1)
    else:  # q4_1, q5_1
        levels = 15 if qtype == "q4_1" else 31
        lo, hi = _first_extreme(b, np.min), _first_extreme(b, np.max)
        with np.errstate(over="ignore"):
            d = ((hi - lo) / F32(levels)).astype(F32)  # hi - lo may overflow float32: caught as an fp16 overflow
        _check_fp16(d, "the scale d", first)
        _check_fp16(lo, "the minimum m", first)
        v = (b - lo[:, None]) * _recip(d)[:, None] + F32(0.5)
        q = np.trunc(v)
        q = (np.minimum(15, q) if qtype == "q4_1" else q).astype(np.uint8)
        parts = [_fp16_bytes(d), _fp16_bytes(lo)] + ([_qh(q)] if qtype == "q5_1" else []) + [_nibbles(q)]
        out = np.concatenate(parts, axis=1)
    return out


def dequantize(data: ArrayLike, qtype: str) -> np.ndarray:
    """Inverse of :func:`quantize`: uint8 blocks of shape (..., n_blocks · bytes) -> float32 (..., n_blocks · block).

    Every type of :data:`TYPE_TRAITS`: the legacy types here, k-quants / IQ4 (:mod:`.kquants`), ggml MXFP4
    (:mod:`.ggml_mxfp4`) and the IQ1 / IQ2 / IQ3 grid types (:mod:`.iquants`), each as ``dequantize_row_<qtype>``.
    """
    if isinstance(qtype, str) and qtype in kquants.BLOCK_BYTES:
        return kquants.dequantize(data, qtype)
    if isinstance(qtype, str) and qtype in iquants.BLOCK_BYTES:
        return iquants.dequantize(data, qtype)
    if qtype == "mxfp4":
        return ggml_mxfp4.ggml_mxfp4_dequantize(data)
    _check_qtype(qtype)
    nbytes = BLOCK_BYTES[qtype]
    lead, blk = kquants.byte_blocks(data, nbytes, qtype)
    d = blk[:, 0:2].copy().view("<f2").astype(F32)  # (nb, 1)
    fields = [d] if qtype in ("q8_0", "q4_0", "q5_0") else [d, blk[:, 2:4].copy().view("<f2")]
    for f in fields:
        if not np.all(np.isfinite(f)):
            i = int(np.flatnonzero(~np.isfinite(f.reshape(-1)))[0])
            raise ValueError(f"data: block {i} has a non-finite fp16 scale or minimum (Inf / NaN): not a block that "
                             "quantize writes, and it would dequantize to NaN")
    m = blk[:, 2:4].copy().view("<f2").astype(F32) if qtype in ("q4_1", "q5_1") else None
    out = np.empty((blk.shape[0], QK), F32)
    step = max(1, _CHUNK // QK)  # blocks per chunk: the int / float temporaries stay in cache
    for i in range(0, blk.shape[0], step):
        sl = slice(i, i + step)
        out[sl] = _dequantize_blocks(blk[sl], d[sl], None if m is None else m[sl], qtype)
    return out.reshape(lead + (-1,))


def _dequantize_blocks(blk: np.ndarray, d: np.ndarray, m, qtype: str) -> np.ndarray:
    """Block bytes (nb, BLOCK_BYTES[qtype]) with their scales d (nb, 1) and minimums m -> (nb, 32) float32."""
    if qtype == "q8_0":
        q = blk[:, 2:].view(np.int8).astype(F32)
        y = q * d
    else:
        off = 4 if qtype in ("q4_1", "q5_1") else 2
        qs = blk[:, -16:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int32)  # (nb, 32)
        if qtype in ("q5_0", "q5_1"):
            qh = blk[:, off:off + 4].copy().view("<u4").astype(np.int64)  # (nb, 1)
            q |= (((qh >> np.arange(32)) & 1) << 4).astype(np.int32)
        if qtype in ("q4_0", "q5_0"):
            y = (q - (8 if qtype == "q4_0" else 16)).astype(F32) * d
        else:
            y = q.astype(F32) * d + m
    return y.astype(F32)


def quantize_block_ref(x: ArrayLike, qtype: str) -> bytes:
    """Loop twin of :func:`quantize` for one block of 32 values: the C reference, statement by statement."""
    _check_qtype(qtype)
    xa = float_array(x, "x")
    if not np.all(np.isfinite(xa)):
        raise ValueError("x must be finite (ggml's scales would be Inf)")
    xs = [F32(v) for v in to_float(xa, F32, "x").reshape(-1)]
    if len(xs) != QK:
        raise ValueError(f"x: one block is {QK} values, got {len(xs)}")

    def fp16(v):
        with np.errstate(over="ignore"):
            h = np.array([v], F32).astype("<f2")
        if np.isinf(h).any():  # as quantize: a scale or minimum beyond fp16 is refused
            raise ValueError(f"x: block 0 needs a scale or minimum of {float(v):.6g}, beyond fp16 (max 65504)")
        return h.tobytes()

    def trunc_int(v):  # C cast to an integer type: toward zero
        return int(np.trunc(v))

    with np.errstate(divide="ignore", over="ignore"):
        def recip(d):  # as _recip: 0 for d == 0 and where 1/d overflows
            r = F32(1) / d if d else F32(0)
            return r if np.isfinite(r) else F32(0)

        if qtype == "q8_0":
            amax = F32(0)
            for v in xs:
                amax = max(amax, abs(v))
            d = F32(amax / F32(127))
            idd = recip(d)
            qs = []
            for v in xs:
                t = F32(v * idd)
                r = np.floor(abs(t) + 0.5) if abs(t) - np.floor(abs(t)) != 0.5 else np.floor(abs(t)) + 1
                qs.append(int(np.copysign(r, t)))  # roundf: half away from zero
            return fp16(d) + np.array(qs, np.int8).tobytes()
        if qtype in ("q4_0", "q5_0"):
            half = 8 if qtype == "q4_0" else 16
            amax, mx = F32(0), F32(0)
            for v in xs:
                if amax < abs(v):
                    amax, mx = abs(v), v
            d = F32(mx / F32(-half))
            idd = recip(d)
            q = [min(2 * half - 1, trunc_int(F32(F32(v * idd) + F32(half + 0.5)))) for v in xs]
        else:
            levels = 15 if qtype == "q4_1" else 31
            mn, mx = F32(np.inf), F32(-np.inf)
            for v in xs:
                mn, mx = min(mn, v), max(mx, v)
            d = F32(F32(mx - mn) / F32(levels))
            idd = recip(d)
            q = [trunc_int(F32(F32(F32(v - mn) * idd) + F32(0.5))) for v in xs]
            if qtype == "q4_1":
                q = [min(15, v) for v in q]
    qs = bytes((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4) for j in range(16))
    qh = sum(((q[j] >> 4) & 1) << j for j in range(32)).to_bytes(4, "little")
    head = fp16(d) + (fp16(mn) if qtype in ("q4_1", "q5_1") else b"")
    return head + (qh if qtype in ("q5_0", "q5_1") else b"") + qs


@dataclass(frozen=True)
class GGMLTensor:
    """A tensor stored as ggml blocks: the raw bytes of :func:`quantize`, its type and shape.

    The shared contract of refquant's quantized tensors: ``.shape``, ``.dequantize()``, ``.storage_bits()``
    (every byte of every block: scales, minimums and high bits included).
    """

    data: np.ndarray  # uint8, (..., n_blocks · BLOCK_BYTES[qtype]): rows of blocks, as ggml stores them
    qtype: str  # a key of TYPE_TRAITS
    shape: tuple  # the original tensor's shape (last axis a multiple of 32)

    def dequantize(self) -> np.ndarray:
        return dequantize(self.data, self.qtype).reshape(self.shape)

    def storage_bits(self) -> int:
        return 8 * int(self.data.size)


def quantize_tensor(x: ArrayLike, qtype: str, imatrix: ArrayLike | None = None) -> GGMLTensor:
    """:func:`quantize` wrapped with its type and shape: ``x`` (..., K), K a multiple of the type's block."""
    data = quantize(x, qtype, imatrix)
    return GGMLTensor(data, qtype, tuple(np.shape(x)))
