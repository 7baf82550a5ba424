"""Dynamic per-token quantization: one scale (and zero point) per row of the last axis, chosen at run time.

An activation ``x`` of shape (..., K) — K features per token — is quantized row by row, each row
``x_t`` with parameters chosen from that row alone, when the row is seen (no calibration)::

    lo_t, hi_t = min(x_t), max(x_t)                                            (1)
    scale_t, zero_point_t = qparams_from_range(lo_t, hi_t, qrange, symmetric)  (2)
    q_t = clamp(round_half_even(x_t / scale_t) + zero_point_t, qmin, qmax)     (3)
    x̂_t = scale_t · (q_t − zero_point_t)                                       (4)

(2) is :func:`refquant.core.uniform.qparams_from_range` and (3) is
:func:`refquant.core.uniform.quantize` (``scale_op="divide"``, ``zero_point_order="after_rounding"``):
the same equations as every other uniform quantizer in refquant, per token. Symmetric (the default,
LLM.int8()'s "vector-wise" activations)::

    scale_t = max(max|x_t| / (qmax − z), eps),   zero_point_t = z   (z = 0 signed, 128 for uint8)

so the row's largest magnitude lands exactly on ±qmax (±127 for int8: the code −128 is never used,
whether ``qrange`` is "int8" or "int8_narrow"). Affine: ``scale_t = max((hi_t' − lo_t') / (qmax − qmin),
eps)`` with the range widened to contain 0, ``zero_point_t = clamp(qmin − round_half_even(lo_t' /
scale_t), qmin, qmax)`` (ONNX DynamicQuantizeLinear's formula, per row instead of per tensor).

Rounding: half to even (``np.rint``), in the scale's dtype promoted with ``x``'s (float32 data and
float32 scales divide in float32). Saturation: codes clamp to [qmin, qmax]; with parameters chosen
from the row itself only float rounding of ``x / scale`` can reach past them.

Guard for all-zero (and tiny) rows: the one guard of refquant, ``qparams_from_range``'s floor
``scale_t >= eps`` (default float32 machine epsilon, 2^-23 ≈ 1.19e-7). An all-zero row gets scale
``eps`` and codes ``zero_point`` (x̂ = 0 exactly). A row with ``0 < max|x_t| < 127·eps`` (≈ 1.5e-5
for int8) is quantized with step ``eps``, coarser than ``max|x_t| / 127``.

±Inf and NaN are refused (ValueError): a row containing them has no finite range.

References
----------
Dettmers et al., "LLM.int8(): 8-bit Matrix Multiplication for Transformers at Scale", NeurIPS 2022,
§3.1 (vector-wise quantization: one absmax scale per row of X and per column of W).
ONNX operator spec DynamicQuantizeLinear (per-tensor uint8 affine, scale and zero point from the data).
PyTorch dynamic quantization (``torch.ao.nn.quantized.dynamic.Linear``: activation parameters chosen per
call) and ``torch/ao/quantization/fx/_decomposed.py: choose_qparams_per_token`` (absmax / 127 per token;
it floors max|x| at 1e-5 before dividing and multiplies by 1/scale, where refquant floors the scale at
eps and divides).
"""
from __future__ import annotations

import numpy as np

from ._checks import float_array
from .ranges import qrange as as_qrange
from .uniform import SYMMETRIC_DIVISORS, fake_quantize, qparams_from_range, quantize, quantize_ref
from ._types import ArrayLike, DTypeLike, QRangeLike

EPS = float(np.finfo(np.float32).eps)  # qparams_from_range's default floor on the scale


def _rows(x):
    """``x`` as a float array of shape (N, K), with the leading shape; checks named after ``x``."""
    xa = float_array(x, "x", check_nan=False)
    if xa.ndim == 0:
        raise ValueError("x: per-token quantization needs an array of shape (..., K), got a 0-d array")
    if xa.shape[-1] == 0:
        raise ValueError(f"x: the last axis (K features per token) is empty, shape {xa.shape}")
    if xa.size and not np.all(np.isfinite(xa)):
        if np.isnan(xa).any():
            raise ValueError("x contains NaN; NaN has no quantized value")
        raise ValueError("x contains ±Inf; a token with an infinite value has no finite range")
    return xa.reshape(-1, xa.shape[-1]), xa.shape[:-1]


