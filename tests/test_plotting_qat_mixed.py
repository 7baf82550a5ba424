"""plotting.qat_mixed: each function draws what it is given on the given axes and returns them; names parsed by hand."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from refquant import plotting  # noqa: E402
from refquant.plotting.qat_mixed import (layer_kind, method_family, plot_lsq_scale_gradient, plot_pareto,  # noqa: E402
                                         plot_qat_curves, plot_sensitivity_bars, plot_ste_landscape)


@pytest.fixture
def ax():
    fig, a = plt.subplots()
    yield a
    plt.close(fig)


def test_reexported():
    for name in ("plot_sensitivity_bars", "plot_pareto", "plot_ste_landscape", "plot_lsq_scale_gradient",
                 "plot_qat_curves", "layer_kind", "method_family"):
        assert getattr(plotting, name) is getattr(plotting.qat_mixed, name)


@pytest.mark.parametrize("name, kind", [("blk.3.ffn_down.weight", "ffn_down"), ("blk.12.attn_v.weight", "attn_v"),
                                        ("output.weight", "output"), ("h1.mlp.c_fc.w", "mlp.c_fc"),
                                        ("lm_head.w", "lm_head")])
def test_layer_kind(name, kind):
    assert layer_kind(name) == kind


@pytest.mark.parametrize("method, fam", [("uniform-int4-g128", "uniform"), ("dp-kl-4.25", "dp"),
                                         ("greedy-obs-int3-g32", "greedy"), ("q4km-rule", "q4km"),
                                         ("q4km-rule-stand-ins", "q4km"), ("float", "float")])
def test_method_family(method, fam):
    assert method_family(method) == fam


def test_sensitivity_bars(ax):
    names = ["blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.1.attn_q.weight", "blk.1.ffn_down.weight",
             "output.weight"]
    v = np.array([0.1, 2.0, 0.0, 0.5, 3.0])
    v0 = v.copy()
    assert plot_sensitivity_bars(ax, names, v, top=2) is ax
    np.testing.assert_array_equal(v, v0)
    heights = sorted(round(p.get_height(), 12) for p in ax.patches)
    assert heights[1:] == [0.1, 0.5, 2.0, 3.0] and 0 < heights[0] < 0.1  # 0 drawn at the log axis' floor
    assert {t.get_text() for t in ax.texts} == {"output", "blk.0.ffn_down"}  # the two largest, named
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1"]  # one tick per block
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["attn_q", "ffn_down", "output"]


def test_sensitivity_bars_bad_input(ax):
    with pytest.raises(ValueError, match="values: expected shape"):
        plot_sensitivity_bars(ax, ["a", "b"], [1.0])
    with pytest.raises(ValueError, match="values must be finite"):
        plot_sensitivity_bars(ax, ["a"], [np.nan])


def test_pareto(ax):
    rows = [{"method": "uniform-int4-g128", "bits_per_weight": 4.25, "perplexity": 30.0},
            {"method": "dp-kl-int4-g128", "bits_per_weight": 4.24, "perplexity": 25.0},
            {"method": "greedy-kl-int4-g128", "bits_per_weight": 4.24, "perplexity": 25.0},
            {"method": "q4km-rule", "bits_per_weight": 6.1, "perplexity": 14.0}]
    front = [rows[1], rows[2], rows[3]]
    assert plot_pareto(ax, rows, front=front, float_perplexity=13.0) is ax
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    np.testing.assert_array_equal(offsets, [[4.25, 30.0], [4.24, 25.0], [4.24, 25.0], [6.1, 14.0]])
    # one label per point: the DP and greedy rows that found the same allocation share one
    assert sorted(t.get_text() for t in ax.texts) == ["dp-kl-int4-g128 (= 1 more)", "q4km-rule", "uniform-int4-g128"]
    dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--"][0]
    np.testing.assert_array_equal(dashed.get_xdata(), [4.24, 4.24, 6.1])
    with pytest.raises(ValueError, match="rows: nothing"):
        plot_pareto(ax, [])


def test_ste_landscape(ax):
    w = np.linspace(-1, 1, 21)
    g = np.where(np.abs(w) < 0.8, w, 0.0)
    assert plot_ste_landscape(ax, w, w**2, np.round(w * 2) ** 2 / 4, ste_grad=g, arrows=3) is ax
    assert len(ax.lines) == 3 and len(ax.texts) == 3  # two curves, the arrows' legend entry; three arrows
    with pytest.raises(ValueError, match="ste_grad: expected shape"):
        plot_ste_landscape(ax, w, w, w, ste_grad=g[:3])
    with pytest.raises(ValueError, match="one length"):
        plot_ste_landscape(ax, w, w[:3], w)


def test_lsq_scale_gradient_and_qat_curves(ax):
    x = np.linspace(-1, 1, 9)
    assert plot_lsq_scale_gradient(ax, x, x, scale=0.25, qmin=-4, qmax=3) is ax
    assert sorted(ln.get_xdata()[0] for ln in ax.lines if ln.get_linestyle() == ":") == [-1.0, 0.75]  # qmin·s, qmax·s
    with pytest.raises(ValueError, match="x, grad"):
        plot_lsq_scale_gradient(ax, x, x[:2], scale=1.0, qmin=0, qmax=1)
    fig, a2 = plt.subplots()
    assert plot_qat_curves(a2, {"w2": [3.0, 2.0, 1.5]}, ptq={"w2": 3.0}, float_value=1.0) is a2
    np.testing.assert_array_equal(a2.lines[0].get_xdata(), [1, 2, 3])
    assert [ln.get_ydata()[0] for ln in a2.lines[1:]] == [3.0, 1.0]
    with pytest.raises(ValueError, match="curves: nothing"):
        plot_qat_curves(a2, {})
    plt.close(fig)


def test_pareto_clips_a_collapsed_row_and_labels_chosen_families(ax):
    rows = [{"method": "uniform-int3-g128", "bits_per_weight": 3.27, "perplexity": 20890.0},
            {"method": "uniform-int4-g128", "bits_per_weight": 4.27, "perplexity": 28.5},
            {"method": "greedy-kl-int4-g128", "bits_per_weight": 4.27, "perplexity": 23.8}]
    plot_pareto(ax, rows, front=rows, ymax=47.0, annotate={"uniform"})
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    np.testing.assert_array_equal(offsets[:, 1], [47.0, 28.5, 23.8])  # 20890 drawn at ymax
    assert sorted(t.get_text() for t in ax.texts) == ["uniform-int3-g128: 2.089e+04 ↑", "uniform-int4-g128"]
