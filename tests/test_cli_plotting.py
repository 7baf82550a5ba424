"""The demo's sample-tensor lessons and the plot functions (the CLI: tests/test_cli.py)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from refquant import plotting  # noqa: E402


def test_sample_tensor_lessons():
    from refquant.demo import run_demo

    import tempfile
    with tempfile.TemporaryDirectory() as d:
        rows = run_demo(d)
    by = {(r["tensor"], r["method"]): r for r in rows}
    assert by[("outlier-channel weights", "int8 per-channel sym")]["sqnr_db"] > \
        by[("outlier-channel weights", "int8 per-tensor affine")]["sqnr_db"] + 15
    assert by[("heavy-tailed weights", "int4 per-tensor MSE")]["sqnr_db"] > \
        by[("heavy-tailed weights", "int4 per-tensor sym")]["sqnr_db"] + 5
    assert by[("heavy-tailed weights", "nf4 block-64")]["sqnr_db"] > by[("heavy-tailed weights", "int4 group-128 sym")]["sqnr_db"]
    assert by[("heavy-tailed weights", "ggml q4_0")]["bits_per_element"] == 4.5


@pytest.mark.parametrize("draw", [
    lambda ax: plotting.plot_levels(ax, np.linspace(-1, 1, 100), 0.25, 0, "int4"),
    lambda ax: plotting.plot_levels(ax, np.linspace(-1, 1, 100), 0.01, 0, "int8", log=True),
    lambda ax: plotting.plot_transfer(ax, 0.5, 0, "int4", lo=-3, hi=3, rounding="floor"),
    lambda ax: plotting.plot_curves(ax, {"a": ([1, 2], [3, 4])}),
    lambda ax: plotting.plot_ranges(ax, np.linspace(-1, 1, 100), {"minmax": (-1, 1)}),
    lambda ax: plotting.plot_channel_ranges(ax, np.ones((4, 3))),
    lambda ax: plotting.plot_codebook(ax, np.linspace(-1, 1, 100), [-0.5, 0.0, 0.7]),
])
def test_plot_functions_draw_on_and_return_the_given_ax(draw):
    fig, ax = plt.subplots()
    assert draw(ax) is ax
    assert ax.has_data()
    plt.close(fig)


def _bars(ax):
    return [p for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle)]


ATTRIBUTION = [  # base perplexity 2.0: +1 %, 0 %, +5 % (2.02 / 2 − 1 = 0.01; 2.1 / 2 − 1 = 0.05)
    {"layer": "h0.attn.c_attn.w", "perplexity": 2.02, "output_sqnr_db": 20.0},
    {"layer": "h0.mlp.c_fc.w", "perplexity": 2.0, "output_sqnr_db": 18.0},
    {"layer": "lm_head.w", "perplexity": 2.1, "output_sqnr_db": 25.0},
]


def test_layer_attribution_is_bars_in_forward_order_from_zero():
    fig, (ax, sx) = plt.subplots(2, 1, sharex=True)
    assert plotting.plot_layer_attribution(ax, ATTRIBUTION, 2.0, sqnr_ax=sx) is ax
    bars = _bars(ax)
    assert len(bars) == 3
    assert [b.get_height() for b in bars] == pytest.approx([1.0, 0.0, 5.0])
    assert [b.get_x() + b.get_width() / 2 for b in bars] == [0, 1, 2]  # the order given
    assert [t.get_text() for t in sx.get_xticklabels()] == ["h0.attn.c_attn", "h0.mlp.c_fc", "lm_head"]
    assert ax.get_ylim()[0] == 0 and sx.get_ylim()[0] == 0
    assert [b.get_height() for b in _bars(sx)] == [20.0, 18.0, 25.0]
    assert all(len(set(line.get_ydata())) == 1 for line in ax.lines + sx.lines)  # no connected line: only y = 0
    plt.close(fig)


def test_layer_attribution_axis_reaches_a_negative_change():
    rows = [dict(ATTRIBUTION[0], perplexity=1.98)] + ATTRIBUTION[1:]  # 1.98 / 2 − 1 = −1 %
    fig, ax = plt.subplots()
    plotting.plot_layer_attribution(ax, rows, 2.0)
    assert ax.get_ylim()[0] < -1.0 < 5.0 < ax.get_ylim()[1]
    with pytest.raises(ValueError, match="base_perplexity"):
        plotting.plot_layer_attribution(ax, rows, 0.0)
    plt.close(fig)


def test_ppl_vs_bits_draws_percent_vs_float_on_a_linear_axis_coloured_by_family():
    fig, ax = plt.subplots()
    curves = {"int g32": ("int4", [3.0, 4.0], [4.0, 2.02]), "k-means": ("kmeans", [2.0], [3.0])}
    points = {"nf4": ("nf4", 4.5, 2.01), "q4_0": ("q4_0", 4.5, 1.99)}
    assert plotting.plot_ppl_vs_bits(ax, curves, points, 2.0) is ax
    assert ax.get_yscale() == "linear"
    lines = {line.get_label(): line for line in ax.lines}
    assert list(lines["int g32"].get_ydata()) == pytest.approx([100.0, 1.0])  # 4 / 2 − 1, 2.02 / 2 − 1
    assert lines["int g32"].get_color() == plotting.FAMILY_COLORS["uniform"]
    assert lines["k-means"].get_color() == plotting.FAMILY_COLORS["kmeans"]
    offsets = {c.get_label(): c.get_offsets()[0] for c in ax.collections}
    assert list(offsets["nf4"]) == pytest.approx([4.5, 0.5]) and list(offsets["q4_0"]) == pytest.approx([4.5, -0.5])
    colors = {c.get_label(): matplotlib.colors.to_hex(c.get_facecolor()[0]) for c in ax.collections}
    assert colors["nf4"] == matplotlib.colors.to_hex(plotting.FAMILY_COLORS["nf4"])
    assert colors["q4_0"] == matplotlib.colors.to_hex(plotting.FAMILY_COLORS["ggml"])
    assert [line.get_ydata()[0] for line in ax.lines if line.get_label().startswith("float32")] == [0.0]
    assert len(fig.legends) + (ax.get_legend() is not None) == 1
    plt.close(fig)


def test_ppl_vs_bits_rejects_an_unknown_family_and_a_bad_base():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match=r"curves\['x'\].*'int99'"):
        plotting.plot_ppl_vs_bits(ax, {"x": ("int99", [4], [2.0])}, {}, 2.0)
    with pytest.raises(ValueError, match="base"):
        plotting.plot_ppl_vs_bits(ax, {}, {}, -1.0)
    plt.close(fig)


def test_family_of_formats():
    assert [plotting.family_of(k) for k in ["int3", "q4_0", "fp4_e2m1", "nf4", "log2", None, "kmeans"]] == \
        ["uniform", "ggml", "minifloat", "nf4", "log", "float", "kmeans"]
    with pytest.raises(ValueError, match="'bogus'"):
        plotting.family_of("bogus")


def test_sqnr_rule_is_drawn_beneath_the_data():
    fig, ax = plt.subplots()
    assert plotting.plot_sqnr_vs_bits(ax, {"uniform": ([2, 10], [6.0, 60.0])}) is ax
    rule, data = ax.lines
    assert list(rule.get_ydata()) == pytest.approx([12.0412, 60.206], abs=1e-3)  # 20·log10(2) = 6.0206 per bit
    assert rule.get_zorder() < data.get_zorder()
    plt.close(fig)


def test_stochastic_transfer_mean_lies_on_the_identity_inside_the_range():
    fig, ax = plt.subplots()
    out = plotting.plot_stochastic_transfer(ax, 0.5, 0, "int3", lo=-1.9, hi=1.4, rng=np.random.default_rng(0),
                                            n=67, n_draws=4000)
    assert out is ax
    lines = {line.get_label(): line for line in ax.lines}
    x = lines["mean of 4000 draws"].get_xdata()
    # inside [−2, 1.5] one draw is a Bernoulli step of 0.5: std <= 0.25, the mean's <= 0.25 / √4000 = 0.004
    assert np.abs(lines["mean of 4000 draws"].get_ydata() - x).max() < 0.03
    assert np.abs(lines["round to nearest"].get_ydata() - x).max() == pytest.approx(0.25)  # half a step
    with pytest.raises(ValueError, match="n_draws"):
        plotting.plot_stochastic_transfer(ax, 0.5, lo=0, hi=1, rng=np.random.default_rng(0), n_draws=0)
    plt.close(fig)


def test_dot_chart_rows_top_to_bottom_with_groups():
    fig, ax = plt.subplots()
    rows = [("4.5 bits", "uniform int4", 1e-5, "int4"), ("4.5 bits", "NF4", 5e-6, "nf4"), ("8.5 bits", "q8_0", 2e-8, "q8_0")]
    assert plotting.plot_dot_chart(ax, rows) is ax
    assert [t.get_text() for t in ax.get_yticklabels()] == ["uniform int4", "NF4", "q8_0"]
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    assert [(d.get_xdata()[0], d.get_ydata()[0]) for d in dots] == [(1e-5, 2), (5e-6, 1), (2e-8, 0)]
    assert [d.get_color() for d in dots] == [plotting.FAMILY_COLORS[f] for f in ("uniform", "nf4", "ggml")]
    assert sorted(t.get_text() for t in ax.texts) == ["4.5 bits", "8.5 bits"]
    assert ax.get_xscale() == "log"
    plt.close(fig)


def test_code_histogram_has_one_bin_per_code():
    fig, ax = plt.subplots()
    codes = np.array([0, 0, 1, 3])
    assert plotting.plot_code_histogram(ax, codes, codes == 0) is ax
    bars = _bars(ax)
    assert [b.get_height() for b in bars] == [2, 1, 0, 1, 2, 0, 0, 0]  # all codes 0..3, then the masked ones
    assert [b.get_x() for b in bars[:4]] == [-0.5, 0.5, 1.5, 2.5]
    with pytest.raises(TypeError, match="codes"):
        plotting.plot_code_histogram(ax, np.array([0.5, 1.0]))
    plt.close(fig)


def test_ppl_vs_bits_zoom_axes_gets_the_same_data_limits_and_the_one_legend():
    fig, (ax, zx) = plt.subplots(1, 2)
    curves = {"int g32": ("int4", [3.0, 4.0, 5.0], [4.0, 2.02, 2.0])}  # +100 %, +1 %, 0 %
    plotting.plot_ppl_vs_bits(ax, curves, {"nf4": ("nf4", 4.5, 2.01)}, 2.0, zoom_ax=zx, zoom=(-0.5, 2.0))
    assert zx.get_ylim() == (-0.5, 2.0)
    assert zx.get_xlim() == pytest.approx((3.7, 5.3))  # bit widths with Δ in the zoom: 4, 4.5, 5; ± 0.3
    assert ax.get_ylim()[1] > 100
    assert ax.get_legend() is None and zx.get_legend() is not None
    [zoomed] = [line for line in zx.lines if line.get_label() == "int g32"]
    assert list(zoomed.get_ydata()) == pytest.approx([100.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="zoom"):
        plotting.plot_ppl_vs_bits(ax, curves, {}, 2.0, zoom_ax=zx, zoom=(2.0, 1.0))
    plt.close(fig)
