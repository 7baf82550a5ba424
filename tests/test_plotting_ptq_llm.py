"""The plots of notebook 08 (refquant.plotting.ptq_llm): each draws on the given ax and returns it,
draws what it says (counted artists, hand-computed data), and refuses bad input naming the argument."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import assume, given, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from refquant import plotting  # noqa: E402
from refquant.plotting import ptq_llm  # noqa: E402


@pytest.fixture
def ax():
    fig, a = plt.subplots()
    yield a
    plt.close(fig)


def _marker_lines(ax):
    return [ln for ln in ax.lines if ln.get_linestyle() in ("None", "", " ")]


def test_every_public_name_is_re_exported():
    for name in ptq_llm.__all__:
        assert getattr(plotting, name) is getattr(ptq_llm, name)
        assert name in plotting.__all__


def test_error_plane_one_marker_and_one_label_per_method(ax):
    pts = {"RTN": (0.01, 0.006), "GPTQ": (0.02, 0.003), "GPTQ act-order": (0.022, 0.002)}
    assert plotting.plot_error_plane(ax, pts) is ax
    assert len(ax.lines) == 3 and len(ax.texts) == 3
    assert [t.get_text() for t in ax.texts] == list(pts)
    assert [tuple(ln.get_xydata()[0]) for ln in ax.lines] == list(pts.values())
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_error_plane_colours_by_label(ax):
    plotting.plot_error_plane(ax, {"RTN W4": (0.01, 0.006), "RTN W3": (0.05, 0.03), "GPTQ W4": (0.02, 0.003)},
                              colors={"RTN W4": "tab:gray", "RTN W3": "tab:gray"})
    c = [matplotlib.colors.to_hex(ln.get_color()) for ln in ax.lines]
    assert c[0] == c[1] == matplotlib.colors.to_hex("tab:gray") != c[2]


@pytest.mark.parametrize("points, match", [
    ({}, "points"),
    ([(1, 2)], "points"),
    ({"a": (0.1,)}, r"points\['a'\]"),
    ({"a": (0.1, -0.2)}, r"points\['a'\]"),
    ({"a": (0.0, 0.2)}, r"points\['a'\].*log"),
    ({"a": (np.nan, 0.2)}, r"points\['a'\]"),
])
def test_error_plane_rejects(ax, points, match):
    with pytest.raises(ValueError, match=match):
        plotting.plot_error_plane(ax, points)


def test_error_plane_rejects_colours_that_are_not_a_mapping(ax):
    with pytest.raises(ValueError, match="colors"):
        plotting.plot_error_plane(ax, {"a": (0.1, 0.2)}, colors=["red"])


def test_error_concentration_hand_computed_shares(ax):
    # H_jj = [1, 100, 10, 1] -> order by H descending: channels 1, 2, 0, 3 (stable for the tie 0 / 3)
    # e_j = [1, 1, 1, 1]: weight error shares 1/4, 2/4, 3/4, 1
    # H_jj e_j = [1, 100, 10, 1], total 112: output shares 100/112, 110/112, 111/112, 1
    assert plotting.plot_error_concentration(ax, [1, 100, 10, 1], [1, 1, 1, 1]) is ax
    assert len(ax.lines) == 3
    weight, output, uniform = (ln.get_ydata() for ln in ax.lines)
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(weight, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(output, [100 / 112, 110 / 112, 111 / 112, 1.0])
    np.testing.assert_allclose(uniform, [0.25, 0.5, 0.75, 1.0])


@pytest.mark.parametrize("h, e, match", [
    ([1, 2], [1, 2, 3], "weight_err"),
    ([1, -2], [1, 2], "h_diag"),
    ([[1, 2]], [1, 2], "h_diag"),
    ([1, 2], [0, 0], "weight_err"),
    ([0, 2], [1, 0], "weight_err"),
    ([1, np.inf], [1, 1], "h_diag"),
    (["a", "b"], [1, 1], "h_diag"),
])
def test_error_concentration_rejects(ax, h, e, match):
    with pytest.raises(ValueError, match=match):
        plotting.plot_error_concentration(ax, h, e)


def test_column_losses_cumulative_and_per_column(ax):
    losses = {"RTN": [1.0, 2.0, 3.0, 4.0], "GPTQ": [1.0, 0.5, 0.5, 0.0]}
    assert plotting.plot_column_losses(ax, losses, group_size=2) is ax
    assert len(ax.lines) == 3  # two methods, one group boundary at column 2
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [1, 3, 6, 10])  # running sums
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [1, 1.5, 2, 2])
    assert ax.lines[2].get_xdata()[0] == 2
    assert "total 10" in ax.get_legend().get_texts()[0].get_text()
    fig, ax2 = plt.subplots()
    plotting.plot_column_losses(ax2, {"RTN": [1.0, 2.0]}, cumulative=False)
    np.testing.assert_allclose(ax2.lines[0].get_ydata(), [1, 2])
    assert ax2.get_yscale() == "log"
    plt.close(fig)


@pytest.mark.parametrize("losses, kw, match", [
    ({}, {}, "losses"),
    ({"a": [1, 2], "b": [1, 2, 3]}, {}, r"losses\['b'\]"),
    ({"a": [1, -2]}, {}, r"losses\['a'\]"),
    ({"a": [1, 2]}, {"group_size": -1}, "group_size"),
    ({"a": [1, 2]}, {"group_size": 1.5}, "group_size"),
])
def test_column_losses_rejects(ax, losses, kw, match):
    with pytest.raises(ValueError, match=match):
        plotting.plot_column_losses(ax, losses, **kw)


def test_channel_magnitude_highlight_and_threshold(ax):
    v = np.array([0.5, 7.0, 1.0, 6.0])
    assert plotting.plot_channel_magnitude(ax, v, v >= 6.0, threshold=6.0) is ax
    assert len(ax.lines) == 3  # all channels, highlighted markers, threshold
    marks = _marker_lines(ax)
    assert len(marks) == 1
    np.testing.assert_array_equal(marks[0].get_xdata(), [1, 3])
    assert list(ax.lines[2].get_ydata()) == [6.0, 6.0]
    fig, ax2 = plt.subplots()
    plotting.plot_channel_magnitude(ax2, v, np.zeros(4, bool))  # nothing highlighted: one line only
    assert len(ax2.lines) == 1
    plt.close(fig)


@pytest.mark.parametrize("values, highlight, kw, match", [
    ([], None, {}, "values"),
    ([1, -1], None, {}, "values"),
    ([1, 2], [1, 0], {}, "highlight"),
    ([1, 2], np.array([True]), {}, "highlight"),
    ([1, 2], None, {"threshold": -1.0}, "threshold"),
    ([1, 2], None, {"threshold": np.nan}, "threshold"),
])
def test_channel_magnitude_rejects(ax, values, highlight, kw, match):
    with pytest.raises(ValueError, match=match):
        plotting.plot_channel_magnitude(ax, values, highlight, **kw)


def test_alpha_search_marks_the_first_minimum(ax):
    alphas = np.arange(5) / 5
    losses = [1.0, 0.6, 0.4, 0.4, 0.9]  # minimum 0.4 reached first at α = 0.4 (index 2)
    assert plotting.plot_alpha_search(ax, alphas, losses, label="qkv", baseline=1.2) is ax
    assert len(ax.lines) == 3  # curve, best marker, baseline
    assert tuple(ax.lines[1].get_xydata()[0]) == (0.4, 0.4)
    assert list(ax.lines[2].get_ydata()) == [1.2, 1.2]
    fig, ax2 = plt.subplots()
    plotting.plot_alpha_search(ax2, alphas, losses, mark_best=False)
    assert len(ax2.lines) == 1
    plt.close(fig)


@pytest.mark.parametrize("alphas, losses, kw, match", [
    ([0, 0.5], [1.0], {}, "losses"),
    ([0, 0.5], [1.0, -1.0], {}, "losses"),
    ([0, np.inf], [1.0, 1.0], {}, "alphas"),
    ([0, 0.5], [1.0, 1.0], {"baseline": -1}, "baseline"),
])
def test_alpha_search_rejects(ax, alphas, losses, kw, match):
    with pytest.raises(ValueError, match=match):
        plotting.plot_alpha_search(ax, alphas, losses, **kw)


def test_act_weight_ranges_two_lines_with_their_spread(ax):
    a, w = np.array([1.0, 2.0, 100.0]), np.array([0.1, 0.2, 0.1])
    assert plotting.plot_act_weight_ranges(ax, a, w) is ax
    assert len(ax.lines) == 2
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), a)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "(max/median 50×)" in labels[0]  # activations: 100 / median 2
    assert "(max/median 2×)" in labels[1]  # weights: 0.2 / median 0.1


@pytest.mark.parametrize("a, w, match", [
    ([1, 2], [1], "w_max"),
    ([1, 0], [1, 1], "log"),
    ([1, -2], [1, 1], "act_max"),
])
def test_act_weight_ranges_rejects(ax, a, w, match):
    with pytest.raises(ValueError, match=match):
        plotting.plot_act_weight_ranges(ax, a, w)


def test_outlier_threshold_labels_every_point(ax):
    t, e, n = [2.0, 6.0, 20.0], [1e-4, 1.4e-4, 1.5e-4], [34, 3, 2]
    assert plotting.plot_outlier_threshold(ax, t, e, n, baseline=9e-4) is ax
    assert len(ax.lines) == 3  # curve, baseline, α = 6 line
    assert [x.get_text() for x in ax.texts] == ["34", "3", "2"]
    assert list(ax.lines[2].get_xdata()) == [6.0, 6.0]


@pytest.mark.parametrize("t, e, n, match", [
    ([0.0, 6.0], [1, 1], [1, 1], "thresholds"),
    ([1.0, 6.0], [1], [1, 1], "errors"),
    ([1.0, 6.0], [1, 1], [1.5, 1], "n_columns"),
    ([1.0, 6.0], [1, 1], [1], "n_columns"),
])
def test_outlier_threshold_rejects(ax, t, e, n, match):
    with pytest.raises(ValueError, match=match):
        plotting.plot_outlier_threshold(ax, t, e, n)


ROWS = [{"method": "float", "bits_per_weight": 32, "perplexity": 11.9},
        {"method": "rtn-w4g128", "bits_per_weight": 4.25, "perplexity": 15.6},
        {"method": "gptq-w4g128", "bits_per_weight": 4.25, "perplexity": 14.6}]


def test_method_comparison_bars_in_order_with_the_reference_line(ax):
    assert plotting.plot_method_comparison(ax, ROWS) is ax
    bars = ax.patches
    assert len(bars) == 2 and [b.get_width() for b in bars] == [15.6, 14.6]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["rtn-w4g128", "gptq-w4g128"]
    assert bars[0].get_y() > bars[1].get_y()  # top to bottom in the order given
    assert list(ax.lines[0].get_xdata()) == [11.9, 11.9]


@pytest.mark.parametrize("rows, kw, match", [
    ([], {}, "rows"),
    ([{"method": "a", "perplexity": 1.0}], {}, r"rows\[0\]"),
    (ROWS, {"metric": "kl_divergence"}, r"rows\[0\]"),
    ([{"method": "a", "bits_per_weight": 4, "perplexity": -1.0}], {}, "perplexity"),
])
def test_method_comparison_rejects(ax, rows, kw, match):
    with pytest.raises(ValueError, match=match):
        plotting.plot_method_comparison(ax, rows, **kw)


def test_inputs_are_not_mutated(ax):
    h, e = np.array([3.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])
    h0, e0 = h.copy(), e.copy()
    plotting.plot_error_concentration(ax, h, e)
    plotting.plot_channel_magnitude(ax, h, h > 1)
    np.testing.assert_array_equal(h, h0)
    np.testing.assert_array_equal(e, e0)


# 0 or normal floats: with subnormal H_jj (e.g. 5e-324, found by hypothesis) the products H_jj·e_j round to a
# multiple of 5e-324 and the ordering below no longer holds in floating point
_values = st.just(0.0) | st.floats(1e-100, 1e6)
_shares = hnp.arrays(np.float64, st.integers(1, 40), elements=_values)


@given(h=_shares, data=st.data())
def test_error_concentration_shares_rise_to_one_and_output_leads_weight(h, data):
    """Both curves are cumulative shares: non-decreasing, ending at 1; and with channels sorted by H_jj the
    output-error curve is never below the weight-error one (a weighted share of the same prefix)."""
    e = data.draw(hnp.arrays(np.float64, h.size, elements=_values))
    assume(e.any() and (h * e).any())
    fig, ax = plt.subplots()
    try:
        plotting.plot_error_concentration(ax, h, e)
        weight, output = ax.lines[0].get_ydata(), ax.lines[1].get_ydata()
        for y in (weight, output):
            assert np.all(np.diff(y) >= -1e-12) and y[-1] == pytest.approx(1.0)
        assert np.all(output >= weight - 1e-9)
    finally:
        plt.close(fig)


@given(hnp.arrays(np.float64, st.integers(1, 30), elements=st.floats(0, 1e6, allow_nan=False)))
def test_column_losses_cumulative_curve_ends_at_the_total(losses):
    fig, ax = plt.subplots()
    try:
        plotting.plot_column_losses(ax, {"m": losses})
        y = ax.lines[0].get_ydata()
        assert y[-1] == pytest.approx(losses.sum(), rel=1e-12, abs=0)
        assert np.all(np.diff(y) >= 0)
    finally:
        plt.close(fig)
