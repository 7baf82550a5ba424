"""Command line: ``python -m refquant demo`` (``--help`` for options)."""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np



def _methods():
    """(name, function x -> (x_hat, bits per element)). Weights are (out, in): channels along axis 0,
    groups along axis 1."""
    from . import ggml_ops, quantize_tensor
    from .codebook import absmax_scale, codebook_fake_quantize
    from .logquant import log_quantize
    from .minifloat import minifloat_codebook
    from .nf4 import nf4_quantize
    from .weight_sharing import share_weights

    def uniform(qrange, **kw):
        def f(x):
            qt = quantize_tensor(x, qrange, **kw)
            return qt.dequantize(), qt.bits_per_element()
        return f

    def minifloat(fmt, top, bits, block):
        def f(x):
            s = absmax_scale(x, top, axis=1, block_size=block)
            return (codebook_fake_quantize(x, minifloat_codebook(fmt), scale=s, axis=1, block_size=block),
                    bits + 32 / block)
        return f

    def ggml(qt):
        return lambda x: (ggml_ops.dequantize(ggml_ops.quantize(x, qt), qt), 8 * ggml_ops.BLOCK_BYTES[qt] / 32)

    def nf4(x):
        t = nf4_quantize(x, 64)
        return t.dequantize(), t.bits_per_element()

    def log2(x):
        t = log_quantize(x, 4)
        return t.dequantize(), t.bits_per_element()

    def kmeans(x):
        s = share_weights(x, 16)
        return s.dequantize(), 4 + 32 * 16 / x.size

    return [
        ("int8 per-tensor affine", uniform("int8")),
        ("int8 per-channel sym", uniform("int8", symmetric=True, axis=0)),
        ("int8 per-tensor percentile", uniform("int8", method="percentile", percentile=99.99)),
        ("int4 per-tensor sym", uniform("int4", symmetric=True)),
        ("int4 per-tensor MSE", uniform("int4", symmetric=True, method="mse")),
        ("int4 per-channel sym", uniform("int4", symmetric=True, axis=0)),
        ("int4 group-128 sym", uniform("int4", symmetric=True, axis=1, block_size=128)),
        ("int4 group-32 sym", uniform("int4", symmetric=True, axis=1, block_size=32)),
        ("int4 group-32 MSE", uniform("int4", symmetric=True, axis=1, block_size=32, method="mse")),
        ("int3 group-32 sym", uniform("int3", symmetric=True, axis=1, block_size=32)),
        ("log2 4-bit", log2),
        ("k-means 16 (shared)", kmeans),
        ("nf4 block-64", nf4),
        ("fp4 e2m1 block-32", minifloat("float4e2m1", 6.0, 4, 32)),
        ("fp8 e4m3 block-128", minifloat("float8e4m3fn", 448.0, 8, 128)),
        ("ggml q4_0", ggml("q4_0")),
        ("ggml q5_1", ggml("q5_1")),
        ("ggml q8_0", ggml("q8_0")),
    ]


