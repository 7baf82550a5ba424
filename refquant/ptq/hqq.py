"""HQQ: Half-Quadratic Quantization — the zero points of an asymmetric min-max grid re-fitted, without
data, to minimise an lp (p < 1) norm of the weight error by half-quadratic splitting.

Groups and the initial grid (``hqq/core/quantize.py: Quantizer.quantize``): ``W`` (float32) is viewed as
``W.reshape(-1, g)`` (``axis=1``: each group is g consecutive elements in row-major order — for a
(out, in) weight with ``in % g == 0``, g consecutive inputs of one output channel) or
``W.reshape(g, -1)`` (``axis=0``: each group a column of that view, so its elements are ``numel / g``
apart). Per group, with HQQ's *inverse* scale ``s`` (codes per unit of weight)::

    s = fl(fl(1 / (max − min)) · maxq),  maxq = 2^bits − 1       (torch's ``maxq / t`` is ``t.reciprocal() * maxq``)
    s = 1 where |max − min| ≤ 1e-4;  s = min(s, 2e4)                                                (0)
    z = −min · s;   z = round(z) if round_zero  (hqq_base_quant_config: round_zero = (bits == 4))

The optimizer (``hqq/core/optimize.py: optimize_weights_proximal_legacy``, the default
``optimize_weights_proximal``) keeps ``s`` and updates ``z``; with β₀ = beta, per step t::

    W_q = clamp(round(W·s + z_t), 0, maxq)            (round half to even; float32 mul, then add)    (1)
    W_r = (W_q − z_t) / s                              (a division, not ·(1/s))                       (2)
    e_t = mean |W − W_r|                               (over the whole tensor: one stop for all groups)(3)
    W_e = shrink_p(W − W_r, β_t),  shrink_p(x, β) = sign(x) · max(|x| − |x|^(p−1) / β, 0)          (4)
          (p = 1: sign(x) · max(|x| − 1/β, 0))
    z_{t+1} = mean over the group of (W_q − (W − W_e) · s)                                        (5)
    β_{t+1} = κ · β_t
    stop after step t if e_t ≥ e_{t−1} (early_stop), or after ``iters`` steps

(4) is the proximal operator of the lp "norm" (the generalised soft-threshold of the half-quadratic
split ``min φ(W_e) + β/2 ‖W_e − (W − Q⁻¹(Q(W)))‖²``); (5) is the closed-form minimiser of
``‖W_q − (W − W_e)·s − z‖²`` over z. The threshold acts in weight units: ``shrink_p(x) = 0`` whenever
``|x| ≤ β^(−1/(2−p))`` (≈ 0.17 at β = 10, p = 0.7), so for typical LLM weights (|w| ≲ 0.1) W_e = 0
and (5) is the least-squares zero for the current codes — β and κ then change nothing. Codes and the
stored parameters are then::

    codes = clamp(round(W·s + z), 0, maxq)   (z the returned zero, below)
    refquant:  w ≈ scale · (codes − zero_point),  scale = fl(1/s)  (HQQ stores ``1.0 / scale``),
               zero_point = z — a float, as HQQ keeps it (not an integer code)
    w_hat = fl(fl(codes − zero_point) · scale)       (``Quantizer.dequantize``, compute_dtype float32)

Which iterate comes back (``return_best``): the reference returns the *last* z computed. Step t
measures e_t of z_t and computes z_{t+1} in the same call, so when the loop stops after step k because
e_k ≥ e_{k−1}, it returns z_{k+1} — two updates past z_{k−1}, the best it measured, and an iterate
it never measured; when it runs out of steps it returns z_iters, one update past the last measured.
``return_best=False`` (default) reproduces that; ``True`` returns the z_t with the smallest e_t among
all iterates z_0 … z_n (the last one measured too). ``errors`` lists e_0 … e_n either way.

Where the versions differ:

* ``kappa``: hqq 0.2.8.post1 (the ``optimize_weights_proximal_legacy_step`` refactor) reads κ but
  never applies it — β stays at beta. Earlier hqq (``beta *= kappa`` in the loop; also the copies in
  torchao and optimum-quanto) and the paper anneal it. Default κ = 1.01 anneals; ``kappa=1.0``
  reproduces 0.2.8.post1 exactly (β·1 = β).
* Constant groups: (0) is 0.2.8.post1's guard; earlier versions clamp 1/0 = inf to 2e4, or set
  max − min = maxq where it is 0. Earlier versions start ``best_error`` at 1e4, not inf (a tensor whose
  e_0 ≥ 1e4 then stops at once).
* On CUDA the reference optimizes in float16; this mirrors its CPU path, float32.

Arithmetic: every step is float32, elementwise as in torch; ``|x|^(p−1)`` is float32 ``power``
(torch uses SLEEF's, accurate to 1 ulp); the means (3) and (5) are accumulated in float64 (pairwise)
and rounded to float32 (torch sums float32 in its own vectorised order). The two therefore agree to
float32 rounding, not bit for bit (measured on the recorded goldens: tests/test_hqq.py).

References
----------
Badri & Shaji, "Half-Quadratic Quantization of Large Machine Learning Models", Mobius Labs blog, Nov.
2023 (https://mobiusml.github.io/hqq_blog/): the two alternating sub-problems. Geman & Yang 1995 (half-quadratic
splitting). Mirrored: mobiusml/hqq 0.2.8.post1 ``hqq/core/optimize.py: shrink_lp_op,
optimize_weights_proximal_legacy(_step)``, ``hqq/core/quantize.py: Quantizer.quantize, dequantize,
hqq_base_quant_config``; the annealing loop of mobiusml/hqq at commit b21fe876.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core._checks import float_array
from ..core._types import ArrayLike


@dataclass(frozen=True)
class HQQResult:
    """An HQQ-quantized weight: ``w_hat = (codes − zero_point[k]) · scale[k]`` over group k (module docstring)."""

    w_hat: np.ndarray  # float32, the shape of w
    codes: np.ndarray  # uint8 in [0, 2^bits − 1], the shape of w
    scale: np.ndarray  # (n_groups,) float32: the step, fl(1 / inv_scale)
    zero_point: np.ndarray  # (n_groups,) float32: HQQ's float zero
    inv_scale: np.ndarray  # (n_groups,) float32: HQQ's optimizer "scale" s (codes = round(w·s + z))
    n_iters: int  # optimizer steps taken (zero-point updates)
    errors: tuple  # e_t = mean|W − W_r(z_t)| for t = 0 … n_iters (float32 values)
    best_iter: int  # argmin of errors (first minimum)
    bits: int
    group_size: int
    axis: int

    def storage_bits(self, param_bits: int = 16) -> int:
        """Codes plus a scale and a zero per group at ``param_bits`` each (HQQ stores them in float16)."""
        return self.codes.size * self.bits + 2 * self.scale.size * param_bits


def _groups(w, g, axis):
    """(n_groups, g) float32 view-copy of w in HQQ's grouping, and the inverse map back to w's shape."""
    if axis == 1:
        return np.ascontiguousarray(w.reshape(-1, g)), lambda G: G.reshape(w.shape)
    return np.ascontiguousarray(w.reshape(g, -1).T), lambda G: G.T.reshape(w.shape)


def _init(G, maxq, round_zero):
    """Eq. (0): HQQ's inverse scale and zero per group, float32, shape (n_groups, 1)."""
    lo, hi = G.min(axis=1, keepdims=True), G.max(axis=1, keepdims=True)
    denom = hi - lo
    with np.errstate(divide="ignore", over="ignore"):
        s = (np.float32(1.0) / denom) * np.float32(maxq)
    s = np.where(np.abs(denom) <= np.float32(1e-4), np.float32(1.0), s)
    s = np.minimum(s, np.float32(2e4)).astype(np.float32)
    z = (-lo * s).astype(np.float32)
    return s, (np.rint(z) if round_zero else z)


