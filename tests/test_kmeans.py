"""1-D k-means: exactness against brute force, ordering against other methods, bad input."""
import itertools

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from refquant.formats.codebook import uniform_codebook
from refquant.formats.kmeans import kmeans_codebook, kmeans_sse


def brute_force_sse(x, k, w=None):
    """Minimum SSE over every split of the sorted distinct values into k contiguous clusters."""
    w = np.ones_like(x) if w is None else w
    v = np.unique(x)
    wt = np.array([w[x == u].sum() for u in v])
    k = min(k, v.size)
    best = np.inf
    for cuts in itertools.combinations(range(1, v.size), k - 1):
        b = [0, *cuts, v.size]
        s = 0.0
        for lo, hi in zip(b[:-1], b[1:]):
            m = np.sum(wt[lo:hi] * v[lo:hi]) / wt[lo:hi].sum()
            s += np.sum(wt[lo:hi] * (v[lo:hi] - m) ** 2)
        best = min(best, s)
    return best


def test_golden_two_clusters():
    # {0, 1, 10, 11} with k = 2: clusters {0, 1} and {10, 11}, levels 0.5 and 10.5, SSE 4 * 0.25 = 1
    c = kmeans_codebook(np.array([0.0, 1.0, 10.0, 11.0]), 2, algorithm="optimal")
    assert c.tolist() == [0.5, 10.5]
    assert kmeans_sse([0.0, 1.0, 10.0, 11.0], c) == 1.0


@given(hnp.arrays(np.float64, st.integers(1, 9), elements=st.floats(-100, 100) | st.sampled_from([0.0, 1.0])),
       st.integers(1, 5), st.booleans())
@settings(max_examples=60)
@example(np.array([2.0, 3.0, 1.84796579e-155, 0.0, 1.0, 1.44837038e-165]), 5, False)  # means lost to prefix sums
def test_optimal_equals_brute_force(x, k, weighted):
    w = np.arange(1, x.size + 1, dtype=float) if weighted else None
    c = kmeans_codebook(x, k, algorithm="optimal", weights=w)
    assert c.size <= k and np.all(np.diff(c) > 0)
    assert kmeans_sse(x, c, w) == pytest.approx(brute_force_sse(x, k, w), rel=1e-9, abs=1e-9)


@given(hnp.arrays(np.float64, st.integers(20, 200), elements=st.floats(-50, 50)), st.integers(2, 8))
@settings(max_examples=25)
@example(np.concatenate([np.zeros(50), np.arange(10) * 100.0]), 4)
def test_optimal_beats_uniform_grid_sklearn_lloyd_and_auto(x, k):
    opt = kmeans_sse(x, kmeans_codebook(x, k, algorithm="optimal"))
    grid = np.linspace(x.min(), x.max(), k)
    assert opt <= kmeans_sse(x, grid) * (1 + 1e-12) + 1e-12
    for method in ["sklearn", "lloyd", "auto"]:
        assert opt <= kmeans_sse(x, kmeans_codebook(x, k, algorithm=method)) * (1 + 1e-9) + 1e-9


def test_auto_is_exact_on_few_distinct_values_and_near_optimal_on_heavy_tails():
    x = np.random.default_rng(0).integers(-20, 20, 5000).astype(float)  # 40 distinct values: the DP runs on them
    assert kmeans_sse(x, kmeans_codebook(x, 6)) == kmeans_sse(x, kmeans_codebook(x, 6, algorithm="optimal"))
    t = np.random.default_rng(1).standard_t(4, 20000)
    opt = kmeans_sse(t, kmeans_codebook(t, 16, algorithm="optimal"))
    auto = kmeans_sse(t, kmeans_codebook(t, 16, n_points=512))
    lloyd = kmeans_sse(t, kmeans_codebook(t, 16, algorithm="lloyd"))
    assert auto <= opt * (1 + 2e-4)  # within 0.02 %
    assert lloyd > opt * 1.05  # the plain Lloyd trap on heavy tails, which "auto" avoids


def test_fewer_distinct_values_than_k_and_duplicates():
    assert kmeans_codebook(np.array([3.0, 1.0, 3.0, 1.0]), 8).tolist() == [1.0, 3.0]
    assert kmeans_codebook(np.full(10, 2.5), 4, algorithm="sklearn").tolist() == [2.5]
    assert kmeans_codebook(np.array([7.0]), 1).tolist() == [7.0]


