"""refquant.onnx_ops: hand-computed goldens, bad input, and bit-exactness against onnx.reference."""
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st
from hypothesis.extra import numpy as hnp

from refquant import dequantize, onnx_ops as O

F32 = np.float32


def test_quantize_linear_golden_uint8_default():
    # no zero point -> uint8, zero point 0: [0, 2, 3, 1000, -254] / 2 = [0, 1, 1.5 -> 2, 500 -> 255, -127 -> 0]
    y = O.quantize_linear(np.array([0, 2, 3, 1000, -254], F32), np.array(2.0, F32))
    assert y.dtype == np.uint8 and y.tolist() == [0, 1, 2, 255, 0]


def test_quantize_linear_golden_int8_with_zero_point_and_ties():
    # the ONNX doc example: x = [0, 1, 2, 1000, -254, -1000], scale 2, zero point 128 (uint8)
    # -> [0, 0.5 -> 0, 1, 500, -127, -500] + 128 -> [128, 128, 129, 255 (sat.), 1, 0 (sat.)]
    y = O.quantize_linear(np.array([0, 1, 2, 1000, -254, -1000], F32), np.array(2.0, F32), np.array(128, np.uint8))
    assert y.tolist() == [128, 128, 129, 255, 1, 0]


def test_quantize_linear_int4_output_dtype_and_blocked():
    x = np.array([[1.0, 2.0, 3.0, 100.0, -100.0]], F32)
    s = np.array([[1.0, 1.0, 10.0]], F32)  # blocks of 2 along axis 1; the third block is partial
    # 1, 2 | 3 -> 3, 100 -> 7 (sat.) | -100 / 10 = -10 -> -8 (sat.)
    y = O.quantize_linear(x, s, axis=1, block_size=2, output_dtype="int4")
    assert y.dtype == np.int8 and y.tolist() == [[1, 2, 3, 7, -8]]


def test_quantize_linear_saturates_where_int32_would_overflow():
    # the reference's rint(x).astype(int32) wraps for |x / scale| >= 2^31; refquant saturates
    y = O.quantize_linear(np.array([3e9, -3e9, np.inf], F32), np.array(1.0, F32), np.array(0, np.int8))
    assert y.tolist() == [127, -128, 127]


def test_dequantize_linear_golden():
    # (x - zp) * scale = ([0, 3, 128, 255] - 128) * 2 = [-256, -250, 0, 254]
    y = O.dequantize_linear(np.array([0, 3, 128, 255], np.uint8), np.array(2.0, F32), np.array(128, np.uint8))
    assert y.dtype == np.float32 and y.tolist() == [-256.0, -250.0, 0.0, 254.0]


def test_dynamic_quantize_linear_golden():
    # the ONNX doc example: x = [0, 2, -3, -2.5, 1.34, 0.5]: max 2, min -3, scale 5/255,
    # zero point round(3 / (5/255)) = round(153) = 153
    y, s, z = O.dynamic_quantize_linear(np.array([0, 2, -3, -2.5, 1.34, 0.5], F32))
    assert s == F32(5) / F32(255) and z == 153 and z.dtype == np.uint8
    assert y.tolist() == [153, 255, 0, 26, 221, 179]


def test_dynamic_quantize_linear_all_zero():
    y, s, z = O.dynamic_quantize_linear(np.zeros(4, F32))
    assert y.tolist() == [0, 0, 0, 0] and s == F32(1) / F32(255) and z == 0


def test_matmul_integer_golden():
    a = np.array([[11, 7, 3], [10, 6, 2]], np.uint8)
    b = np.array([[1, 4], [2, 5], [3, 6]], np.uint8)
    # (a - 12) @ (b - 0): [[-1, -5, -9], [-2, -6, -10]] @ b = [[-38, -83], [-44, -98]]
    y = O.matmul_integer(a, b, np.array(12, np.uint8), np.array(0, np.uint8))
    assert y.dtype == np.int32 and y.tolist() == [[-38, -83], [-44, -98]]


def test_qlinear_matmul_golden():
    a = np.array([[2, 4]], np.uint8)
    b = np.array([[1], [3]], np.uint8)
    # C = 2 + 12 = 14; m = 0.5 * 0.25 / 0.125 = 1; y = 14 + 100 = 114
    y = O.qlinear_matmul(a, b, a_scale=F32(0.5), a_zero_point=np.array(0, np.uint8), b_scale=F32(0.25),
                         b_zero_point=np.array(0, np.uint8), y_scale=F32(0.125), y_zero_point=np.array(100, np.uint8))
    assert y.dtype == np.uint8 and y.tolist() == [[114]]


