"""ggml's MXFP4 block (llama.cpp ``GGML_TYPE_MXFP4``), byte-exact with ``quantize_row_mxfp4_ref``.

One block of 32 values is 17 bytes: an E8M0 exponent byte ``e`` and 16 bytes of E2M1 codes::

    byte 0        e            the block scale 2^(e − 127); ggml multiplies by 2^(e − 128) = half of it
    bytes 1..16   qs[16]       qs[j] = code of element j (low nibble) | code of element j + 16 (high nibble)

A code k indexes ``kvalues_mxfp4 = 2 · E2M1`` = {0, 1, 2, 3, 4, 6, 8, 12} (k < 8) and their negatives (k ≥ 8);
the doubled table times the halved scale is the OCP value, ``y = kvalues_mxfp4[k] · 2^(e − 128)``. This is OCP
MXFP4 (:mod:`refquant.formats.mx`, ``elem="fp4_e2m1"``) with three differences that change bytes:

* the shared exponent is ``floorf(log2f(amax)) − 2``: float32 ``log2f`` rounds up to k for a few amax just
  below 2^k, where the spec's exact floor gives k − 1 (:func:`_log2f_floor`);
* ties between two codes go toward zero (``best_index_mxfp4`` scans codes with a strict ``<``), not to even;
* a value that rounds to zero always gets code 0, never −0 (code 8); and the nibbles are split j / j + 16,
  where OCP packs neighbours.

Moved out of :mod:`refquant.formats.mx` (every name is still importable there).

References
----------
llama.cpp ``ggml/src/ggml-quants.c``: ``quantize_row_mxfp4_ref``, ``dequantize_row_mxfp4``, ``best_index_mxfp4``;
``ggml/src/ggml-common.h``: ``block_mxfp4``, ``kvalues_mxfp4``; ``ggml-impl.h``: ``GGML_E8M0_TO_FP32_HALF``.
OCP "Microscaling Formats (MX) Specification" v1.0 (2023), §5.3 – §6.3.
"""
from __future__ import annotations

import numpy as np

from ..core._checks import finite_array
from ..core._types import ArrayLike
from ..core.uniform import _CHUNK
from .codebook import codebook_quantize

F32 = np.float32


def _as_f32(x, name="x") -> np.ndarray:
    xa = finite_array(x, name, F32, "must be finite: a block holding ±Inf has no MXFP4 code")
    if xa.ndim == 0:
        raise ValueError(f"{name}: expected an array with at least one axis, got a scalar")
    return xa


# --- ggml's MXFP4 block (llama.cpp GGML_TYPE_MXFP4): 17 bytes = e (E8M0) | qs[16] -------------------
GGML_QK = 32
GGML_BLOCK_BYTES = 17
KVALUES_MXFP4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.int8)  # 2 · E2M1


def _log2f_floor(a: np.ndarray) -> np.ndarray:
    # floorf(log2f(a)) as glibc computes it: log2 correctly rounded to float32, then floored. For a
    # few floats just below 2^k (|k| >= 3) the rounded log2 is k, one more than floor(log2 a).
    with np.errstate(divide="ignore"):
        return np.floor(np.log2(a.astype(np.float64)).astype(F32)).astype(np.int64)


def _ggml_e(amax: np.ndarray) -> np.ndarray:
    # e = amax > 0 ? (uint8_t)(floorf(log2f(amax)) − 2 + 127) : 0. Below amax = 2^−125 the value is
    # negative and the C cast is undefined; x86-64 (cvttss2si, then the low byte) wraps it mod 256.
    return np.where(amax > 0, (_log2f_floor(np.where(amax > 0, amax, F32(1))) + 125) & 0xFF, 0).astype(np.uint8)


def _e8m0_half(e: np.ndarray) -> np.ndarray:
    # GGML_E8M0_TO_FP32_HALF: 2^(e − 128) as float32 (e < 2: the subnormals 2^−128, 2^−127; 255: 2^127)
    return np.ldexp(F32(1), e.astype(np.int32) - 128).astype(F32)


