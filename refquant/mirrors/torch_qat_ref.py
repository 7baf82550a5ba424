"""Loop twins of :mod:`refquant.mirrors.torch_qat` and :mod:`refquant.mirrors.torch_lsq`: one element
at a time, the kernels' scalar loops written out, every fused multiply-add computed in exact
rationals and rounded once (independently of :func:`refquant.mirrors.fp32.fma_float32`), sums
accumulated in a Python float in C order. The tests require them to equal the vectorised mirrors
bit for bit.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from ..core._checks import int_value
from .torch_lsq import _zero_point_backward_per_tensor
from .torch_qat import (F32, _axis, _cachemask_channel_args, _dy, _float_zero_point, _grad_factor, _range, _scale,
                        _x)
from ..core._types import ArrayLike
def _fl(v) -> F32:
    """A rational rounded to the nearest float32, ties to even, ±Inf beyond the range (exact)."""
    v = Fraction(v)
    c = F32(float(v)) if abs(v) < 2 ** 128 else F32(np.inf if v > 0 else -np.inf)
    if not np.isfinite(c):
        return c
    best = c
    for n in (np.nextafter(c, F32(np.inf)), np.nextafter(c, F32(-np.inf))):
        if not np.isfinite(n):
            continue
        dn, db = abs(Fraction(float(n)) - v), abs(Fraction(float(best)) - v)
        if dn < db or (dn == db and int(n.view(np.uint32)) % 2 == 0):
            best = n
    return best


def _fma_ref(a, b, c) -> F32:
    """``a · b + c`` of three float32 values, rounded once: exact rationals, then :func:`_fl`."""
    if not (np.isfinite(a) and np.isfinite(b) and np.isfinite(c)):
        return F32(F32(a) * F32(b) + F32(c))  # Inf arithmetic: no rounding left to do
    return _fl(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def _learnable_ref(d, xa, s, z, axis, lo, hi, g):
    """One element at a time: (G3)-(G5) written out as the kernel's scalar loop, sums in a Python float."""
    dx, dsv, dzv = (np.empty(xa.shape, F32) for _ in range(3))
    for idx in np.ndindex(xa.shape):
        si, zi = (s, z) if axis is None else (s[idx[axis]], z[idx[axis]])
        inv = F32(1) / si
        k = np.rint(_fma_ref(xa[idx], inv, zi))
        kc = min(max(float(k), lo), hi)
        dx[idx] = d[idx] * F32(lo <= k <= hi)
        if lo <= k <= hi:
            diff = _fma_ref(F32(F32(kc) - zi), si, -xa[idx])
            dsv[idx], dzv[idx] = d[idx] * diff * inv * g, F32(0)
        else:
            dsv[idx] = d[idx] * (F32(lo) - zi if k < lo else F32(hi) - zi) * g
            dzv[idx] = -d[idx] * si * g
    return dx, dsv, dzv


def fake_quantize_per_tensor_affine_backward_ref(dy: ArrayLike, x: ArrayLike, scale: float, zero_point: float,
                                                 quant_min: int, quant_max: int) -> np.ndarray:
    """Loop twin of :func:`fake_quantize_per_tensor_affine_backward`."""
    lo, hi = _range(quant_min, quant_max)
    z = int_value(zero_point, "zero_point", lo, hi)
    s = _scale(scale, "scale", ())
    xa = _x(x)
    d = _dy(dy, xa.shape)
    out = np.empty(xa.shape, F32)
    for idx in np.ndindex(xa.shape):
        with np.errstate(over="ignore"):
            k = F32(z) + np.rint(xa[idx] * (F32(1) / s))
        out[idx] = d[idx] * F32(F32(lo) <= k <= F32(hi))
    return out


def fake_quantize_per_channel_affine_backward_ref(dy: ArrayLike, x: ArrayLike, scale: ArrayLike,
                                                  zero_point: ArrayLike, axis: int, quant_min: int, quant_max:
                                                  int) -> np.ndarray:
    """Loop twin of :func:`fake_quantize_per_channel_affine_backward` (fused multiply-add by exact rationals)."""
    lo, hi, xa, a, s, zp, d = _cachemask_channel_args(dy, x, scale, zero_point, axis, quant_min, quant_max)
    out = np.empty(xa.shape, F32)
    for idx in np.ndindex(xa.shape):
        c = idx[a]
        inv = F32(1) / s[c]
        with np.errstate(over="ignore"):
            if zp.dtype.kind in "iu":
                k = float(F32(zp[c]) + np.rint(xa[idx] * inv))
            else:
                k = float(np.rint(_fma_ref(xa[idx], inv, F32(zp[c]))))
        out[idx] = d[idx] * F32(lo <= k <= hi)
    return out


def fake_quantize_learnable_per_tensor_affine_backward_ref(dy: ArrayLike, x: ArrayLike, scale: ArrayLike,
                                                           zero_point: ArrayLike, quant_min: int, quant_max: int,
                                                           grad_factor: float = 1.0, *, reduce: bool =
                                                           True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loop twin of :func:`fake_quantize_learnable_per_tensor_affine_backward`."""
    lo, hi = _range(quant_min, quant_max, learnable=True)
    g = _grad_factor(grad_factor)
    s = F32(_scale(scale, "scale", ()))
    zb = F32(_zero_point_backward_per_tensor(_float_zero_point(zero_point, ()), lo, hi))
    xa = _x(x)
    dx, ds, dz = _learnable_ref(_dy(dy, xa.shape), xa, s, zb, None, lo, hi, g)
    if not reduce:
        return dx, ds, dz
    return dx, np.array([sum(float(t) for t in ds.reshape(-1))], F32), np.array([sum(float(t) for t in dz.reshape(-1))], F32)


def fake_quantize_learnable_per_channel_affine_backward_ref(dy: ArrayLike, x: ArrayLike, scale: ArrayLike,
                                                            zero_point: ArrayLike, axis: int, quant_min: int,
                                                            quant_max: int, grad_factor: float = 1.0, *,
                                                            reduce: bool =
                                                            True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loop twin of :func:`fake_quantize_learnable_per_channel_affine_backward`."""
    lo, hi = _range(quant_min, quant_max, learnable=True)
    g = _grad_factor(grad_factor)
    xa = _x(x)
    a = _axis(axis, xa.shape)
    s = _scale(scale, "scale", (xa.shape[a],))
    z = np.array([min(max(float(np.rint(v)), lo), hi) for v in _float_zero_point(zero_point, (xa.shape[a],))], F32)
    dx, ds, dz = _learnable_ref(_dy(dy, xa.shape), xa, s, z, a, lo, hi, g)
    if not reduce:
        return dx, ds, dz
    acc_s, acc_z = np.zeros(xa.shape[a]), np.zeros(xa.shape[a])
    for idx in np.ndindex(xa.shape):
        acc_s[idx[a]] += float(ds[idx])
        acc_z[idx[a]] += float(dz[idx])
    return dx, acc_s.astype(F32), acc_z.astype(F32)
