"""The command line: demo (full and --quick), train, quantize; --version, the console script, the BLAS
thread policy, progress on stderr, one-line errors."""
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import refquant
from refquant import __main__ as cli
from refquant._version import __version__
from refquant.formats import registry
from refquant.io.weights import load_quantized
from refquant.io.safetensors import write_safetensors

main = cli.main


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "refquant", *args], capture_output=True, text=True,
                           env=None if env is None else {**os.environ, **env})


@pytest.fixture
def weights(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "w.npz"
    np.savez(p, a=rng.standard_normal((16, 64)).astype(np.float32), ids=np.arange(4),
             conv=rng.standard_normal((4, 2, 32)).astype(np.float64), bias=np.zeros(16, np.float32),
             odd=rng.standard_normal((4, 24)).astype(np.float32), empty=np.zeros((0, 32), np.float32))
    return p


# -- demo -----------------------------------------------------------------------------------------

def test_demo_json_and_figures(tmp_path, capsys):
    assert main(["demo", "--out-dir", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    rows = json.loads(out[-1])  # the model table, as issue 6 specifies it
    assert all(set(r) == {"method", "bits_per_weight", "size_bytes", "perplexity", "delta_pct"} for r in rows)
    by = {r["method"]: r for r in rows}
    assert {"float", "w8-per-channel", "w4-g32", "w4-g128", "w8a8-static", "w8a8-dynamic"} <= set(by)
    assert by["float"]["delta_pct"] == 0 and by["float"]["bits_per_weight"] == 32
    assert by["w8a8-dynamic"]["delta_pct"] < 1 and by["w4-g32"]["delta_pct"] < 5  # the targets
    assert by["w4-g32"]["size_bytes"] < by["w8-per-channel"]["size_bytes"] < by["float"]["size_bytes"]
    text = "\n".join(out)
    # the sample-tensor table still teaches its lessons
    assert "outlier-channel weights" in text and "nf4 block-64" in text and "layer that hurts most" in text
    for f in ["00-demo-overview.png", "00-demo-ppl-vs-bits.png", "00-demo-layer-attribution.png"]:
        assert os.path.getsize(tmp_path / f) > 10_000
    assert "recipe 14/14" in captured.err and "curve: k-means" in captured.err  # progress, on stderr only
    assert "recipe" not in captured.out.split("tiny GPT")[0]


def test_demo_quick_writes_no_figures_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--quick"]) == 0
    captured = capsys.readouterr()
    assert os.listdir(tmp_path) == []  # no figures directory
    assert "quick: 16 evaluation windows" in captured.out and "target: w4-g32" in captured.out
    assert "layer that hurts most" in captured.out and "figures written" not in captured.out
    assert "(16 windows)" in captured.err and "curve:" not in captured.err


def test_errors_are_one_line_and_nonzero(tmp_path):
    r = _cli("frobnicate")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "invalid choice" in r.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = _cli("demo", "--out-dir", str(blocker / "x"))  # refused before the work
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.startswith("error: cannot write figures")


# -- version, console script, BLAS threads -------------------------------------------------------

def test_version_has_one_source(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"refquant {__version__}"
    assert refquant.__version__ == __version__ == importlib.metadata.version("refquant")


def test_console_script_is_declared_and_runs():
    (ep,) = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "refquant"]
    assert ep.value == "refquant.__main__:main" and ep.load() is main
    exe = shutil.which("refquant")
    if exe is None:
        pytest.skip("the refquant script is not on PATH (pip install -e . puts it there)")
    r = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"refquant {__version__}"


@pytest.mark.parametrize("env, want", [({}, 1), ({"REFQUANT_BLAS_THREADS": "3"}, 3),
                                       ({"REFQUANT_BLAS_THREADS": "0"}, None), ({"REFQUANT_BLAS_THREADS": "auto"}, None)])
def test_blas_thread_policy(env, want):
    assert cli.blas_threads(env) == want


def test_bad_blas_threads_is_a_one_line_error():
    with pytest.raises(ValueError, match="REFQUANT_BLAS_THREADS"):
        cli.blas_threads({"REFQUANT_BLAS_THREADS": "two"})
    r = _cli("train", "--steps", "1", env={"REFQUANT_BLAS_THREADS": "two"})
    assert r.returncode == 2 and r.stderr.startswith("error: REFQUANT_BLAS_THREADS") and "Traceback" not in r.stderr


def test_blas_limit_holds_inside_a_command_only(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas():
        return {p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"}
    monkeypatch.delenv("REFQUANT_BLAS_THREADS", raising=False)
    seen = set()

    class Args:
        command = "test"
    with threadpoolctl.threadpool_limits(2, user_api="blas"):  # as if the BLAS default were 2 threads
        assert cli._long_command(lambda args, progress: seen.update(blas()) or 0, Args()) == 0
        assert seen == {1} and blas() == {2}  # one thread inside the command, restored after it
        monkeypatch.setenv("REFQUANT_BLAS_THREADS", "auto")
        seen.clear()
        cli._long_command(lambda args, progress: seen.update(blas()) or 0, Args())
        assert seen == {2}  # auto: no limit
    # importing refquant (and its CLI) changes no thread count
    # (pools loaded before keep their thread counts; a library loaded by the import may add a pool of its own)
    code = ("import numpy, threadpoolctl as t; f = lambda: {p['filepath']: p['num_threads'] for p in t.threadpool_info()}; "
            "a = f(); import refquant, refquant.__main__; b = f(); assert a and all(b[k] == v for k, v in a.items()), (a, b)")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr


# -- train ------------------------------------------------------------------------------------------

def test_train_writes_to_the_working_directory_by_default():
    args = cli.build_parser().parse_args(["train"])
    assert args.out == "tiny_gpt.npz" and not args.force


def test_train_refuses_the_package_directory(capsys):
    target = os.path.join(os.path.dirname(refquant.__file__), "data", "tiny_gpt.npz")
    before = os.path.getmtime(target)
    assert main(["train", "--steps", "1", "--out", target]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out:") and "inside the installed refquant package" in err and "--force" in err
    assert os.path.getmtime(target) == before


@pytest.mark.parametrize("args, msg", [(["--steps", "0"], "--steps must be >= 1"),
                                       (["--steps", "1", "--out", "model.pt"], "--out: a checkpoint is an .npz"),
                                       (["--steps", "1", "--out", "/nonexistent-dir/x.npz"], "does not exist")])
def test_train_argument_errors(capsys, args, msg):
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1


def test_train_runs_and_reports_progress(tmp_path, capsys):
    from refquant.io.checkpoint import load_checkpoint

    out = tmp_path / "m.npz"
    assert main(["train", "--steps", "2", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "step     2/2" in captured.err and f"wrote {out}" in captured.out
    p, cfg, meta = load_checkpoint(str(out))
    assert meta["steps"] == 2 and p["wte"].shape == (cfg.vocab_size, cfg.n_embd)


# -- quantize ---------------------------------------------------------------------------------------

def test_quantize_table_kept_arrays_and_codes_out(weights, tmp_path, capsys):
    out = tmp_path / "q.npz"
    assert main(["quantize", "--weights", str(weights), "--format", "int4", "--group-size", "32",
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    lines = {ln.split()[0]: ln for ln in captured.out.splitlines()[1:] if ln.strip()}
    assert " 5.000 " in lines["a"]  # 4-bit codes + a float32 scale per 32 weights: 4 + 32/32
    assert "kept (int64 is not a float type)" in lines["ids"]
    assert "kept (1-D: biases" in lines["bias"]
    assert "as (4, 64)" in lines["conv"]  # (4, 2, 32) quantized as (shape[0], -1)
    assert "kept (empty)" in lines["empty"]
    assert "[6/6]" in captured.err and "writing" in captured.err
    q = load_quantized(str(out))
    with np.load(weights) as z:
        for name in ("a", "conv", "odd"):  # the file holds exactly what the registry computes
            w = z[name].astype(np.float32).reshape(z[name].shape[0], -1)
            want = registry.quantize(w, "int4", group_size=32)
            assert np.array_equal(q.tensors[name].dequantize(), want.dequantize())
            assert q.dequantize(name).shape == z[name].shape
        assert np.array_equal(q.kept["ids"], z["ids"]) and np.array_equal(q.kept["bias"], z["bias"])
    assert q.format == "int4" and q.options == {"group_size": 32, "symmetric": True, "calibration": "minmax"}


@pytest.mark.parametrize("fmt, extra", [("q4_0", []), ("nf4", ["--double-quant"]), ("kmeans", ["--bits", "3"]),
                                        ("int8", ["--affine", "--calibration", "percentile", "--group-size", "tensor"]),
                                        ("fp4_e2m1", ["--group-size", "row"]), ("log2", [])])
def test_quantize_every_family_to_safetensors(weights, tmp_path, capsys, fmt, extra):
    out = tmp_path / "q.safetensors"
    assert main(["quantize", "--weights", str(weights), "--format", fmt, *extra, "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    q = load_quantized(str(out))
    assert "a" in q.tensors and q.format == fmt
    if fmt == "q4_0":  # K = 24 is not a multiple of ggml's 32: kept, with the reason
        assert "odd" in q.kept and "q4_0 needs rows of a multiple of 32, got 24" in stdout


def test_quantize_reads_safetensors_and_npy(tmp_path, capsys):
    w = np.random.default_rng(1).standard_normal((8, 32)).astype(np.float16)
    write_safetensors(str(tmp_path / "m.safetensors"), {"x.w": w})
    np.save(tmp_path / "single.npy", w.astype(np.float32))
    for f, name in [("m.safetensors", "x.w"), ("single.npy", "single")]:
        assert main(["quantize", "--weights", str(tmp_path / f), "--format", "q8_0"]) == 0
        assert capsys.readouterr().out.splitlines()[1].startswith(name)


def test_quantize_include_exclude(weights, capsys):
    assert main(["quantize", "--weights", str(weights), "--format", "int8", "--include", "c*", "--include", "a",
                 "--exclude", "a", "--exclude", "zz*"]) == 0
    captured = capsys.readouterr()
    quantized = [ln.split()[0] for ln in captured.out.splitlines()[1:] if "kept" not in ln and not ln.startswith("total")]
    assert quantized == ["conv"]
    assert "pattern 'zz*' matches no array" in captured.err


@pytest.mark.parametrize("args, msg", [
    (["--method", "uniform", "--bits", "4"], "--method was renamed --format"),
    (["--method", "fp8"], "--format fp8_e4m3"),
    ([], "--format is required"),
    (["--format", "nf4", "--group-size", "32"], "--group-size: not an option of format nf4 (it takes --block-size"),
    (["--format", "q4_0", "--affine"], "--symmetric/--affine: not an option of format q4_0 (it takes no options)"),
    (["--format", "int4", "--bits", "3"], "--bits: not an option of format int4"),
    (["--format", "nf4", "--block-size", "0"], "--block-size must be"),
    (["--format", "log2", "--bits", "1"], "--bits must be"),
    (["--format", "int4", "--out", "q.pt"], "--out: 'q.pt' has extension '.pt'"),
    (["--format", "int4", "--out", "/nonexistent-dir/q.npz"], "--out: directory '/nonexistent-dir' does not exist"),
])
def test_quantize_argument_errors_are_one_line(weights, capsys, args, msg):
    assert main(["quantize", "--weights", str(weights), *args]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1, err


def test_quantize_checks_out_before_reading_the_weights(tmp_path, capsys):
    bad = tmp_path / "corrupt.npz"
    bad.write_text("not a zip")
    assert main(["quantize", "--weights", str(bad), "--format", "int4", "--out", str(bad)]) == 2
    assert "is the --weights file" in capsys.readouterr().err  # --out refused, the input never read
    assert main(["quantize", "--weights", str(bad), "--format", "int4"]) == 2
    assert "--weights: " in capsys.readouterr().err
    assert main(["quantize", "--weights", str(tmp_path / "nope.npz"), "--format", "int4"]) == 2
    assert "not found" in capsys.readouterr().err


def test_quantize_nan_names_the_array(tmp_path, capsys):
    np.savez(tmp_path / "n.npz", good=np.ones((2, 32), np.float32), bad=np.full((2, 32), np.nan, np.float32))
    assert main(["quantize", "--weights", str(tmp_path / "n.npz"), "--format", "int8"]) == 2
    assert "array 'bad' contains NaN or Inf" in capsys.readouterr().err


def test_quantize_help_lists_every_format_and_the_layout():
    r = _cli("quantize", "--help")
    assert r.returncode == 0
    for name in registry.FORMAT_NAMES:
        assert name in r.stdout
    assert "<name>.codes" in r.stdout and "__refquant__" in r.stdout and "load_quantized" in r.stdout


def test_quantize_mx_scale_rounding_flag(tmp_path):
    src = tmp_path / "w.npz"
    np.savez(src, w=np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32))
    ok = _cli("quantize", "--weights", str(src), "--format", "mxfp4", "--scale-rounding", "ceil")
    assert ok.returncode == 0, ok.stderr
    assert "4.25" in ok.stdout  # 4 bits + one E8M0 byte per 32
    bad = _cli("quantize", "--weights", str(src), "--format", "int4", "--scale-rounding", "ceil")
    assert bad.returncode != 0 and "--scale-rounding: not an option of format int4" in bad.stderr


def test_qat_command_rows_and_errors():
    ok = _cli("qat", "--model", "mlp", "--recipe", "w2", "--steps", "20", "--json")
    assert ok.returncode == 0, ok.stderr
    rows = json.loads(ok.stdout.strip().splitlines()[-1])
    assert [r["method"] for r in rows] == ["float", "ptq-w2", "qat-w2"]
    assert rows[1]["bits_per_weight"] == rows[2]["bits_per_weight"] == 2.5  # int2 per row + float32 scales
    bad = _cli("qat", "--model", "smollm2")  # the default --recipe is the tiny GPT's w2g32
    assert bad.returncode == 2 and "recipe: unknown 'w2g32' for model 'smollm2'" in bad.stderr
    assert "Traceback" not in bad.stderr
