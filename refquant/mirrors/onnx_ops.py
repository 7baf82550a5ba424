"""ONNX quantization operators, bit-exact with the ONNX specs (opset 21+) and ``onnx.reference``.

Thin wrappers over :mod:`refquant.uniform`: ONNX is refquant's default convention (divide by
the scale, round half to even, add the zero point after rounding, saturate)::

    QuantizeLinear:   y = saturate(round_half_even(x / y_scale) + y_zero_point)
    DequantizeLinear: y = (x - x_zero_point) * x_scale

Types are named as ONNX names them, in lower case: "int2", "uint2", "int4", "uint4", "int8",
"uint8", "int16", "uint16", and the float types "float8e4m3fn", "float8e5m2", "float4e2m1".
Sub-byte results travel unpacked in int8 / uint8 arrays holding the type's range (use
:func:`refquant.packing.pack` for ONNX's packed layout); so an int8 zero point may name type
"int4" when ``output_dtype="int4"`` says so. Float results travel as their bit patterns in uint8
(NumPy has no float8 dtype); ``dequantize_linear(..., x_dtype="float8e4m3fn")`` reads them back.
Float quantization is ``y = saturate(round_nearest_even(x / y_scale))`` with no zero point
(see :mod:`refquant.minifloat`).

Where refquant is stricter than the reference implementation: NaN input raises ValueError
(the reference casts NaN to an arbitrary integer), and values whose quotient exceeds the int32
range saturate (the reference's ``rint(x).astype(int32)`` overflows there).

References
----------
ONNX Operators: QuantizeLinear-21, DequantizeLinear-21, DynamicQuantizeLinear-11,
MatMulInteger-10, QLinearMatMul-21 (https://onnx.ai/onnx/operators/).
``onnx/reference/ops/op_quantize_linear.py``, ``op_dequantize_linear.py``,
``op_dynamic_quantize_linear.py``, ``op_matmul_integer.py``, ``op_qlinear_matmul.py``.
"""
from __future__ import annotations

import numpy as np

from ..core._checks import block_size_value, float_array, int_array, positive_scale, to_float
from ..core.granularity import align, check_param
from ..integer.gemm import PackedMatrix, _operand, int_matmul
from ..formats.minifloat import FORMATS as _FLOAT_TYPES, minifloat_decode, minifloat_encode
from ..core.ranges import qrange as as_qrange
from ..core.uniform import dequantize, quantize
from ..core._types import ArrayLike, DTypeLike

ONNX_INT_TYPES = ("int2", "uint2", "int4", "uint4", "int8", "uint8", "int16", "uint16")
ONNX_FLOAT_TYPES = tuple(_FLOAT_TYPES)  # "float8e4m3fn", "float8e5m2", "float4e2m1": bit patterns in uint8
_CARRIER = {"int2": "int8", "int4": "int8", "uint2": "uint8", "uint4": "uint8"}  # sub-byte travels in 8 bits


def _output_type(zero_point, output_dtype) -> str:
    if output_dtype is not None and output_dtype not in ONNX_INT_TYPES + ONNX_FLOAT_TYPES:
        raise ValueError(f"output_dtype: unknown ONNX quantized type {output_dtype!r}; "
                         f"expected one of {ONNX_INT_TYPES + ONNX_FLOAT_TYPES}")
    if output_dtype in ONNX_FLOAT_TYPES:
        if zero_point is not None and np.any(np.asarray(zero_point) != 0):
            raise ValueError(f"y_zero_point must be 0 (or None) for the float type {output_dtype}")
        return output_dtype
    if zero_point is None:
        return output_dtype or "uint8"
    zname = np.asarray(zero_point).dtype.name
    if zname not in ONNX_INT_TYPES:
        raise ValueError(f"y_zero_point: dtype {zname} is not an ONNX quantized integer type {ONNX_INT_TYPES}")
    if output_dtype is not None and output_dtype != zname and _CARRIER.get(output_dtype) != zname:
        raise ValueError(f"output_dtype={output_dtype!r} does not match y_zero_point's dtype {zname}")
    return output_dtype or zname


def _same_shape(scale, zero_point, sname: str, zname: str):
    """ONNX: the zero point has the scale's shape (size-1 shapes count as equal)."""
    if zero_point is not None and np.shape(zero_point) != np.shape(scale) and not (
            np.size(zero_point) == 1 and np.size(scale) == 1):
        raise ValueError(f"{sname} and {zname} must have the same shape, got {np.shape(scale)} and "
                         f"{np.shape(zero_point)}")