def test_weighted_histogram_equals_raw_data():
    x = np.array([0.0, 0.0, 0.0, 1.0, 5.0, 5.0, 9.0])
    v, counts = np.unique(x, return_counts=True)
    a = kmeans_codebook(x, 3, algorithm="optimal")
    b = kmeans_codebook(v, 3, algorithm="optimal", weights=counts)
    assert np.allclose(a, b, rtol=0, atol=1e-12)


def test_kmeans_beats_uniform_on_the_same_number_of_levels():
    w = np.random.default_rng(2).standard_t(4, 4000)
    grid = uniform_codebook((w.max() - w.min()) / 15, 0, "uint4") + w.min()
    assert kmeans_sse(w, kmeans_codebook(w, 16)) < kmeans_sse(w, grid)


@pytest.mark.parametrize("call, match", [
    (lambda: kmeans_codebook(np.ones(3), 0), "k must be an int >= 1"),
    (lambda: kmeans_codebook(np.ones(3), 2.0), "k must be an int"),
    (lambda: kmeans_codebook(np.zeros(0), 2), "x is empty"),
    (lambda: kmeans_codebook(np.array([1.0, np.nan]), 2), "x contains NaN"),
    (lambda: kmeans_codebook(np.array([1.0, np.inf]), 2), "x must be finite"),
    (lambda: kmeans_codebook(np.ones(3), 2, algorithm="minibatch"), "algorithm: unknown"),
    (lambda: kmeans_codebook(np.arange(5.0), 2, algorithm="sklearn", init="random"), "init: expected"),
    (lambda: kmeans_codebook(np.ones(3), 2, weights=np.ones(2)), "one value per element"),
    (lambda: kmeans_codebook(np.ones(3), 2, weights=-np.ones(3)), "weights must be finite, >= 0"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_input_not_mutated():
    x = np.random.default_rng(3).standard_normal(300)
    c = x.copy()
    for m in ["auto", "optimal", "sklearn", "lloyd"]:
        kmeans_codebook(x, 5, algorithm=m)
    assert np.array_equal(x, c)


# ---------------------------------------------------------------- bad input, closed (issue 9)
@pytest.mark.parametrize("call, match", [
    (lambda: kmeans_codebook(np.ones(3), 2, n_points=4096.5), "n_points must be an int"),
    (lambda: kmeans_codebook(np.ones(3), 2, max_iter="300"), "max_iter must be an int"),  # was accepted
    (lambda: kmeans_codebook(np.array([1e308, 0.0]), 2), "would overflow the squared error"),
    (lambda: kmeans_sse(np.ones(3), np.zeros(0)), "codebook: expected at least one"),  # was an IndexError
])
def test_more_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("v, w, match", [
    (np.array([2.0, 1.0]), np.ones(2), "strictly increasing"),  # unsorted gave a wrong answer silently
    (np.array([1.0, np.nan]), np.ones(2), "v contains NaN"),  # was an IndexError
    (np.array([1.0, 2.0]), np.ones(3), "w: expected one finite weight"),
])
def test_optimal_kmeans_validates(v, w, match):
    from refquant.formats.kmeans import optimal_kmeans
    with pytest.raises(ValueError, match=match):
        optimal_kmeans(v, w, 1)


# ---------------------------------------------------------------- bounded memory (issue 14)
def _dyadic(n, seed):
    # multiples of 2^-8 in [-64, 64): every float64 sum of them is exact, in any order and any chunking
    return (np.random.default_rng(seed).standard_t(3, n).clip(-63, 63) * 256).round().astype(np.float32) / 256


def test_summary_points_in_passes_equal_one_cumsum_over_all_gaps(monkeypatch):
    from refquant.formats import kmeans as K
    xs = np.sort(np.random.default_rng(4).standard_t(4, 5000)).astype(np.float32)
    gap = np.diff(xs.astype(np.float64))
    u = np.concatenate([[0.0], np.cumsum(np.cbrt(gap * gap))])  # the whole-array form, as before the chunking
    want = np.unique(np.concatenate([[0, xs.size], np.searchsorted(u, np.linspace(0, u[-1], 300), side="left")]))
    monkeypatch.setattr(K, "_STEP", 97)  # 52 passes, boundaries anywhere
    assert np.array_equal(K._summary_points(xs, 300), want)


@pytest.mark.parametrize("weighted", [False, True])
def test_sorted_sums_equal_full_prefix_sums(weighted, monkeypatch):
    from refquant.formats import kmeans as K
    monkeypatch.setattr(K, "_STEP", 640)  # several passes of segment sums and of lookups
    xs = np.sort(_dyadic(3001, 5))
    ws = np.random.default_rng(6).integers(0, 4, xs.size).astype(np.float64) if weighted else None
    P = K._SortedSums(xs, ws)
    w = np.ones(xs.size) if ws is None else ws
    i = np.array([0, 1, 63, 64, 65, 128, 1000, 2999, 3000, 3001] + list(range(0, 3002, 7)))
    W, S = P.at(i)
    # W exactly (integer weights); S, centred on the non-dyadic mean, to rounding of its float64 sums
    assert np.array_equal(W, np.concatenate([[0.0], np.cumsum(w)])[i])
    want = np.concatenate([[0.0], np.cumsum(w * (xs.astype(np.float64) - P.shift))])[i]
    assert np.allclose(S, want, rtol=0, atol=1e-9 * np.abs(want).max())


def test_kmeans_in_small_passes_equals_kmeans_in_large_ones(monkeypatch):
    from refquant.formats import kmeans as K
    x = _dyadic(20000, 7)
    want = {k: kmeans_codebook(x, k) for k in (4, 16, 64)}
    lloyd = kmeans_codebook(x, 16, algorithm="lloyd")
    monkeypatch.setattr(K, "_STEP", 331)
    for k in (4, 16, 64):
        assert np.array_equal(kmeans_codebook(x, k), want[k])
    assert np.array_equal(kmeans_codebook(x, 16, algorithm="lloyd"), lloyd)


@given(hnp.arrays(np.float32, st.integers(1, 40), elements=st.floats(-1e3, 1e3, width=32)),
       hnp.arrays(np.float64, st.integers(1, 10), elements=st.floats(-2e3, 2e3)))
@example(np.float32([0.1, 0.2]), np.array([float(np.float32(0.1)), np.nextafter(float(np.float32(0.1)), 0), 0.1]))
def test_count_le_is_searchsorted_in_float64(xs, t):
    from refquant.formats.kmeans import _count_le
    xs = np.sort(xs)
    assert np.array_equal(_count_le(xs, t), np.searchsorted(xs.astype(np.float64), t, side="right"))


# ---------------------------------------------------------------- the DP's loop twin (issue 14)
@given(hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(-100, 100), unique=True),
       st.integers(1, 7), st.booleans())
@settings(max_examples=60)
@example(np.array([0.0, 1.0, 1e-300, 2.0]), 3, False)
@example(np.arange(30.0) ** 3, 7, True)
def test_dp_layer_equals_its_loop_twin(v, k, weighted):
    from refquant.formats.kmeans_dp import _Prefix, _dp_layer, _dp_layer_ref
    v = np.sort(v)
    w = 1.0 + (np.arange(v.size) % 3) if weighted else np.ones(v.size)
    n, P = v.size, _Prefix(v, w)
    prev, low = np.full(n + 1, np.inf), np.zeros(n + 1, dtype=np.int32)
    prev[0] = 0.0
    for m in range(1, min(k, n) + 1):
        cur, opt = _dp_layer(prev, P, m, n, low)
        cur_ref, opt_ref = _dp_layer_ref(prev, P, m, n, low)
        assert np.array_equal(cur, cur_ref) and np.array_equal(opt, opt_ref)  # tolerance 0, inf included
        prev, low = cur, opt


def test_huge_weights_absorbing_the_others_give_no_warning():
    # W = cumsum(w) = [0, 1, 3e38, 3e38, 3e38]: W[4] − W[2] rounds to 0 (a fuzz find): that segment's mean term is 0
    import warnings
    from refquant.formats.kmeans import optimal_kmeans
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c, sse = optimal_kmeans(np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 3e38, 1.0, 1.0]), 2)
    assert np.all(np.diff(c) > 0) and c.size == 2 and np.isfinite(sse)
