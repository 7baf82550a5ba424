"""Quantization-aware training (QAT) of the tiny GPT and the MLP, started from post-training
quantization (PTQ) and compared with it.

One training step (:func:`qat_step`), the float weights ``w`` kept as the "shadow" copy::

    ŵ = Q_w(w; s)                               every quantized weight (refquant.qat.hooks)
    loss, g = loss_and_grads(θ with ŵ, batch)   x̂ = Q_a(x; a) at each linear input (linear= hook),
                                                dL/dx̂ → dL/dx, dL/da (linear_backward= hook)
    dL/dw, dL/ds = Q_w backward(dL/dŵ)          STE window, or LSQ (scale gradient)
    AdamW on θ (w included);  Adam on the quantizers' parameters (s, a), no weight decay

``loss_and_grads`` differentiates the model at the weights it multiplied, so ``g[name]`` is
``dL/dŵ``. The quantizers' parameters are trained in units of their initial step size (Adam on
``u = s / s₀``, β / s₀ and α / α₀: a relative learning rate, the same for every layer; Adam is
invariant to the gradient's scale, so LSQ's gradient scale only matters for plain SGD) and kept at
≥ 10⁻³ of their initial value. Step 0 computes exactly the PTQ model: weights scaled by the min-max
PTQ step sizes (``registry.quantize(w, "int<b>", group_size=g)``), activations by ranges
calibrated on float activations. Learning rate: linear warm-up over the first tenth, cosine decay
to a tenth (:func:`refquant.models.train.lr_at`). Deterministic for a seed (batches drawn from
``default_rng(seed)``); progress goes to a callback, ``progress(step, loss)``.

Measured (``run_qat``, seed 0, one BLAS thread; the tiny GPT: perplexity on 64 validation windows,
float 1.690; the MLP: test accuracy, float 0.960; "recovered" = (PTQ − QAT) / (PTQ − float))::

    model  recipe        bits/w  PTQ     QAT     recovered  steps  QAT seconds
    tiny   w2g32 (LSQ)   3.00    4.346   1.727   99 %       200    64
    tiny   w2g32-ste     3.00    4.346   1.765   97 %       200    61
    tiny   w3 (LSQ)      3.25    1.769   1.702   84 %       100    34
    tiny   w3-ste        3.25    1.769   1.705   81 %       100    27
    tiny   w4a4 token    4.25    1.734   1.698   82 %       200    57
    tiny   w4a4-tensor   4.25    1.885   1.715   87 %       100    31
    mlp    w2 (LSQ)      2.50    0.698   0.947   95 %       300    1.1
    mlp    w2-ste        2.50    0.698   0.942   93 %       300    1.4

The float model fine-tuned the same way for 200 steps goes from 1.690 to 1.688: the recovery is
not extra training. SmolLM2-135M (``model="smollm2"``, :mod:`refquant.qat.llama_qat`, 16 × 512
evaluation tokens): w4g128 (LSQ) 4.27 bits/w, PTQ 31.51, QAT 18.47 after 30 steps (STE: 20.13; float 13.62;
the float model fine-tuned the same way: 12.04, so part of that is adaptation to the text's kind).

References
----------
Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", CVPR 2018, section 3 (fine-tuning from a float model with fake quantization).
Esser et al., "Learned Step Size Quantization", ICLR 2020, sections 2-3 (step sizes trained with the
weights, initialised before training). Nagel et al., "A White Paper on Neural Network
Quantization", arXiv:2106.08295, section 4 (QAT initialised from PTQ, STE, learned ranges).
"""
from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
import math
import time

import numpy as np

from ..core._checks import int_value, real_value
from ..formats import registry
from ..io.checkpoint import load_checkpoint
from ..models.corpus import train_val_split
from ..models.gpt import adamw_step, forward, linear_names, loss_and_grads
from ..models.mlp import MLPConfig, accuracy, digits_data, init_mlp, mlp_loss_and_grads, train_mlp
from ..models.train import evaluator, get_batch, lr_at
from .hooks import ActQuant, WeightQuant, calibrate_acts, linear_hooks, ptq_scale, weight_backward, weight_forward


