"""How much each linear layer suffers in each candidate format — three measures of the sensitivity
table ``Ω[i, j]`` (layer i quantized alone in format j) that :mod:`refquant.ptq.mixed_precision`
allocates bits from.

(a) **Loss** (one layer at a time; Nagel et al. §3.7): run the model with only layer i replaced by
    its fake-quantized weight Ŵ and measure, on calibration windows (inputs x, targets y),
    ``ΔNLL = NLL(Ŵ_i) − NLL(W)`` (mean next-token negative log-likelihood, nats) and
    ``KL = mean over predictions of Σ_v p_v (log p_v − log p̂_v)`` (float model p, quantized p̂).
(b) **OBS / GPTQ proxy**: the layer-output error of ``y = x Wᵀ`` under ΔW = Ŵ − W,
        Ω = tr(ΔW H ΔWᵀ) = Σ_rows ΔW_r H ΔW_rᵀ,   H = (2/n) Σ_tokens x xᵀ        (1)
    with H from :func:`refquant.ptq.hessian.collect_statistics` counting tokens (n = tokens), so
    (1) = (2/n) ‖ΔW X‖²_F: twice the mean squared output error per token (X (K, n) the inputs).
    It is the second-order term of GPTQ / OBQ's layer-wise objective; its units differ from layer to
    layer (a head's logits vs a block's residual update), which the allocator does not correct.
(c) **Hessian trace** (HAWQ-v2): with H_i the Hessian of the loss with respect to layer i's n_i
    weights,
        Ω = Tr(H_i) / n_i · ‖Ŵ_i − W_i‖²_F                                             (2)
    Tr(H_i) is estimated by Hutchinson's method: for Rademacher vectors v (entries ±1 with
    probability ½), E[vᵀ H v] = Tr(H), so Tr(H) ≈ (1/m) Σ_k v_kᵀ H v_k. The Hessian-vector product
    is a central difference of gradients (the tiny GPT's :func:`refquant.models.gpt.loss_and_grads`,
    in float64):
        H v ≈ (g(w + εv) − g(w − εv)) / (2ε)       error O(ε² ‖∇³L‖) + O(u ‖g‖ / ε)      (3)
    Available for the tiny GPT only: refquant's LLaMA has no backward pass.

A :class:`Candidate` is a registry format with its options (or ``None``: the float32 weight kept,
32 bits per weight). Every table is (layers, candidates), in the order of ``names`` and ``candidates``.

References
----------
Nagel et al., "A White Paper on Neural Network Quantization", arXiv:2106.08295, §3.7 (one layer at a time).
Frantar & Alistarh, "Optimal Brain Compression", NeurIPS 2022, §3; Frantar et al., "GPTQ", ICLR 2023,
§3 (layer-wise objective ‖WX − ŴX‖², H = 2XXᵀ).
Dong et al., "HAWQ-V2: Hessian Aware trace-Weighted Quantization of Neural Networks", NeurIPS 2020
(arXiv:1911.03852), §2: the sensitivity Ω of eq. (2.11) = average Hessian trace × ‖Q(W) − W‖², and
Hutchinson's trace estimator. Hutchinson, "A stochastic estimator of the trace of the influence matrix
for Laplacian smoothing splines", Comm. Statist. Simul. Comput. 19 (1990).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..core._types import ArrayLike
from ..formats import registry
from ..models import gpt, llama
from ..models.lm import LM, llama_lm, weight
from .hessian import collect_statistics

FLOAT_BITS = 32  # a weight kept in float32


@dataclass(frozen=True)
class Candidate:
    """One format a layer may get."""

    label: str  # name in tables: "int4-g32", "float"
    format: str | None  # a key of refquant.formats.registry.FORMATS; None keeps the float32 weight
    options: Mapping = field(default_factory=dict)  # the format's options, e.g. {"group_size": 32}

    def __post_init__(self):
        opts = MappingProxyType(dict(self.options))
        if self.format is not None:
            registry.check_options(self.format, opts)
        elif opts:
            raise ValueError(f"options: the float candidate (format=None) takes none, got {dict(opts)}")
        object.__setattr__(self, "options", opts)


def candidate_bits(c: Candidate, shape: Sequence[int]) -> int:
    """Bits that ``c`` stores for a weight of ``shape`` (rows, K): the registry's count, or 32 per weight."""
    if c.format is None:
        return FLOAT_BITS * int(np.prod(shape))
    return registry.storage_bits(c.format, shape, **c.options)


