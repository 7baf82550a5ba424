"""PyTorch's fake-quantize backward passes in NumPy, bit-exact against PyTorch 2.13 CPU, and the
argument checks shared with :mod:`refquant.mirrors.torch_lsq` (PyTorch's learnable fake quantizers).

``fl`` rounds to float32, ``fma(a, b, c)`` is ``a·b + c`` rounded once (the compiler contracts the
float-zero-point kernel's ``zero_point + x * inv_scale`` into a fused multiply-add: measured on the
2.13.0 wheel, AVX2 kernels), ``rne`` rounds half to even, ``inv = fl(1 / fl(scale))``.

Fake quantize (``torch.fake_quantize_per_tensor_affine`` / ``_per_channel_affine``), straight-through::

    k  = z + rne(fl(x · inv))                                  the code before the clamp   (G1)
    dx = dy · [quant_min ≤ k ≤ quant_max]                      the mask the forward saves  (G2)

— the window is on the *rounded* code, so it reaches half a step beyond the clamp range on each side
(x/s + z = quant_max + 0.5 passes when the tie rounds down). Float zero points (per channel only,
``per_channel_affine_float_qparams``): ``k = rne(fma(x, inv, z))``.

Where refquant differs on purpose: NaN in ``x`` raises (PyTorch masks its gradient to 0); non-finite
``dy`` raises; the scale must be finite and > 0; codes are at most 16 bits wide (``quant_min``,
``quant_max``).

References
----------
PyTorch ``aten/src/ATen/native/quantized/FakeQuantPerTensorAffine.cpp:
fake_quantize_per_tensor_affine_cachemask_backward``; ``FakeQuantPerChannelAffine.cpp:
fake_quantize_per_channel_affine_cachemask_backward``; ``cpu/kernels/QuantizedOpKernels.cpp:
_fake_quantize_tensor_helper, _fake_quant_per_channel_cachemask_cpu_helper``.
"""
from __future__ import annotations

import numpy as np

from ..core._checks import float_array, int_value, real_value
from ..core.ranges import qrange as as_qrange
from .fp32 import fma_float32
from ..core._types import ArrayLike

F32 = np.float32


# ------------------------------------------------------------------------------------------ checks
def _range(quant_min, quant_max, *, learnable: bool = False) -> tuple[int, int]:
    lo, hi = int_value(quant_min, "quant_min"), int_value(quant_max, "quant_max")
    if lo > hi:
        raise ValueError(f"quant_min ({lo}) > quant_max ({hi})")
    try:
        as_qrange((lo, hi))  # refquant's codes are at most 16 bits wide
    except ValueError as e:
        raise ValueError(f"quant_min, quant_max: {e}") from None
    if learnable and not lo <= 0 <= hi:
        raise ValueError(f"quant_min, quant_max: the learnable backward needs quant_min <= 0 <= quant_max "
                         f"(PyTorch's check), got [{lo}, {hi}]")
    return lo, hi


def _grad_factor(grad_factor) -> F32:
    g = real_value(grad_factor, "grad_factor")
    with np.errstate(over="ignore"):
        g32 = F32(g)
    if not np.isfinite(g32):
        raise ValueError(f"grad_factor must be finite in float32, got {grad_factor!r}")
    return g32


def _x(x) -> np.ndarray:
    xa = float_array(x, "x", check_nan=False)
    with np.errstate(over="ignore"):
        xa = xa.astype(F32)
    if xa.size and np.isnan(xa).any():
        raise ValueError("x contains NaN; NaN has no quantized value (PyTorch masks its gradient to 0)")
    return xa


def _dy(dy, shape) -> np.ndarray:
    d = float_array(dy, "dy")
    with np.errstate(over="ignore"):
        d = d.astype(F32)
    if d.shape != shape:
        raise ValueError(f"dy has shape {d.shape}; expected x's shape {shape}")
    if d.size and not np.all(np.isfinite(d)):
        raise ValueError("dy must be finite in float32 (got ±Inf, or a value beyond the float32 range)")
    return d


