"""Uniform quantization: golden values (hand-computed), properties, the _ref twin, bad input."""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, strategies as st
from hypothesis.extra import numpy as hnp

from refquant import dequantize, fake_quantize, qparams_from_range, quantize, quantize_ref, qrange
from refquant.core.ranges import QRange
from refquant.core.uniform import dequantize_ref
from strategies import arrays, data_with_zero_point, granular_case, modes, qranges

F32 = np.float32
TIES = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5], dtype=F32)


# ---------------------------------------------------------------- golden values
@pytest.mark.parametrize("mode, expected", [
    ("half_even", [-2, -2, 0, 0, 2, 2]),   # ties go to the even neighbour
    ("half_away", [-3, -2, -1, 1, 2, 3]),  # ties go away from zero (C roundf)
    ("half_up", [-2, -1, 0, 1, 2, 3]),     # ties go toward +inf
    ("floor", [-3, -2, -1, 0, 1, 2]),      # always down
])
def test_rounding_modes_on_exact_ties(mode, expected):
    q = quantize(TIES, 1.0, 0, "int8", rounding=mode)
    assert q.tolist() == expected
    assert quantize_ref(TIES, 1.0, 0, "int8", rounding=mode).tolist() == expected


@pytest.mark.parametrize("mode", ["half_even", "half_away", "half_up"])
def test_just_below_half_rounds_down(mode):
    # float32 0.49999997 = 0.5 - 2^-25; the naive floor(v + 0.5) computes 0.99999997 -> 1.0 (rounded sum)
    v = np.array([np.nextafter(F32(0.5), F32(0))], dtype=F32)
    assert v[0] == F32(0.5) - F32(2.0 ** -25)
    assert quantize(v, 1.0, 0, rounding=mode).tolist() == [0]


def test_affine_golden_uint8():
    # range [-1, 3]: scale = 4 / 255 (float32); zero_point = 0 - round(-1 / (4/255)) = round(63.75) = 64
    s, z = qparams_from_range(-1.0, 3.0, "uint8")
    assert s == F32(4) / F32(255) and z == 64
    # 3 / (4/255) = 191.25 -> 191, +64 = 255;  -1 -> -63.75 -> -64, +64 = 0;  0 -> 0 + 64
    assert quantize(np.array([-1.0, 0.0, 3.0], F32), s, z, "uint8").tolist() == [0, 64, 255]


def test_range_is_extended_to_contain_zero():
    # [2, 6] becomes [0, 6]: scale 6/255, zero point 0; [-6, -2] becomes [-6, 0]: zero point 255
    s, z = qparams_from_range(2.0, 6.0, "uint8")
    assert s == F32(6) / F32(255) and z == 0
    s, z = qparams_from_range(-6.0, -2.0, "uint8")
    assert s == F32(6) / F32(255) and z == 255


@pytest.mark.parametrize("divisor, expected_scale", [("qmax", F32(2) / F32(127)), ("half_range", F32(2) / F32(127.5))])
def test_symmetric_divisor(divisor, expected_scale):
    s, z = qparams_from_range(-2.0, 1.0, "int8", symmetric=True, symmetric_divisor=divisor)  # amax = 2
    assert s == expected_scale and z == 0


def test_symmetric_qmax_divisor_maps_amax_to_qmax_and_half_range_clips_it():
    x = np.array([-127.5, 127.5], F32)
    s, _ = qparams_from_range(-127.5, 127.5, "int8", symmetric=True)  # scale 127.5 / 127
    assert quantize(x, s, 0, "int8").tolist() == [-127, 127]
    s, _ = qparams_from_range(-127.5, 127.5, "int8", symmetric=True, symmetric_divisor="half_range")
    assert s == 1.0  # 127.5 / 127.5, exact
    # -127.5 -> -128 (even), +127.5 -> 128 (even) -> clipped to 127: the grid is lopsided
    assert quantize(x, s, 0, "int8").tolist() == [-128, 127]


def test_symmetric_unsigned_zero_point_is_128():
    s, z = qparams_from_range(-1.0, 1.0, "uint8", symmetric=True)
    assert z == 128 and s == F32(1) / F32(127)  # divisor qmax - zero_point = 255 - 128


def test_narrow_range_symmetric():
    r = qrange("int8_narrow")
    assert (r.qmin, r.qmax) == (-127, 127)
    assert quantize(np.array([-1e9], F32), 1.0, 0, r).tolist() == [-127]


