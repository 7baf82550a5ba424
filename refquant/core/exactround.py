"""Products rounded once: ``fl(d · s)`` for an integer d of any size and a float s.

:func:`refquant.core.uniform.dequantize` forms ``scale · (q − zero_point)``; for codes wider than
the scale's significand the product cannot be formed in the scale's dtype without rounding twice.
Two exact methods, each rounding once to nearest (ties to even):

* :func:`round_to_odd_product` — for float16 / float32 scales and |d| < 2^58: two exact float64
  partial products, an exact sum (TwoSum), rounded to odd in 53 bits; the caller then rounds to
  the scale's dtype. Rounding to odd at p + 2 or more bits followed by rounding to nearest at p
  bits equals one rounding to nearest (Boldo & Melquiond 2008, Theorem 1).
* :func:`round_product` — any d, any float dtype, on Python integers, one element at a time.

References
----------
Boldo & Melquiond, "Emulation of FMA and correctly rounded sums: proved algorithms using rounding
to odd", IEEE Trans. Computers 57(4), 2008. Knuth, TAOCP vol. 2, §4.2.2 (TwoSum).
"""
from __future__ import annotations

import math

import numpy as np
from ._types import DTypeLike


def round_to_odd_product(d: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``d · s`` (int64 |d| < 2^58, float16/32 s) rounded to odd in float64 (the module docstring says why)."""
    with np.errstate(over="ignore", under="ignore"):
        a = d >> 29  # floor: c = d - a·2^29 in [0, 2^29)
        c = d - (a << 29)
        s64 = s.astype(np.float64)
        p1 = a.astype(np.float64) * s64 * 2.0**29  # exact: <= 29 + 24 bits, times a power of two
        p2 = c.astype(np.float64) * s64  # exact
        hi = p1 + p2
        bb = hi - p1
        err = (p1 - (hi - bb)) + (p2 - bb)  # TwoSum: hi + err == p1 + p2 exactly
        even = (hi.view(np.uint64) & 1) == 0
        move = (err != 0) & even
        return np.where(move, np.nextafter(hi, np.where(err > 0, np.inf, -np.inf)), hi)


def round_product(d: int, s: float, dtype: DTypeLike) -> float:
    """``d · s`` rounded once, to nearest even, to ``dtype``, on Python integers (any d)."""
    m, e = math.frexp(s)
    n, e = d * int(m * 2**53), e - 53  # d · s = n · 2^e exactly
    if n == 0:
        return 0.0
    fi = np.finfo(dtype)
    p, sign, n = fi.nmant + 1, (-1 if n < 0 else 1), abs(n)
    quantum = max(n.bit_length() - 1 + e, fi.minexp) - (p - 1)  # exponent of the last kept bit
    if quantum > e:
        sh = quantum - e
        k, rem = n >> sh, n & ((1 << sh) - 1)
        if rem > 1 << (sh - 1) or (rem == 1 << (sh - 1) and k & 1):
            k += 1
        n, e = k, quantum
    if n.bit_length() - 1 + e > fi.maxexp - 1:
        return sign * math.inf
    return sign * math.ldexp(n, e)
