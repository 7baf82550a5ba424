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
