"""The exact dynamic programme of 1-D k-means on weighted sorted points, and its loop twin.

For sorted distinct points v_0 < … < v_{n−1} with weights w (Wang & Song 2011, eq. 1-3)::

    D[m][i] = min_{j < i} D[m−1][j] + cost(j, i),      D[0][0] = 0,  D[0][i > 0] = ∞
    cost(j, i) = Σ_{j <= t < i} w_t (v_t − mean_{j..i−1})² = Q[i] − Q[j] − (S[i] − S[j])² / (W[i] − W[j])
                                                       (the last term 0 where W[i] − W[j] rounds to 0)

with prefix sums W, S, Q of w, w·c, w·c² (c = v centred on its weighted mean, :class:`_Prefix`).
D[k][n] is the optimal SSE; the smallest argmins ``opt[m][i]``, backtracked from (k, n), are the
cluster boundaries. The argmin is monotone in i and in m (opt[m−1][i] <= opt[m][i] <= opt[m][i+1];
Grønlund et al. 2017, §2), which the vectorised layer :func:`_dp_layer` uses to search short ranges
in a few NumPy batches (one per level of a divide and conquer); :func:`_dp_layer_ref` does the same
searches one state at a time and must give the same values and split points bit for bit
(tests/test_kmeans.py). Ties go to the smallest j.

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
    """Stride g (a power of two) of the states solved first: about (n / g)·mean(i − low[i]) ≤ 4n evaluations.

    Each later level costs about n evaluations and one batch more; a batch's fixed cost (~25 NumPy calls)
    is worth ~2n evaluations at n = 4096, so a first batch of ~4n that saves a level was measured faster."""
    width = (m + n) / 2 - np.mean(np.maximum(low[m:], m - 1))  # the mean range length without neighbours
    return 1 << max(0, int(np.ceil(np.log2(max(width / 4, 1.0)))))


def _solve(i, lo, hi, A, W, S):
    """One batch: for each state i[s], the smallest argmin j in [lo[s], hi[s]] (hi >= lo) of
    ``A[j] − (S[i] − S[j])² / (W[i] − W[j])`` and its minimum. The ranges are laid end to end in one
    flat array: ``j`` counts up inside a range and jumps at its start (a cumulative sum of steps)."""
    counts = hi - lo + 1
    starts = np.cumsum(counts) - counts
    step = np.ones(starts[-1] + counts[-1], dtype=np.intp)
    step[0] = lo[0]
    step[starts[1:]] = lo[1:] - hi[:-1]
    j = np.cumsum(step)  # lo_0 … hi_0, lo_1 … hi_1, …
    d = np.repeat(S[i], counts)
    d -= S[j]  # S[i] − S[j]
    wd = np.repeat(W[i], counts)
    wd -= W[j]  # > 0, unless huge weights absorbed the others in the prefix sum: then 0
    val = np.square(d, out=d)
    val /= wd
    if not wd.min() > 0:
        val[wd <= 0] = 0.0  # the mean term of a segment whose weight rounds to 0
    np.subtract(A[j], val, out=val)
    mins = np.minimum.reduceat(val, starts)
    hit = np.flatnonzero(val <= np.repeat(mins, counts))  # the minima, in increasing j within a range
    return mins, j[hit[np.searchsorted(hit, starts)]]  # the first minimum of each range: the smallest j


def _dp_layer(prev, P, m, n, low):
    """D[m][i] for i in [m, n] and the smallest argmin split points opt[m][i], in a few batches.

    The split point of state i lies in ``[max(m − 1, low[i]), i − 1]`` with ``low = opt[m − 1]`` (opt is
    monotone in m), and between the split points of any solved states left and right of it (monotone
    in i; Grønlund et al. 2017, §2). First the states m, m + g, m + 2g, … (and n) are solved on their
    own ranges (one batch; :func:`_stride` picks the power of two g so that this costs ~4n
    evaluations: g = 1 when the last clusters are short); then, for h = g/2, g/4, …, 1, the states
    m + h, m + 3h, m + 5h, … in one batch each, between their solved neighbours i − h and
    min(i + h, n) — divide and conquer, level by level. The value minimised,
    ``A[j] − (S[i] − S[j])² / (W[i] − W[j])`` with ``A = D[m − 1] − Q``, is D[m−1][j] + cost(j, i) − Q[i]:
    the same argmin with two gathers fewer. :func:`_dp_layer_ref` is its loop twin.
    """
    cur = np.full(n + 1, np.inf)
    opt = np.zeros(n + 1, dtype=np.int32)
    W, S, Q = P.W, P.S, P.Q
    A = prev - Q
    g = _stride(low, m, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        i = np.append(np.arange(m, n, g), n)  # the first states, on their own ranges
        hi = i - 1
        lo = np.minimum(np.maximum(low[i], m - 1), hi)  # min: non-empty even if rounding broke monotonicity
        h = g
        while True:
            mins, best = _solve(i, lo, hi, A, W, S)
            cur[i], opt[i] = mins + Q[i], best
            h //= 2
            if not h:
                return cur, opt
            i = np.arange(m + h, n, 2 * h)  # between the solved states i − h and min(i + h, n)
            hi = np.minimum(opt[np.minimum(i + h, n)], i - 1)
            lo = np.minimum(np.maximum(opt[i - h], low[i]), hi)


def _dp_layer_ref(prev, P, m, n, low):
    """:func:`_dp_layer` as plain loops, one state at a time (its exact twin)."""
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

    g = _stride(low, m, n)
    for i in list(range(m, n, g)) + [n]:
        solve(i, min(max(int(low[i]), m - 1), i - 1), i - 1)
    h = g // 2
    while h:
        for i in range(m + h, n, 2 * h):
            hi = min(int(opt[min(i + h, n)]), i - 1)
            solve(i, min(max(int(opt[i - h]), int(low[i])), hi), hi)
        h //= 2
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
