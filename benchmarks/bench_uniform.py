"""Quantize / dequantize throughput on 16M float32, as a ratio to ``x.copy()`` measured in the same run.

    python benchmarks/bench_uniform.py [--repeat 7]

A ratio of 1.0 means "as fast as copying the tensor once". Target (issue 3): per-tensor quantize
within 2x of x.copy(). The naive ``clip(rint(x / s)).astype(int8)`` chain is printed for reference.
Each time is the best of ``--repeat`` runs.
"""
import argparse
import numpy as np

from timing import best_time

from refquant import dequantize, quantize


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4096, 4096)).astype(np.float32)  # 16M elements, 64 MiB
    s = np.float32(0.03)
    s_ch = rng.uniform(0.01, 0.05, 4096).astype(np.float32)
    s_g = rng.uniform(0.01, 0.05, (4096, 32)).astype(np.float32)
    z_g = rng.integers(-8, 8, (4096, 32)).astype(np.int8)

    base = best_time(lambda: x.copy(), args.repeat)
    q_t = quantize(x, s)
    q_c = quantize(x, s_ch, 0, axis=0)
    q_g = quantize(x, s_g, z_g, "int8", axis=1, block_size=128)
    cases = [
        ("naive clip(rint(x/s)) int8", lambda: np.clip(np.rint(x / s), -128, 127).astype(np.int8)),
        ("quantize per-tensor int8", lambda: quantize(x, s)),
        ("quantize per-channel (axis 0)", lambda: quantize(x, s_ch, 0, axis=0)),
        ("quantize group 128 (axis 1)", lambda: quantize(x, s_g, z_g, "int8", axis=1, block_size=128)),
        ("dequantize per-tensor", lambda: dequantize(q_t, s)),
        ("dequantize per-channel", lambda: dequantize(q_c, s_ch, 0, axis=0)),
        ("dequantize group 128", lambda: dequantize(q_g, s_g, z_g, axis=1, block_size=128)),
    ]
    print(f"x.copy() of 16M float32: {base * 1e3:.1f} ms (baseline, ratio 1.00)")
    print(f"{'operation':34s} {'ms':>8s} {'ratio to copy':>14s}")
    for name, f in cases:
        t = best_time(f, args.repeat)
        print(f"{name:34s} {t * 1e3:8.1f} {t / base:14.2f}")


if __name__ == "__main__":
    main()