def _granularity(scale: np.ndarray, ndim: int, axis: int, block_size: int, name: str):
    """ONNX's rule: a size-1 scale is per-tensor, a 1-D one per-axis, else blocked."""
    block_size_value(block_size)
    if scale.size == 1 and scale.ndim <= 1:
        return None, 0
    if block_size == 0 and scale.ndim != 1:
        raise ValueError(f"{name}: per-axis quantization needs a 1-D scale, got shape {scale.shape} "
                         "(set block_size for blocked quantization)")
    return axis, block_size


def quantize_linear(x: ArrayLike, y_scale: ArrayLike, y_zero_point: ArrayLike | None = None, *, axis: int = 1,
                    block_size: int = 0, output_dtype: DTypeLike | None = None, saturate: bool = True) -> np.ndarray:
    """ONNX QuantizeLinear: ``y = saturate(round_half_even(x / y_scale) + y_zero_point)``.

    Parameters
    ----------
    x : ndarray of float (float32, float16, float64) or int32
    y_scale : ndarray — scalar (per-tensor), 1-D of length ``x.shape[axis]`` (per-axis), or of
        ``x.ndim`` dimensions with ``ceil(x.shape[axis] / block_size)`` along ``axis`` (blocked)
    y_zero_point : ndarray of the output integer dtype, same shape as ``y_scale``; default 0
    axis : int, default 1
    block_size : int, default 0
    output_dtype : str, ONNX type name; default: the zero point's dtype, else "uint8"
    saturate : bool, default True — float8 outputs only (ONNX attribute ``saturate``): overflow to
        ±max, or (False) to NaN for float8e4m3fn and ±Inf for float8e5m2; float4e2m1 always saturates

    Returns
    -------
    y : ndarray of int8 / uint8 / int16 / uint16 (sub-byte types in int8 / uint8), shape of ``x``
    """
    tname = _output_type(y_zero_point, output_dtype)
    s = np.asarray(y_scale)
    if s.dtype.kind != "f":
        raise ValueError(f"y_scale: expected a floating-point array, got dtype {s.dtype}")
    xa = float_array(x, "x", check_nan=False)
    _same_shape(s, y_zero_point, "y_scale", "y_zero_point")
    ax, bs = _granularity(s, xa.ndim, axis, block_size, "y_scale")
    if tname in ONNX_FLOAT_TYPES:
        sv = check_param(positive_scale(s, "y_scale"), xa.shape, ax, bs, "y_scale")
        xv, (sv,) = align(xa, [sv], ax, bs)
        with np.errstate(over="ignore"):  # x / y_scale beyond the float type: ±Inf, saturated by the encoder
            v = (xv / sv).reshape(xa.shape)
        return minifloat_encode(v, tname, saturate=saturate)
    # checked here so that errors name ONNX's inputs (y_scale, y_zero_point), not the core's arguments
    check_param(positive_scale(s, "y_scale"), xa.shape, ax, bs, "y_scale")
    zp = 0 if y_zero_point is None else np.asarray(y_zero_point)
    r = as_qrange(tname)
    if y_zero_point is not None:
        check_param(int_array(zp, "y_zero_point", r.qmin, r.qmax, f" ({tname})"), xa.shape, ax, bs, "y_zero_point")
    if ax is None:
        s = s.reshape(())
        zp = zp if np.ndim(zp) == 0 else zp.reshape(())
    q = quantize(xa, s, zp, as_qrange(tname), axis=ax, block_size=bs)
    return q.astype(_CARRIER.get(tname, tname), copy=False)


