"""The LLaMA backward pass (refquant.models.llama_backward): every parameter's gradient against central
finite differences in float64 (tied and untied head, adjacent and rotate-half RoPE, partial RoPE, GQA
4/2), against PyTorch autograd recorded in tests/data/llama_backward_torch.npz, the loss equal to the
forward's cross-entropy bit for bit, the ops' backward passes on their own, the hook contract."""
import os

import numpy as np
import pytest
from hypothesis import given, strategies as st

from refquant.models import llama as L
from refquant.models.gpt import cross_entropy
from refquant.models.llama_backward import (attention_backward, loss_and_grads, rmsnorm_backward, rope_backward,
                                            silu_backward)

GOLD = os.path.join(os.path.dirname(__file__), "data", "llama_backward_torch.npz")
CFG = L.LlamaConfig(vocab_size=23, context_length=16, n_layer=2, n_embd=16, n_ff=24, n_head=4, n_kv_head=2,
                    rope_dim=4)


def _model(cfg, seed, tied, dtype=np.float64):
    rng = np.random.default_rng(seed)
    p = L.init_params(cfg, seed, tied=tied, dtype=dtype)
    p = {k: (v + 0.3 * rng.standard_normal(v.shape)).astype(dtype) if v.ndim == 2 else v for k, v in p.items()}
    idx = rng.integers(0, cfg.vocab_size, (2, 7))
    return p, idx, rng.integers(0, cfg.vocab_size, (2, 7))


def _loss(p, idx, t, cfg):
    return cross_entropy(L.forward(p, idx, cfg), t)[0]


@pytest.mark.parametrize("tied,pairs,rope_dim", [(True, "adjacent", 4), (False, "half", 2), (False, "adjacent", 2)])
def test_every_gradient_equals_central_differences(tied, pairs, rope_dim):
    # float64, h = 1e-6: the central difference's error is O(h²)·L''' + O(ε/h) ≈ 1e-10. Every parameter:
    # all entries of the norm gains, 24 seeded entries of each matrix (all entries of all: 25 s)
    cfg = L.LlamaConfig(**{**CFG.__dict__, "rope_pairs": pairs, "rope_dim": rope_dim})
    p, idx, t = _model(cfg, 3, tied)
    _, g = loss_and_grads(p, idx, t, cfg)
    assert set(g) == set(p)
    h = 1e-6
    rng = np.random.default_rng(4)
    for k in p:
        assert g[k].shape == p[k].shape and g[k].dtype == p[k].dtype
        if p[k].ndim == 1:
            entries = list(np.ndindex(p[k].shape))
        else:
            rows = idx.ravel() if k == "token_embd.weight" else rng.integers(0, p[k].shape[0], 24)
            entries = list(zip(rows[:24], rng.integers(0, p[k].shape[1], 24)))
        for j in entries:
            a = p[k].copy()
            a[j] += h
            lp = _loss({**p, k: a}, idx, t, cfg)
            a[j] -= 2 * h
            fd = (lp - _loss({**p, k: a}, idx, t, cfg)) / (2 * h)
            assert g[k][j] == pytest.approx(fd, rel=1e-6, abs=1e-9), (k, j)
        if k != "token_embd.weight":  # rows of unseen tokens have no gradient; everything else does
            assert np.abs(g[k]).max() > 1e-4, k


