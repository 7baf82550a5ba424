"""The tiny GPT: gradients against finite differences, corpus, training smoke test, checkpoint,
and recipes (the CLI's train / quantize commands: tests/test_cli.py)."""
import os

import numpy as np
import pytest

from refquant.models.corpus import ALPHABET, decode, encode, make_corpus, train_val_split
from refquant.models.gpt import GPTConfig, cross_entropy, forward, init_params, linear_names, loss_and_grads
from refquant.models.lm import tiny_gpt
from refquant.ptq.recipes import Recipe, apply_weights, quantize_weight, run_recipe
from refquant.io.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from refquant.models.train import evaluate, evaluator, train

TINY = GPTConfig(vocab_size=11, context_length=6, n_layer=2, n_head=2, n_embd=8)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    p = {k: v + rng.standard_normal(v.shape) * 0.05 for k, v in init_params(TINY, 1, np.float64).items()}
    idx, tg = rng.integers(0, 11, (2, 5)), rng.integers(0, 11, (2, 5))
    _, g = loss_and_grads(p, idx, tg, TINY)
    h = 1e-6
    for name in p:
        for _ in range(4):
            i = np.unravel_index(rng.integers(p[name].size), p[name].shape)
            pp = {k: v.copy() for k, v in p.items()}
            pm = {k: v.copy() for k, v in p.items()}
            pp[name][i] += h
            pm[name][i] -= h
            num = (cross_entropy(forward(pp, idx, TINY), tg)[0] - cross_entropy(forward(pm, idx, TINY), tg)[0]) / (2 * h)
            assert g[name][i] == pytest.approx(num, rel=1e-4, abs=1e-8), name


def test_corpus_is_deterministic_small_and_encodable():
    a, b = make_corpus(5000, 3), make_corpus(5000, 3)
    assert a == b and a != make_corpus(5000, 4)
    assert set(a) <= set(ALPHABET)
    assert decode(encode(a)) == a
    tr, va = train_val_split()
    assert len(tr) + len(va) < 2 * 2**20  # at most 2 MB
    with pytest.raises(ValueError, match="not in the corpus alphabet"):
        encode("Hello")


def test_training_reduces_the_loss_deterministically():
    data = encode(make_corpus(20000, 0))
    cfg = GPTConfig(vocab_size=len(ALPHABET), context_length=16, n_layer=1, n_head=2, n_embd=16)
    losses = []
    p = train(cfg, data, steps=40, batch=8, lr=1e-2, warmup=5, log=lambda s, loss: losses.append(loss))
    p2 = train(cfg, data, steps=40, batch=8, lr=1e-2, warmup=5)
    assert losses[-1] < losses[0] - 0.5
    assert all(np.array_equal(p[k], p2[k]) for k in p)


def test_checkpoint_round_trip(tmp_path):
    p = init_params(TINY)
    save_checkpoint(tmp_path / "c.npz", p, TINY, {"note": 1})
    q, cfg, meta = load_checkpoint(tmp_path / "c.npz")
    assert cfg == TINY and meta == {"note": 1} and all(np.array_equal(p[k], q[k]) for k in p)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "missing.npz")


@pytest.fixture(scope="module")
def shipped():
    p, cfg, meta = load_checkpoint()
    _, val = train_val_split(meta["seed"], n_train=0)
    return p, cfg, meta, val


def test_shipped_checkpoint_is_small_and_reproduces_its_metrics(shipped):
    p, cfg, meta, val = shipped
    assert os.path.getsize(CHECKPOINT) <= 5 * 2**20
    ppl, acc = evaluate(p, val, cfg)
    assert ppl == pytest.approx(meta["val_perplexity"], rel=1e-4)
    assert ppl < 2.5 and acc > 0.6  # good enough for quantization damage to show


