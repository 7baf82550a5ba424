"""Uniform (affine and symmetric) quantization: quantize, dequantize, fake-quantize.

The parameters (``qparams_from_range``, the argument checks, the working and buffer dtypes) live in
:mod:`refquant.core.qparams` and are re-exported here.

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
wraps: clamping happens in floating point, before the cast, in a dtype that holds every code of
the range exactly: float32 up to 2^24, float64 for ranges of up to 32 bits). NaN raises ``ValueError``.

Speed: :func:`quantize` and :func:`dequantize` work in chunks of ``_QCHUNK`` elements so that their
several passes stay in cache; the zero point is added before clipping so the bounds are scalars
(exact: see the comment in :func:`quantize`), a zero zero-point is skipped, NaN is caught by the
final cast's floating-point "invalid" flag (or, where a platform does not flag it, by a reduction per
chunk) and dequantize's overflow, when a scale is large enough for it, by a reduction per chunk;
``dequantize`` of 8- and 16-bit codes takes its exactness bounds from the codes' dtype, without a pass
over them, and forms ``q − zero_point`` in int16. Measured (``benchmarks/bench_uniform.py``, 16M
float32, median ratio to ``x.copy()``): quantize 1.0x per tensor, 1.1x per channel, 1.8x group 128;
dequantize 1.1x, 1.6x, 1.9x. The loop twins ``quantize_ref`` / ``dequantize_ref`` (in
:mod:`refquant.core.uniform_ref`, re-exported here) must equal them bit for bit.

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

import numpy as np

from ._checks import int_array, positive_scale
from ._types import ArrayLike, QRangeLike
from .exactround import round_product, round_to_odd_product
from .granularity import _chunks, check_param  # noqa: F401  (_chunks: the formats' chunked loops import it here)
from .qparams import (SCALE_OPS, SYMMETRIC_DIVISORS, ZERO_POINT_ORDERS, _buffer_dtype, _prepare,  # noqa: F401
                      _working_dtype, _zero_point, qparams_from_range)
from .rounding import round_array
from .uniform_ref import _check_bool, dequantize_ref, quantize_ref  # noqa: F401  (the loop twins, re-exported)

_CHUNK = 1 << 16  # elements per pass of the formats' chunked loops: a chunk's temporaries stay in the L2 cache
# elements per pass of quantize / dequantize: their 4-6 passes over a chunk run from cache; measured on a
# 2-vCPU EPYC, 2^18 (a 1 MiB float32 buffer) beat 2^16 by ~20 % (fewer Python iterations; L3-resident)
_QCHUNK = 1 << 18


def _qchunk(n: int) -> int:
    """Chunk of quantize / dequantize for n elements: _QCHUNK, but at most n / 8 (and at least _CHUNK), so
    that the scratch buffer of a mid-size tensor stays a small fraction of it (tests/test_memory.py)."""
    return min(_QCHUNK, max(_CHUNK, n // 8))


def _scratch(buf: np.ndarray, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """``(buf, view)``: a view of ``shape`` into the chunk loops' reusable scratch ``buf``, which is
    regrown (same dtype) only when a chunk is larger than any before."""
    n = int(np.prod(shape))
    if buf.size < n:
        buf = np.empty(n, dtype=buf.dtype)
    return buf, buf[:n].reshape(shape)


def _nan_cast_raises() -> bool:
    """Does a float -> integer cast of NaN raise under ``np.errstate(invalid="raise")``, for every cast
    :func:`quantize` makes? NumPy (>= 1.24) checks the FP status flags after a cast, and x86 / ARM
    conversions set "invalid" for NaN; probed once, so a platform without it falls back to a reduction."""
    for bd in (np.float32, np.float64):
        for dt in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32):
            v = np.zeros(33, bd)
            v[17] = np.nan  # inside the SIMD body, not only the tail
            try:
                with np.errstate(invalid="raise"):
                    np.copyto(np.empty(33, dt), v, casting="unsafe")
                return False
            except FloatingPointError:
                pass
    return True


_NAN_CAST = _nan_cast_raises()
try:  # the clip ufunc itself: np.clip's Python wrapper costs ~10 µs a call, hundreds of calls per tensor
    from numpy._core.umath import clip as _clip
except ImportError:  # pragma: no cover  (NumPy < 2)
    _clip = np.clip


def quantize(x: ArrayLike, scale: ArrayLike, zero_point: ArrayLike = 0, qrange: QRangeLike = "int8", *,
             axis: int | None = None, block_size: int = 0, rounding: str = "half_even",
             rng: np.random.Generator | None = None, scale_op: str = "divide",
             zero_point_order: str = "after_rounding", saturate: bool = True) -> np.ndarray:
    """Quantize: ``q = clamp(round(x / scale) + zero_point, qmin, qmax)`` (equation (2) above).

    Exactness: ``x / scale`` is rounded once, to the working dtype (see :mod:`refquant.core.qparams`);
    from there on nothing rounds. The quotient is rounded to an integer, shifted by the zero point and
    clamped in a buffer dtype that holds every code of ``qrange`` exactly (float32 up to 2^24, float64
    for wider ranges up to 32 bits), with scalar bounds, then cast to ``qrange.dtype`` — so ``q`` equals
    the integer computation ``clamp(round(fl(x / scale)) + zero_point, qmin, qmax)`` for every input,
    ±2^31 edges and ties included, and never wraps. What limits the code's precision is the quotient:
    a float32 quotient above 2^24 is already an integer with float32 spacing (2, 4, ... 256 at 2^31),
    so an ``int32`` code from float32 data is exact rounding of ``fl32(x / scale)``, not of the real
    ``x / scale``; pass float64 data and scale for codes that are the exact rounding of the float64
    quotient, whose spacing stays below 1 for |x / scale| < 2^52 (every 32-bit code).
    With ``zero_point_order="before_rounding"`` the sum ``x / scale + zero_point`` is formed in the
    buffer dtype (as the loop twin does).

    Parameters
    ----------
    x : ndarray of float, any shape
    scale : float or ndarray, shape ``()``, ``(x.shape[axis],)`` or blocked (see :mod:`refquant.granularity`)
        Step size, finite and > 0.
    zero_point : int or integer ndarray of the same shape as ``scale``, inside ``qrange``
    qrange : str, (qmin, qmax) or QRange, default "int8" (up to 32 bits: ``"int32"``, ``QRange(31, limits=...)``)
    axis : int or None
        None: per-tensor. Otherwise per-channel along ``axis`` or, with ``block_size``, per-group.
    block_size : int, default 0 (no blocking)
    rounding : {"half_even", "half_away", "half_up", "floor", "stochastic"}
    rng : numpy.random.Generator, for stochastic rounding (draws one number per element, C order)
    scale_op : {"divide", "multiply_reciprocal"}
    zero_point_order : {"after_rounding", "before_rounding"}
    saturate : bool, default True
        False: a value whose code would lie outside ``qrange`` (±Inf included) raises ValueError instead
        of clamping — for values that must fit, such as an int32 bias (nothing is written then).

    Returns
    -------
    q : ndarray of ``qrange.dtype`` (int8/uint8 for <= 8 bits, int16/uint16 <= 16, int32/uint32 above), shape of ``x``
    """
    r, xa, wd, s, zp = _prepare(x, scale, zero_point, qrange, axis, block_size, rounding, rng,
                                scale_op, zero_point_order)
    _check_bool(saturate, "saturate")
    bd = _buffer_dtype(wd, r)
    q = np.empty(xa.shape, dtype=r.dtype)
    # NaN: detected by the final cast where it raises the FP "invalid" flag (no pass of its own), else by a
    # reduction per chunk; a NaN reaching the cast in the first case raises FloatingPointError, caught below
    nan_cast = _NAN_CAST and saturate
    try:
        _quantize_chunks(xa, q, s, zp.astype(bd), r, wd, bd, axis, block_size, rounding, rng, scale_op,
                         zero_point_order, saturate, nan_cast)
    except FloatingPointError:
        raise ValueError("x contains NaN; NaN has no quantized value") from None
    return q


def _quantize_chunks(xa, q, s, zf, r, wd, bd, axis, block_size, rounding, rng, scale_op, zero_point_order,
                     saturate, nan_cast):
    """The chunk loop of :func:`quantize`, writing into ``q``; ``zf`` is the zero point in the buffer dtype
    (exact: it is a code of the range)."""
    op = np.divide if scale_op == "divide" else np.multiply
    lo, hi = bd.type(r.qmin), bd.type(r.qmax)
    before = zero_point_order == "before_rounding"
    buf = np.empty(0, dtype=bd)  # one scratch buffer, reused by every chunk
    with np.errstate(over="ignore", invalid="raise" if nan_cast else "warn"):
        for xc, qc, (sc, zc) in _chunks(xa, q, [s, zf], axis, block_size, _qchunk(xa.size)):
            buf, v = _scratch(buf, xc.shape)
            op(xc, sc, out=v, dtype=wd.type, casting="same_kind")  # x / scale in the working dtype, stored in bd
            add = zc.ndim or zc != 0  # a zero zero-point is not added
            if before and add:
                v += zc
            if rounding == "half_even":
                np.rint(v, out=v)
            else:
                round_array(v, rounding, rng, out=v)
            if add and not before:
                # added before clipping, so the bounds are scalars. Exact: every code of the range is
                # exact in bd, so an in-range sum is exact and an out-of-range one, rounded monotonically,
                # stays out of range on the same side
                v += zc
            if saturate:
                _clip(v, lo, hi, out=v)  # scalar bounds (array bounds cost several times more); NaN stays NaN
            if not nan_cast:
                m = v.min()  # one reduction per chunk: min propagates NaN
                if np.isnan(m):
                    raise ValueError("x contains NaN; NaN has no quantized value")
                if not saturate and (m < lo or v.max() > hi):
                    raise ValueError(f"x: a value's code lies outside {r} (saturate=False), "
                                     f"codes in [{m:.17g}, {v.max():.17g}]")
            np.copyto(qc, v, casting="unsafe")  # exact: v is integer-valued and in range (NaN: see nan_cast)


def dequantize(q: ArrayLike, scale: ArrayLike, zero_point: ArrayLike = 0, *, axis: int | None = None,
               block_size: int = 0) -> np.ndarray:
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
    p = np.finfo(s.dtype).nmant + 1
    zlo, zhi = int(zp.min()), int(zp.max())

    def is_small(qlo: int, qhi: int) -> bool:
        # q and zero_point exact in the dtype and |q - zero_point| <= 2^p: the float subtraction is exact
        return max(zhi - qlo, qhi - zlo) <= 2**p and max(-qlo, qhi, -zlo, zhi) <= 2**p

    # bounds of q: its dtype's when they already make d small (int8 / int16 codes: no pass over the
    # data), else the data's own (two reductions)
    qlo, qhi = int(np.iinfo(qa.dtype).min), int(np.iinfo(qa.dtype).max)
    if not is_small(qlo, qhi):
        qlo, qhi = int(qa.min()), int(qa.max())
    small = is_small(qlo, qhi)
    big = max(zhi - qlo, qhi - zlo)  # exact bound of |q - zero_point|
    # |scale · d| <= max(scale) · big: when that is far below the dtype's maximum nothing can overflow
    check = float(s.max()) * big >= float(np.finfo(s.dtype).max) / 4
    wide = big >= 2**63 or (s.dtype == np.float64 and big > 2**p) or big >= 2**58
    # small: d = q − zero_point is formed exactly in the narrowest integer type that holds q, zero_point
    # and d (int16 for 8-bit codes), then converted and multiplied in one ufunc: one rounding, ~10 % faster
    # than forming d in floats
    dint = next((t for t in (np.int16, np.int32, np.int64) if qlo - zhi >= np.iinfo(t).min
                 and max(qhi - zlo, -qlo, qhi, -zlo, zhi) <= np.iinfo(t).max), None)  # int64 always, when small
    zs = zp.astype(dint) if small else zp  # exact when small (|zero_point| <= 2^p <= 2^24)
    dbuf = np.empty(0, dtype=dint)  # the scratch d of the small path, reused by every chunk
    with np.errstate(over="ignore"):
        for qc, oc, (sc, zc) in _chunks(qa, out, [s, zs], axis, block_size, _qchunk(qa.size)):
            if wide:
                for idx, (qi, zi, si) in zip(np.ndindex(qc.shape), np.broadcast(qc, zc, sc)):
                    oc[idx] = round_product(int(qi) - int(zi), float(si), s.dtype)
            elif small:
                if zc.ndim == 0 and zc == 0:  # a zero zero-point is not subtracted
                    np.multiply(qc, sc, out=oc, dtype=s.dtype.type, casting="unsafe")
                else:
                    dbuf, d = _scratch(dbuf, qc.shape)
                    np.subtract(qc, zc, out=d, dtype=dint, casting="unsafe")  # exact: q, zero_point and d fit dint
                    np.multiply(d, sc, out=oc, dtype=s.dtype.type, casting="unsafe")  # d exact in the dtype
            else:
                # int64 arithmetic is modular: uint64 codes >= 2^63 wrap in the cast and wrap back in the
                # subtraction, and the true difference fits (|d| < 2^58 here), so d is exact
                d = np.subtract(qc.astype(np.int64), zc, dtype=np.int64)
                if big <= 2**p:
                    np.multiply(d.astype(s.dtype), sc, out=oc)
                else:
                    oc[...] = round_to_odd_product(d, sc).astype(s.dtype)
            if check and (not np.isfinite(oc.min()) or not np.isfinite(oc.max())):
                raise ValueError(f"q, scale: scale · (q - zero_point) overflows {s.dtype.name}")
    return out


def fake_quantize(x: ArrayLike, scale: ArrayLike, zero_point: ArrayLike = 0, qrange: QRangeLike = "int8", *,
                  axis: int | None = None, block_size: int = 0, rounding: str = "half_even",
                  rng: np.random.Generator | None = None, scale_op: str = "divide",
                  zero_point_order: str = "after_rounding") -> np.ndarray:
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
