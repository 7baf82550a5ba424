"""Learned Step Size Quantization (LSQ) and its learnable offset (LSQ+): fake quantization whose step
size (and offset) are trained by gradient descent with the weights.

Forward (LSQ section 2, eq. 1-2; LSQ+ section 3 adds the offset β; β = 0 is LSQ)::

    v  = (x − β) / s
    x̂  = round(clip(v, qmin, qmax)) · s + β                 round: half to even

``qmin``/``qmax`` are LSQ's ``−Q_N``/``Q_P``: ``int<b>`` gives [−2^(b−1), 2^(b−1) − 1] (weights),
``uint<b>`` [0, 2^b − 1] (activations after ReLU; with β, any activation — LSQ+'s point).
Backward, ``round`` passed straight through (LSQ eq. 3; LSQ+ section 3 for β)::

                    v ≤ qmin      qmin < v < qmax        v ≥ qmax
    ∂x̂/∂x             0               1                     0
    ∂x̂/∂s           qmin         round(v) − v              qmax
    ∂x̂/∂β             1               0                     1

    dx = dy · ∂x̂/∂x,   dscale = g · Σ dy · ∂x̂/∂s,   doffset = g · Σ dy · ∂x̂/∂β

the sums over the elements that share the parameter. ``round(v) − v`` is the scale gradient's point:
it is not 0 (as it would be if the STE were applied to the whole of x̂ = s·v) and it grows as v
approaches a transition between codes, so the step size feels the quantization error. ``g`` is
LSQ's gradient scale, ``1 / sqrt(N · Q_P)`` (:func:`lsq_grad_scale`): N is the number of elements
the step size quantizes (the layer's weights, or the features of an activation), Q_P = qmax; it
keeps the step size's update in proportion to the weights' updates.

Where PyTorch (``torch._fake_quantize_learnable_per_tensor_affine`` and ``_per_channel_affine``,
mirrored bit for bit in :mod:`refquant.mirrors.torch_lsq`) differs from these equations:

* its window is on the *rounded* code ``k = rne(v + z)`` with an integer zero point ``z`` (not
  on ``v``): for ``v ∈ (qmax, qmax + 0.5)`` PyTorch's ∂/∂s is ``k − v`` and ∂/∂x is 1, LSQ's are
  ``qmax`` and 0 (likewise below qmin);
* its offset is a zero point rounded to an integer, in the forward by ``nearbyint`` and in the
  per-tensor backward by ``(int)(zp + 0.5)``; its zero point gradient is ``−s`` outside the range,
  LSQ+'s offset gradient 1 (β = −s·z: the same direction, different units);
* ``_LearnableFakeQuantize`` uses ``1 / sqrt(x.numel() · quant_max)`` as ``g`` even per channel,
  where N would be a channel's element count, and applies it to the zero point's gradient too
  (here ``grad_scale`` scales ``dscale`` and ``doffset`` alike; pass what you mean);
* it multiplies ``g`` into each element's term in float32 and sums in float32; here the sum is
  taken first (float64, C order) and scaled once.

References
----------
Esser et al., "Learned Step Size Quantization", ICLR 2020, section 2 (eq. 1-3), section 2.1 (step
size initialisation 2⟨|v|⟩/√Q_P) and section 2.2 (gradient scale 1/√(N·Q_P)).
Bhalgat et al., "LSQ+: Improving low-bit quantization through learnable offsets and better
initialization", CVPR Workshops 2020, section 3 (learnable offset β).
"""
from __future__ import annotations

import math

import numpy as np

from ..core._checks import float_array, int_value
from ..core.ranges import qrange as as_qrange
from ..core.rounding import round_scalar_ref
from ..core._types import ArrayLike, QRangeLike
from ._common import (dy_array, group_sum, param_index, real_param, real_scalar, scale_param, views, working_dtype,
                      x_array)


