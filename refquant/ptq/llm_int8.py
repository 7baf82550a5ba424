"""LLM.int8(): vector-wise int8 matrix multiplication with a float path for the outlier feature columns.

A linear layer ``Y = X Wᵀ + b`` (X (M, K) tokens × input features, W (N, K)) is split by input feature
(paper §3.2, the mixed-precision decomposition)::

    O = { k : |X[i, k]| ≥ threshold for some token i }        (outlier columns, threshold α = 6.0)
    Y = Σ_{k ∈ O} X[:, k] W[:, k]ᵀ                             (float path)
      + (SCA ⊗ SCB) / 127² ⊙ Σ_{k ∉ O} CA[:, k] CB[:, k]ᵀ      (int8 path, int32 accumulator)  + b

with vector-wise absmax quantization (§3.1): one scale per row of X (per token) and per row of W
(per output channel)::

    SCA[i] = max_k |A[i, k]|  over the values that are not outliers                           (1)
    CA[i, k] = round_half_even(A[i, k] · r[i]),  r[i] = fl32(fl32(1 / SCA[i]) · 127)            (2)
    CA[:, k] = 0 for k ∈ O                                                                     (3)

(2) is a multiply, not a division, by a factor rounded twice: the source's ``127.0 / row_stats`` is
torch's ``Tensor.__rdiv__``, which computes ``row_stats.reciprocal() * 127`` (measured: fl32(127 / SCA)
instead changes about one code in a thousand). |CA| ≤ 127 (the restricted range); no clamp is needed.
That is refquant's ``x ≈ scale · (q − zero_point)`` with scale = SCA/127 and zero_point = 0. A row
whose (non-outlier) values are all zero gets SCA = 0 and codes 0 (bitsandbytes computes 0 · (127/0) =
NaN and casts it to int8, which gives 0 on x86; here it is guarded explicitly).

What bitsandbytes' default backend computes, each difference from the paper a named argument:

* ``outlier_rule=">="`` — a value is an outlier when ``|x| ≥ threshold`` (``backends/default/ops.py``
  and the CUDA kernel ``kInt8VectorQuant``, which keeps ``absval < threshold``). The paper reads both
  ways: §3.2 isolates dimensions with a magnitude "larger than the threshold α", §4's outlier-feature
  criterion is a magnitude "of at least 6.0". ``">"`` is the strict reading; a value of exactly 6.0
  separates them.
* The row absmax (1) excludes only the outlier *values*: the other entries of an outlier column still
  count toward their row's SCA, though (3) then sends the whole column down the float path.
* ``cast="float16"`` — ``MatMul8bitLt.forward`` quantizes ``A.to(float16)`` and ``B.to(float16)``: the
  codes, the scales and the outlier test see float16-rounded values, while the float path multiplies
  the original-precision X. ``cast=None`` quantizes the float32 values themselves.
* ``outlier_weight="dequantized"`` — the float path multiplies X[:, O] by the *int8-dequantized*
  weight columns ``CB[:, O] · SCB / 127`` (computed ``(CB · SCB) · fl32(1/127)``, ``_ops.py:
  int8_vectorwise_dequant``): the releases with the ``int8_mixed_scaled_mm`` op (0.50.2 here) always,
  even with ``has_fp16_weights=True`` (a TODO in the source); earlier ``MatMul8bitLt`` versions for
  inference weights (``has_fp16_weights=False``; there ``CB · SCB / 127.0``, a division).
  ``"original"`` uses the float weight W[:, O], as the paper's equation does and as those earlier
  versions did with ``has_fp16_weights=True`` (``state.subB = B[:, idx]``).
* ``dequant_constant="default"`` — ``int8_mm_dequant`` of the default (CPU) backend computes
  ``(acc · (SCA ⊗ SCB)) · 6.200124e-05`` in float32, then adds the bias: a constant 1.8e-5 (relative)
  larger than 1/127² = 6.2000124e-05, so every int8-path output is scaled by 1.000018. ``"exact"``
  uses fl32(1/127²) = 6.200012e-05f, the CUDA kernel's ``MM_DEQUANT_CONST`` (the CUDA kernel also fuses
  the bias with an FMA and multiplies ``(acc · SCA) · SCB``; that order is not mirrored here).

The int8 product is exact: refquant's :func:`refquant.integer.gemm.int_matmul` (int32, never wraps).
bitsandbytes' CPU backend without AVX-512 computes it as a float32 matmul cast to int32, which is
exact only while every partial sum stays below 2^24 (K ≲ 1040 at full-scale codes).

The float path adds the outlier columns one at a time, in increasing column order, each as a rank-1
float32 update ``y ← fl32(y + fl32(x_k · w_k))`` — a fixed order, so the loop twin equals it exactly.
bitsandbytes uses ``addmm`` (a BLAS call, summation order and FMA its own): agreement there is to
float32 rounding, and bit-exact whenever no column is an outlier.

References
----------
Dettmers, Lewis, Belkada & Zettlemoyer, "LLM.int8(): 8-bit Matrix Multiplication for Transformers at
Scale", NeurIPS 2022, §3.1 (vector-wise quantization), §3.2 (mixed-precision decomposition, α = 6.0),
§4 (outlier features). Mirrored: bitsandbytes-foundation/bitsandbytes 0.50.2 ``bitsandbytes/backends/
default/ops.py: int8_vectorwise_quant, int8_mm_dequant, int8_mixed_scaled_mm, int8_scaled_mm``,
``bitsandbytes/_ops.py: int8_vectorwise_dequant``, ``bitsandbytes/autograd/_functions.py:
MatMul8bitLt.forward``; ``csrc/cuda/int8.cu`` (``kInt8VectorQuant``, ``MM_DEQUANT_CONST``).
"""
from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np

