"""The exact dynamic programme of 1-D k-means on weighted sorted points, and its loop twin.

For sorted distinct points v_0 < … < v_{n−1} with weights w (Wang & Song 2011, eq. 1-3)::

    D[m][i] = min_{j < i} D[m−1][j] + cost(j, i),      D[0][0] = 0,  D[0][i > 0] = ∞
    cost(j, i) = Σ_{j <= t < i} w_t (v_t − mean_{j..i−1})² = Q[i] − Q[j] − (S[i] − S[j])² / (W[i] − W[j])
                                                       (the last term 0 where W[i] − W[j] rounds to 0)

with prefix sums W, S, Q of w, w·c, w·c² (c = v centred on its weighted mean, :class:`_Prefix`).
D[k][n] is the optimal SSE; the smallest argmins ``opt[m][i]``, backtracked from (k, n), are the
cluster boundaries. The argmin is monotone in i and in m (opt[m−1][i] <= opt[m][i] <= opt[m][i+1];
Grønlund et al. 2017, §2), which the vectorised layer :func:`_dp_layer` uses to search short ranges
in a few NumPy batches; :func:`_dp_layer_ref` does the same searches one state at a time and must
give the same values and split points bit for bit (tests/test_kmeans.py). Ties go to the smallest j.

References
----------
Wang & Song, "Ckmeans.1d.dp: Optimal k-means Clustering in One Dimension by Dynamic Programming",
The R Journal 3(2), 2011, eq. (1)-(3). Grønlund et al., "Fast Exact k-Means, k-Medians and Bregman
Divergence Clustering in 1D", arXiv:1701.07204, 2017, §2 (monotone split points, divide and conquer).
"""
from __future__ import annotations

import numpy as np


class _Prefix:
    """Prefix sums W, S, Q of w, w·c, w·c² (c = v centred on its weighted mean): the SSE of the points
    [j, i) is ``Q[i] − Q[j] − (S[i] − S[j])² / (W[i] − W[j])`` in O(1) (Wang & Song 2011, eq. 3)."""

    def __init__(self, v, w=None):
        self.shift = v.mean() if w is None else np.sum(w * v) / np.sum(w)
        c = v - self.shift
        z = np.zeros(1)
        self.W = np.arange(v.size + 1, dtype=np.float64) if w is None else np.concatenate([z, np.cumsum(w)])
        wc = c if w is None else w * c
        self.S = np.concatenate([z, np.cumsum(wc)])
        self.Q = np.concatenate([z, np.cumsum(wc * c)])



def _stride(low, m, n):
    """Stride g (a power of two) of the states solved first: about (n / g)·mean(i − low[i]) ≤ 2n evaluations."""
    width = np.mean(np.arange(m, n + 1) - np.maximum(low[m:], m - 1))  # the mean range length without neighbours
    return 1 << max(0, int(np.ceil(np.log2(max(width / 2, 1.0)))))