def test_constant_and_zero_tensors_get_a_valid_scale():
    s, z = qparams_from_range(0.0, 0.0, "uint8")
    assert s == F32(np.finfo(F32).eps) and z == 0
    x = np.zeros(5, F32)
    assert np.array_equal(fake_quantize(x, s, z, "uint8"), x)
    s, z = qparams_from_range(3.0, 3.0, "int8")  # [0, 3]: scale 3/255, zero point -128 - round(0) = -128
    assert s == F32(3) / F32(255) and z == -128
    assert fake_quantize(np.array([3.0], F32), s, z, "int8")[0] == F32(3) / F32(255) * F32(255)


def test_zero_point_order_differs_on_odd_zero_point_ties():
    x = np.array([2.5], F32)
    assert quantize(x, 1.0, 1, "int8").tolist() == [3]  # rint(2.5) = 2, + 1
    assert quantize(x, 1.0, 1, "int8", zero_point_order="before_rounding").tolist() == [4]  # rint(3.5) = 4


def test_fbgemm_reciprocal_golden():
    # FBGEMM QuantUtils.h: x * (1/s) = 127.5 in float32 -> 128, x / s = 127.499992 -> 127
    x = np.array([0.273939937], F32)
    s = F32(0.00214854861)
    assert x[0] * (F32(1) / s) == F32(127.5) and x[0] / s < F32(127.5)
    assert quantize(x, s, 0, "uint8").tolist() == [127]
    assert quantize(x, s, 0, "uint8", scale_op="multiply_reciprocal").tolist() == [128]


def test_saturation_beyond_int32_and_infinities():
    x = np.array([3e12, -3e12, np.inf, -np.inf, 1e38], F32)
    assert quantize(x, 1.0, 0, "int8").tolist() == [127, -128, 127, -128, 127]
    assert quantize(x, 1e-30, 0, "int16").tolist() == [32767, -32768, 32767, -32768, 32767]
    assert quantize(x, 1.0, 65535, "uint16").tolist() == [65535, 0, 65535, 0, 65535]


def test_blocked_with_partial_last_block_golden():
    # x = 0..4 along axis 1, blocks of 2 -> 3 blocks (last holds one element); scales 1, 2, 4
    x = np.array([[0.0, 1.0, 2.0, 3.0, 4.0]], F32)
    s = np.array([[1.0, 2.0, 4.0]], F32)
    # 0/1 = 0, 1/1 = 1, 2/2 = 1, 3/2 = 1.5 -> 2, 4/4 = 1
    assert quantize(x, s, 0, "int8", axis=1, block_size=2).tolist() == [[0, 1, 1, 2, 1]]
    assert quantize_ref(x, s, 0, "int8", axis=1, block_size=2).tolist() == [[0, 1, 1, 2, 1]]


def test_per_channel_golden():
    x = np.array([[1.0, 2.0], [3.0, 4.0]], F32)
    # channel 0 (row) scale 1, zero point 10; channel 1 scale 2, zero point -1: 3/2 = 1.5 -> 2, 4/2 = 2
    q = quantize(x, np.array([1.0, 2.0], F32), np.array([10, -1]), "int8", axis=0)
    assert q.tolist() == [[11, 12], [1, 1]]
    assert dequantize(q, np.array([1.0, 2.0], F32), np.array([10, -1]), axis=0).tolist() == [[1.0, 2.0], [4.0, 4.0]]


def test_stochastic_rounding_is_unbiased_and_reproducible():
    x = np.full(20000, 0.25, F32)
    q = quantize(x, 1.0, 0, rounding="stochastic", rng=np.random.default_rng(0))
    assert set(np.unique(q).tolist()) == {0, 1}
    assert abs(q.mean() - 0.25) < 0.02  # std of the mean = sqrt(0.25 * 0.75 / 20000) = 0.003
    q2 = quantize(x, 1.0, 0, rounding="stochastic", rng=np.random.default_rng(0))
    assert np.array_equal(q, q2)


def test_dtype_rules():
    x = np.ones(3, F32)
    assert quantize(x, 0.1, 0, "int4").dtype == np.int8
    assert quantize(x, 0.1, 0, "uint12").dtype == np.uint16
    assert fake_quantize(x, 0.1).dtype == np.float32  # Python scale takes x's dtype
    assert fake_quantize(x, np.float64(0.1)).dtype == np.float64  # NumPy promotion
    assert dequantize(np.ones(3, np.int8), 0.5).dtype == np.float32


