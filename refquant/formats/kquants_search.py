"""The scale searches behind ggml's k-quants and IQ4, in float32 exactly as ``ggml-quants.c`` runs them.

Every function takes a batch of groups ``x`` of shape (B, n) — B independent groups of n values (16 or
32, or the 8/16 scales of a super-block) — and searches each group for its scale (and minimum) the way
the C function of the same name does for one group. NumPy runs across the B groups; the loops over the
~20 grid candidates and over passes stay Python loops, because each candidate is compared against the
best found *so far* (and, in ``make_qkx2_quants``, starts from the best minimum so far).

Byte-exactness rests on four rules, kept everywhere below:

1. float32 throughout, one rounding per C operator, in C's left-to-right order (``w*x*l`` is
   ``(w·x)·l``); integer codes are converted to float32 before they meet a float.
2. Sums run sequentially from 0, as the C ``for`` loops do (:func:`seqsum`), never NumPy's pairwise sum.
3. Rounding is :func:`nearest_int`: the float trick ``x + 1.5·2^23``, round half to even, not ``roundf``.
4. C's integer conversions wrap (a negative code stored in ``uint8_t`` becomes code + 256); we wrap too.

Nothing here contracts ``a*b + c`` into a fused multiply-add, so this matches a C build without FMA
contraction (gcc's default on x86-64 without ``-march``; ``-ffp-contract=off`` anywhere).

References
----------
llama.cpp ``ggml/src/ggml-quants.c`` (ggml-org/llama.cpp @ 01243c587fec): ``nearest_int``,
``make_qx_quants``, ``make_q3_quants``, ``make_qkx2_quants``, ``make_qkx3_quants``, ``make_qp_quants``,
``best_index_int8``. Kawrakow, "k-quants", llama.cpp PR #1684 (2023).
"""
from __future__ import annotations

import numpy as np

from ..core._types import ArrayLike

F32 = np.float32
GROUP_MAX_EPS = F32(1e-15)  # a group whose largest |x| is below this is "all zero"
KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.int8)


def nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's ``nearest_int``: round float32 ``v`` half to even through the bits of ``v + 12582912``.

    12582912 = 1.5·2^23. Adding it moves the value into [2^23, 2^24), where a float32 has no fraction
    bits, so the FPU's round-to-nearest-even does the rounding; the integer is then read back from the
    low 23 mantissa bits minus 2^22. Exact for |v| ≤ 2^22 − 1 (C asserts this; release builds compile
    the assert out and, like this function, return the bits' value beyond it).
    ``nearest_int(2.5) = 2``, ``nearest_int(3.5) = 4``, ``nearest_int(-0.5) = 0`` — unlike ``roundf``.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        t = np.asarray(np.asarray(v, F32) + F32(12582912.0), F32)
    return (t.view(np.int32) & np.int32(0x007FFFFF)) - np.int32(0x00400000)


def clamp(a: np.ndarray, lo: ArrayLike, hi: ArrayLike) -> np.ndarray:
    """C's ``MAX(lo, MIN(hi, a))`` on integer codes."""
    return np.minimum(np.maximum(a, lo), hi)


def seqsum(a: np.ndarray, from_first: bool = False) -> np.ndarray:
    """``float s = 0; for (i...) s += a[i];`` along the last axis: one float32 rounding per step, in order.

    Never NumPy's ``sum`` (pairwise: a different rounding). ``from_first``: ``float s = a[0];
    for (i = 1...)``, which differs from starting at 0 only in the sign of an all-zero sum (0 + (−0) = +0).
    """
    return _colsum(_cols(a), from_first)


def _cols(a) -> np.ndarray:  # (B, n) -> contiguous (n, B): the searches run down the columns
    return np.ascontiguousarray(np.moveaxis(np.asarray(a, F32), -1, 0))


def _colsum(c: np.ndarray, from_first: bool = False) -> np.ndarray:  # seqsum over axis 0 of (n, B)
    s = c[0].copy() if from_first else c[0] + F32(0)
    for row in c[1:]:
        s += row
    return s


def _f(v) -> np.ndarray:
    return np.asarray(v).astype(F32, copy=False)


def first_absmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max |x|, the signed value there) per row: C's ``if (fabsf(v) > amax) { amax = fabsf(v); max = v; }``
    from ``amax = max = 0`` — the first of equal magnitudes wins, NaN never does, an all-zero row gives (0, 0)."""
    ax = np.abs(x)
    i = np.argmax(np.where(np.isnan(ax), F32(-1), ax), axis=-1)[..., None]
    a = np.take_along_axis(ax, i, axis=-1)[..., 0]
    v = np.take_along_axis(x, i, axis=-1)[..., 0]
    found = a > 0
    return np.where(found, a, F32(0)).astype(F32), np.where(found, v, F32(0)).astype(F32)


def make_qx_quants(x: np.ndarray, nmax: int, qw: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric scale by a weighted least-squares refit over 19 candidate grids (``make_qx_quants``, rmse_type 1).

    For each candidate ``is`` in 0, −9 … 9 (0 first) the group is rounded on the grid
    ``iscale = −(nmax + 0.1·is) / max`` (max = the signed value of largest magnitude, so it lands on
    −nmax), ``l = clamp(nearest_int(iscale·x), −nmax, nmax−1)``, and the best scale *for those codes* is
    the weighted least-squares fit of ``x ≈ scale·l``::

        scale = Σ w x l / Σ w l²,     weighted error = Σ w x² − scale · Σ w x l

    so the candidate with the largest ``(Σ w x l)² / Σ w l²`` wins (ties keep the earlier one).
    Weights ``w = x²`` (rmse_type 1), or ``qw`` when given (an importance matrix).

    Returns ``(scale (B,), L (B, n))`` with codes ``L = l + nmax`` in [0, 2·nmax). A group with
    max |x| < 1e-15 gets scale 0 and codes 0.
    """
    amax, mx = first_absmax(x)
    zero = amax < GROUP_MAX_EPS
    mx = np.where(zero, F32(1), mx)
    xt = _cols(x)
    w = xt * xt if qw is None else _cols(qw)

    def fit(iscale):
        l = clamp(nearest_int(iscale * xt), -nmax, nmax - 1)
        lf = _f(l)
        return l, _colsum(w * xt * lf), _colsum(w * lf * lf)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        l, sumlx, suml2 = fit(F32(-nmax) / mx)
        L = l + nmax
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
        best = scale * sumlx
        for k in [k for k in range(-9, 10) if k]:
            l, sumlx, suml2 = fit(-(F32(nmax) + F32(0.1) * F32(k)) / mx)
            better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            L = np.where(better, l + nmax, L)
            scale = np.where(better, sumlx / suml2, scale)
            best = np.where(better, scale * sumlx, best)
    return np.where(zero, F32(0), scale).astype(F32), np.where(zero, 0, L).T


def _coordinate_descent(xt, w, L, sumlx, suml2, lo, hi, qp):
    """The shared refinement of ``make_q3_quants`` / ``make_qp_quants`` (columns layout (n, B)): up to 5
    passes over the group; for each element, the code that would be best with every other code fixed,
    ``l_i = nearest_int(x_i · Σ' w l² / Σ' w x l)`` (Σ' = without element i), is kept if it raises
    ``(Σ w x l)² / Σ w l²``. ``L`` holds the stored codes (wrapped to ``uint8`` for make_qp_quants)."""
    for _ in range(5):  # a pass that changes nothing leaves the state as it was: extra passes are no-ops
        for i in range(len(xt)):
            wi, xi, Li = w[i], xt[i], _f(L[i])
            slx = sumlx - wi * xi * Li
            sl2 = suml2 - wi * Li * Li
            ok = (slx > 0) & (sl2 > 0) if qp else slx > 0
            new = nearest_int(xi * sl2 / slx)
            new = np.minimum(hi, new) if qp else clamp(new, lo, hi)
            ok &= new != L[i]
            nf = _f(new)
            slx2 = slx + wi * xi * nf
            sl22 = sl2 + wi * nf * nf
            gain = slx2 * slx2 * suml2 > sumlx * sumlx * sl22
            acc = ok & gain if qp else ok & (sl22 > 0) & gain
            L[i] = np.where(acc, new & 0xFF if qp else new, L[i])
            sumlx = np.where(acc, slx2, sumlx)
            suml2 = np.where(acc, sl22, suml2)
    return L, sumlx, suml2