from ..core._checks import float_array
from ..core._types import ArrayLike
from ..integer.gemm import int_matmul
from ..models.gpt import affine

OUTLIER_RULES = (">=", ">")
OUTLIER_WEIGHTS = ("dequantized", "original")
DEQUANT_CONSTANTS = {"default": np.float32(6.200124e-05),  # bitsandbytes backends/default/ops.py
                     "exact": np.float32(1.0 / (127 * 127))}  # = 6.200012e-05f, csrc MM_DEQUANT_CONST
CASTS = ("float16", None)
_R127 = np.float32(7.874015718698502e-3)  # int8_vectorwise_dequant's constant: fl32(1/127)


def _threshold(threshold):
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)) \
            or not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0 (0 disables the outlier path), got {threshold!r}")
    return float(threshold)


def _choice(value, allowed, name):
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {tuple(allowed)}, got {value!r}")
    return value


def _as_float(x, name):
    """float16 stays float16; other floats compute in float32 (bitsandbytes' quantizer works on float16
    or float32 inputs; float64 is rounded to float32 first)."""
    a = float_array(x, name)
    if a.ndim < 1 or a.shape[-1] == 0:
        raise ValueError(f"{name}: expected an array of shape (..., K) with K >= 1, got {a.shape}")
    return a if a.dtype in (np.float16, np.float32) else a.astype(np.float32)


def outlier_mask(x: ArrayLike, threshold: float, outlier_rule: str = ">=") -> np.ndarray:
    """Boolean mask of the outlier values: ``|x| ≥ threshold`` (or ``>``); all False when threshold is 0."""
    t = _threshold(threshold)
    _choice(outlier_rule, OUTLIER_RULES, "outlier_rule")
    a = np.abs(np.asarray(x))
    if t == 0.0:
        return np.zeros(a.shape, bool)
    return a >= t if outlier_rule == ">=" else a > t


