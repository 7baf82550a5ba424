"""AWQ on a whole model: the scale search of every fold on the float model's block inputs, the folds,
the clipping search on the scaled model, and AWQ's pseudo-quantizer on every linear — llm-awq
``pre_quant.py: run_awq`` followed by ``pseudo_quantize_model_weight``.

The equations (1)–(10), the rounding and zero-point conventions and the switches where llm-awq and
AutoAWQ differ are in :mod:`refquant.ptq.awq`, which holds the per-layer pieces this module drives.

References
----------
Lin et al., "AWQ: Activation-aware Weight Quantization for On-Device LLM Compression and
Acceleration", MLSys 2024, §3.2. Mirrored: mit-han-lab/llm-awq ``awq/quantize/pre_quant.py: run_awq``,
``auto_scale.py: auto_scale_block``; AutoAWQ ``awq/quantize/quantizer.py: AwqQuantizer.quantize``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..models.gpt import affine
from ..models.lm import LM, block_of, fold_scale, run_blocks, weight
from .awq import CLIP_QK, HEAD, INSPECT, awq_search_scale, pseudo_quantize
from .awq_clip import apply_clip, awq_clip
from .hessian import _Stop, _run_until_stop


@dataclass(frozen=True)
class AWQResult:
    """What :func:`awq_quantize` chose: per fold (keyed by its linears) the scale search, per linear
    the clipping thresholds (rows, n_groups), and every linear's quantized tensor."""

    scales: dict  # {tuple of linear names: ScaleSearch}
    clips: dict  # {name: max_val (rows, n_groups)}
    tensors: dict  # {name: AWQTensor}


def _block_runner(lm, i):
    """``run(params, x, linear)``: block i on the residual stream, or the head for i = n_block."""
    if i < lm.n_block:
        return lambda p, x, linear: lm.block(p, i, x, linear=linear)
    return lambda p, x, linear: lm.head(p, x, linear=linear)


def _fold_loss(lm, params, run, xs, fold, inspect):
    """(x (tokens, K) the fold's linears read, loss of eq. (5) or None for ``inspect="layer"``) for a
    fold of the block ``run`` computes, on the block inputs ``xs`` (one per calibration batch).

    One early-stopped pass per batch records the fold's input and the float output y of
    ``fold.inspect``, and the outputs of the block's linears that run before the fold's (they do not
    depend on the candidates: the loss passes reuse them instead of multiplying again). When the
    inspected linear is the fold's only linear, the loss multiplies the recorded input directly —
    the same float32 ``affine`` the pass would compute.
    """
    first = lm.linear_names.index(fold.linears[0])
    before = set(lm.linear_names[:first])
    reuse, xs_in, bias, y_float = {}, [], [], []
    for bi, x0 in enumerate(xs):
        def hook(name, x, w, b, bi=bi):
            y = affine(x, w, b)
            if name in before:
                reuse[bi, name] = y
            if name == fold.linears[0]:
                xs_in.append(x)
            if name == fold.inspect:
                bias.append(b)
                y_float.append(y)
                raise _Stop
            return y
        _run_until_stop(run, params, x0, hook)
    x = np.concatenate([a.reshape(-1, a.shape[-1]) for a in xs_in])
    if inspect == "layer":
        return x, None
    n = sum(a.size for a in y_float)

    def sq(ys):
        return sum(float(np.sum((a.astype(np.float64) - b) ** 2)) for a, b in zip(y_float, ys))

    if fold.linears == (fold.inspect,):
        return x, lambda hats: sq([affine(a, hats[0], b) for a, b in zip(xs_in, bias)]) / n

    def loss(hats):
        subst, ys = dict(zip(fold.linears, hats)), []
        for bi, x0 in enumerate(xs):
            def hook(name, x, w, b, bi=bi):
                if (bi, name) in reuse:
                    return reuse[bi, name]
                y = affine(x, subst.get(name, w), b)
                if name == fold.inspect:
                    ys.append(y)
                    raise _Stop
                return y
            _run_until_stop(run, params, x0, hook)
        return sq(ys) / n
    return x, loss


