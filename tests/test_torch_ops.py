"""refquant.torch_ops: goldens (hand-computed, and one transcribed from FBGEMM's comment), bad input,
and — when PyTorch happens to be installed — differential tests against it. PyTorch is not a dependency."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from refquant import torch_ops as T

F32 = np.float32


def test_fbgemm_golden_reciprocal_rounds_up():
    # FBGEMM QuantUtils.h: scale 0.00214854861, x 0.273939937: x * (1/s) = 127.5 -> 128 (x / s -> 127)
    y = T.fake_quantize_per_tensor_affine(np.array([0.273939937], F32), 0.00214854861, 0, 0, 255)
    assert y[0] == F32(128) * F32(0.00214854861)


def test_fake_quantize_per_tensor_golden():
    # scale 0.5, zero point 3, range [0, 7]: x / 0.5 = [-2, 0.5 -> 0, 5, 20]; + 3 -> [1, 3, 8 -> 7, 23 -> 7]
    y = T.fake_quantize_per_tensor_affine(np.array([-1.0, 0.25, 2.5, 10.0], F32), 0.5, 3, 0, 7)
    assert y.tolist() == [-1.0, 0.0, 2.0, 2.0]  # (q - 3) * 0.5


def test_minmax_qparams_golden():
    x = np.array([-1.0, 3.0], F32)
    # quint8 affine: scale = 4/255, zero point = 0 - round(-1 / (4/255)) = round(63.75) = 64
    s, z = T.minmax_qparams(x)
    assert s == F32(4) / F32(255) and z == 64
    # qint8 symmetric: scale = 3 / 127.5, zero point 0
    s, z = T.minmax_qparams(x, dtype="qint8", qscheme="per_tensor_symmetric")
    assert s == F32(3) / F32(127.5) and z == 0
    # quint8 symmetric: zero point 128
    s, z = T.minmax_qparams(x, qscheme="per_tensor_symmetric")
    assert z == 128
    # reduce_range quint8 affine: [0, 127]: scale 4/127, zero point round(31.75) = 32
    s, z = T.minmax_qparams(x, reduce_range=True)
    assert s == F32(4) / F32(127) and z == 32
    # per channel along axis 1
    s, z = T.minmax_qparams(np.array([[-1.0, 0.0], [1.0, 2.0]], F32), dtype="qint8",
                            qscheme="per_channel_symmetric", axis=1)
    assert s.tolist() == [F32(1) / F32(127.5), F32(2) / F32(127.5)] and z.tolist() == [0, 0]


def test_all_zero_observer_uses_eps_scale():
    s, z = T.minmax_qparams(np.zeros(4, F32))
    assert s == np.finfo(F32).eps and z == 0


@pytest.mark.parametrize("call, match", [
    (lambda: T.fake_quantize_per_tensor_affine(np.ones(2, F32), 0.1, 300, 0, 255), "zero_point must be"),
    (lambda: T.fake_quantize_per_tensor_affine(np.ones(2, F32), 0.1, 0, 10, 5), "quant_min .* > quant_max"),
    (lambda: T.fake_quantize_per_tensor_affine(np.ones(2, F32), 0.0, 0, 0, 255), "scale must be > 0"),
    (lambda: T.fake_quantize_per_channel_affine(np.ones((2, 3), F32), np.ones(2, F32), np.zeros(2, np.int32), 1, 0, 255), "scale has shape"),
    (lambda: T.minmax_qparams(np.ones(2), dtype="qint4"), "dtype: expected"),
    (lambda: T.minmax_qparams(np.ones(2), qscheme="per_block"), "qscheme: unknown"),
    (lambda: T.minmax_qparams(np.ones(2), qscheme="per_tensor_symmetric", reduce_range=True), "reduce_range"),
    (lambda: T.minmax_qparams(np.zeros(0)), "x is empty"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- differential, only where torch is installed
torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torch deprecation notices


@given(hnp.arrays(F32, (4, 9), elements=st.floats(-50, 50, width=32)), st.sampled_from(["quint8", "qint8"]),
       st.sampled_from(T.QSCHEMES), st.booleans())
def test_minmax_qparams_match_torch_observers(x, dtype, qscheme, reduce_range):
    if reduce_range and dtype == "quint8" and qscheme.endswith("symmetric"):
        return
    tq = getattr(torch, qscheme)
    tdt = getattr(torch, dtype)
    if qscheme.startswith("per_channel"):
        ob = torch.ao.quantization.PerChannelMinMaxObserver(ch_axis=1, dtype=tdt, qscheme=tq, reduce_range=reduce_range)
    else:
        ob = torch.ao.quantization.MinMaxObserver(dtype=tdt, qscheme=tq, reduce_range=reduce_range)
    ob(torch.from_numpy(x))
    ts, tz = ob.calculate_qparams()
    s, z = T.minmax_qparams(x, dtype=dtype, qscheme=qscheme, axis=1, reduce_range=reduce_range)
    assert np.array_equal(ts.numpy().reshape(s.shape), s) and np.array_equal(tz.numpy().reshape(z.shape), z)


@given(hnp.arrays(F32, (3, 7), elements=st.floats(-100, 100, width=32)), st.floats(2.0**-10, 1, width=32),
       st.integers(0, 255), st.data())
def test_fake_quantize_matches_torch(x, s, z, data):
    got = T.fake_quantize_per_tensor_affine(x, float(s), z, 0, 255)
    ref = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), float(s), z, 0, 255).numpy()
    assert np.array_equal(got, ref)
    sc = data.draw(hnp.arrays(F32, (7,), elements=st.floats(2.0**-10, 1, width=32)))
    zc = data.draw(hnp.arrays(np.int32, (7,), elements=st.integers(-128, 127)))
    got = T.fake_quantize_per_channel_affine(x, sc, zc, 1, -128, 127)
    ref = torch.fake_quantize_per_channel_affine(torch.from_numpy(x), torch.from_numpy(sc), torch.from_numpy(zc),
                                                 1, -128, 127).numpy()
    assert np.array_equal(got, ref)