def int8_vectorwise_quant(x: ArrayLike, threshold: float = 0.0, *, outlier_rule: str =
                          ">=") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise absmax int8 codes of ``x`` with LLM.int8()'s outlier columns zeroed (eq. 1–3).

    Parameters
    ----------
    x : float ndarray of shape (..., K)
        float16 or float32 (float64 is rounded to float32 first); NaN is refused, and so is ±Inf
        outside the outlier values (it has no row scale) and a nonzero row absmax below 127/FLT_MAX
        (≈ 3.7e-37, float32 input only: 127/absmax overflows).
    threshold : float
        Outlier threshold α; 0 (default) disables the outlier columns.
    outlier_rule : ">=" (bitsandbytes) or ">"

    Returns
    -------
    codes : int8 ndarray of shape (..., K)
        ``round_half_even(x · fl32(fl32(1 / absmax) · 127))``, 0 in every outlier column.
    absmax : float32 ndarray of shape x.shape[:-1]
        The row scale SCA (the step is absmax / 127).
    outlier_cols : int64 ndarray of shape (n_outliers,)
        Sorted indices of the columns holding an outlier in any row (empty when threshold is 0;
        bitsandbytes returns None there).

    References
    ----------
    bitsandbytes ``backends/default/ops.py: int8_vectorwise_quant``; Dettmers et al. 2022, §3.1–3.2.
    """
    a = _as_float(x, "x")
    a2 = a.reshape(-1, a.shape[-1])
    out = outlier_mask(a2, threshold, outlier_rule)
    cols = np.flatnonzero(out.any(axis=0)).astype(np.int64)
    kept = np.where(out, a2.dtype.type(0), a2)
    if not np.all(np.isfinite(kept)):
        raise ValueError("x: ±Inf outside the outlier values (after the float16 cast, |x| > 65504 is Inf); "
                         "it has no int8 row scale")
    absmax = np.abs(kept).max(axis=1).astype(np.float32)
    with np.errstate(divide="ignore", over="ignore"):
        inv = np.where(absmax > 0, (np.float32(1.0) / absmax) * np.float32(127.0), np.float32(0.0))  # eq. (2)
    if not np.all(np.isfinite(inv)):
        raise ValueError(f"x: a row absmax of {absmax[~np.isfinite(inv)].min()!r} is below 127/FLT_MAX: "
                         "its scale 127/absmax overflows float32")
    codes = np.rint(kept.astype(np.float32) * inv.astype(np.float32)[:, None]).astype(np.int8)
    codes[:, cols] = 0
    return codes.reshape(a.shape), absmax.reshape(a.shape[:-1]), cols


def int8_vectorwise_quant_ref(x: ArrayLike, threshold: float = 0.0, *, outlier_rule: str =
                              ">=") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loop twin of :func:`int8_vectorwise_quant` (2-D x): one scalar at a time, in float32."""
    a = _as_float(x, "x")
    if a.ndim != 2:
        raise ValueError(f"x: expected a 2-D array, got shape {a.shape}")
    t = _threshold(threshold)
    _choice(outlier_rule, OUTLIER_RULES, "outlier_rule")
    M, K = a.shape

    def is_out(v):
        return t > 0 and (abs(v) >= t if outlier_rule == ">=" else abs(v) > t)

    cols = sorted({k for i in range(M) for k in range(K) if is_out(a[i, k])})
    codes = np.zeros((M, K), np.int8)
    absmax = np.zeros(M, np.float32)
    for i in range(M):
        m = np.float32(0.0)
        for k in range(K):
            if not is_out(a[i, k]):
                m = max(m, np.float32(abs(a[i, k])))
        absmax[i] = m
        with np.errstate(over="ignore"):
            inv = np.float32(np.float32(np.float32(1.0) / m) * np.float32(127.0)) if m > 0 else np.float32(0.0)
        if not np.isfinite(inv):
            raise ValueError(f"x: a row absmax of {m!r} is below 127/FLT_MAX: its scale 127/absmax overflows float32")
        for k in range(K):
            if k not in cols and not is_out(a[i, k]):
                codes[i, k] = int(np.rint(np.float32(np.float32(a[i, k]) * inv)))
    return codes, absmax, np.array(cols, np.int64)


def int8_vectorwise_dequant(codes: ArrayLike, absmax: ArrayLike) -> np.ndarray:
    """``(codes · absmax) · fl32(1/127)`` in float32, one absmax per row (bitsandbytes
    ``int8_vectorwise_dequant``: "divide by 127, or multiply by the reciprocal" — it multiplies)."""
    q = np.asarray(codes)
    if q.dtype != np.int8:
        raise ValueError(f"codes: expected int8, got {q.dtype}")
    s = np.asarray(absmax, np.float32)
    if s.shape != q.shape[:-1]:
        raise ValueError(f"absmax: expected shape {q.shape[:-1]} (one per row of codes), got {s.shape}")
    return (q.astype(np.float32) * s[..., None]) * _R127


