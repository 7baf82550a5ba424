"""benchmarks/timing.py, the helper behind every published benchmark ratio: the interleaving order and the
per-round ratios, on a fake clock whose readings are set by hand."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import timing  # noqa: E402


class FakeClock:
    """``perf_counter`` that only moves when a timed function says so; every call is logged."""

    def __init__(self):
        self.now, self.log = 0.0, []

    def perf_counter(self):
        return self.now

    def fn(self, name, durations):
        it = iter(durations)

        def run():
            self.log.append(name)
            self.now += next(it)
        return run


def test_compare_interleaves_and_divides_by_the_same_rounds_baseline(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", clock.perf_counter)
    base = clock.fn("base", [9.0, 2.0, 4.0, 1.0])  # the first call is the warm-up
    a = clock.fn("a", [9.0, 1.0, 6.0, 2.5])
    b = clock.fn("b", [9.0, 2.0, 2.0, 2.0])
    rows = timing.compare(base, {"a": a, "b": b}, rounds=3, warmup=1, baseline_name="copy")
    assert clock.log == ["base", "a", "b"] * 4  # warm-up, then three rounds, each baseline first
    assert [r.name for r in rows] == ["copy", "a", "b"]
    assert rows[0].seconds == (2.0, 4.0, 1.0) and rows[0].ratios == (1.0, 1.0, 1.0)
    # a: 1/2, 6/4, 2.5/1 -> ratios 0.5, 1.5, 2.5; b: 2/2, 2/4, 2/1 -> 1, 0.5, 2
    assert rows[1].ratios == (0.5, 1.5, 2.5) and rows[1].ratio == 1.5
    assert (rows[1].ratio_min, rows[1].ratio_max) == (0.5, 2.5)
    assert rows[2].ratios == (1.0, 0.5, 2.0) and rows[2].ratio == 1.0
    assert rows[1].ms == 2500.0  # median of 1, 6, 2.5 seconds
    assert rows[1].ratio_text() == "1.50 [0.50, 2.50]"


def test_compare_refuses_no_rounds():
    with pytest.raises(ValueError, match="rounds"):
        timing.compare(lambda: None, {}, rounds=0)


def test_limit_blas_refuses_negative_threads_and_zero_changes_nothing():
    timing.limit_blas(0)
    timing.limit_blas(None)
    with pytest.raises(SystemExit, match="--threads"):
        timing.limit_blas(-1)
