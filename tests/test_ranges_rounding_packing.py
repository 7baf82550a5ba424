"""Integer ranges, rounding rules, sub-byte packing and size accounting."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from refquant import bits_per_element, pack, qrange, round_array, storage_bits, unpack
from refquant.core.packing import pack_ref
from refquant.core.ranges import QRange
from refquant.core.rounding import round_scalar_ref
from strategies import qranges


@pytest.mark.parametrize("name, lo, hi, dtype", [
    ("int2", -2, 1, np.int8), ("uint2", 0, 3, np.uint8), ("int4", -8, 7, np.int8), ("uint4", 0, 15, np.uint8),
    ("int8", -128, 127, np.int8), ("uint8", 0, 255, np.uint8), ("int16", -32768, 32767, np.int16),
    ("uint16", 0, 65535, np.uint16), ("int3", -4, 3, np.int8), ("uint12", 0, 4095, np.uint16),
    ("int8_narrow", -127, 127, np.int8), ("uint8_narrow", 1, 255, np.uint8), ("int4_narrow", -7, 7, np.int8),
    ("int32", -2**31, 2**31 - 1, np.int32), ("uint32", 0, 2**32 - 1, np.uint32),
    ("int32_narrow", -(2**31 - 1), 2**31 - 1, np.int32),
])
def test_named_ranges(name, lo, hi, dtype):
    r = qrange(name)
    assert (r.qmin, r.qmax, r.dtype) == (lo, hi, np.dtype(dtype))
    assert r.levels == hi - lo + 1


def test_custom_limits_as_pytorch_quant_min_max():
    r = qrange((0, 127))  # quint8 with reduce_range
    assert (r.qmin, r.qmax, r.dtype) == (0, 127, np.dtype(np.uint8))
    r = qrange((-64, 63))
    assert (r.qmin, r.qmax, r.signed) == (-64, 63, True)


def test_wide_custom_ranges_up_to_32_bits():
    # the integer GPT's residual stream: ±(2^30 − 1) needs 31 bits (2^30 − 1 < 2^30 = 2^(31−1)), stored in int32
    r = QRange(31, limits=(-(2**30 - 1), 2**30 - 1))
    assert (r.qmin, r.qmax, r.signed, r.dtype, r.levels) == (-(2**30 - 1), 2**30 - 1, True, np.dtype(np.int32), 2**31 - 1)
    assert r.name == "int31[-1073741823,1073741823]" and qrange(r) is r
    # 17 bits: 2^16 = 65536 needs one more bit than uint16; stored in uint32
    r = QRange(17, signed=False, limits=(0, 2**16))
    assert (r.qmax, r.dtype) == (2**16, np.dtype(np.uint32))
    assert QRange(24, signed=False).qmax == 2**24 - 1 and QRange(24).dtype == np.int32
    with pytest.raises(ValueError, match="exceed the 31-bit type"):
        QRange(31, limits=(0, 2**30))
    # (qmin, qmax) pairs (PyTorch's quant_min / quant_max) stay within 16 bits: the torch mirrors rely on it
    with pytest.raises(ValueError, match=r"does not fit in 16 bits \(a wider custom range is a QRange"):
        qrange((0, 2**16))


@pytest.mark.parametrize("bad, match", [
    (lambda: QRange(1), "bits must be in"), (lambda: QRange(33), "bits must be in"),
    (lambda: qrange("int1"), "bits must be in"), (lambda: qrange("fp8"), "qrange: unknown"),
    (lambda: qrange((5, 3)), "qmin > qmax"), (lambda: QRange(8, True, False, (3, -3)), "qmin > qmax"),
    (lambda: QRange(4, True, False, (-9, 0)), "exceed"), (lambda: qrange((0, 70000)), "does not fit in 16 bits"),
    (lambda: QRange(32, limits=(-2**31 - 1, 0)), "exceed"), (lambda: qrange("int33"), "bits must be in"),
    (lambda: qrange("uint24"), r"bits must be in \[2, 16\] or 32"),  # by name: 2-16 and 32 only
    (lambda: QRange(8.0), "bits must be an int"),
])
def test_bad_ranges(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


@given(hnp.arrays(np.float64, hnp.array_shapes(max_dims=2), elements=st.floats(-1e6, 1e6) | st.sampled_from(
    [0.5, -0.5, 1.5, -2.5, 0.49999999999999994, -0.49999999999999994])),
    st.sampled_from(["half_even", "half_away", "half_up", "floor"]))
def test_round_array_equals_exact_scalar_rule(v, mode):
    out = round_array(v, mode)
    assert out.tolist() == np.array([round_scalar_ref(t, mode) for t in v.ravel()], dtype=float).reshape(v.shape).tolist()


def test_round_array_infinities_pass_through():
    v = np.array([np.inf, -np.inf])
    for mode in ["half_even", "half_away", "half_up", "floor"]:
        assert round_array(v, mode).tolist() == [np.inf, -np.inf]


# ---------------------------------------------------------------- packing
def test_int4_golden_nibble_order():
    # ONNX: element 0 in the low nibble. [1, -1, 7, -8] -> nibbles 0x1, 0xF, 0x7, 0x8 -> bytes 0xF1, 0x87
    assert pack(np.array([1, -1, 7, -8], np.int8), "int4").tolist() == [0xF1, 0x87]
    # odd count: the last high nibble is zero padding
    assert pack(np.array([3, 4, 5], np.uint8), "uint4").tolist() == [0x43, 0x05]


def test_int2_golden():
    # [1, -2, -1, 0] -> 2-bit codes 01, 10, 11, 00 at bits 0-1, 2-3, 4-5, 6-7: 0b00_11_10_01 = 0x39
    assert pack(np.array([1, -2, -1, 0], np.int8), "int2").tolist() == [0x39]
    assert unpack(np.array([0x39], np.uint8), "int2", 4).tolist() == [1, -2, -1, 0]


def test_int3_spans_bytes():
    # [7, 0, 5] in 3 bits: bits 0-2 = 111, 3-5 = 000, 6-8 = 101 -> byte0 = 0b01_000_111 = 0x47, byte1 = 0b1
    assert pack(np.array([7, 0, 5], np.uint8), "uint3").tolist() == [0x47, 0x01]


@given(st.data(), qranges)
def test_pack_unpack_round_trip_and_ref_twin(data, r):
    n = data.draw(st.integers(0, 40))
    q = data.draw(hnp.arrays(r.dtype, n, elements=st.integers(r.qmin, r.qmax)))
    p = pack(q, r)
    assert p.dtype == np.uint8 and p.size == -(-n * r.bits // 8)
    assert np.array_equal(p, pack_ref(q, r))
    assert np.array_equal(unpack(p, r, n), q)


def test_pack_int32_golden():
    # -2 in 32-bit two's complement is 0xFFFFFFFE, little-endian bytes FE FF FF FF; 2^31 − 1 is FF FF FF 7F
    r = qrange("int32")
    p = pack(np.array([-2, 2**31 - 1], np.int32), r)
    assert p.tolist() == [0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]
    assert unpack(p, r, 2).tolist() == [-2, 2**31 - 1]


def test_pack_rejects_out_of_range_and_floats():
    with pytest.raises(ValueError, match="outside int4"):
        pack(np.array([8], np.int8), "int4")
    with pytest.raises(ValueError, match="q: expected an integer"):
        pack(np.array([1.0]), "int4")
    with pytest.raises(ValueError, match="count=5 codes"):
        unpack(np.zeros(2, np.uint8), "int4", 5)


def test_size_accounting():
    # int4, group 32, one float32 scale per group: 4 + 32/32 = 5 bits per element
    assert bits_per_element(4096, "int4", n_scales=128) == 5.0
    # uint8 per-tensor with a scale and a zero point: 8 * 100 + 32 + 8 bits
    assert storage_bits(100, "uint8", n_scales=1, n_zero_points=1) == 840
    with pytest.raises(ValueError, match="n_elements must be > 0"):
        bits_per_element(0, "int8")


# ---------------------------------------------------------------- bad input, closed (issue 9)
@pytest.mark.parametrize("call, match", [
    (lambda: qrange("int17"), r"qrange: 'int17': bits must be in \[2, 16\]"),
    (lambda: qrange((5, 3)), "qrange: qmin > qmax"),
    (lambda: QRange(8, limits="int8"), "limits must be None or a pair of ints"),
    (lambda: QRange(8, signed="yes"), "signed must be a bool"),
    (lambda: pack(np.array([2**64 - 1], np.uint64), "int8"), "outside int8"),  # not wrapped to -1
    (lambda: unpack(np.zeros(4, np.uint8), "int3", 2.0), "count must be an int"),
    (lambda: unpack(np.zeros(4, np.uint8), "int3", 2**64 - 1), "need .* bytes of packed"),
    (lambda: storage_bits(64.5, "int4"), "n_elements must be an int"),
    (lambda: storage_bits(64, "int4", scale_bits="32"), "scale_bits must be an int"),
    (lambda: round_array(np.ones(3, np.float32), "bogus"), "mode: unknown rounding mode"),
    (lambda: round_array(np.ones(3, np.complex64)), "v: expected a real floating-point array"),
    (lambda: round_scalar_ref(float("nan")), "v must be a number"),
    (lambda: round_scalar_ref(2.7, "bogus"), "mode: unknown rounding mode"),  # used to return 3
])
def test_bad_input_raises_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