@pytest.mark.parametrize("case", ["a", "b"])
def test_equals_torch_autograd(case):
    # recorded by tests/data/make_llama_backward_goldens.py (torch 2.13.0, float64, its own model code:
    # F.rms_norm, complex / rotate-half RoPE, scaled_dot_product_attention with enable_gqa, F.silu)
    gd = np.load(GOLD)
    V, n_layer, C, F, nh, nkv, rope_dim, base, eps = gd[f"{case}.cfg"]
    cfg = L.LlamaConfig(vocab_size=int(V), context_length=16, n_layer=int(n_layer), n_embd=int(C), n_ff=int(F),
                        n_head=int(nh), n_kv_head=int(nkv), rope_dim=int(rope_dim), rope_base=float(base),
                        norm_eps=float(eps), rope_pairs="half" if int(gd[f"{case}.half"]) else "adjacent")
    pre = f"{case}.p."
    p = {k[len(pre):]: gd[k] for k in gd.files if k.startswith(pre)}
    assert ("output.weight" in p) == (case == "b")
    loss, g = loss_and_grads(p, gd[f"{case}.idx"], gd[f"{case}.targets"], cfg)
    assert loss == pytest.approx(float(gd[f"{case}.loss"]), rel=1e-13)
    for k in p:
        np.testing.assert_allclose(g[k], gd[f"{case}.g.{k}"], rtol=1e-10, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tied", [True, False])
def test_loss_is_the_forwards_cross_entropy_exactly(dtype, tied):
    p, idx, t = _model(CFG, 5, tied, dtype)
    loss, g = loss_and_grads(p, idx, t, CFG)
    assert loss == _loss(p, idx, t, CFG)
    assert all(g[k].dtype == dtype for k in g)


def test_tied_head_gradient_is_the_sum_of_embedding_and_head():
    # tied: token_embd receives dL/dW_head + the embedding's gather; untie with the same values and the
    # two gradients split, summing to the tied one
    p, idx, t = _model(CFG, 6, True)
    _, g = loss_and_grads(p, idx, t, CFG)
    _, gu = loss_and_grads({**p, "output.weight": p["token_embd.weight"].copy()}, idx, t, CFG)
    np.testing.assert_allclose(g["token_embd.weight"], gu["token_embd.weight"] + gu["output.weight"], rtol=1e-12,
                               atol=1e-15)
    unseen = np.setdiff1d(np.arange(CFG.vocab_size), idx)
    assert np.all(gu["token_embd.weight"][unseen] == 0)


def test_rmsnorm_backward_by_hand():
    # x = (3, 4), g = (1, 2), ε = 0: mean(x²) = 12.5, r = 1/√12.5, x̃ = (0.6, 0.8)·√2 = (3, 4)/√12.5.
    # dy = (1, 0): dg = (x̃₀, 0) = (3/√12.5, 0); d = dy·g = (1, 0), mean(d·x̃) = x̃₀/2 = 1.5/√12.5,
    # dx = r·(d − x̃·1.5/√12.5) = r·(1 − 4.5/12.5, −6/12.5) = r·(0.64, −0.48)
    r = 1 / np.sqrt(12.5)
    dx, dg = rmsnorm_backward(np.array([1.0, 0.0]), np.array([3.0, 4.0]), np.array([1.0, 2.0]), 0.0)
    np.testing.assert_allclose(dg, [3 * r, 0.0], rtol=1e-15)
    np.testing.assert_allclose(dx, [0.64 * r, -0.48 * r], rtol=1e-15)
    assert dx @ np.array([3.0, 4.0]) == pytest.approx(0, abs=1e-15)  # ε = 0: RMSNorm is scale invariant, so dx ⊥ x


@given(st.integers(0, 2**32 - 1), st.sampled_from(["adjacent", "half"]), st.sampled_from([2, 4, 6]))
def test_rope_backward_is_the_transpose(seed, pairs, dim):
    # RoPE is linear and orthogonal: <rope(x), y> = <x, rope_backward(y)>, and rope_backward(rope(x)) = x
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((2, 3, 5, 6))
    pos = np.arange(5)
    assert np.sum(L.rope(x, pos, 100.0, dim, pairs) * y) == pytest.approx(np.sum(x * rope_backward(y, pos, 100.0, dim, pairs)),
                                                                           rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(rope_backward(L.rope(x, pos, 100.0, dim, pairs), pos, 100.0, dim, pairs), x,
                               rtol=1e-13, atol=1e-14)


def _attention_backward_ref(dy, q, k, v):
    """Per query head, each with its own copy of its kv head (repeat_kv), then the copies' gradients summed."""
    B, nh, T, hd = q.shape
    G = nh // k.shape[1]
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for b in range(B):
        for h in range(nh):
            kh, vh = k[b, h // G], v[b, h // G]
            s = q[b, h] @ kh.T / np.sqrt(hd) + L.causal_mask(T, T, q.dtype)
            pr = np.exp(s - s.max(-1, keepdims=True))
            pr /= pr.sum(-1, keepdims=True)
            dp = dy[b, h] @ vh.T
            ds = pr * (dp - (dp * pr).sum(-1, keepdims=True)) / np.sqrt(hd)
            dq[b, h] = ds @ kh
            dk[b, h // G] += ds.T @ q[b, h]
            dv[b, h // G] += pr.T @ dy[b, h]
    return dq, dk, dv


@pytest.mark.parametrize("nh,nkv", [(4, 2), (4, 1), (3, 3)])
def test_attention_backward_equals_the_per_head_loop(nh, nkv):
    from refquant.models.llama_backward import _attention
    rng = np.random.default_rng(nh * 10 + nkv)
    q, dy = rng.standard_normal((2, 2, nh, 5, 4))
    k, v = rng.standard_normal((2, 2, nkv, 5, 4))
    y, att = _attention(q, k, v)
    np.testing.assert_array_equal(y, L.attention(q, k, v))  # the same operations as the model's
    for got, ref in zip(attention_backward(dy, q, k, v, att), _attention_backward_ref(dy, q, k, v)):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)


def test_silu_backward_by_hand():
    # silu'(0) = σ(0) = 1/2; silu'(z) = σ(z)(1 + z(1 − σ(z))): at z = ln 3, σ = 3/4, 3/4·(1 + ln3/4)
    np.testing.assert_allclose(silu_backward(np.array([2.0, 1.0]), np.array([0.0, np.log(3)])),
                               [1.0, 0.75 * (1 + np.log(3) / 4)], rtol=1e-15)


def test_linear_hook_operands_and_linear_backward():
    # a hook that doubles every weight it multiplies: the gradients equal those of the model with doubled
    # weights (dW at w_used = 2w); linear_backward scaling dx by 0 stops everything below the head
    p, idx, t = _model(CFG, 7, False)
    names = L.linear_names(CFG)

    def hook(name, x, w, b):
        return x @ (2 * w).T, x, 2 * w

    loss, g = loss_and_grads(p, idx, t, CFG, linear=hook)
    p2 = {k: 2 * v if k in names else v for k, v in p.items()}
    loss2, g2 = loss_and_grads(p2, idx, t, CFG)
    assert loss == loss2
    for k in p:
        np.testing.assert_array_equal(g[k], g2[k], err_msg=k)
    calls = []
    _, g0 = loss_and_grads(p, idx, t, CFG, linear_backward=lambda n, dx: calls.append(n) or 0 * dx)
    assert calls == names[::-1][:1] + [n for i in reversed(range(CFG.n_layer)) for n in
                                        (f"blk.{i}.ffn_down.weight", f"blk.{i}.ffn_up.weight", f"blk.{i}.ffn_gate.weight",
                                         f"blk.{i}.attn_output.weight", f"blk.{i}.attn_q.weight",
                                         f"blk.{i}.attn_k.weight", f"blk.{i}.attn_v.weight")]
    _, gf = loss_and_grads(p, idx, t, CFG)
    np.testing.assert_array_equal(g0["output.weight"], gf["output.weight"])  # dW of the head needs no dx
    assert all(np.all(g0[k] == 0) for k in p if k != "output.weight")


def test_inputs_not_mutated_and_bad_targets():
    p, idx, t = _model(CFG, 8, True)
    before = {k: v.copy() for k, v in p.items()}
    loss_and_grads(p, idx, t, CFG)
    for k in p:
        np.testing.assert_array_equal(p[k], before[k])
    with pytest.raises(ValueError, match="targets"):
        loss_and_grads(p, idx, t[:, :-1], CFG)
    with pytest.raises(ValueError, match="idx"):
        loss_and_grads(p, np.zeros((2, 17), int), np.zeros((2, 17), int), CFG)