def _options(qrange, symmetric_divisor, eps, dtype):
    """Checked ``(QRange, eps, float dtype)``; every error names its argument."""
    try:
        r = as_qrange(qrange)
    except ValueError as e:
        raise ValueError(str(e) if str(e).startswith("qrange") else f"qrange: {e}") from None
    if symmetric_divisor not in SYMMETRIC_DIVISORS:
        raise ValueError(f"symmetric_divisor: unknown {symmetric_divisor!r}; expected one of {SYMMETRIC_DIVISORS}")
    try:
        dt = np.dtype(dtype) if dtype is not None else None  # np.dtype(None) would silently mean float64
    except TypeError:
        raise TypeError(f"dtype: expected a float dtype, got {dtype!r}") from None
    if dt is None or dt.kind != "f":
        raise TypeError(f"dtype: expected a float dtype, got {dtype!r}")
    e = np.asarray(eps) if not isinstance(eps, (str, bytes)) else np.asarray(None)
    if e.ndim != 0 or e.dtype.kind not in "iuf":
        raise TypeError(f"eps: expected a real scalar, got {eps!r}")
    if not 0 < float(e) <= float(np.finfo(dt).max):
        raise ValueError(f"eps must be finite and > 0 in {dt}, got {eps!r}")
    return r, float(e), dt


def _qparams(x2, qrange, symmetric, symmetric_divisor, eps, dtype):
    """(scale, zero_point) of shape (N,) for the rows of ``x2`` (N, K)."""
    qrange, eps, dtype = _options(qrange, symmetric_divisor, eps, dtype)
    lo = x2.min(axis=1) if x2.shape[0] else np.zeros(0, x2.dtype)  # (N,)
    hi = x2.max(axis=1) if x2.shape[0] else np.zeros(0, x2.dtype)
    try:
        with np.errstate(over="ignore"):  # float64 ranges beyond the scale's dtype become inf: refused
            return qparams_from_range(lo, hi, qrange, symmetric=symmetric,
                                      symmetric_divisor=symmetric_divisor, eps=eps, dtype=dtype.type)
    except ValueError as e:
        if str(e).startswith(("lo", "hi")):  # the rows' ranges are the user's x
            raise ValueError(f"x: a token's range does not give a finite scale in {dtype.name} ({e})") from None
        raise


