"""Argument handling shared by the quantizers' gradients (:mod:`.ste`, :mod:`.lsq`, :mod:`.pact`):
the working dtype, ``dy`` checked against ``x``, parameters broadcast per granularity, and the sums
that reduce per-element gradient terms to one value per parameter.

Sums are added in float64 from the first element of each group to the last (C order) and rounded
once to the working dtype, so the loop twins, which add in that order, agree to the last bit.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core._checks import float_array, int_array, positive_scale, real_value, to_float
from ..core.granularity import align, check_param, from_groups, param_shape, to_groups
from ..core._types import ArrayLike
from ..core.ranges import QRange


def working_dtype(xa: np.ndarray, *params: object) -> np.dtype:
    """``x``'s dtype promoted with every array parameter's float dtype (a Python number is "weak" and
    takes ``x``'s dtype, as in :mod:`refquant.core.uniform`); float16 computes in float32."""
    wd = xa.dtype
    for p in params:
        if p is None or type(p) in (float, int):
            continue
        pd = np.asarray(p).dtype
        if pd.kind == "f":
            wd = np.result_type(wd, pd)
    return np.promote_types(wd, np.float32)


def x_array(x: ArrayLike) -> np.ndarray:
    """``x`` as a float array; ±Inf allowed (it saturates), NaN refused."""
    return float_array(x, "x")


def dy_array(dy: ArrayLike, xa: np.ndarray, wd: np.dtype) -> np.ndarray:
    """``dy`` of ``x``'s shape, in the working dtype, finite after the conversion."""
    d = float_array(dy, "dy")
    if d.shape != xa.shape:
        raise ValueError(f"dy has shape {d.shape}; expected x's shape {xa.shape}")
    d = to_float(d, wd, "dy")
    if d.size and not np.all(np.isfinite(d)):
        raise ValueError("dy must be finite (got ±Inf)")
    return d


def real_scalar(v: object, name: str, wd: np.dtype, lo: float | None = None, lo_open: bool = False) -> np.floating:
    """A real number (finite, optionally > lo) as a ``wd`` scalar, finite after the conversion."""
    f = real_value(v, name, lo, lo_open=lo_open)
    with np.errstate(over="ignore"):
        w = wd.type(f)
    if not np.isfinite(w):
        raise ValueError(f"{name} must be finite in {np.dtype(wd).name}, got {v!r}")
    return w


def scale_param(scale: ArrayLike, shape: tuple, axis: int | None, block_size: int, wd: np.dtype) -> np.ndarray:
    """``scale`` in ``wd``, finite and > 0, of :func:`refquant.core.granularity.param_shape`."""
    return check_param(positive_scale(scale, "scale", wd), shape, axis, block_size, "scale")


def zero_point_param(zero_point: ArrayLike, shape: tuple, axis: int | None, block_size: int, r: QRange) -> np.ndarray:
    """An integer zero point (scalar, or of the parameter shape) inside the code range ``r``."""
    z = int_array(zero_point, "zero_point", r.qmin, r.qmax, f" (the codes of {r})")
    if z.ndim == 0 or (axis is None and z.size == 1):
        return z.reshape(()).astype(np.int64)
    return check_param(z, shape, axis, block_size, "zero_point").astype(np.int64)


def real_param(p: ArrayLike, name: str, shape: tuple, axis: int | None, block_size: int, wd: np.dtype) -> np.ndarray:
    """A finite real parameter (an offset) as a scalar or of the parameter shape, in ``wd``."""
    a = to_float(float_array(p, name), wd, name)
    if a.size and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite in {np.dtype(wd).name}")
    if a.ndim == 0 or (axis is None and a.size == 1):
        return a.reshape(())
    return check_param(a, shape, axis, block_size, name)


def views(xa: np.ndarray, params: Sequence[ArrayLike], axis: int | None, block_size: int) -> tuple:
    """``align``: views of ``x`` and of each parameter that broadcast (reshape results with ``x.shape``)."""
    return align(xa, [np.asarray(p) for p in params], axis, block_size)


def group_sum(t: np.ndarray, shape: tuple, axis: int | None, block_size: int, wd: np.dtype) -> np.ndarray:
    """Σ of the per-element terms ``t`` (shape of x) over each parameter's elements, in float64, in
    C order within each group; returns an array of the parameter shape in ``wd``."""
    pshape = param_shape(shape, axis, block_size, data="x")
    if t.size == 0:
        return np.zeros(pshape, wd)
    rows = to_groups(t.astype(np.float64), axis, block_size)  # partial blocks padded with NaN
    rows = np.where(np.isnan(rows), 0.0, rows)                # the padding adds nothing
    sums = np.cumsum(rows, axis=1)[:, -1] + 0.0               # first to last, from +0: as the loop twin
    return from_groups(sums, shape, axis, block_size).reshape(pshape).astype(wd)


def param_index(idx: tuple, axis: int | None, block_size: int) -> tuple:
    """Index into the parameter array for the element at ``idx`` (loop twins)."""
    if axis is None:
        return ()
    a = axis % len(idx)
    if not block_size:
        return (idx[a],)
    return idx[:a] + (idx[a] // block_size,) + idx[a + 1:]
