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
    rows = json.loads(out[-1])
    assert {"tensor", "method", "bits_per_element", "sqnr_db", "mse", "cosine"} <= set(rows[0])
    by = {(r["tensor"], r["method"]): r for r in rows}
    # the lessons the demo exists to show
    assert by[("outlier-channel weights", "int8 per-channel sym")]["sqnr_db"] > \
        by[("outlier-channel weights", "int8 per-tensor affine")]["sqnr_db"] + 15
    assert by[("heavy-tailed weights", "int4 per-tensor MSE")]["sqnr_db"] > \
        by[("heavy-tailed weights", "int4 per-tensor sym")]["sqnr_db"] + 5
    assert by[("gaussian weights", "int4 group-32 sym")]["bits_per_element"] == 5.0
    # non-uniform formats: NF4 beats uniform int4 with (almost) the same storage on heavy-tailed weights
    assert by[("heavy-tailed weights", "nf4 block-64")]["sqnr_db"] > by[("heavy-tailed weights", "int4 group-128 sym")]["sqnr_db"]
    assert by[("heavy-tailed weights", "ggml q4_0")]["bits_per_element"] == 4.5
    assert os.path.getsize(tmp_path / "00-demo-overview.png") > 10_000


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