def ggml_mxfp4_quantize(x: ArrayLike) -> np.ndarray:
    """Quantize rows into ggml MXFP4 blocks, byte-exact with ``quantize_row_mxfp4_ref``.

    Per block of 32: ``e = floorf(log2f(amax)) − 2 + 127`` (the spec's floor rule, but with float32 log2,
    see ``_log2f_floor``), ``d = 2^(e − 128)`` and each value's code is ``best_index_mxfp4``: the
    nearest of ``kvalues_mxfp4 · d`` scanning codes 0 … 15 with strict ``<`` — so ties go to the smaller
    magnitude (toward zero) and every value that rounds to zero gets code 0 (never −0, code 8).
    ``qs[j]`` holds element j in its low nibble and element j + 16 in its high nibble.

    Parameters
    ----------
    x : ndarray of float, shape (..., n) with n a multiple of 32 (converted to float32); finite

    Returns
    -------
    ndarray of uint8, shape (..., n / 32 · 17): the blocks' bytes, as in a GGUF file
    """
    xa = _as_f32(x)
    if xa.shape[-1] % GGML_QK:
        raise ValueError(f"x: the last axis must be a multiple of {GGML_QK}, got shape {xa.shape}")
    blocks = xa.reshape(-1, GGML_QK)
    out = np.empty((blocks.shape[0], GGML_BLOCK_BYTES), np.uint8)
    step = max(1, _CHUNK // GGML_QK)  # blocks per chunk: the float64 temporaries stay in cache
    for i in range(0, blocks.shape[0], step):
        out[i:i + step] = _quantize_blocks(blocks[i:i + step])
    return out.reshape(xa.shape[:-1] + (-1,))


def _quantize_blocks(b: np.ndarray) -> np.ndarray:
    """Blocks (nb, 32) float32 -> their bytes (nb, 17)."""
    e = _ggml_e(np.abs(b).max(axis=1, initial=F32(0)))
    t = np.abs(b).astype(np.float64) / _e8m0_half(e).astype(np.float64)[:, None]  # exact
    k = codebook_quantize(t, KVALUES_MXFP4[:8].astype(np.float64), ties="down").astype(np.uint8)
    q = np.where((b < 0) & (k > 0), k | 8, k).astype(np.uint8)
    return np.concatenate([e[:, None], q[:, :16] | (q[:, 16:] << 4)], axis=1)


def ggml_mxfp4_dequantize(data: ArrayLike | bytes) -> np.ndarray:
    """``dequantize_row_mxfp4``: ``kvalues_mxfp4[nibble] · 2^(e − 128)`` in float32, (..., nb·17) -> (..., nb·32).

    ``data``: uint8 array or ``bytes``. A block whose values overflow float32 (e ≥ 253) raises ValueError
    (ggml would return ±Inf).
    """
    a = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray)) else np.asarray(data)
    if a.dtype != np.uint8:
        raise ValueError(f"data: expected uint8 bytes, got dtype {a.dtype}")
    if a.ndim == 0 or a.shape[-1] % GGML_BLOCK_BYTES:
        raise ValueError(f"data: the last axis must be a multiple of {GGML_BLOCK_BYTES} bytes, got shape {a.shape}")
    blk = np.ascontiguousarray(a).reshape(-1, GGML_BLOCK_BYTES)
    q = np.concatenate([blk[:, 1:] & 0x0F, blk[:, 1:] >> 4], axis=1)  # (nb, 32)
    with np.errstate(over="ignore"):
        y = KVALUES_MXFP4[q].astype(F32) * _e8m0_half(blk[:, 0])[:, None]
    if not np.isfinite(y).all():
        raise ValueError("data: a block's scale byte e >= 253 overflows float32 (ggml would give ±Inf)")
    return y.reshape(a.shape[:-1] + (-1,))


def ggml_mxfp4_quantize_block_ref(x: ArrayLike) -> bytes:
    """Loop twin of :func:`ggml_mxfp4_quantize` for one block of 32: the C reference, statement by statement."""
    xs = [F32(v) for v in _as_f32(x).reshape(-1)]
    if len(xs) != GGML_QK:
        raise ValueError(f"x: one block is {GGML_QK} values, got {len(xs)}")
    amax = F32(0)
    for v in xs:
        if amax < abs(v):
            amax = abs(v)
    e = (int(_log2f_floor(np.array([amax]))[0]) - 2 + 127) % 256 if amax > 0 else 0
    d = F32(2.0 ** (e - 128))

    def best_index(v):
        best, best_err = 0, abs(F32(F32(KVALUES_MXFP4[0]) * d) - v)
        for i in range(1, 16):
            with np.errstate(over="ignore"):
                err = abs(F32(F32(KVALUES_MXFP4[i]) * d) - v)
            if err < best_err:
                best, best_err = i, err
        return best

    return bytes([e]) + bytes(best_index(xs[j]) | (best_index(xs[j + 16]) << 4) for j in range(16))
