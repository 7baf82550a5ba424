"""Integer-only nonlinearities (I-BERT): exp, softmax, erf, GELU, square root, LayerNorm.

Every function takes integer values ``q`` with a real scale ``S`` (the tensor is ``x = S · q``) and
returns integer values with a new scale. Floats appear only in scales and constants computed once
per call from ``S`` (``floor(b / S)`` and the like); the tensor arithmetic is int64 throughout, with
the bounds that keep it exact stated and checked. Outputs are int32: a result that would need more
than 31 bits is requantized by an arithmetic right shift, its scale multiplied by the same power of
two (exact bookkeeping; only the dropped low bits are lost).

Second-order polynomial (Algorithm 1, i-poly): ``a(x + b)² + c`` for ``x = S·q``::

    q_b = ⌊b / S⌋,  q_c = ⌊c / (a S²)⌋,  q_out = (q + q_b)² + q_c,  S_out = a S²          (1)

i-exp (Algorithm 2), for x <= 0: ``x = −z·ln2 + p`` with p ∈ (−ln2, 0], so ``exp(x) = 2^−z · exp(p)``,
and exp(p) ≈ 0.3585 (p + 1.353)² + 0.344 on (−ln2, 0] by (1); ``2^−z`` is a right shift. Inputs below
−n·ln2 (n = 30) are clamped there (their exp is < 2^−30 of the maximum).

i-softmax: ``e = exp(q − max q)`` requantized to 16 bits by a right shift, then
``⌊e · ⌊2^32 / Σ e⌋ / 2^(32 − out_bits)⌋`` with scale ``2^−out_bits``.

i-erf / i-GELU (Algorithm 3): erf(x) ≈ sign(x)·[a(min(|x|, −b) + b)² + c] with a = −0.2888,
b = −1.769, c = 1, and GELU(x) = x·½[1 + erf(x/√2)].

i-sqrt (Algorithm 4): Newton's iteration on integers from above, ``x ← ⌊(x + ⌊n/x⌋)/2⌋``: exactly
``⌊√n⌋``.

i-LayerNorm: ``y = n·q − Σq`` (n times the centred value, exact — I-BERT rounds the mean instead,
which costs up to 0.5/σ_q), ``σ_int = isqrt(Σ y²)``, then ``⌊y·⌊2^61/σ_int⌋ / 2^31⌋`` (I-BERT:
``⌊2^31/σ_int⌋``, which loses precision when σ_int is large) with scale
√n / 2^30, then γ, β folded into an integer bias and the output scale (per channel).

Measured errors of refquant's versions against the float functions (tests and notebook 05; scale
2^-8): i-exp ≤ 2.7e-3 absolute on [−15.6, 0]; i-GELU ≤ 1.8e-2 (the erf polynomial is loosest near 0,
≤ 0.096, where GELU multiplies it by a small x); i-softmax within ~1 step of 1/256; integer
LayerNorm ≤ 1e-4. I-BERT §3.4 compares its i-GELU with h-GELU by L2 and L∞ distance.

References
----------
Kim, Gholami, Yao, Mahoney & Keutzer, "I-BERT: Integer-only BERT Quantization", ICML 2021,
§3.3 (Algorithm 1: i-poly), §3.4 (Algorithm 2: i-GELU, eq. 6-8), §3.5 (Algorithm 3: i-exp, eq. 9-12),
§3.6 (Algorithm 4: i-sqrt; integer LayerNorm). Crandall & Pomerance, "Prime Numbers", Alg. 9.2.11
(integer square root by Newton's method).
"""
from __future__ import annotations

import math

import numpy as np

from ..core._checks import axis_index, finite_array, int_array, int_value, real_value
from .fixedpoint import _int32, _owned_int64
from ..core._types import ArrayLike

LN2 = math.log(2)
EXP_COEF = (0.3585, 1.353, 0.344)  # I-BERT eq. (12): exp(p) ≈ a(p + b)² + c on (−ln2, 0]
ERF_COEF = (-0.2888, -1.769, 1.0)  # I-BERT eq. (8)
_N = 30  # exp's shift budget: exp(x) = 0 below 2^−30 · max


def _scale(S, name="scale"):
    s = real_value(S, name)
    if not s > 0:
        raise ValueError(f"{name} must be finite and > 0, got {S!r}")
    return s


def _floor_int(v: float, what: str, bits: int = 62) -> int:
    """``⌊v⌋`` of a per-call constant, which must stay well inside int64 (|v| < 2^bits)."""
    if not (math.isfinite(v) and abs(v) < 2.0**bits):
        raise ValueError(f"scale: {what} = {v!r} leaves the int64 working range; the scale is too small "
                         "(or a coefficient too large) for this function")
    return math.floor(v)


