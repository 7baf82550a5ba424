"""Command line: ``python -m refquant demo`` (``--help`` for options)."""
from __future__ import annotations

import argparse
import json
import os
import sys



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


def _print_table(rows):
    print(f"{'tensor':26s} {'method':28s} {'bits/elem':>9s} {'SQNR dB':>8s} {'cosine':>8s}")
    for r in rows:
        print(f"{r['tensor']:26s} {r['method']:28s} {r['bits_per_element']:9.3f} {r['sqnr_db']:8.2f} {r['cosine']:8.5f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m refquant", description="refquant: reference quantization in NumPy")
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="quantize sample tensors with every method, print an error table, write figures")
    d.add_argument("--out-dir", default="figures", help="where figures are written (default: figures)")
    d.add_argument("--json", action="store_true", help="make the last line of stdout a JSON list of the rows")
    args = ap.parse_args(argv)
    if args.command == "demo":
        try:
            rows = run_demo(args.out_dir)
        except OSError as e:
            print(f"error: cannot write figures to {args.out_dir!r}: {e.strerror}", file=sys.stderr)
            return 1
        _print_table(rows)
        print(f"figures written to {args.out_dir}/")
        if args.json:
            print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
