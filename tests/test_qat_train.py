"""Quantization-aware training (refquant.qat.train, refquant.qat.hooks): the STE step is the float
gradient when quantization is the identity, PACT's clip gradient through the whole GPT against finite
differences, an LSQ step size moves the way that lowers the loss (by hand), step 0 is the registry's
PTQ, QAT lowers the quantized loss, determinism, bad input. The measured PTQ → QAT tables are in the
module's report (minutes), not here."""
import numpy as np
import pytest

from refquant.formats import registry
from refquant.models.corpus import encode, make_corpus
from refquant.models.gpt import GPTConfig, cross_entropy, forward, init_params, linear_names, loss_and_grads
from refquant.models.train import get_batch
from refquant.qat.hooks import (ActQuant, WeightQuant, act_forward, act_init, calibrate_acts, linear_hooks,
                                ptq_scale)
from refquant.core.uniform import fake_quantize
from refquant.qat.train import (MLP_RECIPES, QATRecipe, TINY_RECIPES, bits_per_weight, qat_step, qat_train,
                                quantized_params, run_qat)

CFG = GPTConfig(vocab_size=41, context_length=8, n_layer=1, n_head=2, n_embd=16)
DATA = encode(make_corpus(4000, seed=3))


def gpt_loss(cfg):
    def f(q, b, linear, linear_backward):
        return loss_and_grads(q, b[0], b[1], cfg, linear=linear, linear_backward=linear_backward)
    return f


def draw(batch):
    return lambda rng: get_batch(DATA, batch, CFG.context_length, rng)


def test_ste_step_is_the_float_gradient_when_the_weights_are_on_the_grid():
    # w = k / 128 with integer codes k, max |k| = 127 in every row: the PTQ scale is (127/128)/127 = 2^-7
    # exactly, ŵ = w, nothing is clamped, so the STE gradient is the float model's, bit for bit.
    rng = np.random.default_rng(0)
    p = init_params(CFG, 1, np.float64)
    names = linear_names(CFG)
    for n in names:
        k = rng.integers(-127, 128, p[n].shape)
        k[:, 0] = 127
        p[n] = k / 128.0
    x, y = get_batch(DATA, 2, CFG.context_length, rng)
    spec = WeightQuant(8, 0, "ste")
    for n in names:
        np.testing.assert_array_equal(ptq_scale(p[n], spec), np.full(p[n].shape[0], 2.0 ** -7))
    loss, g, qg = qat_step(p, lambda q, lin, back: loss_and_grads(q, x, y, CFG, linear=lin, linear_backward=back),
                           names, spec, None, {}, {})
    loss_f, g_f = loss_and_grads(p, x, y, CFG)
    assert loss == loss_f and qg == {}
    for k in p:
        np.testing.assert_array_equal(g[k], g_f[k], err_msg=k)
    # with 2-bit codes the same weights are not on the grid: the gradient changes
    _, g2, _ = qat_step(p, lambda q, lin, back: loss_and_grads(q, x, y, CFG), names, WeightQuant(2, 0, "ste"), None,
                        {}, {})
    assert not np.array_equal(g2["wte"], g_f["wte"])


def test_pact_alpha_gradient_through_the_gpt_matches_finite_differences():
    # α = 1e-4 below every positive input: each x̂ is α·[x ≥ α] (or 0), a function of α whose derivative
    # is Σ dL/dx̂ · [x ≥ α] — PACT's gradient, here exact. Every layer's dL/dα against central differences.
    rng = np.random.default_rng(1)
    p = {k: v + rng.standard_normal(v.shape) * 0.2 for k, v in init_params(CFG, 2, np.float64).items()}
    names = linear_names(CFG)
    x, y = get_batch(DATA, 2, CFG.context_length, rng)
    act = ActQuant(3, "tensor", "pact")
    alpha = {n: {"alpha": np.asarray(1e-4)} for n in names}
    seen = {}

    def record(name, xx, w, b):
        seen[name] = xx
        return xx @ w.T + (0 if b is None else b)

    forward(p, x, CFG, linear=record)
    h = 1e-6
    for n in names:  # the premise: no input in [0, α + h) (x̂ would depend on α through the rounding)
        assert not np.any((seen[n] >= 0) & (seen[n] < 1e-4 + h)) and np.any(seen[n] >= 1e-4 + h), n
    _, _, qg = qat_step(p, lambda q, lin, back: loss_and_grads(q, x, y, CFG, linear=lin, linear_backward=back),
                        names, WeightQuant(8, 0, "ste"), act, {}, alpha)
    qw = quantized_params(p, names, WeightQuant(8, 0, "ste"))
    for n in names:
        def loss_at(a):
            prm = {**alpha, n: {"alpha": np.asarray(a)}}
            return cross_entropy(forward(qw, x, CFG, linear=linear_hooks(act, prm, names, record=False)[0]), y)[0]
        num = (loss_at(1e-4 + h) - loss_at(1e-4 - h)) / (2 * h)
        assert qg[f"a.{n}.alpha"] == pytest.approx(num, rel=1e-7), n


