"""GPTQ: one linear layer's weights quantized column by column, each column's rounding error
compensated on the columns not yet quantized, weighted by the inverse Hessian of the layer-wise
objective ``‖W X − Ŵ X‖²``.

Algorithm 1 of the paper, with its names (rows of W are output channels, columns input channels)::

    H ← H + λ I,  λ = percdamp · mean(diag H)                             (damping, §4 "Step 3")
    Hinv ← Cholesky(H⁻¹)ᵀ   (upper: H⁻¹ = Hinvᵀ Hinv)                                        (1)
    for each block of B columns i … i+B−1, for each column j in it:
        Q[:, j]  = quant(W[:, j])                                                            (2)
        E[:, j]  = (W[:, j] − Q[:, j]) / Hinv[j, j]                                          (3)
        W[:, j:i+B] −= E[:, j] · Hinv[j, j:i+B]                       (inside the block)     (4)
    after each block:  W[:, i+B:] −= E[:, i:i+B] · Hinv[i:i+B, i+B:]  (lazy batch update)    (5)

Row j of the upper Cholesky factor, divided by its diagonal, is row j of the inverse Hessian of
the columns not yet quantized over its diagonal — the OBS update (paper eq. 2–3) without ever
forming those inverses. (4)+(5) apply the same updates as column-by-column OBS, in a different
order: (5) sums B rank-1 updates in one matrix product, so the lazy and the column-by-column forms
agree to float rounding (exactly when B = 1; see :func:`refquant.ptq.gptq_ref.gptq_quantize_ref`).

The quantizer (2) is IST-DASLab ``quant.py: Quantizer`` with ``perchannel=True`` — every row of a
group gets its own (scale, zero)::

    xmin = min(min w, 0),  xmax = max(max w, 0)                      (range extended to 0)
    symmetric: xmax = max(|xmin|, xmax);  xmin = −xmax if xmin < 0   (see below for xmin = 0)
    xmin = xmax = 0 (an all-zero row): xmin = −1, xmax = +1
    scale = (xmax − xmin) / maxq,  maxq = 2^bits − 1
    zero  = round(−xmin / scale)   (asymmetric);   (maxq + 1) / 2   (symmetric)
    q     = clamp(round(w / scale) + zero, 0, maxq),   round = half to even (torch.round)
    ŵ     = scale · (q − zero)

which is refquant's convention ``w ≈ scale · (q − zero_point)`` with unsigned codes q ∈ [0, maxq]
and zero_point = zero (AutoGPTQ's ``gptq`` checkpoint format stores zero − 1; that is packing, not
this). ``mse=True`` shrinks the range to p·[xmin, xmax], p = 1 − i/grid for i < ⌊max_shrink·grid⌋,
keeping the p with the smallest Σ|ŵ − w|^norm (first minimum; the symmetric zero stays (maxq+1)/2).

Conventions where the references differ or surprise, each a named argument here:

* ``symmetric_nonnegative_clip`` (AutoGPTQ issue #293): in symmetric mode a row whose weights are
  all ≥ 0 keeps xmin = 0, so scale = xmax/maxq — half the step a mixed-sign row of the same absmax
  gets — while the codes stay centred on zero = (maxq+1)/2: the grid covers only
  [−(maxq+1)/2, (maxq−1)/2]·scale ≈ [−xmax/2, xmax/2], and every weight above (maxq−1)/2 · scale
  (7/15 · xmax at 4 bits) clips. True (default) reproduces IST-DASLab, AutoGPTQ and GPTQModel;
  False sets xmin = −xmax for those rows too (the fix proposed in the issue).
* ``group_params_from``: with groups, each group's (scale, zero) is chosen when its first column is
  reached, from ``W[:, g:g+group_size]`` — in the references the *lazily* updated W, which holds
  the error feedback of every column before the current block of ``block_size`` columns but not of
  the block's own earlier columns (those live in the block's copy W1). ``"block_start"`` (default)
  reproduces that; ``"updated"`` uses the weights with the feedback of every earlier column, as
  column-by-column Algorithm 1 would. They differ only when a group starts inside a block
  (``group_size`` not a multiple of ``block_size``, e.g. the common g32 / B128).
* Per-row parameters (``group_size=0``, the references' −1) are found on W before the dead columns
  are zeroed; group parameters after; ``static_groups`` ones on the dead-zeroed W in the original
  column order, before any permutation.
* ``act_order``: columns processed by descending diag H (ties: lower index first — torch's
  ``argsort`` leaves tie order unspecified). Groups are then consecutive in the processing order
  (``g_idx[perm[j]] = j // group_size``), unless ``static_groups``, where they stay in the original
  order (``g_idx[c] = c // group_size``).
* A dead input (H_jj = 0) gets H_jj = 1 and W[:, j] = 0.
* ``damp_auto_increment`` (GPTQModel ``GPTQ.hessian_inverse``): when a Cholesky fails, retry with
  percdamp + k·increment (each try damps the undamped H) while it stays below 1. Off by default.
* ``group_quantizer`` replaces the quantizer (2) by a caller's grid, e.g. a ggml block type
  (:mod:`refquant.ptq.ggml_grids`): at the first column of each group it is called with the group's
  weights as they stand then (as ``group_params_from`` says) and returns ``(params, round_column)``;
  each column j of the group is then quantized by ``round_column(j − g, W[:, j]) -> (q, ŵ)`` —
  integer codes and their float values — and the error feedback (3)–(5) is unchanged. The result
  keeps ``params`` per group in ``group_params``, the codes as int32 and no scale / zero point.

Everything is computed in float64; ``w_hat`` is rounded to float32 at the end.

References
----------
Frantar, Ashkboos, Hoefler & Alistarh, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers", ICLR 2023, §4 and Algorithm 1. Mirrored: IST-DASLab/gptq ``gptq.py:
GPTQ.fasterquant`` and ``quant.py: Quantizer``; AutoGPTQ ``auto_gptq/quantization/gptq.py`` (scale,
zero and ``g_idx`` returned) and ``quantizer.py``; GPTQModel ``gptqmodel/quantization/gptq.py:
GPTQ.hessian_inverse`` (damp auto-increment); AutoGPTQ issue #293 ("Zero point in quantizer").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.linalg

from ..core._checks import float_array
from ..core._types import ArrayLike

GROUP_PARAMS_FROM = ("block_start", "updated")


@dataclass(frozen=True)
class GPTQResult:
    """A GPTQ-quantized (rows, K) weight: ``w_hat[:, c] = scale[:, g] · (codes[:, c] − zero_point[:, g])``
    with ``g = g_idx[c]`` (computed in float64, rounded to float32). Arrays are read-only."""

    w_hat: np.ndarray  # (rows, K) float32, original column order
    codes: np.ndarray  # (rows, K) uint8 in [0, 2^bits − 1], original column order (int32: a group_quantizer's codes)
    scale: np.ndarray  # (rows, n_groups) float64, the step size ((rows, 0) with a group_quantizer)
    zero_point: np.ndarray  # (rows, n_groups) int32: the code of 0.0
    g_idx: np.ndarray  # (K,) int32: the group of each original column
    perm: np.ndarray  # (K,) int64: perm[j] is the column quantized j-th (identity without act_order)
    bits: int  # code width (0 with a group_quantizer)
    symmetric: bool  # zero_point fixed at 2^(bits−1) (not stored)
    percdamp: float  # the damping actually used (> the argument after an automatic increase)
    loss: float  # the reference's "error": Σ (w − ŵ)² / Hinv_jj² / 2 over every weight
    group_params: tuple = ()  # with a group_quantizer: the params it returned for each group, in order

    def storage_bits(self, scale_bits: int = 32) -> int:
        """Codes, scales, zero points (asymmetric only: ``bits`` each) and, when the groups are not
        contiguous runs of columns (act_order without static groups), a 32-bit g_idx per column."""
        if self.group_params:
            raise ValueError("storage_bits: a result of a caller's group_quantizer; count its stored blocks instead")
        rows, k = self.codes.shape
        n = rows * k * self.bits + self.scale.size * scale_bits
        n += 0 if self.symmetric else self.zero_point.size * self.bits
        contiguous = np.array_equal(self.g_idx, np.sort(self.g_idx))
        return n + (0 if contiguous else 32 * k)


def gptq_params(x: ArrayLike, bits: int, *, symmetric: bool = False, mse: bool = False, norm: float = 2.4,
                grid: int = 100, max_shrink: float = 0.8, symmetric_nonnegative_clip: bool =
                True) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``(scale, zero)`` of IST-DASLab ``Quantizer.find_params(x, weight=True)`` for x (rows, n).

    Returns float64 arrays of shape (rows,); the equations are in the module docstring. The MSE
    search mirrors the reference's loop: a grid point replaces the best one only if its error is
    strictly smaller.
    """
    x = np.asarray(x, np.float64)
    maxq = 2 ** bits - 1
    xmin = np.minimum(x.min(1), 0.0)
    xmax = np.maximum(x.max(1), 0.0)
    if symmetric:
        xmax = np.maximum(np.abs(xmin), xmax)
        widen = (xmin < 0) if symmetric_nonnegative_clip else np.ones(xmin.shape, bool)
        xmin = np.where(widen, -xmax, xmin)
    zero_rows = (xmin == 0) & (xmax == 0)
    xmin = np.where(zero_rows, -1.0, xmin)
    xmax = np.where(zero_rows, 1.0, xmax)
    scale = (xmax - xmin) / maxq
    zero = np.full_like(scale, (maxq + 1) / 2) if symmetric else np.rint(-xmin / scale)
    if mse:
        best = np.full(x.shape[0], np.inf)
        for i in range(int(max_shrink * grid)):
            p = 1 - i / grid
            xmin1, xmax1 = p * xmin, p * xmax
            scale1 = (xmax1 - xmin1) / maxq
            zero1 = zero if symmetric else np.rint(-xmin1 / scale1)
            q = np.clip(np.rint(x / scale1[:, None]) + zero1[:, None], 0, maxq)
            err = np.sum(np.abs(scale1[:, None] * (q - zero1[:, None]) - x) ** norm, axis=1)
            better = err < best
            best = np.where(better, err, best)
            scale = np.where(better, scale1, scale)
            zero = np.where(better, zero1, zero)
    return scale, zero


