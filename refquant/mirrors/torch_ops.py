"""PyTorch's quantization semantics in NumPy, bit-exact, without PyTorch.

Every PyTorch kernel rounds the scale to float32, multiplies by the float32 reciprocal
``inv = float32(1 / float32(scale))`` instead of dividing, and rounds half to even. They differ in
*where the zero point enters* and *how often the arithmetic rounds* — by one code on exact ties
(x = [2.5, 3.5], scale 1, zero point 1: ``quantize_per_tensor`` gives [4, 4], the
fake-quantizer [3, 5]) and, rarely, next to them. What PyTorch 2.13 CPU computes (x86-64, FBGEMM,
AVX2 + FMA; read in its source and confirmed on the installed binary)::

    quantize_per_tensor  quint8 / qint8    q = clamp(rne(fma(x, inv, zp)), qmin, qmax)          (T1)
    quantize_per_channel quint8 / qint8    q = clamp(rne(fl(fl(x · inv) + zp)), qmin, qmax)     (T2)
      (integer zero points)
    quantize_per_channel all four dtypes   q = clamp(rne(fl(fl(x · inv) + zp)), qmin, qmax)     (T2)
      (float zero points: per_channel_affine_float_qparams, the embedding scheme)
    quantize_per_tensor  quint4x2/quint2x4 q = clamp(rne(fl(x · inv)) + zp, qmin, qmax)          (T3)
    fake_quantize_per_*_affine             q = clamp(rne(fl(x · inv)) + zp, quant_min, quant_max) (T3)
    fake_quantize_per_channel_affine       q = clamp(rne(fma(x, inv, zp)), quant_min, quant_max)  (T4)
      (float zero points; output fl32((q − zp) · scale) formed in double)

``fl`` rounds to float32, ``fma`` is a fused multiply-add rounded once to float32 (FBGEMM's
``QuantizeAvx2<T, LEGACY=true>``: ``_mm256_fmadd_ps(x, inv, zp)`` then ``_mm256_cvtps_epi32``),
``rne`` rounds half to even. In refquant's names: (T2) is ``scale_op="multiply_reciprocal",
zero_point_order="before_rounding"``, (T3) is ``scale_op="multiply_reciprocal",
zero_point_order="after_rounding"``, and (T1) is (T2) with the multiply and the add fused, which
:func:`fma_float32` emulates exactly. Codes: quint8 [0, 255], qint8 [-128, 127], quint4x2 [0, 15],
quint2x4 [0, 3]. The observers (:func:`minmax_qparams`) divide symmetric ranges by
``(quant_max - quant_min) / 2`` (127.5 for qint8) and use zero point 128 for symmetric quint8.

(T1) is what x86 CPUs with AVX2 and FMA3 (all since 2013) run; without them FBGEMM's source falls
back to its scalar ``Quantize<T, LEGACY=true>``, which computes (T2) — not checked here. The PyTorch
main-branch source we read passes ``LEGACY=false`` in ``quantize_val`` (zero point after rounding),
but the 2.13.0 wheel's ``at::native::quantize_val`` disassembles to ``mulss; addss; nearbyintf``
(before): we mirror the binary, and ``tests/data/torch_quantize_goldens.npz`` (its recorded output)
pins it.

Where refquant differs on purpose (PyTorch's result there is an artefact of an x86 conversion):
NaN raises ``ValueError`` (PyTorch returns qmax in (T1) and 0 elsewhere); ±Inf and huge values
always saturate, whereas PyTorch's ``lrintf`` overflows in two paths: sub-byte (T3) gives 0 for
``|x / scale| >= 2**63`` and ±Inf (``1e30`` → 0 for quint4x2), and the float-zero-point path keeps
the low 32 bits of ``lrintf``'s result (``3e9`` → 0, ``-3e9`` → qmax for quint8) and gives 0 for
±Inf. A zero point must be a code of the dtype (PyTorch accepts 0..255 for quint4x2 and quint2x4);
scales must be finite and > 0 (PyTorch does not check); axes are non-negative, as in PyTorch.

Quantization-aware training — the fake quantizers' gradients (straight-through, the mask of the
pre-clamp code: :mod:`refquant.mirrors.torch_qat`) and PyTorch's learnable fake quantizers (LSQ:
forward, and gradients for x, scale and zero point: :mod:`refquant.mirrors.torch_lsq`) — is public
here too: ``fake_quantize_per_{tensor,channel}_affine_backward``,
``fake_quantize_learnable_per_{tensor,channel}_affine`` and ``..._backward``.

References
----------
PyTorch ``aten/src/ATen/native/quantized/cpu/kernels/QuantizedOpKernels.cpp:
quantize_tensor_per_tensor_affine_cpu, quantize_tensor_per_channel_impl,
quantize_tensor_per_tensor_affine_sub_byte_cpu, quantize_tensor_per_channel_float_qparams_cpu,
fake_quantize_tensor_cachemask_kernel, fake_quant_per_channel_cachemask_cpu``;
``aten/src/ATen/native/quantized/AffineQuantizerBase.cpp: quantize_val,
quantize_val_float_qparams``; ``torch/ao/quantization/observer.py:
UniformQuantizationObserverBase._calculate_qparams, MinMaxObserver, PerChannelMinMaxObserver``;
FBGEMM ``include/fbgemm/QuantUtils.h: Quantize`` and ``src/QuantUtilsAvx2.cc: QuantizeAvx2``.
Knuth, The Art of Computer Programming vol. 2, section 4.2.2, Theorem B (the exact error of a
floating-point sum, "TwoSum"), used by :func:`fma_float32`.
"""
from __future__ import annotations

