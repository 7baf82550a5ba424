"""Calibration: golden ranges, coverage properties, per-channel consistency, bad input."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from refquant import (calibrate, fake_quantize, kl_range, minmax_range, minmax_update, moving_average_update,
                      mse_range, percentile_range, quantize_tensor, sqnr_db)
from strategies import arrays

F32 = np.float32


def test_minmax_golden_per_tensor_channel_group():
    x = np.array([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]], F32)
    lo, hi = minmax_range(x)
    assert (lo, hi) == (-6.0, 5.0)
    lo, hi = minmax_range(x, axis=0)
    assert lo.tolist() == [-2.0, -6.0] and hi.tolist() == [3.0, 5.0]
    lo, hi = minmax_range(x, axis=1, block_size=2)  # blocks {1,-2},{3} and {4,5},{-6}
    assert lo.tolist() == [[-2.0, 3.0], [4.0, -6.0]] and hi.tolist() == [[1.0, 3.0], [5.0, -6.0]]


def test_running_minmax_and_moving_average_golden():
    s = minmax_update(None, np.array([0.0, 2.0]))
    s = minmax_update(s, np.array([-1.0, 1.0]))
    assert (float(s.lo), float(s.hi), s.batches) == (-1.0, 2.0, 2)
    m = moving_average_update(None, np.array([0.0, 2.0], F32), momentum=0.5)
    m = moving_average_update(m, np.array([-2.0, 4.0], F32), momentum=0.5)
    # lo = 0 + 0.5 (-2 - 0) = -1; hi = 2 + 0.5 (4 - 2) = 3
    assert (float(m.lo), float(m.hi)) == (-1.0, 3.0)


def test_percentile_golden():
    x = np.arange(101, dtype=F32)  # 0..100: the p-th percentile is p (linear interpolation)
    lo, hi = percentile_range(x, 99.0)
    assert (float(lo), float(hi)) == (1.0, 99.0)


def test_mse_clips_an_outlier_and_never_loses_to_minmax():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4000).astype(F32)
    x[0] = 40.0  # one outlier
    s_mm, z_mm = calibrate(x, "int4", "minmax", symmetric=True)
    s_mse, z_mse = calibrate(x, "int4", "mse", symmetric=True)
    assert s_mse < s_mm
    assert sqnr_db(x, fake_quantize(x, s_mse, z_mse, "int4")) >= sqnr_db(x, fake_quantize(x, s_mm, z_mm, "int4"))


def test_kl_clips_heavy_tail_of_activations():
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_t(3, 20000)).astype(F32)  # ReLU-like, heavy tail
    lo, hi = kl_range(x, "uint8")
    assert lo == 0.0 and 0 < hi < x.max()


def test_kl_on_all_zero_data():
    lo, hi = kl_range(np.zeros(10, F32))
    assert (float(lo), float(hi)) == (0.0, 0.0)


@given(arrays(), st.sampled_from(["minmax", "percentile", "mse"]))
def test_minmax_ranges_cover_the_data_and_others_stay_inside(x, method):
    fn = {"minmax": minmax_range, "percentile": percentile_range, "mse": mse_range}[method]
    lo, hi = fn(x)
    if method == "minmax":
        assert lo == x.min() and hi == x.max()
    else:  # clipping methods never widen the range
        assert x.min() <= lo <= hi <= x.max() or np.isclose(lo, hi)


@given(hnp.arrays(np.float32, (3, 5), elements=st.floats(-100, 100, width=32)),
       st.sampled_from(["minmax", "percentile", "mse", "kl"]))
def test_per_channel_equals_per_tensor_per_slice(x, method):
    s, z = calibrate(x, "int8", method, axis=0, n_bins=64) if method == "kl" else calibrate(x, "int8", method, axis=0)
    for c in range(3):
        kw = dict(n_bins=64) if method == "kl" else {}
        sc, zc = calibrate(x[c], "int8", method, **kw)
        assert s[c] == sc and z[c] == zc


def test_calibrated_minmax_quantization_covers_data():
    x = np.random.default_rng(1).standard_normal((8, 64)).astype(F32)
    qt = quantize_tensor(x, "int8", axis=0)
    err = np.abs(qt.dequantize() - x)
    assert np.all(err <= qt.scale[:, None] / 2 * (1 + 1e-5))


@pytest.mark.parametrize("call, match", [
    (lambda: minmax_range(np.zeros(0, F32)), "x is empty"),
    (lambda: minmax_range(np.array([1.0, np.nan])), "x contains NaN"),
    (lambda: minmax_range(np.array([1.0, np.inf])), "x contains Inf"),
    (lambda: percentile_range(np.ones(3), 30), "percentile must be in"),
    (lambda: mse_range(np.ones(3), n_grid=0), "n_grid must be"),
    (lambda: kl_range(np.ones(3), n_bins=1), "n_bins must be"),
    (lambda: moving_average_update(None, np.ones(3), momentum=0), "momentum must be in"),
    (lambda: calibrate(np.ones(3), calibration="entropy"), "calibration: unknown"),
    (lambda: minmax_update(minmax_update(None, np.ones((2, 3)), axis=0), np.ones((2, 3)), axis=1), "state:"),
    (lambda: minmax_range(np.ones((2, 3)), axis=2), "axis=2 is out of range"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_calibration_does_not_mutate_input():
    x = np.random.default_rng(2).standard_normal((4, 9)).astype(F32)
    c = x.copy()
    for m in ["minmax", "percentile", "mse", "kl"]:
        calibrate(x, "int8", m, axis=0, block_size=4)
    assert np.array_equal(x, c)


# ---------------------------------------------------------------- bad input, closed (issue 9)
@pytest.mark.parametrize("call, match", [
    (lambda x: mse_range(x, n_grid=10**30), "n_grid must be in"),  # used to loop for ever
    (lambda x: mse_range(x, n_grid=True), "n_grid must be an int"),
    (lambda x: kl_range(x, n_bins=2**64 - 1), "n_bins must be in"),  # used to fail inside np.histogram
    (lambda x: percentile_range(x, percentile="99"), "percentile must be a real number"),
    (lambda x: moving_average_update(None, x, momentum=None), "momentum must be a real number"),
    (lambda x: calibrate(x, calibration=["minmax"]), "calibration: unknown"),
    (lambda x: calibrate(x.astype(np.float64) * 1e300), r"x \(its range\) has values beyond the float32 range"),
    (lambda x: minmax_range(x, axis=0, block_size=10**30), "block_size must be <= 2"),
    (lambda x: minmax_update(object(), x), "state: expected None or a MinMaxState"),
])
def test_bad_parameters_raise_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call(np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8))


def test_one_partial_block_equals_a_block_of_the_whole_axis():
    # block_size beyond the axis: one partial block; no NaN padding to block_size is allocated
    x = np.linspace(-1, 1, 24, dtype=np.float32).reshape(4, 6)
    for f in (minmax_range, percentile_range):
        a, b = f(x, axis=1, block_size=20338516), f(x, axis=1, block_size=6)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.array_equal(mse_range(x, axis=1, block_size=2**31, n_grid=5)[1], mse_range(x, axis=1, block_size=6, n_grid=5)[1])