def _scale(scale, name: str, shape: tuple) -> np.ndarray:
    """float32 scales, finite and > 0, with a finite float32 reciprocal; ``shape`` () accepts (1,)."""
    s = float_array(scale, name)
    if shape == () and s.size == 1 and s.ndim <= 1:
        s = s.reshape(())
    elif s.shape != shape:
        raise ValueError(f"{name} has shape {s.shape}; expected {_want(shape)}")
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        s = s.astype(F32)
        inv = F32(1) / s
    if s.size and not (np.all(np.isfinite(s)) and np.all(s > 0) and np.all(np.isfinite(inv))):
        raise ValueError(f"{name} must be finite and > 0 in float32, with a finite float32 reciprocal")
    return s


def _float_zero_point(zero_point, shape: tuple) -> np.ndarray:
    z = float_array(zero_point, "zero_point")
    if shape == () and z.size == 1 and z.ndim <= 1:
        z = z.reshape(())
    elif z.shape != shape:
        raise ValueError(f"zero_point has shape {z.shape}; expected {_want(shape)}")
    with np.errstate(over="ignore"):
        z = z.astype(F32)
    if z.size and not np.all(np.isfinite(z)):
        raise ValueError("zero_point must be finite in float32")
    return z


def _axis(axis, shape: tuple) -> int:
    if not shape:
        raise ValueError("x must have at least one dimension for per-channel fake quantization")
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)) or not 0 <= axis < len(shape):
        raise ValueError(f"axis must be an int in [0, {len(shape)}) for x of shape {shape} (PyTorch refuses "
                         f"negative axes), got {axis!r}")
    return int(axis)


def _want(shape: tuple) -> str:
    return "() or (1,)" if shape == () else f"{shape} = x.shape[axis]"


