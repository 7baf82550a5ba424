"""Command line: ``python -m refquant demo`` (``--help`` for options)."""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np



def run_train(args) -> int:
    import time

    from .models.corpus import ALPHABET, train_val_split
    from .models.gpt import GPTConfig
    from .io.checkpoint import save_checkpoint
    from .models.train import evaluate, train

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
    from .core import metrics
    from .ptq.recipes import Recipe, quantize_weight

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
    fmt, opts = {"uniform": (f"int{bits}", {"group_size": args.group_size}), "nf4": ("nf4", {}), "fp8": ("fp8_e4m3", {}),
                 "fp4": ("fp4_e2m1", {}), "kmeans": ("kmeans", {"bits": bits}), "log": ("log2", {"bits": bits})}[args.method]
    recipe = Recipe(args.method, fmt, opts)
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
    from .demo import print_model_table, print_table, run_demo, run_model_demo
    from .io.checkpoint import CHECKPOINT

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
        print_table(rows)
        print_model_table(model_rows, attrib, base)
        print(f"figures written to {args.out_dir}/")
        if args.json:
            keys = ("method", "bits_per_weight", "size_bytes", "perplexity", "delta_pct")
            print(json.dumps([{k: r[k] for k in keys} for r in model_rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