def test_empty_input_gives_empty_output():
    assert quantize(np.zeros((0, 3), F32), 1.0).shape == (0, 3)
    assert quantize(np.zeros((0, 3), F32), 1.0).dtype == np.int8
    assert dequantize(np.zeros((0,), np.int8), 1.0).dtype == np.float32
    assert quantize(np.zeros((2, 0), F32), np.ones(2, F32), axis=0).shape == (2, 0)


# ---------------------------------------------------------------- properties
@given(granular_case(), st.sampled_from(["half_even", "half_away", "half_up", "floor", "stochastic"]),
       st.sampled_from(["divide", "multiply_reciprocal"]), st.sampled_from(["after_rounding", "before_rounding"]))
def test_ref_twin_equals_vectorised(case, mode, scale_op, order):
    x, s, z, r, axis, block = case
    kw = dict(axis=axis, block_size=block, rounding=mode, scale_op=scale_op, zero_point_order=order)
    a = quantize(x, s, z, r, rng=np.random.default_rng(1), **kw)
    b = quantize_ref(x, s, z, r, rng=np.random.default_rng(1), **kw)
    assert a.dtype == b.dtype and np.array_equal(a, b)


@given(granular_case())
def test_output_in_range(case):
    x, s, z, r, axis, block = case
    q = quantize(x, s, z, r, axis=axis, block_size=block)
    assert q.dtype == r.dtype and q.shape == x.shape
    assert q.size == 0 or (q.min() >= r.qmin and q.max() <= r.qmax)


@given(data_with_zero_point(), modes)
@example((np.array([0.49999997], F32), F32(1.0), 0, QRange(8)), "half_up")
def test_error_bound_exact(case, mode):
    """Exactly, inside the range: |x/s − (q − zp)| <= 1/2 + u·|x/s| (u = 2^-24: the division's rounding)."""
    x, s, z, r = case
    q = quantize(x, s, z, r, rounding=mode)
    bound = Fraction(1) if mode == "floor" else Fraction(1, 2)
    for xi, qi in zip(x.ravel().tolist(), q.ravel().tolist()):
        t = Fraction(xi) / Fraction(float(s))
        if r.qmin - z + 1 <= t <= r.qmax - z - 1:  # inside the representable range
            assert abs(t - (qi - z)) <= bound + abs(t) * Fraction(1, 2 ** 24)


@given(data_with_zero_point())
def test_fake_quantize_error_at_most_half_step(case):
    x, s, z, r = case
    y = fake_quantize(x, s, z, r)
    for xi, yi in zip(x.ravel().tolist(), y.ravel().tolist()):
        t = Fraction(xi) / Fraction(float(s))
        if r.qmin - z + 1 <= t <= r.qmax - z - 1:
            err = abs(Fraction(xi) - Fraction(yi))
            # s/2 from rounding, u|x| from the division, u|y| from the float32 product
            assert err <= Fraction(float(s)) / 2 + (abs(Fraction(xi)) + abs(Fraction(yi))) * Fraction(1, 2 ** 24)


@given(st.floats(-1e4, 1e4, width=32), st.floats(-1e4, 1e4, width=32), qranges)
def test_zero_is_exactly_representable(a, b, r):
    lo, hi = min(a, b), max(a, b)
    s, z = qparams_from_range(lo, hi, r)
    assert fake_quantize(np.zeros(3, F32), s, z, r).tolist() == [0.0, 0.0, 0.0]


@given(data_with_zero_point(), st.sampled_from(["half_even", "half_away", "half_up"]))
def test_idempotent(case, mode):
    x, s, z, r = case
    y = fake_quantize(x, s, z, r, rounding=mode)
    assert np.array_equal(fake_quantize(y, s, z, r, rounding=mode), y)


def test_floor_is_not_idempotent_in_floating_point():
    # Found by hypothesis. 909613 / 969.78125 = 937.96 -> floor 937; 969.78125 * 937 = 908685.03125 is
    # a tie between float32 neighbours 908685.0 and 908685.0625 -> 908685.0 (even), just below s * 937,
    # so the second pass gives 908685 / 969.78125 = 936.99997 -> 936. Nearest rounding absorbs this.
    x = np.array([909613.0], F32)
    s = F32(969.78125)
    y = fake_quantize(x, s, 0, "uint10", rounding="floor")
    assert y[0] == F32(908685.0)
    assert quantize(y, s, 0, "uint10", rounding="floor").tolist() == [936]
    assert np.array_equal(fake_quantize(y, s, 0, "uint10", rounding="half_even"), y)


