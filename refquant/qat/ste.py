"""The straight-through estimator (STE): the gradient that quantization-aware training passes through
fake quantization.

The forward pass is :func:`refquant.core.uniform.fake_quantize`,
``x̂ = s · (clamp(round(x / s) + z, qmin, qmax) − z)``. Its true derivative is 0 almost everywhere
(``round`` is a staircase), so training uses a surrogate: treat ``round`` as the identity in the
backward pass. What is left is the derivative of the clamp, a 0/1 window; frameworks disagree on
where the window ends, and each choice is a value of ``window``::

    "code"   dx = dy · [qmin ≤ round(x/s) + z ≤ qmax]       the rounded code before the clamp:
             PyTorch fake_quantize_per_{tensor,channel}_affine (its saved mask); the window
             reaches half a step past the range (x/s + z up to qmax + 0.5, ties by ``rounding``)
    "range"  dx = dy · [qmin − z ≤ x/s ≤ qmax − z]           the real range, ends included:
             TensorFlow's FakeQuantWithMinMaxVarsGradient (``min <= x <= max``), the clipped STE
             of LSQ and PACT (their interior, see :mod:`.lsq`, :mod:`.pact`)
    "none"   dx = dy                                        the plain identity STE (Bengio et al.);
             it keeps pushing values that are clamped

Inside the window "range" is exactly the derivative of the identity clamped to the range,
``x ↦ s · clamp(x/s, qmin − z, qmax − z)`` — the function the STE differentiates instead of x̂
(``tests/test_qat_grads.py`` checks this by finite differences). With ``scale_op=
"multiply_reciprocal"`` and float32 data, "code" is PyTorch's mask bit for bit
(:func:`refquant.mirrors.torch_qat.fake_quantize_per_tensor_affine_backward`).

References
----------
Bengio, Léonard & Courville, "Estimating or Propagating Gradients Through Stochastic Neurons for
Conditional Computation", arXiv:1308.3432, 2013, section 3 (the straight-through estimator).
Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", CVPR 2018, section 3 (simulated quantization in training).
Yin et al., "Understanding Straight-Through Estimator in Training Activation Quantized Neural Nets",
ICLR 2019 (why the clipped STE is a descent direction). PyTorch ``QuantizedOpKernels.cpp:
_fake_quantize_tensor_helper``; TensorFlow ``fake_quant_ops_functor.h: FakeQuantWithMinMaxVarsGradientFunctor``.
"""
from __future__ import annotations

import numpy as np

from ..core._checks import choice
from ..core.ranges import qrange as as_qrange
from ..core.rounding import ROUNDING_MODES, round_array, round_scalar_ref
from ..core._types import ArrayLike, QRangeLike
from ._common import dy_array, param_index, scale_param, views, working_dtype, x_array, zero_point_param

WINDOWS = ("code", "range", "none")
SCALE_OPS = ("divide", "multiply_reciprocal")


def _prepare(dy, x, scale, zero_point, qrange, axis, block_size, window, scale_op, rounding):
    r = as_qrange(qrange)
    choice(window, "window", WINDOWS)
    choice(scale_op, "scale_op", SCALE_OPS)
    choice(rounding, "rounding", [m for m in ROUNDING_MODES if m != "stochastic"])
    xa = x_array(x)
    wd = working_dtype(xa, scale)
    d = dy_array(dy, xa, wd)
    s = scale_param(scale, xa.shape, axis, block_size, wd)
    z = zero_point_param(zero_point, xa.shape, axis, block_size, r)
    if scale_op == "multiply_reciprocal":
        with np.errstate(over="ignore"):
            s = np.divide(wd.type(1), s, dtype=wd)  # the reciprocal, rounded to the working dtype
        if not np.all(np.isfinite(s)):
            raise ValueError(f"scale: 1/scale overflows {wd.name} (scale_op='multiply_reciprocal')")
    return r, xa.astype(wd), d, s, z, wd


def ste_grad(dy: ArrayLike, x: ArrayLike, scale: ArrayLike, zero_point: ArrayLike = 0, qrange: QRangeLike = "int8", *,
             axis: int | None = None, block_size: int = 0, window: str = "code", scale_op: str = "divide",
             rounding: str = "half_even") -> np.ndarray:
    """Gradient of the loss with respect to ``x`` through ``fake_quantize(x, scale, zero_point, qrange)``.

    ``dx = dy · w(x)`` with the window ``w`` named by ``window`` (module docstring)::

        "code":   w = [qmin ≤ round(x/s) + z ≤ qmax]
        "range":  w = [qmin − z ≤ x/s ≤ qmax − z]
        "none":   w = 1

    ``x/s`` is computed as :func:`refquant.core.uniform.quantize` computes it (``scale_op``, in the
    working dtype); ±Inf lies outside every window but "none".

    Parameters
    ----------
    dy : ndarray of float, shape of ``x``, finite — the gradient of the loss with respect to x̂
    x : ndarray of float, any shape (no NaN)
    scale : float or ndarray of the parameter shape (see :mod:`refquant.core.granularity`), > 0
    zero_point : int or integer ndarray of the parameter shape, inside ``qrange``
    qrange : str, (int, int) or QRange, default "int8"
    axis, block_size : granularity, as in :func:`refquant.core.uniform.quantize`
    window : {"code", "range", "none"}
    scale_op : {"divide", "multiply_reciprocal"}
    rounding : {"half_even", "half_away", "half_up", "floor"} — only for "code"

    Returns
    -------
    dx : ndarray of the working dtype, shape of ``x``
    """
    r, xa, d, s, z, wd = _prepare(dy, x, scale, zero_point, qrange, axis, block_size, window, scale_op, rounding)
    if window == "none":
        return d.copy()
    xv, (sv, zv) = views(xa, [s, z], axis, block_size)
    with np.errstate(over="ignore", invalid="ignore"):
        v = (xv / sv if scale_op == "divide" else xv * sv).astype(wd, copy=False)
    zf = zv.astype(np.float64)
    if window == "code":
        k = round_array(v.astype(np.float64), rounding) + zf  # exact: integers of < 53 bits, or ±Inf
        inside = (k >= r.qmin) & (k <= r.qmax)
    else:
        inside = (v >= r.qmin - zf) & (v <= r.qmax - zf)
    return d * inside.reshape(xa.shape).astype(wd)


def ste_grad_ref(dy: ArrayLike, x: ArrayLike, scale: ArrayLike, zero_point: ArrayLike = 0,
                 qrange: QRangeLike = "int8", *, axis: int | None = None, block_size: int = 0, window: str = "code",
                 scale_op: str = "divide", rounding: str = "half_even") -> np.ndarray:
    """Loop twin of :func:`ste_grad`: one element at a time, rounding by
    :func:`refquant.core.rounding.round_scalar_ref` (exact rationals)."""
    r, xa, d, s, z, wd = _prepare(dy, x, scale, zero_point, qrange, axis, block_size, window, scale_op, rounding)
    out = np.empty(xa.shape, wd)
    for idx in np.ndindex(xa.shape):
        pi = param_index(idx, axis, block_size)
        si, zi = (s[pi] if s.ndim else s[()]), int(z[pi] if z.ndim else z[()])
        with np.errstate(over="ignore"):
            v = xa[idx] / si if scale_op == "divide" else xa[idx] * si
        if window == "none":
            w = True
        elif window == "code":
            k = round_scalar_ref(float(v), rounding)
            w = r.qmin <= k + zi <= r.qmax
        else:
            w = r.qmin - zi <= v <= r.qmax - zi
        out[idx] = d[idx] * wd.type(w)
    return out
