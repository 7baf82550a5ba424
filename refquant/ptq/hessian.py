"""Statistics of the linear layers' inputs — GPTQ's Hessian, AWQ's mean |x|, SmoothQuant's max |x| —
collected through a model's ``linear=`` hook, and the sequential driver that quantizes a model group
by group on inputs recomputed from the already-quantized layers.

For a linear layer ``y = x Wᵀ`` and calibration inputs x (rows of X), the layer-wise objective of
GPTQ / OBQ is ``‖W X − Ŵ X‖²``; its Hessian with respect to a row of W is::

    H = (2 / n) Σ x xᵀ          (K, K), summed over every input row x seen          (1)

kept as a running average, exactly as IST-DASLab ``gptq.py: GPTQ.add_batch`` updates it for a batch
of m samples::

    H ← H · n / (n + m);   n ← n + m;   x ← sqrt(2 / n) · x;   H ← H + Σ x xᵀ        (2)

What counts as a "sample" differs between references (``count``): IST-DASLab, AutoGPTQ and early
GPTQModel take m = the batch's leading dimension for a (B, T, K) input and m = 1 for a 2-D one (so n
counts sequences while the sum runs over every token); later GPTQModel counts tokens (m = B·T).
The two differ by a constant factor in H, which GPTQ's result does not depend on (the damping is
relative to mean(diag H)). Everything is accumulated in float64.

Per input channel j the state also keeps ``Σ|x_j|`` (AWQ's activation scale uses the mean |x_j|,
llm-awq ``auto_scale.py: get_act_scale``) and ``max|x_j|`` (SmoothQuant ``calibration.py:
get_act_scales``).

References
----------
Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers",
ICLR 2023, §3 (layer-wise objective, H = 2XXᵀ) and §4 "Step 3" (sequential, true-sequential).
Frantar & Alistarh, "Optimal Brain Compression", NeurIPS 2022 (OBQ). Mirrored: IST-DASLab/gptq
``gptq.py: GPTQ.add_batch``, ``llama.py: llama_sequential`` (``--true-sequential`` groups).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..core._checks import float_array
from ..core._types import ArrayLike
from ..models.gpt import affine
from ..models.lm import LM

COUNTS = ("sequences", "tokens")


def _frozen(a):
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class InputStats:
    """Running statistics of one linear layer's input (arrays read-only)."""

    H: np.ndarray  # (K, K) float64: (2/n) Σ x xᵀ, eq. (1)
    n: int  # samples, counted as `count` says
    tokens: int  # input rows x seen
    abs_sum: np.ndarray  # (K,) float64: Σ |x_j| over every row
    abs_max: np.ndarray  # (K,) float64: max |x_j| over every row

    @property
    def abs_mean(self) -> np.ndarray:
        """(K,) mean |x_j| per input channel (AWQ's activation statistic)."""
        return self.abs_sum / max(self.tokens, 1)


def _samples(shape, count: str) -> int:
    if count == "tokens":
        return int(np.prod(shape[:-1]))
    return 1 if len(shape) == 2 else int(np.prod(shape[:-2]))  # add_batch unsqueezes a 2-D input


def update(state: InputStats | None, x: ArrayLike, *, count: str = "sequences") -> InputStats:
    """Add a batch of inputs ``x`` (..., K) (at least 2-D) to the running statistics; ``None`` starts.

    Equation (2) in float64; ``count`` ("sequences" as IST-DASLab / AutoGPTQ, or "tokens" as
    GPTQModel) chooses m. Neither ``state`` nor ``x`` is modified.
    """
    if count not in COUNTS:
        raise ValueError(f"count: expected one of {COUNTS}, got {count!r}")
    x = float_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x: expected inputs of shape (..., K) with at least 2 dimensions, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains Inf; the statistics would not be finite")
    x2 = x.reshape(-1, x.shape[-1]).astype(np.float64)  # (tokens, K)
    K = x2.shape[1]
    if state is None:
        state = InputStats(np.zeros((K, K)), 0, 0, np.zeros(K), np.zeros(K))
    elif state.H.shape != (K, K):
        raise ValueError(f"x: {K} input channels, but the state holds statistics of {state.H.shape[0]}")
    m = _samples(x.shape, count)
    n = state.n + m
    xs = np.sqrt(2.0 / n) * x2
    H = state.H * (state.n / n) + xs.T @ xs  # eq. (2)
    a = np.abs(x2)
    return InputStats(_frozen(H), n, state.tokens + x2.shape[0], _frozen(state.abs_sum + a.sum(0)),
                      _frozen(np.maximum(state.abs_max, a.max(0, initial=0.0))))


