"""Fixed-point arithmetic of integer-only inference, bit-exact with gemmlowp and TFLite.

A real multiplier M (e.g. ``s_x · s_w / s_y`` of a quantized layer) is stored as a 32-bit
integer ``m`` in Q0.31 and a power-of-two exponent ``shift``::

    M ≈ m · 2^(shift − 31),     2^30 <= m < 2^31  (m = 0 for M = 0)               (1)

and applied to an int32 accumulator x without floating point::

    double rounding (TFLite default):
        y = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x · 2^max(shift,0), m), max(−shift,0))
    single rounding (TFLITE_SINGLE_ROUNDING):
        y = (x · m + 2^(30 − shift)) >> (31 − shift)                                  (2)

Rounding, as each primitive states it:

* ``quantize_multiplier``: ``round(q · 2^31)`` half away from zero (C ``std::round``) of the frexp
  fraction q ∈ [0.5, 1); a result of exactly 2^31 carries into the exponent; shift < −31 flushes
  the multiplier to 0.
* ``saturating_rounding_doubling_high_mul``: ``round(a · b / 2^31)`` half toward +infinity; the
  one overflowing case a = b = INT32_MIN saturates to INT32_MAX.
* ``rounding_divide_by_pot``: ``round(x / 2^e)`` half away from zero.
* double rounding rounds twice, so it can differ by one from the exact ``round(x · M)``:
  tensorflow#25087's x = 7984, m = 1583594044, shift = −9 gives 12, while x·M = 11.499.
* single rounding: ``round(x · m / 2^(31 − shift))`` half toward +infinity, once.

All functions take int32 arrays (or Python ints), compute in int64 and return int32; nothing
inside is floating point except ``quantize_multiplier``'s input.

References
----------
gemmlowp ``fixedpoint/fixedpoint.h``: ``SaturatingRoundingDoublingHighMul``, ``RoundingDivideByPOT``.
TFLite ``kernels/internal/quantization_util.cc: QuantizeMultiplier``; ``kernels/internal/common.h``
(``common.cc`` in newer versions): ``MultiplyByQuantizedMultiplier`` (both branches of
``TFLITE_SINGLE_ROUNDING``). Jacob et al., CVPR 2018, §2.2 (eq. 5-6: the normalised multiplier).
"""
from __future__ import annotations

import math

import numpy as np

from ..core._checks import broadcast, float_array, int_array

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _int32(x, name):
    a = int_array(x, name)
    if a.size and (int(a.min()) < INT32_MIN or int(a.max()) > INT32_MAX):  # exact ints: uint64 never wraps
        raise ValueError(f"{name} must fit in int32, got values in [{a.min()}, {a.max()}]")
    return a.astype(np.int64)


def _trunc_div_pow2(x: np.ndarray, e: int) -> np.ndarray:
    """C's ``x / 2^e`` for int64 x: rounds toward zero. The arithmetic shift floors, so negative
    values with a non-zero remainder get 1 added back."""
    return (x >> e) + ((x < 0) & ((x & ((1 << e) - 1)) != 0))