def dequantize_linear(x: ArrayLike, x_scale: ArrayLike, x_zero_point: ArrayLike | None = None, *, axis: int = 1,
                      block_size: int = 0, x_dtype: str | None = None) -> np.ndarray:
    """ONNX DequantizeLinear: ``y = (x - x_zero_point) * x_scale``, in ``x_scale``'s dtype.

    ``x`` is any ONNX integer type (int2..uint16 carried in 8/16-bit arrays, or int32 with a zero
    point of 0). ``x_zero_point`` must have ``x``'s dtype. int32 ``x`` is converted to float32 before
    the multiply, as the reference implementation and onnxruntime do: beyond 2^24 that rounds twice
    (:func:`refquant.uniform.dequantize` rounds the exact product once). A float16 ``x_scale`` is applied in
    float32 and the product cast to float16, as the reference implementation does.
    ``x_dtype="float8e4m3fn" | "float8e5m2" | "float4e2m1"`` reads ``x`` (uint8) as bit patterns of
    that float type: ``y = decode(x) * x_scale`` (NaN / Inf codes decode to NaN / Inf).
    """
    if x_dtype is not None:
        if x_dtype not in ONNX_FLOAT_TYPES:
            raise ValueError(f"x_dtype: expected one of {ONNX_FLOAT_TYPES}, got {x_dtype!r}")
        if x_zero_point is not None and np.any(np.asarray(x_zero_point) != 0):
            raise ValueError(f"x_zero_point must be 0 (or None) for the float type {x_dtype}")
        xf = minifloat_decode(int_array(x, "x"), x_dtype)
        s = positive_scale(x_scale, "x_scale")
        ax, bs = _granularity(s, xf.ndim, axis, block_size, "x_scale")
        sv = check_param(s, xf.shape, ax, bs, "x_scale")
        xv, (sv,) = align(xf, [sv.astype(np.promote_types(sv.dtype, np.float32))], ax, bs)
        return (xv * sv).reshape(xf.shape).astype(s.dtype)
    xa = int_array(x, "x")
    if xa.dtype.name not in ONNX_INT_TYPES + ("int32",):
        raise ValueError(f"x: dtype {xa.dtype} is not an ONNX quantized integer type")
    s = np.asarray(x_scale)
    if s.dtype.kind != "f":
        raise ValueError(f"x_scale: expected a floating-point array, got dtype {s.dtype}")
    zp = 0
    if x_zero_point is not None:
        zp = np.asarray(x_zero_point)
        if zp.dtype != xa.dtype:
            raise ValueError(f"x_zero_point has dtype {zp.dtype} but x has dtype {xa.dtype}; ONNX requires the same type")
        if xa.dtype == np.int32 and np.any(zp != 0):
            raise ValueError("x_zero_point must be 0 for int32 x")
    _same_shape(s, x_zero_point, "x_scale", "x_zero_point")
    ax, bs = _granularity(s, xa.ndim, axis, block_size, "x_scale")
    check_param(positive_scale(s, "x_scale"), xa.shape, ax, bs, "x_scale")
    if x_zero_point is not None:
        check_param(zp, xa.shape, ax, bs, "x_zero_point")
    if ax is None:
        s = s.reshape(())
        zp = zp if np.ndim(zp) == 0 else zp.reshape(())
    sw = s.astype(np.promote_types(s.dtype, np.float32))
    if xa.dtype == np.int32:
        # the reference (and onnxruntime) converts x to float32 first: above 2^24 that rounds, and the
        # product rounds again; mirrored here (refquant.dequantize rounds the exact product once)
        xv, (sv,) = align(xa.astype(np.float32), [check_param(sw, xa.shape, ax, bs, "x_scale")], ax, bs)
        with np.errstate(over="ignore"):
            y = np.multiply(xv, sv, dtype=sw.dtype).reshape(xa.shape)
    else:  # codes of <= 16 bits and their differences are exact in float32: one rounding, as the reference
        y = dequantize(xa, sw, zp, axis=ax, block_size=bs)
    with np.errstate(over="ignore"):
        return y.astype(s.dtype, copy=False)


