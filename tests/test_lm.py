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
