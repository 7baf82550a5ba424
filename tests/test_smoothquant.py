"""refquant.ptq.smoothquant: the smoothing scale by hand and against its loop twin, a fold that leaves
the float model unchanged, the ranges it equalises, which inputs are smoothed, and W8A8 on a model
with an activation outlier channel."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from refquant.models import gpt, llama
from refquant.models.lm import fold_scale, llama_lm, tiny_gpt, weight
from refquant.ptq.hessian import collect_statistics
from refquant.ptq.smoothquant import (act_scales, smooth_lm, smooth_scales, smooth_scales_ref, smoothquant_w8a8,
                                      w8a8)

GCFG = gpt.GPTConfig(vocab_size=11, context_length=8, n_layer=2, n_head=2, n_embd=8)
LCFG = llama.LlamaConfig(vocab_size=13, context_length=16, n_layer=1, n_embd=8, n_ff=12, n_head=2, n_kv_head=2,
                         rope_dim=4)
CALIB = [np.arange(16).reshape(2, 8) % 11, (np.arange(16).reshape(2, 8) * 5 + 3) % 11]


def _gpt(outlier: float = 1.0):
    """A random tiny GPT with gains and biases away from 1 and 0; ``outlier`` > 1 makes channel 3 of
    both LayerNorms' outputs that many times larger while the float model stays the same (the
    columns of c_attn / c_fc divided by it): the activation outlier SmoothQuant is about."""
    p = gpt.init_params(GCFG, seed=1)
    rng = np.random.default_rng(2)
    p = {k: (v + 0.2 * rng.standard_normal(v.shape)).astype(np.float32) if v.ndim == 1 else v for k, v in p.items()}
    lm = tiny_gpt(GCFG)
    s = np.ones(8)
    s[3] = 1 / outlier
    for fold in lm.scale_folds:
        if fold.linears[0].endswith(("c_attn.w", "c_fc.w")):
            p = fold_scale(lm, p, fold, s)
    return lm, p


def test_smooth_scales_by_hand():
    # act_max = [4, 1]; W1 = [[1, -2], [0.5, 0.25]], W2 = [[-2, 1]]: w = column max |W| over both = [2, 2]
    # α = 0.5: s = [√4 / √2, √1 / √2] = [√2, 1/√2];  α = 1: s = a = [4, 1];  α = 0: s = 1 / w = [0.5, 0.5]
    a, w1, w2 = np.array([4.0, 1.0]), np.array([[1.0, -2.0], [0.5, 0.25]]), np.array([[-2.0, 1.0]])
    np.testing.assert_allclose(smooth_scales(a, [w1, w2], 0.5), [2 ** 0.5, 2 ** -0.5], rtol=1e-15)
    np.testing.assert_array_equal(smooth_scales(a, [w1, w2], 1.0), [4.0, 1.0])
    np.testing.assert_array_equal(smooth_scales(a, [w1, w2], 0.0), [0.5, 0.5])
    # clamps: a channel never active (a = 0) gets s = max(0 / …, 1e-5) = 1e-5; an all-zero column gets w = 1e-5,
    # so with a = 1, α = 0.5: s = 1 / √1e-5
    s = smooth_scales(np.array([0.0, 1.0]), [np.array([[1.0, 0.0]])], 0.5)
    np.testing.assert_allclose(s, [1e-5, 1e-5 ** -0.5], rtol=1e-12)


@settings(max_examples=40)
@given(st.integers(1, 3), st.integers(1, 6), st.floats(0, 1), st.data())
def test_smooth_scales_equal_their_loop_twin(n, k, alpha, data):
    ws = [data.draw(hnp.arrays(np.float32, (data.draw(st.integers(1, 3)), k),
                               elements=st.floats(-8, 8, width=32))) for _ in range(n)]
    a = data.draw(hnp.arrays(np.float64, k, elements=st.floats(0, 100)))
    np.testing.assert_array_equal(smooth_scales(a, ws, alpha), smooth_scales_ref(a, ws, alpha))


@pytest.mark.parametrize("model", ["tiny-gpt", "llama"])
def test_smoothing_leaves_the_float_output_unchanged(model):
    if model == "tiny-gpt":
        lm, p = _gpt(outlier=20.0)
    else:
        lm, p = llama_lm(LCFG), llama.init_params(LCFG)
    before = {k: v.copy() for k, v in p.items()}
    q, chosen = smooth_lm(lm, p, act_scales(lm, p, CALIB), 0.5, linear_folds=True)
    for b in CALIB:
        np.testing.assert_allclose(lm.forward(q, b), lm.forward(p, b), rtol=0, atol=1e-6)
    for k, v in before.items():
        np.testing.assert_array_equal(p[k], v)
    assert chosen and all(np.all(s > 0) for s in chosen.values())


def test_alpha_half_gives_activations_and_weights_the_same_range():
    # after (4), channel j of the input spans a_j / s_j and the weights' column w_j · s_j; at α = 0.5 both are √(a_j w_j)
    lm, p = _gpt(outlier=20.0)
    a = act_scales(lm, p, CALIB)
    q, chosen = smooth_lm(lm, p, a, 0.5)
    a2 = act_scales(lm, q, CALIB)
    for names, s in chosen.items():
        w = np.max([np.abs(weight(lm, p, n)).max(0) for n in names], 0)
        target = np.sqrt(a[names[0]] * w)
        np.testing.assert_allclose(a2[names[0]], target, rtol=1e-5)
        np.testing.assert_allclose(np.max([np.abs(weight(lm, q, n)).max(0) for n in names], 0), target, rtol=1e-5)


def test_act_scales_are_the_hessian_statistics_abs_max():
    lm, p = _gpt(outlier=20.0)
    a = act_scales(lm, p, CALIB)
    stats = collect_statistics(lm.forward, p, CALIB)
    assert set(a) == set(stats) == set(lm.linear_names)
    for name, st_ in stats.items():
        np.testing.assert_array_equal(a[name], st_.abs_max)


def test_which_inputs_are_smoothed():
    lm, p = _gpt()
    a = act_scales(lm, p, CALIB)
    names = lambda chosen: sorted(n for k in chosen for n in k)  # noqa: E731
    # the reference: only the inputs that come out of a norm (q/k/v, fc1); never the head
    assert names(smooth_lm(lm, p, a)[1]) == ["h0.attn.c_attn.w", "h0.mlp.c_fc.w", "h1.attn.c_attn.w", "h1.mlp.c_fc.w"]
    # linear_folds: also attn.c_proj (from the V rows of c_attn); mlp.c_proj sits after the GELU: never
    assert names(smooth_lm(lm, p, a, linear_folds=True)[1]) == sorted(
        ["h0.attn.c_attn.w", "h0.mlp.c_fc.w", "h1.attn.c_attn.w", "h1.mlp.c_fc.w", "h0.attn.c_proj.w",
         "h1.attn.c_proj.w"])
    lq = llama_lm(LCFG)
    pl = llama.init_params(LCFG)
    al = act_scales(lq, pl, CALIB)
    assert names(smooth_lm(lq, pl, al)[1]) == sorted(["blk.0.attn_q.weight", "blk.0.attn_k.weight",
                                                      "blk.0.attn_v.weight", "blk.0.ffn_gate.weight",
                                                      "blk.0.ffn_up.weight"])
    assert "blk.0.ffn_down.weight" in names(smooth_lm(lq, pl, al, linear_folds=True)[1])


def _err(lm, q, hook, p):
    return max(float(np.abs(lm.forward(q, b, linear=hook) - lm.forward(p, b)).max()) for b in CALIB)


def _outputs(lm, q, hook, name):
    """The output of the linear ``name`` over the calibration batches, with the model run through ``hook``."""
    out = []

    def rec(n, x, w, b):
        y = gpt.affine(x, w, b) if hook is None else hook(n, x, w, b)
        if n == name:
            out.append(y)
        return y
    for b in CALIB:
        lm.forward(q, b, linear=rec)
    return np.concatenate(out)


@pytest.mark.parametrize("name", ["h0.attn.c_attn.w", "h1.mlp.c_fc.w"])
def test_smoothquant_tames_an_activation_outlier_under_static_w8a8(name):
    # channel 3 of the LayerNorms' outputs 100× the others: a per-tensor int8 step 100× too coarse for them
    lm, p = _gpt(outlier=100.0)
    ref = _outputs(lm, p, None, name)
    rel = lambda y: float(np.sqrt(np.mean((y - ref) ** 2) / np.mean(ref ** 2)))  # noqa: E731
    naive = rel(_outputs(lm, *w8a8(lm, p, CALIB, activation="static"), name))
    q, hook, _ = smoothquant_w8a8(lm, p, CALIB, alpha=0.5)
    smooth = rel(_outputs(lm, q, hook, name))
    lm1, p1 = _gpt(outlier=1.0)  # the same model without the outlier, for scale
    plain = float(np.sqrt(np.mean((_outputs(lm1, *w8a8(lm1, p1, CALIB, activation="static"), name)
                                   - _outputs(lm1, p1, None, name)) ** 2) / np.mean(ref ** 2)))
    assert naive > 5 * plain and smooth < naive / 5


@pytest.mark.parametrize("activation", ["static", "dynamic"])
def test_w8a8_weights_are_int8_per_output_channel(activation):
    lm, p = llama_lm(LCFG), llama.init_params(LCFG)
    q, hook = w8a8(lm, p, CALIB, activation=activation)
    for name in lm.linear_names:
        w, wq = weight(lm, p, name), q[name]
        step = np.abs(w).max(1, keepdims=True) / 127  # symmetric: absmax / 127 per row
        np.testing.assert_allclose(wq / step, np.rint(wq / step), atol=1e-3)
        assert np.all(np.abs(wq - w) <= step / 2 * (1 + 1e-5))
    assert _err(lm, q, hook, p) < 0.02
    assert "output.weight" in q and "output.weight" not in p  # the tied head quantized into its own tensor


def test_bad_input_is_refused_with_the_argument_named():
    w = np.ones((2, 3))
    with pytest.raises(ValueError, match="alpha must be a number in"):
        smooth_scales(np.ones(3), [w], 1.5)
    with pytest.raises(ValueError, match="w_list: expected"):
        smooth_scales(np.ones(4), [w])
    with pytest.raises(ValueError, match="act_max must be finite and >= 0"):
        smooth_scales(-np.ones(3), [w])
    lm, p = _gpt()
    with pytest.raises(ValueError, match="activation: expected one of"):
        w8a8(lm, p, CALIB, activation="per_tensor")
    with pytest.raises(ValueError, match="calib_batches: static activations need"):
        w8a8(lm, p, [])
    with pytest.raises(ValueError, match="calib_batches: SmoothQuant needs"):
        smoothquant_w8a8(lm, p, [])
    with pytest.raises(ValueError, match="batches: no calibration batch"):
        act_scales(lm, p, [])
    with pytest.raises(ValueError, match="scales: no activation maxima"):
        smooth_lm(lm, p, {})