def test_recipes_on_the_shipped_model(shipped):
    p, cfg, _, val = shipped
    lm, score = tiny_gpt(cfg), evaluator(val, cfg)
    rows = {r.name: run_recipe(lm, p, r, score, [val[5000:5000 + 4 * 64].reshape(4, 64).astype(np.int64)])
            for r in [Recipe("float", None), Recipe("w8", "int8"), Recipe("w8a8-dynamic", "int8", activation="dynamic"),
                      Recipe("w4-g32", "int4", {"group_size": 32}), Recipe("w2-g32", "int2", {"group_size": 32}),
                      Recipe("w8a8-static", "int8", activation="static")]}
    base = rows["float"]["perplexity"]
    assert rows["float"]["bits_per_weight"] == 32
    assert rows["w8a8-dynamic"]["perplexity"] < base * 1.01
    assert rows["w8a8-static"]["perplexity"] < base * 1.02
    assert rows["w4-g32"]["perplexity"] < base * 1.05
    assert rows["w2-g32"]["perplexity"] > rows["w4-g32"]["perplexity"]  # damage is visible
    assert rows["w4-g32"]["bits_per_weight"] == 5.0  # 4 + 32 / 32
    q, size = apply_weights(lm, p, Recipe("none", None))
    assert size == 4 * sum(v.size for v in p.values()) and all(q[k] is p[k] for k in p)


def test_quantize_weight_formats_keep_shape_and_count_bits():
    w = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    # hand counts on 512 weights (8 rows): codes + float32 scales / codebooks / the log2 exponent
    for fmt, opts, expect in [("int4", {}, 4 * 512 + 32 * 8), ("nf4", {}, 4.5 * 512), ("fp8_e4m3", {}, 8 * 512 + 32 * 8),
                              ("kmeans", {"bits": 3}, 3 * 512 + 32 * 8), ("log2", {"bits": 4}, 4 * 512 + 8)]:
        w_hat, nbits = quantize_weight(w, Recipe(fmt, fmt, opts))
        assert w_hat.shape == w.shape and nbits == expect, fmt


@pytest.mark.parametrize("kwargs, match", [
    (dict(weight_format="int9"), "format: unknown 'int9'"), (dict(activation="static-kl"), "activation: unknown"),
    (dict(weight_format="int4", weight_options={"bits": 4}), "bits: not an option of format 'int4'"),
    (dict(weight_format=None, weight_options={"group_size": 32}), "weight_options: float weights"),
])
def test_recipe_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Recipe("x", **kwargs)


def test_recipe_unknown_layer(shipped):
    p, cfg, _, val = shipped
    with pytest.raises(ValueError, match="unknown linear layers"):
        apply_weights(tiny_gpt(cfg), p, Recipe("x", layers=("h9.mlp.c_fc.w",)))
    assert len(linear_names(cfg)) == 4 * cfg.n_layer + 1


def test_generate_shows_the_shipped_model_learned_the_grammar(shipped):
    from refquant.models.gpt import generate

    p, cfg, _, _ = shipped
    out = generate(p, cfg, encode("4+5="), 3)
    assert out.dtype == np.int64 and out.shape == (7,)
    assert decode(out) == "4+5=9.\n"  # arithmetic
    assert decode(generate(p, cfg, encode("echo zqk "), 5)) == "echo zqk zqk.\n"  # copying needs attention


