"""1-D k-means codebooks: the exact optimum, scikit-learn, and a fast, practically optimal default.

k-means in one dimension chooses k levels minimising the (weighted) sum of squared errors::

    SSE(c) = Σ_i w_i · min_k (x_i − c_k)²

In 1-D the optimal clusters are contiguous runs of the sorted data, so the problem is a
segmentation and can be solved *exactly* by dynamic programming (Wang & Song 2011)::

    D[m][i] = min_{j < i} D[m−1][j] + cost(j, i)        cost(j, i) = SSE of sorted points j..i−1

The split point ``opt[m][i]`` is monotone in i, which lets each layer be solved by divide and
conquer in O(n log n) (Grønlund et al. 2017), and in m (opt[m−1][i] <= opt[m][i]), which bounds each
search from below. Here a layer is a few batches of vectorised NumPy operations: a stride of states
on their own ranges, then one batch per recursion depth between them (:mod:`refquant.formats.kmeans_dp`,
whose loop twin gives the same values and split points, bit for bit).

Methods of :func:`kmeans_codebook`:

* ``"optimal"`` — the DP on the sorted distinct values (weighted by multiplicity): the global optimum.
* ``"sklearn"`` — ``sklearn.cluster.KMeans(n_init=1)`` with a deterministic ``init``: ``"linear"``
  (k points evenly spaced over [min, max], which Deep Compression found best), ``"density"``
  (evenly spaced quantiles) or ``"k-means++"`` (seeded). Every init stops in a local optimum that
  depends on it: on 1M Student-t(4) values (benchmarks/bench_kmeans.py) k-means++ with seeds 0, 1, 2
  ends 1.5 %, 9.1 %, 2.7 % above the optimum at k = 16 and 4.1 %, 4.3 %, 3.8 % at k = 256.
* ``"lloyd"`` — Lloyd's algorithm on the sorted data with linear initialisation; each step costs
  O(k (log n + _B)) thanks to prefix sums — fast, but on heavy tails it stops in a poor local optimum.
* ``"auto"`` (default) — the DP on at most ``n_points`` weighted summary points of the sorted data
  (chunks spaced like the optimal levels, by the measure p(x)^(1/3) dx), then Lloyd on the full
  sorted data to convergence. When the data has at most ``n_points`` distinct values the DP runs on
  them directly and the result is exactly optimal. On the 1M Student-t(4) values: 0.00000 % (k = 16)
  and 0.0147 % (k = 256) above the optimum.

Memory: ``"auto"`` and ``"lloyd"`` without weights hold one sorted copy of x in its own dtype; every
other pass over the sorted data works on _STEP values at a time in float64 (segment sums, the gap
measure) and Lloyd reads prefix sums kept at every _B-th point (:class:`_SortedSums`), so the peak
extra memory is about 1.25x a float32 input at 4096 x 4096 (14x before). ``"optimal"`` keeps a
k x n table of split points and ``"sklearn"`` the distinct values in float64: not bounded.

References
----------
Wang & Song, "Ckmeans.1d.dp: Optimal k-means Clustering in One Dimension by Dynamic Programming",
The R Journal 3(2), 2011, eq. (1)-(3). Grønlund et al., "Fast Exact k-Means, k-Medians and Bregman
Divergence Clustering in 1D", arXiv:1701.07204, 2017, §2 (monotone split points, divide and conquer).
Lloyd, "Least squares quantization in PCM", IEEE Trans. Inf. Theory 28(2), 1982.
Panter & Dite, "Quantization distortion in pulse-count modulation with nonuniform spacing of levels",
Proc. IRE 39(1), 1951 (optimal level density ∝ p^(1/3)).
Han, Mao & Dally, "Deep Compression", ICLR 2016, §3.1-3.2 (linear / density / random initialisation).
"""
from __future__ import annotations

import numpy as np

from ..core._checks import choice, float_array, int_value
from ..core.uniform import _CHUNK
from ..core._types import ArrayLike
from .kmeans_dp import _Prefix, _dp

ALGORITHMS = ("auto", "optimal", "sklearn", "lloyd")


_XMAX = 1e150  # squared errors of values up to this size stay finite in float64
_B = 64  # _SortedSums keeps exact prefix sums every _B points of the sorted data
_STEP = _CHUNK // 4  # values per pass over the sorted data: a pass's float64 temporaries stay ~0.5 MiB