def _sampled_inputs(lm, params, batches, names, n_sample_token):
    """Every step-th input row of each linear, rows counted over all batches in order (step as awq_clip)."""
    n = sum(int(np.prod(np.shape(b))) for b in batches)
    step, seen, out = max(1, n // n_sample_token), {}, {}
    head_name = lm.sequential_groups[-1][-1]
    for batch in batches:
        def hook(name, x, w, b):
            if name in names:
                x2 = x.reshape(-1, x.shape[-1])
                start = seen.get(name, 0)
                out.setdefault(name, []).append(x2[(-start) % step::step])
                seen[name] = start + len(x2)
            return affine(x, w, b)
        x = run_blocks(lm, params, lm.embed(params, batch), 0, lm.n_block, linear=hook)
        if head_name in names:  # the head's logits are needed only when the head is clipped
            lm.head(params, x, linear=hook)
    return {k: np.concatenate(v) for k, v in out.items()}


def _clip_rows(lm, name, rows, clip_qk):
    """Rows of ``name`` whose clipping is searched (None: the layer is skipped)."""
    qk = np.zeros(rows, bool)
    for n, a, b in lm.qk_rows:
        if n == name:
            qk[a:b] = True
    if clip_qk == "rows":
        return None if qk.all() else ~qk
    if clip_qk == "pure":
        return None if qk.all() else np.ones(rows, bool)
    return None if qk.any() else np.ones(rows, bool)


def awq_quantize(lm: LM, params: dict, calib_batches: Iterable[np.ndarray], *, bits: int = 4, group_size: int = 128,
                 zero_point: bool = True, duo_scaling: bool = False, n_grid: int = 20, inspect: str = "module",
                 clip: bool = True, clip_qk: str = "rows", max_shrink: float = 0.5, n_sample_token: int = 512,
                 head: str = "rtn", clip_accumulate: str = "matmul") -> tuple[dict, AWQResult]:
    """AWQ on a whole model (llm-awq ``run_awq`` + ``pseudo_quantize_model_weight``): ``(params', AWQResult)``.

    1. For every fold of ``lm.scale_folds`` (the head's only with ``head="awq"``): the scale search
       (5) on the float model's activations, the loss measured at the fold's ``inspect`` linear with
       the fold's linears as ``Q(W·s)/s`` and everything else float (``inspect="module"``, one
       early-stopped pass of the fold's block per grid point, on the block's float inputs cached
       once per block as llm-awq's ``run_awq``), or on the fold's own linears' outputs
       (``inspect="layer"``: faster, not the references' choice for norm folds).
    2. Fold every chosen scale (:func:`refquant.models.lm.fold_scale`).
    3. With ``clip``: the clipping search (6)–(7) for every linear but the head (query/key rows as
       ``clip_qk``) on the scaled model's inputs, and the clamp (``clip_accumulate``:
       :func:`refquant.ptq.awq_clip.awq_clip`'s ``accumulate``; "matmul" by default, for speed).
    4. Eq. (8)–(10) on every linear.

    The references leave the output head in float16 (``head="float"``). ``"rtn"`` (default, so that
    a comparison with round-to-nearest over every linear is like for like) quantizes it by (8)–(10)
    without a search (a real LM's head has vocabulary-many rows: 49152 for SmolLM2); ``"awq"``
    searches its scale (folded into the final norm) and clip like any other linear.
    ``params'`` holds float weights ŵ (in the weights' dtype) and the folded norms / biases; the
    input ``params`` is not modified.
    """
    if inspect not in INSPECT:
        raise ValueError(f"inspect: expected one of {INSPECT}, got {inspect!r}")
    if clip_qk not in CLIP_QK:
        raise ValueError(f"clip_qk: expected one of {CLIP_QK}, got {clip_qk!r}")
    if head not in HEAD:
        raise ValueError(f"head: expected one of {HEAD}, got {head!r}")
    batches = list(calib_batches)
    if not batches:
        raise ValueError("calib_batches: no calibration batch was given")
    head_name = lm.sequential_groups[-1][-1]
    opts = dict(bits=bits, group_size=group_size, zero_point=zero_point)
    if lm.block is None:
        raise ValueError(f"lm: the model {lm.name!r} has no block entry points (embed / block / head)")
    by_block = {}  # block index -> its folds, in forward order
    for fold in lm.scale_folds:
        if head_name in fold.linears and head != "awq":
            continue
        by_block.setdefault(block_of(lm, fold.linears[0]), []).append(fold)
    searches = {}
    xs = [lm.embed(params, b) for b in batches]  # the float residual stream entering block 0, per batch
    for i in range(lm.n_block + 1):
        run = _block_runner(lm, i)
        for fold in by_block.get(i, []):
            x, loss = _fold_loss(lm, params, run, xs, fold, inspect)
            ws = [weight(lm, params, n) for n in fold.linears]
            searches[fold.linears] = awq_search_scale(ws, x, duo_scaling=duo_scaling, n_grid=n_grid, loss=loss,
                                                      **opts)
        if i < lm.n_block and any(j > i for j in by_block):  # the float block's output: the next one's input
            xs = [lm.block(params, i, x) for x in xs]
    q = dict(params)
    for fold in lm.scale_folds:
        if fold.linears in searches:
            q = fold_scale(lm, q, fold, searches[fold.linears].scales)
    names = [n for n in lm.linear_names if head != "float" or n != head_name]
    clipped = [n for n in names if head == "awq" or n != head_name]
    clips, tensors = {}, {}
    if clip:
        xs = _sampled_inputs(lm, q, batches, set(clipped), n_sample_token)
        for name in clipped:
            w = weight(lm, q, name)
            rows = _clip_rows(lm, name, w.shape[0], clip_qk)
            if rows is not None:
                clips[name] = awq_clip(w, xs[name], n_grid=n_grid, max_shrink=max_shrink,
                                       n_sample_token=len(xs[name]), rows=rows, accumulate=clip_accumulate, **opts)
                q[name] = apply_clip(w, clips[name], group_size)
    for name in names:
        tensors[name] = pseudo_quantize(weight(lm, q, name), **opts)
        q[name] = tensors[name].w_hat
    return q, AWQResult(searches, clips, tensors)
