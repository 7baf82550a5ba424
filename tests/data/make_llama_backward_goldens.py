"""Record PyTorch autograd's loss and gradients of a tiny LLaMA as goldens for CI.

    python tests/data/make_llama_backward_goldens.py      # writes tests/data/llama_backward_torch.npz

Not a test and not a dependency: needs torch 2.13.0 (CPU). The model is written here in torch from
its equations, independently of refquant's code: ``F.rms_norm``, RoPE as Meta's reference
``apply_rotary_emb`` (adjacent pairs viewed as complex numbers, multiplied by ``e^{iθ}``) or Hugging
Face's ``rotate_half`` (pairs (i, i + d/2)), ``F.scaled_dot_product_attention(is_causal=True,
enable_gqa=True)`` (query head h reads kv head h // (nh / nkv)), ``F.silu``, ``F.cross_entropy``;
float64 throughout, gradients by ``loss.backward()``.

Two cases: ``a`` — tied head, adjacent pairs, RoPE on the whole head; ``b`` — separate
``output.weight``, rotate-half pairs, RoPE on the first half of each head. Per case: the config
(``<c>.cfg``: vocab, n_layer, n_embd, n_ff, n_head, n_kv_head, rope_dim, rope_base, norm_eps),
``<c>.half`` (1: rotate-half pairs), ``<c>.idx`` / ``<c>.targets`` (B, T), ``<c>.loss``, and per
parameter ``<c>.p.<name>`` and ``<c>.g.<name>``. The parameters are refquant's ``init_params``
layout, drawn here with numpy (seeded) so that the file is self-contained.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llama_backward_torch.npz")


def params(cfg, rng, tied):
    V, L, C, Fd, nh, nkv, *_ = cfg
    hd = C // nh
    n = lambda *s: rng.standard_normal(s) * 0.3  # noqa: E731  (large enough that the gradients are not tiny)
    p = {"token_embd.weight": n(V, C), "output_norm.weight": 1 + 0.1 * rng.standard_normal(C)}
    for i in range(L):
        b = f"blk.{i}."
        p[b + "attn_norm.weight"], p[b + "ffn_norm.weight"] = 1 + 0.1 * rng.standard_normal((2, C))
        p[b + "attn_q.weight"], p[b + "attn_output.weight"] = n(C, C), n(C, C)
        p[b + "attn_k.weight"], p[b + "attn_v.weight"] = n(nkv * hd, C), n(nkv * hd, C)
        p[b + "ffn_gate.weight"], p[b + "ffn_up.weight"], p[b + "ffn_down.weight"] = n(Fd, C), n(Fd, C), n(C, Fd)
    if not tied:
        p["output.weight"] = n(V, C)
    return p


def rope(x, rope_dim, base, half):
    """x (B, h, T, hd): rotate the first rope_dim features of each head."""
    T = x.shape[2]
    inv = base ** (-torch.arange(0, rope_dim, 2, dtype=torch.float64) / rope_dim)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]  # (T, rope_dim/2)
    r, rest = x[..., :rope_dim], x[..., rope_dim:]
    if half:  # Hugging Face: x·cos + rotate_half(x)·sin, the angles repeated for both halves
        cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
        r1, r2 = r[..., : rope_dim // 2], r[..., rope_dim // 2:]
        out = r * cos + torch.cat([-r2, r1], -1) * sin
    else:  # Meta: adjacent pairs as complex numbers times e^{iθ}
        z = torch.view_as_complex(r.reshape(*r.shape[:-1], rope_dim // 2, 2).contiguous())
        out = torch.view_as_real(z * torch.polar(torch.ones_like(ang), ang)).flatten(-2)
    return torch.cat([out, rest], -1)


def loss_fn(tp, idx, targets, cfg, half):
    V, L, C, Fd, nh, nkv, rope_dim, base, eps = cfg
    hd = C // nh
    B, T = idx.shape
    x = tp["token_embd.weight"][idx]
    for i in range(L):
        b = f"blk.{i}."
        h = F.rms_norm(x, (C,), tp[b + "attn_norm.weight"], eps)
        q = (h @ tp[b + "attn_q.weight"].T).view(B, T, nh, hd).transpose(1, 2)
        k = (h @ tp[b + "attn_k.weight"].T).view(B, T, nkv, hd).transpose(1, 2)
        v = (h @ tp[b + "attn_v.weight"].T).view(B, T, nkv, hd).transpose(1, 2)
        q, k = rope(q, rope_dim, base, half), rope(k, rope_dim, base, half)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + y.transpose(1, 2).reshape(B, T, C) @ tp[b + "attn_output.weight"].T
        h = F.rms_norm(x, (C,), tp[b + "ffn_norm.weight"], eps)
        x = x + (F.silu(h @ tp[b + "ffn_gate.weight"].T) * (h @ tp[b + "ffn_up.weight"].T)) @ tp[b + "ffn_down.weight"].T
    h = F.rms_norm(x, (C,), tp["output_norm.weight"], eps)
    w = tp["output.weight"] if "output.weight" in tp else tp["token_embd.weight"]
    return F.cross_entropy((h @ w.T).reshape(B * T, V), targets.reshape(-1))


def main():
    assert torch.__version__.startswith("2.13.0"), torch.__version__
    out = {}
    cases = {"a": ((23, 2, 16, 24, 4, 2, 4, 10000.0, 1e-5), False, True),
             "b": ((19, 2, 16, 20, 4, 2, 2, 500.0, 1e-6), True, False)}
    for c, (cfg, half, tied) in cases.items():
        rng = np.random.default_rng(ord(c))
        p = params(cfg, rng, tied)
        idx = rng.integers(0, cfg[0], (2, 7))
        targets = rng.integers(0, cfg[0], (2, 7))
        tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in p.items()}
        loss = loss_fn(tp, torch.tensor(idx), torch.tensor(targets), cfg, half)
        loss.backward()
        out[f"{c}.cfg"] = np.array(cfg, np.float64)
        out[f"{c}.half"] = np.array(int(half))
        out[f"{c}.idx"], out[f"{c}.targets"], out[f"{c}.loss"] = idx, targets, np.array(loss.item())
        for k in p:
            out[f"{c}.p.{k}"], out[f"{c}.g.{k}"] = p[k], tp[k].grad.numpy()
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
