"""PyTorch's quantization semantics in NumPy, bit-exact, without PyTorch.

PyTorch differs from ONNX in two places, both of which show up as off-by-one codes:

* its kernels multiply by a float32 reciprocal instead of dividing:
  ``q = clamp(nearbyint(x * (1.0f / scale)) + zero_point, quant_min, quant_max)``, then
  ``x̂ = (q - zero_point) * scale``, all in float32 (``scale_op="multiply_reciprocal"``);
* its symmetric observers divide by ``(quant_max - quant_min) / 2`` (127.5 for qint8), not by
  127 (``symmetric_divisor="half_range"``), and use zero point 128 for quint8.

Where refquant differs on purpose: ±Inf saturates (PyTorch casts Inf to int64, which is
undefined behaviour in C++) and NaN raises ValueError.

References
----------
PyTorch ``aten/src/ATen/native/quantized/cpu/kernels/QuantizedOpKernels.cpp:
fake_quantize_tensor_cachemask_kernel`` and ``fake_quant_per_channel_cachemask_cpu``;
``torch/ao/quantization/observer.py: UniformQuantizationObserverBase._calculate_qparams,
MinMaxObserver, PerChannelMinMaxObserver``; FBGEMM ``QuantUtils.h: Quantize``.
"""
from __future__ import annotations

import numpy as np

from ..core._checks import axis_index, float_array
from ..core.ranges import qrange as as_qrange
from ..core.uniform import fake_quantize, qparams_from_range

_EPS = float(np.finfo(np.float32).eps)  # torch.finfo(torch.float32).eps, the observers' scale floor
QSCHEMES = ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric")


def _quant_range(quant_min, quant_max):
    for name, v in (("quant_min", quant_min), ("quant_max", quant_max)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise ValueError(f"{name} must be an int, got {v!r}")
    if quant_min > quant_max:
        raise ValueError(f"quant_min ({quant_min}) > quant_max ({quant_max})")
    return as_qrange((int(quant_min), int(quant_max)))


def fake_quantize_per_tensor_affine(x, scale: float, zero_point: int, quant_min: int, quant_max: int) -> np.ndarray:
    """``torch.fake_quantize_per_tensor_affine``: float32 in, float32 out.

    ``x̂ = (clamp(nearbyint(x * float32(1 / scale)) + zero_point, quant_min, quant_max) − zero_point) * scale``
    with ``scale`` rounded to float32 first.
    """
    r = _quant_range(quant_min, quant_max)
    if not isinstance(zero_point, (int, np.integer)) or not quant_min <= zero_point <= quant_max:
        raise ValueError(f"zero_point must be an int in [quant_min, quant_max], got {zero_point!r}")
    xa = float_array(x, "x", check_nan=False).astype(np.float32, copy=False)
    return fake_quantize(xa, np.float32(scale), int(zero_point), r, scale_op="multiply_reciprocal")


def fake_quantize_per_channel_affine(x, scale, zero_point, axis: int, quant_min: int, quant_max: int) -> np.ndarray:
    """``torch.fake_quantize_per_channel_affine``: per-channel ``scale`` (float32) and integer
    ``zero_point`` of shape ``(x.shape[axis],)``; same arithmetic as the per-tensor op."""
    r = _quant_range(quant_min, quant_max)
    xa = float_array(x, "x", check_nan=False).astype(np.float32, copy=False)
    return fake_quantize(xa, np.asarray(scale, dtype=np.float32), zero_point, r, axis=axis,
                         scale_op="multiply_reciprocal")


def minmax_qparams(x, *, dtype: str = "quint8", qscheme: str = "per_tensor_affine", axis: int = 0,
                   reduce_range: bool = False):
    """Scale and zero point as ``MinMaxObserver`` / ``PerChannelMinMaxObserver`` compute them.

    In float32, with ``min_neg = min(min x, 0)`` and ``max_pos = max(max x, 0)``::

        affine:     scale = max((max_pos - min_neg) / (quant_max - quant_min), eps)
                    zero_point = clamp(quant_min - round_half_even(min_neg / scale), quant_min, quant_max)
        symmetric:  scale = max(max(-min_neg, max_pos) / ((quant_max - quant_min) / 2), eps)
                    zero_point = 0 (qint8) or 128 (quint8; reduce_range refused, as PyTorch does)

    ``eps`` is float32 machine epsilon; quint8 is [0, 255] and qint8 [-128, 127]; ``reduce_range``
    drops one bit: [0, 127] and [-64, 63].

    Parameters
    ----------
    x : ndarray of float (converted to float32)
    dtype : {"quint8", "qint8"}
    qscheme : {"per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric"}
    axis : int — the channel axis (``ch_axis``) for per-channel schemes
    reduce_range : bool

    Returns
    -------
    scale : ndarray of float32, shape () or (x.shape[axis],)
    zero_point : ndarray of int64, same shape
    """
    if dtype not in ("quint8", "qint8"):
        raise ValueError(f"dtype: expected 'quint8' or 'qint8', got {dtype!r}")
    if qscheme not in QSCHEMES:
        raise ValueError(f"qscheme: unknown {qscheme!r}; expected one of {QSCHEMES}")
    xa = float_array(x, "x").astype(np.float32, copy=False)
    if xa.size == 0:
        raise ValueError("x is empty; the observer has no range")
    if not np.all(np.isfinite(xa)):
        raise ValueError("x contains Inf; the observer's range must be finite")
    signed = dtype == "qint8"
    if reduce_range and not signed and qscheme.endswith("symmetric"):
        raise ValueError("reduce_range: PyTorch does not reduce the range of symmetric quint8 (its observer raises)")
    lim = ((-64, 63) if reduce_range else (-128, 127)) if signed else ((0, 127) if reduce_range else (0, 255))
    r = as_qrange(lim)
    if qscheme.startswith("per_channel"):
        a = axis_index(axis, xa.ndim)
        flat = np.moveaxis(xa, a, 0).reshape(xa.shape[a], -1)  # (C, rest)
        lo, hi = flat.min(axis=1), flat.max(axis=1)
    else:
        lo, hi = xa.min(), xa.max()
    symmetric = qscheme.endswith("symmetric")
    scale, zp = qparams_from_range(lo, hi, r, symmetric=symmetric, symmetric_divisor="half_range", eps=_EPS)
    return scale, zp.astype(np.int64)
