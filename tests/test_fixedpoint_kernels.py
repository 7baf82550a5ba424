"""Fixed-point primitives (gemmlowp / TFLite) against exact rational arithmetic; integer GEMM and
FullyConnected: fast path == loop twin == exact, requantization, overflow, bad input."""
from fractions import Fraction
import math

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from refquant.integer.fixedpoint import (_multiply_by_quantized_multiplier_ref, multiply_by_quantized_multiplier,
                                         quantize_multiplier, rounding_divide_by_pot, _rounding_divide_by_pot_ref,
                                         saturating_rounding_doubling_high_mul,
                                         _saturating_rounding_doubling_high_mul_ref)
from refquant.integer.nonlinear import int_erf, int_exp, int_layernorm, int_poly2, int_softmax
from refquant.integer.gemm import K_CHUNK, fully_connected, fully_connected_ref, int_matmul, int_matmul_ref, prepack, requantize

I32 = st.integers(-2**31, 2**31 - 1)


def round_half_up(f: Fraction) -> int:
    return math.floor(f + Fraction(1, 2))


def round_half_away(f: Fraction) -> int:
    return int(math.copysign(math.floor(abs(f) + Fraction(1, 2)), f))


# ---------------------------------------------------------------- fixed point
def test_tensorflow_25087_double_rounding_example():
    # 7984 * 1583594044 / 2^31 / 2^9 = 11.499...: double rounding gives 12, single rounding 11
    assert multiply_by_quantized_multiplier(7984, 1583594044, -9) == 12
    assert multiply_by_quantized_multiplier(7984, 1583594044, -9, rounding="single") == 11
    assert round_half_up(Fraction(7984 * 1583594044, 2**40)) == 11


@pytest.mark.parametrize("real, m, s", [
    (0.5, 2**30, 0),            # frexp(0.5) = (0.5, 0): 0.5 * 2^31
    (1.0, 2**30, 1),            # frexp(1) = (0.5, 1)
    (0.75, 3 * 2**29, 0),       # 0.75 * 2^31
    (3.0, 3 * 2**29, 2),        # frexp(3) = (0.75, 2)
    (0.0, 0, 0),
    (2.0**-40, 0, 0),           # shift -39 < -31: flushed to zero
    (1 - 2.0**-33, 2**30, 1),   # q * 2^31 = 2^31 - 0.25 rounds to 2^31: the carry makes it 2^30, shift + 1
])
def test_quantize_multiplier_golden(real, m, s):
    qm, qs = quantize_multiplier(real)
    assert (int(qm), int(qs)) == (m, s)


@given(st.floats(1e-9, 1e4))
def test_quantize_multiplier_is_normalised_and_close(real):
    m, s = quantize_multiplier(real)
    m, s = int(m), int(s)
    assert 2**30 <= m < 2**31
    assert abs(Fraction(m) * Fraction(2) ** (s - 31) - Fraction(real)) <= Fraction(2) ** (s - 32)  # half a Q0.31 step


@given(I32, I32)
@example(-2**31, -2**31)
@example(2**30, 1)
@example(-(2**30), 1)  # -0.5 exactly: rounds up to 0
def test_srdhm_against_exact_rationals(a, b):
    got = int(saturating_rounding_doubling_high_mul(a, b))
    if a == b == -2**31:
        assert got == 2**31 - 1
    else:
        assert got == round_half_up(Fraction(a * b, 2**31))


@given(I32, st.integers(0, 31))
@example(5, 1)
@example(-5, 1)
@example(-2**31, 31)
def test_rounding_divide_by_pot_against_exact_rationals(x, e):
    assert int(rounding_divide_by_pot(x, e)) == round_half_away(Fraction(x, 2**e))


@given(st.integers(-2**20, 2**20), st.floats(1e-6, 0.99), st.sampled_from(["double", "single"]))
def test_multiply_by_quantized_multiplier_against_exact(x, real, rounding):
    m, s = (int(v) for v in quantize_multiplier(real))
    got = int(multiply_by_quantized_multiplier(x, m, s, rounding=rounding))
    exact = Fraction(x * m) * Fraction(2) ** (s - 31)
    if rounding == "single":
        assert got == round_half_up(exact)
    else:  # two roundings: SRDHM then RDBPOT, each within half a unit
        high = round_half_up(Fraction(x * 2 ** max(s, 0) * m, 2**31))
        assert got == round_half_away(Fraction(high, 2 ** max(-s, 0)))
        assert abs(got - exact) <= 1