def _check_bound(v, bound_bits: int, what: str):
    """ValueError unless every |v| < 2^bound_bits (an integer comparison: no float on tensors)."""
    if v.size and int(np.abs(v).max()) >= 1 << bound_bits:
        raise ValueError(f"{what} leaves the int64 working range: the scale is too small for this function")


def _bit_length(n: np.ndarray) -> np.ndarray:
    """Bit length of non-negative int64 values, by binary search on shifts (integers only)."""
    t, bits = n.copy(), np.zeros(n.shape, np.int64)
    for s in (32, 16, 8, 4, 2, 1):
        big = (t >> s) > 0
        bits += s * big
        t = np.where(big, t >> s, t)
    return bits + (t > 0)


def _to_int32(v: np.ndarray, scale):
    """Requantize int64 values into int32 by an arithmetic right shift (floor), with the scale
    multiplied by the same power of two — exact bookkeeping, integers only on the tensor."""
    top = max(int(v.max()), -int(v.min())) if v.size else 0  # = max|v| without an abs copy
    shift = max(0, top.bit_length() - 31)
    return (v >> shift if shift else v).astype(np.int32), scale * 2.0**shift


def _poly2_scale(S: float, a: float) -> float:
    """i-poly's output scale ``a·S²``, refused where float64 makes it 0 or Inf."""
    with np.errstate(over="ignore", under="ignore"):
        sa = a * S * S
    if sa == 0 or not math.isfinite(sa):
        raise ValueError(f"a, scale: the output scale a·scale² = {sa!r} is 0 or Inf in float64")
    return sa


def int_poly2(q: ArrayLike, scale: float, a: float, b: float, c: float) -> tuple[np.ndarray, float]:
    """i-poly, equation (1): integer ``a(x + b)² + c`` for ``x = scale·q``. Returns ``(q_out, S_out)``."""
    S = _scale(scale)
    a, b, c = real_value(a, "a"), real_value(b, "b"), real_value(c, "c")
    if a == 0:
        raise ValueError("a must be non-zero (the output scale is a·scale²)")
    qa = _int32(q, "q")
    q_b = _floor_int(b / S, "b / scale", 31)
    sa = _poly2_scale(S, a)
    q_c = _floor_int(c / sa, "c / (a·scale²)")
    t = qa + q_b
    _check_bound(t, 31, "q: q + ⌊b / scale⌋ in i-poly")  # t² < 2^62
    return t * t + q_c, a * S * S


def int_exp(q: ArrayLike, scale: float) -> tuple[np.ndarray, float]:
    """i-exp for ``x = scale·q <= 0``: returns ``(q_out int32, S_out)`` with ``S_out·q_out ≈ exp(x)``.

    ``q > 0`` raises (subtract the maximum first, as softmax does). The output is shifted right so
    that exp(0), the largest possible value, fits in int32 (31 bits).
    """
    S = _scale(scale)
    qa = np.array(int_array(q, "q"), dtype=np.int64)  # any int64: values below -30·ln2/S are clamped
    if qa.size and qa.max() > 0:
        raise ValueError("q must be <= 0: i-exp approximates exp on x <= 0 (subtract the maximum first)")
    out, s_out, _ = _exp_owned(qa, S)
    return out.astype(np.int32), s_out


def _exp_owned(qa, S):
    """:func:`int_exp` on an int64 array ``qa <= 0`` that the caller owns (overwritten: the result is
    ``qa`` itself, int64 with values that fit int32). Also returns the output for q = 0, the largest."""
    q_ln2 = _floor_int(LN2 / S, "ln 2 / scale", 31)  # ln2 in units of S
    if q_ln2 < 1:
        raise ValueError(f"scale {S} is coarser than ln 2: i-exp needs scale < ln 2")
    np.maximum(qa, -_N * q_ln2, out=qa)  # exp below 2^-30 underflows to 0 anyway
    z = np.negative(qa, out=np.empty_like(qa))  # an array even for 0-d q
    z //= q_ln2  # number of halvings, 0..30
    qa += z * q_ln2  # p in (-q_ln2, 0]: p·S in (-ln2, 0]
    a, b, c = EXP_COEF
    # int_poly2(p, S, a, b, c) in place; p fits int32 because q_ln2 < 2^31
    q_b = _floor_int(b / S, "b / scale", 31)
    s_l = _poly2_scale(S, a)
    q_c = _floor_int(c / s_l, "c / (a·scale²)")
    qa += q_b  # t = p + q_b in (q_b - q_ln2, q_b]
    if max(abs(q_b - q_ln2 + 1), abs(q_b)) >= 1 << 31:
        _check_bound(qa, 31, "i-poly")  # only then can int_poly2's t² < 2^62 check fail
    qa *= qa
    qa += q_c  # q_l: exp(p) ≈ s_l · q_l
    t_max = max(abs(q_b - q_ln2 + 1), abs(q_b)) ** 2
    if max(abs(q_c), t_max + abs(q_c)) >= 1 << (62 - _N):
        _check_bound(qa, 62 - _N, "i-exp")  # q_l · 2^30 < 2^62
    top = (q_b * q_b + q_c) << _N  # exp(0): the largest output
    down = max(0, top.bit_length() - 31)
    # 2^-z as a left shift by 30 - z, then a common right shift so that every value fits in int32
    np.subtract(_N, z, out=z)
    qa <<= z
    if down:
        qa >>= down
    return qa, s_l / 2.0**_N * 2.0**down, top >> down