def _quant(W, s, z, maxq):
    return np.clip(np.rint(W * s + z), 0, maxq)  # (1), float32


def _shrink(x, beta, p):
    """Eq. (4), ``shrink_lp_op``: float32; the 1/β factor is a float32 scalar as in torch."""
    a = np.abs(x)
    inv_beta = np.float32(1.0 / beta)
    if p == 1:
        out = np.maximum(a - inv_beta, np.float32(0))
    else:
        with np.errstate(divide="ignore"):
            out = np.maximum(a - inv_beta * np.power(a, np.float32(p - 1)), np.float32(0))  # 0^(p−1) = inf → 0
    return out * np.sign(x)


def _mean_rows(v):
    """Per-group mean: each contiguous row widened to float64, summed (numpy's pairwise sum), divided by
    g, rounded to float32."""
    return (np.ascontiguousarray(v, np.float64).sum(axis=1, keepdims=True) / v.shape[1]).astype(np.float32)


def _mean_row(v):
    """:func:`_mean_rows` of one group (1-D): the same pairwise sum."""
    return np.float32(np.ascontiguousarray(v, np.float64).sum() / v.shape[0])


def _error(W, Wr):
    return np.float32(np.abs(W - Wr).astype(np.float64).sum() / W.size)  # (3)


def _step(W, s, z, maxq, beta, p):
    """One optimizer step on all groups: (W_r, z_next) from z — eq. (1), (2), (4), (5)."""
    Wq = _quant(W, s, z, maxq)
    Wr = (Wq - z) / s
    We = _shrink(W - Wr, beta, p)
    return Wr, _mean_rows(Wq - (W - We) * s)