def test_vectorised_per_channel():
    x = np.array([[100, -100], [7, 7]], np.int32)
    m, s = quantize_multiplier(np.array([0.5, 0.25]))
    assert multiply_by_quantized_multiplier(x, m, s).tolist() == [[50, -25], [4, 2]]  # 3.5 -> 4, 1.75 -> 2


@pytest.mark.parametrize("call, match", [
    (lambda: quantize_multiplier(np.inf), "real must be finite"),
    (lambda: quantize_multiplier(2.0**40), "shift > 30"),
    (lambda: rounding_divide_by_pot(1, 32), "exponent must lie"),
    (lambda: multiply_by_quantized_multiplier(1.5, 2**30, 0), "x: expected an integer"),
    (lambda: multiply_by_quantized_multiplier(2**31, 2**30, 0), "x must fit in int32"),
    (lambda: multiply_by_quantized_multiplier(1, 2**30, 31), "shift must lie"),
    (lambda: multiply_by_quantized_multiplier(2**30, 2**30, 2), "overflows int32"),
    (lambda: multiply_by_quantized_multiplier(1, 2**30, 0, rounding="nearest"), "rounding"),
])
def test_fixedpoint_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------- fast closed forms == the gemmlowp transcriptions (_ref)
EXTREMES = [-2**31, -2**31 + 1, -2**30 - 1, -2**30, -2**30 + 1, -1, 0, 1, 2**30 - 1, 2**30, 2**30 + 1, 2**31 - 1]
I32X = st.one_of(I32, st.sampled_from(EXTREMES), st.integers(-300, 300))


def _same(fast, ref):
    """Both raise the same ValueError, or both return equal int32 arrays (tolerance 0)."""
    try:
        want = ref()
    except ValueError as e:
        with pytest.raises(ValueError, match=None) as got:
            fast()
        assert str(got.value) == str(e)
        return
    have = fast()
    assert have.dtype == want.dtype == np.int32 and have.shape == want.shape
    assert np.array_equal(have, want)


@given(hnp.arrays(np.int32, st.integers(0, 12), elements=I32X), I32X)
@example(np.array([-2**31, -2**31, 2**30, -(2**30), -(2**30) - 1], np.int32), -2**31)  # saturation; ±0.5 ties
@example(np.array([3 * 2**29, -3 * 2**29, 1, -1], np.int32), 2)  # ±1.5 ties -> 2, -1 (half up); ±2^-30 -> 0
def test_srdhm_fast_equals_ref(a, b):
    _same(lambda: saturating_rounding_doubling_high_mul(a, b), lambda: _saturating_rounding_doubling_high_mul_ref(a, b))


@st.composite
def rdbp_ties(draw):
    """x = (2q + 1) · 2^(e−1): exactly half-way between two multiples of 2^e."""
    e = draw(st.integers(1, 31))
    q = draw(st.integers(-2**(31 - e), 2**(31 - e) - 1))
    return np.array([(2 * q + 1) << (e - 1)], np.int64).clip(-2**31, 2**31 - 1).astype(np.int32), e


@given(st.one_of(st.tuples(hnp.arrays(np.int32, st.integers(0, 12), elements=I32X), st.integers(0, 31)),
                 rdbp_ties()))
@example((np.array([5, -5, 6, -6, 7, -7, 2**31 - 1, -2**31], np.int32), 1))  # ±2.5 -> ±3 (away from zero)
@example((np.array([5, -5, 2**31 - 1, -2**31], np.int32), 0))  # exponent 0: the identity
@example((np.array([2**31 - 1, -2**31, -2**30, 2**30], np.int32), 31))
def test_rounding_divide_by_pot_fast_equals_ref(case):
    x, e = case
    _same(lambda: rounding_divide_by_pot(x, e), lambda: _rounding_divide_by_pot_ref(x, e))


