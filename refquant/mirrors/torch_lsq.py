"""PyTorch's learnable fake quantizers in NumPy — ``torch._fake_quantize_learnable_per_tensor_affine``
and ``_per_channel_affine``, LSQ as PyTorch implements it: forward, and the gradients for x, scale and
zero point, bit-exact against PyTorch 2.13 CPU.

Notation as in :mod:`refquant.mirrors.torch_qat`: ``fl`` rounds to float32, ``fma(a, b, c)`` is
``a·b + c`` rounded once (the compiler contracts ``zero_point + x * inv_scale`` and ``xfq − x`` into
fused multiply-adds: measured on the 2.13.0 wheel, AVX2 kernels), ``rne`` rounds half to even,
``inv = fl(1 / fl(scale))``. Forward: the fake quantizer ((G1) of :mod:`.torch_qat`) with ``z``
the rounded, clamped zero point. Backward, per element::

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

Where refquant differs on purpose (besides those of :mod:`.torch_qat`): ``|x / scale| ≥ 2**63``
and ±Inf saturate to the side they lie on (PyTorch's int64 conversion makes +Inf count as below
``quant_min`` in (G5)); an empty ``x`` gives zero gradients (PyTorch returns the ``scale`` and
``zero_point`` tensors themselves as their gradients); a 1-D ``x`` per channel gives one sum per channel (PyTorch reduces
over an empty list of axes, which sums everything, and autograd then rejects the 0-d gradient).

References
----------
PyTorch ``aten/src/ATen/native/quantized/FakeQuantPerTensorAffine.cpp: _get_zero_point_from_tensor,
_fake_quantize_learnable_per_tensor_affine[_backward]``; ``FakeQuantPerChannelAffine.cpp:
_get_rounded_zero_point, _fake_quantize_learnable_per_channel_affine[_backward]``;
``cpu/kernels/QuantizedOpKernels.cpp: fake_quantize_learnable_tensor_grad_kernel_cpu,
fake_quantize_learnable_channel_grad_kernel_cpu``; ``torch/ao/quantization/_learnable_fake_quantize.py``.
Esser et al., "Learned Step Size Quantization", ICLR 2020, eq. (3) and section 2.2 (gradient scale).
"""
from __future__ import annotations

import numpy as np

from ..core.uniform import fake_quantize
from .fp32 import fma_float32
from .torch_qat import (F32, _axis, _channel_view, _dy, _float_zero_point, _grad_factor, _range, _scale, _sum64,
                        _x)
from ..core._types import ArrayLike


def _zero_point_forward(z: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``clamp(nearbyint(zp), quant_min, quant_max)`` — forward, per tensor and per channel."""
    return np.clip(np.rint(z), lo, hi)


def _zero_point_backward_per_tensor(z: F32, lo: int, hi: int) -> int:
    """``(int64) clamp(fl(zp + 0.5f), quant_min, quant_max)`` — per-tensor backward only."""
    return int(np.trunc(np.clip(F32(z) + F32(0.5), F32(lo), F32(hi))))


def fake_quantize_learnable_per_tensor_affine(x: ArrayLike, scale: ArrayLike, zero_point: ArrayLike, quant_min: int,
                                              quant_max: int, grad_factor: float = 1.0) -> np.ndarray:
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


def fake_quantize_learnable_per_channel_affine(x: ArrayLike, scale: ArrayLike, zero_point: ArrayLike, axis: int,
                                               quant_min: int, quant_max: int, grad_factor: float = 1.0) -> np.ndarray:
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


def fake_quantize_learnable_per_tensor_affine_backward(dy: ArrayLike, x: ArrayLike, scale: ArrayLike,
                                                       zero_point: ArrayLike, quant_min: int, quant_max: int,
                                                       grad_factor: float = 1.0, *, reduce: bool =
                                                       True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def fake_quantize_learnable_per_channel_affine_backward(dy: ArrayLike, x: ArrayLike, scale: ArrayLike,
                                                        zero_point: ArrayLike, axis: int, quant_min: int,
                                                        quant_max: int, grad_factor: float = 1.0, *,
                                                        reduce: bool =
                                                        True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