def _step_ref(W, s, z, maxq, beta, p):
    """Loop twin of :func:`_step`: one group at a time."""
    Wr, zn = np.empty_like(W), np.empty_like(z)
    for k in range(W.shape[0]):
        w, sk, zk = W[k], s[k, 0], z[k, 0]
        q = np.clip(np.rint(w * sk + zk), 0, maxq)
        r = (q - zk) / sk
        a = np.abs(w - r)
        with np.errstate(divide="ignore"):
            sh = np.maximum(a - np.float32(1.0 / beta) * (np.power(a, np.float32(p - 1)) if p != 1 else np.float32(1)),
                            np.float32(0)) * np.sign(w - r)
        Wr[k] = r
        zn[k, 0] = _mean_row(q - (w - sh) * sk)
    return Wr, zn


def _check(w, bits, group_size, axis, lp_norm, beta, kappa, iters):
    W = float_array(w, "w")
    if W.ndim != 2 or W.size == 0:
        raise ValueError(f"w: expected a non-empty 2-D weight, got shape {W.shape}")
    if not np.all(np.isfinite(W)):
        raise ValueError("w must be finite (got ±Inf)")
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an int in 1…8, got {bits!r}")
    if axis not in (0, 1) or isinstance(axis, bool):
        raise ValueError(f"axis must be 0 or 1 (HQQ's two groupings), got {axis!r}")
    g = W.shape[axis] if group_size is None else group_size
    if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1 or W.size % g:
        raise ValueError(f"group_size must be a positive int dividing w.size = {W.size} (or None), got {group_size!r}")
    if not 0 < lp_norm <= 1:
        raise ValueError(f"lp_norm must lie in (0, 1], got {lp_norm!r}")
    if not beta > 0 or not np.isfinite(beta):
        raise ValueError(f"beta must be finite and > 0, got {beta!r}")
    if not kappa >= 1 or not np.isfinite(kappa):
        raise ValueError(f"kappa must be finite and >= 1 (1 keeps beta fixed), got {kappa!r}")
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 0:
        raise ValueError(f"iters must be an int >= 0, got {iters!r}")
    return W.astype(np.float32), int(g)