def _dp_layer(prev, P, m, n, low):
    """D[m][i] for i in [m, n] and the smallest argmin split points opt[m][i], in a few batches.

    The split point of state i lies in ``[max(m − 1, low[i]), i − 1]`` with ``low = opt[m − 1]`` (opt is
    monotone in m), and between the split points of any solved states left and right of it (monotone
    in i; Grønlund et al. 2017, §2). First the states m, m + g, m + 2g, …, n are solved on their own
    ranges (one batch; :func:`_stride` picks g so that this costs ~2n evaluations: g = 1 when the last
    clusters are short), then the states between them by divide and conquer, one batch per depth.
    The value minimised, ``A[j] − (S[i] − S[j])² / (W[i] − W[j])`` with ``A = D[m − 1] − Q``, is
    D[m−1][j] + cost(j, i) − Q[i]: the same argmin with two gathers fewer. :func:`_dp_layer_ref` is
    its loop twin.
    """
    cur = np.full(n + 1, np.inf)
    opt = np.zeros(n + 1, dtype=np.int32)
    W, S, Q = P.W, P.S, P.Q
    A = prev - Q

    def solve(i, lo, hi):  # states i, split points searched in [lo, hi] (hi >= lo): one batch
        counts = hi - lo + 1
        ends = np.cumsum(counts)
        starts = ends - counts
        seg = np.repeat(np.arange(i.size), counts)
        j = np.arange(ends[-1]) + (lo - starts)[seg]
        d = S[i][seg] - S[j]
        wd = W[i][seg] - W[j]  # > 0, unless huge weights absorbed the others in the prefix sum: then 0
        with np.errstate(divide="ignore", invalid="ignore"):
            val = A[j] - np.where(wd > 0, d * d / wd, 0.0)
        mins = np.minimum.reduceat(val, starts)
        best = np.minimum.reduceat(np.where(val <= mins[seg], j, n), starts)  # the smallest j at the minimum
        cur[i], opt[i] = mins + Q[i], best
        return best

    g = _stride(low, m, n)
    top = np.unique(np.append(np.arange(m, n + 1, g), n))
    hi = top - 1
    best = solve(top, np.minimum(np.maximum(low[top], m - 1), hi), hi)
    ilo, ihi, jlo, jhi = top[:-1] + 1, top[1:] - 1, best[:-1], best[1:]
    keep = ilo <= ihi
    ilo, ihi, jlo, jhi = ilo[keep], ihi[keep], jlo[keep], jhi[keep]
    while ilo.size:
        mid = (ilo + ihi) // 2
        hi = np.minimum(jhi, mid - 1)
        best = solve(mid, np.minimum(np.maximum(jlo, low[mid]), hi), hi)  # min: non-empty even if rounding broke
        left, right = ilo < mid, mid < ihi  # monotonicity
        ilo, ihi, jlo, jhi = (np.concatenate([ilo[left], mid[right] + 1]), np.concatenate([mid[left] - 1, ihi[right]]),
                              np.concatenate([jlo[left], best[right]]), np.concatenate([best[left], jhi[right]]))
    return cur, opt


def _dp_layer_ref(prev, P, m, n, low):
    """:func:`_dp_layer` as plain loops and a recursion, one state at a time (its exact twin)."""
    cur = np.full(n + 1, np.inf)
    opt = np.zeros(n + 1, dtype=np.int32)
    W, S, Q = P.W, P.S, P.Q

    def solve(i, lo, hi):
        best, vbest = lo, np.inf
        for j in range(lo, hi + 1):
            d = S[i] - S[j]
            wd = W[i] - W[j]
            v = (prev[j] - Q[j]) - (d * d / wd if wd > 0 else 0.0)
            if v < vbest:
                best, vbest = j, v
        cur[i], opt[i] = vbest + Q[i], best
        return best

    def recurse(ilo, ihi, jlo, jhi):
        if ilo > ihi:
            return
        i = (ilo + ihi) // 2
        hi = min(jhi, i - 1)
        best = solve(i, min(max(jlo, int(low[i])), hi), hi)
        recurse(ilo, i - 1, jlo, best)
        recurse(i + 1, ihi, best, jhi)

    g = _stride(low, m, n)
    top = sorted(set(range(m, n + 1, g)) | {n})
    for i in top:
        solve(i, min(max(int(low[i]), m - 1), i - 1), i - 1)
    for a, b in zip(top[:-1], top[1:]):
        recurse(a + 1, b - 1, int(opt[a]), int(opt[b]))
    return cur, opt


def _dp(P, n, k, layer=_dp_layer):
    """D[k][n] and the k + 1 boundaries of the optimal segmentation: layers m = 1 … k, then backtracking."""
    prev = np.full(n + 1, np.inf)  # D[0][i]: 0 clusters cover nothing
    prev[0] = 0.0
    opts = [np.zeros(n + 1, dtype=np.int32)]
    for m in range(1, k + 1):
        prev, opt = layer(prev, P, m, n, opts[-1])
        opts.append(opt)
    bounds, i = [n], n
    for opt in reversed(opts[1:]):  # backtrack the split points
        i = int(opt[i])
        bounds.append(i)
    return max(float(prev[n]), 0.0), np.array(bounds[::-1])