def lsq_grad_scale(n: int, quant_max: int) -> float:
    """LSQ's gradient scale ``g = 1 / sqrt(n · quant_max)`` (section 2.2): ``n`` elements share the
    step size, ``quant_max`` is Q_P. ``_LearnableFakeQuantize`` passes ``n = x.numel()``."""
    n = int_value(n, "n", 1)
    qp = int_value(quant_max, "quant_max", 1)
    return 1.0 / math.sqrt(n * qp)


def lsq_init_scale(x: ArrayLike, quant_max: int) -> float:
    """LSQ's initial step size ``2 · mean(|x|) / sqrt(Q_P)`` (section 2.1), as a Python float."""
    xa = float_array(x, "x")
    if xa.size == 0 or not np.all(np.isfinite(xa)):
        raise ValueError("x must be non-empty and finite to initialise a step size")
    qp = int_value(quant_max, "quant_max", 1)
    s = 2.0 * float(np.mean(np.abs(xa), dtype=np.float64)) / math.sqrt(qp)
    if s <= 0:
        raise ValueError("x is all zeros: the initial step size would be 0")
    return s


def _prepare(x, scale, offset, qrange, axis, block_size):
    r = as_qrange(qrange)
    xa = x_array(x)
    wd = working_dtype(xa, scale, offset)
    s = scale_param(scale, xa.shape, axis, block_size, wd)
    b = real_param(offset, "offset", xa.shape, axis, block_size, wd)
    return r, xa.astype(wd), s, b, wd


def _forward(xv, sv, bv, r, wd):
    with np.errstate(over="ignore", invalid="ignore"):
        v = ((xv - bv) / sv).astype(wd, copy=False)
        q = np.rint(np.clip(v, r.qmin, r.qmax))
        return v, q, (q * sv + bv).astype(wd, copy=False)


def lsq_fake_quantize(x: ArrayLike, scale: ArrayLike, qrange: QRangeLike = "int8", *, offset: ArrayLike = 0.0,
                      axis: int | None = None, block_size: int = 0) -> np.ndarray:
    """LSQ / LSQ+ forward: ``x̂ = round(clip((x − offset) / scale, qmin, qmax)) · scale + offset``.

    Parameters
    ----------
    x : ndarray of float, any shape (no NaN; ±Inf saturates)
    scale : float or ndarray of the parameter shape, finite and > 0 — the step size s
    qrange : str, (int, int) or QRange, default "int8" (LSQ: "int<b>" weights, "uint<b>" activations)
    offset : float or ndarray of the parameter shape, default 0 — LSQ+'s β (a real number, not a code)
    axis, block_size : granularity, as in :func:`refquant.core.uniform.quantize`

    Returns
    -------
    x̂ : ndarray of the working dtype, shape of ``x``
    """
    r, xa, s, b, wd = _prepare(x, scale, offset, qrange, axis, block_size)
    xv, (sv, bv) = views(xa, [s, b], axis, block_size)
    return _forward(xv, sv, bv, r, wd)[2].reshape(xa.shape)


