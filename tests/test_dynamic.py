"""Dynamic per-token quantization: hand goldens, the _ref twin, the recipe formula it replaces, bad input."""
import numpy as np
import pytest
from hypothesis import example, given, strategies as st

from refquant.core.dynamic import (EPS, fake_quantize_per_token, per_token_qparams, quantize_per_token,
                                   quantize_per_token_ref)
from refquant.core.ranges import qrange
from refquant.core.uniform import dequantize, fake_quantize
from strategies import arrays, qranges

F32 = np.float32
both = pytest.mark.parametrize("fn", [quantize_per_token, quantize_per_token_ref], ids=["vectorised", "ref"])


# ---------------------------------------------------------------- golden values
@both
def test_symmetric_int8_golden(fn):
    x = np.array([[63.5, 0.25, -0.75, 1.25],  # scale 63.5 / 127 = 0.5: 127, 0.5 -> 0, -1.5 -> -2, 2.5 -> 2 (to even)
                  [-127, 3.5, -0.5, 2.5],     # scale 127 / 127 = 1: -127, 3.5 -> 4, -0.5 -> 0, 2.5 -> 2
                  [0, 0, 0, 0]], F32)         # all zero: the guard, scale = eps = 2^-23, codes 0
    q, s, z = fn(x)
    assert q.dtype == np.int8 and s.dtype == np.float32 and z.dtype == np.int32
    assert q.tolist() == [[127, 0, -2, 2], [-127, 4, 0, 2], [0, 0, 0, 0]]
    assert s.tolist() == [0.5, 1.0, 2.0**-23] and z.tolist() == [0, 0, 0]
    q3, s3, z3 = fn(x.reshape(3, 1, 4))  # leading axes are tokens: scale (3, 1)
    assert q3.shape == (3, 1, 4) and s3.shape == z3.shape == (3, 1)
    assert np.array_equal(q3.reshape(3, 4), q) and np.array_equal(s3.reshape(3), s)


@both
def test_affine_golden(fn):
    # int8, row range [-27.5, 100]: scale = 127.5 / 255 = 0.5; zero point = -128 - round(-27.5 / 0.5) = -128 + 55 = -73
    # codes: -55 - 73 = -128, 200 - 73 = 127, round(0.5) = 0 -> -73, round(1.5) = 2 -> -71
    q, s, z = fn(np.array([[-27.5, 100, 0.25, 0.75]], F32), symmetric=False)
    assert q.tolist() == [[-128, 127, -73, -71]] and s.tolist() == [0.5] and z.tolist() == [-73]
    # uint8, row range [-1, 3] (ONNX DynamicQuantizeLinear's example range): scale = 4 / 255 (float32),
    # zero point = 0 - round(-63.75) = 64; codes round(-63.75) + 64 = 0 and round(191.25) + 64 = 255
    q, s, z = fn(np.array([[-1, 3]], F32), "uint8", symmetric=False)
    assert q.tolist() == [[0, 255]] and s[0] == F32(4) / F32(255) and z.tolist() == [64]


@both
def test_symmetric_unsigned_and_half_range_golden(fn):
    # uint8 symmetric: zero point 128, divisor 255 - 128 = 127; amax 127 -> scale 1;
    # codes -127 + 128 = 1 and 63.5 -> 64 (tie to even) + 128 = 192
    q, s, z = fn(np.array([[-127, 63.5]], F32), "uint8")
    assert q.tolist() == [[1, 192]] and s.tolist() == [1.0] and z.tolist() == [128]
    # half_range divisor (PyTorch observers): 127.5 / 127.5 = 1; 127.5 -> 128 (tie to even) saturates to 127
    q, s, _ = fn(np.array([[127.5, -1]], F32), symmetric_divisor="half_range")
    assert q.tolist() == [[127, -1]] and s.tolist() == [1.0]


def test_fake_quantize_golden_and_qparams():
    x = np.array([[63.5, 0.25, -0.75, 1.25], [0, 0, 0, 0]], F32)
    xh = fake_quantize_per_token(x)  # 0.5 · [127, 0, -2, 2]; the all-zero row stays exactly 0
    assert xh.dtype == np.float32 and xh.tolist() == [[63.5, 0.0, -1.0, 1.0], [0, 0, 0, 0]]
    s, z = per_token_qparams(x)
    assert s.tolist() == [0.5, EPS] and z.tolist() == [0, 0]


def test_empty_token_axis():
    q, s, z = quantize_per_token(np.zeros((0, 4), F32))
    assert q.shape == (0, 4) and s.shape == z.shape == (0,)
    assert fake_quantize_per_token(np.zeros((2, 0, 4), F32)).shape == (2, 0, 4)