def int_softmax(q: ArrayLike, scale: float, *, axis: int = -1, out_bits: int = 8) -> tuple[np.ndarray, float]:
    """I-BERT integer softmax along ``axis``: returns ``(q_out int32 in [0, 2^out_bits], 2^-out_bits)``."""
    S = _scale(scale)
    out_bits = int_value(out_bits, "out_bits", 1, 16)
    qa = int_array(q, "q")  # int32 scores, or int64 masked ones
    if qa.dtype.kind == "u" and qa.dtype.itemsize == 8:
        int_array(q, "q", -2**63, 2**63 - 1, " (int64)")
    qa = np.array(qa, dtype=np.int64)  # owned: worked on in place below
    if qa.ndim == 0 or qa.size == 0:
        raise ValueError(f"q: softmax needs at least one element along an axis, got shape {qa.shape}")
    axis = axis_index(axis, qa.ndim, data="q")
    if qa.shape[axis] >= 2**16:
        raise ValueError("q: softmax over >= 65536 elements would overflow the 32-bit sum")
    qmax = qa.max(axis=axis, keepdims=True)
    # q - max without int64 wrap-around: scores more than 2^62 below the maximum (whose exp is 0 anyway,
    # int_exp clamps at -30·ln2) are raised to max - 2^62 first
    lower = np.where(qmax < -2**62, np.int64(-2**63), qmax - np.int64(2**62))
    np.maximum(qa, lower, out=qa)
    qa -= qmax
    e, _, top = _exp_owned(qa, S)  # int_exp of q − max, in place
    # requantize exp to 16 bits with a power-of-two step (I-BERT requantizes here too): the largest
    # value, exp(0), sets the shift; then Σ e < 2^16 · n < 2^32 and ⌊2^32 / Σ⌋ >= 1
    e >>= max(0, top.bit_length() - 16)
    total = e.sum(axis=axis, keepdims=True)  # >= the max element's term > 0
    factor = (np.int64(1) << 32) // total
    e *= factor  # e·factor <= 2^32: exact
    e >>= 32 - out_bits
    return e.astype(np.int32), 2.0**-out_bits


def int_erf(q: ArrayLike, scale: float) -> tuple[np.ndarray, float]:
    """i-erf: ``(q_out int32, S_out)`` with ``S_out·q_out ≈ erf(scale·q)`` (note: S_out < 0, as in I-BERT)."""
    S = _scale(scale)
    qa = _int32(q, "q")
    a, b, c = ERF_COEF
    q_abs = np.minimum(np.abs(qa), _floor_int(-b / S, "1.769 / scale", 31))
    q_l, s_l = int_poly2(q_abs, S, a, b, c)
    return _to_int32(np.sign(qa) * q_l, s_l)


def int_gelu(q: ArrayLike, scale: float) -> tuple[np.ndarray, float]:
    """i-GELU: ``(q_out int32, S_out)`` with ``S_out·q_out ≈ GELU(scale·q)``."""
    S = _scale(scale)
    qa = _owned_int64(q, "q")[0]  # one fresh int64 copy, worked on in place below
    a, b, c = ERF_COEF
    bound = _floor_int(-b / (S / math.sqrt(2)), "1.769·√2 / scale", 31)
    t = np.abs(qa, out=np.empty_like(qa))  # an array even for 0-d q
    qa_max = int(t.max()) if t.size else 0
    np.minimum(t, bound, out=t)  # |q| clipped at −b: erf is flat beyond
    s_erf = _poly2_scale(S / math.sqrt(2), a)
    q_b = _floor_int(b / (S / math.sqrt(2)), "b / scale", 31)
    q_c = _floor_int(c / s_erf, "c / (a·scale²)")
    # int_poly2 inlined: t + q_b lies in [q_b, bound + q_b] = [q_b, 0 or -1], so |t + q_b| <= |q_b| <= 2^31,
    # reaching 2^31 (int_poly2's bound check) only for q_b = -2^31 at some t = 0
    if q_b <= -(1 << 31) and t.size and int(t.min()) == 0:
        raise ValueError("i-poly leaves the int64 working range: the scale is too small for this function")
    t += q_b
    t *= t
    t += q_c
    t *= np.sign(qa)  # i-erf at full int64 precision (int_erf would requantize it)
    t += _floor_int(1 / s_erf, "1 / (erf's output scale)")
    if t.size and qa_max * max(int(t.max()), -int(t.min())) >= 1 << 62:  # Python ints: exact
        raise ValueError("i-GELU leaves the int64 working range: the scale is too small for this function")
    qa *= t
    return _to_int32(qa, S * s_erf / 2)