import numpy as np

from ..core._checks import axis_index, float_array, positive_scale
from ..core.ranges import qrange as as_qrange
from ..core._types import ArrayLike
from ..core.uniform import fake_quantize, qparams_from_range, quantize
from .fp32 import fma_float32  # public here too: refquant.torch_ops.fma_float32
from .torch_lsq import (  # noqa: F401 - the QAT mirrors, public here too
    fake_quantize_learnable_per_channel_affine, fake_quantize_learnable_per_channel_affine_backward,
    fake_quantize_learnable_per_tensor_affine, fake_quantize_learnable_per_tensor_affine_backward)
from .torch_qat import (  # noqa: F401
    fake_quantize_per_channel_affine_backward, fake_quantize_per_tensor_affine_backward)

_EPS = float(np.finfo(np.float32).eps)  # torch.finfo(torch.float32).eps, the observers' scale floor
QSCHEMES = ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric")
QDTYPES = {"quint8": (0, 255), "qint8": (-128, 127), "quint4x2": (0, 15), "quint2x4": (0, 3)}  # code ranges


def _dtype_range(dtype) -> tuple[int, int]:
    if dtype not in QDTYPES:
        raise ValueError(f"dtype: expected one of {tuple(QDTYPES)}, got {dtype!r}")
    return QDTYPES[dtype]


def _scale32(scale, name: str) -> np.ndarray:
    """PyTorch stores scales as double and rounds them to float32 in the kernel; refquant also
    requires what PyTorch leaves unchecked: the float32 scale and its reciprocal finite and > 0."""
    s = positive_scale(scale, name, np.float64).astype(np.float32)
    with np.errstate(over="ignore", divide="ignore"):
        inv = np.float32(1) / s
    if not (np.all(s > 0) and np.all(np.isfinite(inv))):
        raise ValueError(f"{name} must be a normal float32 number: its float32 reciprocal overflows")
    return s


def _x32(x) -> np.ndarray:
    """``x`` as float32, as PyTorch's ``.float()`` makes it: values beyond float32's range become ±Inf
    (which the quantizers then saturate); NaN raises."""
    xa = float_array(x, "x", check_nan=False)
    with np.errstate(over="ignore"):
        xa = xa.astype(np.float32, copy=False)
    if xa.size and np.isnan(xa).any():
        raise ValueError("x contains NaN; NaN has no quantized value (PyTorch returns qmax or 0)")
    return xa


