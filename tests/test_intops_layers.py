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


# ---------------------------------------------------------------- one quantizer: layers and the integer GPT use the core's
def test_linear_layer_weights_and_bias_golden():
    w = np.array([[127, -63.5, 0.5, 1.5],  # max|w| 127: scale 1; -63.5 -> -64, 0.5 -> 0, 1.5 -> 2 (ties to even)
                  [0, 0, 0, 0]], np.float32)  # all zero: qparams_from_range's guard, scale eps = 2^-23, codes 0
    layer = quantize_linear_layer(w, np.array([1.25, 0.5]), 0.5, 0, 0.25)
    assert layer.weight.dtype == np.int8 and layer.weight.tolist() == [[127, -64, 0, 2], [0, 0, 0, 0]]
    assert layer.weight_scale.dtype == np.float32 and layer.weight_scale.tolist() == [1.0, 2.0**-23]
    # bias at x_scale · w_scale: 1.25 / 0.5 = 2.5 -> 2 (tie to even); 0.5 / (0.5 · 2^-23) = 2^23
    assert layer.bias.tolist() == [2, 2**23]
    # x = 0: channel 0 is 2 · (0.5 / 0.25) = 4; the all-zero channel is its bias alone, 2^23 · 2^-24 / 0.25 = 2
    assert layer(np.zeros((1, 4), np.int8)).tolist() == [[4, 2]]


@given(hnp.arrays(np.float32, (3, 5), elements=st.floats(-4, 4, width=32)))
@example(np.array([[1e-6, 0, 0, 0, 0], [0] * 5, [-4, 4, 2.5, 0.5, 1]], np.float32))  # a row under the guard
def test_linear_layer_weights_are_the_narrow_int8_quantizer(w):
    layer = quantize_linear_layer(w, None, 0.1, 0, 0.1)
    # the TFLite int8 weight recipe written out: scale max(max|w_c| / 127, eps) in float64, stored in float32,
    # codes clamp(round_half_even(w / scale), -127, 127)
    s = np.maximum(np.abs(w).max(axis=1).astype(np.float64) / 127, 2.0**-23).astype(np.float32)
    assert np.array_equal(layer.weight_scale, s)
    assert np.array_equal(layer.weight, np.clip(np.rint(w.astype(np.float64) / s[:, None]), -127, 127))


def test_linear_layer_bias_that_does_not_fit_int32():
    # an all-zero row has scale eps: bias 1000 at 0.5 · 2^-23 is 1000 · 2^24 > 2^31 - 1
    with pytest.raises(ValueError, match="b: the bias does not fit in int32"):
        quantize_linear_layer(np.zeros((1, 3)), np.array([1e3]), 0.5, 0, 1.0)


@pytest.mark.parametrize("sign", [1, -1])
def test_linear_layer_bias_at_the_int32_edges(sign):
    # w = [[127]]: w_scale = 127 / 127 = 1; x_scale 2^-10, so the bias scale is 2^-10 and b = k · 2^-10 is exact.
    # k = ±(2^31 − 1) fits the narrow int32 range; ±(2^31 − 1.5) ties to ±(2^31 − 2) (even);
    # ±(2^31 − 0.5) ties to ±2^31 (even), outside ±(2^31 − 1) (TFLite's bias range): refused, never clamped
    w = np.array([[127.0]], np.float32)
    for k, code in ((2**31 - 1, 2**31 - 1), (2**31 - 1.5, 2**31 - 2)):
        layer = quantize_linear_layer(w, np.array([sign * k * 2.0**-10]), 2.0**-10, 0, 1.0)
        assert layer.bias.dtype == np.int32 and layer.bias.tolist() == [sign * code]
    with pytest.raises(ValueError, match="b: the bias does not fit in int32"):
        quantize_linear_layer(w, np.array([sign * (2**31 - 0.5) * 2.0**-10]), 2.0**-10, 0, 1.0)


