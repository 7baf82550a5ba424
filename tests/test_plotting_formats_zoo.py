"""The plots of notebook 10 (refquant.plotting.formats_zoo): each draws on the given ax and returns it, draws
what it says (counted artists, hand-computed data); qkx2_trace ends where ggml's make_qkx2_quants does."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import example, given, settings, strategies as st  # noqa: E402

from refquant import plotting  # noqa: E402
from refquant.formats.kquants_search import make_qkx_quants  # noqa: E402
from refquant.plotting import formats_zoo  # noqa: E402

F32 = np.float32


@pytest.fixture
def ax():
    fig, a = plt.subplots()
    yield a
    plt.close(fig)


def test_every_public_name_is_re_exported():
    for name in formats_zoo.__all__:
        assert getattr(plotting, name) is getattr(formats_zoo, name)
        assert name in plotting.__all__


# ---------------------------------------------------------------------------------------------- qkx2_trace
def test_qkx2_trace_hand_case_min_max_grid_is_already_exact():
    # x = 0, 1, ..., 15, w = 1: min = 0, max = 15, the min–max grid iscale = 15/15 = 1 gives L = x and error 0.
    # Candidate k = 10: iscale = (−1 + 0.1·10 + 15)/15 = 1 again -> the same codes, scale 1, min 0, error 0,
    # not accepted (0 < 0 is false). No candidate beats 0, so the start is kept.
    x = np.arange(16, dtype=F32)
    tr = formats_zoo.qkx2_trace(x, np.ones(16, F32))
    assert tr["init"] == {"scale": 1.0, "min": 0.0, "err": 0.0}
    assert len(tr["steps"]) == 21 and not any(s["accepted"] for s in tr["steps"])
    s10 = tr["steps"][10]
    assert (s10["scale"], s10["min"], s10["err"]) == (1.0, 0.0, 0.0)
    assert tr["best"]["L"].tolist() == list(range(16))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([(15, -1.0, 0.1, 20), (31, -0.5, 0.1, 15)]))
@example(seed=1, args=(15, -1.0, 0.1, 20))
def test_qkx2_trace_ends_where_make_qkx2_quants_does(seed, args):
    # Q4_K's (nmax 15) and Q5_K's (nmax 31) searches, with Q4_K's weights sqrt(mean x²) + |x|: bit-identical
    rng = np.random.default_rng(seed)
    x = (rng.standard_t(3, 32) * 0.03).astype(F32)
    w = (np.sqrt(np.mean(x.astype(np.float64) ** 2)) + np.abs(x)).astype(F32)
    tr = formats_zoo.qkx2_trace(x, w, *args)
    scale, L, the_min = make_qkx_quants(x[None], w[None], *args, False)
    assert F32(tr["best"]["scale"]) == scale[0] and F32(-tr["best"]["min"]) == the_min[0]
    assert np.array_equal(tr["best"]["L"], L[0])
    accepted = [s["err"] for s in tr["steps"] if s["accepted"]]
    assert accepted == sorted(accepted, reverse=True)  # each accepted candidate improves on the last
    assert tr["best"]["err"] == min([tr["init"]["err"]] + accepted)


@pytest.mark.parametrize("call,match", [
    (lambda: formats_zoo.qkx2_trace(np.full(4, -1.0), np.ones(4)), "x: a flat group"),  # min = max = -1
    (lambda: formats_zoo.qkx2_trace(np.arange(4.0), np.ones(3)), "w: expected the shape of x"),
])
def test_qkx2_trace_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------- plots
def test_format_levels_one_row_per_format(ax):
    x = np.array([-1.0, 0.2, 0.9])
    levels = {"a": [-1.0, 0.0, 1.0, 1.0], "b": [-0.5, 0.5]}
    assert plotting.plot_format_levels(ax, x, levels, families={"a": "mx"}) is ax
    assert [t.get_text() for t in ax.get_yticklabels()] == ["x", "a", "b"]
    assert [t.get_text() for t in ax.texts] == ["3", "2"]  # distinct values per row: 3 (1.0 twice) and 2
    assert len(ax.collections) == 2  # one vlines per format
    assert ax.collections[0].get_colors()[0][:3] == pytest.approx(matplotlib.colors.to_rgb("tab:brown"))


def test_mse_vs_bits_points_and_curves(ax):
    pts = [("q4_0", "ggml", 4.5, 0.013), ("mxfp4", "mx", 4.25, 0.017), ("q8_0", "ggml", 8.5, 5e-5)]
    curves = {"int b, per row": ("uniform", [2, 3, 4], [0.8, 0.4, 0.1])}
    assert plotting.plot_mse_vs_bits(ax, pts, curves=curves) is ax
    markers = [ln for ln in ax.lines if ln.get_linestyle() in ("None", "", " ")]
    assert [tuple(ln.get_xydata()[0]) for ln in markers] == [(4.5, 0.013), (4.25, 0.017), (8.5, 5e-5)]
    assert [t.get_text() for t in ax.texts] == ["q4_0", "mxfp4", "q8_0"]
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["int b, per row", "ggml", "mx"]  # one per family


def test_mse_vs_bits_draws_an_exact_zero_below_the_rest(ax):
    # MSE 0 cannot sit on a log axis: drawn as a triangle at min(non-zero) / 3 = 0.003 / 3 = 0.001
    plotting.plot_mse_vs_bits(ax, [("q4_1", "ggml", 5.0, 0.0), ("q4_0", "ggml", 4.5, 0.003)])
    tri = [ln for ln in ax.lines if ln.get_marker() == "v"]
    assert len(tri) == 1 and tuple(tri[0].get_xydata()[0]) == pytest.approx((5.0, 0.001))
    assert [t.get_text() for t in ax.texts] == ["q4_1 (0)", "q4_0"]


def test_qkx2_search_plot_marks_accepted_candidates(ax):
    x = np.random.default_rng(2).standard_t(3, 32).astype(F32)
    tr = formats_zoo.qkx2_trace(x, np.sqrt(np.mean(x ** 2)) + np.abs(x))
    assert plotting.plot_qkx2_search(ax, tr) is ax
    filled = [ln for ln in ax.lines if ln.get_label() == "candidate (new best)"][0]
    assert len(filled.get_xdata()) == sum(s["accepted"] for s in tr["steps"])


def test_mx_rules_bars(ax):
    fig2, ax2 = plt.subplots()
    rows = [("floor", 0.02, 0.01), ("ceil", 0.03, 0.0)]
    assert plotting.plot_mx_rules(ax, rows, clamp_ax=ax2) is ax
    assert [p.get_height() for p in ax.patches] == [0.02, 0.03]
    assert [p.get_height() for p in ax2.patches] == [1.0, 0.0]  # percent
    plt.close(fig2)
    fig3, ax3 = plt.subplots()
    plotting.plot_mx_rules(ax3, rows)
    assert [t.get_text() for t in ax3.texts] == ["1.00 % clamped", "0.00 % clamped"]
    plt.close(fig3)