@given(data_with_zero_point(), modes, st.sampled_from(["divide", "multiply_reciprocal"]))
def test_monotone(case, mode, scale_op):
    x, s, z, r = case
    xs = np.sort(x.ravel())
    q = quantize(xs, s, z, r, rounding=mode, scale_op=scale_op).astype(np.int64)
    assert np.all(np.diff(q) >= 0)


@given(granular_case())
def test_per_channel_equals_per_tensor_slice_by_slice(case):
    x, s, z, r, axis, block = case
    if axis is None or block:
        return
    q = quantize(x, s, z, r, axis=axis)
    for c in range(x.shape[axis]):
        qc = quantize(np.take(x, c, axis=axis), s[c], int(z[c]), r)
        assert np.array_equal(np.take(q, c, axis=axis), qc)


@given(granular_case())
def test_dequantize_is_the_correctly_rounded_exact_product(case):
    x, s, z, r, axis, block = case
    q = quantize(x, s, z, r, axis=axis, block_size=block)
    y = dequantize(q, s, z, axis=axis, block_size=block)
    ref = np.empty_like(y)
    for idx in np.ndindex(q.shape):
        if axis is None:
            p = ()
        elif not block:
            p = (idx[axis % q.ndim],)
        else:
            a = axis % q.ndim
            p = idx[:a] + (idx[a] // block,) + idx[a + 1:]
        # |q - z| < 2^17 and s has 24 bits: the product is exact in float64, rounded once to float32
        ref[idx] = F32(float(Fraction(float(s[p])) * (int(q[idx]) - int(z[p]))))
    assert np.array_equal(y, ref)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, match", [
    (dict(x=np.array([1.0, np.nan], F32)), "x contains NaN"),
    (dict(scale=0.0), "scale must be > 0"),
    (dict(scale=-1.0), "scale must be > 0"),
    (dict(scale=np.nan), "scale must be finite"),
    (dict(scale=np.inf), "scale must be finite"),
    (dict(zero_point=200), "zero_point must lie in"),
    (dict(zero_point=1.5), "zero_point: expected an integer"),
    (dict(qrange="int33"), "bits must be in"),
    (dict(qrange="float8"), "qrange: unknown"),
    (dict(axis=5, scale=np.ones(3, F32)), "axis=5 is out of range"),
    (dict(axis=0, scale=np.ones(4, F32)), "scale has shape"),
    (dict(axis=0, block_size=-1, scale=np.ones(3, F32)), "block_size must be >= 0"),
    (dict(axis=0, block_size=2, scale=np.ones(3, F32)), "scale has shape"),
    (dict(block_size=2), "block_size: blocked quantization needs an axis"),
    (dict(rounding="nearest"), "rounding: unknown"),
    (dict(rounding="stochastic"), "rng: stochastic rounding needs"),
    (dict(scale_op="mul"), "scale_op: unknown"),
    (dict(zero_point_order="never"), "zero_point_order: unknown"),
    (dict(x=np.array(["a"])), "x: expected a real floating-point array"),
    (dict(scale=np.float32(1e-45), scale_op="multiply_reciprocal"), "1/scale overflows"),
])
def test_bad_input_raises_naming_the_argument(kwargs, match):
    args = dict(x=np.ones(3, F32), scale=1.0, zero_point=0, qrange="int8")
    args.update(kwargs)
    x, scale, zp, qr = args.pop("x"), args.pop("scale"), args.pop("zero_point"), args.pop("qrange")
    with pytest.raises(ValueError, match=match):
        quantize(x, scale, zp, qr, **args)


@pytest.mark.parametrize("q, match", [(np.ones(3, F32), "q: expected an integer"), (np.ones(3), "q: expected an integer")])
def test_dequantize_refuses_float_codes(q, match):
    with pytest.raises(ValueError, match=match):
        dequantize(q, 1.0)


