"""The quantizers of quantization-aware training (QAT), as pure forward / backward pairs, and the
``linear=`` / ``linear_backward=`` hooks that put activation quantizers into the tiny GPT.

**Weights** (:class:`WeightQuant`): symmetric ``int<b>`` codes ``[−2^(b−1), 2^(b−1) − 1]``, zero
point 0, one step size per output channel or per group of ``group_size`` inputs — the registry's
``int<b>`` format, so a trained model is stored (and counted) exactly as a PTQ one::

    ŵ = s · clamp(round(w / s), qmin, qmax)                          round: half to even

``method="ste"``: ``s`` is the PTQ scale of the current weights, ``max|w_group| / qmax``
(min-max, recomputed every step as an observer would), and the gradient reaches ``w`` through the
straight-through estimator (:func:`refquant.qat.ste.ste_grad`, window "range"; with a min-max
scale nothing is clamped, so the window is all ones and ``dw = dL/dŵ``). ``method="lsq"``: ``s``
is a trained parameter initialised from the PTQ scale; ``dw`` and ``ds`` are
:func:`refquant.qat.lsq.lsq_grad`'s (``dw`` is 0 where ``w/s`` reaches qmin or qmax), with LSQ's
gradient scale ``1 / sqrt(N · qmax)``, N the number of weights that share the step size.

**Activations** (:class:`ActQuant`), the input ``x`` (..., K) of a linear layer:

* ``granularity="token"``: symmetric, one scale per token chosen at run time (max|x_t| / qmax,
  :func:`refquant.core.dynamic.fake_quantize_per_token`); nothing is clamped, so the STE passes
  ``dL/dx̂`` to ``x`` unchanged (the scale's own dependence on x is not differentiated, as in
  every per-token QAT recipe).
* ``granularity="tensor", method="lsq"``: LSQ+ (scale ``s`` and offset ``β``, codes ``uint<b>``
  [0, 2^b − 1]), one per layer, initialised from min-max calibration on float activations
  (``β = −s·z``, the calibrated zero point), trained by :func:`refquant.qat.lsq.lsq_grad` with
  ``1 / sqrt(K · qmax)``.
* ``granularity="tensor", method="pact"``: PACT's clip to ``[0, α]`` and unsigned codes,
  ``α`` initialised to the calibration maximum and trained by :func:`refquant.qat.pact.pact_grad`;
  for inputs that are ≥ 0 (ReLU outputs) — a signed input loses its negative part.

Everything computes in the parameters' dtype (float32 for the shipped models).

References
----------
Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", CVPR 2018, section 3 (simulated quantization, min-max weight ranges).
Esser et al., "Learned Step Size Quantization", ICLR 2020, sections 2.1-2.2. Bhalgat et al., "LSQ+",
CVPR Workshops 2020, section 3. Choi et al., "PACT", arXiv:1805.06085, 2018, section 2.
"""
from __future__ import annotations

from dataclasses import dataclass

from collections.abc import Callable, Collection, Iterable

import numpy as np

from ..core._checks import choice, int_value
from ..core.dynamic import fake_quantize_per_token
from ..core.observers import calibrate
from ..core.uniform import fake_quantize
from .lsq import lsq_fake_quantize, lsq_grad, lsq_grad_scale
from .pact import pact_fake_quantize, pact_grad
from .ste import ste_grad

WEIGHT_METHODS = ("ste", "lsq")
GRANULARITIES = ("token", "tensor")
ACT_METHODS = ("lsq", "pact")


@dataclass(frozen=True)
class WeightQuant:
    """How every quantized weight is fake-quantized in training (module docstring)."""

    bits: int  # codes int<bits>, symmetric (zero point 0): the registry's "int<bits>"
    group_size: int = 0  # 0: one step size per output channel; g > 0: per g consecutive inputs
    method: str = "lsq"  # "ste": the PTQ (min-max) scale of the current weights; "lsq": a learned scale

    def __post_init__(self):
        int_value(self.bits, "bits", 2, 8)
        int_value(self.group_size, "group_size", 0)
        choice(self.method, "method", WEIGHT_METHODS)

    @property
    def qrange(self) -> str:
        return f"int{self.bits}"

    @property
    def format(self) -> tuple:
        """``(registry format, options)`` that store these weights."""
        return self.qrange, {"group_size": self.group_size}