def test_integer_only_gpt_matches_float_perplexity(shipped):
    import math

    from refquant.ptq.intgpt import build_int_gpt, int_forward
    from refquant.models.train import get_batch

    p, cfg, _, val = shipped
    rng = np.random.default_rng(1234)
    calib = [get_batch(val[len(val) // 2:], 16, cfg.context_length, rng)[0] for _ in range(2)]
    m = build_int_gpt(p, cfg, calib)
    assert m.wte.dtype == np.int32 and all(layer.weight.dtype == np.int8 for layer in m.layers.values())
    T, n = cfg.context_length, 8
    x = val[: n * T].reshape(n, T).astype(np.int64)
    y = val[1: n * T + 1].reshape(n, T).astype(np.int64)
    q = int_forward(m, x)
    assert q.dtype == np.int8 and q.shape == (n, T, cfg.vocab_size)
    ppl_int = math.exp(cross_entropy(q.astype(np.float64) * m.s_logits, y)[0])
    ppl_float = math.exp(cross_entropy(forward(p, x, cfg), y)[0])
    assert ppl_int < ppl_float * 1.02  # measured +0.2 % on 64 windows
    with pytest.raises(ValueError, match="calib_batches"):
        build_int_gpt(p, cfg, [])


def test_linear_hook_weight_gradient_uses_the_operands_it_multiplied():
    # A hook that rounds its input to a 0.25 grid: the weight gradient must be dyᵀ x̂ (x̂ the rounded
    # input), not dyᵀ x. Compare with a model whose inputs are already on the grid: same loss, same dW.
    cfg, p = TINY, init_params(TINY, seed=3, dtype=np.float64)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, cfg.vocab_size, (2, cfg.context_length))
    tgt = rng.integers(0, cfg.vocab_size, (2, cfg.context_length))

    def hook(name, x, w, b):
        xh = np.round(x * 4) / 4
        y = xh @ w.T
        return (y if b is None else y + b), xh, w

    loss_h, g_h = loss_and_grads(p, idx, tgt, cfg, linear=hook)
    loss_f, g_f = loss_and_grads(p, idx, tgt, cfg)
    assert loss_h != loss_f
    # the lm_head's input x̂_f: recompute it through a recording hook
    seen = {}

    def record(name, x, w, b):
        seen[name] = np.round(x * 4) / 4
        return hook(name, x, w, b)

    logits = forward(p, idx, cfg, linear=record)
    _, prob = cross_entropy(logits, tgt)
    d = prob.copy()
    np.put_along_axis(d, tgt[..., None], np.take_along_axis(prob, tgt[..., None], -1) - 1, -1)
    d /= d.shape[0] * d.shape[1]
    expect = d.reshape(-1, d.shape[-1]).T @ seen["lm_head.w"].reshape(-1, seen["lm_head.w"].shape[-1])
    np.testing.assert_allclose(g_h["lm_head.w"], expect, rtol=1e-12, atol=1e-15)
    assert not np.allclose(g_h["lm_head.w"], g_f["lm_head.w"])


def test_linear_hook_bad_return_names_the_layer():
    with pytest.raises(ValueError, match="h0.attn.c_attn.w"):
        forward(init_params(TINY), np.zeros((1, 2), np.int64), TINY, linear=lambda n, x, w, b: (x, w))


def test_linear_backward_hook_gives_the_gradient_of_a_clipped_input():
    # x̂ = clip(x, -c, c) at every linear input: with linear_backward passing dL/dx̂ · [|x| < c] to x
    # the gradients are the true gradients of the clipped model (clip is differentiable almost
    # everywhere), checked against central finite differences; without it they are not.
    cfg, c = TINY, 0.8
    rng = np.random.default_rng(1)
    p = {k: v + rng.standard_normal(v.shape) * 0.3 for k, v in init_params(cfg, 2, np.float64).items()}
    idx, tg = rng.integers(0, cfg.vocab_size, (2, 5)), rng.integers(0, cfg.vocab_size, (2, 5))
    seen, dxhat = {}, {}

    def clip(name, x, w, b):
        seen[name] = x
        xh = np.clip(x, -c, c)
        return (xh @ w.T if b is None else xh @ w.T + b), xh, w

    def back(name, dx_used):
        dxhat[name] = dx_used
        return dx_used * (np.abs(seen[name]) < c)

    _, g = loss_and_grads(p, idx, tg, cfg, linear=clip, linear_backward=back)
    _, g_ste = loss_and_grads(p, idx, tg, cfg, linear=clip)
    assert set(dxhat) == set(linear_names(cfg)) and dxhat["lm_head.w"].shape == seen["lm_head.w"].shape
    assert 0 < np.mean(np.abs(seen["h0.attn.c_attn.w"]) >= c) < 1  # some inputs are clipped
    h = 1e-6
    for name in ("wte", "h0.ln_1.g", "h0.attn.c_attn.w", "h1.mlp.c_fc.b"):
        for _ in range(3):
            i = np.unravel_index(rng.integers(p[name].size), p[name].shape)
            pp, pm = dict(p), dict(p)
            pp[name], pm[name] = p[name].copy(), p[name].copy()
            pp[name][i] += h
            pm[name][i] -= h
            num = (cross_entropy(forward(pp, idx, cfg, linear=clip), tg)[0]
                   - cross_entropy(forward(pm, idx, cfg, linear=clip), tg)[0]) / (2 * h)
            assert g[name][i] == pytest.approx(num, rel=1e-4, abs=1e-8), name
    assert not np.allclose(g["wte"], g_ste["wte"])  # the identity STE is not the clipped model's gradient
    np.testing.assert_array_equal(g["lm_head.w"], g_ste["lm_head.w"])  # dW never passes the hook