def _hqq(w, bits, group_size, axis, lp_norm, beta, kappa, iters, early_stop, round_zero, optimize, return_best, step):
    W, g = _check(w, bits, group_size, axis, lp_norm, beta, kappa, iters)
    maxq = 2 ** int(bits) - 1
    G, back = _groups(W, g, axis)
    s, z = _init(G, maxq, bits == 4 if round_zero is None else round_zero)
    zs, errors, best = [z], [], np.float32(np.inf)
    b = float(beta)
    for _ in range(iters if optimize else 0):
        Wr, z = step(G, s, z, maxq, b, lp_norm)
        e = _error(G, Wr)
        errors.append(e)
        zs.append(z)
        b *= kappa
        if early_stop:
            if e < best:
                best = e
            else:
                break
    errors.append(_error(G, (_quant(G, s, zs[-1], maxq) - zs[-1]) / s))  # e_n of the last z, never measured by the loop
    best_iter = int(np.argmin(errors))
    z = zs[best_iter] if return_best else zs[-1]
    codes = _quant(G, s, z, maxq)
    scale = (np.float32(1.0) / s).astype(np.float32)
    w_hat = ((codes - z) * scale).astype(np.float32)
    ro = lambda a: (a.setflags(write=False), a)[1]
    return HQQResult(w_hat=ro(back(w_hat)), codes=ro(back(codes).astype(np.uint8)), scale=ro(scale[:, 0]),
                     zero_point=ro(z[:, 0].copy()), inv_scale=ro(s[:, 0].copy()), n_iters=len(zs) - 1,
                     errors=tuple(float(e) for e in errors), best_iter=best_iter, bits=int(bits), group_size=g,
                     axis=int(axis))


def hqq_quantize(w: ArrayLike, *, bits: int = 4, group_size: int | None = 64, axis: int = 1, lp_norm: float = 0.7,
                 beta: float = 10.0, kappa: float = 1.01, iters: int = 20, early_stop: bool = True,
                 round_zero: bool | None = None, optimize: bool = True, return_best: bool = False) -> HQQResult:
    """HQQ-quantize a 2-D weight (module docstring: equations, grouping, conventions).

    Parameters
    ----------
    w : float ndarray of shape (rows, cols)
    bits : int, 1…8
    group_size : int dividing w.size, or None (one group per row for axis=1, per column for axis=0)
    axis : 1 (default, hqq_base_quant_config) or 0 (``Quantizer.quantize``'s own default)
    lp_norm, beta, kappa, iters : the optimizer's p, β₀, κ and step limit (HQQ's defaults 0.7, 10, 1.01, 20)
    early_stop : stop at the first step whose error does not improve (the legacy optimizer always does)
    round_zero : round the initial zero; None → bits == 4 (hqq_base_quant_config)
    optimize : False gives HQQ's min-max initialisation (an asymmetric RTN with a float zero)
    return_best : False → the reference's last iterate; True → the measured best

    Returns
    -------
    HQQResult
    """
    return _hqq(w, bits, group_size, axis, lp_norm, beta, kappa, iters, early_stop, round_zero, optimize,
                return_best, _step)


def hqq_quantize_ref(w: ArrayLike, *, bits: int = 4, group_size: int | None = 64, axis: int = 1, lp_norm: float = 0.7,
                     beta: float = 10.0, kappa: float = 1.01, iters: int = 20, early_stop: bool = True,
                     round_zero: bool | None = None, optimize: bool = True, return_best: bool = False) -> HQQResult:
    """Loop twin of :func:`hqq_quantize`: the optimizer step one group at a time (must be equal exactly)."""
    return _hqq(w, bits, group_size, axis, lp_norm, beta, kappa, iters, early_stop, round_zero, optimize,
                return_best, _step_ref)


def hqq_dequantize(codes: ArrayLike, scale: ArrayLike, zero_point: ArrayLike, *, group_size: int, axis: int =
                   1) -> np.ndarray:
    """``fl(fl(codes − zero_point) · scale)`` per group, in float32 (``Quantizer.dequantize``)."""
    q = np.asarray(codes)
    if q.dtype.kind not in "iu" or q.ndim != 2:
        raise ValueError(f"codes: expected a 2-D integer array, got {q.dtype} of shape {q.shape}")
    if axis not in (0, 1) or q.size % group_size:
        raise ValueError(f"group_size, axis: {group_size}, {axis} do not group codes of shape {q.shape}")
    G, back = _groups(q.astype(np.float32), group_size, axis)
    sc, zp = (np.asarray(v, np.float32).reshape(-1, 1) for v in (scale, zero_point))
    if sc.shape[0] != G.shape[0] or zp.shape[0] != G.shape[0]:
        raise ValueError(f"scale, zero_point: expected {G.shape[0]} groups, got {sc.shape[0]} and {zp.shape[0]}")
    return back((G - zp) * sc).astype(np.float32)
