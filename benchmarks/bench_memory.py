"""Peak extra memory of ``registry.quantize`` per format, as a multiple of the input's size.

    python benchmarks/bench_memory.py [--rows 4096] [--cols 4096] [--formats q4_0,nf4,...]

Measured with ``tracemalloc`` (NumPy reports its buffers to it): the peak of everything allocated
during the call, the returned tensor included, divided by ``w.nbytes`` of the float32 input.
Target (issue 14): at most ~2x for every format. The bounds that ``tests/test_memory.py`` enforces
on a 512 x 1024 matrix are printed beside it.
"""
import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from timing import print_env

from refquant.formats import registry


def peak_ratio(w: np.ndarray, name: str) -> float:
    """tracemalloc peak during ``registry.quantize(w, name)`` divided by ``w.nbytes``."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t = registry.quantize(w, name)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del t
    return (peak - base) / w.nbytes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--formats", default=",".join(registry.FORMAT_NAMES))
    args = ap.parse_args()
    print_env()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    try:
        from test_memory import BOUNDS
    except ImportError:
        BOUNDS = {}
    w = np.random.default_rng(0).standard_normal((args.rows, args.cols)).astype(np.float32)
    print(f"input: {args.rows} x {args.cols} float32, {w.nbytes / 2**20:.0f} MiB")
    print(f"{'format':12s} {'peak / input':>12s} {'test bound':>10s} {'seconds':>8s}")
    for name in args.formats.split(","):
        t0 = time.perf_counter()
        r = peak_ratio(w, name)
        b = BOUNDS.get(name)
        print(f"{name:12s} {r:12.2f} {'' if b is None else f'{b:.1f}':>10s} {time.perf_counter() - t0:8.1f}",
              flush=True)


if __name__ == "__main__":
    main()
