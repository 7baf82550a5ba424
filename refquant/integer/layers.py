"""Integer-only building blocks of a transformer: an int8 linear layer and an attention head.

Both take int8 tensors with their scales and return int8 tensors with theirs; inside, only the
integer GEMM (:mod:`refquant.integer.gemm`), fixed-point requantization (:mod:`refquant.integer.fixedpoint`)
and integer nonlinearities (:mod:`refquant.integer.nonlinear`) touch the tensors. Floats appear once, when a
layer is built from float weights (scales, multipliers, int32 bias).

Building a linear layer uses the core quantizer, nothing hand-written::

    w_scale_c = qparams_from_range(−max|w_c|, max|w_c|, "int8_narrow", symmetric=True)   = max(max|w_c| / 127, eps)
    W_q       = quantize(w, w_scale, 0, "int8_narrow", axis=0)   = clamp(round_half_even(w / w_scale), −127, 127)
    bias_q    = quantize(b, x_scale · w_scale, 0, "int32_narrow", axis=0, saturate=False)
              = round_half_even(b / (x_scale · w_scale_c))       int32 on ±(2^31 − 1); ValueError if it does not fit

The one guard for all-zero ranges is ``qparams_from_range``'s floor ``scale >= eps`` (float32 machine
epsilon, 2^-23): an all-zero weight row gets ``w_scale = eps`` and codes 0, so its output is its bias
alone — which must then fit in int32 at scale ``x_scale · eps`` (|b| ≲ 2^31 · x_scale · 1.2e-7).
The int32 bias goes through the same core quantizer (its ranges reach 32 bits; the quotient is
computed and clamped in float64, exact for every int32 code), range-checked rather than saturated:
a bias that does not fit is an error, not a silently different layer. The range is the narrow
±(2^31 − 1), the range TFLite's converter clamps its biases to (``tensorflow/lite/tools/optimize/
quantization_utils.cc: SymmetricBiasQuantize``, ``[−INT32_MAX, INT32_MAX]``), so that −bias_q never
overflows either.

Attention head, for int8 q, k, v of shape (T, d) with symmetric scales s_q, s_k, s_v::

    scores = q @ kᵀ                      int32, scale s_q·s_k/√d   (the 1/√d folded into the scale)
    masked = −∞ where j > i (causal)     as a large negative integer: i-exp underflows it to 0
    P      = i-softmax(scores)           uint8 in [0, 255], scale 1/256 (2^8 saturated to 255)
    o      = P @ v                       int32, scale s_v/256
    out    = requantize(o → s_out)       int8, via quantize_multiplier(s_v / 256 / s_out)

References
----------
Jacob et al., CVPR 2018, §2.4 (integer-arithmetic-only matrix multiplication, int32 bias).
Kim et al., "I-BERT", ICML 2021, §3 and fig. 2 (integer-only self-attention).
"""
from __future__ import annotations

from dataclasses import dataclass
import math

import numpy as np

from ..core._checks import float_array, int_array
from ..core._types import ArrayLike
from ..core.ranges import qrange as as_qrange
from ..core.uniform import qparams_from_range, quantize
from .fixedpoint import quantize_multiplier
from .nonlinear import int_softmax
from .gemm import PackedMatrix, fully_connected, int_matmul, prepack, requantize


@dataclass(frozen=True)
class QuantizedLinear:
    """``y_q = requantize(x_q · W_qᵀ + bias_q)``: int8 (or uint8) in, int8 out, per-channel weights."""

    weight: np.ndarray  # int8 (n_out, n_in), symmetric per output channel, range [-127, 127]
    packed: PackedMatrix  # prepack(weight.T): the float32 copy used by the fast GEMM
    weight_scale: np.ndarray  # float32 (n_out,)
    bias: np.ndarray  # int32 (n_out,), at scale x_scale · weight_scale
    multiplier: np.ndarray  # int32 (n_out,): x_scale · weight_scale / y_scale in Q0.31 ...
    shift: np.ndarray  # int32 (n_out,): ... with this power-of-two exponent
    x_scale: float
    x_zero_point: int
    y_scale: float
    y_zero_point: int = 0

    def __call__(self, x_q: np.ndarray) -> np.ndarray:
        """x_q : int8/uint8 (batch, n_in) -> int8 (batch, n_out) at ``y_scale``."""
        return fully_connected(x_q, self.packed, self.bias, x_zero_point=self.x_zero_point, multiplier=self.multiplier,
                               shift=self.shift, out_zero_point=self.y_zero_point, qrange="int8")


def _real(v, name: str, integer: bool = False):
    """A real scalar argument as a Python float (or int): TypeError naming it otherwise."""
    a = np.asarray(v) if not isinstance(v, (str, bytes)) else None
    if a is None or a.ndim != 0 or a.dtype.kind not in ("iu" if integer else "iuf"):
        raise TypeError(f"{name}: expected {'an integer' if integer else 'a real'} scalar, got {v!r}")
    return int(a) if integer else float(a)


def _scale(v, name: str) -> float:
    s = _real(v, name)
    if not (s > 0 and math.isfinite(s)):
        raise ValueError(f"{name} must be finite and > 0, got {v!r}")
    return s


def _multiplier(num, den, what: str):
    """``quantize_multiplier(num / den)``, its errors naming the arguments ``what`` the ratio comes from."""
    with np.errstate(over="ignore", under="ignore"):  # inf is refused by quantize_multiplier, 0 is exact
        r = np.asarray(num, np.float64) / den
    try:
        return quantize_multiplier(r)
    except ValueError as e:
        raise ValueError(f"{what} is out of the fixed-point multiplier's range: {e}") from None