def hessian_ref(xs: Iterable[ArrayLike], *, count: str = "sequences") -> np.ndarray:
    """Equation (1) written out: ``(2/n) Σ x xᵀ`` over every row of every batch in ``xs``, one outer
    product at a time (the slow twin of :func:`update`; equal up to float rounding, not bit-exactly,
    because (2) rescales the running sum after every batch)."""
    n, K = 0, np.asarray(xs[0]).shape[-1]
    S = np.zeros((K, K))
    for x in xs:
        x = np.asarray(x, np.float64)
        n += _samples(x.shape, count)
        for row in x.reshape(-1, K):
            S += np.outer(row, row)
    return 2.0 / n * S


class _Stop(Exception):
    """Raised by a hook to end a forward pass early: once every wanted layer has run, or (AWQ) once the
    wanted output has been seen."""


def _run_until_stop(forward: Callable, *args: object, **kwargs: object) -> None:
    """``forward(*args, **kwargs)``, ended early and without error where a hook raises :class:`_Stop`."""
    try:
        forward(*args, **kwargs)
    except _Stop:
        pass


def _run(forward, params, batches, names, weights, stop_early, count):
    """Run ``forward`` on every batch; returns (stats by name, the weight each recorded layer used)."""
    wanted = None if names is None else list(dict.fromkeys(names))
    if stop_early and wanted is None:
        raise ValueError("stop_early: needs names (the layers after which a forward pass may stop)")
    stats, seen_w = {}, {}
    for bi, batch in enumerate(batches):
        left = set(wanted) if wanted is not None else set()
        done = []  # (state before, x, state after) of this pass: q, k, v (gate, up) share one input array

        def hook(name, x, w, b):
            w = weights.get(name, w)
            if wanted is None or name in wanted:
                prev = stats.get(name)
                new = next((a for p, xx, a in done if p is prev and xx is x), None)
                stats[name] = update(prev, x, count=count) if new is None else new
                done.append((prev, x, stats[name]))
                seen_w.setdefault(name, w)
                left.discard(name)
                if stop_early and not left:
                    raise _Stop
            return affine(x, w, b)

        _run_until_stop(forward, params, batch, linear=hook)
        if wanted is not None and left:
            raise ValueError(f"names: forward never called the linear layer(s) {sorted(left)} (batch {bi})")
    if wanted is not None and not stats:
        raise ValueError("batches: no calibration batch was given")
    return stats, seen_w


def collect_statistics(forward: Callable, params: dict, batches: Iterable, names: Sequence[str] | None = None, *,
                       weights: dict | None = None, stop_early: bool = False,
                       count: str = "sequences") -> dict:
    """Input statistics of the linear layers: ``{name: InputStats}``.

    Parameters
    ----------
    forward : callable
        ``forward(params, batch, linear=hook)`` runs the model on one batch (its result is ignored),
        calling ``hook(name, x, w, b)`` for every linear layer — e.g.
        ``functools.partial(refquant.models.gpt.forward, cfg=cfg)`` or the LLaMA model's forward.
    params : dict
        The model's parameters, passed to ``forward`` unchanged.
    batches : iterable
        Calibration batches (token ids (B, T) for the language models).
    names : sequence of str or None
        Record only these layers (None: every layer the forward calls).
    weights : dict or None
        ``{name: w}``: weights the hook uses instead of the model's own (the layers quantized so far).
    stop_early : bool
        End each forward pass once every layer in ``names`` has run (a model that calls one layer
        twice per pass, e.g. a shared weight, needs False).
    count : {"sequences", "tokens"}
        What ``n`` counts in eq. (2); see the module docstring.
    """
    stats, _ = _run(forward, params, batches, names, dict(weights or {}), stop_early, count)
    return stats


