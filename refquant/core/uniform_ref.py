"""Loop twins of the uniform quantizer: ``quantize_ref`` and ``dequantize_ref``, one element at a time.

They share only argument checking with :mod:`refquant.core.uniform`: the parameter lookup
(``i // block_size``), the rounding (:func:`refquant.core.rounding.round_scalar_ref`, exact rational)
and the zero point and clamp (Python integers) are written independently, so that the vectorised
``quantize`` / ``dequantize`` can be required to equal them bit for bit (tolerance 0). Both are
re-exported from :mod:`refquant.core.uniform`.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from ._checks import int_array, positive_scale
from ._types import ArrayLike, QRangeLike
from .granularity import check_param
from .qparams import _buffer_dtype, _prepare
from .rounding import round_scalar_ref


def _check_bool(v: object, name: str) -> None:
    if not isinstance(v, (bool, np.bool_)):
        raise ValueError(f"{name} must be a bool, got {v!r}")


def quantize_ref(x: ArrayLike, scale: ArrayLike, zero_point: ArrayLike = 0, qrange: QRangeLike = "int8", *,
                 axis: int | None = None, block_size: int = 0, rounding: str = "half_even",
                 rng: np.random.Generator | None = None, scale_op: str = "divide",
                 zero_point_order: str = "after_rounding", saturate: bool = True) -> np.ndarray:
    """Slow loop twin of :func:`refquant.core.uniform.quantize`: one element at a time, exact rational
    rounding, then the zero point and the clamp on Python integers (an integer oracle for 32-bit ranges too).

    Shares only argument checking with ``quantize``; the parameter lookup (``i // block_size``)
    and the rounding (:func:`refquant.rounding.round_scalar_ref`) are written independently.
    """
    r, xa, wd, s, zp = _prepare(x, scale, zero_point, qrange, axis, block_size, rounding, rng,
                                scale_op, zero_point_order)
    _check_bool(saturate, "saturate")
    bd = _buffer_dtype(wd, r).type  # the buffer dtype matters only to "before_rounding"'s sum
    q = np.empty(xa.shape, dtype=r.dtype)
    a = None if axis is None else axis % xa.ndim
    for idx in np.ndindex(xa.shape):
        if a is None:
            pidx = ()
        elif not block_size:
            pidx = (idx[a],)
        else:
            pidx = idx[:a] + (idx[a] // block_size,) + idx[a + 1:]
        zi = int(zp[pidx]) if zp.ndim else int(zp)
        with np.errstate(over="ignore"):
            xi, si = wd.type(xa[idx]), wd.type(s[pidx])
            v = bd(xi / si if scale_op == "divide" else xi * si)
        if np.isnan(v):
            raise ValueError("x contains NaN; NaN has no quantized value")
        draw = rng.random() if rounding == "stochastic" else None
        if zero_point_order == "before_rounding":
            k = round_scalar_ref(v + bd(zi), rounding, draw)
        else:
            k = round_scalar_ref(v, rounding, draw) + zi
        if not saturate and not r.qmin <= k <= r.qmax:
            raise ValueError(f"x: a value's code lies outside {r} (saturate=False), got {k}")
        q[idx] = min(max(k, r.qmin), r.qmax)
    return q


def dequantize_ref(q: ArrayLike, scale: ArrayLike, zero_point: ArrayLike = 0, *, axis: int | None = None,
                   block_size: int = 0) -> np.ndarray:
    """Loop twin of :func:`refquant.core.uniform.dequantize`: the exact rational product, rounded by comparing
    it with the two nearest values of the dtype (``fractions.Fraction``; ties to the even significand)."""
    qa = int_array(q, "q")
    sd = np.float32 if type(scale) in (float, int) else None
    s = check_param(positive_scale(scale, "scale", sd), qa.shape, axis, block_size, "scale", "q")
    zp = np.asarray(0 if zero_point is None else zero_point)
    dt = s.dtype.type
    out = np.empty(qa.shape, dtype=s.dtype)
    a = None if axis is None else axis % qa.ndim
    for idx in np.ndindex(qa.shape):
        pidx = () if a is None else ((idx[a],) if not block_size else idx[:a] + (idx[a] // block_size,) + idx[a + 1:])
        zi = int(zp[pidx]) if zp.ndim else int(zp)
        exact = Fraction(int(qa[idx]) - zi) * Fraction(float(s[pidx] if s.ndim else s))
        with np.errstate(over="ignore"):
            c = dt(float(exact))
            cands = [np.nextafter(c, dt(-np.inf)), c, np.nextafter(c, dt(np.inf))]
        cands = [v for v in cands if np.isfinite(v)]
        best = min(abs(Fraction(float(v)) - exact) for v in cands)
        ties = [v for v in cands if abs(Fraction(float(v)) - exact) == best]
        out[idx] = ties[0] if len(ties) == 1 else next(v for v in ties if int(v.view(f"u{v.itemsize}")) % 2 == 0)
    return out