def lsq_grad(dy: ArrayLike, x: ArrayLike, scale: ArrayLike, qrange: QRangeLike = "int8", *, offset: ArrayLike = 0.0,
             axis: int | None = None, block_size: int = 0, grad_scale: float =
             1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LSQ / LSQ+ backward: gradients for ``x``, the step size and the offset (module docstring).

    Parameters
    ----------
    dy : ndarray of float, shape of ``x``, finite — the gradient of the loss with respect to x̂
    x, scale, qrange, offset, axis, block_size : as in :func:`lsq_fake_quantize`
    grad_scale : float, default 1 — g, multiplied into ``dscale`` and ``doffset``
        (LSQ: :func:`lsq_grad_scale`)

    Returns
    -------
    dx : ndarray, shape of ``x``
    dscale : ndarray, the shape of ``scale``'s parameter (``()`` per tensor)
    doffset : ndarray, the same shape (the gradient for an offset even when it is 0: LSQ+'s β)
    """
    r, xa, s, b, wd = _prepare(x, scale, offset, qrange, axis, block_size)
    d = dy_array(dy, xa, wd)
    g = real_scalar(grad_scale, "grad_scale", wd)
    xv, (sv, bv) = views(xa, [s, b], axis, block_size)
    dv = d.reshape(xv.shape)
    v, q, _ = _forward(xv, sv, bv, r, wd)
    below, above = v <= r.qmin, v >= r.qmax
    inside = ~(below | above)
    with np.errstate(invalid="ignore"):
        ds = dv * np.where(inside, q - v, np.where(below, wd.type(r.qmin), wd.type(r.qmax))).astype(wd)
    db = dv * (~inside).astype(wd)
    dx = (dv * inside.astype(wd)).reshape(xa.shape)
    dscale = group_sum(ds.reshape(xa.shape), xa.shape, axis, block_size, wd) * g
    doffset = group_sum(db.reshape(xa.shape), xa.shape, axis, block_size, wd) * g
    return dx, dscale, doffset


def lsq_grad_ref(dy: ArrayLike, x: ArrayLike, scale: ArrayLike, qrange: QRangeLike = "int8", *,
                 offset: ArrayLike = 0.0, axis: int | None = None, block_size: int = 0, grad_scale: float =
                 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loop twin of :func:`lsq_grad`: one element at a time, the case table written out, rounding by
    :func:`refquant.core.rounding.round_scalar_ref`, sums accumulated in a Python float."""
    r, xa, s, b, wd = _prepare(x, scale, offset, qrange, axis, block_size)
    d = dy_array(dy, xa, wd)
    g = real_scalar(grad_scale, "grad_scale", wd)
    dx = np.empty(xa.shape, wd)
    acc_s, acc_b = {}, {}
    for idx in np.ndindex(xa.shape):
        pi = param_index(idx, axis, block_size)
        si, bi = (s[pi] if s.ndim else s[()]), (b[pi] if b.ndim else b[()])
        with np.errstate(over="ignore", invalid="ignore"):
            v = wd.type((xa[idx] - bi) / si)
        if v <= r.qmin:
            gx, gs, gb = 0, wd.type(r.qmin), 1
        elif v >= r.qmax:
            gx, gs, gb = 0, wd.type(r.qmax), 1
        else:
            gx, gs, gb = 1, wd.type(round_scalar_ref(float(v), "half_even")) - v, 0
        dx[idx] = d[idx] * wd.type(gx)
        key = pi if (s.ndim or b.ndim) else ()
        acc_s[key] = acc_s.get(key, 0.0) + float(d[idx] * gs)
        acc_b[key] = acc_b.get(key, 0.0) + float(d[idx] * wd.type(gb))
    pshape = np.broadcast_shapes(s.shape, b.shape)
    dscale, doffset = np.zeros(pshape, wd), np.zeros(pshape, wd)
    for key in acc_s:
        dscale[key], doffset[key] = wd.type(acc_s[key]) * g, wd.type(acc_b[key]) * g
    return dx, dscale, doffset


def lsq_fake_quantize_ref(x: ArrayLike, scale: ArrayLike, qrange: QRangeLike = "int8", *, offset: ArrayLike = 0.0,
                          axis: int | None = None, block_size: int = 0) -> np.ndarray:
    """Loop twin of :func:`lsq_fake_quantize`."""
    r, xa, s, b, wd = _prepare(x, scale, offset, qrange, axis, block_size)
    out = np.empty(xa.shape, wd)
    for idx in np.ndindex(xa.shape):
        pi = param_index(idx, axis, block_size)
        si, bi = (s[pi] if s.ndim else s[()]), (b[pi] if b.ndim else b[()])
        with np.errstate(over="ignore"):
            v = wd.type((xa[idx] - bi) / si)
        q = round_scalar_ref(float(min(max(v, r.qmin), r.qmax)), "half_even")
        out[idx] = wd.type(q) * si + bi
    return out
