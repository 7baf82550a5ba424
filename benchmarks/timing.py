"""Timing helper shared by every ``benchmarks/bench_*.py``: interleaved rounds, median ratios, the environment.

On a shared machine a case timed minutes after its baseline measures the neighbours' load, not the
code: ratios swung 3x between runs when the baseline was timed once and each case best-of-N in
sequence. Here every round times the baseline and then each case, back to back, and a case's ratio
is taken against *the same round's* baseline; the report is the median over rounds with [min, max],
so a disturbed round shows up as a wide interval instead of a wrong number.

API (four names)::

    from timing import compare, limit_blas, print_env, print_rows

    limit_blas(1)                                 # every BLAS pool to one thread (None / 0: the default)
    print_env()                                   # BLAS library / kernel / threads, nproc, CPU, load
    rows = compare(lambda: x.copy(), {"quantize": lambda: quantize(x, s)}, rounds=7)
    print_rows(rows, baseline_name="x.copy()")    # name, median ms, ratio median [min, max]

``compare`` returns one :class:`Row` per case (and one for the baseline, ratio 1) so a script can
also print its own table. Every ``bench_*.py`` uses it (the old best-of-N helper is gone).
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Mapping


@dataclass(frozen=True)
class Row:
    """One case's timings from :func:`compare`.

    ``seconds`` holds the case's wall time per round; ``ratios`` the case's time divided by the
    baseline's time *in the same round*. ``ms`` is the median time in milliseconds and ``ratio``,
    ``ratio_min``, ``ratio_max`` the median, minimum and maximum of ``ratios``.
    """

    name: str
    seconds: tuple[float, ...]
    ratios: tuple[float, ...]

    @property
    def ms(self) -> float:
        return statistics.median(self.seconds) * 1e3

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def ratio_min(self) -> float:
        return min(self.ratios)

    @property
    def ratio_max(self) -> float:
        return max(self.ratios)

    def ratio_text(self) -> str:
        """``'1.23 [1.10, 1.40]'``: median [min, max] of the per-round ratios."""
        return f"{self.ratio:.2f} [{self.ratio_min:.2f}, {self.ratio_max:.2f}]"


def _time(f: Callable[[], object]) -> float:
    s = time.perf_counter()
    f()
    return time.perf_counter() - s


def compare(baseline: Callable[[], object], cases: Mapping[str, Callable[[], object]],
            rounds: int = 7, warmup: int = 1, baseline_name: str = "baseline") -> list[Row]:
    """Time ``baseline`` and each case interleaved, round by round.

    Round r runs ``baseline()``, then every case in order, each once; ``rounds`` such rounds follow
    ``warmup`` untimed ones. Returns ``[Row(baseline_name, ...), Row(case, ...), ...]`` in the order
    of ``cases``; each row's ratios are against the baseline of the same round.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    for _ in range(warmup):
        baseline()
        for f in cases.values():
            f()
    base: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        base.append(_time(baseline))
        for name, f in cases.items():
            times[name].append(_time(f))
    rows = [Row(baseline_name, tuple(base), tuple(1.0 for _ in base))]
    for name, ts in times.items():
        rows.append(Row(name, tuple(ts), tuple(t / b for t, b in zip(ts, base))))
    return rows


def print_rows(rows: list[Row], baseline_name: str | None = None, width: int = 34) -> None:
    """Print ``rows`` as a table: name, median ms, ratio to baseline median [min, max]."""
    label = f"ratio to {baseline_name or rows[0].name}, median [min, max]"
    print(f"{'case':{width}s} {'ms':>9s}  {label}")
    for r in rows:
        print(f"{r.name:{width}s} {r.ms:9.2f}  {r.ratio_text()}")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env_lines() -> list[str]:
    """The environment a benchmark ran in, one line each: machine, load, and every BLAS / OpenMP pool.

    The thread pools come from ``threadpoolctl.threadpool_info()`` (library, version, kernel
    architecture / core type, threads); threadpoolctl is a benchmark-only dependency (scikit-learn
    depends on it), reported as missing rather than required.
    """
    import numpy as np

    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?", "?", "?")
    lines = [
        f"machine: {_cpu_model()}; nproc {os.cpu_count()}; "
        f"load average {' '.join(f'{v:.2f}' if isinstance(v, float) else v for v in load)}",
        f"python {platform.python_version()}, numpy {np.__version__}",
    ]
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
           if k in os.environ]
    if env:
        lines.append("env: " + " ".join(env))
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        lines.append("thread pools: threadpoolctl not installed (pip install threadpoolctl)")
        return lines
    pools = threadpool_info()
    if not pools:
        lines.append("thread pools: none found")
    for p in pools:
        kernel = p.get("architecture") or p.get("corecore_type") or p.get("core_type") or "?"
        lines.append(f"{p.get('user_api', '?')}: {p.get('internal_api', '?')} {p.get('version', '?')}, "
                     f"kernel {kernel}, threads {p.get('num_threads', '?')} "
                     f"({os.path.basename(p.get('filepath', '?'))})")
    return lines


def limit_blas(threads: int | None) -> None:
    """Set every BLAS pool of this process to ``threads`` threads (threadpoolctl); None or 0 leaves the
    library default. The benchmarks' ``--threads`` flag calls it before :func:`print_env`, so the
    printed pools are the ones that ran."""
    if threads is None or threads == 0:
        return
    if threads < 0:
        raise SystemExit(f"--threads: expected a number of threads >= 0, got {threads}")
    from threadpoolctl import threadpool_limits
    threadpool_limits(threads, user_api="blas")


def print_env() -> None:
    """Print :func:`env_lines` (call it first in every benchmark script)."""
    for line in env_lines():
        print(line)