def quantize_sequential(forward: Callable, params: dict, batches: Iterable, groups: Sequence[Sequence[str]],
                        quantize: Callable, *, stop_early: bool = True,
                        count: str = "sequences") -> tuple[dict, dict]:
    """Quantize a model group by group, each group on inputs from the already-quantized model.

    For every group in ``groups`` (lists of linear names, in forward order): run ``forward`` on all
    ``batches`` with the layers quantized so far substituted through the ``linear=`` hook, collect
    the group's input statistics, then ``quantize(name, w, stats)`` each of its layers (``w`` the
    float weight the layer used). The layers of one group see the same inputs and are quantized
    from them independently, as in IST-DASLab ``llama.py: llama_sequential`` (where block i's inputs
    come from the quantized blocks before it and, with ``--true-sequential``, from its quantized
    earlier groups).

    The model descriptions of :mod:`refquant.models.lm` give both arguments: ``lm.forward`` and
    ``lm.sequential_groups`` — for the tiny GPT c_attn → attn.c_proj → c_fc → mlp.c_proj per block,
    for LLaMA the "true sequential" (q, k, v) → o → (gate, up) → down; each followed by the head.

    Cost: one (possibly early-stopped) forward pass over the calibration batches per group — for
    the tiny GPT 9 groups; for a LLaMA with L blocks 4·L + 1.
    The reference instead caches each block's inputs and runs one block at a time (L block passes
    per group): :func:`quantize_blockwise`, equal to this driver exactly; re-running the prefix keeps
    this one model-agnostic at the price of ~L/2 times more forward compute (``stop_early`` skips the
    layers after the group, the logits included).

    Parameters
    ----------
    forward, params, batches, count : see :func:`collect_statistics`.
    groups : sequence of sequences of str, in forward order.
    quantize : callable ``(name, w (out, in), InputStats) -> result``; ``result`` is the quantized
        weight (ndarray) or an object with a ``w_hat`` attribute (e.g. a GPTQ result).

    Returns
    -------
    params_q : dict
        ``params`` with ``params_q[name] = ŵ`` (the weight's dtype) for every quantized layer; a
        tied head (LLaMA's ``output.weight``) gets its own quantized entry.
    results : dict
        ``{name: what quantize returned}``.
    """
    weights, results = {}, {}
    for group in groups:
        group = list(group)
        if not group:
            raise ValueError("groups: an empty group")
        done = [n for n in group if n in results]
        if done:
            raise ValueError(f"groups: {done} appear in more than one group")
        stats, seen_w = _run(forward, params, batches, group, weights, stop_early, count)
        for name in group:
            res = quantize(name, seen_w[name], stats[name])
            w_hat = np.asarray(getattr(res, "w_hat", res))
            if w_hat.shape != seen_w[name].shape:
                raise ValueError(f"quantize: returned shape {w_hat.shape} for {name!r}, whose weight is {seen_w[name].shape}")
            results[name] = res
            weights[name] = w_hat.astype(seen_w[name].dtype)
    return {**params, **weights}, results


def quantize_blockwise(lm: LM, params: dict, batches: Iterable, quantize: Callable, *,
                       count: str = "sequences") -> tuple[dict, dict]:
    """:func:`quantize_sequential` block by block, as IST-DASLab ``llama.py: llama_sequential``: the
    calibration batches' residual stream entering block i is kept, block i's groups are quantized on
    it in order (each group's statistics from one early-stopped pass of block i, with the block's
    earlier groups quantized), then the stream is advanced through the quantized block i; the head
    last. Uses the model's block entry points (``lm.embed`` / ``lm.block`` / ``lm.head``,
    ``lm.block_groups``); the result equals ``quantize_sequential(lm.forward, params, batches,
    lm.sequential_groups, quantize)`` exactly, for L + 1 block passes per block instead of ~4·L/2.

    Memory: the stream of every batch, B·T·C float32 each (8 × 512 × 576 × 4 B = 9.4 MB for SmolLM2).
    Returns ``(params_q, results)`` as :func:`quantize_sequential`.
    """
    if lm.block is None:
        raise ValueError(f"lm: the model {lm.name!r} has no block entry points; use quantize_sequential")
    batches = list(batches)
    if not batches:
        raise ValueError("batches: no calibration batch was given")
    weights, results = {}, {}

    def substituted(name, x, w, b):
        return affine(x, weights.get(name, w), b)

    xs = [lm.embed(params, b) for b in batches]
    for i in range(lm.n_block + 1):
        if i < lm.n_block:
            groups = lm.block_groups[i]
            run = lambda p, x, linear, i=i: lm.block(p, i, x, linear=linear)  # noqa: E731
        else:
            groups = (lm.sequential_groups[-1],)
            run = lambda p, x, linear: lm.head(p, x, linear=linear)  # noqa: E731
        for group in groups:
            group = list(group)
            stats, seen_w = _run(run, params, xs, group, weights, True, count)
            for name in group:
                res = quantize(name, seen_w[name], stats[name])
                w_hat = np.asarray(getattr(res, "w_hat", res))
                if w_hat.shape != seen_w[name].shape:
                    raise ValueError(f"quantize: returned shape {w_hat.shape} for {name!r}, whose weight is "
                                     f"{seen_w[name].shape}")
                results[name] = res
                weights[name] = w_hat.astype(seen_w[name].dtype)
        if i < lm.n_block:
            xs = [lm.block(params, i, x, linear=substituted) for x in xs]
    return {**params, **weights}, results