def int8_mm_dequant(acc: ArrayLike, row_absmax: ArrayLike, col_absmax: ArrayLike, bias: ArrayLike | None = None, *,
                    dequant_constant: str = "default") -> np.ndarray:
    """``fl32(fl32(acc · fl32(SCA ⊗ SCB)) · c) + bias`` in float32 — bitsandbytes ``int8_mm_dequant``.

    ``acc`` (M, N) int32 (converted to float32 first, as torch does for int32 · float32),
    ``row_absmax`` (M,), ``col_absmax`` (N,), ``bias`` (N,) or None; ``c`` is ``DEQUANT_CONSTANTS[
    dequant_constant]`` (see the module docstring: ``"default"`` is 6.200124e-05, not 1/127²).
    """
    c = DEQUANT_CONSTANTS[_choice(dequant_constant, DEQUANT_CONSTANTS, "dequant_constant")]
    a = np.asarray(acc)
    if a.dtype != np.int32 or a.ndim != 2:
        raise ValueError(f"acc: expected a 2-D int32 array, got {a.dtype} of shape {a.shape}")
    r = np.asarray(row_absmax, np.float32).reshape(-1, 1)
    s = np.asarray(col_absmax, np.float32).reshape(1, -1)
    if r.shape[0] != a.shape[0] or s.shape[1] != a.shape[1]:
        raise ValueError(f"row_absmax, col_absmax: expected ({a.shape[0]},) and ({a.shape[1]},), got "
                         f"{np.shape(row_absmax)} and {np.shape(col_absmax)}")
    out = (a.astype(np.float32) * (r * s)) * c
    if bias is not None:
        out = out + np.asarray(bias, np.float32)
    return out


def _check_options(threshold, outlier_rule=">=", outlier_weight="dequantized", cast="float16",
                   dequant_constant="default"):
    _threshold(threshold)
    _choice(outlier_rule, OUTLIER_RULES, "outlier_rule")
    _choice(outlier_weight, OUTLIER_WEIGHTS, "outlier_weight")
    _choice(cast, CASTS, "cast")
    _choice(dequant_constant, DEQUANT_CONSTANTS, "dequant_constant")


def _prepare(x, w, b, threshold, outlier_rule, outlier_weight, cast, dequant_constant):
    _check_options(threshold, outlier_rule, outlier_weight, cast, dequant_constant)
    X = float_array(x, "x").astype(np.float32, copy=False)
    W = float_array(w, "w").astype(np.float32, copy=False)
    if W.ndim != 2 or X.ndim < 1 or X.shape[-1] != W.shape[1]:
        raise ValueError(f"x, w: expected x (..., K) and w (N, K), got {X.shape} and {W.shape}")
    B = None if b is None else float_array(b, "b").astype(np.float32, copy=False)
    if B is not None and B.shape != (W.shape[0],):
        raise ValueError(f"b: expected shape ({W.shape[0]},), got {B.shape}")
    X2 = X.reshape(-1, X.shape[-1])
    with np.errstate(over="ignore"):
        A16, W16 = (X2.astype(np.float16), W.astype(np.float16)) if cast == "float16" else (X2, W)
    return X, X2, W, B, A16, W16