@pytest.mark.parametrize("lo, hi, kw, match", [
    (1.0, -1.0, {}, "lo must be <= hi"),
    (np.nan, 1.0, {}, "lo contains NaN"),
    (-np.inf, 1.0, {}, "range must be finite"),
    (0.0, 1.0, dict(symmetric_divisor="127"), "symmetric_divisor: unknown"),
    (0.0, 1.0, dict(eps=0.0), "eps must be finite and > 0"),
    (-3e38, 3e38, {}, "too wide for a finite scale"),
    (np.zeros(2), np.zeros(3), {}, "same shape"),
])
def test_qparams_bad_input(lo, hi, kw, match):
    with pytest.raises(ValueError, match=match):
        qparams_from_range(lo, hi, "int8", **kw)


def test_inputs_are_not_mutated():
    x = np.array([[0.3, -1.2, 2.5]], F32)
    s = np.array([0.1], F32)
    z = np.array([3], np.int8)
    copies = [a.copy() for a in (x, s, z)]
    q = quantize(x, s, z, "int8", axis=0)
    qc = q.copy()
    fake_quantize(x, s, z, "int8", axis=0, zero_point_order="before_rounding")
    dequantize(q, s, z, axis=0)
    for a, c in zip((x, s, z, q), copies + [qc]):
        assert np.array_equal(a, c)


@given(st.sampled_from([np.float16, np.float64]), st.data())
def test_ref_twin_other_float_dtypes(dtype, data):
    x = data.draw(arrays(elements=st.floats(-6e4, 6e4, width=16 if dtype == np.float16 else 64), dtype=dtype))
    s = data.draw(st.floats(2.0**-8, 2.0**8, width=16 if dtype == np.float16 else 64))
    s = np.asarray(s, dtype=dtype)
    for order in ["after_rounding", "before_rounding"]:
        a = quantize(x, s, 3, "int16", zero_point_order=order)
        assert np.array_equal(a, quantize_ref(x, s, 3, "int16", zero_point_order=order))
    assert fake_quantize(x, s, 3, "int16").dtype == dtype


def test_non_contiguous_input():
    x = np.arange(24, dtype=F32).reshape(4, 6) / 7
    s = np.linspace(0.1, 0.4, 4).astype(F32)
    xt = x.T  # (6, 4), channels along axis 1, not C-contiguous
    assert np.array_equal(quantize(xt, s, 0, axis=1), quantize(np.ascontiguousarray(xt), s, 0, axis=1))
    assert np.array_equal(quantize(xt, s, 0, axis=1), quantize_ref(xt, s, 0, axis=1))


# ---------------------------------------------------------------- 32-bit ranges (int32 biases, the residual stream)
def _oracle(x, s, z, r, dtype):
    """Integer oracle: the quotient rounded once to ``dtype`` (the working dtype), then exact rational
    half-to-even rounding, the zero point and the clamp on Python integers."""
    v = float(dtype(x) / dtype(s))
    if np.isinf(v):
        return r.qmax if v > 0 else r.qmin
    v = Fraction(v)
    k = v.numerator // v.denominator
    frac = v - k
    if frac > Fraction(1, 2) or (frac == Fraction(1, 2) and k % 2):
        k += 1
    return min(max(k + z, r.qmin), r.qmax)


@pytest.mark.parametrize("spec, x, z, expected", [
    # int32, scale 1: 2^31 − 1.5 = 2147483646.5 ties to 2147483646 (even); 2^31 − 0.5 = 2147483647.5 ties to
    # 2147483648 (even), clamped to 2^31 − 1; −2^31 − 0.5 ties to −2^31 (even), in range; −2^31 + 0.5 =
    # −2147483647.5 ties to −2147483648; ±Inf and ±(2^31 + 1) saturate
    ("int32", [2**31 - 1.5, 2**31 - 0.5, -2**31 - 0.5, -2**31 + 0.5, 2**31 + 1, -2**31 - 1, np.inf, -np.inf], 0,
     [2**31 - 2, 2**31 - 1, -2**31, -2**31, 2**31 - 1, -2**31, 2**31 - 1, -2**31]),
    # zero point 2^31 − 1: −1.5 -> −2 + z = 2^31 − 3; 0.5 -> 0 + z; 1.5 -> 2 + z, clamped;
    # −(2^32 − 1) + z = −2^31 exactly
    ("int32", [-1.5, 0.5, 1.5, -(2**32 - 1), -(2**32)], 2**31 - 1,
     [2**31 - 3, 2**31 - 1, 2**31 - 1, -2**31, -2**31]),
    # uint32: 2^32 − 1.5 ties to 4294967294 (even); 2^32 − 0.5 ties to 2^32, clamped; −0.5 ties to −0 -> 0
    ("uint32", [2**32 - 1.5, 2**32 - 0.5, -0.5, 1e300], 0, [2**32 - 2, 2**32 - 1, 0, 2**32 - 1]),
    # zero point 2^32 − 1: −(2^32 − 1.5) ties to −(2^32 − 2) (even), + z = 1
    ("uint32", [-(2**32 - 1), -(2**32 - 1.5), 0.5], 2**32 - 1, [0, 1, 2**32 - 1]),
    # the residual range ±(2^30 − 1): 2^30 − 1.5 ties to 1073741822; 2^30 − 0.5 ties to 2^30, clamped to 2^30 − 1;
    # −2^30 + 0.5 ties to −2^30, clamped to −(2^30 − 1)
    (QRange(31, limits=(-(2**30 - 1), 2**30 - 1)), [2**30 - 1.5, 2**30 - 0.5, -(2**30) + 0.5, 3.5], 0,
     [2**30 - 2, 2**30 - 1, -(2**30 - 1), 4]),
])
def test_32_bit_ranges_golden_at_the_edges(spec, x, z, expected):
    r = qrange(spec)
    xa = np.array(x, np.float64)
    for q in (quantize(xa, 1.0, z, r), quantize_ref(xa, 1.0, z, r)):
        assert q.dtype == r.dtype and q.tolist() == expected
    assert expected == [_oracle(v, 1.0, z, r, np.float64) for v in xa]