@dataclass(frozen=True)
class ActQuant:
    """How the input of every quantized linear layer is fake-quantized (module docstring)."""

    bits: int  # code width
    granularity: str = "token"  # "token": dynamic per token; "tensor": one trained range per layer
    method: str = "lsq"  # per tensor: "lsq" (LSQ+ scale and offset) or "pact" (clip level α)

    def __post_init__(self):
        int_value(self.bits, "bits", 2, 8)
        choice(self.granularity, "granularity", GRANULARITIES)
        choice(self.method, "method", ACT_METHODS)


# ------------------------------------------------------------------------------------------ weights
def weight_axes(spec: WeightQuant, out_axis: int = 0) -> tuple:
    """``(axis, block_size)`` of the step sizes for a 2-D weight whose output channels run along
    ``out_axis`` (0 for the GPT's (out, in), 1 for the MLP's (in, out))."""
    if out_axis not in (0, 1):
        raise ValueError(f"out_axis: expected 0 or 1 for a 2-D weight, got {out_axis!r}")
    return (out_axis, 0) if spec.group_size == 0 else (1 - out_axis, spec.group_size)


def ptq_scale(w: np.ndarray, spec: WeightQuant, out_axis: int = 0) -> np.ndarray:
    """The PTQ step sizes: min-max, symmetric, ``max|w_group| / qmax`` (float32, the parameter shape) —
    what ``registry.quantize(w, "int<b>", group_size=g)`` stores (``tests/test_qat_train.py``)."""
    axis, block = weight_axes(spec, out_axis)
    s, _ = calibrate(w, spec.qrange, "minmax", symmetric=True, axis=axis, block_size=block)
    return s


def weight_forward(w: np.ndarray, spec: WeightQuant, scale: np.ndarray, out_axis: int = 0) -> np.ndarray:
    """ŵ = s · clamp(round(w / s), qmin, qmax), in ``w``'s dtype."""
    axis, block = weight_axes(spec, out_axis)
    s = np.asarray(scale, w.dtype)
    if spec.method == "ste":
        return fake_quantize(w, s, 0, spec.qrange, axis=axis, block_size=block)
    return lsq_fake_quantize(w, s, spec.qrange, axis=axis, block_size=block)


def weight_backward(dw_hat: np.ndarray, w: np.ndarray, spec: WeightQuant, scale: np.ndarray, out_axis: int =
                    0) -> tuple[np.ndarray, np.ndarray | None]:
    """``(dw, dscale)`` from ``dL/dŵ``: the STE (``dscale`` None: the scale is not trained) or LSQ."""
    axis, block = weight_axes(spec, out_axis)
    s = np.asarray(scale, w.dtype)
    if spec.method == "ste":
        return ste_grad(dw_hat, w, s, 0, spec.qrange, axis=axis, block_size=block, window="range"), None
    n = w.shape[1 - axis] if block == 0 else min(block, w.shape[axis])  # weights per step size
    g = lsq_grad_scale(n, 2 ** (spec.bits - 1) - 1)
    dw, ds, _ = lsq_grad(dw_hat, w, s, spec.qrange, axis=axis, block_size=block, grad_scale=g)
    return dw, ds


# -------------------------------------------------------------------------------------- activations
def _uint(spec: ActQuant) -> str:
    return f"uint{spec.bits}"


