"""The demo: every format on sample tensors, every PTQ recipe on the tiny GPT, tables and figures.

``python -m refquant demo`` calls :func:`run_demo` and :func:`run_model_demo` and prints the tables;
the functions return rows so that tests and notebooks can use them without parsing output.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import os

import numpy as np


# (label, registry format, options): every row of the tensor table goes through the format registry,
# so its bits per element are the registry's one accounting (scales, zero points, codebooks included)
TENSOR_METHODS = (
    ("int8 per-tensor affine", "int8", dict(group_size=None, symmetric=False)),
    ("int8 per-channel sym", "int8", {}),
    ("int8 per-tensor percentile", "int8", dict(group_size=None, symmetric=False, calibration="percentile")),
    ("int4 per-tensor sym", "int4", dict(group_size=None)),
    ("int4 per-tensor MSE", "int4", dict(group_size=None, calibration="mse")),
    ("int4 per-channel sym", "int4", {}),
    ("int4 group-128 sym", "int4", dict(group_size=128)),
    ("int4 group-32 sym", "int4", dict(group_size=32)),
    ("int4 group-32 MSE", "int4", dict(group_size=32, calibration="mse")),
    ("int3 group-32 sym", "int3", dict(group_size=32)),
    ("log2 4-bit", "log2", {}),
    ("k-means 16 (shared)", "kmeans", dict(bits=4)),
    ("nf4 block-64", "nf4", {}),
    ("fp4 e2m1 block-32", "fp4_e2m1", {}),
    ("fp8 e4m3 block-128", "fp8_e4m3", dict(group_size=128)),
    ("ggml q4_0", "q4_0", {}),
    ("ggml q5_1", "q5_1", {}),
    ("ggml q8_0", "q8_0", {}),
)


def run_demo(out_dir: str = "figures", *, quick: bool = False, progress: Callable[[str], object] | None = None) -> list:
    """Quantize the sample tensors with every method; return table rows and write figures
    (``quick``: the same rows, no figures). ``progress(message)``, if given, is called before each step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plotting
    from .core import metrics
    from .core.qtensor import quantize_tensor
    from .core.samples import sample_tensors
    from .formats import registry

    rows = []
    tensors = sample_tensors()
    for i, (tname, x) in enumerate(tensors.items()):
        _report(progress, f"sample tensor {i + 1}/{len(tensors)}: {tname}, {len(TENSOR_METHODS)} formats")
        for mname, fmt, opts in TENSOR_METHODS:
            t = registry.quantize(x, fmt, **opts)
            xh, bits = t.dequantize(), t.storage_bits() / x.size
            rows.append({"tensor": tname, "method": mname, "bits_per_element": float(bits),
                         "sqnr_db": metrics.sqnr_db(x, xh), "mse": metrics.mse(x, xh),
                         "cosine": metrics.cosine_similarity(x, xh)})

    if quick:
        return rows
    _report(progress, "figure: SQNR vs storage")
    os.makedirs(out_dir, exist_ok=True)
    # SQNR vs bits on the outlier-channel weights: granularity matters more than bits
    w = tensors["outlier-channel weights"]
    curves = {}
    for label, kw in [("per-tensor", {}), ("per-channel", dict(axis=0)), ("group-32", dict(axis=1, block_size=32))]:
        xs, ys = [], []
        for b in range(2, 9):
            qt = quantize_tensor(w, f"int{b}", symmetric=True, **kw)
            xs.append(qt.bits_per_element())
            ys.append(metrics.sqnr_db(w, qt.dequantize()))
        curves[label] = (xs, ys)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    plotting.plot_curves(axes[0], curves)
    axes[0].set_title("outlier-channel weights: SQNR vs storage")
    h = tensors["heavy-tailed weights"]
    qt = quantize_tensor(h, "int4", symmetric=True)
    plotting.plot_levels(axes[1], h, qt.scale, 0, qt.qrange, label="heavy-tailed weights", log=True)
    axes[1].set_title("int4 per-tensor levels over a heavy-tailed histogram")
    fig.tight_layout()
    path = os.path.join(out_dir, "00-demo-overview.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return rows


def run_model_demo(out_dir: str, *, n_windows: int = 64, quick: bool = False,
                   progress: Callable[[str], object] | None = None) -> tuple:
    """Every standard recipe on the shipped tiny GPT; figures of perplexity vs bits and of per-layer
    attribution. Returns (rows, attribution rows, float perplexity).

    ``quick``: the recipes and the attribution only — no perplexity-vs-bits curves, no figures (pass a
    smaller ``n_windows`` too for a run of seconds). ``progress(message)`` is called before each step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plotting
    from .models.corpus import train_val_split
    from .io.checkpoint import load_checkpoint
    from .models.lm import tiny_gpt
    from .models.train import evaluator, get_batch, windows
    from .ptq.recipes import Recipe, run_recipe, standard_recipes
    from .ptq.sensitivity import layer_attribution

    p, cfg, meta = load_checkpoint()
    _, val = train_val_split(meta.get("seed", 0), n_train=0)
    calib_rng = np.random.default_rng(1234)
    held_out = val[len(val) // 2:]  # calibration batches never overlap the evaluation windows
    calib = [get_batch(held_out, 16, cfg.context_length, calib_rng)[0] for _ in range(4)]
    lm, score = tiny_gpt(cfg), evaluator(val, cfg, n_windows=n_windows)
    eval_windows = windows(val, cfg.context_length, n_windows)
    rows, recipes = [], standard_recipes()
    for i, r in enumerate(recipes):
        _report(progress, f"recipe {i + 1}/{len(recipes)}: {r.name} ({n_windows} windows)")
        rows.append(run_recipe(lm, p, r, score, calib))
    base = rows[0]["perplexity"]
    for r in rows:
        r["delta_pct"] = 100 * (r["perplexity"] / base - 1)
    w3 = Recipe("w3-g32", "int3", {"group_size": 32})
    if quick:
        _report(progress, f"layer attribution: {w3.name} on one layer at a time")
        return rows, layer_attribution(lm, p, w3, eval_windows), base
    families = {
        "uniform, group 32": [Recipe(f"w{b}-g32", f"int{b}", {"group_size": 32}) for b in (2, 3, 4, 5, 6, 8)],
        "uniform, per channel": [Recipe(f"w{b}-pc", f"int{b}") for b in (3, 4, 5, 6, 8)],
        "k-means (shared)": [Recipe(f"km{b}", "kmeans", {"bits": b}) for b in (2, 3, 4, 6, 8)],
    }
    curves = {}
    for fam, recipes in families.items():
        _report(progress, f"curve: {fam}, {len(recipes)} recipes")
        pts = [run_recipe(lm, p, r, score) for r in recipes]
        curves[fam] = ([q["bits_per_weight"] for q in pts], [q["perplexity"] for q in pts])
    # weight-only rows as points, except those already on a curve; the W8A8 rows have w8's bits and
    # differ from it by 0.02 %: the table shows them
    on_curves = {"w8-per-channel", "w4-g32", "w3-g32", "kmeans-16"}
    points = {r["method"]: (rec.weight_format, r["bits_per_weight"], r["perplexity"])
              for rec, r in zip(standard_recipes(), rows)
              if rec.weight_format is not None and rec.activation is None and r["method"] not in on_curves}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    plotting.plot_ppl_vs_bits(axes[0], {f: (families[f][0].weight_format, *curves[f]) for f in curves}, points, base,
                              zoom_ax=axes[1], zoom=(-0.25, 2.5))
    axes[0].set_title("all widths")
    axes[1].set_title("zoom: within 2.5 % of float")
    fig.suptitle("tiny GPT, weight-only recipes: perplexity vs bits per weight")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "00-demo-ppl-vs-bits.png"), dpi=100)
    plt.close(fig)
    _report(progress, f"layer attribution: {w3.name} on one layer at a time")
    attrib = layer_attribution(lm, p, w3, eval_windows)
    fig, (ax, sqnr_ax) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True, gridspec_kw=dict(height_ratios=[1.6, 1]))
    plotting.plot_layer_attribution(ax, attrib, base, sqnr_ax=sqnr_ax)
    ax.set_title("which layer hurts: W3 group-32 on one layer at a time, in forward order")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "00-demo-layer-attribution.png"), dpi=100)
    plt.close(fig)
    return rows, attrib, base


def _report(progress, message: str) -> None:
    if progress is not None:
        progress(message)


def print_model_table(rows: Sequence[dict], attrib: Sequence[dict], base: float) -> None:
    print(f"\ntiny GPT on the grammar corpus (validation, {len(rows)} recipes)")
    print(f"{'method':18s} {'bits/weight':>11s} {'size bytes':>11s} {'perplexity':>10s} {'vs float':>9s} {'accuracy':>9s}")
    for r in rows:
        print(f"{r['method']:18s} {r['bits_per_weight']:11.3f} {r['size_bytes']:11d} {r['perplexity']:10.4f} "
              f"{r['delta_pct']:+8.2f}% {r['accuracy']:9.4f}")
    by = {r["method"]: r for r in rows}
    for m, lim in [("w8a8-dynamic", 1.0), ("w4-g32", 5.0)]:
        d = by[m]["delta_pct"]
        print(f"target: {m} within {lim:g} % of float: {'met' if d <= lim else 'MISSED'} ({d:+.2f} %)")
    print(f"w3-g32: {by['w3-g32']['delta_pct']:+.2f} % (reported, no target)")
    worst = max(attrib, key=lambda a: a["perplexity"])
    print(f"layer that hurts most under W3-g32: {worst['layer']} "
          f"(+{100 * (worst['perplexity'] / base - 1):.2f} % alone, output SQNR {worst['output_sqnr_db']:.1f} dB)")


def print_table(rows: Sequence[dict]) -> None:
    print(f"{'tensor':26s} {'method':28s} {'bits/elem':>9s} {'SQNR dB':>8s} {'cosine':>8s}")
    for r in rows:
        print(f"{r['tensor']:26s} {r['method']:28s} {r['bits_per_element']:9.3f} {r['sqnr_db']:8.2f} {r['cosine']:8.5f}")


