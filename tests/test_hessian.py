"""refquant.ptq.hessian: the running Hessian of GPTQ's add_batch, per-channel |x| statistics, their
collection through the linear= hook, and the sequential driver."""
from functools import partial

import numpy as np
import pytest
from hypothesis import given, strategies as st

from refquant.models import gpt, llama, lm
from refquant.ptq import hessian as hs


# ---------------------------------------------------------------- the running update
def test_update_hand_golden():
    # batch 1: x of shape (2, 1, 2), rows [1, 2] and [3, −4]; m = 2 sequences, n = 2, sqrt(2/2) = 1:
    #   H = Σ x xᵀ = [[1 + 9, 2 − 12], [2 − 12, 4 + 16]] = [[10, −10], [−10, 20]]
    x1 = np.array([[[1.0, 2.0]], [[3.0, -4.0]]])
    s = hs.update(None, x1)
    assert s.n == 2 and s.tokens == 2
    assert np.array_equal(s.H, [[10.0, -10.0], [-10.0, 20.0]])
    # batch 2: shape (6, 1, 2), one row [2, 0] and five zero rows; m = 6, n = 8, sqrt(2/8) = 1/2:
    #   H ← H · 2/8 + (x/2)ᵀ(x/2) = [[2.5, −2.5], [−2.5, 5]] + [[1, 0], [0, 0]] = [[3.5, −2.5], [−2.5, 5]]
    #   (= (2/8) · [[10 + 4, −10], [−10, 20]], eq. (1); every step exact in binary)
    x2 = np.zeros((6, 1, 2))
    x2[0, 0, 0] = 2.0
    s = hs.update(s, x2)
    assert s.n == 8 and s.tokens == 8
    assert np.array_equal(s.H, [[3.5, -2.5], [-2.5, 5.0]])
    # |x| per channel over the eight rows: sums (1 + 3 + 2, 2 + 4 + 0), means 6/8, maxima (3, 4)
    assert np.array_equal(s.abs_sum, [6.0, 6.0])
    assert np.array_equal(s.abs_mean, [0.75, 0.75])
    assert np.array_equal(s.abs_max, [3.0, 4.0])
    # a 2-D input is one sample (add_batch unsqueezes it), however many rows it has
    assert hs.update(None, np.ones((5, 2))).n == 1


def test_update_counts_sequences_or_tokens():
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((3, 5, 4)), rng.standard_normal((2, 5, 4))]
    seq = tok = None
    for x in xs:
        seq = hs.update(seq, x)
        tok = hs.update(tok, x, count="tokens")
    assert (seq.n, tok.n, seq.tokens) == (5, 25, 25)
    # the same Σ x xᵀ, scaled by 2/5 (IST-DASLab: sequences) or by 2/25 (GPTQModel: tokens)
    np.testing.assert_allclose(seq.H, 5 * tok.H, rtol=1e-13)