@dataclass(frozen=True)
class QATRecipe:
    """A quantization setting and its fine-tuning schedule."""

    name: str  # rows are "ptq-<name>" and "qat-<name>"
    weights: WeightQuant  # every linear weight of the model
    activations: ActQuant | None = None  # the linear layers' inputs (None: float, weight-only)
    steps: int = 200  # optimizer steps (a CLI --steps overrides)
    batch: int = 16  # sequences (GPT) or examples (MLP) per step
    lr: float = 3e-4  # peak AdamW learning rate of the model's parameters
    lr_quant: float = 3e-3  # peak Adam learning rate of the quantizers' parameters, relative (s / s₀)
    weight_decay: float = 0.0  # AdamW decay of 2-D model parameters (fine-tuning: none)

    def __post_init__(self):
        if not isinstance(self.weights, WeightQuant):
            raise TypeError(f"weights: expected a WeightQuant, got {type(self.weights).__name__}")
        if self.activations is not None and not isinstance(self.activations, ActQuant):
            raise TypeError(f"activations: expected an ActQuant or None, got {type(self.activations).__name__}")
        int_value(self.steps, "steps", 0)
        int_value(self.batch, "batch", 1)
        for name in ("lr", "lr_quant", "weight_decay"):
            real_value(getattr(self, name), name, 0.0)


@dataclass(frozen=True)
class QATResult:
    """What :func:`qat_train` returns."""

    params: dict  # the trained float ("shadow") parameters
    quantized: dict  # the parameters with every quantized weight replaced by ŵ (what is evaluated)
    weight_scales: dict  # name -> step sizes of the final ŵ (the PTQ scale's shape)
    act_params: dict  # layer -> activation-quantizer parameters ({} per token)
    losses: tuple = field(default=())  # training loss at each step (of the quantized model)


WEIGHT_OPS = (ptq_scale, weight_forward, weight_backward)  # the weight quantizer: hooks' functions


def quantized_params(p: dict, names: Collection[str], spec: WeightQuant, scales: dict | None = None,
                     out_axis: int = 0, *, weight_ops: tuple = WEIGHT_OPS) -> dict:
    """``p`` with each weight in ``names`` replaced by ŵ (``scales`` None: the PTQ step sizes).
    ``weight_ops``: functions with the signatures of ``(ptq_scale, weight_forward, weight_backward)``
    (:data:`refquant.qat.llama_qat.WEIGHT_OPS`: the same results, faster for large grouped weights)."""
    scale_fn, forward_fn, _ = weight_ops
    q = dict(p)
    for n in names:
        s = scale_fn(p[n], spec, out_axis) if scales is None or spec.method == "ste" else scales[n]
        q[n] = forward_fn(p[n], spec, s, out_axis)
    return q


def bits_per_weight(p: dict, names: Collection[str], spec: WeightQuant, out_axis: int = 0) -> float:
    """Storage bits of the quantized weights (codes and float32 step sizes, the registry's count) per weight."""
    fmt, opts = spec.format
    bits = n = 0
    for name in names:
        shape = p[name].shape if out_axis == 0 else p[name].shape[::-1]  # the registry's (out, in)
        bits += registry.storage_bits(fmt, shape, **opts)
        n += p[name].size
    return bits / n


def _unpack(qp: dict, ref: dict, spec: WeightQuant, names, aparams0: dict):
    """Step sizes and activation parameters from the optimizer's relative values ``qp``."""
    scales = {n: (qp["w." + n] * ref["w." + n]).astype(ref["w." + n].dtype) for n in names if "w." + n in qp}
    aparams = {layer: {k: (qp[f"a.{layer}.{k}"] * ref[f"a.{layer}.{k}"]).astype(v.dtype) for k, v in prm.items()}
               for layer, prm in aparams0.items()}
    return scales, aparams


