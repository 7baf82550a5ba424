"""Sub-byte packing and storage accounting.

Codes of b bits are packed as one little-endian bit stream: element ``i`` occupies bits
``[i·b, (i+1)·b)`` counted from the least significant bit of byte 0. For b = 4 this is ONNX's
int4/uint4 layout — "the first element is stored in the 4 LSBs, the second in the 4 MSBs" —
and for b = 2 element 0 sits in bits 0-1 of byte 0, element 3 in bits 6-7 (ONNX int2/uint2).
Any width 2..16 packs the same way (int3 spans byte boundaries). Signed codes are stored in
b-bit two's complement. A trailing partial byte is zero-padded.

References
----------
ONNX IR spec, "4 bit integer types" and "2 bit integer types" (packing order).
"""
from __future__ import annotations

import numpy as np

from ._checks import int_array, int_value
from .ranges import qrange as as_qrange
from ._types import ArrayLike, QRangeLike


def _codes(q, r) -> np.ndarray:
    qa = int_array(q, "q").reshape(-1)
    if qa.size and (int(qa.min()) < r.qmin or int(qa.max()) > r.qmax):  # exact ints: no uint64 wrap
        raise ValueError(f"q has values in [{qa.min()}, {qa.max()}], outside {r} (the qrange)")
    return qa


def pack(q: ArrayLike, qrange: QRangeLike) -> np.ndarray:
    """Pack integer codes into bytes.

    Parameters
    ----------
    q : integer ndarray, any shape (flattened in C order), every value inside ``qrange``
    qrange : str or QRange — the bit width and signedness

    Returns
    -------
    ndarray of uint8, shape ``(ceil(q.size · bits / 8),)``
    """
    r = as_qrange(qrange)
    qa = _codes(q, r)
    u = qa.astype(np.int64) & ((1 << r.bits) - 1)  # two's complement in b bits
    if r.bits == 8:
        return u.astype(np.uint8)
    if r.bits == 4:
        u = np.concatenate([u, np.zeros(u.size % 2, np.int64)]).reshape(-1, 2)
        return (u[:, 0] | (u[:, 1] << 4)).astype(np.uint8)
    bits = ((u[:, None] >> np.arange(r.bits)) & 1).astype(np.uint8)  # (n, b), LSB first
    return np.packbits(bits.reshape(-1), bitorder="little")


def unpack(packed: ArrayLike, qrange: QRangeLike, count: int) -> np.ndarray:
    """Inverse of :func:`pack`: the first ``count`` codes, as ``qrange.dtype``, shape ``(count,)``."""
    r = as_qrange(qrange)
    p = np.asarray(packed)
    if p.dtype != np.uint8 or p.ndim != 1:
        raise ValueError(f"packed: expected a 1-D uint8 array, got {p.dtype} of shape {p.shape}")
    count = int_value(count, "count", 0)
    if count * r.bits > p.size * 8:
        raise ValueError(f"count={count} codes of qrange {r.name} ({r.bits} bits) need {-(-count * r.bits // 8)} "
                         f"bytes of packed, got {p.size}")
    bits = np.unpackbits(p, bitorder="little")[: count * r.bits].reshape(count, r.bits).astype(np.int64)
    u = (bits << np.arange(r.bits)).sum(axis=1)
    if r.signed:
        u = np.where(u >= 1 << (r.bits - 1), u - (1 << r.bits), u)  # sign-extend
    return u.astype(r.dtype)


def pack_ref(q: ArrayLike, qrange: QRangeLike) -> np.ndarray:
    """Loop twin of :func:`pack`: sets one bit at a time."""
    r = as_qrange(qrange)
    qa = _codes(q, r)
    out = bytearray(-(-qa.size * r.bits // 8))
    for i, v in enumerate(qa.tolist()):
        v &= (1 << r.bits) - 1
        for j in range(r.bits):
            pos = i * r.bits + j
            out[pos // 8] |= ((v >> j) & 1) << (pos % 8)
    return np.frombuffer(bytes(out), dtype=np.uint8).copy()


def storage_bits(n_elements: int, qrange: QRangeLike, *, n_scales: int = 0, scale_bits: int = 32,
                 n_zero_points: int = 0) -> int:
    """Total storage of a quantized tensor in bits.

    ``n_elements · b + n_scales · scale_bits + n_zero_points · b`` (zero points are stored in the
    code type; symmetric formats store none).
    """
    r = as_qrange(qrange)
    n_elements, n_scales, n_zero_points = (int_value(v, n, 0) for v, n in (
        (n_elements, "n_elements"), (n_scales, "n_scales"), (n_zero_points, "n_zero_points")))
    return n_elements * r.bits + n_scales * int_value(scale_bits, "scale_bits", 1) + n_zero_points * r.bits


def bits_per_element(n_elements: int, qrange: QRangeLike, *, n_scales: int = 0, scale_bits: int = 32,
                     n_zero_points: int = 0) -> float:
    """Storage per element, scales and zero points included: int4 with one float32 scale per group
    of 32 is ``4 + 32/32 = 5.0`` bits. Returns NaN-free results; ``n_elements`` must be > 0."""
    n_elements = int_value(n_elements, "n_elements")
    if n_elements <= 0:
        raise ValueError(f"n_elements must be > 0, got {n_elements}")
    return storage_bits(n_elements, qrange, n_scales=n_scales, scale_bits=scale_bits,
                        n_zero_points=n_zero_points) / n_elements