def _channel_view(p: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = p.size
    return p.reshape(shape)


def _sum64(t: np.ndarray, axis: int | None) -> np.ndarray:
    """Σ of float32 terms over every axis but ``axis`` (all axes if None), added in float64 in C order
    (first to last element: a cumulative sum, so the loop twins add in the same order), then rounded;
    a sum starts from +0, as PyTorch's does (a single -0.0 term sums to +0.0)."""
    rows = t.reshape(1, -1) if axis is None else np.moveaxis(t, axis, 0).reshape(t.shape[axis], -1)
    if rows.shape[1] == 0:
        return np.zeros(rows.shape[0], F32)
    with np.errstate(over="ignore"):
        return (np.cumsum(rows, axis=1, dtype=np.float64)[:, -1] + 0.0).astype(F32)


# ------------------------------------------------------------------------------------------ (G1)-(G2)
def fake_quantize_per_tensor_affine_backward(dy: ArrayLike, x: ArrayLike, scale: float, zero_point: int, quant_min: int,
                                             quant_max: int) -> np.ndarray:
    """``x.grad`` after ``torch.fake_quantize_per_tensor_affine(x, ...)`` and ``backward(dy)``.

    Equations (G1)-(G2) of this module: ``dx = dy · [quant_min ≤ z + rne(fl(x · inv)) ≤ quant_max]``,
    the code compared before the clamp (in float32, as the kernel does: ``qval_f``).

    Parameters
    ----------
    dy : ndarray of float, shape of ``x`` (rounded to float32; finite)
    x : ndarray of float, any shape (rounded to float32; no NaN)
    scale : float, finite and > 0 (rounded to float32)
    zero_point : int in [quant_min, quant_max]
    quant_min, quant_max : int

    Returns
    -------
    dx : ndarray of float32, shape of ``x`` (``dy · 0.0`` outside: −0.0 where dy < 0, as PyTorch)

    References
    ----------
    ``QuantizedOpKernels.cpp: _fake_quantize_tensor_helper`` (the mask);
    ``FakeQuantPerTensorAffine.cpp: fake_quantize_per_tensor_affine_cachemask_backward`` (``dY * mask``).
    """
    lo, hi = _range(quant_min, quant_max)
    z = int_value(zero_point, "zero_point", lo, hi)
    s = _scale(scale, "scale", ())
    xa = _x(x)
    d = _dy(dy, xa.shape)
    with np.errstate(over="ignore", invalid="ignore"):
        k = F32(z) + np.rint(xa * (F32(1) / s))  # float32 add: qval_f
    inside = (k >= F32(lo)) & (k <= F32(hi))  # int64 vs float compares in float32
    return d * inside.astype(F32)


def _cachemask_channel_args(dy, x, scale, zero_point, axis, quant_min, quant_max):
    """Checked arguments of the per-channel backward: ``(lo, hi, x, axis, scale (C,), zero_point (C,)
    as int64 or float32, dy)``."""
    lo, hi = _range(quant_min, quant_max)
    xa = _x(x)
    a = _axis(axis, xa.shape)
    ch = xa.shape[a]
    s = _scale(scale, "scale", (ch,))
    zp = np.asarray(zero_point)
    if zp.dtype.kind in "iu":
        if zp.shape != (ch,):
            raise ValueError(f"zero_point has shape {zp.shape}; expected ({ch},) = x.shape[axis]")
        if ch and (int(zp.min()) < lo or int(zp.max()) > hi):
            raise ValueError(f"zero_point must lie in [{lo}, {hi}], got [{zp.min()}, {zp.max()}]")
        zp = zp.astype(np.int64)
    else:
        zp = _float_zero_point(zp, (ch,))
    return lo, hi, xa, a, s, zp, _dy(dy, xa.shape)


def fake_quantize_per_channel_affine_backward(dy: ArrayLike, x: ArrayLike, scale: ArrayLike, zero_point: ArrayLike,
                                              axis: int, quant_min: int, quant_max: int) -> np.ndarray:
    """``x.grad`` after ``torch.fake_quantize_per_channel_affine(x, ...)`` and ``backward(dy)``.

    For channel ``c`` along ``axis``, with ``inv_c = fl(1 / fl(scale[c]))``::

        integer zero points:  k = fl(z_c + rne(fl(x · inv_c)))       (G1)
        float zero points:    k = rne(fma(x, inv_c, z_c))            (lrintf of the contracted sum)
        dx = dy · [quant_min ≤ k ≤ quant_max]                        (G2)

    Parameters
    ----------
    dy : ndarray of float, shape of ``x``
    x : ndarray of float, ``ndim >= 1``
    scale : ndarray of float, shape ``(x.shape[axis],)``
    zero_point : ndarray, shape ``(x.shape[axis],)``: integers in [quant_min, quant_max], or floats
        (rounded to float32; PyTorch also takes float16)
    axis : int, ``0 <= axis < x.ndim``
    quant_min, quant_max : int

    Returns
    -------
    dx : ndarray of float32, shape of ``x``

    References
    ----------
    ``QuantizedOpKernels.cpp: _fake_quant_per_channel_cachemask_cpu_helper``;
    ``FakeQuantPerChannelAffine.cpp: fake_quantize_per_channel_affine_cachemask_backward``.
    """
    lo, hi, xa, a, s, zp, d = _cachemask_channel_args(dy, x, scale, zero_point, axis, quant_min, quant_max)
    s, z = _channel_view(s, xa.ndim, a), _channel_view(zp, xa.ndim, a)
    with np.errstate(over="ignore", invalid="ignore"):
        inv = F32(1) / s
        if zp.dtype.kind in "iu":
            k = z.astype(F32) + np.rint(xa * inv)     # int32 + float: a float32 add
        else:
            k = np.rint(fma_float32(xa, inv, z))       # lrintf(zero_point + x * inv), contracted
    k = k.astype(np.float64)  # static_cast<int64_t>: compared exactly
    return d * ((k >= lo) & (k <= hi)).astype(F32)