def llm_int8_linear(x: ArrayLike, w: ArrayLike, b: ArrayLike | None = None, *, threshold: float = 6.0,
                    outlier_rule: str = ">=", outlier_weight: str = "dequantized", cast: str | None = "float16",
                    dequant_constant: str = "default") -> np.ndarray:
    """``y ≈ x @ wᵀ + b`` as LLM.int8() computes it (bitsandbytes ``MatMul8bitLt.forward``, inference).

    Parameters
    ----------
    x : float ndarray of shape (..., K)
    w : float ndarray of shape (N, K)
    b : float ndarray of shape (N,), or None
    threshold : float
        Outlier threshold α (6.0, the paper's and ``Linear8bitLt``'s usual value); 0 is pure int8.
    outlier_rule, outlier_weight, cast, dequant_constant
        The conventions of the module docstring; the defaults reproduce bitsandbytes 0.50.2.

    Returns
    -------
    float32 ndarray of shape (..., N)
        ``int8_mm_dequant(CA @ CBᵀ, SCA, SCB) + b``, then ``+ x[:, k] · w_used[:, k]ᵀ`` for each outlier
        column k in increasing order (float32 rank-1 updates).
    """
    X, X2, W, B, A16, W16 = _prepare(x, w, b, threshold, outlier_rule, outlier_weight, cast, dequant_constant)
    CA, SCA, cols = int8_vectorwise_quant(A16, threshold, outlier_rule=outlier_rule)
    CB, SCB, _ = int8_vectorwise_quant(W16, 0.0)
    acc = int_matmul(CA, CB.T)  # exact int32: Σ_k CA[i, k] CB[j, k]
    y = int8_mm_dequant(acc, SCA, SCB, B, dequant_constant=dequant_constant)
    if cols.size:
        Wo = int8_vectorwise_dequant(CB[:, cols], SCB) if outlier_weight == "dequantized" else W[:, cols]
        for j, k in enumerate(cols):  # the float path, one outlier column at a time
            y += X2[:, k:k + 1] * Wo[None, :, j]
    return y.reshape(X.shape[:-1] + (W.shape[0],))


def llm_int8_linear_ref(x: ArrayLike, w: ArrayLike, b: ArrayLike | None = None, *, threshold: float = 6.0,
                        outlier_rule: str = ">=", outlier_weight: str = "dequantized", cast: str | None = "float16",
                        dequant_constant: str = "default") -> np.ndarray:
    """Loop twin of :func:`llm_int8_linear` (x 2-D): scalar quantization, the int32 dot product on Python
    integers, the dequantization and the outlier terms one scalar at a time, in float32."""
    X, X2, W, B, A16, W16 = _prepare(x, w, b, threshold, outlier_rule, outlier_weight, cast, dequant_constant)
    if X.ndim != 2:
        raise ValueError(f"x: expected a 2-D array, got shape {X.shape}")
    c = DEQUANT_CONSTANTS[dequant_constant]
    CA, SCA, cols = int8_vectorwise_quant_ref(A16, threshold, outlier_rule=outlier_rule)
    CB, SCB, _ = int8_vectorwise_quant_ref(W16, 0.0)
    M, K = X.shape
    N = W.shape[0]
    y = np.zeros((M, N), np.float32)
    for i in range(M):
        for j in range(N):
            acc = sum(int(CA[i, k]) * int(CB[j, k]) for k in range(K))
            v = np.float32(np.float32(acc) * np.float32(SCA[i] * SCB[j])) * c
            if B is not None:
                v = np.float32(v + B[j])
            for k in cols:
                wk = np.float32(np.float32(np.float32(CB[j, k]) * SCB[j]) * _R127) \
                    if outlier_weight == "dequantized" else W[j, k]
                v = np.float32(v + np.float32(X2[i, k] * wk))
            y[i, j] = v
    return y


def llm_int8_hook(threshold: float = 6.0, layers: Collection[str] | None = None, **options: str | None) -> Callable:
    """A ``linear=`` hook running the listed layers (None: every layer) through :func:`llm_int8_linear`.

    ``options`` are :func:`llm_int8_linear`'s conventions. The hook returns ``y`` alone, so a backward
    pass through it uses the float operands (straight through).
    """
    bad = set(options) - {"outlier_rule", "outlier_weight", "cast", "dequant_constant"}
    if bad:
        raise ValueError(f"options: unknown {sorted(bad)}; expected outlier_rule, outlier_weight, cast, dequant_constant")
    _check_options(threshold, **options)
    targets = None if layers is None else frozenset(layers)

    def hook(name, x, w, b):
        if targets is not None and name not in targets:
            return affine(x, w, b)
        return llm_int8_linear(x, w, b, threshold=threshold, **options)
    return hook