def _prepare(x, weights, name="x"):
    xa = float_array(x, name).reshape(-1)  # kept in its float dtype until sorted (float32 sorts faster)
    if xa.size == 0:
        raise ValueError(f"{name} is empty; k-means needs at least one value")
    if not np.all(np.isfinite(xa)):
        raise ValueError(f"{name} must be finite")
    if max(float(xa.max()), -float(xa.min())) > _XMAX:  # not np.abs(xa): no full-size temporary
        raise ValueError(f"{name}: |values| above {_XMAX:g} would overflow the squared error in float64")
    if weights is None:
        return xa, None
    w = float_array(weights, "weights").astype(np.float64).reshape(-1)
    if w.shape != xa.shape:
        raise ValueError(f"weights must have one value per element of x ({xa.size}), got {w.size}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be finite, >= 0, and not all zero")
    return xa, w


def _sorted(x, w):
    """x sorted (and its weights permuted alongside; None means unit weights). Unweighted x keeps its
    float dtype: one sorted copy is the only full-size array of the default path (bounded memory)."""
    if w is None:
        return np.sort(x), None
    order = np.argsort(x, kind="stable")
    return x[order].astype(np.float64), w[order]


def _distinct(xs, ws):
    """Sorted distinct values of sorted ``xs`` with their total weights (zero-weight values dropped)."""
    starts = np.flatnonzero(np.concatenate([[True], xs[1:] != xs[:-1]]))
    if ws is None:  # multiplicities, without a full-size array of ones
        return xs[starts].astype(np.float64), np.diff(np.append(starts, xs.size)).astype(np.float64)
    wt = np.add.reduceat(ws, starts) if xs.size else ws
    keep = wt > 0
    return xs[starts][keep].astype(np.float64), wt[keep]


def _segment_sums(v, w, b):
    """Σ w·v and Σ w over the segments [b_s, b_{s+1}) of v (b strictly increasing, b_0 = 0, b_-1 = v.size),
    in float64, a chunk of _CHUNK values at a time: no full-size float64 copy of v."""
    sv = np.zeros(b.size - 1)
    for lo in range(0, v.size, _STEP):
        hi = min(lo + _STEP, v.size)
        s0, s1 = np.searchsorted(b, lo, side="right") - 1, np.searchsorted(b, hi)  # segments s0 .. s1-1 meet it
        starts = np.maximum(b[s0:s1], lo) - lo
        c = v[lo:hi].astype(np.float64)
        sv[s0:s1] += np.add.reduceat(c if w is None else c * w[lo:hi], starts)
    sw = np.diff(b).astype(np.float64) if w is None else np.add.reduceat(w, b[:-1])
    return sv, sw


def _segment_means(v, w, b):
    """Exact-as-possible means of the segments [b_i, b_{i+1}) of sorted v: summed per segment, not
    from prefix differences (which lose values far below the data's scale). Strictly increasing."""
    sv, sw = _segment_sums(v, w, b)
    return np.unique(sv / sw)  # float rounding of two adjacent means can only make them equal