def test_32_bit_range_from_float32_data_does_not_wrap():
    # float32(2^31 − 1) is 2^31: clamping in float32 would give 2^31, which wraps to −2^31 in the cast
    x = np.array([2.0**31, -2.0**31, 2**31 - 128, 1.0, 3.0], F32)  # 2^31 − 128 is a float32 (spacing 128)
    assert quantize(x, F32(1), 0, "int32").tolist() == [2**31 - 1, -2**31, 2**31 - 128, 1, 3]
    # zero point −2^31: 1 + z = −2147483647 is not a float32 (it would round to −2^31); the buffer is float64
    assert quantize(x[3:], F32(1), -2**31, "int32").tolist() == [-2**31 + 1, -2**31 + 3]
    # the quotient is rounded to float32 first (the working dtype): 16777217 / 1 is 16777216 in float32
    assert quantize(np.array([16777217.0]), F32(1), 0, "int32").tolist() == [16777217]  # float64 data: exact
    assert quantize(np.array([16777217.0], F32), F32(1), 0, "int32").tolist() == [16777216]


_wide = st.sampled_from([qrange("int32"), qrange("uint32"), qrange("int32_narrow"),
                         QRange(31, limits=(-(2**30 - 1), 2**30 - 1)), QRange(17), QRange(24, signed=False), QRange(25)])


@given(_wide, st.sampled_from([np.float32, np.float64]), st.data())
@example(qrange("int32"), np.float64, None)
def test_32_bit_ranges_equal_the_integer_oracle(r, dtype, data):
    if data is None:  # pinned: codes next to both edges, halves included, zero point at the top of the range
        k = np.array([r.qmax - 1, r.qmax, r.qmax + 1, r.qmin - 1, r.qmin, r.qmin + 1], np.float64)
        x, s, z = np.concatenate([k, k + 0.5, k - 0.5]), 1.0, r.qmax
    else:
        k = data.draw(st.lists(st.integers(r.qmin - r.qmax - 4, r.qmax - r.qmin + 4), min_size=1, max_size=12))
        h = data.draw(st.lists(st.sampled_from([0.0, 0.5, -0.5, 0.25, 0.75]), min_size=len(k), max_size=len(k)))
        s = data.draw(st.sampled_from([1.0, 0.5, 2.0**-20, 3.0, 0.1]))
        x = (np.array(k, np.float64) + np.array(h)) * s
        z = data.draw(st.integers(r.qmin, r.qmax))
    xd = x.astype(dtype)
    expected = [_oracle(v, s, z, r, dtype) for v in xd]
    for order in ("after_rounding",):
        q = quantize(xd, dtype(s), z, r, zero_point_order=order)
        assert q.dtype == r.dtype and q.tolist() == expected
    assert np.array_equal(quantize_ref(xd, dtype(s), z, r), q)
    zp = np.full(2, z, np.int64)  # per-channel: the same codes (reshape to (n, 2) halves the data)
    if xd.size % 2 == 0:
        qc = quantize(xd.reshape(-1, 2), np.full(2, dtype(s)), zp, r, axis=1)
        assert qc.reshape(-1).tolist() == expected
    q2 = quantize(xd, dtype(s), z, r, zero_point_order="before_rounding")
    assert np.array_equal(q2, quantize_ref(xd, dtype(s), z, r, zero_point_order="before_rounding"))
    rng1, rng2 = np.random.default_rng(7), np.random.default_rng(7)
    assert np.array_equal(quantize(xd, dtype(s), z, r, rounding="stochastic", rng=rng1),
                          quantize_ref(xd, dtype(s), z, r, rounding="stochastic", rng=rng2))