@pytest.mark.parametrize("target, s_after", [
    (0.7, 0.81),  # ŵ = s·1 too big: ds = 2(0.9 − 0.7)·qmax·g > 0, one Adam step of 0.1 (relative) → 0.9·0.9
    (1.0, 0.99),  # ŵ too small: ds < 0 → 0.9·1.1
])
def test_lsq_step_size_moves_to_lower_the_loss_on_one_weight(target, s_after):
    # w = 0.9, int2 codes [-2, 1]: the PTQ scale is 0.9/1, v = w/s = 1 = qmax, ŵ = s·1 and ∂ŵ/∂s = qmax = 1.
    # The weight is frozen (lr 0); the step size takes one Adam step (warm-up 1 step: the full lr_quant
    # 0.1 in units of s₀ = 0.9; Adam's first step is lr · g/(|g| + 1e-8) ≈ lr · sign g).
    p = {"w": np.array([[0.9]])}
    r = QATRecipe("one", WeightQuant(2, 0, "lsq"), steps=1, lr=0.0, lr_quant=0.1)

    def loss(q, b, lin, back):
        return float(((q["w"] - target) ** 2).sum()), {"w": 2 * (q["w"] - target)}

    res = qat_train(p, loss, lambda rng: None, ["w"], r)
    assert res.weight_scales["w"][0] == pytest.approx(s_after, abs=1e-6)  # float32 step sizes, as stored
    np.testing.assert_array_equal(res.params["w"], p["w"])
    assert (res.quantized["w"][0, 0] - target) ** 2 < (0.9 - target) ** 2


def test_step_zero_is_the_registry_ptq_and_bits_are_the_registry_count():
    p = init_params(CFG, 3)
    names = linear_names(CFG)
    for spec in (WeightQuant(2, 8), WeightQuant(3, 0), WeightQuant(4, 0, "ste")):
        res = qat_train(p, gpt_loss(CFG), draw(2), names, QATRecipe("x", spec, steps=0))
        for n in names:
            fmt, opts = spec.format
            np.testing.assert_array_equal(res.quantized[n], registry.quantize(p[n], fmt, **opts).dequantize())
        want = sum(registry.storage_bits(*spec.format[:1], p[n].shape, **spec.format[1]) for n in names)
        assert bits_per_weight(p, names, spec) == want / sum(p[n].size for n in names)
    # the MLP's (in, out) weights: per output channel is axis 1, the registry's rows after a transpose
    w = np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32)
    q = quantized_params({"W": w}, ["W"], WeightQuant(2, 0), out_axis=1)["W"]
    np.testing.assert_array_equal(q, registry.quantize(w.T, "int2").dequantize().T)
    assert bits_per_weight({"W": w}, ["W"], WeightQuant(2, 0), out_axis=1) == 2 + 32 / 64  # 10 scales of 64 weights


def test_lsq_plus_activation_init_is_the_calibrated_static_quantizer():
    xs = np.random.default_rng(4).standard_normal((50, 16)) * 3 + 1
    prm = act_init(ActQuant(4, "tensor", "lsq"), xs)
    from refquant.core.observers import calibrate
    s, z = calibrate(xs, "uint4", "minmax")
    np.testing.assert_allclose(act_forward(ActQuant(4, "tensor", "lsq"), prm, xs),
                               fake_quantize(xs, s.astype(xs.dtype), z, "uint4"), rtol=0, atol=1e-12)