def candidate_weight(w: ArrayLike, c: Candidate) -> np.ndarray:
    """The weight as ``c`` reconstructs it (fake quantization through the registry), in w's dtype."""
    w = np.asarray(w)
    if c.format is None:
        return w
    return registry.quantize(w, c.format, **c.options).dequantize().astype(w.dtype)


def _names(lm: LM, names):
    names = list(lm.linear_names if names is None else names)
    unknown = sorted(set(names) - set(lm.linear_names))
    if unknown or not names:
        raise ValueError(f"names: {unknown or 'none given'}; the model's linear layers are {', '.join(lm.linear_names)}")
    return names


def _candidates(candidates) -> list:
    candidates = list(candidates)
    if not candidates or not all(isinstance(c, Candidate) for c in candidates):
        raise TypeError("candidates: expected a non-empty sequence of Candidate")
    return candidates


def size_table(lm: LM, params: dict, candidates: Sequence[Candidate], names: Sequence[str] | None = None) -> np.ndarray:
    """(layers, candidates) int64: the bits each layer stores in each candidate format (nothing quantized)."""
    names, candidates = _names(lm, names), _candidates(candidates)
    return np.array([[candidate_bits(c, weight(lm, params, n).shape) for c in candidates] for n in names], np.int64)


def _delta(w, c: Candidate) -> np.ndarray:
    """ΔW = Ŵ − W in float64 (quantized from the weight as stored)."""
    return candidate_weight(w, c).astype(np.float64) - np.asarray(w, np.float64)


def _log_softmax(z) -> np.ndarray:
    """``z − max − log Σ exp(z − max)`` over the last axis, all in float64 (KL of equal logits is 0)."""
    d = np.asarray(z, np.float64)
    d = d - d.max(-1, keepdims=True)
    return d - np.log(np.exp(d).sum(-1, keepdims=True))


def loss_sensitivity(lm: LM, params: dict, windows: tuple, candidates: Sequence[Candidate],
                     names: Sequence[str] | None = None, *, progress: Callable | None = None) -> dict:
    """Measure (a): each layer alone fake-quantized in each candidate format, the others float.

    Parameters
    ----------
    lm, params : the model and its float parameters (not modified; the layer is replaced through
        the ``linear=`` hook, so a tied head needs no copy).
    windows : (x (B, T) int, y (B, T) int) — inputs and next-token targets.
    candidates : sequence of :class:`Candidate`.
    names : the layers to measure (default: ``lm.linear_names``).
    progress : callable ``(done, total, name)`` or None — called after each layer.

    Returns
    -------
    dict with ``"delta_nll"`` (layers, candidates) — NLL(layer i in format j) − NLL(float), nats;
    ``"kl"`` (layers, candidates) — mean KL(P_float ‖ P_quantized) per prediction, nats;
    ``"nll"`` — the float model's NLL. One forward pass per (layer, candidate) over all B·T
    predictions at once: three (B, T, V) float64 arrays are held (24·B·T·V bytes).
    ΔNLL can come out negative (a format that happens to fit the windows better); KL cannot.
    """
    names, candidates = _names(lm, names), _candidates(candidates)
    x, y = _windows(windows)
    return _loss_tables(names, candidates, lambda n: weight(lm, params, n), y, lm.forward(params, x),
                        lambda name, hook: lm.forward(params, x, linear=hook), progress)


def llama_loss_sensitivity(params: dict, cfg: llama.LlamaConfig, windows: tuple, candidates: Sequence[Candidate],
                           names: Sequence[str] | None = None, *, progress: Callable | None = None) -> dict:
    """:func:`loss_sensitivity` of a LLaMA model, equal to it, in about half the time: a layer of block
    b changes nothing before block b, so the float residual stream at each block's input is computed
    once and the forward pass for a layer of block b resumes there (blocks b … n_layer − 1 and the
    head run; for ``output.weight`` only the head)."""
    lm = llama_lm(cfg)
    names, candidates = _names(lm, names), _candidates(candidates)
    x, y = _windows(windows)
    xs = [llama.embed(params, x)]  # xs[b]: the residual stream entering block b (B, T, C); xs[-1]: the head's
    for i in range(cfg.n_layer):
        xs.append(llama.block(params, i, xs[-1], cfg)[0])

    def run(name, hook):
        b = int(name.split(".")[1]) if name.startswith("blk.") else cfg.n_layer
        h = xs[b]
        for i in range(b, cfg.n_layer):
            h = llama.block(params, i, h, cfg, linear=hook)[0]
        return llama.head(params, h, cfg, linear=hook)

    return _loss_tables(names, candidates, lambda n: weight(lm, params, n), y, llama.head(params, xs[-1], cfg), run,
                        progress)


