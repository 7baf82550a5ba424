"""1-D k-means on heavy-tailed weights: time and SSE excess over the exact optimum, all in one run.

    python benchmarks/bench_kmeans.py [--n 1000000] [--k 16 256]

Data: n Student-t(4) samples (float32, seed 0). For each k, every method's codebook is scored by
its SSE relative to refquant's exact DP optimum (``algorithm="optimal"``, computed in the same run;
at n = 1M and k = 256 that takes a few minutes and ~1 GB for the split-point table), and its time
as a ratio to scikit-learn's ``KMeans(n_init=1)`` with its default k-means++ initialisation.
Target (issue 4): the default method at least 20x faster than scikit-learn and within 0.02 % of
the optimum.
"""
import argparse
import time

import numpy as np

from refquant.formats.kmeans import kmeans_codebook, kmeans_sse


def timed(f):
    t = time.perf_counter()
    r = f()
    return r, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, nargs="+", default=[16, 256])
    args = ap.parse_args()
    x = np.random.default_rng(0).standard_t(4, args.n).astype(np.float32)
    methods = [
        ("sklearn k-means++ (baseline)", dict(algorithm="sklearn", init="k-means++")),
        ("sklearn linear init", dict(algorithm="sklearn", init="linear")),
        ("sklearn density init", dict(algorithm="sklearn", init="density")),
        ("lloyd (sorted, linear init)", dict(algorithm="lloyd")),
        ("auto (default)", dict()),
        ("optimal (exact DP)", dict(algorithm="optimal")),
    ]
    print(f"n = {args.n:,} Student-t(4) float32 values")
    for k in args.k:
        results = {}
        for name, kw in methods:
            c, t = timed(lambda: kmeans_codebook(x, k, **kw))
            results[name] = (t, kmeans_sse(x, c), c.size)
        base_t = results[methods[0][0]][0]
        opt_sse = results["optimal (exact DP)"][1]
        print(f"\nk = {k}")
        print(f"{'method':32s} {'time s':>9s} {'speed-up vs sklearn':>20s} {'SSE excess %':>13s} {'levels':>7s}")
        for name, (t, sse, size) in results.items():
            print(f"{name:32s} {t:9.3f} {base_t / t:20.1f} {100 * (sse / opt_sse - 1):13.5f} {size:7d}")


if __name__ == "__main__":
    main()