def act_init(spec: ActQuant, xs: np.ndarray) -> dict:
    """A layer's activation-quantizer parameters from calibration inputs ``xs`` (..., K), float:
    ``{}`` per token, ``{"scale", "offset"}`` (LSQ+) or ``{"alpha"}`` (PACT), 0-d arrays of xs' dtype."""
    xs = np.asarray(xs)
    if spec.granularity == "token":
        return {}
    if spec.method == "lsq":
        s, z = calibrate(xs, _uint(spec), "minmax")
        s = np.asarray(s, xs.dtype)
        return {"scale": s, "offset": (-s * np.asarray(z, xs.dtype)).astype(xs.dtype)}
    hi = float(np.max(xs))
    if not hi > 0:
        raise ValueError("xs: PACT needs a positive calibration maximum (its inputs are clipped to [0, alpha])")
    return {"alpha": np.asarray(hi, xs.dtype)}


def act_forward(spec: ActQuant, prm: dict, x: np.ndarray) -> np.ndarray:
    """x̂ for one linear input ``x`` (..., K) with the layer's parameters ``prm`` (:func:`act_init`)."""
    if spec.granularity == "token":
        return fake_quantize_per_token(x, f"int{spec.bits}").astype(x.dtype, copy=False)
    if spec.method == "lsq":
        return lsq_fake_quantize(x, prm["scale"], _uint(spec), offset=prm["offset"])
    return pact_fake_quantize(x, prm["alpha"], spec.bits)


def act_backward(spec: ActQuant, prm: dict, x: np.ndarray, dx_hat: np.ndarray) -> tuple[np.ndarray, dict]:
    """``(dx, grads)`` from ``dL/dx̂``: grads of the layer's parameters, keyed as in ``prm``."""
    if spec.granularity == "token":
        return dx_hat, {}
    if spec.method == "lsq":
        g = lsq_grad_scale(x.shape[-1], 2 ** spec.bits - 1)
        dx, ds, db = lsq_grad(dx_hat, x, prm["scale"], _uint(spec), offset=prm["offset"], grad_scale=g)
        return dx, {"scale": ds, "offset": db}
    dx, da = pact_grad(dx_hat, x, prm["alpha"], spec.bits)
    return dx, {"alpha": da}


def linear_hooks(spec: ActQuant, aparams: dict, targets: Collection[str], record: bool =
                 True) -> tuple[Callable, Callable, dict]:
    """``(linear, linear_backward, grads)`` for :func:`refquant.models.gpt.loss_and_grads`.

    ``linear`` fake-quantizes the input of every layer in ``targets`` (the others run in float) and
    returns ``(y, x̂, w)`` so the weight gradient is ``dyᵀ x̂``; ``linear_backward`` turns ``dL/dx̂``
    into ``dL/dx`` and fills ``grads[name]`` with the layer's quantizer-parameter gradients. One
    forward and one backward per pair of hooks (``record=False``: forward only, nothing kept).
    """
    targets = set(targets)
    seen: dict = {}
    grads: dict = {}

    def linear(name, x, w, b):
        if name not in targets:
            y = x @ w.T
            return y if b is None else y + b
        xh = act_forward(spec, aparams.get(name, {}), x)
        if record:
            seen[name] = x
        y = xh @ w.T
        return (y if b is None else y + b), xh, w

    def linear_backward(name, dx_hat):
        if name not in targets:
            return dx_hat
        dx, grads[name] = act_backward(spec, aparams.get(name, {}), seen.pop(name), dx_hat)
        return dx

    return linear, linear_backward, grads


def calibrate_acts(spec: ActQuant, forward: Callable, batches: Iterable[np.ndarray], targets: Collection[str]) -> dict:
    """Initial activation parameters per target layer, from float forward passes ``forward(ids,
    linear=hook)`` over ``batches`` (the PTQ calibration: min-max over every token seen)."""
    seen: dict = {}

    def record(name, x, w, b):
        if name in targets:
            seen.setdefault(name, []).append(x.reshape(-1, x.shape[-1]))
        y = x @ w.T
        return y if b is None else y + b

    if spec.granularity == "token":
        return {name: {} for name in targets}
    for ids in batches:
        forward(ids, linear=record)
    missing = set(targets) - set(seen)
    if missing:
        raise ValueError(f"batches: no calibration input reached the layers {sorted(missing)}")
    return {name: act_init(spec, np.concatenate(xs)) for name, xs in seen.items()}