def quantize_per_tensor(x: ArrayLike, scale: float, zero_point: int, dtype: str = "quint8") -> np.ndarray:
    """``torch.quantize_per_tensor(x, scale, zero_point, dtype).int_repr()``, one code per element.

    quint8 / qint8 (T1), with ``inv = fl32(1 / fl32(scale))`` and ``fma`` rounding once::

        q = clamp(rne(fma(x, inv, float32(zero_point))), qmin, qmax)

    quint4x2 / quint2x4 (T3): ``q = clamp(rne(fl32(x · inv)) + zero_point, 0, 2**bits − 1)``.

    ±Inf and out-of-range values saturate. ``torch.quantize_per_tensor(...).dequantize()`` is
    ``(q − zero_point) · fl32(scale)``, which is NOT ``fake_quantize_per_tensor_affine`` on ties:
    the fake-quantizer adds the zero point after rounding (T3).

    Parameters
    ----------
    x : ndarray of float, any shape (rounded to float32 first; PyTorch accepts only float32)
    scale : float, finite and > 0
    zero_point : int, a code of ``dtype``
    dtype : {"quint8", "qint8", "quint4x2", "quint2x4"}

    Returns
    -------
    q : ndarray of uint8 (int8 for qint8), shape of ``x``. For the sub-byte dtypes PyTorch's
        ``int_repr()`` is these codes packed two (four) to a byte, element 0 in the low bits,
        over the flattened tensor: :func:`refquant.core.packing.pack` with ``"uint4"`` (``"uint2"``).

    References
    ----------
    FBGEMM ``src/QuantUtilsAvx2.cc: QuantizeAvx2<T, LEGACY=true>`` (via ``Quantize``);
    PyTorch ``QuantizedOpKernels.cpp: quantize_tensor_per_tensor_affine_cpu,
    quantize_tensor_per_tensor_affine_sub_byte_cpu``.
    """
    lo, hi = _dtype_range(dtype)
    if not isinstance(zero_point, (int, np.integer)) or isinstance(zero_point, bool) or not lo <= zero_point <= hi:
        raise ValueError(f"zero_point must be an int in [{lo}, {hi}] for {dtype}, got {zero_point!r}")
    s = _scale32(scale, "scale")
    xa = _x32(x)
    if dtype in ("quint4x2", "quint2x4"):
        return quantize(xa, s, int(zero_point), (lo, hi), scale_op="multiply_reciprocal",
                        zero_point_order="after_rounding")
    v = fma_float32(xa, np.float32(1) / s, np.float32(zero_point))
    return np.clip(np.rint(v), lo, hi).astype(np.int8 if lo < 0 else np.uint8)