@pytest.mark.parametrize("nan_cast", [True, False])
@pytest.mark.parametrize("spec", ["int8", "uint4", "int16", "int32", "uint32"])
def test_nan_anywhere_raises(monkeypatch, nan_cast, spec):
    # one NaN among 2^19 + 3 elements: the first, one inside a vector body, the last element of the first chunk
    # and the very last; per-tensor and group-wise; both NaN checks (the cast's FP flag and the reduction)
    import refquant.core.uniform as u
    if nan_cast and not u._NAN_CAST:
        pytest.skip("this platform's float -> int casts do not flag NaN")
    monkeypatch.setattr(u, "_NAN_CAST", nan_cast)
    n = (1 << 19) + 3
    for i in (0, 1000, u._qchunk(n) - 1, u._qchunk(n), n - 1):
        x = np.linspace(-3, 3, n, dtype=F32)
        x[i] = np.nan
        with pytest.raises(ValueError, match="x contains NaN"):
            quantize(x, F32(0.01), 0, spec)
        xb = np.linspace(-3, 3, 1 << 19, dtype=F32)
        xb[min(i, xb.size - 1)] = np.nan
        with pytest.raises(ValueError, match="x contains NaN"):
            quantize(xb.reshape(-1, 256), np.full((2048, 2), 0.02, F32), 1, spec, axis=1, block_size=128)


@pytest.mark.parametrize("f", [quantize, quantize_ref])
def test_saturate_false_raises_instead_of_clamping(f):
    # int8, scale 1: 127.4 -> 127 and −128.5 -> −128 (tie to even) fit; 127.5 -> 128 (tie to even) does not
    assert f(np.array([127.4, -128.5]), 1.0, 0, "int8", saturate=False).tolist() == [127, -128]
    with pytest.raises(ValueError, match=r"outside int8\[-128, 127\] \(saturate=False\)"):
        f(np.array([0.0, 127.5]), 1.0, 0, "int8", saturate=False)
    with pytest.raises(ValueError, match="saturate=False"):  # zero point 1: 126.6 -> 127 + 1 = 128
        f(np.array([126.6]), 1.0, 1, "int8", saturate=False)
    with pytest.raises(ValueError, match="saturate=False"):
        f(np.array([-np.inf]), 1.0, 0, "int32", saturate=False)
    with pytest.raises(ValueError, match="saturate must be a bool"):
        f(np.array([1.0]), 1.0, 0, "int8", saturate="no")


def test_qparams_for_32_bit_ranges():
    # int32 affine, lo −1, hi 0, float32: scale = 1 / float32(2^32 − 1) = 2^-32 (the divisor rounds to 2^32;
    # eps lowered below it); zero point = −2^31 − rint(−1 / 2^-32) = 2^31, clamped to 2^31 − 1 (in float32 the
    # bound 2^31 − 1 would round to 2^31 and wrap in the cast)
    s, z = qparams_from_range(-1.0, 0.0, "int32", eps=1e-30)
    assert s == F32(2.0**-32) and z.dtype == np.int32 and z == 2**31 - 1
    # uint32 affine in float64: scale 4 / (2^32 − 1); zero point rint(1 / scale) = rint(1073741823.75) = 2^30
    s, z = qparams_from_range(-1.0, 3.0, "uint32", eps=1e-30, dtype=np.float64)
    assert s == 4 / (2**32 - 1) and z == 2**30
    # uint32 symmetric: zero point (0 + 2^32 − 1 + 1) // 2 = 2^31, which needs int64
    s, z = qparams_from_range(-1.0, 1.0, "uint32", symmetric=True, eps=1e-30, dtype=np.float64)
    assert z.dtype == np.int64 and z == 2**31 and s == 1 / (2**31 - 1)
    # the int32 bias of an integer layer: scale s_x · s_w, zero point 0, values round trip through dequantize
    b = np.array([0.3, -1e-3, 12.5])
    acc = 0.02 * 0.001
    q = quantize(b, acc, 0, "int32")
    assert q.tolist() == [15000, -50, 625000]  # 0.3 / 2e-5 = 15000 (up to float64 rounding of 2e-5), ...
    assert np.array_equal(dequantize(q, np.float64(acc)), dequantize_ref(q, np.float64(acc)))


