"""Exact int8 GEMM vs float32 matmul, and the integer-only GPT vs its float forward, in one run.

    python benchmarks/bench_intgemm.py [--rounds 7] [--batch 64] [--threads 1]

Part 1, for each (M, K, N): float32 ``A @ B`` is the baseline; the cases are ``int_matmul`` on raw
int8 operands per call (b converted K-slice by K-slice into a reused float32 buffer, no prepacking),
``int_matmul`` with b prepacked once (``prepack``, as FBGEMM / oneDNN do at load time), and NumPy's
own int32 matmul on the smaller shapes. Every int8 result is first asserted equal to an exact
float64 BLAS product (exact: every partial sum is an integer below 2^53), for int8 x int8 and for
uint8 x int8 with per-row / per-column zero points. Target (issue 13 item 5): per call <= 1.2x.

Part 2: the tiny GPT's float forward (``refquant.models.gpt.forward``, the shipped checkpoint) is the
baseline; the case is the integer-only forward (``refquant.ptq.intgpt.int_forward``) on the same
``--batch`` windows of 64 tokens. Target (issue 14 item 5): <= 3x.

Timing: ``timing.compare`` interleaves the baseline with each case round by round; each ratio is the
median over rounds against the same round's baseline, with [min, max]. BLAS runs on one thread unless
``--threads N`` says otherwise (0: the library default), for the baseline and the cases alike; ``print_env``
says what ran.
"""
import argparse

import numpy as np

from timing import compare, limit_blas, print_env

from refquant.integer.gemm import int_matmul, prepack

SHAPES = [(1, 4096, 4096), (64, 768, 768), (512, 512, 512), (128, 4096, 4096)]


def bench_gemm(rounds):
    rng = np.random.default_rng(0)
    print(f"\nint GEMM vs float32 matmul (ratio median [min, max] over {rounds} interleaved rounds)")
    print(f"{'(M, K, N)':>20s} {'float32 ms':>11s} {'per call':>19s} {'prepacked':>19s} {'numpy int32':>19s}  exact")
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
        assert np.array_equal(int_matmul(au, b, za, zb), exact_u)
        assert np.array_equal(int_matmul(au, pb, za, zb), exact_u)
        cases = {"per call": lambda: int_matmul(a, b), "prepacked": lambda: int_matmul(a, pb)}
        small = M * K * N <= 64 * 768 * 768
        if small:
            ai, bi = a.astype(np.int32), b.astype(np.int32)
            cases["numpy int32"] = lambda: ai @ bi
        rows = compare(lambda: af @ bf, cases, rounds=rounds)
        r = {row.name: row for row in rows}
        n = r["numpy int32"].ratio_text() if small else "(skipped)"
        print(f"{str((M, K, N)):>20s} {r['baseline'].ms:11.3f} {r['per call'].ratio_text():>19s} "
              f"{r['prepacked'].ratio_text():>19s} {n:>19s}  yes")


def bench_gpt(rounds, batch):
    from refquant.io.checkpoint import load_checkpoint
    from refquant.models.corpus import train_val_split
    from refquant.models.gpt import forward
    from refquant.ptq.intgpt import build_int_gpt, int_forward

    p, cfg, meta = load_checkpoint()
    _, val = train_val_split(meta["seed"], n_train=0)
    T = cfg.context_length
    m = build_int_gpt(p, cfg, [val[:4 * T].reshape(4, T).astype(np.int64)])
    x = val[:batch * T].reshape(batch, T).astype(np.int64)
    rows = compare(lambda: forward(p, x, cfg), {"int_forward": lambda: int_forward(m, x)}, rounds=rounds)
    print(f"\ninteger-only GPT vs float forward, {batch} x {T} tokens (ratio median [min, max] over {rounds} rounds)")
    print(f"float forward {rows[0].ms:.1f} ms; int_forward {rows[1].ms:.1f} ms; ratio {rows[1].ratio_text()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1; 0: the library default)")
    args = ap.parse_args()
    limit_blas(args.threads)
    print_env()
    bench_gemm(args.rounds)
    bench_gpt(args.rounds, args.batch)


if __name__ == "__main__":
    main()