def per_token_qparams(x: ArrayLike, qrange: QRangeLike = "int8", *, symmetric: bool = True,
                      symmetric_divisor: str = "qmax", eps: float = EPS, dtype: DTypeLike =
                      np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Per-token ``(scale, zero_point)`` of ``x`` (..., K): equations (1)-(2) of the module docstring.

    Returns
    -------
    scale : ndarray of ``dtype``, shape (...,)
    zero_point : ndarray of int32, shape (...,)
    """
    x2, lead = _rows(x)
    s, z = _qparams(x2, qrange, symmetric, symmetric_divisor, eps, dtype)
    return s.reshape(lead), z.reshape(lead)


def quantize_per_token(x: ArrayLike, qrange: QRangeLike = "int8", *, symmetric: bool = True,
                       symmetric_divisor: str = "qmax", eps: float = EPS, dtype: DTypeLike =
                       np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantize each token (row of the last axis) with its own scale: equations (1)-(3).

    Parameters
    ----------
    x : ndarray of float, shape (..., K)
        Activations: K features per token; leading axes (batch, time, ...) are tokens.
    qrange : str, (int, int) or QRange, default "int8"
    symmetric : bool, default True
        True: zero point fixed (0 for signed ranges), scale from max|x_t| (LLM.int8()). False: affine,
        scale and zero point from [min(x_t), max(x_t)] (ONNX DynamicQuantizeLinear, per row).
    symmetric_divisor : {"qmax", "half_range"}
        Symmetric only: max|x_t| maps to qmax ("qmax", default) or to (qmax − qmin) / 2 (PyTorch observers).
    eps : float, default float32 epsilon
        Floor on every scale: the guard for all-zero rows.
    dtype : float dtype of the scales, default float32 (what runtimes store)

    Returns
    -------
    q : ndarray of ``qrange.dtype``, shape (..., K)
    scale : ndarray of ``dtype``, shape (...,)
    zero_point : ndarray of int32, shape (...,) — 0 everywhere for symmetric signed ranges

    Examples
    --------
    >>> q, s, z = quantize_per_token(np.array([[63.5, 0.25, -0.75, 1.25]], np.float32))
    >>> q.tolist(), s.tolist(), z.tolist()  # scale 63.5 / 127 = 0.5; 0.5 -> 0, -1.5 -> -2, 2.5 -> 2
    ([[127, 0, -2, 2]], [0.5], [0])
    """
    x2, lead = _rows(x)
    s, z = _qparams(x2, qrange, symmetric, symmetric_divisor, eps, dtype)  # (N,)
    q = quantize(x2, s, z, qrange, axis=0)  # (N, K)
    return q.reshape(np.shape(x)), s.reshape(lead), z.reshape(lead)


def fake_quantize_per_token(x: ArrayLike, qrange: QRangeLike = "int8", *, symmetric: bool = True,
                            symmetric_divisor: str = "qmax", eps: float = EPS, dtype: DTypeLike =
                            np.float32) -> np.ndarray:
    """Quantize then dequantize each token: ``x̂_t = scale_t · (q_t − zero_point_t)``, equations (1)-(4).

    Same arguments as :func:`quantize_per_token`. Returns an array of shape (..., K) in the working
    dtype of :func:`refquant.core.uniform.fake_quantize` (float32 for float32 ``x`` and scales).

    With the defaults this equals, for float32 ``x``, bit for bit, the per-token W8A8 recipe
    ``fake_quantize(x, max(max|x_t|, 1e-8) / 127, 0, "int8", axis=0)`` on every row with
    max|x_t| >= 127·eps (≈ 1.5e-5) and on all-zero rows; rows in between differ by the guard.
    """
    x2, _ = _rows(x)
    s, z = _qparams(x2, qrange, symmetric, symmetric_divisor, eps, dtype)  # (N,)
    return fake_quantize(x2, s, z, qrange, axis=0).reshape(np.shape(x))


def quantize_per_token_ref(x: ArrayLike, qrange: QRangeLike = "int8", *, symmetric: bool = True,
                           symmetric_divisor: str = "qmax", eps: float = EPS, dtype: DTypeLike =
                           np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loop twin of :func:`quantize_per_token`: one token at a time, the row range found by a Python loop,
    the parameters written out in scalar ``dtype`` arithmetic, and :func:`refquant.core.uniform.quantize_ref`
    (exact rational rounding) for the codes. Shares only argument checking with the vectorised code."""
    r, eps, dtype = _options(qrange, symmetric_divisor, eps, dtype)
    x2, lead = _rows(x)
    f = dtype.type
    n = x2.shape[0]
    q = np.empty(x2.shape, r.dtype)
    scale = np.empty(n, dtype)
    zero_point = np.empty(n, np.int32)
    for t in range(n):
        lo = hi = f(0)  # the range always contains 0
        with np.errstate(over="ignore"):  # float64 data beyond float32: inf, refused below
            for v in x2[t]:
                lo, hi = min(lo, f(v)), max(hi, f(v))
            if symmetric:
                z = 0 if r.signed else (r.qmin + r.qmax + 1) // 2
                div = f(r.qmax - z) if symmetric_divisor == "qmax" else f((r.qmax - r.qmin) / 2)
                s = max(max(-lo, hi) / div, f(eps))
            else:
                s = max((hi - lo) / f(r.qmax - r.qmin), f(eps))
        if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(s)):
            raise ValueError(f"x: a token's range does not give a finite scale in {np.dtype(dtype).name}")
        if not symmetric:
            z = min(max(r.qmin - round(float(lo / s)), r.qmin), r.qmax)  # Python round: half to even
        scale[t], zero_point[t] = s, z
        q[t] = quantize_ref(x2[t], s, z, r)
    return q.reshape(np.shape(x)), scale.reshape(lead), zero_point.reshape(lead)