def test_dequantize_wide_int32_codes_exactly():
    # 2^30 + 1 is not a float32; q - zp = 2^30 + 1 - 1 = 2^30 is, and the product 2^30 * 0.5 is exact
    q = np.array([2**30 + 1], np.int32)
    assert dequantize(q, np.float32(0.5), 1)[0] == F32(2.0**29)


# ---------------------------------------------------------------- bad input, closed (issue 9)
def test_uint64_zero_point_is_range_checked_not_wrapped():
    # np.uint64(2^64 - 1).astype(int64) == -1, which lies in int8: it must be refused, not read as -1
    with pytest.raises(ValueError, match="zero_point must lie in"):
        quantize(np.ones(3, F32), 0.1, np.uint64(2**64 - 1), "int8")
    with pytest.raises(ValueError, match="zero_point must lie in"):
        quantize(np.ones(3, F32), 0.1, np.int64(-2**63), "int8")


@pytest.mark.parametrize("eps", [1e-50, 1e-46])
def test_eps_that_underflows_in_float32_raises(eps):
    # 1e-50 > 0 as a Python float but float32(1e-50) == 0: the scale floor would be 0
    assert np.float32(eps) == 0
    with pytest.raises(ValueError, match="eps must be finite and > 0 in float32"):
        qparams_from_range(0.0, 0.0, "int8", eps=eps)


def test_python_float_scale_that_underflows_in_float32_raises():
    # a Python float scale takes x's dtype (float32), where 1e-300 is 0
    with pytest.raises(ValueError, match="scale must be > 0.*underflows"):
        quantize(np.ones(3, F32), 1e-300)


def test_dequantize_rounds_once_beyond_2_24():
    # q - zp = 2^25 + 1 (not a float32) times 1.5: exact 50331649.5, which lies between the float32
    # neighbours 50331648 and 50331652 (spacing 4 above 2^25): nearest is 50331648.
    # Rounding q first gives 2^25 (ties to even), times 1.5 = 50331648 as well; use 2^25 + 3 instead:
    # exact (2^25 + 3) * 1.5 = 50331652.5 -> nearest float32 50331652; q rounded first is 2^25 + 4,
    # times 1.5 = 50331654 -> rounds to 50331656 (ties to even): one ulp off.
    q = np.array([2**25 + 3], np.int32)
    assert dequantize(q, F32(1.5))[0] == F32(50331652)
    assert F32(F32(2**25 + 3) * F32(1.5)) == F32(50331656)  # what rounding twice gives


@given(st.sampled_from([np.int32, np.int64, np.uint32, np.uint64]), st.sampled_from([np.float16, np.float32, np.float64]),
       st.data())
def test_dequantize_wide_codes_equals_exact_ref(qdt, sdt, data):
    info = np.iinfo(qdt)
    q = data.draw(hnp.arrays(qdt, st.integers(1, 8), elements=st.integers(int(info.min), int(info.max))))
    exp = data.draw(st.integers(-70, 10) if sdt != np.float16 else st.integers(-24, -10))
    s = sdt(data.draw(st.floats(1, 2, exclude_max=True)) * 2.0**exp)
    z = data.draw(st.integers(-1000, 1000))
    try:
        got = dequantize(q, s, z)
    except ValueError as e:
        assert "overflows" in str(e)
        return
    assert np.array_equal(got, dequantize_ref(q, s, z))


def test_dequantize_uint64_codes_are_not_wrapped():
    q = np.array([2**64 - 1], np.uint64)
    assert dequantize(q, np.float64(1.0))[0] == 2.0**64  # 2^64 - 1 rounds to 2^64, never -1
    assert dequantize(np.array([-2**63]), np.float32(1.0), 2**62)[0] == F32(-1.5 * 2.0**63)


def test_dequantize_overflow_raises():
    with pytest.raises(ValueError, match="overflows float16"):
        dequantize(np.array([30000], np.int16), np.float16(10.0))