def run_demo(out_dir: str = "figures") -> list:
    """Quantize the sample tensors with every method; return table rows and write figures."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import metrics, plotting, quantize_tensor
    from .samples import sample_tensors

    rows = []
    tensors = sample_tensors()
    methods = _methods()
    for tname, x in tensors.items():
        for mname, fn in methods:
            xh, bits = fn(x)
            rows.append({"tensor": tname, "method": mname, "bits_per_element": float(bits),
                         "sqnr_db": metrics.sqnr_db(x, xh), "mse": metrics.mse(x, xh),
                         "cosine": metrics.cosine_similarity(x, xh)})

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


def run_model_demo(out_dir: str, *, n_windows: int = 64) -> tuple:
    """Every standard recipe on the shipped tiny GPT; figures of perplexity vs bits and of per-layer
    attribution. Returns (rows, attribution rows, float perplexity)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plotting
    from .corpus import train_val_split
    from .recipes import Recipe, layer_attribution, run_recipe, standard_recipes
    from .train import get_batch, load_checkpoint

    p, cfg, meta = load_checkpoint()
    _, val = train_val_split(meta.get("seed", 0), n_train=0)
    calib_rng = np.random.default_rng(1234)
    held_out = val[len(val) // 2:]  # calibration batches never overlap the evaluation windows
    calib = [get_batch(held_out, 16, cfg.block_size, calib_rng)[0] for _ in range(4)]
    rows = [run_recipe(p, cfg, r, val, calib, n_windows=n_windows) for r in standard_recipes()]
    base = rows[0]["perplexity"]
    for r in rows:
        r["delta_pct"] = 100 * (r["perplexity"] / base - 1)
    families = {
        "uniform, group 32": [Recipe(f"w{b}-g32", bits=b, group_size=32) for b in (2, 3, 4, 5, 6, 8)],
        "uniform, per channel": [Recipe(f"w{b}-pc", bits=b) for b in (3, 4, 5, 6, 8)],
        "k-means (shared)": [Recipe(f"km{b}", weight="kmeans", bits=b) for b in (2, 3, 4, 6, 8)],
    }
    curves = {}
    for fam, recipes in families.items():
        pts = [run_recipe(p, cfg, r, val, n_windows=n_windows) for r in recipes]
        curves[fam] = ([q["bits_per_weight"] for q in pts], [q["perplexity"] for q in pts])
    fig, ax = plt.subplots(figsize=(8, 5))
    plotting.plot_curves(ax, curves, ylabel="validation perplexity")
    for r in rows[1:]:
        if not r["method"].startswith(("w4-g", "w3-g", "w8-per")):
            ax.scatter([r["bits_per_weight"]], [r["perplexity"]], s=30, zorder=3, label=r["method"], marker="D")
    ax.axhline(base, color="k", lw=0.8, ls="--", label="float32")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("tiny GPT: perplexity vs bits per weight (scales included)")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "00-demo-ppl-vs-bits.png"), dpi=100)
    plt.close(fig)
    attrib = layer_attribution(p, cfg, Recipe("w3-g32", bits=3, group_size=32), val, n_windows=n_windows)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    plotting.plot_layer_attribution(ax, attrib, base)
    ax.set_title("which layer hurts: W3 group-32 on one layer at a time")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "00-demo-layer-attribution.png"), dpi=100)
    plt.close(fig)
    return rows, attrib, base


def _print_model_table(rows, attrib, base):
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


def _print_table(rows):
    print(f"{'tensor':26s} {'method':28s} {'bits/elem':>9s} {'SQNR dB':>8s} {'cosine':>8s}")
    for r in rows:
        print(f"{r['tensor']:26s} {r['method']:28s} {r['bits_per_element']:9.3f} {r['sqnr_db']:8.2f} {r['cosine']:8.5f}")