def quantize_multiplier(real):
    """``(multiplier, shift)`` with ``real ≈ multiplier · 2^(shift − 31)``, TFLite ``QuantizeMultiplier``.

    Parameters
    ----------
    real : float or ndarray of float (any sign; per-channel multipliers as an array)

    Returns
    -------
    multiplier : int32 ndarray (0-d for a scalar input), |multiplier| in [2^30, 2^31) or 0
    shift : int32 ndarray of the same shape
    """
    r = float_array(real, "real").astype(np.float64)
    if not np.all(np.isfinite(r)):
        raise ValueError("real must be finite")
    m = np.zeros(r.shape, np.int64)
    s = np.zeros(r.shape, np.int64)
    for i, v in np.ndenumerate(r):  # frexp and the carry are per value; this runs once per layer
        if v == 0:
            continue
        q, e = math.frexp(float(v))
        qf = int(math.copysign(math.floor(abs(q) * 2**31 + 0.5), q))  # std::round: exact, q·2^31 is a double
        if abs(qf) == 2**31:
            qf //= 2
            e += 1
        if e < -31:
            qf, e = 0, 0
        m[i], s[i] = qf, e
    if np.any(s > 30):
        raise ValueError("real is too large: shift > 30 cannot be applied to an int32 accumulator")
    return m.astype(np.int32), s.astype(np.int32)


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul``: ``round_half_up(a·b / 2^31)``, saturating
    only ``INT32_MIN · INT32_MIN`` (whose exact result 2^31 does not fit) to ``INT32_MAX``."""
    a64, b64 = broadcast({"a": _int32(a, "a"), "b": _int32(b, "b")})
    ab = a64 * b64  # |ab| <= 2^62: exact in int64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = _trunc_div_pow2(ab + nudge, 31)
    overflow = (a64 == INT32_MIN) & (b64 == INT32_MIN)
    if overflow.any():
        high = np.where(overflow, INT32_MAX, high)
    return high.astype(np.int32)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: ``round(x / 2^exponent)`` half away from zero, 0 <= exponent <= 31."""
    x64 = _int32(x, "x")
    e = _int32(exponent, "exponent")
    if e.size and (e.min() < 0 or e.max() > 31):
        raise ValueError(f"exponent must lie in [0, 31], got values in [{e.min()}, {e.max()}]")
    x64, e = broadcast({"x": x64, "exponent": e})
    mask = (np.int64(1) << e) - 1
    remainder = x64 & mask
    threshold = (mask >> 1) + (x64 < 0)
    return ((x64 >> e) + (remainder > threshold)).astype(np.int32)


def multiply_by_quantized_multiplier(x, multiplier, shift, *, rounding: str = "double") -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier``: ``x · M`` for M = multiplier · 2^(shift − 31), in integers.

    Parameters
    ----------
    x : int32 array (e.g. accumulators), any shape
    multiplier, shift : int32 arrays broadcastable to ``x`` (per-channel along the last axis: shape (N,))
    rounding : {"double", "single"} — TFLite's default (equation (1)-(2) above) or TFLITE_SINGLE_ROUNDING

    Raises ValueError where C would overflow int32 (``x · 2^shift`` for shift > 0, or a result that
    does not fit) instead of wrapping.
    """
    return _apply_multiplier(x, multiplier, shift, rounding, ("x", "multiplier", "shift"))


def _apply_multiplier(x, multiplier, shift, rounding, names):
    """:func:`multiply_by_quantized_multiplier` with the caller's argument names in its errors."""
    nx, nm, ns = names
    if not isinstance(rounding, str) or rounding not in ("double", "single"):
        raise ValueError(f"rounding: expected 'double' or 'single', got {rounding!r}")
    x64 = _int32(x, nx)
    m = _int32(multiplier, nm)
    s = _int32(shift, ns)
    if s.size and (s.min() < -31 or s.max() > 30):
        raise ValueError(f"{ns} must lie in [-31, 30], got values in [{s.min()}, {s.max()}]")
    x64, m, s = broadcast({nx: x64, nm: m, ns: s})
    if rounding == "double":
        left = np.maximum(s, 0)
        xl = x64 << left
        if xl.size and (xl.min() < INT32_MIN or xl.max() > INT32_MAX):
            raise ValueError(f"{nx} · 2^{ns} overflows int32 (TFLite would wrap here)")
        return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(xl, m), np.maximum(-s, 0))
    if np.any(m < 0):
        raise ValueError(f"{nm} must be >= 0 for single rounding")
    total = 31 - s
    y = (x64 * m + (np.int64(1) << (total - 1))) >> total  # |x·m| < 2^62: exact
    if y.size and (y.min() < INT32_MIN or y.max() > INT32_MAX):
        raise ValueError(f"{nx} · {nm}: the result overflows int32")
    return y.astype(np.int32)