def test_qat_lowers_the_quantized_loss_and_is_deterministic():
    p = init_params(CFG, 0)
    rng = np.random.default_rng(9)
    x, y = get_batch(DATA, 8, CFG.context_length, rng)  # a fixed evaluation batch
    names = linear_names(CFG)

    def eval_loss(q, act, aparams):
        lin = linear_hooks(act, aparams, names, record=False)[0] if act else None
        return cross_entropy(forward(q, x, CFG, linear=lin), y)[0]

    for r in (QATRecipe("w2", WeightQuant(2, 8), steps=12, batch=8, lr=3e-3),
              QATRecipe("w4a4", WeightQuant(4, 0), ActQuant(4, "tensor"), steps=12, batch=8, lr=3e-3)):
        aps = calibrate_acts(r.activations, lambda ids, linear: forward(p, ids, CFG, linear=linear), [x], names) \
            if r.activations else None
        before = eval_loss(quantized_params(p, names, r.weights), r.activations, aps)
        seen = []
        res = qat_train(p, gpt_loss(CFG), draw(r.batch), names, r, act_params=aps, seed=5,
                        progress=lambda step, loss: seen.append(step))
        assert seen == list(range(12))
        assert eval_loss(res.quantized, r.activations, res.act_params) < before - 0.1, r.name
        again = qat_train(p, gpt_loss(CFG), draw(r.batch), names, r, act_params=aps, seed=5)
        assert again.losses == res.losses
        for k in res.quantized:
            np.testing.assert_array_equal(again.quantized[k], res.quantized[k])
        other = qat_train(p, gpt_loss(CFG), draw(r.batch), names, r, act_params=aps, seed=6, steps=2)
        assert other.losses != res.losses[:2]
    np.testing.assert_array_equal(p["lm_head.w"], init_params(CFG, 0)["lm_head.w"])  # p not modified


def test_run_qat_rows_on_the_mlp():
    rows = run_qat("mlp", "w2", steps=40)
    assert [r["method"] for r in rows] == ["float", "ptq-w2", "qat-w2"]
    assert rows[1]["bits_per_weight"] == rows[2]["bits_per_weight"] == 2.5  # 2-bit codes + 32/64 per weight
    assert rows[0]["bits_per_weight"] == 32.0 and rows[2]["steps"] == 40
    assert rows[2]["accuracy"] > rows[1]["accuracy"] + 0.1  # measured 0.70 → 0.9 after 40 steps
    assert set(rows[0]) == {"method", "bits_per_weight", "perplexity", "accuracy", "seconds", "steps"}


def test_recipe_tables():
    assert {"w2g32", "w3", "w4a4"} <= set(TINY_RECIPES) and "w2" in MLP_RECIPES
    assert TINY_RECIPES["w2g32"].weights == WeightQuant(2, 32) and TINY_RECIPES["w4a4"].activations.bits == 4
    assert all(name == r.name for t in (TINY_RECIPES, MLP_RECIPES) for name, r in t.items())


@pytest.mark.parametrize("make, exc, match", [
    (lambda: WeightQuant(1), ValueError, "bits"),
    (lambda: WeightQuant(4, -1), ValueError, "group_size"),
    (lambda: WeightQuant(4, method="adam"), ValueError, "method"),
    (lambda: ActQuant(4, "channel"), ValueError, "granularity"),
    (lambda: QATRecipe("x", "int4"), TypeError, "weights"),
    (lambda: QATRecipe("x", WeightQuant(4), activations="int4"), TypeError, "activations"),
    (lambda: QATRecipe("x", WeightQuant(4), lr=-1.0), ValueError, "lr"),
    (lambda: run_qat("smollm2", "w2g32"), ValueError, "model"),
    (lambda: run_qat("bert", "w2g32"), ValueError, "model"),
    (lambda: run_qat("tiny", "w5"), ValueError, "recipe"),
    (lambda: qat_train(init_params(CFG), gpt_loss(CFG), draw(2), ["nope.w"], QATRecipe("x", WeightQuant(4))),
     ValueError, "names"),
    (lambda: qat_train(init_params(CFG), gpt_loss(CFG), draw(2), linear_names(CFG),
                       QATRecipe("x", WeightQuant(4), ActQuant(4, "tensor"))), ValueError, "act_params"),
    (lambda: qat_train(init_params(CFG), gpt_loss(CFG), draw(2), linear_names(CFG),
                       QATRecipe("x", WeightQuant(4), ActQuant(4, "tensor")), act_params={}), ValueError, "act_params"),
    (lambda: act_init(ActQuant(4, "tensor", "pact"), -np.ones(3)), ValueError, "xs"),
])
def test_bad_input_names_the_argument(make, exc, match):
    with pytest.raises(exc, match=match):
        make()