@given(st.integers(0, 2**32 - 1), st.sampled_from(["sequences", "tokens"]))
def test_update_equals_equation_1(seed, count):
    rng = np.random.default_rng(seed)
    K = int(rng.integers(1, 7))
    xs = [rng.standard_normal(tuple(rng.integers(1, 4, int(rng.integers(2, 4)))) + (K,)) * 10.0 ** rng.uniform(-3, 3)
          for _ in range(int(rng.integers(1, 5)))]
    s = None
    for x in xs:
        s = hs.update(s, x, count=count)
    ref = hs.hessian_ref(xs, count=count)
    # (2) rescales the running sum after every batch: equal to (1) up to float rounding
    np.testing.assert_allclose(s.H, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    assert np.array_equal(s.H, s.H.T)
    flat = np.concatenate([x.reshape(-1, K) for x in xs])
    np.testing.assert_allclose(s.abs_mean, np.abs(flat).mean(0), rtol=1e-12)
    assert np.array_equal(s.abs_max, np.abs(flat).max(0))


def test_update_does_not_mutate():
    x = np.arange(12.0).reshape(2, 3, 2)
    x0 = x.copy()
    s1 = hs.update(None, x)
    H1 = s1.H.copy()
    s2 = hs.update(s1, x)
    assert np.array_equal(x, x0) and np.array_equal(s1.H, H1) and s1.n == 2 and s2.n == 4
    with pytest.raises(ValueError):
        s1.H[0, 0] = 1.0  # read-only


def test_update_bad_input():
    with pytest.raises(ValueError, match="x: expected"):
        hs.update(None, np.ones(3))
    with pytest.raises(ValueError, match="x contains NaN"):
        hs.update(None, np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="x contains Inf"):
        hs.update(None, np.array([[1.0, np.inf]]))
    with pytest.raises(ValueError, match="count"):
        hs.update(None, np.ones((2, 2)), count="rows")
    with pytest.raises(ValueError, match="x: 3 input channels"):
        hs.update(hs.update(None, np.ones((2, 2))), np.ones((2, 3)))
    with pytest.raises(ValueError, match="x: expected a real"):
        hs.update(None, np.array([["a", "b"]]))


# ---------------------------------------------------------------- collection through the hook
def _chain(params, x, linear):
    """A toy model: three linear layers, a ReLU between the first two."""
    h = np.maximum(linear("a", x, params["a"], None), 0)
    h = linear("b", h, params["b"], params["b.bias"])
    return linear("c", h, params["c"], None)


def _chain_params(seed=0):
    rng = np.random.default_rng(seed)
    return {"a": rng.standard_normal((6, 4)), "b": rng.standard_normal((5, 6)), "b.bias": rng.standard_normal(5),
            "c": rng.standard_normal((3, 5))}


def test_collect_statistics_on_the_tiny_gpt():
    cfg = gpt.GPTConfig(vocab_size=11, context_length=8, n_layer=2, n_head=2, n_embd=8)
    p = gpt.init_params(cfg, seed=1)
    rng = np.random.default_rng(2)
    batches = [rng.integers(0, 11, (2, 8)), rng.integers(0, 11, (3, 8))]
    seen = {}

    def record(name, x, w, b):  # an independent capture of every layer's input
        seen.setdefault(name, []).append(x.copy())
        return gpt.affine(x, w, b)

    for xb in batches:
        gpt.forward(p, xb, cfg, linear=record)
    stats = hs.collect_statistics(partial(gpt.forward, cfg=cfg), p, batches)
    assert list(stats) == gpt.linear_names(cfg)
    for name, xs in seen.items():
        np.testing.assert_allclose(stats[name].H, hs.hessian_ref(xs), rtol=1e-12, atol=1e-14)
        assert stats[name].n == 5 and stats[name].tokens == 40
    only = hs.collect_statistics(partial(gpt.forward, cfg=cfg), p, batches, names=["h1.mlp.c_fc.w"])
    assert list(only) == ["h1.mlp.c_fc.w"] and np.array_equal(only["h1.mlp.c_fc.w"].H, stats["h1.mlp.c_fc.w"].H)


def test_stop_early_skips_later_layers_and_keeps_the_statistics():
    p = _chain_params()
    calls = []

    def counting(params, x, linear):
        def hook(name, x, w, b):
            calls.append(name)
            return linear(name, x, w, b)
        return _chain(params, x, hook)

    xs = [np.random.default_rng(3).standard_normal((4, 4))]
    full = hs.collect_statistics(counting, p, xs, names=["b"])
    assert calls == ["a", "b", "c"]
    calls.clear()
    early = hs.collect_statistics(counting, p, xs, names=["b"], stop_early=True)
    assert calls == ["a", "b"]  # the forward stopped before computing c
    assert np.array_equal(full["b"].H, early["b"].H)


def test_collect_statistics_bad_names():
    p = _chain_params()
    with pytest.raises(ValueError, match="names: forward never called"):
        hs.collect_statistics(_chain, p, [np.ones((2, 4))], names=["a", "z"])
    with pytest.raises(ValueError, match="stop_early: needs names"):
        hs.collect_statistics(_chain, p, [np.ones((2, 4))], stop_early=True)
    with pytest.raises(ValueError, match="batches: no calibration"):
        hs.collect_statistics(_chain, p, [], names=["a"])


# ---------------------------------------------------------------- groups and the sequential driver
def _round_half(name, w, stats):
    return np.round(w * 2) / 2  # a stand-in quantizer: multiples of 0.5


def test_quantize_sequential_feeds_each_group_the_quantized_prefix():
    p = _chain_params(4)
    p0 = {k: v.copy() for k, v in p.items()}
    xs = [np.random.default_rng(5).standard_normal((7, 4)), np.random.default_rng(6).standard_normal((2, 3, 4))]
    seen = {}

    def quantize(name, w, stats):
        seen[name] = stats
        return _round_half(name, w, stats)

    q, results = hs.quantize_sequential(_chain, p, xs, [["a"], ["b", "c"]], quantize)
    assert set(results) == {"a", "b", "c"}
    for k in ("a", "b", "c"):
        assert np.array_equal(q[k], np.round(p[k] * 2) / 2) and q[k].dtype == p[k].dtype
    assert np.array_equal(q["b.bias"], p["b.bias"])
    assert all(np.array_equal(p[k], p0[k]) for k in p)  # inputs untouched
    # b's input is relu(x Âᵀ) with the *quantized* a; c's input uses the float b (same group as b)
    ins_b = [np.maximum(x @ q["a"].T, 0) for x in xs]
    ins_c = [gpt.affine(h, p["b"], p["b.bias"]) for h in ins_b]
    np.testing.assert_allclose(seen["b"].H, hs.hessian_ref(ins_b), rtol=1e-12)
    np.testing.assert_allclose(seen["c"].H, hs.hessian_ref(ins_c), rtol=1e-12)
    np.testing.assert_allclose(seen["a"].H, hs.hessian_ref(xs), rtol=1e-12)


def test_quantize_sequential_llama_tied_head():
    cfg = llama.LlamaConfig(vocab_size=16, context_length=8, n_layer=1, n_embd=8, n_ff=16, n_head=2, n_kv_head=1,
                            rope_dim=4)
    p = llama.init_params(cfg, seed=0, tied=True)
    model = lm.llama_lm(cfg)
    batches = [np.random.default_rng(7).integers(0, 16, (2, 8))]
    q, results = hs.quantize_sequential(model.forward, p, batches, model.sequential_groups, _round_half)
    assert "output.weight" not in p and np.array_equal(q["output.weight"], np.round(p["token_embd.weight"] * 2) / 2)
    assert np.array_equal(q["token_embd.weight"], p["token_embd.weight"])  # the embedding itself stays float
    assert set(results) == set(llama.linear_names(cfg))


def test_quantize_sequential_bad_groups():
    p = _chain_params()
    xs = [np.ones((2, 4))]
    with pytest.raises(ValueError, match="more than one group"):
        hs.quantize_sequential(_chain, p, xs, [["a"], ["a"]], _round_half)
    with pytest.raises(ValueError, match="empty group"):
        hs.quantize_sequential(_chain, p, xs, [[]], _round_half)
    with pytest.raises(ValueError, match="quantize: returned shape"):
        hs.quantize_sequential(_chain, p, xs, [["a"]], lambda n, w, s: w[:1])


def test_layers_reading_one_input_share_its_statistics():
    # q, k, v (and gate, up) multiply the same array: its statistics are computed once per pass
    def fork(params, x, linear):
        h = np.tanh(x)
        return linear("q", h, params["q"], None) + linear("k", h, params["k"], None) + linear("v", x, params["v"], None)

    rng = np.random.default_rng(8)
    p = {k: rng.standard_normal((3, 4)) for k in "qkv"}
    xs = [rng.standard_normal((5, 4)), rng.standard_normal((2, 4))]
    stats = hs.collect_statistics(fork, p, xs)
    assert stats["q"] is stats["k"] and stats["v"] is not stats["q"]
    np.testing.assert_allclose(stats["k"].H, hs.hessian_ref([np.tanh(x) for x in xs]), rtol=1e-12)
    np.testing.assert_allclose(stats["v"].H, hs.hessian_ref(xs), rtol=1e-12)


# ---------------------------------------------------------------- block by block (cached block inputs)
from refquant.ptq.gptq import gptq_layer  # noqa: E402


@pytest.mark.parametrize("which", ["tiny-gpt", "llama"])
def test_quantize_blockwise_equals_the_prefix_driver_exactly(which):
    if which == "tiny-gpt":
        cfg = gpt.GPTConfig(vocab_size=11, context_length=8, n_layer=2, n_head=2, n_embd=8)
        model, p, V = lm.tiny_gpt(cfg), gpt.init_params(cfg, seed=1), 11
    else:
        cfg = llama.LlamaConfig(vocab_size=16, context_length=8, n_layer=2, n_embd=8, n_ff=16, n_head=2,
                                n_kv_head=1, rope_dim=4)
        model, p, V = lm.llama_lm(cfg), llama.init_params(cfg, seed=2), 16
    rng = np.random.default_rng(9)
    batches = [rng.integers(0, V, (1, 8)), rng.integers(0, V, (2, 8))]
    quantize = gptq_layer(bits=2, group_size=4)  # coarse: every layer's error changes the next one's inputs
    q_seq, r_seq = hs.quantize_sequential(model.forward, p, batches, model.sequential_groups, quantize)
    q_blk, r_blk = hs.quantize_blockwise(model, p, batches, quantize)
    assert set(q_seq) == set(q_blk) and all(np.array_equal(q_seq[k], q_blk[k]) for k in q_seq)  # tolerance 0
    assert all(np.array_equal(r_seq[k].codes, r_blk[k].codes) for k in r_seq)
    # and the sequential effect is there: the last block's inputs differ from the float model's
    q_float_inputs, _ = hs.quantize_sequential(model.forward, p, batches, [[n] for n in model.linear_names[-2:]],
                                               quantize)
    last = model.linear_names[-2]
    assert not np.array_equal(q_float_inputs[last], q_blk[last])


def test_quantize_blockwise_bad_input():
    cfg = gpt.GPTConfig(vocab_size=11, context_length=8, n_layer=1, n_head=2, n_embd=8)
    model, p = lm.tiny_gpt(cfg), gpt.init_params(cfg)
    with pytest.raises(ValueError, match="batches: no calibration"):
        hs.quantize_blockwise(model, p, [], _round_half)
    with pytest.raises(ValueError, match="quantize: returned shape"):
        hs.quantize_blockwise(model, p, [np.zeros((1, 4), np.int64)], lambda n, w, s: w[:1])
    flat = lm.LM("flat", model.forward, model.linear_names, model.sequential_groups, 8)
    with pytest.raises(ValueError, match="lm: .* no block entry points"):
        hs.quantize_blockwise(flat, p, [np.zeros((1, 4), np.int64)], _round_half)
