"""A synthetic byte-level SmolLM2-like GGUF for the LLM commands' tests: a random LLaMA whose tokenizer has
the 256 byte tokens (GPT-2's byte → character table), one merge, and the three ChatML control tokens, so
that any text encodes without the real 135M model. Shared by test_gguf_io, test_llm_compare and
test_cli_mixed."""
from refquant.io import gguf as G
from refquant.io.tokenizer import bytes_to_unicode
from refquant.models import llama as L


def byte_tokenizer(chat_template: bool = True) -> dict:
    """GGUF tokenizer metadata: ids 0–255 the bytes, 256 <|endoftext|>, 257 <|im_start|> (BOS), 258
    <|im_end|> (EOS), all three CONTROL (type 3); one merge ("Ġ t"); no BOS added."""
    tok = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm",
           "tokenizer.ggml.tokens": list(bytes_to_unicode()) + ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
           "tokenizer.ggml.token_type": [1] * 256 + [3, 3, 3], "tokenizer.ggml.merges": ["Ġ t"],
           "tokenizer.ggml.bos_token_id": 257, "tokenizer.ggml.eos_token_id": 258,
           "tokenizer.ggml.add_bos_token": False}
    if chat_template:
        tok["tokenizer.chat_template"] = "<|im_start|>{{ x }}"
    return tok


def byte_config(n_layer: int = 2, n_embd: int = 32, n_ff: int = 64) -> L.LlamaConfig:
    """A LLaMA over the 259 byte-level tokens: 4 query heads, 1 kv head, RoPE on 8 of each head's dims."""
    return L.LlamaConfig(vocab_size=259, context_length=512, n_layer=n_layer, n_embd=n_embd, n_ff=n_ff, n_head=4,
                         n_kv_head=1, rope_base=10000.0, rope_dim=8)


def write_byte_model(path: str, cfg: L.LlamaConfig, *, outlier: float = 1.0, types: dict | None = None,
                     chat_template: bool = True) -> str:
    """Write ``init_params(cfg, seed=5)`` with :func:`byte_tokenizer` to ``path``; ``outlier`` multiplies
    channel 5 of the token embedding (a planted outlier channel of the residual stream)."""
    p = L.init_params(cfg, seed=5)
    if outlier != 1.0:
        p["token_embd.weight"][:, 5] *= outlier
    G.write_gguf(path, p, cfg, types=types, tokenizer=byte_tokenizer(chat_template))
    return path