# ---------------------------------------------------------------- the _ref twin, tolerance 0
@given(arrays(), qranges, st.booleans(), st.sampled_from(["qmax", "half_range"]))
@example(np.array([[1e-30, -3e-39]], F32), qrange("int8"), True, "qmax")  # a subnormal row: the guard sets the scale
def test_matches_ref_exactly(x, r, symmetric, divisor):
    x0 = x.copy()
    q, s, z = quantize_per_token(x, r, symmetric=symmetric, symmetric_divisor=divisor)
    qr, sr, zr = quantize_per_token_ref(x, r, symmetric=symmetric, symmetric_divisor=divisor)
    assert q.dtype == qr.dtype == r.dtype and q.shape == x.shape and s.shape == z.shape == x.shape[:-1]
    assert np.array_equal(q, qr) and np.array_equal(s, sr) and np.array_equal(z, zr)
    xh = fake_quantize_per_token(x, r, symmetric=symmetric, symmetric_divisor=divisor)
    n, k = int(np.prod(x.shape[:-1])), x.shape[-1]
    assert np.array_equal(xh, dequantize(q.reshape(n, k), s.reshape(n), z.reshape(n), axis=0).reshape(x.shape))
    assert np.array_equal(x, x0)  # input not mutated


# ---------------------------------------------------------------- properties
@given(arrays(elements=st.floats(-1e4, 1e4, width=32)))
def test_symmetric_int8_properties(x):
    q, s, _ = quantize_per_token(x)
    amax = np.abs(x).max(axis=-1)
    big = amax >= 127 * EPS
    # every row that is not tiny reaches ±127 and never uses -128
    assert np.all(np.abs(q).max(axis=-1)[big] == 127) and np.all(q > -128)
    # no clipping: the error is at most half a step (plus float32 rounding of x / s and s · q)
    err = np.abs(fake_quantize_per_token(x) - x)
    assert np.all(err <= 0.5 * s[..., None] * (1 + 1e-5) + 1e-6 * np.abs(x))


def _recipe_formula(x):
    """The per-token W8A8 recipe's inline code before it moved into refquant.core.dynamic."""
    x2 = x.reshape(-1, x.shape[-1])
    s = np.maximum(np.abs(x2).max(axis=1), np.float32(1e-8)) / np.float32(127)
    return fake_quantize(x2, s.astype(np.float32), 0, "int8", axis=0).reshape(x.shape)


@given(arrays(elements=st.floats(-1e3, 1e3, width=32)))
@example(np.array([[1e-6, -5e-7, 0.0], [0.0, 0.0, 0.0], [1.0, -2.0, 3.0]], F32))  # one row under the guard
def test_reproduces_the_recipe_formula_bit_exactly(x):
    new, old = fake_quantize_per_token(x), _recipe_formula(x)
    amax = np.abs(x).max(axis=-1)
    same = (amax >= 127 * EPS) | (amax == 0)
    assert np.array_equal(new[same], old[same])
    # rows under the guard: quantized with step eps instead of max|x| / 127
    tiny = ~same
    assert np.array_equal(new[tiny], fake_quantize(x[tiny], np.float32(EPS), 0, "int8"))


def test_float64_input_divides_in_float64_with_float32_scales():
    x = np.array([[0.1, -0.3, 0.2]])  # float64
    q, s, _ = quantize_per_token(x)
    assert s.dtype == np.float32 and s[0] == np.float32(np.float32(0.3) / np.float32(127))
    assert q.tolist() == [[int(np.rint(0.1 / np.float64(s[0]))), -127, int(np.rint(0.2 / np.float64(s[0])))]]
    assert fake_quantize_per_token(x).dtype == np.float64


# ---------------------------------------------------------------- bad input
@both
@pytest.mark.parametrize("x, kwargs, match", [
    (np.float32(1.0), {}, "x: per-token quantization needs"),
    (np.zeros((3, 0), F32), {}, "x: the last axis"),
    (np.array([[1.0, np.nan]], F32), {}, "x contains NaN"),
    (np.array([[1.0, np.inf]], F32), {}, r"x contains ±Inf"),
    (np.array([["a", "b"]]), {}, "x: expected a real floating-point array"),
    (np.array([[1e300, 0.0]]), {}, "x: a token's range does not give a finite scale"),
    (np.array([[3e38, -3e38]], F32), {"symmetric": False}, "x: a token's range does not give a finite scale"),
    (np.ones((2, 2), F32), {"qrange": "int8x"}, "qrange: unknown"),
    (np.ones((2, 2), F32), {"symmetric_divisor": "half"}, "symmetric_divisor: unknown"),
    (np.ones((2, 2), F32), {"eps": 0.0}, "eps must be finite and > 0"),
])
def test_bad_input(fn, x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(x, **kwargs)


@both
@pytest.mark.parametrize("kwargs, exc, match", [
    ({"qrange": "int17"}, ValueError, "qrange: .*bits must be in"),
    ({"qrange": (5, 3)}, ValueError, "qrange: qmin > qmax"),
    ({"eps": 1e300}, ValueError, "eps must be finite and > 0 in float32"),
    ({"eps": "1e-7"}, TypeError, "eps: expected a real scalar"),
    ({"eps": np.ones(2)}, TypeError, "eps: expected a real scalar"),
    ({"dtype": np.int32}, TypeError, "dtype: expected a float dtype"),
    ({"dtype": "bogus"}, TypeError, "dtype: expected a float dtype"),
    ({"dtype": None}, TypeError, "dtype: expected a float dtype"),
])
def test_bad_options(fn, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fn(np.ones((2, 3), F32), **kwargs)
