"""Integer GEMM and requantization: exact, and at BLAS speed.

The quantized product of ``a`` (M, K) and ``b`` (K, N) with zero points is the int32 matrix::

    C[i, j] = Σ_k (a[i, k] − za[i]) · (b[k, j] − zb[j])                              (1)

NumPy's integer ``matmul`` does not use BLAS (it measures 85–1,000× slower than float32 here),
so :func:`int_matmul` computes (1) with float32 BLAS, exactly:

* operands are moved to [−128, 127] (uint8 minus 128, the zero points shifted alike), so every
  product has magnitude at most 128² = 2^14;
* K is split into chunks of at most 1024, so every partial sum of a chunk is an integer of
  magnitude at most 2^24 — representable in float32, so each float32 addition is exact in any
  order (FMA included) and the chunk's result is exact;
* chunk results are summed in float64 (exact below 2^53) and the zero-point terms are added in
  int64: ``Σ(a−za)(b−zb) = Σab − zb·Σ_k a − za·Σ_k b + K·za·zb``;
* ``b`` is converted per call (no prepacking needed), K-slice by K-slice into one reused float32
  buffer: for a product of few rows (GEMV-like, memory-bound) a slice of about ``BUFFER_BYTES`` that the
  GEMM reads from cache, otherwise whole 1024-row chunks. Slices of one chunk are summed in float32,
  exact because every partial sum of the chunk is an integer of magnitude at most 2^24.

The result is checked to fit in int32 (ValueError otherwise: accumulation never wraps).
:func:`int_matmul_ref` is the plain triple loop on Python integers.

:func:`fully_connected` is TFLite's reference integer FullyConnected: accumulate, add the int32
bias (at scale s_x·s_w), multiply by the quantized multiplier, add the output zero point, clamp.

References
----------
TFLite ``kernels/internal/reference/fully_connected.h`` and ``reference/integer_ops/fully_connected.h``.
ONNX MatMulInteger-10. Jacob et al., CVPR 2018, §2.3-2.4 (eq. 7-9: zero-point terms, int32 bias).
Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., §2.1 (integers below 2^24 are
exact in binary32).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core._checks import int_array, int_value
from .fixedpoint import INT32_MAX, INT32_MIN, _apply_multiplier, _apply_multiplier_ref
from ..core.ranges import qrange as as_qrange
from ..core._types import ArrayLike, QRangeLike

K_CHUNK = 1024  # 1024 · 128² = 2^24: the largest exact float32 chunk
BUFFER_BYTES = 2**20  # the reused float32 conversion buffer of a few-row product: about one L2 cache
SMALL_M = 32  # below this many rows of a, b is converted slice by slice into that buffer


def _operand(v, name, ndim_min=2):
    a = int_array(v, name)
    if a.dtype not in (np.int8, np.uint8):
        raise ValueError(f"{name}: expected int8 or uint8, got {a.dtype}")
    if a.ndim < ndim_min:
        raise ValueError(f"{name}: expected at least {ndim_min} dimensions, got shape {a.shape}")
    return a


def _zero_point(z, operand, n, per, name):
    """Zero point as int64: scalar, or per-row (n,) for a / per-column (n,) for b; range-checked."""
    if z is None:
        return np.int64(0)
    info = np.iinfo(operand.dtype)
    za = int_array(z, name, int(info.min), int(info.max), f" (the range of {operand.dtype})").astype(np.int64)
    if za.size == 1:
        return za.reshape(())
    if za.shape != (n,):
        raise ValueError(f"{name} must be a scalar or per-{per} of shape ({n},), got {za.shape}")
    return za.reshape((n, 1)) if per == "row" else za.reshape((1, n))


@dataclass(frozen=True)
class PackedMatrix:
    """The right operand of :func:`int_matmul`, prepared once (FBGEMM / oneDNN "prepacked weights").

    Holds the centred values as float32 (4 bytes per int8 value: memory traded for BLAS speed) and
    their column sums; zero points stay call arguments. A layer's weights are packed once at load
    time, so per-call cost is the float32 GEMM plus O(M·K + M·N) integer work.
    """

    data: np.ndarray  # float32 (..., K, N): b − 128 for uint8, b for int8 — integers in [−128, 127]
    colsum: np.ndarray  # int64 (..., 1, N): Σ_k data
    dtype: np.dtype  # int8 or uint8: the original operand's type (its zero point is in that range)


def prepack(b: ArrayLike) -> PackedMatrix:
    """Prepare an int8/uint8 matrix of shape (..., K, N) as the right operand of :func:`int_matmul`."""
    B = _operand(b, "b")
    data = B.astype(np.float32)
    if B.dtype == np.uint8:
        data -= 128
    data.flags.writeable = False
    return PackedMatrix(data, data.sum(axis=-2, keepdims=True, dtype=np.float64).astype(np.int64), B.dtype)


_LIMITS = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}


def _max_abs(dtype, z):
    """Largest |q − z| over the codes of ``dtype``: bounds every accumulator term."""
    lo, hi = _LIMITS[np.dtype(dtype)]
    if np.ndim(z) == 0:
        z = int(z)
        return max(abs(lo - z), abs(hi - z))
    return int(max(abs(lo - int(z.min())), abs(hi - int(z.max())), abs(lo - int(z.max())), abs(hi - int(z.min()))))


def int_matmul(a: ArrayLike, b: ArrayLike | PackedMatrix, a_zero_point: ArrayLike | None = None,
               b_zero_point: ArrayLike | None = None) -> np.ndarray:
    """Exact ``(a − za) @ (b − zb)`` as int32, through float32 BLAS (see the module docstring).

    Parameters
    ----------
    a : int8 or uint8 ndarray of shape (..., M, K)
    b : int8 or uint8 ndarray of shape (..., K, N), or a :class:`PackedMatrix` from :func:`prepack`
    a_zero_point : None, scalar, or per-row (M,) of a's dtype range
    b_zero_point : None, scalar, or per-column (N,)

    Returns
    -------
    ndarray of int32, shape (..., M, N)
    """
    return _matmul(a, b, a_zero_point, b_zero_point, ("a", "b", "a_zero_point", "b_zero_point"))


def _matmul(a, b, a_zero_point, b_zero_point, names):
    """:func:`int_matmul` with the caller's argument names (a, b, their zero points) in its errors."""
    na, nb, nza, nzb = names
    A = _operand(a, na)
    packed = b if isinstance(b, PackedMatrix) else None
    B = packed.data if packed else _operand(b, nb)
    b_dtype = packed.dtype if packed else B.dtype
    if A.shape[-1] != B.shape[-2]:
        raise ValueError(f"{na} and {nb}: inner dimensions differ, {A.shape} @ {B.shape}")
    try:
        np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    except ValueError:
        raise ValueError(f"{na} and {nb}: batch dimensions do not broadcast, {A.shape} @ {B.shape}") from None
    M, K, N = A.shape[-2], A.shape[-1], B.shape[-1]
    za0 = _zero_point(a_zero_point, A, M, "row", nza)
    zb0 = _zero_point(b_zero_point, np.empty(0, b_dtype), N, "column", nzb)
    sa, sb = (128 if A.dtype == np.uint8 else 0), (128 if b_dtype == np.uint8 else 0)
    za, zb = za0 - sa, zb0 - sb  # zero points of the centred operands, exact in int64
    need_rowsum = bool(zb != 0) if np.ndim(zb) == 0 else bool(np.any(zb != 0))
    need_colsum = bool(za != 0) if np.ndim(za) == 0 else bool(np.any(za != 0))
    Af = A.astype(np.float32)  # converted once; chunks are views
    if sa:
        Af -= 128  # exact: integers in [-128, 127]
    lead = A.shape[:-2] if A.ndim == B.ndim == 2 or A.shape[:-2] == B.shape[:-2] else \
        np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    out_shape = lead + (M, N)
    acc, buf = None, np.empty(out_shape, np.float32)
    colsum = packed.colsum if packed else 0
    rows = M * int(np.prod(lead, dtype=np.int64))
    # few rows: the conversion of b is the cost, so convert it in cache-sized K-slices into one reused
    # buffer that the GEMM reads while it is still in cache; many rows amortise converting whole blocks
    step = K_CHUNK if packed or rows >= SMALL_M else max(64, min(K_CHUNK, BUFFER_BYTES // (4 * max(N, 1))))
    conv = None if packed else np.empty(B.shape[:-2] + (min(step, K), N), np.float32)
    part = None  # the second output buffer, only when a block has several slices
    for k0 in range(0, K, K_CHUNK):
        k_end = min(k0 + K_CHUNK, K)
        for k1 in range(k0, k_end, step):
            k2 = min(k1 + step, k_end)
            if packed:
                Bc = B[..., k1:k2, :]
            else:
                Bc = conv[..., :k2 - k1, :]
                np.copyto(Bc, B[..., k1:k2, :], casting="unsafe")  # int8/uint8 -> float32: exact
                if sb:
                    Bc -= 128
                if need_colsum:
                    colsum = colsum + Bc.sum(axis=-2, keepdims=True, dtype=np.float64).astype(np.int64)
            if k1 == k0:
                np.matmul(Af[..., k1:k2], Bc, out=buf)  # float32 GEMM, exact: |partial sums| <= 1024 · 2^14 = 2^24
            else:
                if part is None:
                    part = np.empty(out_shape, np.float32)
                np.matmul(Af[..., k1:k2], Bc, out=part)
                buf += part  # still one block: every partial sum is an integer <= 2^24, exact in float32
        if acc is None:
            acc = buf if k_end >= K else buf.astype(np.float64)
        else:
            np.add(acc, buf, out=acc)  # float64: exact below 2^53
    rowsum = Af.sum(axis=-1, keepdims=True, dtype=np.float64).astype(np.int64) if need_rowsum else 0
    if acc is None:  # K == 0
        acc = np.zeros(out_shape, np.float32)
    safe = K * _max_abs(A.dtype, za0) * _max_abs(b_dtype, zb0) <= INT32_MAX
    if not (need_rowsum or need_colsum) and safe:
        return acc.astype(np.int32)  # exact integers that provably fit
    c = acc.astype(np.int64) - zb * rowsum - za * colsum + K * za * zb
    if not safe and c.size and (c.min() < INT32_MIN or c.max() > INT32_MAX):
        raise ValueError(f"{na}, {nb}: the int32 accumulator overflows (|sum| >= 2^31); split K")
    return c.astype(np.int32)


def int_matmul_ref(a: ArrayLike, b: ArrayLike, a_zero_point: ArrayLike | None = None,
                   b_zero_point: ArrayLike | None = None) -> np.ndarray:
    """Loop twin of :func:`int_matmul` (2-D only): equation (1) on Python integers, one term at a time."""
    A, B = _operand(a, "a"), _operand(b, "b")
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0]:
        raise ValueError(f"a, b: expected (M, K) @ (K, N), got {A.shape} @ {B.shape}")
    M, K = A.shape
    N = B.shape[1]
    za = np.broadcast_to(_zero_point(a_zero_point, A, M, "row", "a_zero_point"), (M, 1))
    zb = np.broadcast_to(_zero_point(b_zero_point, B, N, "column", "b_zero_point"), (1, N))
    out = np.empty((M, N), np.int32)
    for i in range(M):
        for j in range(N):
            s = 0
            for k in range(K):
                s += (int(A[i, k]) - int(za[i, 0])) * (int(B[k, j]) - int(zb[0, j]))
            if not INT32_MIN <= s <= INT32_MAX:
                raise ValueError("a, b: the int32 accumulator overflows (|sum| >= 2^31); split K")
            out[i, j] = s
    return out


def requantize(acc: ArrayLike, multiplier: ArrayLike, shift: ArrayLike, out_zero_point: int = 0,
               qrange: QRangeLike = "int8", *, rounding: str = "double") -> np.ndarray:
    """``clamp(MultiplyByQuantizedMultiplier(acc, m, s) + out_zero_point, qmin, qmax)`` in ``qrange.dtype``.

    ``multiplier`` / ``shift`` are scalars or per-column (N,) arrays broadcasting over the last axis.
    """
    r = as_qrange(qrange)
    z = _out_zero_point(out_zero_point, r)
    return _finish(_apply_multiplier(acc, multiplier, shift, rounding, ("acc", "multiplier", "shift")), z, r)


def _finish(y, z, r):
    """``clamp(y + z, qmin, qmax)`` cast to ``r.dtype``, in place on the int64 array ``y`` the caller owns."""
    if z:
        y += z
    np.minimum(y, r.qmax, out=y)
    np.maximum(y, r.qmin, out=y)
    return y.astype(r.dtype)


def _out_zero_point(z, r) -> int:
    z = int_value(z, "out_zero_point")
    if not r.qmin <= z <= r.qmax:
        raise ValueError(f"out_zero_point must lie in {r} (the qrange), got {z}")
    return z




def _fc_checks(x, w, bias, x_zero_point, w_zero_point, multiplier, shift, out_zero_point, qrange):
    """Shared argument checks of :func:`fully_connected` and its loop twin; errors name these arguments."""
    r = as_qrange(qrange)
    X = _operand(x, "x")
    if X.ndim != 2:
        raise ValueError(f"x: expected shape (batch, n_in), got {X.shape}")
    if isinstance(w, PackedMatrix):
        n_in, n_out = w.data.shape[-2:]
    else:
        W = _operand(w, "w")
        if W.ndim != 2:
            raise ValueError(f"w: expected shape (n_out, n_in), got {W.shape}")
        n_out, n_in = W.shape
    if X.shape[1] != n_in:
        raise ValueError(f"x and w: x has {X.shape[1]} input features, w has {n_in}")
    bq = None
    if bias is not None:
        bq = int_array(bias, "bias", INT32_MIN, INT32_MAX, " (int32)")
        if bq.shape != (n_out,):
            raise ValueError(f"bias must have shape ({n_out},), got {bq.shape}")
    _zero_point(x_zero_point, X, X.shape[0], "row", "x_zero_point")
    if np.ndim(x_zero_point) != 0:
        raise ValueError(f"x_zero_point: expected a scalar, got shape {np.shape(x_zero_point)}")
    _zero_point(w_zero_point, np.empty(0, w.dtype if isinstance(w, PackedMatrix) else W.dtype), n_out, "column",
                "w_zero_point")
    for name, v, lo, hi in (("multiplier", multiplier, INT32_MIN, INT32_MAX), ("shift", shift, -31, 30)):
        int_array(v, name, lo, hi)
        if np.ndim(v) not in (0, 1) or (np.ndim(v) == 1 and np.shape(v) != (n_out,)):
            raise ValueError(f"{name}: expected a scalar or per-channel ({n_out},), got shape {np.shape(v)}")
    _out_zero_point(out_zero_point, r)
    return r, bq


def fully_connected(x: ArrayLike, w: ArrayLike | PackedMatrix, bias: ArrayLike | None = None, *,
                    x_zero_point: ArrayLike, w_zero_point: ArrayLike = 0, multiplier: ArrayLike, shift: ArrayLike,
                    out_zero_point: int, qrange: QRangeLike = "int8", rounding: str = "double") -> np.ndarray:
    """TFLite integer FullyConnected: ``y = requantize(x_q·W_qᵀ (with zero points) + bias)``.

    The quantization parameters are keyword-only: ``fully_connected(x, w, b, x_zero_point=zx,
    multiplier=m, shift=s, out_zero_point=zy, qrange="uint8")``.

    Parameters
    ----------
    x : int8/uint8 ndarray of shape (batch, n_in)
    w : int8/uint8 ndarray of shape (n_out, n_in) (TFLite's filter layout), or ``prepack(w.T)``
    bias : int32 ndarray of shape (n_out,) at scale s_x·s_w, or None
    x_zero_point : int; w_zero_point : int or per-channel (n_out,), default 0 (symmetric weights)
    multiplier, shift : from :func:`refquant.fixedpoint.quantize_multiplier` of s_x·s_w/s_y
        (scalar, or per-channel (n_out,))
    out_zero_point : int; qrange : output range
    rounding : {"double", "single"} — see :func:`refquant.fixedpoint.multiply_by_quantized_multiplier`

    Returns
    -------
    ndarray of ``qrange.dtype``, shape (batch, n_out)
    """
    r, bq = _fc_checks(x, w, bias, x_zero_point, w_zero_point, multiplier, shift, out_zero_point, qrange)
    W = w if isinstance(w, PackedMatrix) else np.asarray(w).T  # (n_in, n_out) for x @ W
    acc = _matmul(x, W, x_zero_point, w_zero_point, ("x", "w", "x_zero_point", "w_zero_point"))
    if bq is not None:
        acc = acc.astype(np.int64)
        acc += bq
        if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
            raise ValueError("bias: accumulator + bias overflows int32")
    y = _apply_multiplier(acc, multiplier, shift, rounding, ("x @ w", "multiplier", "shift"))
    return _finish(y, int(out_zero_point), r)


def fully_connected_ref(x: ArrayLike, w: ArrayLike, bias: ArrayLike | None = None, *, x_zero_point: ArrayLike,
                        w_zero_point: ArrayLike = 0, multiplier: ArrayLike, shift: ArrayLike, out_zero_point: int,
                        qrange: QRangeLike = "int8", rounding: str = "double") -> np.ndarray:
    """Loop twin of :func:`fully_connected`, shaped like TFLite's reference kernel (offsets = −zero points).

    Shares only the argument checks with :func:`fully_connected` (``w`` here is (n_out, n_in), not prepacked).
    """
    if isinstance(w, PackedMatrix):
        raise ValueError("w: the loop twin takes the (n_out, n_in) int8/uint8 matrix, not a PackedMatrix")
    if not isinstance(rounding, str) or rounding not in ("double", "single"):
        raise ValueError(f"rounding: expected 'double' or 'single', got {rounding!r}")
    r, bq = _fc_checks(x, w, bias, x_zero_point, w_zero_point, multiplier, shift, out_zero_point, qrange)
    X, W = np.asarray(x), np.asarray(w)
    batches, depth = X.shape
    n_out = W.shape[0]
    wz = np.broadcast_to(np.asarray(w_zero_point, np.int64), (n_out,))
    m = np.broadcast_to(np.asarray(multiplier, np.int64), (n_out,))
    s = np.broadcast_to(np.asarray(shift, np.int64), (n_out,))
    input_offset = -int(x_zero_point)
    out = np.empty((batches, n_out), r.dtype)
    for b in range(batches):
        for c in range(n_out):
            acc = 0
            filter_offset = -int(wz[c])
            for d in range(depth):
                acc += (int(W[c, d]) + filter_offset) * (int(X[b, d]) + input_offset)
            if bq is not None:
                acc += int(bq[c])
            if not INT32_MIN <= acc <= INT32_MAX:
                raise ValueError("x, w: the int32 accumulator overflows")
            acc = int(_apply_multiplier_ref(acc, int(m[c]), int(s[c]), rounding, ("x @ w", "multiplier", "shift")))
            acc += int(out_zero_point)
            out[b, c] = min(max(acc, r.qmin), r.qmax)
    return out