def quantize_linear_layer(w: ArrayLike, b: ArrayLike | None, x_scale: float, x_zero_point: int, y_scale: float,
                          y_zero_point: int = 0) -> QuantizedLinear:
    """Build a :class:`QuantizedLinear` from float weights ``w`` (n_out, n_in) and bias ``b`` (n_out,)
    or ``None`` (no bias: an int32 bias of zeros).

    Weights: symmetric per-channel int8 on [−127, 127] (TFLite's convention), scale
    ``max(max|w_c| / 127, eps)`` (computed in float64, stored in float32; the module docstring's guard);
    bias: ``round_half_even(b / (x_scale · w_scale))`` in int32; multiplier: ``x_scale · w_scale / y_scale``.
    """
    wa = float_array(w, "w").astype(np.float64)
    if wa.ndim != 2 or wa.shape[1] == 0:
        raise ValueError(f"w must be 2-D (n_out, n_in) with n_in >= 1, got shape {wa.shape}")
    if not np.all(np.isfinite(wa)):
        raise ValueError("w must be finite (got ±Inf)")
    ba = np.zeros(wa.shape[0]) if b is None else float_array(b, "b").astype(np.float64)
    if ba.shape != (wa.shape[0],):
        raise ValueError(f"b must have shape ({wa.shape[0]},), got {ba.shape}")
    x_scale, y_scale = _scale(x_scale, "x_scale"), _scale(y_scale, "y_scale")
    x_zero_point, y_zero_point = _real(x_zero_point, "x_zero_point", True), _real(y_zero_point, "y_zero_point", True)
    amax = np.abs(wa).max(axis=1)  # (n_out,)
    w_scale = qparams_from_range(-amax, amax, "int8_narrow", symmetric=True, dtype=np.float64)[0]
    if np.any(w_scale > np.finfo(np.float32).max):
        raise ValueError("w: max|w| / 127 overflows the float32 weight scale")
    w_scale = w_scale.astype(np.float32)
    wq = quantize(wa, w_scale, 0, "int8_narrow", axis=0)  # (n_out, n_in) int8, x / s in float64
    acc_scale = x_scale * w_scale.astype(np.float64)  # (n_out,), float64: the bias's scale, zero point 0
    try:  # b / acc_scale in float64 (both are), rounded half to even, range-checked, never clamped
        bias = quantize(ba, acc_scale, 0, "int32_narrow", axis=0, saturate=False)
    except ValueError:  # a code beyond ±(2^31 − 1), or acc_scale underflowed to 0
        raise ValueError("b: the bias does not fit in int32 at scale x_scale · w_scale") from None
    m, s = _multiplier(acc_scale, y_scale, "x_scale · w_scale / y_scale (w_scale = max|w| / 127 per row of w)")
    return QuantizedLinear(wq, prepack(wq.T), w_scale, bias, m, s, x_scale, x_zero_point,
                           y_scale, y_zero_point)


def int_attention(q: ArrayLike, k: ArrayLike, v: ArrayLike, q_scale: float, k_scale: float, v_scale: float,
                  out_scale: float, *, causal: bool = True) -> np.ndarray:
    """Integer-only attention (module docstring). q, k, v: int8 (..., T, d) — leading dimensions (batch,
    heads) are independent heads. Returns int8 (..., T, d)."""
    qa, ka, va = (int_array(t, n) for t, n in ((q, "q"), (k, "k"), (v, "v")))
    for name, t in (("q", qa), ("k", ka), ("v", va)):
        if t.dtype != np.int8 or t.ndim < 2:
            raise ValueError(f"{name}: expected an int8 (..., T, d) array, got {t.dtype} of shape {t.shape}")
    if not (qa.shape[-1] == ka.shape[-1] and ka.shape == va.shape and qa.shape[:-2] == ka.shape[:-2]):
        raise ValueError(f"q, k, v: shapes {qa.shape}, {ka.shape}, {va.shape} do not agree")
    q_scale, k_scale, v_scale, out_scale = (_scale(x, n) for x, n in ((q_scale, "q_scale"), (k_scale, "k_scale"),
                                                                       (v_scale, "v_scale"), (out_scale, "out_scale")))
    d = qa.shape[-1]
    scores = int_matmul(qa, np.ascontiguousarray(np.swapaxes(ka, -1, -2))).astype(np.int64)  # (..., Tq, Tk)
    s_scores = q_scale * k_scale / math.sqrt(d)
    if causal:
        tq, tk = scores.shape[-2:]
        mask = np.arange(tk)[None, :] > np.arange(tq)[:, None] + (tk - tq)
        scores[..., mask] = -(2**40)  # far below the 2^-30 underflow of i-exp: probability 0
    try:
        p, s_p = int_softmax(scores, s_scores, out_bits=8)
    except (ValueError, OverflowError) as e:
        raise ValueError(f"q_scale · k_scale / √d = {s_scores!r} is out of i-softmax's range: {e}") from None
    p = np.minimum(p, 255).astype(np.uint8)  # 2^8 (a certain token) saturates to 255/256
    o = int_matmul(p, va)  # (Tq, d) int32, scale s_p · v_scale
    m, s = _multiplier(s_p * v_scale, out_scale, "v_scale / 256 / out_scale")
    return requantize(o, m, s, 0, as_qrange("int8"))  # (..., Tq, d)
