"""Parameters of the uniform quantizer: chosen from a range, or checked and brought to the working dtype.

:func:`qparams_from_range` computes ``scale`` and ``zero_point`` from a real range (the calibrators
in :mod:`refquant.core.observers` produce the range). The private helpers below check the arguments
every function of :mod:`refquant.core.uniform` takes and fix the two dtypes that function computes in:

* the *working dtype*, in which ``x / scale`` is rounded: NumPy's promotion of ``x`` and ``scale``,
  a Python-float scale taking ``x``'s dtype (NEP 50: float32 data and ``scale=0.1`` compute in
  float32, as ONNX does with float32 tensors);
* the *buffer dtype*, in which the quotient is rounded, shifted by the zero point and clamped: the
  working dtype promoted to at least float32 (float16 quotients round in float32), and float64 when
  the range has codes beyond the float32 significand (|q| > 2^24: ``int32``, ``uint32``, a 31-bit
  residual range). Every code of a range of up to 32 bits is exact in float64, so clamping there
  with scalar bounds and casting to the range's dtype never rounds a code nor wraps it.

The module is the "parameters" half of the uniform quantizer; :mod:`refquant.core.uniform`
re-exports every public name, so ``refquant.core.uniform.qparams_from_range`` still works.

References
----------
Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", CVPR 2018, section 3 (range including zero, nudged zero point).
PyTorch ``torch/ao/quantization/observer.py: UniformQuantizationObserverBase._calculate_qparams``.
"""
from __future__ import annotations

import numpy as np

from ._checks import choice, finite_array, float_array, int_array, positive_scale, real_value
from ._types import ArrayLike, DTypeLike, QRangeLike
from .granularity import check_param
from .ranges import QRange, qrange as as_qrange
from .rounding import ROUNDING_MODES

SCALE_OPS = ("divide", "multiply_reciprocal")
ZERO_POINT_ORDERS = ("after_rounding", "before_rounding")
SYMMETRIC_DIVISORS = ("qmax", "half_range")


