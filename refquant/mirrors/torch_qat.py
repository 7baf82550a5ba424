"""PyTorch's quantization-aware-training kernels in NumPy: the fake-quantize backward passes and the
learnable fake-quantizers (LSQ as PyTorch implements it), bit-exact against PyTorch 2.13 CPU.

``fl`` rounds to float32, ``fma(a, b, c)`` is ``a·b + c`` rounded once (the compiler contracts the
C++ expressions marked below into fused multiply-adds: measured on the 2.13.0 wheel, AVX2 kernels),
``rne`` rounds half to even, ``inv = fl(1 / fl(scale))``. The zero point ``z`` is an integer here.

Fake quantize (``torch.fake_quantize_per_tensor_affine`` / ``_per_channel_affine``), straight-through::

    k  = z + rne(fl(x · inv))                                  the code before the clamp   (G1)
    dx = dy · [quant_min ≤ k ≤ quant_max]                      the mask the forward saves  (G2)

— the window is on the *rounded* code, so it reaches half a step beyond the clamp range on each side
(x/s + z = quant_max + 0.5 passes when the tie rounds down). Float zero points (per channel only,
``per_channel_affine_float_qparams``): ``k = rne(fma(x, inv, z))``.

Learnable fake quantize (``torch._fake_quantize_learnable_per_{tensor,channel}_affine``), forward =
the fake quantizer above with ``z`` the rounded, clamped zero point. Backward, per element::

    k  = rne(fma(x, inv, z_b))                          zero point added BEFORE rounding (G3)
    dx = dy · [quant_min ≤ k ≤ quant_max]
    inside:   ds = fl(fl(fl(dy · fma(clamp(k) − z_b, s, −x)) · inv) · g)      ((x̂ − x)/s)    (G4)
              dz = 0
    k < qmin: ds = fl(fl(dy · (quant_min − z_b)) · g),   dz = fl(fl(−dy · s) · g)             (G5)
    k > qmax: ds = fl(fl(dy · (quant_max − z_b)) · g),   dz = fl(fl(−dy · s) · g)

``g`` is ``grad_factor`` in float32 (``_LearnableFakeQuantize`` passes ``1 / sqrt(x.numel() ·
quant_max)`` with ``use_grad_scaling``: LSQ's gradient scale, with the *whole tensor's* element
count even per channel); ``dscale`` / ``dzero_point`` are the sums of ``ds`` / ``dz`` over each
scale's elements. Four places where the backward is not the derivative of the forward it follows:

* **the zero point is rounded twice, differently.** Per tensor the forward uses
  ``z = clamp(nearbyint(zp))`` (ties to even) and the backward ``z_b = (int64) clamp(fl(zp + 0.5))``
  (truncation: ties up for zp ≥ −0.5, and toward zero below): zp = 2.5 → 2 forward, 3 backward;
  zp = 0.5 → 0 / 1; zp = −0.7 → −1 / 0; zp = −1.5 → −2 / −1 (zp = −0.5 gives 0 both ways).
  Per channel both passes use ``round`` (ties to even).
* **(G3) adds the zero point before rounding** where the forward (G1) adds it after: on ties with
  an odd zero point the backward's code is one higher or lower than the forward's (x/s = 2.5,
  z = 1: forward code 3, backward rne(3.5) = 4), so ``dx`` can pass where the forward clamped, and
  ``ds`` is computed for a different x̂ than the one the forward returned.
* The window is LSQ's only in the interior: Esser et al. clip ``v/s`` before rounding, so for
  v/s ∈ (Qp, Qp + 0.5) the paper's ∂v̂/∂s is Qp and ∂v̂/∂v = 0, PyTorch's is ``k − v/s`` and 1
  (see :mod:`refquant.qat.lsq`, which follows the paper).
* ``g`` scales the zero point's gradient too (LSQ defines it for the step size).

Sums: PyTorch adds the float32 terms in float32 in its own vectorised order; we add them in float64
from the first element to the last (C order) and round once to float32. The terms are bit-exact
(``reduce=False`` returns them); the sums agree to a few float32 ulps of Σ|terms|, and exactly
whenever the float32 sum is exact (e.g. terms that are small dyadic numbers).

Where refquant differs on purpose: NaN in ``x`` raises (PyTorch masks it to 0); non-finite ``dy``
raises; ``|x / scale| ≥ 2**63`` and ±Inf saturate to the side they lie on (PyTorch's int64
conversion makes +Inf count as below ``quant_min`` in (G5)); the scale must be finite and > 0;
an empty ``x`` gives zero gradients (PyTorch returns the ``scale`` and ``zero_point`` tensors
themselves as their gradients); a 1-D ``x`` per channel gives one sum per channel (PyTorch reduces
over an empty list of axes, which sums everything, and autograd then rejects the 0-d gradient).

References
----------
PyTorch ``aten/src/ATen/native/quantized/FakeQuantPerTensorAffine.cpp:
fake_quantize_per_tensor_affine_cachemask_backward, _get_zero_point_from_tensor,
_fake_quantize_learnable_per_tensor_affine[_backward]``; ``FakeQuantPerChannelAffine.cpp:
_get_rounded_zero_point, _fake_quantize_learnable_per_channel_affine[_backward]``;
``cpu/kernels/QuantizedOpKernels.cpp: _fake_quantize_tensor_helper,
_fake_quant_per_channel_cachemask_cpu_helper, fake_quantize_learnable_tensor_grad_kernel_cpu,
fake_quantize_learnable_channel_grad_kernel_cpu``; ``torch/ao/quantization/_learnable_fake_quantize.py``.
Esser et al., "Learned Step Size Quantization", ICLR 2020, eq. (3) and section 2.2 (gradient scale).
"""
from __future__ import annotations