def quantize_per_channel(x: ArrayLike, scales: ArrayLike, zero_points: ArrayLike, axis: int, dtype: str =
                         "quint8") -> np.ndarray:
    """``torch.quantize_per_channel(x, scales, zero_points, axis, dtype).int_repr()``, one code per element.

    For channel ``c`` (index ``c`` along ``axis``), with ``inv_c = fl32(1 / fl32(scales[c]))`` (T2)::

        q = clamp(rne(fl32(fl32(x · inv_c) + zero_points[c])), qmin, qmax)

    — the zero point enters before rounding, in a separately rounded float32 add (no FMA). With
    integer ``zero_points`` (qscheme ``per_channel_affine``) PyTorch supports quint8 and qint8 only;
    with float ``zero_points`` (``per_channel_affine_float_qparams``, for embedding tables: the zero
    point may be fractional, e.g. ``-min / scale``) all four dtypes, with the same arithmetic.

    Parameters
    ----------
    x : ndarray of float, ``ndim >= 1`` (rounded to float32 first)
    scales : ndarray of float, shape ``(x.shape[axis],)``, finite and > 0
    zero_points : ndarray, shape ``(x.shape[axis],)``; integer (codes of ``dtype``) or float (finite)
    axis : int, ``0 <= axis < x.ndim`` (PyTorch refuses negative axes)
    dtype : {"quint8", "qint8", "quint4x2", "quint2x4"}

    Returns
    -------
    q : ndarray of uint8 (int8 for qint8), shape of ``x`` (sub-byte ``int_repr()``: pack as in
        :func:`quantize_per_tensor`)

    References
    ----------
    PyTorch ``QuantizedOpKernels.cpp: quantize_tensor_per_channel_impl`` →
    ``AffineQuantizerBase.cpp: quantize_val`` (2.13.0 binary: ``mulss; addss; nearbyintf``) and
    ``quantize_tensor_per_channel_float_qparams_cpu`` → ``quantize_val_float_qparams``
    (``mulss; addss; cvtss2si``).
    """
    lo, hi = _dtype_range(dtype)
    xa = _x32(x)
    if xa.ndim == 0:
        raise ValueError("x must have at least one dimension for per-channel quantization")
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool) or not 0 <= axis < xa.ndim:
        raise ValueError(f"axis must be an int in [0, {xa.ndim}) for x of shape {xa.shape}, got {axis!r}")
    ch = xa.shape[axis]
    s = _scale32(scales, "scales")
    zp = np.asarray(zero_points)
    for name, v in (("scales", s), ("zero_points", zp)):
        if v.shape != (ch,):
            raise ValueError(f"{name} has shape {v.shape}; expected ({ch},) = x.shape[axis]")
    if zp.dtype.kind in "iu":
        if dtype not in ("quint8", "qint8"):
            raise ValueError(f"dtype: PyTorch quantizes {dtype} per channel only with float zero_points "
                             "(per_channel_affine_float_qparams)")
        if ch and (zp.min() < lo or zp.max() > hi):
            raise ValueError(f"zero_points must lie in [{lo}, {hi}] for {dtype}, got [{zp.min()}, {zp.max()}]")
        return quantize(xa, s, zp.astype(np.int64), (lo, hi), axis=int(axis), scale_op="multiply_reciprocal",
                        zero_point_order="before_rounding")
    if zp.dtype.kind != "f" or not np.all(np.isfinite(zp)):
        raise ValueError(f"zero_points must be integers or finite floats, got dtype {zp.dtype}")
    shape = [1] * xa.ndim
    shape[axis] = ch
    with np.errstate(over="ignore"):
        v = xa * (np.float32(1) / s).reshape(shape)        # float32 product, rounded
        v = v + zp.astype(np.float32).reshape(shape)       # float32 add, rounded
    return np.clip(np.rint(v), lo, hi).astype(np.int8 if lo < 0 else np.uint8)


