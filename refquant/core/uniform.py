"""Uniform (affine and symmetric) quantization: parameters, quantize, dequantize, fake-quantize.

The one convention of refquant::

    x ≈ scale · (q − zero_point)                                          (1)
    q = clamp(round(x / scale) + zero_point, qmin, qmax)                  (2)

``scale`` is the step size (never its reciprocal); ``zero_point`` is the integer code of the
real value 0, so 0 is always exactly representable. Equation (2) has three conventions that
frameworks disagree on; each is a named argument here:

* ``rounding`` — see :mod:`refquant.rounding` (default ``"half_even"``, as ONNX and PyTorch);
* ``scale_op`` — ``"divide"`` computes ``x / scale`` (ONNX, TFLite); ``"multiply_reciprocal"``
  computes ``x * (1 / scale)`` with the reciprocal rounded to the working dtype first (PyTorch,
  FBGEMM). They differ by one code on some inputs: FBGEMM's own example, scale 0.00214854861 and
  x 0.273939937 in float32, gives 127.5 → 128 by the reciprocal and 127.49999 → 127 by division;
* ``zero_point_order`` — ``"after_rounding"`` adds the zero point to the rounded integer (ONNX,
  PyTorch, TFLite); ``"before_rounding"`` rounds ``x / scale + zero_point`` (FBGEMM ``Quantize``
  with ``LEGACY=true``). They differ on exact ties when the zero point is odd and rounding is
  half-to-even: 2.5 → 2 (+1 = 3) but 2.5 + 1 = 3.5 → 4.

Saturation: values beyond the range, ±Inf included, clamp to qmin / qmax (no integer ever
wraps: clamping happens in floating point, before the cast). NaN raises ``ValueError``.

Speed: :func:`quantize` and :func:`dequantize` work in chunks of ``_CHUNK`` elements so that their
several passes stay in cache; the zero point is added before clipping so the bounds are scalars
(exact: see the comment in :func:`quantize`), a zero zero-point is skipped, and NaN / overflow is
checked once per chunk by a reduction. The loop twins ``quantize_ref`` / ``dequantize_ref`` must
equal them bit for bit.

Arithmetic dtype: ``x / scale`` is computed in NumPy's promotion of ``x`` and ``scale``, with a
Python-float scale taking ``x``'s dtype (float32 data and ``scale=0.1`` compute in float32, as
ONNX does with float32 tensors). float16 quotients are rounded in float32.

References
----------
Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", CVPR 2018, eq. (1)-(2) and section 3 (range including zero, nudged zero point).
Krishnamoorthi, "Quantizing deep convolutional networks for efficient inference", arXiv:1806.08342,
section 2.1 (affine, symmetric).
ONNX operator spec QuantizeLinear / DequantizeLinear (opset 21).
FBGEMM ``include/fbgemm/QuantUtils.h: Quantize`` (reciprocal scale, LEGACY zero-point order).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from ._checks import choice, finite_array, float_array, int_array, positive_scale, real_value
from .exactround import round_product, round_to_odd_product
from .granularity import align, check_param
from .ranges import QRange, qrange as as_qrange
from .rounding import ROUNDING_MODES, round_array, round_scalar_ref

SCALE_OPS = ("divide", "multiply_reciprocal")
ZERO_POINT_ORDERS = ("after_rounding", "before_rounding")
SYMMETRIC_DIVISORS = ("qmax", "half_range")
_CHUNK = 1 << 16  # elements per pass: a chunk's temporaries stay in the L2 cache


def qparams_from_range(lo, hi, qrange="int8", *, symmetric: bool = False, symmetric_divisor: str = "qmax",
                       eps: float = float(np.finfo(np.float32).eps), dtype=np.float32):
    """Scale and zero point that map the real range [lo, hi] onto ``qrange``.

    The range is first widened to contain 0: ``lo' = min(lo, 0)``, ``hi' = max(hi, 0)``.

    Affine::

        scale      = max((hi' - lo') / (qmax - qmin), eps)
        zero_point = clamp(qmin - round_half_even(lo' / scale), qmin, qmax)

    Symmetric (``amax = max(-lo', hi')``, zero point fixed)::

        zero_point = 0 for signed types, (qmin + qmax + 1) // 2 for unsigned (128 for uint8)
        scale      = max(amax / divisor, eps)
        divisor    = qmax - zero_point       ("qmax":  amax lands exactly on qmax; 127 for int8;
                                               TFLite, TensorRT)
                   = (qmax - qmin) / 2        ("half_range": 127.5 for int8; PyTorch observers,
                                               which therefore clip +amax by up to half a step)

    ``eps`` floors the scale so that constant (even all-zero) tensors get a valid scale.
    Arithmetic is in ``dtype`` (float32: what every runtime stores).

    Parameters
    ----------
    lo, hi : float or ndarray of the parameter shape (see :mod:`refquant.granularity`)
    qrange : str or QRange
    symmetric : bool
    symmetric_divisor : {"qmax", "half_range"}
    eps : float
    dtype : float dtype of the returned scale

    Returns
    -------
    scale : ndarray of ``dtype``, shape of ``lo``
    zero_point : ndarray of int32, shape of ``lo``

    References
    ----------
    Jacob et al. 2018, section 3 ("the range [a, b] ... nudged so that 0 is exactly representable").
    PyTorch ``torch/ao/quantization/observer.py: UniformQuantizationObserverBase._calculate_qparams``.
    """
    r = as_qrange(qrange)
    if not isinstance(dtype, (type, np.dtype, str)) or np.dtype(dtype).type not in (np.float16, np.float32, np.float64):
        raise ValueError(f"dtype must be float16, float32 or float64, got {dtype!r}")
    dtype = np.dtype(dtype).type
    lo = finite_array(lo, "lo", dtype, "the range must be finite")
    hi = finite_array(hi, "hi", dtype, "the range must be finite")
    if lo.shape != hi.shape:
        raise ValueError(f"lo and hi must have the same shape, got {lo.shape} and {hi.shape}")
    if np.any(lo > hi):
        raise ValueError("lo, hi: lo must be <= hi everywhere")
    choice(symmetric_divisor, "symmetric_divisor", SYMMETRIC_DIVISORS)
    # eps is checked in the dtype it is used in: 1e-50 is > 0 as a Python float but 0 in float32
    e = real_value(eps, "eps")
    with np.errstate(over="ignore", under="ignore"):
        if not (np.isfinite(dtype(e)) and dtype(e) > 0):
            raise ValueError(f"eps must be finite and > 0 in {np.dtype(dtype).name}, got {eps!r}")
    lo0 = np.minimum(lo, dtype(0))
    hi0 = np.maximum(hi, dtype(0))
    with np.errstate(over="ignore"):
        if symmetric:
            z = 0 if r.signed else (r.qmin + r.qmax + 1) // 2
            amax = np.maximum(-lo0, hi0)
            div = (r.qmax - z) if symmetric_divisor == "qmax" else (r.qmax - r.qmin) / 2
            scale = np.maximum(amax / dtype(div), dtype(e))
            zero_point = np.full(lo.shape, z, dtype=np.int32)
        else:
            scale = np.maximum((hi0 - lo0) / dtype(r.qmax - r.qmin), dtype(e))
            zero_point = np.clip(r.qmin - np.rint(lo0 / scale), r.qmin, r.qmax).astype(np.int32)
    if not np.all(np.isfinite(scale)):
        raise ValueError("lo, hi: the range is too wide for a finite scale in " + np.dtype(dtype).name)
    return scale.astype(dtype), zero_point


def _check_choice(value, choices, name):
    choice(value, name, choices)


def _working_dtype(xa: np.ndarray, scale) -> np.dtype:
    if type(scale) in (float, int):  # not np.float64, which subclasses float but is "strong"
        return xa.dtype  # a Python scalar is "weak" (NEP 50): it takes the data's dtype
    sd = np.asarray(scale).dtype
    return np.result_type(xa.dtype, sd) if sd.kind == "f" else xa.dtype


def _zero_point(zero_point, shape, axis, block_size, r: QRange | None = None, data: str = "x") -> np.ndarray:
    """Zero point as int64: 0-d when shared by all elements, else of the parameter shape.

    The range check compares exact integers before the cast, so no value wraps (uint64 2^64 − 1
    is refused, not read as −1): inside ``r`` when given, else inside int64.
    """
    zp = np.asarray(0 if zero_point is None else zero_point)
    if zp.dtype.kind not in "iu":
        raise ValueError(f"zero_point: expected an integer, got dtype {zp.dtype}")
    if zp.ndim == 0 or (axis is None and zp.size == 1):
        zp = zp.reshape(())
    else:
        zp = check_param(zp, shape, axis, block_size, "zero_point", data)
    if r is not None:
        int_array(zp, "zero_point", r.qmin, r.qmax, f" (qrange {r})")
    else:
        int_array(zp, "zero_point", -2**63, 2**63 - 1, " (int64)")
    return zp.astype(np.int64)


def _prepare(x, scale, zero_point, qrange, axis, block_size, rounding, rng, scale_op, zero_point_order):
    r = as_qrange(qrange)
    _check_choice(rounding, ROUNDING_MODES, "rounding")
    _check_choice(scale_op, SCALE_OPS, "scale_op")
    _check_choice(zero_point_order, ZERO_POINT_ORDERS, "zero_point_order")
    if rounding == "stochastic" and not isinstance(rng, np.random.Generator):
        raise ValueError("rng: stochastic rounding needs an explicit numpy.random.Generator")
    xa = float_array(x, "x", check_nan=False)
    wd = _working_dtype(xa, scale)
    s = check_param(positive_scale(scale, "scale", wd), xa.shape, axis, block_size, "scale", "x")
    zp = _zero_point(zero_point, xa.shape, axis, block_size, r)
    if scale_op == "multiply_reciprocal":
        with np.errstate(over="ignore"):
            s = np.divide(wd.type(1), s, dtype=wd)  # the reciprocal, rounded to the working dtype
        if not np.all(np.isfinite(s)):
            raise ValueError(f"scale: 1/scale overflows {wd.name}; the scale is too small for scale_op='multiply_reciprocal'")
    return r, xa, wd, s, zp


def quantize(x, scale, zero_point=0, qrange="int8", *, axis: int | None = None, block_size: int = 0,
             rounding: str = "half_even", rng: np.random.Generator | None = None,
             scale_op: str = "divide", zero_point_order: str = "after_rounding") -> np.ndarray:
    """Quantize: ``q = clamp(round(x / scale) + zero_point, qmin, qmax)`` (equation (2) above).

    Parameters
    ----------
    x : ndarray of float, any shape
    scale : float or ndarray, shape ``()``, ``(x.shape[axis],)`` or blocked (see :mod:`refquant.granularity`)
        Step size, finite and > 0.
    zero_point : int or integer ndarray of the same shape as ``scale``, inside ``qrange``
    qrange : str or QRange, default "int8"
    axis : int or None
        None: per-tensor. Otherwise per-channel along ``axis`` or, with ``block_size``, per-group.
    block_size : int, default 0 (no blocking)
    rounding : {"half_even", "half_away", "half_up", "floor", "stochastic"}
    rng : numpy.random.Generator, for stochastic rounding (draws one number per element, C order)
    scale_op : {"divide", "multiply_reciprocal"}
    zero_point_order : {"after_rounding", "before_rounding"}

    Returns
    -------
    q : ndarray of ``qrange.dtype`` (int8/uint8 for <= 8 bits, int16/uint16 above), shape of ``x``
    """
    r, xa, wd, s, zp = _prepare(x, scale, zero_point, qrange, axis, block_size, rounding, rng,
                                scale_op, zero_point_order)
    op = np.divide if scale_op == "divide" else np.multiply
    bd = np.promote_types(wd, np.float32)  # buffer dtype: float16 quotients round in float32
    lo, hi = bd.type(r.qmin), bd.type(r.qmax)
    q = np.empty(xa.shape, dtype=r.dtype)
    buf = np.empty(0, dtype=bd)  # one scratch buffer, reused by every chunk
    for xc, qc, (sc, zc) in _chunks(xa, q, [s, zp], axis, block_size):
        if buf.size < xc.size:
            buf = np.empty(xc.size, dtype=bd)
        v = buf[:xc.size].reshape(xc.shape)
        with np.errstate(over="ignore"):
            op(xc, sc, out=v, dtype=wd.type, casting="same_kind")  # x / scale in the working dtype, stored in bd
        zf = None if zc.ndim == 0 and int(zc) == 0 else zc.astype(bd)  # a zero zero-point is not added
        if zero_point_order == "before_rounding" and zf is not None:
            v += zf
        if rounding == "half_even":
            np.rint(v, out=v)
        else:
            round_array(v, rounding, rng, out=v)
        if zero_point_order == "after_rounding" and zf is not None:
            # added before clipping, so the bounds are scalars: exact, since |v| < 2^24 is an integer
            # in float32 and a larger |v| saturates on the same side after adding |zf| < 2^16
            v += zf
        np.clip(v, lo, hi, out=v)  # scalar bounds (array bounds cost several times more); NaN stays NaN
        if np.isnan(v.min()):  # one reduction per chunk: min propagates NaN
            raise ValueError("x contains NaN; NaN has no quantized value")
        np.copyto(qc, v, casting="unsafe")  # exact: v is integer-valued and in range
    return q


def _chunks(a: np.ndarray, out: np.ndarray, params: list, axis, block_size, size: int = _CHUNK):
    """Yield ``(a_chunk, out_chunk, [param_chunk, ...])`` over pieces of about ``size`` elements.

    Each pass of the caller then runs on cache-resident temporaries (several passes over a chunk
    cost about one pass over memory). ``out`` has ``a``'s shape; chunks are views into it, in C
    order. A parameter that is constant (e.g. every zero point 0) is passed as a scalar.
    """
    params = [np.asarray(p.flat[0]) if p.ndim and p.size and np.all(p == p.flat[0]) else p for p in params]
    if all(p.ndim == 0 for p in params):
        av, ov, pv = a.reshape(-1), out.reshape(-1), params
    else:
        av, pv = align(a, params, axis, block_size)
        ov = out.reshape(av.shape)
    if av.size == 0:
        return
    rows = av.shape[0]
    step = max(1, size // max(1, av.size // rows))
    for i in range(0, rows, step):
        sl = slice(i, i + step)
        yield av[sl], ov[sl], [p[sl] if p.ndim and p.shape[0] > 1 else p for p in pv]


def quantize_ref(x, scale, zero_point=0, qrange="int8", *, axis: int | None = None, block_size: int = 0,
                 rounding: str = "half_even", rng: np.random.Generator | None = None,
                 scale_op: str = "divide", zero_point_order: str = "after_rounding") -> np.ndarray:
    """Slow loop twin of :func:`quantize`: one element at a time, exact rational rounding.

    Shares only argument checking with :func:`quantize`; the parameter lookup (``i // block_size``)
    and the rounding (:func:`refquant.rounding.round_scalar_ref`) are written independently.
    """
    r, xa, wd, s, zp = _prepare(x, scale, zero_point, qrange, axis, block_size, rounding, rng,
                                scale_op, zero_point_order)
    bd = np.promote_types(wd, np.float32).type
    q = np.empty(xa.shape, dtype=r.dtype)
    a = None if axis is None else axis % xa.ndim
    for idx in np.ndindex(xa.shape):
        if a is None:
            pidx = ()
        elif not block_size:
            pidx = (idx[a],)
        else:
            pidx = idx[:a] + (idx[a] // block_size,) + idx[a + 1:]
        zi = int(zp[pidx]) if zp.ndim else int(zp)
        with np.errstate(over="ignore"):
            xi, si = wd.type(xa[idx]), wd.type(s[pidx])
            v = bd(xi / si if scale_op == "divide" else xi * si)
        if np.isnan(v):
            raise ValueError("x contains NaN; NaN has no quantized value")
        draw = rng.random() if rounding == "stochastic" else None
        if zero_point_order == "before_rounding":
            k = round_scalar_ref(v + bd(zi), rounding, draw)
        else:
            k = round_scalar_ref(v, rounding, draw) + zi
        q[idx] = min(max(k, r.qmin), r.qmax)
    return q


def dequantize(q, scale, zero_point=0, *, axis: int | None = None, block_size: int = 0) -> np.ndarray:
    """Dequantize: ``x̂ = scale · (q − zero_point)`` (equation (1)), rounded once.

    The result is the exact product ``scale · (q − zero_point)`` correctly rounded (to nearest,
    ties to even) to the scale's dtype (a Python float scale means float32), whatever the codes'
    width. The bounds of ``d = q − zero_point`` are computed as Python integers first; then, with p
    the significand bits of the dtype (11, 24, 53) and d formed exactly in int64:

    * |d| <= 2^p: d is exact in the dtype and the dtype's multiply rounds the product once;
    * float16 / float32 with |d| < 2^58: ``d = a·2^29 + c`` (0 <= c < 2^29, |a| < 2^29) makes
      both partial products exact in float64 (at most 29 + 24 significant bits); their sum is
      formed exactly as ``S + E`` (TwoSum), rounded to odd in 53 bits (S moved one ulp toward E
      when E != 0 and S is even), then rounded to the dtype. Rounding to odd at p + 2 or more bits
      followed by rounding to nearest at p bits equals one rounding to nearest (Boldo & Melquiond
      2008, Theorem 1);
    * otherwise (float64 with |d| > 2^53, or |d| >= 2^58, uint64 codes included): element by
      element on Python integers, ``d · m · 2^e`` for the scale ``m · 2^e``, rounded by hand.

    A product beyond the dtype's range raises ValueError (it would be ±Inf).

    Parameters
    ----------
    q : integer ndarray, any shape (float arrays are refused)
    scale : float or ndarray of the parameter shape, finite and > 0 in its dtype
    zero_point : int or integer ndarray of the parameter shape
    axis, block_size : granularity, as in :func:`quantize`

    Returns
    -------
    ndarray of the scale's float dtype, shape of ``q``

    References
    ----------
    Boldo & Melquiond, "Emulation of FMA and correctly rounded sums: proved algorithms using
    rounding to odd", IEEE Trans. Computers 57(4), 2008. Knuth, TAOCP vol. 2, §4.2.2 (TwoSum).
    """
    qa = int_array(q, "q")
    sd = np.float32 if type(scale) in (float, int) else None
    s = check_param(positive_scale(scale, "scale", sd), qa.shape, axis, block_size, "scale", "q")
    zp = _zero_point(zero_point, qa.shape, axis, block_size, data="q")
    out = np.empty(qa.shape, dtype=s.dtype)
    if qa.size == 0:
        return out
    dlo, dhi = int(qa.min()) - int(zp.max()), int(qa.max()) - int(zp.min())  # exact bounds of q - zero_point
    big = max(-dlo, dhi)
    p = np.finfo(s.dtype).nmant + 1
    # q and zero_point exact in the dtype and |q - zero_point| <= 2^p: the float subtraction is exact
    small = big <= 2**p and max(-int(qa.min()), int(qa.max()), -int(zp.min()), int(zp.max())) <= 2**p
    # |scale · d| <= max(scale) · big: when that is far below the dtype's maximum nothing can overflow
    check = float(s.max()) * big >= float(np.finfo(s.dtype).max) / 4
    for qc, oc, (sc, zc) in _chunks(qa, out, [s, zp], axis, block_size):
        if big >= 2**63 or (s.dtype == np.float64 and big > 2**p) or big >= 2**58:
            for idx, (qi, zi, si) in zip(np.ndindex(qc.shape), np.broadcast(qc, zc, sc)):
                oc[idx] = round_product(int(qi) - int(zi), float(si), s.dtype)
        elif small:
            with np.errstate(over="ignore"):
                if zc.ndim == 0 and int(zc) == 0:  # a zero zero-point is not subtracted
                    np.multiply(qc, sc, out=oc, dtype=s.dtype.type, casting="unsafe")
                else:
                    np.subtract(qc, zc.astype(s.dtype), out=oc, dtype=s.dtype.type, casting="unsafe")
                    oc *= sc
        else:
            # int64 arithmetic is modular: uint64 codes >= 2^63 wrap in the cast and wrap back in the
            # subtraction, and the true difference fits (|d| < 2^58 here), so d is exact
            d = np.subtract(qc.astype(np.int64), zc, dtype=np.int64)
            with np.errstate(over="ignore"):
                if big <= 2**p:
                    np.multiply(d.astype(s.dtype), sc, out=oc)
                else:
                    oc[...] = round_to_odd_product(d, sc).astype(s.dtype)
        if check and (not np.isfinite(oc.min()) or not np.isfinite(oc.max())):
            raise ValueError(f"q, scale: scale · (q - zero_point) overflows {s.dtype.name}")
    return out


def dequantize_ref(q, scale, zero_point=0, *, axis: int | None = None, block_size: int = 0) -> np.ndarray:
    """Loop twin of :func:`dequantize`: the exact rational product, rounded by comparing it with the
    two nearest values of the dtype (``fractions.Fraction``; ties to the even significand)."""
    qa = int_array(q, "q")
    sd = np.float32 if type(scale) in (float, int) else None
    s = check_param(positive_scale(scale, "scale", sd), qa.shape, axis, block_size, "scale", "q")
    zp = np.asarray(0 if zero_point is None else zero_point)
    dt = s.dtype.type
    out = np.empty(qa.shape, dtype=s.dtype)
    a = None if axis is None else axis % qa.ndim
    for idx in np.ndindex(qa.shape):
        pidx = () if a is None else ((idx[a],) if not block_size else idx[:a] + (idx[a] // block_size,) + idx[a + 1:])
        zi = int(zp[pidx]) if zp.ndim else int(zp)
        exact = Fraction(int(qa[idx]) - zi) * Fraction(float(s[pidx] if s.ndim else s))
        with np.errstate(over="ignore"):
            c = dt(float(exact))
            cands = [np.nextafter(c, dt(-np.inf)), c, np.nextafter(c, dt(np.inf))]
        cands = [v for v in cands if np.isfinite(v)]
        best = min(abs(Fraction(float(v)) - exact) for v in cands)
        ties = [v for v in cands if abs(Fraction(float(v)) - exact) == best]
        out[idx] = ties[0] if len(ties) == 1 else next(v for v in ties if int(v.view(f"u{v.itemsize}")) % 2 == 0)
    return out


def fake_quantize(x, scale, zero_point=0, qrange="int8", *, axis: int | None = None, block_size: int = 0,
                  rounding: str = "half_even", rng: np.random.Generator | None = None,
                  scale_op: str = "divide", zero_point_order: str = "after_rounding") -> np.ndarray:
    """Quantize then dequantize: ``x̂ = scale · (clamp(round(x / scale) + zp, qmin, qmax) − zp)``.

    Same arguments as :func:`quantize`. Returns an array of the working dtype (``x``'s dtype for a
    Python-float scale), shape of ``x``. This is the forward pass of quantization-aware training.

    Idempotent (``fake_quantize(fake_quantize(x)) == fake_quantize(x)``) for the round-to-nearest
    modes; not for ``"floor"``, because ``fl(scale·k)`` may round to just below ``scale·k``.
    """
    q = quantize(x, scale, zero_point, qrange, axis=axis, block_size=block_size, rounding=rounding, rng=rng,
                 scale_op=scale_op, zero_point_order=zero_point_order)
    xa = np.asarray(x)
    wd = _working_dtype(xa if xa.dtype.kind == "f" else xa.astype(np.float64), scale)
    s = np.asarray(scale, dtype=wd)
    return dequantize(q, s, zero_point, axis=axis, block_size=block_size)
