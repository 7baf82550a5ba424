"""Timing helper shared by the benchmark scripts: the best of n runs (the least disturbed one)."""
import time


def best_time(f, repeat: int) -> float:
    """Minimum wall time of ``repeat`` calls of ``f()``, in seconds."""
    t = float("inf")
    for _ in range(repeat):
        s = time.perf_counter()
        f()
        t = min(t, time.perf_counter() - s)
    return t