def qat_train(p: dict, loss_fn: Callable, batch_fn: Callable, names: Collection[str], recipe: QATRecipe, *,
              act_params: dict | None = None, out_axis: int = 0, seed: int = 0, steps: int | None = None,
              progress: Callable | None = None, weight_ops: tuple = WEIGHT_OPS) -> QATResult:
    """Fine-tune ``p`` with fake-quantized weights (and activations): the loop of the module docstring.

    Parameters
    ----------
    p : dict of float arrays — the float model (not modified)
    loss_fn : callable ``(params, batch, linear, linear_backward) -> (loss, grads)`` — the model's
        loss and gradient of every parameter, differentiated at the operands its hooks return
    batch_fn : callable ``(rng) -> batch`` — a training batch drawn from ``rng``
    names : the 2-D weights to quantize (the linear layers)
    recipe : QATRecipe
    act_params : dict, layer -> initial activation parameters (:func:`refquant.qat.hooks.calibrate_acts`);
        required when the recipe quantizes activations
    out_axis : int — the weights' output-channel axis (0: (out, in) as the GPT; 1: (in, out) as the MLP)
    seed, steps : the batches' seed; steps overrides ``recipe.steps``
    progress : callable ``(step, loss)`` or None, called after every step
    weight_ops : the weight quantizer's functions (:func:`quantized_params`)

    Returns
    -------
    QATResult
    """
    steps = recipe.steps if steps is None else int_value(steps, "steps", 0)
    names = list(names)
    missing = [n for n in names if n not in p]
    if missing:
        raise ValueError(f"names: no parameters {missing} in p")
    spec, act = recipe.weights, recipe.activations
    if act is not None and act_params is None:
        raise ValueError("act_params: the recipe quantizes activations; pass their calibrated parameters")
    aparams0 = dict(act_params or {}) if act is not None else {}
    if act is not None and act.granularity == "tensor" and set(names) - set(aparams0):
        raise ValueError(f"act_params: no activation parameters for the layers {sorted(set(names) - set(aparams0))}")
    p = {k: v.copy() for k, v in p.items()}
    ref = {}  # each quantizer parameter's unit: its layer's initial step size (or α)
    init = {}
    if spec.method == "lsq":
        init.update({"w." + n: weight_ops[0](p[n], spec, out_axis) for n in names})
        ref.update(init)
    for layer, prm in aparams0.items():
        unit = prm["scale"] if "scale" in prm else prm.get("alpha")
        for k, v in prm.items():
            init[f"a.{layer}.{k}"], ref[f"a.{layer}.{k}"] = np.asarray(v), np.asarray(unit)
    qp = {k: np.array(v / ref[k], dtype=v.dtype) for k, v in init.items()}  # what Adam trains: 1, or β / s₀
    rng = np.random.default_rng(seed)
    state, qstate, losses = {}, {}, []
    for step in range(steps):
        scales, aparams = _unpack(qp, ref, spec, names, aparams0)
        batch = batch_fn(rng)
        loss, g, qg = qat_step(p, lambda q, lin, back: loss_fn(q, batch, lin, back), names, spec, act,
                               scales, aparams, out_axis, weight_ops=weight_ops)
        if not math.isfinite(loss):
            raise FloatingPointError(f"QAT diverged at step {step} (loss {loss})")
        f = lr_at(step, steps, 1.0, max(1, steps // 10))  # the schedule's factor
        adamw_step(p, g, state, lr=f * recipe.lr, weight_decay=recipe.weight_decay)
        if qp:
            qg = {k: v * ref[k] for k, v in qg.items()}  # dL/du = s₀ · dL/ds
            adamw_step(qp, qg, qstate, lr=f * recipe.lr_quant, weight_decay=0.0)
            for k in qp:
                if not k.endswith(".offset"):
                    qp[k] = np.asarray(np.maximum(qp[k], qp[k].dtype.type(1e-3)))
        losses.append(loss)
        if progress is not None:
            progress(step, loss)
    scales, aparams = _unpack(qp, ref, spec, names, aparams0)
    final = {n: weight_ops[0](p[n], spec, out_axis) for n in names} if spec.method == "ste" else scales
    return QATResult(p, quantized_params(p, names, spec, final, out_axis, weight_ops=weight_ops), final, aparams,
                     tuple(losses))


def qat_step(p: dict, loss_fn: Callable, names: Collection[str], spec: WeightQuant, act: ActQuant | None,
             scales: dict, aparams: dict, out_axis: int = 0, *, weight_ops: tuple =
             WEIGHT_OPS) -> tuple[float, dict, dict]:
    """One forward and backward pass of the quantized model: ``(loss, grads of p, grads of the
    quantizers)`` — ``"w.<name>"`` step sizes (LSQ) and ``"a.<layer>.<param>"`` activation parameters.

    ``loss_fn(params, linear, linear_backward)`` is the model's loss on one batch. ``scales`` holds
    the LSQ step sizes (ignored for the STE, whose scale is the PTQ scale of ``p``).
    """
    q = quantized_params(p, names, spec, scales, out_axis, weight_ops=weight_ops)
    linear = linear_backward = None
    agrads: dict = {}
    if act is not None:
        linear, linear_backward, agrads = linear_hooks(act, aparams, names)
    loss, g = loss_fn(q, linear, linear_backward)
    g = dict(g)
    qg = {}
    for n in names:
        s = weight_ops[0](p[n], spec, out_axis) if spec.method == "ste" else scales[n]
        g[n], ds = weight_ops[2](g[n], p[n], spec, s, out_axis)
        if ds is not None:
            qg["w." + n] = ds
    for layer, d in agrads.items():
        qg.update({f"a.{layer}.{k}": v for k, v in d.items()})
    return loss, g, qg


# ------------------------------------------------------------------ PTQ vs QAT on the shipped models
TINY_RECIPES = {r.name: r for r in (
    QATRecipe("w2g32", WeightQuant(2, 32)),
    QATRecipe("w2g32-ste", WeightQuant(2, 32, "ste")),
    QATRecipe("w3", WeightQuant(3, 0), steps=100),
    QATRecipe("w3-ste", WeightQuant(3, 0, "ste"), steps=100),
    QATRecipe("w4a4", WeightQuant(4, 0), ActQuant(4, "token")),
    QATRecipe("w4a4-tensor", WeightQuant(4, 0), ActQuant(4, "tensor", "lsq"), steps=100),
)}  # the tiny GPT: every linear layer (the LM head included), as the PTQ recipes
MLP_RECIPES = {r.name: r for r in (
    QATRecipe("w2", WeightQuant(2, 0), steps=300, batch=64, lr=1e-3),
    QATRecipe("w2-ste", WeightQuant(2, 0, "ste"), steps=300, batch=64, lr=1e-3),
)}  # the digits MLP: W1 and W2, per output channel (axis 1 of its (in, out) weights)
RECIPES = {"tiny": TINY_RECIPES, "mlp": MLP_RECIPES}
MODELS = ("tiny", "mlp", "smollm2")


def _tiny_setup(seed):
    p, cfg, _ = load_checkpoint()
    train, val = train_val_split()
    ev = evaluator(val, cfg)
    names = linear_names(cfg)

    def loss_fn(q, b, linear, linear_backward):
        return loss_and_grads(q, b[0], b[1], cfg, linear=linear, linear_backward=linear_backward)

    def evaluate(q, act, aparams):
        return ev(q, linear_hooks(act, aparams, names, record=False)[0] if act is not None else None)

    def calib(act):
        rng = np.random.default_rng(seed + 1)
        ids = [get_batch(train, 16, cfg.context_length, rng)[0] for _ in range(4)]
        return calibrate_acts(act, lambda x, linear: forward(p, x, cfg, linear=linear), ids, names)

    return p, names, 0, loss_fn, lambda r: (lambda rng: get_batch(train, r.batch, cfg.context_length, rng)), \
        evaluate, calib


def _mlp_setup(seed):
    xtr, ytr, xte, yte = digits_data(seed)
    p = train_mlp(init_mlp(MLPConfig(), seed), xtr, ytr, seed=seed)

    def evaluate(q, act, aparams):
        nll, _ = mlp_loss_and_grads(q, xte, yte)
        return {"perplexity": math.exp(nll), "accuracy": accuracy(q, xte, yte)}

    def batches(r):
        def draw(rng):
            i = rng.integers(0, len(xtr), r.batch)
            return xtr[i], ytr[i]
        return draw

    return p, ("W1", "W2"), 1, (lambda q, b, lin, back: mlp_loss_and_grads(q, b[0], b[1])), batches, evaluate, None


def _llama_qat():
    from . import llama_qat  # it imports this module (QATRecipe): resolved at call time
    return llama_qat


def run_qat(model: str, recipe: str, steps: int | None = None, progress: Callable | None = None, *, seed: int = 0,
            n_layer: int | None = None, eval_windows: int = 16, seq_len: int = 128) -> list:
    """Float, PTQ and QAT of one recipe on one model: rows for ``python -m refquant qat``.

    Parameters
    ----------
    model : {"tiny", "mlp", "smollm2"} — the shipped tiny GPT (perplexity on the validation text),
        the digits MLP trained here (its "perplexity" is exp of the test cross-entropy; accuracy too),
        SmolLM2-135M-Instruct (:mod:`refquant.qat.llama_qat`; accuracy = top-1)
    recipe : a key of ``RECIPES[model]`` (smollm2: of ``llama_qat.SMOLLM2_RECIPES``)
    steps : int or None — QAT steps (None: the recipe's)
    progress : callable ``(step, loss)`` or None
    n_layer, eval_windows, seq_len : smollm2 only — the first ``n_layer`` blocks (None: all), evaluation
        windows of 512 tokens, training window length

    Returns
    -------
    list of dict ``{"method", "bits_per_weight", "perplexity", "accuracy", "seconds", "steps"}``:
    ``"float"``, ``"ptq-<recipe>"``, ``"qat-<recipe>"``; seconds are wall-clock (QAT: training and
    evaluation, PTQ already done).
    """
    if model not in MODELS:
        raise ValueError(f"model: unknown {model!r}; expected one of {MODELS}")
    table = RECIPES[model] if model != "smollm2" else _llama_qat().SMOLLM2_RECIPES
    if recipe not in table:
        raise ValueError(f"recipe: unknown {recipe!r} for model {model!r}; expected one of {sorted(table)}")
    r = table[recipe]
    steps = r.steps if steps is None else int_value(steps, "steps", 0)
    if model == "smollm2":
        setup = _llama_qat().smollm2_setup(n_layer, eval_windows, seq_len)
    else:
        setup = (_tiny_setup if model == "tiny" else _mlp_setup)(seed)
    p, names, out_axis, loss_fn, batches, evaluate, calib = setup
    ops = _llama_qat().WEIGHT_OPS if model == "smollm2" else WEIGHT_OPS
    rows = []

    def row(method, bpw, metrics, t0, n):
        rows.append({"method": method, "bits_per_weight": bpw, "perplexity": metrics["perplexity"],
                     "accuracy": metrics["accuracy"], "seconds": time.perf_counter() - t0, "steps": n})

    t0 = time.perf_counter()
    row("float", 32.0, evaluate(p, None, {}), t0, 0)
    bpw = bits_per_weight(p, names, r.weights, out_axis)
    t0 = time.perf_counter()
    aparams = calib(r.activations) if r.activations is not None else {}
    ptq = quantized_params(p, names, r.weights, None, out_axis, weight_ops=ops)
    row("ptq-" + recipe, bpw, evaluate(ptq, r.activations, aparams), t0, 0)
    del ptq
    t0 = time.perf_counter()
    res = qat_train(p, loss_fn, batches(r), names, r, act_params=aparams, out_axis=out_axis, seed=seed, weight_ops=ops,
                    steps=steps, progress=progress)
    row("qat-" + recipe, bpw, evaluate(res.quantized, r.activations, res.act_params), t0, steps)
    return rows