class _SortedSums:
    """Prefix sums W(i) = Σ_{t<i} w_t and S(i) = Σ_{t<i} w_t·(x_t − shift) of sorted data in bounded memory:
    exact at every _B-th point (float64, n/_B values), the at most _B − 1 values after it summed on demand.
    ``shift`` is the weighted mean, so S stays small. Lloyd needs them at k + 1 points per step."""

    def __init__(self, xs, ws):
        self.xs, self.ws = xs, ws
        sv, sw = _segment_sums(xs, ws, np.append(np.arange(0, xs.size, _B), xs.size))
        self.shift = sv.sum() / sw.sum()
        z = np.zeros(1)
        self.Wc, self.Sc = np.concatenate([z, np.cumsum(sw)]), np.concatenate([z, np.cumsum(sv - self.shift * sw)])

    def at(self, i):
        """(W(i), S(i)) for an int array i of indices in [0, n]."""
        W, S = np.empty(i.size), np.empty(i.size)
        for lo in range(0, i.size, _STEP // _B):  # (≤ _STEP // _B, _B) temporaries
            ii = i[lo:lo + _STEP // _B]
            q = ii // _B
            idx = q[:, None] * _B + np.arange(_B)  # the points of ii's block
            inside = idx < ii[:, None]
            idx = np.minimum(idx, self.xs.size - 1)
            if self.ws is None:  # unit weights: W(i) = i exactly
                w = inside
                W[lo:lo + ii.size] = ii
            else:
                w = np.where(inside, self.ws[idx], 0.0)
                W[lo:lo + ii.size] = self.Wc[q] + w.sum(1)
            S[lo:lo + ii.size] = self.Sc[q] + ((self.xs[idx].astype(np.float64) - self.shift) * w).sum(1)
        return W, S

    def mean(self, b):
        """Weighted means of the segments [b_s, b_{s+1}) (non-empty): (their weights, their means)."""
        W, S = self.at(b)
        return np.diff(W), np.diff(S) / np.diff(W) + self.shift


def _count_le(xs, t):
    """``np.searchsorted(xs, t, side="right")`` for sorted ``xs`` of any float dtype and float64 ``t``,
    exactly, without converting xs: t is rounded down to xs's dtype first (x <= t iff x <= round_down(t))."""
    if xs.dtype != np.float64:
        with np.errstate(over="ignore"):
            tt = t.astype(xs.dtype)
        tt = np.where(tt.astype(np.float64) > t, np.nextafter(tt, xs.dtype.type(-np.inf)), tt)
        t = tt.astype(xs.dtype)
    return np.searchsorted(xs, t, side="right")


def optimal_kmeans(v: ArrayLike, w: ArrayLike | None, k: int) -> tuple[np.ndarray, float]:
    """Exact weighted 1-D k-means of sorted distinct ``v`` with weights ``w``: (codebook, sse)."""
    v = float_array(v, "v").astype(np.float64)
    w = float_array(w, "w").astype(np.float64)
    k = int_value(k, "k", 1)
    if (v.ndim != 1 or v.size == 0 or not np.all(np.isfinite(v)) or float(np.abs(v).max()) > _XMAX
            or np.any(v[1:] <= v[:-1])):
        raise ValueError(f"v: expected a non-empty 1-D array of finite, strictly increasing values, got shape "
                         f"{v.shape}")
    if w.shape != v.shape or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"w: expected one finite weight > 0 per value of v ({v.shape}), got shape {w.shape}")
    n = v.size
    k = min(k, n)
    sse, b = _dp(_Prefix(v, w), n, k)
    return _segment_means(v, w, b), sse


def _lloyd_sorted(xs, ws, P, c, max_iter=300):
    """Lloyd's algorithm on sorted data via prefix sums: each step is O(k (log n + _B))."""
    for _ in range(max_iter):
        b = np.unique(np.concatenate([[0], _count_le(xs, (c[:-1] + c[1:]) / 2), [xs.size]]))
        new = P.mean(b)[1]  # empty clusters were dropped by unique: their level disappears
        if new.size == c.size and np.array_equal(new, c):
            break
        c = new
    return _segment_means(xs, ws, b)


def _summary_points(xs, n_points):
    """Chunk boundaries of the sorted data, spaced like the optimal levels.

    High-resolution quantization theory (Panter & Dite 1951; Gray & Neuhoff 1998, §V) says the
    optimal levels have density proportional to p(x)^(1/3). With the density between neighbouring
    sorted points estimated as p ≈ 1 / (n·gap), the measure p^(1/3)·dx of a gap is ∝ gap^(2/3);
    boundaries are placed at equal steps of its running sum. Dense regions get narrow chunks, the
    tails get chunks of a few points, and the chunks are narrow wherever the levels will be close.
    """
    n = xs.size
    span = float(xs[-1]) - float(xs[0])  # > 0: x has more distinct values than levels

    def measure():  # (lo, u): u[t] = the measure gap^(2/3) up to point lo + t, a chunk of _STEP gaps at a time;
        carry = 0.0  # the running sum carried from chunk to chunk: the same additions as one cumsum over all gaps
        for lo in range(0, n - 1, _STEP):
            u = np.empty(min(_STEP, n - 1 - lo) + 1)
            u[0] = carry
            gap = np.subtract(xs[lo + 1:lo + u.size], xs[lo:lo + u.size - 1], dtype=np.float64)
            gap = (gap / span).astype(np.float32)  # in [0, 1]: float32 neither overflows nor loses a gap that counts
            with np.errstate(divide="ignore"):  # (gap / span)^(2/3) = exp(2/3 · log): 4x faster than cbrt(gap²)
                np.log(gap, out=gap)
            gap *= np.float32(2 / 3)
            np.exp(gap, out=u[1:])  # a gap of 0 has log −inf and measure 0
            np.cumsum(u, out=u)
            yield lo, u
            carry = u[-1]

    total = 0.0
    for _, u in measure():
        total = u[-1]
    q = np.linspace(0, total, max(2, n_points))  # q[-1] == total exactly
    found = [[0, n]]
    for lo, u in measure():  # q in (u[0], u[-1]] lands in this chunk: the first index with u >= q
        t = q[(q > u[0]) & (q <= u[-1])]
        found.append(lo + np.searchsorted(u, t, side="left"))
    return np.unique(np.concatenate(found))


def kmeans_codebook(x: ArrayLike, k: int, *, algorithm: str = "auto", weights: ArrayLike | None = None,
                    init: str = "linear", n_points: int = 4096, max_iter: int = 300, seed: int = 0) -> np.ndarray:
    """A sorted codebook of at most ``k`` levels minimising the (weighted) squared error.

    Parameters
    ----------
    x : ndarray of float, any shape (flattened), finite
    k : int >= 1 — number of levels (fewer are returned when x has fewer distinct values)
    algorithm : {"auto", "optimal", "sklearn", "lloyd"} — see the module docstring
    weights : ndarray of the same size as x, optional — per-element weights (e.g. histogram counts)
    init : {"linear", "density", "k-means++"} — initialisation for ``algorithm="sklearn"``
    n_points : int — summary points for the DP of ``algorithm="auto"``
    max_iter : int — Lloyd iterations (``"auto"``, ``"lloyd"``, ``"sklearn"``)
    seed : int — for ``init="k-means++"``

    Returns
    -------
    codebook : ndarray of float64, shape (≤ k,), strictly increasing
    """
    k = int_value(k, "k")
    if not 1 <= k <= 65536:
        raise ValueError(f"k must be an int >= 1 (and <= 65536: 16-bit indices), got {k}")
    choice(algorithm, "algorithm", ALGORITHMS)
    if not isinstance(init, str) or init not in ("linear", "density", "k-means++"):
        raise ValueError(f"init: expected 'linear', 'density' or 'k-means++', got {init!r}")
    n_points = int_value(n_points, "n_points", 2, 1 << 24)
    max_iter = int_value(max_iter, "max_iter", 1, 1 << 24)
    seed = int_value(seed, "seed", 0)
    xa, w = _prepare(x, weights)
    xs, ws = _sorted(xa, w)
    n_distinct = 1 + int(np.count_nonzero(xs[1:] != xs[:-1]))
    if ws is not None or algorithm in ("optimal", "sklearn") or n_distinct <= max(k, n_points):
        v, wt = _distinct(xs, ws)
        if v.size <= k:
            return v  # every distinct value is its own level: SSE 0 (float64)
        if algorithm == "optimal" or (algorithm == "auto" and v.size <= n_points):
            return optimal_kmeans(v, wt, k)[0]
        if algorithm == "sklearn":
            return _sklearn(v, wt, k, init, max_iter, seed)
        if ws is not None:  # zero weights would make empty clusters look non-empty: use distinct values
            xs, ws = v, wt
    P = _SortedSums(xs, ws)
    if algorithm == "lloyd":
        return _lloyd_sorted(xs, ws, P, np.linspace(float(xs[0]), float(xs[-1]), k), max_iter)
    b = _summary_points(xs, n_points)  # chunk boundaries over the sorted data
    cw, pts = P.mean(b)
    keep = cw > 0
    pts, pw = pts[keep], cw[keep]
    c0, _ = optimal_kmeans(pts, pw, k)
    return _lloyd_sorted(xs, ws, P, c0, max_iter)


def _sklearn(v, wt, k, init, max_iter, seed):
    from sklearn.cluster import KMeans

    if init == "linear":
        start = np.linspace(v[0], v[-1], k).reshape(-1, 1)
    elif init == "density":  # evenly spaced points of the (weighted) CDF
        cdf = np.cumsum(wt) / wt.sum()
        start = np.interp(np.linspace(0, 1, k + 2)[1:-1], cdf, v).reshape(-1, 1)
    elif init == "k-means++":
        start = "k-means++"
    else:
        raise ValueError(f"init: expected 'linear', 'density' or 'k-means++', got {init!r}")
    km = KMeans(n_clusters=k, init=start, n_init=1, max_iter=max_iter, random_state=seed)
    km.fit(v.reshape(-1, 1), sample_weight=wt)
    return np.unique(km.cluster_centers_.ravel())


def kmeans_sse(x: ArrayLike, codebook: ArrayLike, weights: ArrayLike | None = None) -> float:
    """Weighted SSE of nearest-level assignment, computed in float64 (sorted data, prefix sums)."""
    xa, w = _prepare(x, weights)
    xa = xa.astype(np.float64)
    c = np.sort(float_array(codebook, "codebook").astype(np.float64).reshape(-1))  # any order: sorted here
    if c.size == 0 or not np.all(np.isfinite(c)) or float(np.abs(c).max()) > _XMAX:
        raise ValueError(f"codebook: expected at least one finite level of magnitude <= {_XMAX:g}")
    idx = np.searchsorted((c[:-1] + c[1:]) / 2, xa)
    d = xa - c[idx]
    return float(np.sum(d * d * (1.0 if w is None else w)))
