"""Quantize / dequantize throughput on 16M float32, as a ratio to ``x.copy()`` timed in the same round.

    python benchmarks/bench_uniform.py [--rounds 7] [--cpu]

A ratio of 1.0 means "as fast as copying the tensor once". Target (issue 14): quantize and
dequantize within 2x of x.copy() at every granularity (per-tensor, per-channel, group 128).
The naive ``clip(rint(x / s)).astype(int8)`` chain is printed for reference. Rounds interleave
the copy with every case (see ``timing.compare``); each ratio is the median over rounds against
the same round's copy, with [min, max]. On a shared machine the wall-clock ratios swing with the
neighbours' load; ``--cpu`` also prints process CPU time (interleaved the same way, minimum and median
over rounds), which a busy neighbour disturbs far less.
"""
import argparse
import statistics
import time

import numpy as np

from timing import compare, print_env, print_rows

from refquant import dequantize, quantize


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cpu", action="store_true", help="also time process CPU time, min and median ratios")
    args = ap.parse_args()
    print_env()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4096, 4096)).astype(np.float32)  # 16M elements, 64 MiB
    s = np.float32(0.03)
    s_ch = rng.uniform(0.01, 0.05, 4096).astype(np.float32)
    s_g = rng.uniform(0.01, 0.05, (4096, 32)).astype(np.float32)
    z_g = rng.integers(-8, 8, (4096, 32)).astype(np.int8)

    q_t = quantize(x, s)
    q_c = quantize(x, s_ch, 0, axis=0)
    q_g = quantize(x, s_g, z_g, "int8", axis=1, block_size=128)
    cases = {
        "naive clip(rint(x/s)) int8": lambda: np.clip(np.rint(x / s), -128, 127).astype(np.int8),
        "quantize per-tensor int8": lambda: quantize(x, s),
        "quantize per-channel (axis 0)": lambda: quantize(x, s_ch, 0, axis=0),
        "quantize group 128 (axis 1)": lambda: quantize(x, s_g, z_g, "int8", axis=1, block_size=128),
        "dequantize per-tensor": lambda: dequantize(q_t, s),
        "dequantize per-channel": lambda: dequantize(q_c, s_ch, 0, axis=0),
        "dequantize group 128": lambda: dequantize(q_g, s_g, z_g, axis=1, block_size=128),
    }
    rows = compare(lambda: x.copy(), cases, rounds=args.rounds, baseline_name="x.copy() 16M float32")
    print_rows(rows)
    if args.cpu:
        cpu = {name: [] for name in ["x.copy()", *cases]}
        for _ in range(args.rounds):
            for name, f in [("x.copy()", lambda: x.copy()), *cases.items()]:
                t = time.process_time()
                f()
                cpu[name].append(time.process_time() - t)
        base = cpu.pop("x.copy()")
        print(f"\nCPU time, ratio to x.copy() ({min(base) * 1e3:.1f} ms min): min  median")
        for name, ts in cpu.items():
            print(f"{name:34s} {min(ts) / min(base):5.2f} {statistics.median(ts) / statistics.median(base):7.2f}")


if __name__ == "__main__":
    main()