def test_matmul_integer_overflow_raises_instead_of_wrapping():
    k = 40000  # 40000 * 255 * 255 > 2^31
    a = np.full((1, k), 255, np.uint8)
    b = np.full((k, 1), 255, np.uint8)
    with pytest.raises(ValueError, match="int32 accumulator overflows"):
        O.matmul_integer(a, b)


@pytest.mark.parametrize("call, match", [
    (lambda: O.quantize_linear(np.ones(2, F32), np.array(1.0, F32), np.array(0, np.uint8), output_dtype="int8"), "does not match"),
    (lambda: O.quantize_linear(np.ones(2, F32), np.array(1.0, F32), output_dtype="int7"), "output_dtype: unknown"),
    (lambda: O.quantize_linear(np.ones(2, F32), np.array(1.0, F32), np.array(0, np.int32)), "y_zero_point: dtype int32"),
    (lambda: O.quantize_linear(np.ones((2, 3), F32), np.ones(2, F32), axis=1), "scale has shape"),
    (lambda: O.quantize_linear(np.ones((2, 3), F32), np.ones(3, F32), axis=2), "axis=2 is out of range"),
    (lambda: O.quantize_linear(np.ones((2, 3), F32), np.ones((2, 2), F32), axis=1, block_size=-2), "block_size"),
    (lambda: O.quantize_linear(np.ones((2, 3), F32), np.ones((2, 2), F32), axis=1, block_size=1), "scale has shape"),
    (lambda: O.quantize_linear(np.ones(2, F32), np.array(0.0, F32)), "scale must be > 0"),
    (lambda: O.quantize_linear(np.array([np.nan], F32), np.array(1.0, F32)), "x contains NaN"),
    (lambda: O.quantize_linear(np.ones(2, F32), np.array(1, np.int32)), "y_scale: expected a floating"),
    (lambda: O.dequantize_linear(np.ones(2, F32), np.array(1.0, F32)), "x: expected an integer"),
    (lambda: O.dequantize_linear(np.ones(2, np.uint8), np.array(1.0, F32), np.array(0, np.int8)), "x_zero_point has dtype"),
    (lambda: O.dynamic_quantize_linear(np.array([np.inf], F32)), "x must be finite"),
    (lambda: O.matmul_integer(np.ones((2, 3), np.int16), np.ones((3, 2), np.int8)), "a: expected int8 or uint8"),
    (lambda: O.matmul_integer(np.ones((2, 3), np.int8), np.ones((2, 2), np.int8)), "inner dimensions"),
    (lambda: O.matmul_integer(np.ones((2, 3), np.int8), np.ones((3, 2), np.int8), np.ones(3, np.int8)), "per-row"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- differential against onnx.reference
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

_TP = {"int4": TensorProto.INT4, "uint4": TensorProto.UINT4, "int2": TensorProto.INT2, "uint2": TensorProto.UINT2,
       "int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "int16": TensorProto.INT16, "uint16": TensorProto.UINT16}


def _onnx(op, inputs, opset, n_out=1, **attrs):
    names = [f"i{k}" for k in range(len(inputs))]
    node = helper.make_node(op, names, [f"o{k}" for k in range(n_out)], **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None) for n in names],
                          [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in node.output])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model).run(None, dict(zip(names, inputs)))


_int_types = st.sampled_from(["int8", "uint8", "int16", "uint16"])
_x = hnp.arrays(F32, (3, 6), elements=st.floats(-300, 300, width=32) | st.sampled_from([0.5, -1.5, 2.5, 0.25]))


@given(_x, _int_types, st.sampled_from(["tensor", "axis0", "axis1", "block"]), st.data())
def test_quantize_dequantize_linear_match_onnx_reference(x, tname, kind, data):
    info = np.iinfo(tname)
    shape, attrs = {"tensor": ((), {}), "axis0": ((3,), dict(axis=0)), "axis1": ((6,), dict(axis=1)),
                    "block": ((3, 2), dict(axis=1, block_size=4))}[kind]
    s = data.draw(hnp.arrays(F32, shape, elements=st.floats(2.0**-7, 4, width=32)))
    z = data.draw(hnp.arrays(np.dtype(tname), shape, elements=st.integers(info.min, info.max)))
    y = O.quantize_linear(x, s, z, **attrs)
    y_ref = _onnx("QuantizeLinear", [x, s, z], 21, **attrs)[0]
    assert y.dtype == y_ref.dtype and np.array_equal(y, y_ref)
    d = O.dequantize_linear(y, s, z, **attrs)
    d_ref = _onnx("DequantizeLinear", [y_ref, s, z], 21, **attrs)[0]
    assert d.dtype == d_ref.dtype and np.array_equal(d, d_ref)


@given(_x, st.sampled_from(["int4", "uint4", "int2", "uint2"]))
def test_sub_byte_output_dtype_matches_onnx_reference(x, tname):
    s = np.array(0.5, F32)
    y = O.quantize_linear(x, s, output_dtype=tname)
    y_ref = _onnx("QuantizeLinear", [x, s], 21, output_dtype=_TP[tname])[0]
    assert np.array_equal(y, y_ref.astype(y.dtype))


def test_dynamic_quantize_linear_scale_underflow_raises():
    # found by hypothesis: (1e-45 - 0) / 255 underflows to 0 in float32; the reference divides by zero
    with pytest.raises(ValueError, match="y_scale underflows"):
        O.dynamic_quantize_linear(np.full(3, 1e-45, F32))


@given(_x)
def test_dynamic_quantize_linear_matches_onnx_reference(x):
    assume(np.ptp(np.concatenate([x.ravel(), [0]])) > 1e-30)  # tiny ranges raise (test above)
    got = O.dynamic_quantize_linear(x)
    ref = _onnx("DynamicQuantizeLinear", [x], 11, n_out=3)
    for a, b in zip(got, ref):
        assert a.dtype == b.dtype and np.array_equal(a, b)


@given(st.data(), st.sampled_from([np.int8, np.uint8]), st.sampled_from([np.int8, np.uint8]))
def test_matmul_and_qlinear_matmul_match_onnx_reference(data, ta, tb):
    m, k, n = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 40)), data.draw(st.integers(1, 4))
    ia, ib = np.iinfo(ta), np.iinfo(tb)
    a = data.draw(hnp.arrays(ta, (m, k), elements=st.integers(ia.min, ia.max)))
    b = data.draw(hnp.arrays(tb, (k, n), elements=st.integers(ib.min, ib.max)))
    az = np.array(data.draw(st.integers(ia.min, ia.max)), ta)
    bz = np.array(data.draw(st.integers(ib.min, ib.max)), tb)
    assert np.array_equal(O.matmul_integer(a, b, az, bz), _onnx("MatMulInteger", [a, b, az, bz], 10)[0])
    sc = [np.array(data.draw(st.floats(2.0**-10, 1, width=32)), F32) for _ in range(3)]
    yz = np.array(data.draw(st.integers(0, 255)), np.uint8)
    got = O.qlinear_matmul(a, b, a_scale=sc[0], a_zero_point=az, b_scale=sc[1], b_zero_point=bz, y_scale=sc[2],
                           y_zero_point=yz)
    ref = _onnx("QLinearMatMul", [a, sc[0], az, b, sc[1], bz, sc[2], yz], 21)[0]
    assert got.dtype == ref.dtype and np.array_equal(got, ref)