def test_rounding_divide_by_pot_per_element_exponents_equal_ref():
    x = np.array([[5, -5, 6, -6], [2**31 - 1, -2**31, -3, 3]], np.int32)
    e = np.array([0, 1, 2, 31])
    assert rounding_divide_by_pot(x, e).tolist() == _rounding_divide_by_pot_ref(x, e).tolist()
    # by hand: row 0: 5 (e=0), -2.5 -> -3, 1.5 -> 2, -6/2^31 -> -0 = 0
    assert rounding_divide_by_pot(x, e)[0].tolist() == [5, -3, 2, 0]


@st.composite
def multiplier_case(draw):
    rounding = draw(st.sampled_from(["double", "single"]))
    n = draw(st.integers(1, 4))
    per_channel = draw(st.booleans())
    shape = (n,) if per_channel else ()
    m_el = st.one_of(st.integers(2**30, 2**31 - 1), st.sampled_from([0, 2**30, 2**31 - 1, 3 * 2**29]))
    if rounding == "double":
        m_el = st.one_of(m_el, st.sampled_from([-2**31, -2**31 + 1, -(2**30)]), st.integers(-2**31, 2**31 - 1))
    s_el = st.one_of(st.integers(-31, 30), st.sampled_from([0, 0, -1, 1, -31]), st.integers(-12, 3))
    m = draw(hnp.arrays(np.int32, shape, elements=m_el))
    s = draw(hnp.arrays(np.int32, shape, elements=s_el))
    x = draw(hnp.arrays(np.int32, (draw(st.integers(0, 5)), n), elements=I32X))
    return x, m, s, rounding


@given(multiplier_case())
@example((np.array([[7984]], np.int32), np.int32(1583594044), np.int32(-9), "double"))  # tensorflow#25087: 12
@example((np.array([[7984]], np.int32), np.int32(1583594044), np.int32(-9), "single"))  # ... and 11
@example((np.array([[-2**31, 5, -5, 2**31 - 1]], np.int32), np.int32(-2**31), np.int32(0), "double"))  # shift 0
@example((np.array([[-2**31, 3, -3, 1, -1]], np.int32), np.int32(-2**31), np.int32(-1), "double"))  # saturate, e=1
@example((np.array([[3, -3, 1, -1, 2, -2]], np.int32), np.int32(2**30), np.int32(-1), "double"))  # x/4: ties
@example((np.array([[3, -3, 1, -1, 2, -2]], np.int32), np.int32(2**30), np.int32(-1), "single"))
@example((np.array([[1, -1, 2**10]], np.int32), np.int32(2**30), np.int32(21), "double"))  # left shift fits
@example((np.array([[1, 2**10, -2**10 - 1]], np.int32), np.int32(2**30), np.int32(21), "double"))  # overflows
def test_multiply_by_quantized_multiplier_fast_equals_ref(case):
    x, m, s, rounding = case
    _same(lambda: multiply_by_quantized_multiplier(x, m, s, rounding=rounding),
          lambda: _multiply_by_quantized_multiplier_ref(x, m, s, rounding=rounding))


def test_per_channel_double_rounding_at_the_sign_boundary_golden():
    # channel 0: p = -1 · 2^30 = -2^30: SRDHM = round_half_up(-0.5) = 0, RDBP(0, 1) = 0
    # channel 1: p = -(2^30 + 1) < -2^30: SRDHM = floor(-1 / 2^31) = -1, RDBP(-1, 2) = round(-0.25) = 0
    # channel 2: shift 0: SRDHM(-2, 2^30) = round_half_up(-1) = -1;  channel 3: SRDHM(3, 2^30) = 1.5 -> 2
    x = np.array([[-1, -1, -2, 3]], np.int32)
    m = np.array([2**30, 2**30 + 1, 2**30, 2**30], np.int32)
    s = np.array([-1, -2, 0, 0], np.int32)
    assert multiply_by_quantized_multiplier(x, m, s).tolist() == [[0, 0, -1, 2]]
    assert _multiply_by_quantized_multiplier_ref(x, m, s).tolist() == [[0, 0, -1, 2]]


def test_multiply_by_quantized_multiplier_int64_input_and_no_mutation():
    x = np.array([[2**31 - 1, -2**31, 7984]], np.int64)
    m, s = np.array([2**30, 1583594044, 1583594044], np.int32), np.array([-1, 0, -9], np.int32)
    before = x.copy()
    got = multiply_by_quantized_multiplier(x, m, s)
    assert np.array_equal(x, before)
    # (2^31 - 1) / 4 = 536870911.75 -> 536870912; -2^31 · 0.737.. = -1583594044 exactly; tf#25087: 12
    assert got.tolist() == [[536870912, -1583594044, 12]]
    assert got.tolist() == _multiply_by_quantized_multiplier_ref(x, m, s).tolist()