import numpy as np

from ..core._checks import float_array, int_value, real_value
from ..core.ranges import qrange as as_qrange
from ..core.uniform import fake_quantize
from .fp32 import fma_float32

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
def fake_quantize_per_tensor_affine_backward(dy, x, scale: float, zero_point: int, quant_min: int,
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


def fake_quantize_per_channel_affine_backward(dy, x, scale, zero_point, axis: int, quant_min: int,
                                              quant_max: int) -> np.ndarray:
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


# ------------------------------------------------------------------------------------------ learnable
def _zero_point_forward(z: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``clamp(nearbyint(zp), quant_min, quant_max)`` — forward, per tensor and per channel."""
    return np.clip(np.rint(z), lo, hi)


def _zero_point_backward_per_tensor(z: F32, lo: int, hi: int) -> int:
    """``(int64) clamp(fl(zp + 0.5f), quant_min, quant_max)`` — per-tensor backward only."""
    return int(np.trunc(np.clip(F32(z) + F32(0.5), F32(lo), F32(hi))))


def fake_quantize_learnable_per_tensor_affine(x, scale, zero_point, quant_min: int, quant_max: int,
                                              grad_factor: float = 1.0) -> np.ndarray:
    """``torch._fake_quantize_learnable_per_tensor_affine``: the fake quantizer with a float zero point.

    ``y = (clamp(z + rne(fl(x · inv)), quant_min, quant_max) − z) · fl(scale)`` with
    ``z = clamp(nearbyint(fl(zero_point)), quant_min, quant_max)`` (ties to even). ``grad_factor``
    is not used by the forward (it is part of PyTorch's signature).

    Parameters
    ----------
    x : ndarray of float, any shape
    scale : float or ndarray of shape (1,), finite and > 0
    zero_point : float or ndarray of shape (1,), finite (rounded as above)
    quant_min, quant_max : int
    grad_factor : float

    Returns
    -------
    ndarray of float32, shape of ``x``

    References
    ----------
    ``FakeQuantPerTensorAffine.cpp: _fake_quantize_learnable_per_tensor_affine, _get_zero_point_from_tensor``.
    """
    lo, hi = _range(quant_min, quant_max)
    _grad_factor(grad_factor)
    s = _scale(scale, "scale", ())
    z = int(_zero_point_forward(_float_zero_point(zero_point, ()), lo, hi))
    xa = _x(x)
    return fake_quantize(xa, s, z, (lo, hi), scale_op="multiply_reciprocal")


def fake_quantize_learnable_per_channel_affine(x, scale, zero_point, axis: int, quant_min: int, quant_max: int,
                                               grad_factor: float = 1.0) -> np.ndarray:
    """``torch._fake_quantize_learnable_per_channel_affine``: per-channel fake quantizer, float zero points.

    ``z_c = clamp(round(fl(zero_point[c])), quant_min, quant_max)`` (ties to even), then
    ``fake_quantize_per_channel_affine`` with those integer zero points: zero point after rounding (G1).
    Shapes as in :func:`fake_quantize_learnable_per_channel_affine_backward`.

    References
    ----------
    ``FakeQuantPerChannelAffine.cpp: _fake_quantize_learnable_per_channel_affine, _get_rounded_zero_point``.
    """
    lo, hi = _range(quant_min, quant_max)
    _grad_factor(grad_factor)
    xa = _x(x)
    a = _axis(axis, xa.shape)
    s = _scale(scale, "scale", (xa.shape[a],))
    z = _zero_point_forward(_float_zero_point(zero_point, (xa.shape[a],)), lo, hi).astype(np.int64)
    return fake_quantize(xa, s, z, (lo, hi), axis=a, scale_op="multiply_reciprocal")


def _learnable_terms(d, xa, s, z, lo, hi, g):
    """Per-element (dx, ds, dz) of (G3)-(G5); ``s``, ``z`` (float32) broadcast against ``xa``."""
    with np.errstate(over="ignore", invalid="ignore"):
        inv = F32(1) / s
        k = np.rint(fma_float32(xa, inv, z))                      # (G3): nearbyint(zp + x * inv), fused
        k64 = k.astype(np.float64)                                # int64 xqi: compared exactly
        below, above = k64 < lo, k64 > hi
        inside = ~(below | above)
        kc = np.clip(k, lo, hi)
        diff = fma_float32((kc - z).astype(F32), s, -xa)          # xfq − x with xfq = (kc − z) · s, fused
        ds_in = (d * diff).astype(F32) * inv * g
        edge = np.where(below, F32(lo) - z, F32(hi) - z).astype(F32)  # dscale_small / dscale_big
        ds = np.where(inside, ds_in, (d * edge).astype(F32) * g).astype(F32)
        dz = np.where(inside, F32(0), (-d * s).astype(F32) * g).astype(F32)
    return d * inside.astype(F32), ds, dz


def fake_quantize_learnable_per_tensor_affine_backward(dy, x, scale, zero_point, quant_min: int, quant_max: int,
                                                       grad_factor: float = 1.0, *, reduce: bool = True):
    """``torch._fake_quantize_learnable_per_tensor_affine_backward``: gradients for x, scale and zero point.

    Equations (G3)-(G5) of this module with the zero point ``z_b = (int64) clamp(fl(zp + 0.5))`` — not
    the forward's ``nearbyint`` — and the zero point added before rounding::

        dx     = dy · [quant_min ≤ k ≤ quant_max],            k = rne(fma(x, inv, z_b))
        dscale = Σ g · dy · ((x̂_b − x) / s   inside;  quant_min − z_b  below;  quant_max − z_b  above)
        dzp    = Σ g · dy · (0  inside;  −s  outside)

    with ``x̂_b = (clamp(k) − z_b) · s`` and ``g = fl(grad_factor)``.

    Parameters
    ----------
    dy : ndarray of float, shape of ``x``
    x : ndarray of float, any shape
    scale : float or ndarray of shape (1,)
    zero_point : float or ndarray of shape (1,)
    quant_min, quant_max : int with ``quant_min <= 0 <= quant_max`` (PyTorch's check)
    grad_factor : float (LSQ: ``1 / sqrt(x.size · quant_max)``)
    reduce : bool, default True. False returns the per-element terms PyTorch sums (``dScale_vec``,
        ``dZeroPoint_vec``, shape of ``x``), bit-exact.

    Returns
    -------
    dx : ndarray of float32, shape of ``x``
    dscale, dzero_point : ndarray of float32, shape (1,) (as PyTorch's), or shape of ``x`` if not ``reduce``

    References
    ----------
    ``FakeQuantPerTensorAffine.cpp: _fake_quantize_learnable_per_tensor_affine_backward``;
    ``QuantizedOpKernels.cpp: fake_quantize_learnable_tensor_grad_kernel_cpu``.
    """
    lo, hi = _range(quant_min, quant_max, learnable=True)
    g = _grad_factor(grad_factor)
    s = _scale(scale, "scale", ())
    zb = F32(_zero_point_backward_per_tensor(_float_zero_point(zero_point, ()), lo, hi))
    xa = _x(x)
    d = _dy(dy, xa.shape)
    dx, ds, dz = _learnable_terms(d, xa, s, zb, lo, hi, g)
    if not reduce:
        return dx, ds, dz
    return dx, _sum64(ds, None), _sum64(dz, None)


def fake_quantize_learnable_per_channel_affine_backward(dy, x, scale, zero_point, axis: int, quant_min: int,
                                                        quant_max: int, grad_factor: float = 1.0, *,
                                                        reduce: bool = True):
    """``torch._fake_quantize_learnable_per_channel_affine_backward``.

    As :func:`fake_quantize_learnable_per_tensor_affine_backward`, per channel ``c`` along ``axis``,
    with ``z_c = clamp(round(fl(zero_point[c])), quant_min, quant_max)`` — ties to even, the same as
    the forward (only the per-tensor op rounds the zero point differently in its backward) — and
    ``quant_min − z_c``, ``quant_max − z_c`` formed in float32. ``dscale[c]``, ``dzero_point[c]`` sum
    over every element of channel ``c``.

    Parameters
    ----------
    dy : ndarray of float, shape of ``x``
    x : ndarray of float, ``ndim >= 1``
    scale, zero_point : ndarray of float, shape ``(x.shape[axis],)``
    axis : int, ``0 <= axis < x.ndim``
    quant_min, quant_max : int with ``quant_min <= 0 <= quant_max``
    grad_factor : float — ``_LearnableFakeQuantize`` passes ``1 / sqrt(x.size · quant_max)``: the
        whole tensor's element count, not the channel's
    reduce : bool, default True (False: the per-element terms, shape of ``x``)

    Returns
    -------
    dx : ndarray of float32, shape of ``x``
    dscale, dzero_point : ndarray of float32, shape ``(x.shape[axis],)`` (shape of ``x`` if not ``reduce``)

    References
    ----------
    ``FakeQuantPerChannelAffine.cpp: _fake_quantize_learnable_per_channel_affine_backward``;
    ``QuantizedOpKernels.cpp: fake_quantize_learnable_channel_grad_kernel_cpu``.
    """
    lo, hi = _range(quant_min, quant_max, learnable=True)
    g = _grad_factor(grad_factor)
    xa = _x(x)
    a = _axis(axis, xa.shape)
    ch = xa.shape[a]
    s = _channel_view(_scale(scale, "scale", (ch,)), xa.ndim, a)
    z = _channel_view(_zero_point_forward(_float_zero_point(zero_point, (ch,)), lo, hi), xa.ndim, a).astype(F32)
    d = _dy(dy, xa.shape)
    dx, ds, dz = _learnable_terms(d, xa, s, z, lo, hi, g)
    if not reduce:
        return dx, ds, dz
    return dx, _sum64(ds, a), _sum64(dz, a)