def _codes(w, scale, zero, maxq):
    """q = clamp(round(w / scale) + zero, 0, maxq), half to even, as float64 integers."""
    return np.clip(np.rint(w / scale) + zero, 0, maxq)


def _inverse_cholesky(H, percdamp, damp_auto_increment):
    """(Hinv, percdamp used): the upper Cholesky factor of (H + λI)⁻¹, λ = percdamp · mean(diag H), eq. (1).

    The route of the references: Cholesky of H (torch.linalg.cholesky), the inverse from the
    factor (torch.cholesky_inverse = LAPACK potri), then its upper Cholesky factor.
    """
    K = H.shape[0]
    mean = np.mean(np.diag(H))
    damp = percdamp
    while True:
        Hd = H.copy()
        Hd[np.arange(K), np.arange(K)] += damp * mean
        try:
            L = scipy.linalg.cholesky(Hd, lower=True)  # H = L Lᵀ
            Hi, info = scipy.linalg.lapack.dpotri(L, lower=1)  # (L Lᵀ)⁻¹, lower triangle
            if info != 0:
                raise np.linalg.LinAlgError(f"potri info {info}")
            upper = np.triu_indices(K, 1)
            Hi[upper] = Hi.T[upper]  # potri fills the lower triangle; mirror it (torch returns the full matrix)
            return scipy.linalg.cholesky(Hi, lower=False), damp  # H⁻¹ = Hinvᵀ Hinv
        except np.linalg.LinAlgError as e:
            if damp_auto_increment <= 0:
                raise np.linalg.LinAlgError(
                    f"hessian: the Cholesky factorisation failed with percdamp={percdamp} (H + {damp} · mean(diag H) · I "
                    f"is not positive definite: {e}); increase percdamp, use more calibration samples, or pass "
                    "damp_auto_increment (e.g. 0.0015, GPTQModel's default) to retry with more damping") from None
            damp += damp_auto_increment  # GPTQModel: damp += damp_auto_increment while 0 < damp < 1
            if not damp < 1:
                raise np.linalg.LinAlgError(
                    f"hessian: the Cholesky factorisation failed for every percdamp from {percdamp} below 1 in steps "
                    f"of damp_auto_increment={damp_auto_increment}") from None