def _windows(windows):
    x, y = (np.asarray(a) for a in windows)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"windows: expected inputs and targets of the same shape (B, T), got {x.shape} and {y.shape}")
    return x, y


def _loss_tables(names, candidates, weight_of, y, logits0, run, progress) -> dict:
    """ΔNLL and KL of ``run(name, hook)`` (logits with only ``name`` replaced through ``hook``) against ``logits0``."""
    lp0 = _log_softmax(logits0)  # (B, T, V)
    nll0 = -float(np.take_along_axis(lp0, y[..., None], -1).mean())
    p0 = np.exp(lp0)
    d_nll, kl = np.zeros((len(names), len(candidates))), np.zeros((len(names), len(candidates)))
    for i, name in enumerate(names):
        w = weight_of(name)
        for j, c in enumerate(candidates):
            if c.format is None:
                continue  # the float model itself: ΔNLL = KL = 0
            w_hat = candidate_weight(w, c)

            def hook(n, xx, ww, b, name=name, w_hat=w_hat):
                return gpt.affine(xx, w_hat if n == name else ww, b)

            lp = _log_softmax(run(name, hook))
            d_nll[i, j] = -float(np.take_along_axis(lp, y[..., None], -1).mean()) - nll0
            kl[i, j] = float((p0 * (lp0 - lp)).sum(-1).mean())
        if progress is not None:
            progress(i + 1, len(names), name)
    return {"delta_nll": d_nll, "kl": kl, "nll": nll0}


def obs_proxy(dw: ArrayLike, H: ArrayLike) -> float:
    """Eq. (1): ``tr(ΔW H ΔWᵀ)`` for ΔW (rows, K) and H (K, K), in float64."""
    dw = np.asarray(dw, np.float64)
    H = np.asarray(H, np.float64)
    if dw.ndim != 2 or H.shape != (dw.shape[1], dw.shape[1]):
        raise ValueError(f"dw, H: expected (rows, K) and (K, K), got {dw.shape} and {H.shape}")
    return float(((dw @ H) * dw).sum())


def obs_sensitivity(lm: LM, params: dict, batches: Iterable, candidates: Sequence[Candidate],
                    names: Sequence[str] | None = None, *, stats: Mapping | None = None) -> np.ndarray:
    """Measure (b): (layers, candidates) ``tr(ΔW H ΔWᵀ)`` with ΔW = Ŵ − W (round to nearest through the
    registry) and H = (2/n) Σ x xᵀ over the float model's inputs to the layer on ``batches``
    (token ids (B, T) each), n counting tokens. ``stats``: ``{name: InputStats}`` already collected
    (then ``batches`` is not used)."""
    names, candidates = _names(lm, names), _candidates(candidates)
    if stats is None:
        stats = collect_statistics(lm.forward, params, batches, names, count="tokens")
    out = np.zeros((len(names), len(candidates)))
    for i, name in enumerate(names):
        w = weight(lm, params, name)
        for j, c in enumerate(candidates):
            out[i, j] = obs_proxy(_delta(w, c), stats[name].H)
    return out


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's estimate of Tr(H) and its standard error."""

    trace: float  # (1/m) Σ v_kᵀ H v_k
    std_error: float  # sample standard deviation / sqrt(m) (NaN for m = 1)
    samples: tuple  # the m values v_kᵀ H v_k