def isqrt(n: ArrayLike) -> np.ndarray:
    """``⌊√n⌋`` for non-negative integers (int64 array), by Newton's method from above (I-BERT Alg. 4)."""
    na = int_array(n, "n").astype(np.int64)
    if na.size and na.min() < 0:
        raise ValueError("n must be >= 0")
    nz = na > 0
    x = np.where(nz, np.int64(1) << ((_bit_length(na) + 1) // 2), 0)  # 2^ceil(bits/2) >= √n
    while True:
        y = np.where(nz, (x + na // np.maximum(x, 1)) // 2, 0)
        done = y >= x
        if done.all():
            return x
        x = np.where(done, x, y)


def int_layernorm(q: ArrayLike, scale: float, gamma: ArrayLike, beta: ArrayLike, *, axis: int =
                  -1) -> tuple[np.ndarray, np.ndarray]:
    """I-BERT integer LayerNorm over ``axis`` (the last by default).

    Parameters
    ----------
    q : int32 ndarray (..., n); scale : float
    gamma, beta : float arrays of shape (n,) — LayerNorm's affine parameters (gamma != 0)

    Returns
    -------
    q_out : int32 ndarray (..., n); scale_out : float64 ndarray (n,) — ``x̂ = q_out · scale_out``
    """
    _scale(scale)  # the normalised result does not depend on the input scale
    qa = _int32(q, "q")
    if qa.ndim == 0:
        raise ValueError("q: expected at least one dimension (the features), got a 0-d array")
    qa = np.moveaxis(qa, axis_index(axis, qa.ndim, data="q"), -1)
    n = qa.shape[-1]
    if n == 0:
        raise ValueError("q: LayerNorm over 0 features is undefined")
    g = finite_array(gamma, "gamma").astype(np.float64)
    bta = finite_array(beta, "beta").astype(np.float64)
    if g.shape != (n,) or bta.shape != (n,):
        raise ValueError(f"gamma and beta must have shape ({n},): the size of q along axis={axis}")
    if np.any(g == 0):
        raise ValueError("gamma must be non-zero (beta is folded in as beta / gamma)")
    if n >= 2**16:
        raise ValueError("q: LayerNorm over >= 65536 features would overflow the int64 working range")
    y = n * qa - qa.sum(-1, keepdims=True)  # n·(q − mean), exactly: |y| < 2^48 (no rounded mean)
    ymax = int(np.abs(y).max(initial=0))
    up = max(0, 31 - ymax.bit_length())  # scale small y up: isqrt's floor then costs ~2^-31, not 1/σ_int
    y, ymax = y << up, ymax << up
    shift = max(0, (n.bit_length() + 2 * ymax.bit_length() - 61 + 1) // 2)  # Σ (y >> shift)² < 2^62
    var = ((y >> shift) ** 2).sum(-1, keepdims=True)  # < 2^62: no overflow
    std = np.maximum(isqrt(var) << shift, 1)  # ≈ sqrt(Σ y²) = n·√n·σ
    factor = (np.int64(1) << 61) // std  # one division per row; std >= max|y| keeps |y·factor| <= 2^61
    out = (y * factor) >> 31  # y / std · 2^30 = (q − μ)/(√n σ) · 2^30: |out| <= 2^30
    s_norm = math.sqrt(n) / 2**30
    with np.errstate(over="ignore"):
        bias_f = np.floor(bta / g / s_norm)
    if not np.all(np.abs(bias_f) < 2.0**31):
        raise ValueError("beta, gamma: |beta / gamma| is too large for the int32 bias (over 2^31 output steps)")
    bias = bias_f.astype(np.int64)
    q_out, s_out = _to_int32(out + bias, s_norm)
    return np.moveaxis(q_out, -1, axis), s_out * g