# ---------------------------------------------------------------- integer GEMM
@st.composite
def gemm_case(draw):
    ta, tb = draw(st.sampled_from([np.int8, np.uint8])), draw(st.sampled_from([np.int8, np.uint8]))
    m, n = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    k = draw(st.sampled_from([0, 1, 7, K_CHUNK - 1, K_CHUNK, K_CHUNK + 1, 2 * K_CHUNK + 3]))
    ia, ib = np.iinfo(ta), np.iinfo(tb)
    extreme = draw(st.booleans())  # all codes at the end of the range: accumulators near their limits
    if extreme:
        a = np.full((m, k), ia.min, ta)
        b = np.full((k, n), ib.max, tb)
    else:
        a = draw(hnp.arrays(ta, (m, k), elements=st.integers(ia.min, ia.max)))
        b = draw(hnp.arrays(tb, (k, n), elements=st.integers(ib.min, ib.max)))
    za = draw(st.none() | st.integers(ia.min, ia.max).map(lambda v: np.array(v, ta))
              | hnp.arrays(ta, (m,), elements=st.integers(ia.min, ia.max)))
    zb = draw(st.none() | st.integers(ib.min, ib.max).map(lambda v: np.array(v, tb))
              | hnp.arrays(tb, (n,), elements=st.integers(ib.min, ib.max)))
    return a, b, za, zb


@given(gemm_case())
@settings(max_examples=40)
def test_int_matmul_fast_equals_exact_and_ref(case):
    a, b, za, zb = case
    za_ = 0 if za is None else np.asarray(za, np.int64).reshape(-1, 1)
    zb_ = 0 if zb is None else np.asarray(zb, np.int64).reshape(1, -1)
    exact = (a.astype(np.int64) - za_) @ (b.astype(np.int64) - zb_)  # int64: no overflow for these sizes
    got = int_matmul(a, b, za, zb)
    assert got.dtype == np.int32 and np.array_equal(got, exact)
    assert np.array_equal(int_matmul(a, prepack(b), za, zb), exact)
    if a.shape[1] <= 7:
        assert np.array_equal(int_matmul_ref(a, b, za, zb), exact)


@pytest.mark.parametrize("dtypes", [(np.int8, np.int8), (np.uint8, np.uint8), (np.uint8, np.int8)])
def test_int_matmul_cache_sized_slices_are_exact(monkeypatch, dtypes):
    # A 64-row conversion buffer (BUFFER_BYTES = 64 rows · N · 4 bytes) makes K = 2100 run as slices of 64
    # inside the exact 1024-row chunks (1024 = 16 · 64, then a 52-row tail), for few rows (M = 3 < SMALL_M)
    # and for a batch of b's; extreme codes (all -128 or 255) included. Oracle: float64 products, exact here.
    import refquant.integer.gemm as gemm

    M, K, N = 3, 2100, 5
    monkeypatch.setattr(gemm, "BUFFER_BYTES", 64 * N * 4)
    rng = np.random.default_rng(0)
    ia, ib = np.iinfo(dtypes[0]), np.iinfo(dtypes[1])
    a = rng.integers(ia.min, ia.max + 1, (2, M, K)).astype(dtypes[0])
    b = rng.integers(ib.min, ib.max + 1, (2, K, N)).astype(dtypes[1])
    a[0, 0], b[0, :, 0] = ia.min, ib.min
    za, zb = np.array([ia.max, 0, 7], dtypes[0]), np.array([ib.min, 0, 1, ib.max, 3], dtypes[1])
    for A, B in ((a[0], b[0]), (a, b), (a, b[1])):
        exact = (A.astype(np.float64) - za[:, None]) @ (B.astype(np.float64) - zb[None, :].astype(np.float64))
        assert np.array_equal(int_matmul(A, B, za, zb), exact.astype(np.int64))
        assert np.array_equal(int_matmul(A, B), (A.astype(np.float64) @ B.astype(np.float64)).astype(np.int64))


