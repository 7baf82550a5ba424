"""Integer-only nonlinearities and blocks: integer in, integer out; error bounds against float."""
import math

import numpy as np
import pytest
from hypothesis import example, given, strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import erf

from refquant import quantize
from refquant.integer.layers import int_attention, quantize_linear_layer
from refquant.integer.nonlinear import int_erf, int_exp, int_gelu, int_layernorm, int_poly2, int_softmax, isqrt

S = 2.0**-8


def gelu(x):
    return x * 0.5 * (1 + erf(x / math.sqrt(2)))


def test_int_poly2_golden():
    # a(x + b)^2 + c with a = 1, b = 2, c = 3 and S = 1: q_b = 2, q_c = 3: q = 1 -> 9 + 3 = 12
    q, s = int_poly2(np.array([1, -2]), 1.0, 1.0, 2.0, 3.0)
    assert q.tolist() == [12, 3] and s == 1.0


def test_isqrt_equals_math_isqrt():
    n = np.array([0, 1, 2, 3, 4, 15, 16, 17, 10**12, 10**12 - 1, 2**62 - 1, 2**61, 99999999999])
    assert isqrt(n).tolist() == [math.isqrt(int(v)) for v in n]


@given(hnp.arrays(np.int64, 20, elements=st.integers(0, 2**62 - 1)))
def test_isqrt_property(n):
    r = isqrt(n)
    assert np.all(r * r <= n) and np.all((r + 1) * (r + 1) > n)


def test_outputs_are_integer_arrays():
    q = np.arange(-500, 1, dtype=np.int32)
    for f in (int_exp, int_erf, int_gelu):
        out, s = f(q, S)
        assert out.dtype == np.int32 and isinstance(s, float)
    out, _ = int_gelu(np.arange(-8000, 8000, dtype=np.int32), 2.0**-10)  # values beyond int32 before requantization
    assert out.dtype == np.int32
    p, s = int_softmax(np.array([[3, 1, -2]], np.int32), 0.1)
    assert p.dtype == np.int32 and s == 2.0**-8
    o, so = int_layernorm(np.array([[1, 2, 3, 4]], np.int32), 0.1, np.ones(4), np.zeros(4))
    assert o.dtype == np.int32 and so.dtype == np.float64


def test_error_bounds_against_float():
    # measured bounds, stated in refquant.integer.nonlinear: the second-order polynomials of I-BERT set them
    q = np.arange(-4000, 1)
    e, se = int_exp(q, S)
    assert np.max(np.abs(e * se - np.exp(q * S))) < 3e-3  # exp on [-15.6, 0]
    q = np.arange(-1500, 1500)
    x = q * S
    g, sg = int_gelu(q, S)
    assert np.max(np.abs(g * sg - gelu(x))) < 2e-2
    er, ser = int_erf(q, S)
    assert np.max(np.abs(er * ser - erf(x))) < 0.1  # the erf polynomial is loose near 0; x·erf in GELU hides it


@given(hnp.arrays(np.float64, (3, 17), elements=st.floats(-8, 8)))
def test_softmax_within_a_few_lsb(logits):
    s = 0.01
    q = np.round(logits / s).astype(np.int64)
    p, sp = int_softmax(q, s)
    x = q * s
    ref = np.exp(x - x.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    assert np.all(p >= 0) and np.all(p <= 256)
    assert np.max(np.abs(p * sp - ref)) < 3 * sp  # three steps of 1/256: floor of exp, of the 16-bit requant, of the product


@given(hnp.arrays(np.float64, (2, 32), elements=st.floats(-5, 5)).filter(lambda a: np.all(a.std(1) > 0.1)))
@example(np.array([[0.0] + [1.0] * 31, [1.0] * 5 + [0.0] + [1.0] * 26]))  # a rounded mean would be off by 0.01
def test_layernorm_close_to_float(x):
    s = 0.01
    q = np.round(x / s).astype(np.int64)
    gamma = np.linspace(0.5, 1.5, 32)
    beta = np.linspace(-0.2, 0.2, 32)
    o, so = int_layernorm(q, s, gamma, beta)
    xq = q * s
    ref = (xq - xq.mean(1, keepdims=True)) / xq.std(1, keepdims=True) * gamma + beta
    # exact centring; what remains is isqrt's floor (relative 1/σ_int), the 2^-30 output step and the bias floor
    assert np.max(np.abs(o * so - ref)) < 1e-4


def test_attention_and_linear_close_to_float():
    rng = np.random.default_rng(0)
    T, d = 8, 16
    qf, kf, vf = (rng.standard_normal((T, d)).astype(np.float32) for _ in range(3))
    sq, sk, sv = (float(np.abs(t).max() / 127) for t in (qf, kf, vf))
    qq, kq, vq = (quantize(t, s, 0, "int8") for t, s in ((qf, sq), (kf, sk), (vf, sv)))
    out = int_attention(qq, kq, vq, sq, sk, sv, sv)
    assert out.dtype == np.int8
    sc = qf @ kf.T / np.sqrt(d)
    sc[np.triu(np.ones((T, T), bool), 1)] = -np.inf
    p = np.exp(sc - sc.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert np.max(np.abs(out * sv - p @ vf)) < 1.5 * sv  # within 1.5 output steps
    w = rng.standard_normal((32, 16)).astype(np.float32) * 0.2
    b = rng.standard_normal(32) * 0.1
    x = rng.standard_normal((5, 16)).astype(np.float32)
    sx = float(np.abs(x).max() / 127)
    yf = x @ w.T + b
    sy = float(np.abs(yf).max() / 127)
    layer = quantize_linear_layer(w, b, sx, 0, sy)
    y = layer(quantize(x, sx, 0, "int8"))
    assert y.dtype == np.int8 and np.max(np.abs(y * sy - yf)) < 2 * sy


def test_first_token_attends_only_to_itself():
    v = np.arange(16, dtype=np.int8).reshape(4, 4)
    q = np.ones((4, 4), np.int8)
    out = int_attention(q, q, v, 0.1, 0.1, 1.0, 1.0)
    # row 0 sees only v[0] with probability 255/256 -> round(v[0] * 255/256) = v[0] for these small values
    assert out[0].tolist() == v[0].tolist()


@pytest.mark.parametrize("call, match", [
    (lambda: int_exp(np.array([1]), S), "q must be <= 0"),
    (lambda: int_exp(np.array([-1]), 1.0), "coarser than ln 2"),
    (lambda: int_exp(np.array([-1.0]), S), "q: expected an integer"),
    (lambda: int_gelu(np.array([1]), 0.0), "scale must be finite and > 0"),
    (lambda: int_softmax(np.array([1]), S, out_bits=0), "out_bits"),
    (lambda: isqrt(np.array([-1])), "n must be >= 0"),
    (lambda: int_layernorm(np.ones((1, 3), np.int32), S, np.ones(2), np.zeros(3)), "gamma and beta"),
    (lambda: int_layernorm(np.ones((1, 3), np.int32), S, np.zeros(3), np.zeros(3)), "gamma must be non-zero"),
    (lambda: int_attention(np.ones((2, 4), np.int16), np.ones((2, 4), np.int8), np.ones((2, 4), np.int8), 1, 1, 1, 1), "q: expected an int8"),
    (lambda: quantize_linear_layer(np.ones((2, 3)), np.ones(3), 1.0, 0, 1.0), "b must have shape"),
    (lambda: quantize_linear_layer(np.ones((2, 3)), None, 0.0, 0, 1.0), "x_scale must be finite"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