def test_int_gpt_requantizations_golden():
    from refquant.ptq.intgpt import R_MAX, _to_int8, _to_residual

    # M = 1/4 = 2^30 · 2^(-1-31): 1000 / 4 = 250 saturates to 127 and -250 to -127 (narrow: never -128);
    # ±6 / 4 = ±1.5 -> ±2 (rounding divide by a power of two: ties away from zero)
    y = _to_int8(np.array([1000, -1000, 6, -6], np.int32), 1.0, 4.0)
    assert y.dtype == np.int8 and y.tolist() == [127, -127, 2, -2]
    # M = 1.5 = 0.75 · 2^31 · 2^(1-31): (2^30 - 1) · 1.5 saturates to ±R_MAX = ±(2^30 - 1); ±2 · 1.5 = ±3
    x = np.array([2**30 - 1, -(2**30 - 1), 2, -2], np.int32)
    assert _to_residual(x, 1.5, 1.0).tolist() == [R_MAX, -R_MAX, 3, -3]


def test_int_gpt_activation_scales_are_absmax_over_127():
    from refquant.models.gpt import GPTConfig, init_params
    from refquant.ptq.intgpt import _calibrate_ranges, build_int_gpt

    cfg = GPTConfig(vocab_size=11, context_length=6, n_layer=1, n_head=2, n_embd=8)
    p = init_params(cfg, 1)
    calib = [np.arange(12).reshape(2, 6) % 11]
    m = build_int_gpt(p, cfg, calib, headroom=1.25)
    amax = _calibrate_ranges(p, cfg, calib)
    # symmetric narrow int8 with headroom: 1.25 · max|x| / 127 (qparams_from_range in float64, above its eps floor)
    assert m.s_act == {k: 1.25 * v / 127 for k, v in amax.items() if k != "res"}
    assert all(np.abs(layer.weight).max() <= 127 for layer in m.layers.values())


@pytest.mark.parametrize("call, match", [
    (lambda: quantize_linear_layer(np.array([[1.0, np.inf]]), None, 0.1, 0, 0.1), "w must be finite"),
    (lambda: quantize_linear_layer(np.ones((2, 0)), None, 0.1, 0, 0.1), "w must be 2-D"),
    (lambda: quantize_linear_layer(np.ones((1, 2)), np.array([1e308]), 0.1, 0, 0.1), "b: the bias does not fit"),
    (lambda: quantize_linear_layer(np.ones((1, 2)), None, "0.1", 0, 0.1), "x_scale: expected a real scalar"),
    (lambda: quantize_linear_layer(np.ones((1, 2)), None, 0.1, 0.5, 0.1), "x_zero_point: expected an integer"),
    # multiplier 0.1 · (1/127) / 1e-20 > 2^30: no int32 shift applies it
    (lambda: quantize_linear_layer(np.ones((1, 2)), None, 0.1, 0, 1e-20), "x_scale · w_scale / y_scale"),
    (lambda: int_attention(*[np.ones((2, 4), np.int8)] * 3, 1.0, 1e300, 1.0, 1.0), "q_scale · k_scale"),
    (lambda: int_attention(*[np.ones((2, 4), np.int8)] * 3, 1.0, 1.0, 1.0, 1e-300), "out_scale"),
    (lambda: int_attention(*[np.ones((2, 4), np.int8)] * 3, 1.0, 1.0, np.ones(3), 1.0), "v_scale: expected a real"),
])
def test_layer_arguments_are_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_int_gpt_logits_match_the_regression_golden():
    # REGRESSION golden, not an oracle: tests/data/intgpt_logits_golden.npz holds the int8 logits that the
    # integer GPT (refquant.ptq.intgpt, before the fast requantization rewrite of issue 14 item 5) computed
    # for the shipped checkpoint, calibrated on the first 4 validation windows, on 4 windows from the middle
    # of the validation split. The rewrite must reproduce them bit for bit.
    import os

    from refquant.io.checkpoint import load_checkpoint
    from refquant.models.corpus import train_val_split
    from refquant.ptq.intgpt import build_int_gpt, int_forward

    g = np.load(os.path.join(os.path.dirname(__file__), "data", "intgpt_logits_golden.npz"))
    p, cfg, meta = load_checkpoint()
    _, val = train_val_split(meta["seed"], n_train=0)
    T = cfg.context_length
    m = build_int_gpt(p, cfg, [val[:4 * T].reshape(4, T).astype(np.int64)])
    x = val[len(val) // 2: len(val) // 2 + 4 * T].reshape(4, T).astype(np.int64)
    assert np.array_equal(x, g["idx"])
    q = int_forward(m, x)
    assert q.dtype == np.int8 and np.array_equal(q, g["logits"])
