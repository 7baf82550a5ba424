"""float32 arithmetic as x86 kernels round it: the fused multiply-add ``vfmadd*ps`` (one rounding).

PyTorch's CPU kernels are compiled with floating-point contraction: ``a * b + c`` written in C++
becomes one fused multiply-add where the compiler sees it (FBGEMM's ``QuantizeAvx2`` spells it out
with ``_mm256_fmadd_ps``; ``QuantizedOpKernels.cpp``'s learnable fake-quantize kernels get it from
the compiler). NumPy has no fused multiply-add, so :func:`fma_float32` computes one exactly. Shared
by :mod:`refquant.mirrors.torch_ops`, :mod:`.torch_qat` and :mod:`.torch_lsq`.

References
----------
IEEE 754-2019, section 5.4.1 (fusedMultiplyAdd). Knuth, The Art of Computer Programming vol. 2,
section 4.2.2, Theorem B (the exact error of a floating-point sum, "TwoSum").
"""
from __future__ import annotations

import numpy as np

from ..core._types import ArrayLike

_TWO128 = 2.0 ** 128  # where float32 rounds to Inf: the "next value" after float32 max


def fma_float32(a: ArrayLike, b: ArrayLike, c: ArrayLike) -> np.ndarray:
    """``a · b + c`` rounded once to float32 — an IEEE fused multiply-add (``vfmadd*ps``).

    ``a``, ``b``, ``c`` are converted to float32 first; they broadcast. Exact for every input:

    1. ``p = a · b`` in float64 is exact: two 24-bit significands give at most 48 bits (≤ 53), and
       the exponent (≥ 2**-298 for subnormal factors, < 2**256) stays in float64's normal range.
    2. ``s = fl64(p + c)`` and ``e = (p + c) − s`` exactly (Knuth's TwoSum; no overflow possible).
    3. ``r = fl32(s)``. Rounding twice (to float64, then float32) can differ from rounding the exact
       ``v = p + c`` once only when ``s`` lands exactly on a midpoint ``m`` between two adjacent
       float32 values while ``v ≠ m``: every float32 value and midpoint is a float64 value and fl64
       is monotonic, so ``v < m`` implies ``s ≤ m`` (and likewise above). When ``s == m``, ``e ≠ 0``
       says on which side ``v`` lies and the neighbour on that side is the answer; ``e == 0`` is a
       true tie, which the cast already broke to even. The midpoint is formed exactly in float64
       as the mean of two adjacent float32 values (Inf counted as 2**128, the overflow boundary).

    NaN propagates; Inf follows IEEE (``fma(inf, b, c) = inf``, ``inf · 0 = NaN``).

    Returns
    -------
    ndarray of float32, the broadcast shape
    """
    a64, b64, c64 = (np.asarray(v, dtype=np.float32).astype(np.float64) for v in (a, b, c))
    with np.errstate(over="ignore", invalid="ignore"):
        p = a64 * b64                                      # exact
        s = p + c64
        t = s - p
        e = (p - (s - t)) + (c64 - t)                      # TwoSum: p + c == s + e exactly
        r = s.astype(np.float32)                           # fl32(fl64(v))
        big = np.float32(np.inf)
        rr = np.where(np.isinf(r), np.copysign(_TWO128, s), r.astype(np.float64))  # float64: 2**128 is finite
        d = s - rr                                         # which side of r the value lies on
        n = np.nextafter(r, np.where(d > 0, big, -big))    # the float32 neighbour on that side
        nn = np.where(np.isinf(n), np.copysign(_TWO128, s), n.astype(np.float64))
        tie = (d != 0) & (s == (rr + nn) / 2) & (np.sign(e) == np.sign(d))
    return np.where(tie, n, r).astype(np.float32)