def dynamic_quantize_linear(x: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ONNX DynamicQuantizeLinear: uint8 quantization with a range computed from ``x``.

    In float32, as the operator and its reference implementation::

        x_max = max(0, max(x));  x_min = min(0, min(x))
        y_scale = (x_max - x_min) / 255            (1 / 255 when x_max == x_min, e.g. all zeros)
        y_zero_point = round_half_even(clamp(0 - x_min / y_scale, 0, 255))
        y = saturate(round_half_even(x / y_scale) + y_zero_point)

    Parameters
    ----------
    x : ndarray of float32 (other floats are converted), finite

    Returns
    -------
    y : ndarray of uint8, shape of ``x``; y_scale : 0-d float32; y_zero_point : 0-d uint8
    """
    xa = float_array(x, "x")
    if not np.all(np.isfinite(xa)):
        raise ValueError("x must be finite: DynamicQuantizeLinear takes its range from the data")
    xa = to_float(xa, np.float32, "x")
    f = np.float32
    x_max = f(max(0.0, xa.max())) if xa.size else f(0)
    x_min = f(min(0.0, xa.min())) if xa.size else f(0)
    with np.errstate(over="ignore"):
        y_scale = (f(1) if x_max == x_min else f(x_max - x_min)) / f(255)
    if not np.isfinite(y_scale):
        raise ValueError("x: its range overflows float32 (max - min is infinite)")
    if y_scale == 0:  # e.g. a range of 1e-45: (max - min) / 255 underflows; the reference divides by 0
        raise ValueError(f"x: its range {x_max - x_min!r} is too small: y_scale underflows to 0 in float32")
    zp = np.rint(np.clip(f(0) - x_min / y_scale, 0, 255)).astype(np.uint8)
    y = quantize(xa, y_scale, zp, "uint8")
    return y, np.asarray(y_scale, dtype=np.float32), np.asarray(zp, dtype=np.uint8)


def matmul_integer(a: ArrayLike, b: ArrayLike, a_zero_point: ArrayLike | None = None,
                   b_zero_point: ArrayLike | None = None) -> np.ndarray:
    """ONNX MatMulInteger: ``(a - a_zero_point) @ (b - b_zero_point)`` accumulated exactly, as int32.

    ``a`` : int8/uint8 ndarray of shape (..., M, K); ``b`` : int8/uint8 of shape (..., K, N);
    ``a_zero_point`` scalar or per-row (M,); ``b_zero_point`` scalar or per-column (N,), each of its
    operand's dtype. Runs on :func:`refquant.kernels.int_matmul` (float32 BLAS in exact chunks); a sum
    outside the int32 range raises ValueError (it never wraps).
    """
    for name, z, op, v in (("a_zero_point", a_zero_point, "a", a), ("b_zero_point", b_zero_point, "b", b)):
        if not isinstance(v, PackedMatrix):
            _operand(v, op)  # the operand's own errors first: they name it
        if z is not None and np.asarray(z).dtype != np.asarray(v).dtype:
            raise ValueError(f"{name} has dtype {np.asarray(z).dtype} but {op} has dtype {np.asarray(v).dtype}; "
                             "ONNX requires the same type")
    return int_matmul(a, b, a_zero_point, b_zero_point)


def qlinear_matmul(a: ArrayLike, b: ArrayLike, *, a_scale: ArrayLike, a_zero_point: ArrayLike, b_scale: ArrayLike,
                   b_zero_point: ArrayLike, y_scale: ArrayLike, y_zero_point: ArrayLike) -> np.ndarray:
    """ONNX QLinearMatMul: integer matmul requantized to the output type.

    As the ONNX reference implementation::

        C = (a - a_zero_point) @ (b - b_zero_point)                  exact integers
        m = a_scale * b_scale / y_scale                              in the scales' dtype (float32)
        y = saturate(round_half_even(C * m + y_zero_point))           C * m in float64

    ``a_scale`` / ``a_zero_point`` are per-tensor or per-row (M,), ``b_scale`` / ``b_zero_point``
    per-tensor or per-column (N,), ``y_scale`` / ``y_zero_point`` per-tensor. The output dtype is
    ``y_zero_point``'s (int8 or uint8). The six quantization inputs are keyword-only (ONNX's input
    names): ``qlinear_matmul(a, b, a_scale=..., a_zero_point=..., b_scale=..., ...)``.
    """
    C = matmul_integer(a, b, a_zero_point, b_zero_point).astype(np.float64)
    yz = np.asarray(y_zero_point)
    if yz.dtype not in (np.int8, np.uint8) or yz.size != 1:
        raise ValueError(f"y_zero_point: expected an int8 or uint8 scalar, got {yz.dtype} of shape {yz.shape}")
    scales = []
    for name, v, per, n in (("a_scale", a_scale, "row", C.shape[-2]), ("b_scale", b_scale, "column", C.shape[-1]),
                            ("y_scale", y_scale, None, 1)):
        s = np.asarray(v)
        if s.dtype.kind != "f" or not np.all(np.isfinite(s)) or not np.all(s > 0):
            raise ValueError(f"{name} must be a finite float > 0")
        if s.size != 1 and (per is None or s.shape != (n,)):
            raise ValueError(f"{name}: expected a scalar{'' if per is None else f' or per-{per} ({n},)'}, got {s.shape}")
        scales.append(s.reshape(()) if s.size == 1 else s.reshape((n, 1) if per == "row" else (1, n)))
    with np.errstate(over="ignore", under="ignore"):
        m = scales[0] * scales[1] / scales[2]  # float32 arithmetic, as the reference
    if not (np.all(np.isfinite(m)) and np.all(m > 0)):
        raise ValueError("a_scale, b_scale, y_scale: the multiplier a_scale·b_scale/y_scale is 0 or Inf in float32")
    r = as_qrange(yz.dtype.name)
    D = np.rint(C * m.astype(np.float64) + float(yz.reshape(())))
    return np.clip(D, r.qmin, r.qmax).astype(yz.dtype)