def make_q3_quants(x: np.ndarray, nmax: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric scale by coordinate descent on the codes (``make_q3_quants``, do_rmse = true).

    Start from the grid ``l = clamp(nearest_int(−nmax/max · x), −nmax, nmax−1)``, then improve one code
    at a time (up to 5 passes) while the weighted fit ``(Σ w x l)² / Σ w l²`` grows, ``w = x²``.
    Returns ``(scale = Σ w x l / Σ w l², L = l + nmax)``; all-zero groups give (0, 0).
    """
    amax, mx = first_absmax(x)
    zero = amax < GROUP_MAX_EPS
    mx = np.where(zero, F32(1), mx)
    xt = _cols(x)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        L = clamp(nearest_int(F32(-nmax) / mx * xt), -nmax, nmax - 1)
        w = xt * xt
        lf = _f(L)
        L, sumlx, suml2 = _coordinate_descent(xt, w, L, _colsum(w * xt * lf), _colsum(w * lf * lf),
                                              -nmax, nmax - 1, False)
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    return np.where(zero, F32(0), scale).astype(F32), np.where(zero, 0, L + nmax).T


def make_qkx_quants(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int,
                    use_mad: bool, variant: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric scale and minimum, ``x ≈ scale·l + min`` with l in [0, nmax] (``make_qkx2_quants``; ``variant=3``:
    ``make_qkx3_quants``).

    The min–max grid is the first guess: ``min = min(x, 0)``, ``scale = (max − min)/nmax``. Then for
    each of ``nstep + 1`` candidate grids ``iscale = (rmin + rdelta·is + nmax)/(max − min)`` — slightly
    coarser to slightly finer than min–max — the codes ``l = clamp(nearest_int(iscale·(x − min)), 0, nmax)``
    are fixed and (scale, min) are refitted by weighted linear least squares (the 2×2 normal equations)::

        D     = Σw · Σw l² − (Σw l)²
        scale = (Σw · Σw x l − Σw x · Σw l) / D
        min   = (Σw l² · Σw x − Σw l · Σw x l) / D          (if min > 0: min = 0, scale = Σw x l / Σw l²)

    The candidate is kept if its weighted error Σ w·|scale·l + min − x| (``use_mad``) or Σ w·(…)² is
    smaller than the best so far; later candidates are rounded around the *best min found so far*.
    Returns ``(scale (B,), L (B, n) in [0, nmax], the_min (B,) = −min ≥ 0)``. A group whose max equals
    its min (after min ≤ 0) gets (0, 0, −min). ``variant=3`` differs only in how a candidate's codes
    are rounded (``v > 0 ? nearest_int(min(v, nmax)) : 0``, guarding against v = ±Inf / NaN) and treats
    ``max <= min`` as flat.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rows = np.arange(len(x))
        mn = x[rows, np.argmin(x, axis=1)]  # the first of equal minima, as C's strict `<`
        mx = x[rows, np.argmax(x, axis=1)]
        xt, wt = _cols(x), _cols(w)
        sum_w = _colsum(wt, from_first=True)  # C: sum_w = w[0]; sum_x = sum_w·x[0]; then += for i ≥ 1
        sum_x = _colsum(wt * xt, from_first=True)
        mn = np.where(mn > 0, F32(0), mn)
        flat = (mx == mn) if variant == 2 else (mx <= mn)
        first_min = mn

        def err(scale, lf, m):
            diff = scale * lf + m - xt
            return _colsum(wt * (np.abs(diff) if use_mad else diff * diff))

        iscale = F32(nmax) / (mx - mn)
        scale = F32(1) / iscale
        L = clamp(nearest_int(iscale * (xt - mn)), 0, nmax)
        best = err(scale, _f(L), mn)
        for k in range(nstep + 1):
            iscale = (F32(rmin) + F32(rdelta) * F32(k) + F32(nmax)) / (mx - mn)
            v = iscale * (xt - mn)
            if variant == 2:
                laux = clamp(nearest_int(v), 0, nmax)
            else:
                laux = np.where(v > 0, nearest_int(np.where(v < F32(nmax), v, F32(nmax))), 0)
            lf = _f(laux)
            wl = wt * lf
            sum_l, sum_l2, sum_xl = _colsum(wl), _colsum(wl * lf), _colsum(wl * xt)
            D = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            pos = this_min > 0
            this_min = np.where(pos, F32(0), this_min)
            this_scale = np.where(pos, sum_xl / sum_l2, this_scale)
            cur = err(this_scale, lf, this_min)
            better = (D > 0) & (cur < best)
            L = np.where(better, laux, L)
            best = np.where(better, cur, best)
            scale = np.where(better, this_scale, scale)
            mn = np.where(better, this_min, mn)
    scale = np.where(flat, F32(0), scale).astype(F32)
    L = np.where(flat, 0, L).T
    the_min = -np.where(flat, first_min, mn).astype(F32)
    return scale, L, the_min


def make_qp_quants(x: np.ndarray, nmax: int, qw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantize non-negative values (a super-block's scales or minimums) to [0, nmax] (``make_qp_quants``).

    Grid search over ``iscale = (nmax + 0.1·is)/max``, is = −4 … 4, by weighted squared error
    Σ qw·(x − l/iscale)², then the coordinate descent of :func:`make_q3_quants` on the codes; the
    returned scale is the least-squares ``Σ w x l / Σ w l²``. Codes are stored as ``uint8`` (they wrap,
    as in C). Returns ``(scale (B,), L (B, n))``; max(x) < 1e-15 gives (0, 0).
    """
    xt, wt = _cols(x), _cols(qw)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mx = np.zeros(xt.shape[1], F32)
        for row in xt:  # MAX(max, x[i]) = max > x[i] ? max : x[i], in order (NaN-faithful)
            mx = np.where(mx > row, mx, row)
        zero = mx < GROUP_MAX_EPS
        mx = np.where(zero, F32(1), mx)
        iscale = F32(nmax) / mx
        L = nearest_int(iscale * xt) & 0xFF
        diff = xt - (F32(1) / iscale) * _f(L)
        best = _colsum(wt * diff * diff)
        for k in [k for k in range(-4, 5) if k]:
            iscale_k = (F32(0.1) * F32(k) + F32(nmax)) / mx
            l = np.minimum(nmax, nearest_int(iscale_k * xt))
            diff = xt - (F32(1) / iscale_k) * _f(l)
            mse = _colsum(wt * diff * diff)
            better = mse < best
            best = np.where(better, mse, best)
            iscale = np.where(better, iscale_k, iscale)
        l = np.minimum(nmax, nearest_int(iscale * xt))
        lf = _f(l)  # the sums use the int code, the stored code wraps to uint8
        L, sumlx, suml2 = _coordinate_descent(xt, wt, l & 0xFF, _colsum(wt * xt * lf), _colsum(wt * lf * lf),
                                              None, nmax, True)
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    return np.where(zero, F32(0), scale).astype(F32), np.where(zero, 0, L).T


def best_index_int8(values: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted int8 ``values`` to float32 ``v`` (``best_index_int8``).

    Level i is chosen once ``2v ≥ values[i−1] + values[i]`` (exact in float32: doubling and the integer
    sum are exact), so a value exactly halfway picks the upper level; NaN picks 0. C finds i by a
    branchless binary search over those integer thresholds. Because they are integers,
    ``2v ≥ t ⟺ ⌊2v⌋ ≥ t``, so here a table indexed by ⌊2v⌋ (clamped to the thresholds' range) gives
    the same index for every float at once.
    """
    t = values[:-1].astype(np.int32) + values[1:].astype(np.int32)  # t[i−1]: twice the midpoint below level i
    lo, hi = int(t[0]) - 1, int(t[-1])
    table = np.searchsorted(t, np.arange(lo, hi + 1), side="right")  # levels reached by ⌊2v⌋ = lo … hi
    with np.errstate(over="ignore", invalid="ignore"):
        v2 = np.asarray(v, F32) + np.asarray(v, F32)
    k = np.minimum(np.maximum(np.floor(np.where(np.isnan(v2), F32(lo), v2)), F32(lo)), F32(hi))
    return table[k.astype(np.int32) - lo]
