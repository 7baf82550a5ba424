"""The CLI demo and the plot functions."""
import json
import os
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from refquant import plotting  # noqa: E402
from refquant.__main__ import main  # noqa: E402


def test_demo_json_and_figures(tmp_path, capsys):
    assert main(["demo", "--out-dir", str(tmp_path), "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    rows = json.loads(out[-1])  # the model table, as issue 6 specifies it
    assert all(set(r) == {"method", "bits_per_weight", "size_bytes", "perplexity", "delta_pct"} for r in rows)
    by = {r["method"]: r for r in rows}
    assert {"float", "w8-per-channel", "w4-g32", "w4-g128", "w8a8-static", "w8a8-dynamic"} <= set(by)
    assert by["float"]["delta_pct"] == 0 and by["float"]["bits_per_weight"] == 32
    assert by["w8a8-dynamic"]["delta_pct"] < 1 and by["w4-g32"]["delta_pct"] < 5  # the targets
    assert by["w4-g32"]["size_bytes"] < by["w8-per-channel"]["size_bytes"] < by["float"]["size_bytes"]
    text = "\n".join(out)
    # the sample-tensor table still teaches its lessons
    assert "outlier-channel weights" in text and "nf4 block-64" in text and "layer that hurts most" in text
    for f in ["00-demo-overview.png", "00-demo-ppl-vs-bits.png", "00-demo-layer-attribution.png"]:
        assert os.path.getsize(tmp_path / f) > 10_000


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


def test_cli_errors_are_one_line_and_nonzero(tmp_path):
    r = subprocess.run([sys.executable, "-m", "refquant", "frobnicate"], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "invalid choice" in r.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = subprocess.run([sys.executable, "-m", "refquant", "demo", "--out-dir", str(blocker / "x")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.startswith("error: cannot write figures")


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