def test_empty_inputs_give_empty_outputs_of_the_right_dtype():
    y = O.quantize_linear(np.zeros((0, 3), F32), np.array(1.0, F32), np.array(0, np.int8))
    assert y.shape == (0, 3) and y.dtype == np.int8
    d = O.dequantize_linear(np.zeros((0,), np.uint8), np.array(1.0, F32))
    assert d.shape == (0,) and d.dtype == np.float32
    y, s, z = O.dynamic_quantize_linear(np.zeros((0,), F32))
    assert y.dtype == np.uint8 and y.shape == (0,) and z == 0
    assert O.matmul_integer(np.zeros((0, 4), np.int8), np.zeros((4, 2), np.int8)).shape == (0, 2)


def test_matmul_integer_refuses_float_operands():
    with pytest.raises(ValueError, match="a: expected an integer"):
        O.matmul_integer(np.ones((2, 3), F32), np.ones((3, 2), np.int8))


def test_onnx_ops_do_not_mutate_inputs():
    x = np.array([[0.5, -1.5, 2.5]], F32)
    s = np.array([0.5], F32)
    z = np.array([3], np.int8)
    a = np.array([[1, 2]], np.uint8)
    b = np.array([[3], [4]], np.int8)
    before = [v.copy() for v in (x, s, z, a, b)]
    y = O.quantize_linear(x, s, z, axis=0)
    O.dequantize_linear(y, s, z, axis=0)
    O.dynamic_quantize_linear(x)
    O.qlinear_matmul(a, b, a_scale=F32(0.1), a_zero_point=np.array(1, np.uint8), b_scale=F32(0.2),
                     b_zero_point=np.array(-1, np.int8), y_scale=F32(0.5), y_zero_point=np.array(7, np.uint8))
    for v, c in zip((x, s, z, a, b), before):
        assert np.array_equal(v, c)