def _quant_range(quant_min, quant_max):
    for name, v in (("quant_min", quant_min), ("quant_max", quant_max)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise ValueError(f"{name} must be an int, got {v!r}")
    if quant_min > quant_max:
        raise ValueError(f"quant_min ({quant_min}) > quant_max ({quant_max})")
    if not -2**15 <= int(quant_min) <= 2**16 - 1:
        raise ValueError(f"quant_min must lie in [-2^15, 2^16 - 1] (refquant's integer ranges: up to 16 bits), "
                         f"got {quant_min}")
    try:
        return as_qrange((int(quant_min), int(quant_max)))
    except ValueError:
        raise ValueError(f"quant_max: [quant_min, quant_max] = [{quant_min}, {quant_max}] does not fit an integer "
                         "range of up to 16 bits (refquant's integer ranges)") from None


def fake_quantize_per_tensor_affine(x: ArrayLike, scale: float, zero_point: int, quant_min: int, quant_max:
                                    int) -> np.ndarray:
    """``torch.fake_quantize_per_tensor_affine``: float32 in, float32 out.

    ``x̂ = (clamp(nearbyint(x * float32(1 / scale)) + zero_point, quant_min, quant_max) − zero_point) * scale``
    with ``scale`` rounded to float32 first.

    Not the same convention as :func:`quantize_per_tensor`: the fake-quantizer adds the zero point
    *after* rounding (T3), ``quantize_per_tensor`` (quint8 / qint8) before, fused (T1). With
    x = [2.5, 3.5], scale 1, zero point 1: this gives [2, 4], ``quantize_per_tensor(...).dequantize()``
    gives [3, 3]. A model trained with fake quantization is therefore off by one code on ties once
    converted. Reference: ``QuantizedOpKernels.cpp: fake_quantize_tensor_cachemask_kernel``.
    """
    r = _quant_range(quant_min, quant_max)
    if not isinstance(zero_point, (int, np.integer)) or not quant_min <= zero_point <= quant_max:
        raise ValueError(f"zero_point must be an int in [quant_min, quant_max], got {zero_point!r}")
    s = positive_scale(scale, "scale", np.float32)
    if s.ndim:
        raise ValueError(f"scale: expected one number for per-tensor fake quantization, got shape {s.shape}")
    return fake_quantize(_x32(x), s, int(zero_point), r, scale_op="multiply_reciprocal")


def fake_quantize_per_channel_affine(x: ArrayLike, scale: ArrayLike, zero_point: ArrayLike, axis: int, quant_min: int,
                                     quant_max: int) -> np.ndarray:
    """``torch.fake_quantize_per_channel_affine``: per-channel ``scale`` (float32) and ``zero_point``
    of shape ``(x.shape[axis],)``.

    Integer zero points: same arithmetic as the per-tensor op — zero point after rounding (T3),
    unlike :func:`quantize_per_channel` (T2), which adds it before. Float zero points (PyTorch takes
    float32 and float16; refquant rounds any float to float32): the kernel's ``zero_point + x * inv``
    is contracted into a fused multiply-add and the output formed in double (T4)::

        q = clamp(rne(fma(x, inv, zp)), quant_min, quant_max)
        y = fl32(fl64(fl64(q − zp) · scale))

    Where refquant differs (float zero points): ``|x / scale| >= 2**63`` and ±Inf saturate to their
    side; PyTorch's ``lrintf`` overflows to ``LONG_MIN`` there and clamps them to ``quant_min``.
    The gradient is :func:`refquant.mirrors.torch_qat.fake_quantize_per_channel_affine_backward`.
    Reference: ``QuantizedOpKernels.cpp: _fake_quant_per_channel_cachemask_cpu_helper``.
    """
    r = _quant_range(quant_min, quant_max)
    xa = _x32(x)
    zp = np.asarray(zero_point)
    scale = positive_scale(scale, "scale", np.float32)
    if zp.dtype.kind != "f":
        if zp.dtype.kind in "iu" and zp.size and not (quant_min <= zp.min() and zp.max() <= quant_max):
            raise ValueError(f"zero_point must lie in [quant_min, quant_max] = [{quant_min}, {quant_max}], got values "
                             f"in [{zp.min()}, {zp.max()}]")
        return fake_quantize(xa, scale, zero_point, r, axis=axis, scale_op="multiply_reciprocal")
    if xa.ndim == 0:
        raise ValueError("x must have at least one dimension for per-channel fake quantization")
    a = axis_index(axis, xa.ndim)
    ch = xa.shape[a]
    s = _scale32(scale, "scale")
    if s.shape != (ch,) or zp.shape != (ch,):
        raise ValueError(f"scale has shape {s.shape}, zero_point {zp.shape}; expected ({ch},) = x.shape[axis]")
    with np.errstate(over="ignore"):
        z = zp.astype(np.float32)
    if not np.all(np.isfinite(z)):
        raise ValueError("zero_point must be finite in float32")
    if xa.size and np.isnan(xa).any():
        raise ValueError("x contains NaN; NaN has no quantized value")
    shape = [1] * xa.ndim
    shape[a] = ch
    s, z = s.reshape(shape), z.reshape(shape)
    q = np.clip(np.rint(fma_float32(xa, np.float32(1) / s, z)), r.qmin, r.qmax) + 0.0  # lrintf: an integer, no -0
    return ((q.astype(np.float64) - z) * s.astype(np.float64)).astype(np.float32)


def minmax_qparams(x: ArrayLike, *, dtype: str = "quint8", qscheme: str = "per_tensor_affine", axis: int = 0,
                   reduce_range: bool = False) -> tuple[np.ndarray, np.ndarray]:
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
    xa = _x32(x)
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
        if xa.ndim == 0:
            raise ValueError("x must have at least one dimension for a per-channel scheme (its channel axis)")
        a = axis_index(axis, xa.ndim)
        flat = np.moveaxis(xa, a, 0).reshape(xa.shape[a], -1)  # (C, rest)
        lo, hi = flat.min(axis=1), flat.max(axis=1)
    else:
        lo, hi = xa.min(), xa.max()
    symmetric = qscheme.endswith("symmetric")
    scale, zp = qparams_from_range(lo, hi, r, symmetric=symmetric, symmetric_divisor="half_range", eps=_EPS)
    return scale, zp.astype(np.int64)
