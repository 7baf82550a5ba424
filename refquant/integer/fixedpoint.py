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

The public functions compute closed forms, identities (3)-(5) below (proved where they are stated),
validating each input once and working in place on one int64 copy; the ``_..._ref`` twins are the
line-by-line transcriptions of gemmlowp that the tests hold them equal to, bit for bit.

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
from ..core._types import ArrayLike

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


def quantize_multiplier(real: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
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


def _saturating_rounding_doubling_high_mul_ref(a, b) -> np.ndarray:
    """Twin of :func:`saturating_rounding_doubling_high_mul`, transcribed from gemmlowp
    ``SaturatingRoundingDoublingHighMul``: ``round_half_up(a·b / 2^31)``, saturating only
    ``INT32_MIN · INT32_MIN`` (whose exact result 2^31 does not fit) to ``INT32_MAX``."""
    a64, b64 = broadcast({"a": _int32(a, "a"), "b": _int32(b, "b")})
    ab = a64 * b64  # |ab| <= 2^62: exact in int64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = _trunc_div_pow2(ab + nudge, 31)
    overflow = (a64 == INT32_MIN) & (b64 == INT32_MIN)
    if overflow.any():
        high = np.where(overflow, INT32_MAX, high)
    return high.astype(np.int32)


def _rounding_divide_by_pot_ref(x, exponent) -> np.ndarray:
    """Twin of :func:`rounding_divide_by_pot`, transcribed from gemmlowp ``RoundingDivideByPOT``:
    ``round(x / 2^exponent)`` half away from zero, 0 <= exponent <= 31."""
    x64 = _int32(x, "x")
    e = _int32(exponent, "exponent")
    if e.size and (e.min() < 0 or e.max() > 31):
        raise ValueError(f"exponent must lie in [0, 31], got values in [{e.min()}, {e.max()}]")
    x64, e = broadcast({"x": x64, "exponent": e})
    mask = (np.int64(1) << e) - 1
    remainder = x64 & mask
    threshold = (mask >> 1) + (x64 < 0)
    return ((x64 >> e) + (remainder > threshold)).astype(np.int32)


def _multiply_by_quantized_multiplier_ref(x, multiplier, shift, *, rounding: str = "double") -> np.ndarray:
    """Twin of :func:`multiply_by_quantized_multiplier` (the pre-rewrite code): TFLite
    ``MultiplyByQuantizedMultiplier``: ``x · M`` for M = multiplier · 2^(shift − 31), in integers.

    Parameters
    ----------
    x : int32 array (e.g. accumulators), any shape
    multiplier, shift : int32 arrays broadcastable to ``x`` (per-channel along the last axis: shape (N,))
    rounding : {"double", "single"} — TFLite's default (equation (1)-(2) above) or TFLITE_SINGLE_ROUNDING

    Raises ValueError where C would overflow int32 (``x · 2^shift`` for shift > 0, or a result that
    does not fit) instead of wrapping.
    """
    return _apply_multiplier_ref(x, multiplier, shift, rounding, ("x", "multiplier", "shift"))


def _apply_multiplier_ref(x, multiplier, shift, rounding, names):
    """:func:`_multiply_by_quantized_multiplier_ref` with the caller's argument names in its errors."""
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
        return _rounding_divide_by_pot_ref(_saturating_rounding_doubling_high_mul_ref(xl, m), np.maximum(-s, 0))
    if np.any(m < 0):
        raise ValueError(f"{nm} must be >= 0 for single rounding")
    total = 31 - s
    y = (x64 * m + (np.int64(1) << (total - 1))) >> total  # |x·m| < 2^62: exact
    if y.size and (y.min() < INT32_MIN or y.max() > INT32_MAX):
        raise ValueError(f"{nx} · {nm}: the result overflows int32")
    return y.astype(np.int32)


# --- The fast paths: closed forms of the primitives above, equal to them bit for bit ---------------
#
# (3) SRDHM(a, b) = min((a·b + 2^30) >> 31, INT32_MAX)        (>> floors: NumPy's arithmetic shift)
#     Proof. Let p = a·b. For p >= 0 gemmlowp adds 2^30 and truncates a non-negative number: a floor.
#     For p < 0 it truncates v = p + 1 − 2^30 < 0 toward zero, i.e. takes ceil(v / 2^31)
#     = floor((v + 2^31 − 1) / 2^31) = floor((p + 2^30) / 2^31). So both signs are floor((p + 2^30) / 2^31):
#     round half toward +infinity. |p| <= 2^62 with equality only for a = b = INT32_MIN, whose result
#     2^31 is the only one above INT32_MAX: the min is gemmlowp's saturation.
# (4) RDBP(h, e) = (h + 2^(e−1) − [h < 0]) >> e  for 1 <= e <= 31;  RDBP(h, 0) = h.
#     Proof. Write h = q·2^e + r with 0 <= r < 2^e (q = h >> e). gemmlowp returns q + [r > 2^(e−1) − 1 + [h<0]].
#     The closed form is q + floor((r + 2^(e−1) − [h<0]) / 2^e), and 0 <= r + 2^(e−1) − [h<0] < 2^(e+1),
#     so it adds [r >= 2^(e−1) + [h<0]] — the same condition. Ties therefore go away from zero.
# (5) double rounding fused: for p = (x·2^left)·m and e = max(−shift, 0) >= 1,
#     y = RDBP(SRDHM) = (p + 2^30 + 2^(30+e) − 2^31·[p < −2^30]) >> (31 + e).
#     Proof. With v = (p + 2^30) / 2^31, SRDHM = floor(v) and [floor(v) < 0] = [p < −2^30]; for an integer
#     c and n > 0, floor((floor(v) + c) / n) = floor((v + c) / n); take c = 2^(e−1) − [p < −2^30], n = 2^e.
#     Computed as ((p + 2^30 + 2^(30+e)) >> 31 − [p < −2^30]) >> e: the same nested-floor identity with n = 2^31.
#     The saturated case p = 2^62 gives 2^(31−e) from 2^31 and from 2^31 − 1 alike when e >= 1, so
#     only e = 0 needs the min of (3). Every intermediate lies below 2^62 + 2^61 + 2^30 < 2^63: exact int64.


def _owned_int64(x, name, shape=None):
    """``(fresh int64 copy of x broadcast to shape, lo, hi)``: lo/hi bound x, checked once to fit int32.

    Types of at most 32 bits need no pass (their dtype bounds are returned); wider ones are scanned once.
    """
    a = int_array(x, name)
    if a.dtype.itemsize < 4 or a.dtype == np.int32:
        info = np.iinfo(a.dtype)
        lo, hi = int(info.min), int(info.max)
    elif a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < INT32_MIN or hi > INT32_MAX:
            raise ValueError(f"{name} must fit in int32, got values in [{lo}, {hi}]")
    else:
        lo = hi = 0
    if shape is not None and a.shape != shape:
        a = np.broadcast_to(a, shape)
    return np.array(a, dtype=np.int64), lo, hi


def _shape(names_shapes):
    try:
        return np.broadcast_shapes(*(s for _, s in names_shapes))
    except ValueError:
        listing = ", ".join(f"{k} {s}" for k, s in names_shapes)
        raise ValueError(f"{', '.join(k for k, _ in names_shapes)}: shapes do not broadcast ({listing})") from None


def saturating_rounding_doubling_high_mul(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul``: ``round_half_up(a·b / 2^31)``, saturating
    only ``INT32_MIN · INT32_MIN`` (whose exact result 2^31 does not fit) to ``INT32_MAX``.

    Computed as identity (3) of the module; equal bit for bit to :func:`_saturating_rounding_doubling_high_mul_ref`.
    """
    shape = _shape([("a", np.shape(a)), ("b", np.shape(b))])
    p = _owned_int64(a, "a", shape)[0]
    p *= _owned_int64(b, "b")[0]  # |a·b| <= 2^62: exact in int64
    p += 1 << 30
    p >>= 31
    np.minimum(p, INT32_MAX, out=p)
    return p.astype(np.int32)


def rounding_divide_by_pot(x: ArrayLike, exponent: ArrayLike) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: ``round(x / 2^exponent)`` half away from zero, 0 <= exponent <= 31.

    Computed as identity (4) of the module; equal bit for bit to :func:`_rounding_divide_by_pot_ref`.
    """
    e = _owned_int64(exponent, "exponent")[0]
    if e.size and (e.min() < 0 or e.max() > 31):
        raise ValueError(f"exponent must lie in [0, 31], got values in [{e.min()}, {e.max()}]")
    h = _owned_int64(x, "x", _shape([("x", np.shape(x)), ("exponent", e.shape)]))[0]
    corr = h >> 63  # −1 where h < 0
    corr &= -(e > 0).astype(np.int64)  # … but nothing for e = 0, where RDBP is the identity
    h += corr
    h += (np.int64(1) << e) >> 1  # 2^(e−1), and 0 for e = 0
    h >>= e
    return h.astype(np.int32)


def multiply_by_quantized_multiplier(x: ArrayLike, multiplier: ArrayLike, shift: ArrayLike, *,
                                     rounding: str = "double") -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier``: ``x · M`` for M = multiplier · 2^(shift − 31), in integers.

    Parameters
    ----------
    x : int32 array (e.g. accumulators), any shape
    multiplier, shift : int32 arrays broadcastable to ``x`` (per-channel along the last axis: shape (N,))
    rounding : {"double", "single"} — TFLite's default (equation (1)-(2) above) or TFLITE_SINGLE_ROUNDING

    Returns
    -------
    int32 ndarray of the broadcast shape. Double rounding is computed as identity (5) (one multiply,
    add, compare and shift over the tensor), single rounding as equation (2); both equal
    :func:`_multiply_by_quantized_multiplier_ref` bit for bit.

    Raises ValueError where C would overflow int32 (``x · 2^shift`` for shift > 0, or a result that
    does not fit) instead of wrapping.
    """
    return _apply_multiplier(x, multiplier, shift, rounding, ("x", "multiplier", "shift")).astype(np.int32)


def _apply_multiplier(x, multiplier, shift, rounding, names):
    """:func:`multiply_by_quantized_multiplier` as a fresh int64 array (the caller may keep working in
    place), with the caller's argument names in its errors. Validation reads each input at most once."""
    nx, nm, ns = names
    if not isinstance(rounding, str) or rounding not in ("double", "single"):
        raise ValueError(f"rounding: expected 'double' or 'single', got {rounding!r}")
    m, mlo, _ = _owned_int64(multiplier, nm)
    s, slo, shi = _owned_int64(shift, ns)
    if s.size:
        slo, shi = int(s.min()), int(s.max())
    if s.size and (slo < -31 or shi > 30):
        raise ValueError(f"{ns} must lie in [-31, 30], got values in [{slo}, {shi}]")
    shape = _shape([(nx, np.shape(x)), (nm, m.shape), (ns, s.shape)])
    p, lo, hi = _owned_int64(x, nx, shape)
    if rounding == "single":
        if m.size and m.min() < 0:
            raise ValueError(f"{nm} must be >= 0 for single rounding")
        total = 31 - s
        p *= m  # |x·m| < 2^62: exact
        p += np.int64(1) << (total - 1)
        p >>= total
        if p.size and (p.min() < INT32_MIN or p.max() > INT32_MAX):
            raise ValueError(f"{nx} · {nm}: the result overflows int32")
        return p
    if shi > 0:  # x · 2^left must fit int32, as in C
        left = np.maximum(s, 0)
        if s.ndim == 0 and lo << shi >= INT32_MIN and hi << shi <= INT32_MAX:
            p <<= left  # the bounds of x already prove it fits
        else:
            p <<= left
            if p.size and (p.min() < INT32_MIN or p.max() > INT32_MAX):
                raise ValueError(f"{nx} · 2^{ns} overflows int32 (TFLite would wrap here)")
    p *= m
    e = np.maximum(-s, 0)
    if s.ndim == 0 and slo >= 0:  # e = 0: SRDHM alone, identity (3)
        p += 1 << 30
        p >>= 31
    else:  # identity (5), as ((p + 2^30 + 2^(30+e)) >> 31 − [p < −2^30]) >> e (nested floors, integer n)
        neg = p < -(1 << 30)
        if s.ndim:
            neg &= e > 0  # channels with e = 0 get neither the 2^(30+e) nor the [p < −2^30] term
        p += (1 << 30) + np.where(e > 0, np.int64(1) << (30 + e), 0)
        p >>= 31
        p -= neg
        p >>= e
    if m.size and mlo == INT32_MIN and int(m.min()) == INT32_MIN:
        np.minimum(p, INT32_MAX, out=p)  # the saturation of (3); only reachable with m = INT32_MIN
    return p