def test_int_matmul_overflow_raises_not_wraps():
    k = 33100  # 33100 * 255 * 255 > 2^31 - 1
    a = np.full((1, k), 255, np.uint8)
    b = np.full((k, 1), 255, np.uint8)
    with pytest.raises(ValueError, match="int32 accumulator overflows"):
        int_matmul(a, b, np.array(0, np.uint8), np.array(0, np.uint8))
    assert int_matmul(a[:, :33000], b[:33000]).item() == 33000 * 255 * 255  # 2,145,825,000 fits


def test_requantize_and_fully_connected_golden():
    # x = [[2, 4]], w = [[1, 3], [-1, 1]], zero points 0: acc = [14, 2]; bias [1, -1] -> [15, 1]
    # M = 0.5: 15 * 0.5 = 7.5 -> 8 (half away in RoundingDivideByPOT), 1 * 0.5 = 0.5 -> 1; + out zp 10
    x = np.array([[2, 4]], np.int8)
    w = np.array([[1, 3], [-1, 1]], np.int8)
    m, s = quantize_multiplier(0.5)
    y = fully_connected(x, w, np.array([1, -1], np.int32), x_zero_point=0, multiplier=m, shift=s, out_zero_point=10)
    assert y.tolist() == [[18, 11]] and y.dtype == np.int8
    assert fully_connected_ref(x, w, np.array([1, -1], np.int32), x_zero_point=0, multiplier=m, shift=s,
                               out_zero_point=10).tolist() == [[18, 11]]
    assert requantize(np.array([1000, -1000]), m, s, 0, "int8").tolist() == [127, -128]  # saturation


