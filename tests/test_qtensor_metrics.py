"""QTensor and metrics."""
import numpy as np
import pytest

from refquant import (QTensor, cosine_similarity, max_error_lsb, mse, qrange, quantize_tensor, sqnr_db)

F32 = np.float32


def test_qtensor_is_frozen_and_copies_its_arrays():
    v = np.array([1, 2], np.int8)
    qt = QTensor(v, np.array(0.5, F32), None, qrange("int8"))
    v[0] = 100
    assert qt.values.tolist() == [1, 2]
    with pytest.raises(ValueError):
        qt.values[0] = 3  # read-only
    with pytest.raises(AttributeError):
        qt.axis = 1  # frozen dataclass: dataclasses.FrozenInstanceError is an AttributeError
    assert qt.dequantize().tolist() == [0.5, 1.0]


def test_qtensor_storage_group32_int4():
    x = np.random.default_rng(0).standard_normal((8, 64)).astype(F32)
    qt = quantize_tensor(x, "int4", symmetric=True, axis=1, block_size=32)
    assert qt.scale.shape == (8, 2) and qt.zero_point is None
    assert qt.bits_per_element() == 4 + 32 / 32  # one float32 scale per 32 codes
    qa = quantize_tensor(x, "uint4", axis=1, block_size=32)
    assert qa.bits_per_element() == 4 + 32 / 32 + 4 / 32  # plus one 4-bit zero point per group
    assert qa.storage_bits(scale_bits=16) == 512 * 4 + 16 * 16 + 16 * 4


def test_qtensor_validates():
    with pytest.raises(ValueError, match="values: expected an integer"):
        QTensor(np.ones(2, F32), np.array(1.0, F32), None, qrange("int8"))
    with pytest.raises(ValueError, match="values outside"):
        QTensor(np.array([9], np.int8), np.array(1.0, F32), None, qrange("int4"))
    with pytest.raises(ValueError, match="scale has shape"):
        QTensor(np.ones((2, 3), np.int8), np.ones(3, F32), None, qrange("int8"), axis=0)


def test_metrics_golden():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([1.0, 2.0, 3.0, 2.0])
    assert mse(x, y) == 1.0  # (4 - 2)^2 / 4
    assert sqnr_db(x, y) == pytest.approx(10 * np.log10(30 / 4))  # sum x^2 = 30, noise 4
    assert sqnr_db(x, x) == np.inf
    assert max_error_lsb(x, y, 0.5) == 4.0  # 2 / 0.5
    assert cosine_similarity(x, 2 * x) == pytest.approx(1.0)


def test_metrics_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        mse(np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="x is empty"):
        mse(np.ones(0), np.ones(0))
    with pytest.raises(ValueError, match="all-zero"):
        cosine_similarity(np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="x_hat contains NaN"):
        sqnr_db(np.ones(2), np.array([1.0, np.nan]))


def test_sqnr_grows_about_6db_per_bit():
    x = np.random.default_rng(0).uniform(-1, 1, 100000).astype(F32)
    s4 = sqnr_db(x, quantize_tensor(x, "int4").dequantize())
    s8 = sqnr_db(x, quantize_tensor(x, "int8").dequantize())
    assert 22 < s8 - s4 < 26  # 4 bits * 6.02 dB


# ---------------------------------------------------------------- bad input, closed (issue 9)
@pytest.mark.parametrize("kw, match", [
    (dict(scale=np.array([0.0, 0.1], F32)), "scale must be > 0"),
    (dict(scale=np.array([np.nan, 0.1], F32)), "scale must be finite"),
    (dict(scale=np.array([np.inf, 0.1], F32)), "scale must be finite"),
    (dict(zero_point=np.array([2**64 - 1, 0], np.uint64)), "zero_point must lie in"),  # not read as -1
    (dict(zero_point=np.array([0.5, 0.0])), "zero_point: expected an integer"),
    (dict(values=np.array([[2**64 - 1, 0]], np.uint64)), "values outside"),
])
def test_qtensor_validates_what_it_holds(kw, match):
    args = dict(values=np.zeros((1, 2), np.int8), scale=np.array([0.1, 0.2], F32),
                zero_point=np.array([0, 1], np.int8), qrange=qrange("int8"), axis=1)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        QTensor(**args)


@pytest.mark.parametrize("fn", [mse, sqnr_db, cosine_similarity])
@pytest.mark.parametrize("which", ["x", "x_hat"])
def test_metrics_refuse_infinite_inputs_naming_the_argument(fn, which):
    # sqnr_db used to return NaN for x = [inf, ...] (inf - inf in the noise sum)
    x, x_hat = np.array([1.0, 2.0]), np.array([1.0, 2.5])
    bad = dict(x=x, x_hat=x_hat)
    bad[which] = np.array([np.inf, 2.0])
    with pytest.raises(ValueError, match=rf"^{which}: "):
        fn(**bad)


def test_metrics_do_not_overflow_near_the_float64_limit():
    # (1e308 - (-1e308))^2 overflows float64; the ratio metrics are formed on x / 2^1024 instead
    x, x_hat = np.array([1e308, -1e308, 3.0]), np.array([-1e308, 1e308, 2.0])
    assert cosine_similarity(x, x_hat) == pytest.approx(-1.0)
    assert sqnr_db(x, x_hat) == pytest.approx(10 * np.log10(1 / 4))  # noise = (2x)^2 = 4 x^2