_FLOAT_TP = {"float8e4m3fn": TensorProto.FLOAT8E4M3FN, "float8e5m2": TensorProto.FLOAT8E5M2,
             "float4e2m1": TensorProto.FLOAT4E2M1}


@given(hnp.arrays(F32, (3, 8), elements=st.floats(-1e5, 1e5, width=32) | st.sampled_from([np.inf, -np.inf, -0.0, 464.0])),
       st.sampled_from(list(_FLOAT_TP)), st.sampled_from(["tensor", "axis1", "block"]), st.booleans(), st.data())
def test_float_types_match_onnx_reference(x, tname, kind, saturate, data):
    shape, attrs = {"tensor": ((), {}), "axis1": ((8,), dict(axis=1)), "block": ((3, 2), dict(axis=1, block_size=4))}[kind]
    s = data.draw(hnp.arrays(F32, shape, elements=st.floats(2.0**-6, 64, width=32)))
    y = O.quantize_linear(x, s, output_dtype=tname, saturate=saturate, **attrs)
    y_ref = _onnx("QuantizeLinear", [x, s], 21, output_dtype=_FLOAT_TP[tname], saturate=int(saturate), **attrs)[0]
    assert np.array_equal(y, y_ref.view(np.uint8))
    d = O.dequantize_linear(y, s, x_dtype=tname, **attrs)
    d_ref = _onnx("DequantizeLinear", [y_ref, s], 21, **attrs)[0]
    assert d.dtype == d_ref.dtype and np.array_equal(d, d_ref, equal_nan=True)


# ---------------------------------------------------------------- bad input, closed (issue 9)
@pytest.mark.parametrize("call, match", [
    (lambda: O.quantize_linear(np.ones(3, F32), np.float32(0)), "^y_scale must be > 0"),  # used to say "scale"
    (lambda: O.quantize_linear(np.ones((2, 3), F32), np.ones(4, F32), axis=1), "^y_scale has shape"),
    (lambda: O.quantize_linear(np.ones(3, F32), F32(0.1), np.array(200, np.uint8), output_dtype="uint4"),
     "y_zero_point must lie in"),
    (lambda: O.dequantize_linear(np.ones((2, 3), np.int8), np.zeros(3, F32)), "^x_scale must be > 0"),
    (lambda: O.dequantize_linear(np.ones(3, np.int8), np.ones(3, F32), axis=1), "axis=1 is out of range for x"),
    (lambda: O.dynamic_quantize_linear(np.array([1e308, 0.0])), "x has values beyond the float32 range"),
    (lambda: O.matmul_integer(np.ones((2, 3), np.int64), np.ones((3, 2), np.int8), np.int8(0)), "^a: expected int8"),
    (lambda: O.qlinear_matmul(np.ones((1, 2), np.int8), np.ones((2, 1), np.int8), a_scale=F32(0.1),
                              a_zero_point=np.int8(0), b_scale=F32(0.1), b_zero_point=np.int8(0),
                              y_scale=F32(1e-45), y_zero_point=np.int8(0)),
     "multiplier a_scale·b_scale/y_scale is 0 or Inf"),  # 0.01 / 1e-45 overflows: NaN codes used to come out
])
def test_more_bad_input_raises_naming_the_onnx_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_dequantize_linear_int32_mirrors_the_reference_double_rounding():
    # the reference computes x.astype(float32) * x_scale: float32(2^25 + 3) = 2^25 + 4 (spacing 4, tie to even),
    # times 1.5 = 50331654, which rounds to 50331656; refquant.dequantize rounds the exact 50331652.5 once
    x = np.array([2**25 + 3], np.int32)
    assert O.dequantize_linear(x, F32(1.5))[0] == F32(50331656)
    assert dequantize(x, F32(1.5))[0] == F32(50331652)