def hutchinson_trace(hvp: Callable[[np.ndarray], ArrayLike], shape: Sequence[int], n_samples: int = 32,
                     seed: int | Sequence[int] = 0) -> TraceEstimate:
    """Tr(H) ≈ (1/m) Σ_k v_kᵀ H v_k for m = ``n_samples`` Rademacher vectors v_k of ``shape``.

    ``hvp(v)`` returns H v (an array of v's shape). Unbiased; for a diagonal H every sample equals
    Tr(H) exactly (vᵀHv = Σ_i H_ii v_i² + Σ_{i≠j} H_ij v_i v_j and v_i² = 1), otherwise the variance
    of one sample is 2 Σ_{i≠j} H_ij². The vectors come from ``numpy.random.default_rng(seed)``
    (``seed``: an int or a sequence of ints).
    """
    if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_samples):
        v = rng.integers(0, 2, size=shape).astype(np.float64) * 2 - 1  # Rademacher ±1
        hv = np.asarray(hvp(v), np.float64)
        if hv.shape != v.shape:
            raise ValueError(f"hvp: returned shape {hv.shape} for a vector of shape {v.shape}")
        vals.append(float((v * hv).sum()))
    a = np.array(vals)
    se = float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("nan")
    return TraceEstimate(float(a.mean()), se, tuple(vals))


def fd_hvp(grad: Callable[[np.ndarray], ArrayLike], w: ArrayLike, v: ArrayLike, eps: float = 1e-4) -> np.ndarray:
    """Eq. (3): ``(grad(w + εv) − grad(w − εv)) / (2ε)``, the Hessian-vector product by central differences."""
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    return (np.asarray(grad(w + eps * v)) - np.asarray(grad(w - eps * v))) / (2 * eps)


def gpt_hessian_traces(params: dict, cfg: gpt.GPTConfig, windows: tuple, names: Sequence[str] | None = None, *, n_samples: int = 16,
                       eps: float = 1e-4, seed: int = 0) -> dict:
    """Tr(H_i) of the tiny GPT's mean cross-entropy on ``windows`` = (x, y) with respect to each
    linear layer's weight: ``{name: TraceEstimate}``. Eq. (3) in float64 (a float64 copy of the
    parameters); 2·n_samples backward passes per layer; layer k's vectors from ``default_rng([seed, k])``.
    The loss is not convex: a layer's trace may come out negative (or be estimated so, with few
    samples), and eq. (2) then rewards error in that layer — check ``std_error``.

    LLaMA models: unavailable (refquant has no LLaMA backward pass) — a TypeError says so.
    """
    if not isinstance(cfg, gpt.GPTConfig):
        raise TypeError("cfg: the Hessian trace needs the tiny GPT's backward pass (a GPTConfig); "
                        "refquant's LLaMA has none, so HAWQ sensitivities are unavailable for it")
    names = list(gpt.linear_names(cfg) if names is None else names)
    unknown = sorted(set(names) - set(gpt.linear_names(cfg)))
    if unknown:
        raise ValueError(f"names: unknown linear layers {unknown}")
    x, y = (np.asarray(a, np.int64) for a in windows)
    p64 = {k: np.asarray(v, np.float64) for k, v in params.items()}
    out = {}
    for k, name in enumerate(names):
        def grad(w, name=name):
            return gpt.loss_and_grads({**p64, name: w}, x, y, cfg)[1][name]

        w0 = p64[name]
        out[name] = hutchinson_trace(lambda v, grad=grad, w0=w0: fd_hvp(grad, w0, v, eps), w0.shape, n_samples, [seed, k])
    return out


def hawq_sensitivity(lm: LM, params: dict, traces: Mapping, candidates: Sequence[Candidate],
                     names: Sequence[str] | None = None) -> np.ndarray:
    """Measure (c), eq. (2): (layers, candidates) ``Tr(H_i)/n_i · ‖Ŵ_i − W_i‖²_F`` with ``traces``
    from :func:`gpt_hessian_traces` (``{name: TraceEstimate}`` or ``{name: float}``)."""
    names, candidates = _names(lm, names), _candidates(candidates)
    missing = [n for n in names if n not in traces]
    if missing:
        raise ValueError(f"traces: no Hessian trace for {missing}")
    out = np.zeros((len(names), len(candidates)))
    for i, name in enumerate(names):
        w = weight(lm, params, name)
        t = traces[name]
        avg = float(getattr(t, "trace", t)) / w.size
        for j, c in enumerate(candidates):
            out[i, j] = avg * float((_delta(w, c) ** 2).sum())
    return out