def qparams_from_range(lo: ArrayLike, hi: ArrayLike, qrange: QRangeLike = "int8", *, symmetric: bool = False,
                       symmetric_divisor: str = "qmax", eps: float = float(np.finfo(np.float32).eps),
                       dtype: DTypeLike = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point that map the real range [lo, hi] onto ``qrange``.

    The range is first widened to contain 0: ``lo' = min(lo, 0)``, ``hi' = max(hi, 0)``.

    Affine::

        scale      = max((hi' - lo') / (qmax - qmin), eps)
        zero_point = clamp(qmin - round_half_even(lo' / scale), qmin, qmax)

    Symmetric (``amax = max(-lo', hi')``, zero point fixed)::

        zero_point = 0 for signed types, (qmin + qmax + 1) // 2 for unsigned (128 for uint8)
        scale      = max(amax / divisor, eps)
        divisor    = qmax - zero_point       ("qmax":  amax lands exactly on qmax; 127 for int8;
                                               TFLite, TensorRT)
                   = (qmax - qmin) / 2        ("half_range": 127.5 for int8; PyTorch observers,
                                               which therefore clip +amax by up to half a step)

    ``eps`` floors the scale so that constant (even all-zero) tensors get a valid scale.
    Arithmetic is in ``dtype`` (float32: what every runtime stores), the divisor included: for ranges
    of more than 2^24 levels (``int32``) a float32 divisor is rounded (2^32 − 1 becomes 2^32), and a
    float32 scale carries 24 bits anyway, so ``hi`` lands within about 2^(b−24) codes of qmax; pass
    ``dtype=np.float64`` for an exact placement. The zero point's clamp is exact in float64.

    Parameters
    ----------
    lo, hi : float or ndarray of the parameter shape (see :mod:`refquant.core.granularity`)
    qrange : str, (qmin, qmax) or QRange
    symmetric : bool
    symmetric_divisor : {"qmax", "half_range"}
    eps : float
    dtype : float dtype of the returned scale

    Returns
    -------
    scale : ndarray of ``dtype``, shape of ``lo``
    zero_point : ndarray of int32 (int64 for ranges with codes above 2^31 − 1, e.g. ``uint32``), shape of ``lo``

    References
    ----------
    Jacob et al. 2018, section 3 ("the range [a, b] ... nudged so that 0 is exactly representable").
    PyTorch ``torch/ao/quantization/observer.py: UniformQuantizationObserverBase._calculate_qparams``.
    """
    r = as_qrange(qrange)
    if not isinstance(dtype, (type, np.dtype, str)) or np.dtype(dtype).type not in (np.float16, np.float32, np.float64):
        raise ValueError(f"dtype must be float16, float32 or float64, got {dtype!r}")
    dtype = np.dtype(dtype).type
    lo = finite_array(lo, "lo", dtype, "the range must be finite")
    hi = finite_array(hi, "hi", dtype, "the range must be finite")
    if lo.shape != hi.shape:
        raise ValueError(f"lo and hi must have the same shape, got {lo.shape} and {hi.shape}")
    if np.any(lo > hi):
        raise ValueError("lo, hi: lo must be <= hi everywhere")
    choice(symmetric_divisor, "symmetric_divisor", SYMMETRIC_DIVISORS)
    # eps is checked in the dtype it is used in: 1e-50 is > 0 as a Python float but 0 in float32
    e = real_value(eps, "eps")
    with np.errstate(over="ignore", under="ignore"):
        if not (np.isfinite(dtype(e)) and dtype(e) > 0):
            raise ValueError(f"eps must be finite and > 0 in {np.dtype(dtype).name}, got {eps!r}")
    zdt = np.int32 if r.qmax <= 2**31 - 1 else np.int64
    lo0 = np.minimum(lo, dtype(0))
    hi0 = np.maximum(hi, dtype(0))
    with np.errstate(over="ignore"):
        if symmetric:
            z = 0 if r.signed else (r.qmin + r.qmax + 1) // 2
            amax = np.maximum(-lo0, hi0)
            div = (r.qmax - z) if symmetric_divisor == "qmax" else (r.qmax - r.qmin) / 2
            scale = np.maximum(amax / dtype(div), dtype(e))
            zero_point = np.full(lo.shape, z, dtype=zdt)
        else:
            scale = np.maximum((hi0 - lo0) / dtype(r.qmax - r.qmin), dtype(e))
            # qmin − k and the clamp in float64: exact for every code of a 32-bit range (in the dtype,
            # 2^31 − 1 would round to 2^31 and wrap in the cast); for a narrower range an exact
            # difference clamps to what the dtype's rounded difference clamped to (rounding is monotone)
            k = np.rint(lo0 / scale).astype(np.float64)
            zero_point = np.clip(r.qmin - k, r.qmin, r.qmax).astype(zdt)
    if not np.all(np.isfinite(scale)):
        raise ValueError("lo, hi: the range is too wide for a finite scale in " + np.dtype(dtype).name)
    return scale.astype(dtype), zero_point


def _working_dtype(xa: np.ndarray, scale) -> np.dtype:
    if type(scale) in (float, int):  # not np.float64, which subclasses float but is "strong"
        return xa.dtype  # a Python scalar is "weak" (NEP 50): it takes the data's dtype
    sd = np.asarray(scale).dtype
    return np.result_type(xa.dtype, sd) if sd.kind == "f" else xa.dtype


def _buffer_dtype(wd: np.dtype, r: QRange) -> np.dtype:
    """Where the quotient is rounded, shifted and clamped (module docstring): exact for every code of ``r``."""
    bd = np.promote_types(wd, np.float32)  # float32 or float64
    if bd == np.float32 and max(-r.qmin, r.qmax) > 2**24:
        bd = np.dtype(np.float64)  # codes of up to 32 bits: exact below 2^53
    return bd


def _zero_point(zero_point, shape, axis, block_size, r: QRange | None = None, data: str = "x") -> np.ndarray:
    """Zero point as int64: 0-d when shared by all elements, else of the parameter shape.

    The range check compares exact integers before the cast, so no value wraps (uint64 2^64 − 1
    is refused, not read as −1): inside ``r`` when given, else inside int64.
    """
    zp = np.asarray(0 if zero_point is None else zero_point)
    if zp.dtype.kind not in "iu":
        raise ValueError(f"zero_point: expected an integer, got dtype {zp.dtype}")
    if zp.ndim == 0 or (axis is None and zp.size == 1):
        zp = zp.reshape(())
    else:
        zp = check_param(zp, shape, axis, block_size, "zero_point", data)
    if r is not None:
        int_array(zp, "zero_point", r.qmin, r.qmax, f" (qrange {r})")
    else:
        int_array(zp, "zero_point", -2**63, 2**63 - 1, " (int64)")
    return zp.astype(np.int64)


def _prepare(x, scale, zero_point, qrange, axis, block_size, rounding, rng, scale_op, zero_point_order):
    """Checked arguments of :func:`refquant.core.uniform.quantize` and its twin: ``(r, x, wd, s, zp)``
    with ``s`` the scale (or its reciprocal, rounded to ``wd``) and ``zp`` int64, both of the parameter shape."""
    r = as_qrange(qrange)
    choice(rounding, "rounding", ROUNDING_MODES)
    choice(scale_op, "scale_op", SCALE_OPS)
    choice(zero_point_order, "zero_point_order", ZERO_POINT_ORDERS)
    if rounding == "stochastic" and not isinstance(rng, np.random.Generator):
        raise ValueError("rng: stochastic rounding needs an explicit numpy.random.Generator")
    xa = float_array(x, "x", check_nan=False)
    wd = _working_dtype(xa, scale)
    s = check_param(positive_scale(scale, "scale", wd), xa.shape, axis, block_size, "scale", "x")
    zp = _zero_point(zero_point, xa.shape, axis, block_size, r)
    if scale_op == "multiply_reciprocal":
        with np.errstate(over="ignore"):
            s = np.divide(wd.type(1), s, dtype=wd)  # the reciprocal, rounded to the working dtype
        if not np.all(np.isfinite(s)):
            raise ValueError(f"scale: 1/scale overflows {wd.name}; the scale is too small for scale_op='multiply_reciprocal'")
    return r, xa, wd, s, zp
