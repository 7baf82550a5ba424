"""Command line: ``refquant demo | train | quantize | qat | mixed | llm`` (or ``python -m refquant …``; ``--help`` for options).

Output policy: results (tables, the final line of ``train``) go to stdout; progress of the long
commands and errors go to stderr, so ``refquant demo > table.txt`` still shows what is happening.
An error is one line ``error: …`` naming the argument, exit status 2 (1: a file could not be written).

BLAS threads: the tiny GPT's matmuls are small — (4096, 96) · (96, 384) for 64 windows of 64
characters — and OpenBLAS threads cost more than they give there, ruinously so when other processes
compete for the cores. Measured on 2 cores shared with other jobs (load average ~5): five perplexity
evaluations took 1.9–2.5 s with one BLAS thread and 11–21 s with two; the whole demo 27–40 s against
81–129 s, printing the same numbers. The long commands (demo, train, quantize, qat, llm) run with
BLAS limited to one thread by ``threadpoolctl`` (a scikit-learn dependency), inside the command only
— importing refquant changes nothing. Override with the environment variable
``REFQUANT_BLAS_THREADS``: a number N ≥ 1, or ``0`` / ``auto`` for the BLAS library's own default
(which honours ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS``).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
import json
import os
import sys
import time

from ._version import __version__
from .cli_quantize import add_quantize_arguments, run_quantize
from . import llm_compare, llm_export
from .cli_mixed import add_mixed_parser, run_mixed_command
from .llm import add_llm_parser, run_llm

BLAS_ENV = "REFQUANT_BLAS_THREADS"
DEMO_QUICK_WINDOWS = 16  # --quick: evaluation windows per recipe (the full demo: 64)


def blas_threads(env: Mapping[str, str] | None = None) -> int | None:
    """BLAS threads for the long commands: ``REFQUANT_BLAS_THREADS`` (default 1); None: no limit."""
    raw = (os.environ if env is None else env).get(BLAS_ENV, "1").strip().lower()
    if raw in ("0", "auto"):
        return None
    if not raw.isdigit():
        raise ValueError(f"{BLAS_ENV} must be a number of threads >= 1, or 0 / auto for the BLAS default, got {raw!r}")
    return int(raw)


def _progress(command: str):
    """A callback that writes ``refquant <command> [elapsed] message`` to stderr."""
    t0 = time.perf_counter()

    def report(message: str) -> None:
        print(f"refquant {command} [{time.perf_counter() - t0:6.1f} s] {message}", file=sys.stderr, flush=True)
    return report


def _long_command(run, args) -> int:
    """Run ``run(args, progress)`` with the BLAS thread policy of the module docstring."""
    n = blas_threads()
    if n is None:
        limit = nullcontext()
    else:
        from threadpoolctl import threadpool_limits
        limit = threadpool_limits(limits=n, user_api="blas")
    with limit:
        return run(args, _progress(args.command))


def run_demo_command(args: argparse.Namespace, progress: Callable[[str], object]) -> int:
    from .demo import print_model_table, print_table, run_demo, run_model_demo

    if not args.quick:
        try:  # before the work, not after a minute of it
            os.makedirs(args.out_dir, exist_ok=True)
        except OSError as e:
            print(f"error: cannot write figures to {args.out_dir!r}: {e.strerror}", file=sys.stderr)
            return 1
    windows = DEMO_QUICK_WINDOWS if args.quick else 64
    try:
        rows = run_demo(args.out_dir, quick=args.quick, progress=progress)
        model_rows, attrib, base = run_model_demo(args.out_dir, n_windows=windows, quick=args.quick, progress=progress)
    except OSError as e:
        print(f"error: cannot write figures to {args.out_dir!r}: {e.strerror}", file=sys.stderr)
        return 1
    print_table(rows)
    print_model_table(model_rows, attrib, base)
    if args.quick:
        print(f"quick: {windows} evaluation windows per recipe (full demo: 64), no curves, no figures — "
              "the perplexities differ from the full demo's")
    else:
        print(f"figures written to {args.out_dir}/")
    if args.json:
        keys = ("method", "bits_per_weight", "size_bytes", "perplexity", "delta_pct")
        print(json.dumps([{k: r[k] for k in keys} for r in model_rows]))
    return 0


def _inside(path: str, directory: str) -> bool:
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


def run_train_command(args: argparse.Namespace, progress: Callable[[str], object]) -> int:
    from .io.checkpoint import save_checkpoint
    from .models.corpus import ALPHABET, train_val_split
    from .models.gpt import GPTConfig
    from .models.train import evaluate, train

    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if not args.out.endswith(".npz"):
        raise ValueError(f"--out: a checkpoint is an .npz file, got {args.out!r}")
    package = os.path.dirname(os.path.abspath(__file__))
    if _inside(args.out, package) and not args.force:
        raise ValueError(f"--out: {args.out!r} is inside the installed refquant package ({package}); write elsewhere "
                         "(default: ./tiny_gpt.npz) or add --force to replace the shipped checkpoint")
    d = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(d) or not os.access(d, os.W_OK):
        raise ValueError(f"--out: directory {d!r} does not exist or is not writable")
    cfg = GPTConfig(vocab_size=len(ALPHABET))
    tr, va = train_val_split(args.seed)
    progress(f"training the tiny GPT for {args.steps} steps (seed {args.seed}), writing {args.out}")
    p = train(cfg, tr, steps=args.steps, seed=args.seed,
              log=lambda step, loss: progress(f"step {step + 1:5d}/{args.steps}  loss {loss:.4f}"))
    progress("evaluating on the validation text")
    ppl, acc = evaluate(p, va, cfg)
    meta = {"steps": args.steps, "seed": args.seed, "val_perplexity": ppl, "val_accuracy": acc}
    try:
        save_checkpoint(args.out, p, cfg, meta)
    except OSError as e:
        print(f"error: cannot write {args.out!r}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"validation perplexity {ppl:.4f}, next-character accuracy {acc:.4f}; wrote {args.out}")
    return 0


def run_qat_command(args: argparse.Namespace, progress: Callable[[str], object]) -> int:
    """``qat``: float, PTQ and QAT of one recipe; a table, and with ``--json`` the rows as the last line."""
    from .qat.train import run_qat

    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    progress(f"QAT of {args.model} with {args.recipe}")
    every = 1 if args.model == "smollm2" else 25  # SmolLM2: ~20-50 s a step on 2 cores
    rows = run_qat(args.model, args.recipe, args.steps, seed=args.seed,
                   progress=lambda step, loss: step % every or progress(f"step {step:5d}  loss {loss:.4f}"))
    print(f"{'method':22s} {'bits/weight':>11s} {'perplexity':>10s} {'accuracy':>9s} {'seconds':>8s}")
    for r in rows:
        acc = r.get("accuracy")
        print(f"{r['method']:22s} {r['bits_per_weight']:11.3f} {r['perplexity']:10.4f} "
              f"{'' if acc is None else f'{acc:9.4f}':>9s} {r['seconds']:8.1f}")
    if args.json:
        print(json.dumps([{k: r[k] for k in ("method", "bits_per_weight", "perplexity", "seconds")} for r in rows]))
    return 0


def build_parser(prog: str = "refquant") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=prog, description="refquant: reference quantization in NumPy",
        epilog=f"Progress goes to stderr, results to stdout. BLAS runs one thread in these commands; set "
               f"{BLAS_ENV}=N (or 0 / auto for the BLAS default) to change it.")
    ap.add_argument("--version", action="version", version=f"refquant {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{demo,train,quantize,qat,mixed,llm}")
    d = sub.add_parser("demo", help="quantize sample tensors with every format and the tiny GPT with every recipe; "
                                    "print the tables, write figures")
    d.add_argument("--out-dir", default="figures", help="where figures are written (default: figures)")
    d.add_argument("--json", action="store_true", help="make the last line of stdout a JSON list of the model rows")
    d.add_argument("--quick", action="store_true",
                   help=f"seconds, not a minute: {DEMO_QUICK_WINDOWS} evaluation windows instead of 64, no "
                        "perplexity-vs-bits curves, no figures (so the perplexities differ from the full demo)")
    t = sub.add_parser("train", help="train the tiny GPT on the grammar corpus and write a checkpoint",
                       description="Train the tiny GPT (2000 steps: about 4 minutes on 2 cores). Writes into the "
                                   "working directory by default, never into the installed package unless --force.")
    t.add_argument("--steps", type=int, default=2000, help="optimizer steps (default: 2000)")
    t.add_argument("--seed", type=int, default=0, help="seed for data, initialisation and batches (default: 0)")
    t.add_argument("--out", default="tiny_gpt.npz", help="checkpoint path, .npz (default: ./tiny_gpt.npz)")
    t.add_argument("--force", action="store_true",
                   help="allow --out inside the installed package (to regenerate refquant/data/tiny_gpt.npz)")
    add_quantize_arguments(sub)
    q = sub.add_parser("qat", help="quantization-aware training from PTQ: float, PTQ and QAT rows of one recipe")
    q.add_argument("--model", default="tiny", choices=("tiny", "mlp", "smollm2"),
                   help="the shipped tiny GPT (default), the digits MLP, or SmolLM2-135M (every linear layer, trained "
                        "on the calibration text, scored on 16 windows of 512 tokens; ~20-50 s a step on 2 cores)")
    q.add_argument("--recipe", default="w2g32", help="tiny: w2g32, w2g32-ste, w3, w3-ste, w4a4, w4a4-tensor; "
                                                     "mlp: w2, w2-ste; smollm2: w4g128, w4g128-ste (default: w2g32)")
    q.add_argument("--steps", type=int, default=None, help="QAT steps (default: the recipe's)")
    q.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    q.add_argument("--json", action="store_true", help="make the last line of stdout a JSON list of the rows")
    add_mixed_parser(sub)
    s = add_llm_parser(sub)
    llm_compare.add_parser(s)
    llm_export.add_parser(s)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    prog = "python -m refquant" if sys.argv[0].endswith("__main__.py") else "refquant"
    ap = build_parser(prog)
    args = ap.parse_args(argv)
    run = {"demo": run_demo_command, "train": run_train_command, "quantize": run_quantize, "qat": run_qat_command,
           "mixed": run_mixed_command, "llm": run_llm}[args.command]
    try:
        blas_threads()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "demo":  # no user input to blame: a ValueError there is a bug, shown with its traceback
        return _long_command(run, args)
    try:
        return _long_command(run, args)
    except (ValueError, FileNotFoundError) as e:  # bad arguments or input files: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
