"""SmoothQuant: migrate the quantization difficulty of activation outlier channels into the weights
with a per-channel scale folded into the norm before the linears, then quantize to W8A8.

For linears ``y = x Wᵀ`` sharing the input x (K channels), after calibration::

    a_j = max |x_j| over every calibration token                (get_act_scales)              (1)
    w_j = max(max over the linears and their rows of |W_rj|, 1e-5)                            (2)
    s_j = max(a_j^α / w_j^(1−α), 1e-5)                                                        (3)
    norm gain (and LayerNorm bias) ← / s;   W ← W · diag(s)                                   (4)

(4) leaves the float model unchanged (:func:`refquant.models.lm.fold_scale`); afterwards the input
channel j of the linears spans a_j / s_j = a_j^(1−α) w_j^(1−α) and the weight column w_j s_j =
a_j^α w_j^α: α = 0.5 gives both the same range √(a_j w_j). (2)–(3) are computed in the weights'
dtype, as the reference computes them in the linears' dtype.

Which inputs are smoothed: the reference folds only into norms — q/k/v and fc1 (OPT, BLOOM:
``smooth_ln_fcs``), q/k/v and gate/up (LLaMA, Mistral: ``smooth_ln_fcs_llama_like``, RMSNorm has no
bias) — here c_attn and c_fc in the tiny GPT. The attention output projection and the MLP's down
projection keep their outliers (for LLaMA the largest: the SwiGLU product). ``linear_folds=True``
also smooths the folds into preceding linears (LLaMA v → o without GQA, up → down; the tiny GPT's
V rows of c_attn → attn.c_proj) — not in the reference. The output head is never smoothed (the
reference keeps it in float16; the recipes here quantize it like every linear).

W8A8 (the reference's ``fake_quant.py: W8A8Linear``): per-output-channel symmetric int8 weights
(absmax / 127, round half to even) through the format registry's ``int8``, and per-tensor static
(calibrated) or per-token dynamic int8 activations through the recipes' ``linear_hook``. The
recipes' static activations are *affine* min-max (``Recipe.act_calibration``), not the reference's
symmetric max|x| / 127 (``get_static_decoder_layer_scales``); its ``"per_tensor"`` fake-quant mode is
dynamic per tensor. Attention's q·kᵀ and p·v products are not quantized (``quantize_bmm_input=False``).

References
----------
Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language
Models", ICML 2023, §4 (eq. 4: s_j = max|X_j|^α / max|W_j|^(1−α)) and §5 (W8A8, O1–O3).
Mirrored: mit-han-lab/smoothquant ``smoothquant/smooth.py: smooth_ln_fcs, smooth_ln_fcs_llama_like,
smooth_lm``, ``calibration.py: get_act_scales``, ``fake_quant.py: W8A8Linear``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ..core._checks import float_array
from ..core._types import ArrayLike
from ..models.gpt import affine
from ..models.lm import LM, fold_scale, weight
from .recipes import Recipe, calibrate_activations, linear_hook, quantize_weight

ACTIVATIONS = ("static", "dynamic")


def smooth_scales(act_max: ArrayLike, w_list: Sequence[np.ndarray], alpha: float = 0.5) -> np.ndarray:
    """Eq. (2)–(3): the smoothing scale s (K,) in the weights' dtype for the linears ``w_list`` ((rows_i, K)
    each) reading an input whose per-channel max |x| is ``act_max`` (K,)."""
    if not isinstance(alpha, (int, float, np.floating)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    w_list = [float_array(w, f"w_list[{i}]") for i, w in enumerate(w_list)]
    a = float_array(act_max, "act_max")
    if not w_list or a.ndim != 1 or any(w.ndim != 2 or w.shape[1] != a.size for w in w_list):
        raise ValueError(f"w_list: expected (rows, {a.size}) weights for act_max of shape {a.shape}, got "
                         f"{[w.shape for w in w_list]}")
    if np.any(a < 0) or not np.all(np.isfinite(a)):
        raise ValueError("act_max must be finite and >= 0 (a maximum of |x|)")
    dt = w_list[0].dtype
    ws = np.maximum(np.max([np.abs(w).max(0) for w in w_list], axis=0), dt.type(1e-5))  # (2)
    a = a.astype(dt)
    return np.maximum(a ** dt.type(alpha) / ws ** dt.type(1 - alpha), dt.type(1e-5))  # (3)


def smooth_scales_ref(act_max: ArrayLike, w_list: Sequence[np.ndarray], alpha: float = 0.5) -> np.ndarray:
    """Loop twin of :func:`smooth_scales`: one channel, linear and row at a time (scalars of the weights' dtype)."""
    t = np.asarray(w_list[0]).dtype.type
    out = np.empty(len(act_max), np.asarray(w_list[0]).dtype)
    for j in range(len(act_max)):
        m = t(0)
        for w in w_list:
            for r in range(w.shape[0]):
                m = max(m, abs(t(w[r, j])))
        m = max(m, t(1e-5))
        out[j] = max(t(act_max[j]) ** t(alpha) / m ** t(1 - alpha), t(1e-5))
    return out


def act_scales(lm: LM, params: dict, batches: Iterable[np.ndarray]) -> dict:
    """Eq. (1) for every linear: ``{name: max |x_j| (K,) float64}`` over every calibration token, a
    running maximum as ``get_act_scales`` keeps it (the ``abs_max`` of
    :func:`refquant.ptq.hessian.collect_statistics`, without its K×K Hessians)."""
    out: dict = {}

    def hook(name, x, w, b):
        m = np.abs(x.reshape(-1, x.shape[-1])).max(0).astype(np.float64)
        out[name] = m if name not in out else np.maximum(out[name], m)
        return affine(x, w, b)

    n = 0
    for batch in batches:
        lm.forward(params, batch, linear=hook)
        n += 1
    if not n:
        raise ValueError("batches: no calibration batch was given")
    return out


def smooth_lm(lm: LM, params: dict, scales: dict, alpha: float = 0.5, *, linear_folds: bool =
              False) -> tuple[dict, dict]:
    """Eq. (2)–(4) for the model: ``(params', {fold linears: s})``. ``scales``: :func:`act_scales` of the
    float model. Every norm fold of ``lm.scale_folds`` but the head's (and, with ``linear_folds``,
    the folds into preceding linears) is applied; ``params`` is not modified."""
    head = lm.sequential_groups[-1][-1]
    q, chosen = dict(params), {}
    for fold in lm.scale_folds:
        into_norm = all(np.ndim(params[name]) == 1 for name, _, _ in fold.prev)
        if head in fold.linears or not (into_norm or linear_folds):
            continue
        if fold.linears[0] not in scales:
            raise ValueError(f"scales: no activation maxima for {fold.linears[0]!r}")
        s = smooth_scales(scales[fold.linears[0]], [weight(lm, q, n) for n in fold.linears], alpha)
        chosen[fold.linears] = s
        q = fold_scale(lm, q, fold, s)
    return q, chosen


def w8a8(lm: LM, params: dict, calib_batches: Iterable[np.ndarray] = (), *, activation: str = "static",
         act_calibration: str = "minmax") -> tuple[dict, Callable]:
    """W8A8 of every linear: ``(params', hook)`` — int8 per-channel weights (fake-quantized in ``params'``)
    and the ``linear=`` hook that quantizes the activations (static: ranges calibrated on the float
    model over ``calib_batches``, as ``recipes.run_recipe`` does; dynamic: per token at run time)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    r = Recipe(f"w8a8-{activation}", "int8", activation=activation, act_calibration=act_calibration)
    q = dict(params)
    for name in lm.linear_names:
        q[name] = quantize_weight(weight(lm, params, name), r)[0]
    acts = None
    if activation == "static":
        batches = list(calib_batches)
        if not batches:
            raise ValueError("calib_batches: static activations need calibration batches")
        acts = calibrate_activations(lm, params, batches, r)
    return q, linear_hook(r, acts)


def smoothquant_w8a8(lm: LM, params: dict, calib_batches: Iterable[np.ndarray], *, alpha: float = 0.5,
                     activation: str = "static", act_calibration: str = "minmax", linear_folds: bool =
                     False) -> tuple[dict, Callable, dict]:
    """SmoothQuant then W8A8: ``(params', hook, {fold linears: s})``. The activation maxima (1) and the
    static ranges are both measured on ``calib_batches`` (before and after smoothing)."""
    batches = list(calib_batches)
    if not batches:
        raise ValueError("calib_batches: SmoothQuant needs calibration batches for max |x|")
    smoothed, chosen = smooth_lm(lm, params, act_scales(lm, params, batches), alpha, linear_folds=linear_folds)
    q, hook = w8a8(lm, smoothed, batches, activation=activation, act_calibration=act_calibration)
    return q, hook, chosen
