"""Exact int8 GEMM vs float32 matmul of the same shape, timed in the same run, bit-exactness asserted.

    python benchmarks/bench_intgemm.py [--repeat 15]

For each (M, K, N): float32 ``A @ B`` (the baseline, ratio 1.00), ``int_matmul`` converting both
int8 operands per call, ``int_matmul`` with weights prepacked once (``kernels.prepack``, as FBGEMM
and oneDNN do at model-load time), and NumPy's own int32 matmul where it finishes in reasonable
time. Times are the best of ``--repeat`` runs. Every int8 result is asserted equal to an exact
float64 BLAS product (exact: every partial sum is an integer below 2^53), for int8 x int8 and for
uint8 x int8 with zero points. Target (issue 5): at most 1.2x the float32 matmul.
"""
import argparse

import numpy as np

from timing import best_time

from refquant.integer.gemm import int_matmul, prepack

SHAPES = [(1, 4096, 4096), (64, 768, 768), (512, 512, 512), (128, 4096, 4096)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'(M, K, N)':>20s} {'float32 ms':>11s} {'per-call':>9s} {'prepacked':>10s} {'numpy int32':>12s}   exact")
    for M, K, N in SHAPES:
        a = rng.integers(-128, 128, (M, K)).astype(np.int8)
        b = rng.integers(-128, 128, (K, N)).astype(np.int8)
        af, bf = a.astype(np.float32), b.astype(np.float32)
        pb = prepack(b)
        # exactness first: int8 x int8, and uint8 x int8 with a per-row / per-column zero point
        exact = (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
        assert np.array_equal(int_matmul(a, b), exact) and np.array_equal(int_matmul(a, pb), exact)
        au = rng.integers(0, 256, (M, K)).astype(np.uint8)
        za, zb = rng.integers(0, 256, M).astype(np.uint8), rng.integers(-128, 128, N).astype(np.int8)
        exact_u = ((au.astype(np.float64) - za[:, None]) @ (b.astype(np.float64) - zb[None, :])).astype(np.int64)
        assert np.array_equal(int_matmul(au, pb, za, zb), exact_u)
        t_f = best_time(lambda: af @ bf, args.repeat)
        t_c = best_time(lambda: int_matmul(a, b), args.repeat)
        t_p = best_time(lambda: int_matmul(a, pb), args.repeat)
        if M * K * N <= 64 * 768 * 768:
            ai, bi = a.astype(np.int32), b.astype(np.int32)
            t_n = f"{best_time(lambda: ai @ bi, 2) / t_f:11.1f}x"
        else:
            t_n = f"{'(skipped)':>12s}"
        print(f"{str((M, K, N)):>20s} {t_f * 1e3:11.3f} {t_c / t_f:8.2f}x {t_p / t_f:9.2f}x {t_n}   yes")


if __name__ == "__main__":
    main()