@given(st.data())
@settings(max_examples=30)
def test_fully_connected_fast_equals_tflite_loop(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    batch, n_in, n_out = (data.draw(st.integers(1, 3)) for _ in range(3))
    x = rng.integers(0, 256, (batch, n_in)).astype(np.uint8)
    w = rng.integers(-127, 128, (n_out, n_in)).astype(np.int8)
    bias = rng.integers(-5000, 5000, n_out).astype(np.int32)
    m, s = quantize_multiplier(rng.uniform(1e-4, 0.9, n_out))  # per-channel
    xz, yz = int(rng.integers(0, 256)), int(rng.integers(0, 256))
    for rounding in ["double", "single"]:
        kw = dict(x_zero_point=xz, multiplier=m, shift=s, out_zero_point=yz, qrange="uint8", rounding=rounding)
        a = fully_connected(x, w, bias, **kw)
        b = fully_connected_ref(x, w, bias, **kw)
        assert np.array_equal(a, b)
        assert np.array_equal(fully_connected(x, prepack(w.T), bias, **kw), a)


@pytest.mark.parametrize("call, match", [
    (lambda: int_matmul(np.ones((2, 3), np.int16), np.ones((3, 2), np.int8)), "a: expected int8 or uint8"),
    (lambda: int_matmul(np.ones((2, 3)), np.ones((3, 2), np.int8)), "a: expected an integer"),
    (lambda: int_matmul(np.ones((2, 3), np.int8), np.ones((2, 2), np.int8)), "inner dimensions"),
    (lambda: int_matmul(np.ones((2, 3), np.int8), np.ones((3, 2), np.int8), np.ones(3, np.int8)), "per-row"),
    (lambda: int_matmul(np.ones((2, 3), np.int8), np.ones((3, 2), np.int8), None, np.array([200])), "b_zero_point must lie"),
    (lambda: requantize(np.ones(2, np.int32), 2**30, 0, 300, "int8"), "out_zero_point must lie"),
    (lambda: fully_connected(np.ones((1, 2), np.int8), np.ones((3, 2), np.int8), np.ones(2, np.int32), x_zero_point=0,
                             multiplier=2**30, shift=0, out_zero_point=0),
     "bias must have shape"),
])
def test_kernel_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- bad input, closed (issue 9)
@pytest.mark.parametrize("call, match", [
    (lambda: requantize(np.array([2**40]), 2**30, 0), r"^acc must fit in int32"),  # used to say "x"
    (lambda: requantize(np.ones(2, np.float32), 2**30, 0), r"^acc: expected an integer"),
    (lambda: requantize(np.ones(2, np.int32), 2**30, 0, 0.5), "out_zero_point must be an int"),  # int(0.5) == 0
    (lambda: requantize(np.ones((2, 3), np.int32), np.full(7, 2**30), 0), "acc, multiplier, shift: shapes do not"),
    (lambda: int_matmul(np.ones((2, 3), np.int8), np.ones((3, 2), np.int8), np.uint64(2**64 - 1)),
     "a_zero_point must lie in"),  # uint64 2^64 - 1 used to wrap to -1, inside int8
    (lambda: quantize_multiplier(np.array([0.3]) + 0j), "real: expected a real"),  # dropped the imaginary part
    (lambda: fully_connected(np.ones((1, 2), np.int64), np.ones((3, 2), np.int8), None, x_zero_point=0,
                             multiplier=2**30, shift=0, out_zero_point=0), "^x: expected int8"),  # said "a"
    (lambda: fully_connected(np.ones((1, 2), np.int8), np.ones((3, 2), np.int8), None, x_zero_point=np.uint64(2**64 - 1),
                             multiplier=2**30, shift=0, out_zero_point=0), "x_zero_point must lie in"),
    (lambda: fully_connected_ref(np.ones((1, 2), np.int8), np.ones((3, 2), np.int8), np.ones(3), x_zero_point=0,
                                 multiplier=2**30, shift=0, out_zero_point=0), "bias: expected an integer"),
    (lambda: fully_connected_ref(np.ones((1, 2), np.int8), np.ones((3, 2), np.int8), None, x_zero_point=0,
                                 multiplier=0.5, shift=0, out_zero_point=0), "multiplier: expected an integer"),
])
def test_more_bad_input_raises_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_fully_connected_quantization_parameters_are_keyword_only():
    x, w = np.ones((1, 2), np.int8), np.ones((3, 2), np.int8)
    kw = dict(x_zero_point=0, multiplier=2**30, shift=0, out_zero_point=1)  # 2 * 0.5 + 1 = 2
    assert fully_connected(x, w, None, **kw).tolist() == [[2, 2, 2]]
    with pytest.raises(TypeError):  # the quantization parameters are keyword-only
        fully_connected(x, w, None, 0, 0, 2**30, 0, 1)


@pytest.mark.parametrize("call, match", [
    (lambda: int_poly2(np.ones(2, np.int32), 1e-300, 0.5, 1.0, 0.25), "scale: b / scale"),  # was ZeroDivisionError
    (lambda: int_poly2(np.ones(2, np.int32), 0.01, 0.0, 1.0, 0.25), "a must be non-zero"),
    (lambda: int_exp(-np.ones(2, np.int32), 1e-45), "scale: ln 2 / scale"),  # was OverflowError
    (lambda: int_erf(np.ones(2, np.int32), "0.1"), "scale must be a real number"),  # was accepted
    (lambda: int_softmax(np.ones((2, 3), np.int32), 0.01, axis=5), "axis=5 is out of range for q"),  # IndexError
    (lambda: int_softmax(np.zeros((2, 0), np.int32), 0.01), "q: softmax needs at least one element"),
    (lambda: int_softmax(np.ones(3, np.int32), 0.01, out_bits=True), "out_bits must be an int"),
    (lambda: int_layernorm(np.ones((2, 3), np.int32), 0.01, np.ones(3), np.array([np.inf, 0, 0])), "beta: must be finite"),
    (lambda: int_layernorm(np.array(3, np.int32), 0.01, np.ones(1), np.ones(1)), "q: expected at least one dimension"),
])
def test_nonlinear_bad_input_raises_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_int_softmax_of_extreme_int64_scores_does_not_wrap():
    # q - max(q) for q = -2^63 and max 5 wraps to 2^63 - 5 in int64; that element's exp is 0
    got, _ = int_softmax(np.array([[-2**63, 5, 3]], np.int64), 0.01)
    ref, _ = int_softmax(np.array([[-10**6, 5, 3]], np.int64), 0.01)
    assert np.array_equal(got, ref) and got[0, 0] == 0
    # softmax is shift-invariant: the same scores at the bottom of int64
    low, _ = int_softmax(np.array([[-2**63, -2**63 + 5, -2**63 + 3]], np.int64), 0.01)
    assert np.array_equal(low, int_softmax(np.array([[0, 5, 3]], np.int64), 0.01)[0])