def run_train(args) -> int:
    import time

    from .corpus import ALPHABET, train_val_split
    from .model import GPTConfig
    from .train import evaluate, save_checkpoint, train

    cfg = GPTConfig(vocab_size=len(ALPHABET))
    tr, va = train_val_split(args.seed)
    t0 = time.time()
    log = lambda step, loss: print(f"step {step:5d}/{args.steps}  loss {loss:.4f}  {time.time() - t0:6.1f} s", flush=True)  # noqa: E731
    p = train(cfg, tr, steps=args.steps, seed=args.seed, log=log)
    ppl, acc = evaluate(p, va, cfg)
    meta = {"steps": args.steps, "seed": args.seed, "val_perplexity": ppl, "val_accuracy": acc}
    try:
        save_checkpoint(args.out, p, cfg, meta)
    except OSError as e:
        print(f"error: cannot write {args.out!r}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"validation perplexity {ppl:.4f}, next-character accuracy {acc:.4f}; wrote {args.out}")
    return 0


QUANTIZE_METHODS = ("uniform", "nf4", "fp8", "fp4", "kmeans", "log")


def run_quantize(args) -> int:
    """Quantize every array of an .npz with one method; print per-array error; optionally save."""
    from . import metrics
    from .recipes import Recipe, quantize_weight

    if args.method not in QUANTIZE_METHODS:
        raise ValueError(f"--method: unknown {args.method!r}; expected one of {', '.join(QUANTIZE_METHODS)}")
    bits = args.bits if args.bits is not None else {"uniform": 8, "nf4": 4, "fp8": 8, "fp4": 4, "kmeans": 4, "log": 4}[args.method]
    fixed = {"nf4": 4, "fp8": 8, "fp4": 4}
    if args.method in fixed and bits != fixed[args.method]:
        raise ValueError(f"--bits: {args.method} is a {fixed[args.method]}-bit format, got {bits}")
    if not 2 <= bits <= 16 or (args.method == "kmeans" and bits > 12):
        raise ValueError(f"--bits must be in [2, 16] (kmeans: [2, 12]), got {bits}")
    if args.group_size < 0:
        raise ValueError(f"--group-size must be >= 0, got {args.group_size}")
    if not os.path.exists(args.weights):
        raise FileNotFoundError(f"--weights: file {args.weights!r} not found")
    try:
        z = np.load(args.weights)
    except Exception as e:  # a file that is not an .npz: one line, no traceback
        raise ValueError(f"--weights: {args.weights!r} is not a readable .npz file ({type(e).__name__})") from None
    recipe = Recipe(args.method, weight=args.method, bits=bits, group_size=args.group_size)
    out, total_in, total_bits = {}, 0, 0
    print(f"{'array':32s} {'shape':>14s} {'bits/elem':>9s} {'SQNR dB':>8s} {'max |err|':>10s}")
    with z:
        for name in z.files:
            a = z[name]
            if a.dtype.kind != "f" or a.ndim == 0 or a.size < 2:
                out[name] = a
                print(f"{name:32s} {str(a.shape):>14s}   skipped (not a float array with >= 2 elements)")
                continue
            w = a.astype(np.float32).reshape(a.shape[0] if a.ndim > 1 else 1, -1)  # (out, in) view
            if not np.all(np.isfinite(w)):
                raise ValueError(f"array {name!r} contains NaN or Inf")
            w_hat, nbits = quantize_weight(w, recipe)
            out[name] = w_hat.reshape(a.shape).astype(a.dtype)
            total_in, total_bits = total_in + a.size, total_bits + nbits
            err = np.abs(w_hat - w).max()
            print(f"{name:32s} {str(a.shape):>14s} {nbits / a.size:9.3f} {metrics.sqnr_db(w, w_hat):8.2f} {err:10.3g}")
    if total_in:
        print(f"total: {total_in} values, {total_bits / total_in:.3f} bits per value including scales")
    if args.out:
        np.savez_compressed(args.out, **out)
        print(f"wrote the dequantized arrays to {args.out}")
    return 0


def main(argv=None) -> int:
    from .train import CHECKPOINT

    ap = argparse.ArgumentParser(prog="python -m refquant", description="refquant: reference quantization in NumPy")
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="quantize sample tensors with every method, print an error table, write figures")
    d.add_argument("--out-dir", default="figures", help="where figures are written (default: figures)")
    d.add_argument("--json", action="store_true", help="make the last line of stdout a JSON list of the rows")
    t = sub.add_parser("train", help="train the tiny GPT on the grammar corpus and write a checkpoint")
    t.add_argument("--steps", type=int, default=2000, help="optimizer steps (default: 2000)")
    t.add_argument("--seed", type=int, default=0, help="seed for data, initialisation and batches (default: 0)")
    t.add_argument("--out", default=CHECKPOINT, help="checkpoint path (default: the one shipped in the package)")
    qz = sub.add_parser("quantize", help="quantize every float array of an .npz file and report the error per array")
    qz.add_argument("--weights", required=True, help="input .npz file")
    qz.add_argument("--method", required=True, help=f"weight format: {', '.join(QUANTIZE_METHODS)}")
    qz.add_argument("--bits", type=int, default=None, help="bits (uniform, kmeans, log; fixed for nf4/fp8/fp4)")
    qz.add_argument("--group-size", type=int, default=0, help="uniform: group size along axis 1 (0: per row)")
    qz.add_argument("--out", default=None, help="write the dequantized arrays to this .npz")
    args = ap.parse_args(argv)
    if args.command == "quantize":
        try:
            return run_quantize(args)
        except (ValueError, FileNotFoundError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.command == "train":
        if args.steps < 1:
            ap.error("--steps must be >= 1")
        return run_train(args)
    if args.command == "demo":
        try:
            rows = run_demo(args.out_dir)
            model_rows, attrib, base = run_model_demo(args.out_dir)
        except OSError as e:
            print(f"error: cannot write figures to {args.out_dir!r}: {e.strerror}", file=sys.stderr)
            return 1
        _print_table(rows)
        _print_model_table(model_rows, attrib, base)
        print(f"figures written to {args.out_dir}/")
        if args.json:
            keys = ("method", "bits_per_weight", "size_bytes", "perplexity", "delta_pct")
            print(json.dumps([{k: r[k] for k in keys} for r in model_rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