def _prepare(w, hessian, bits, group_size, block_size, percdamp, damp_auto_increment, act_order, static_groups,
             group_params_from, qopts):
    """Checks, dead columns, static / per-row parameters, the permutation and Hinv (shared by both forms)."""
    w = float_array(w, "w")
    if w.ndim != 2:
        raise ValueError(f"w: expected a (rows, K) weight matrix, got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("w contains Inf")
    H = float_array(hessian, "hessian").astype(np.float64)
    K = w.shape[1]
    if H.shape != (K, K):
        raise ValueError(f"hessian: expected shape ({K}, {K}) for w of shape {w.shape}, got {H.shape}")
    if not np.all(np.isfinite(H)):
        raise ValueError("hessian contains Inf")
    if H.size and np.max(np.abs(H - H.T)) > 1e-6 * np.max(np.abs(H)):
        raise ValueError("hessian: not symmetric (|H − Hᵀ| exceeds 1e-6 · max|H|)")
    for name, v in (("bits", bits), ("group_size", group_size), ("block_size", block_size), ("grid", qopts["grid"])):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError(f"{name} must be an int, got {v!r}")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8 (codes are uint8), got {bits}")
    if group_size < 0:
        raise ValueError(f"group_size must be 0 (one group per row; the references' -1) or positive, got {group_size}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if not (np.isfinite(percdamp) and percdamp >= 0):
        raise ValueError(f"percdamp must be finite and >= 0, got {percdamp!r}")
    if not (np.isfinite(damp_auto_increment) and damp_auto_increment >= 0):
        raise ValueError(f"damp_auto_increment must be finite and >= 0, got {damp_auto_increment!r}")
    if damp_auto_increment > 0 and not 0 < percdamp < 1:
        raise ValueError(f"percdamp must be in (0, 1) with damp_auto_increment (as GPTQModel), got {percdamp!r}")
    if group_params_from not in GROUP_PARAMS_FROM:
        raise ValueError(f"group_params_from: expected one of {GROUP_PARAMS_FROM}, got {group_params_from!r}")
    if qopts["grid"] < 1 or not 0 < qopts["max_shrink"] <= 1 or not qopts["norm"] > 0:
        raise ValueError("mse options: need grid >= 1, 0 < max_shrink <= 1 and norm > 0, got "
                         f"grid={qopts['grid']}, max_shrink={qopts['max_shrink']}, norm={qopts['norm']}")
    if qopts.get("group_quantizer") is not None:
        if not callable(qopts["group_quantizer"]):
            raise TypeError(f"group_quantizer must be callable, got {qopts['group_quantizer']!r}")
        if group_size < 1 or K % group_size:
            raise ValueError(f"group_size: a group_quantizer needs K = {K} to be a positive multiple of group_size, "
                             f"got {group_size}")
        if act_order or static_groups:
            raise ValueError("group_quantizer: act_order and static_groups are not supported with a caller's grid "
                             "(its groups are consecutive columns in the original order)")
    qopts = {k: v for k, v in qopts.items() if k != "group_quantizer"}
    W = w.astype(np.float64)  # a copy: w is never modified
    row_params = gptq_params(W, bits, **qopts) if group_size == 0 else None  # before the dead columns
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    static = None
    if static_groups and group_size:
        static = [gptq_params(W[:, g:g + group_size], bits, **qopts) for g in range(0, K, group_size)]
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(K)
    W, H = W[:, perm], H[np.ix_(perm, perm)]
    Hinv, damp = _inverse_cholesky(H, float(percdamp), float(damp_auto_increment))
    return W, Hinv, perm, row_params, static, damp


def _result(Q, params, perm, group_size, act_order, static, bits, symmetric, damp, loss, custom=None):
    """Assemble the result in the original column order."""
    rows, K = Q.shape
    if custom is not None:  # a group_quantizer: params are its own, Q holds the codes and custom ŵ
        out = dict(w_hat=custom.astype(np.float32), codes=Q.astype(np.int32), scale=np.zeros((rows, 0)),
                   zero_point=np.zeros((rows, 0), np.int32), g_idx=(np.arange(K) // group_size).astype(np.int32),
                   perm=perm.astype(np.int64))
        for a in out.values():
            a.flags.writeable = False
        return GPTQResult(**out, bits=0, symmetric=False, percdamp=damp, loss=float(loss), group_params=tuple(params))
    if group_size == 0:
        g_idx = np.zeros(K, np.int64)
    elif static is not None or not act_order:
        g_idx = np.arange(K) // group_size
    else:
        g_idx = np.empty(K, np.int64)
        g_idx[perm] = np.arange(K) // group_size
    scale = np.stack([p[0] for p in params], axis=1)  # (rows, n_groups)
    zero = np.stack([p[1] for p in params], axis=1)
    codes = np.empty_like(Q)
    codes[:, perm] = Q
    w_hat = scale[:, g_idx] * (codes - zero[:, g_idx])
    out = dict(w_hat=w_hat.astype(np.float32), codes=codes.astype(np.uint8), scale=scale, zero_point=zero.astype(np.int32),
               g_idx=g_idx.astype(np.int32), perm=perm.astype(np.int64))
    for a in out.values():
        a.flags.writeable = False
    return GPTQResult(**out, bits=bits, symmetric=symmetric, percdamp=damp, loss=float(loss))


def gptq_quantize(w: ArrayLike, hessian: ArrayLike, *, bits: int = 4, group_size: int = 128, symmetric: bool = False,
                  act_order: bool = False, static_groups: bool = False, percdamp: float = 0.01,
                  block_size: int = 128, mse: bool = False, norm: float = 2.4, grid: int = 100,
                  max_shrink: float = 0.8, symmetric_nonnegative_clip: bool = True,
                  group_params_from: str = "block_start", damp_auto_increment: float = 0.0,
                  group_quantizer: Callable[[np.ndarray], tuple] | None = None) -> GPTQResult:
    """GPTQ (Algorithm 1 with lazy batch updates) of a weight ``w`` (rows, K) given the Hessian of its
    inputs ``hessian`` (K, K) (e.g. ``InputStats.H`` from :mod:`refquant.ptq.hessian`).

    Parameters
    ----------
    w : ndarray (rows, K)
        The layer's weight, (out, in); not modified.
    hessian : ndarray (K, K)
        Symmetric positive semi-definite; 2/n Σ x xᵀ (its scale does not matter).
    bits : int, 1..8
    group_size : int
        Columns per (scale, zero) group; 0: one per row (the references' −1).
    symmetric, act_order, static_groups, percdamp, block_size : as IST-DASLab ``fasterquant``
        (``--sym``, ``--act-order``, ``--static-groups``, ``--percdamp``, ``blocksize``);
        ``static_groups`` has no effect with ``group_size=0``, as in the reference.
    mse, norm, grid, max_shrink : the quantizer's range search (``Quantizer.configure``).
    symmetric_nonnegative_clip, group_params_from, damp_auto_increment : see the module docstring.
    group_quantizer : callable or None
        A caller's grid for each group of ``group_size`` columns (module docstring): ``group_quantizer(Wg)``
        with Wg (rows, group_size) float64 returns ``(params, round_column)``, ``round_column(i, w)`` with
        w (rows,) returns (codes (rows,) int, ŵ (rows,) float). ``bits``, ``symmetric`` and the MSE
        options are then unused; act_order and static_groups are refused.

    Returns
    -------
    GPTQResult
        codes in refquant's convention ``w ≈ scale · (q − zero_point)``, everything in the original
        column order.

    Raises
    ------
    numpy.linalg.LinAlgError (a ValueError)
        H + λI is not positive definite; the message names ``percdamp``.
    """
    qopts = dict(symmetric=symmetric, mse=mse, norm=norm, grid=grid, max_shrink=max_shrink,
                 symmetric_nonnegative_clip=symmetric_nonnegative_clip)
    W, Hinv, perm, row_params, static, damp = _prepare(w, hessian, bits, group_size, block_size, percdamp,
                                                       damp_auto_increment, act_order, static_groups,
                                                       group_params_from, dict(qopts, group_quantizer=group_quantizer))
    rows, K = W.shape
    maxq = 2 ** bits - 1
    Q = np.zeros_like(W)
    What = np.zeros_like(W) if group_quantizer is not None else None
    params = [row_params] if group_size == 0 else (static or [])
    loss = 0.0
    s = z = None
    for i1 in range(0, K, block_size):
        i2 = min(i1 + block_size, K)
        W1 = W[:, i1:i2].copy()  # the block, updated column by column, eq. (4)
        Err1 = np.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i
            if group_size == 0:
                s, z = row_params
            elif static is not None:
                s, z = static[perm[j] // group_size]
            elif j % group_size == 0:  # a new group: its parameters from the weights as they stand now
                if group_params_from == "block_start":
                    src = W[:, j:j + group_size]  # feedback of the columns before i1 only
                else:  # + this block's columns before j: in W1, and applied here to the columns past i2
                    past = W[:, i2:j + group_size] - Err1[:, :i] @ Hinv[i1:j, i2:j + group_size]
                    src = np.concatenate([W1[:, i:i + group_size], past], axis=1)
                if group_quantizer is None:
                    s, z = gptq_params(src, bits, **qopts)
                    params.append((s, z))
                else:
                    gp, round_column = group_quantizer(np.array(src))
                    params.append(gp)
            w_j = W1[:, i]
            if group_quantizer is None:
                q = _codes(w_j, s, z, maxq)  # eq. (2)
                dq = s * (q - z)
            else:
                q, dq = round_column(j % group_size, w_j.copy())  # eq. (2) on the caller's grid
                What[:, j] = dq
            Q[:, j] = q
            d = Hinv1[i, i]
            loss += np.sum((w_j - dq) ** 2) / d ** 2 / 2
            err1 = (w_j - dq) / d  # eq. (3)
            W1[:, i:] -= np.outer(err1, Hinv1[i, i:])  # eq. (4)
            Err1[:, i] = err1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]  # eq. (5)
    return _result(Q, params, perm, group_size, act_order, static, bits, symmetric, damp, loss,
                   None if group_quantizer is None else What)


def gptq_layer(**options: object) -> Callable:
    """A ``quantize(name, w, stats)`` for :func:`refquant.ptq.hessian.quantize_sequential` that runs
    :func:`gptq_quantize` with ``options`` on the layer's Hessian."""
    def quantize(name, w, stats):
        return gptq_quantize(w, stats.H, **options)
    return quantize
