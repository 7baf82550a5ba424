"""PACT — parameterized clipping activation: a ReLU whose clipping level α is trained, followed by
unsigned b-bit quantization of [0, α].

Forward (Choi et al., eq. 1-2)::

    y   = clip(x, 0, α)                       = 0.5 · (|x| − |x − α| + α)
    s   = α / (2^b − 1)                       the step size
    y_q = round(y / s) · s                    round: half to even; codes 0 .. 2^b − 1

Backward, ``round`` passed straight through (eq. 3)::

    dx = dy · [0 ≤ x < α]
    dα = Σ dy · [x ≥ α]                       alpha_grad="paper"

The paper's ∂y_q/∂α ignores that the step size s = α/(2^b − 1) moves with α: it is the derivative of
the clip alone. Writing the same forward with a straight-through ``round`` in an autograd framework
gives instead LSQ's step-size gradient divided by 2^b − 1 (:mod:`.lsq` with s = α/(2^b − 1))::

    dα = Σ dy · ([x ≥ α] + [0 ≤ x < α] · (round(y/s) − y/s) / (2^b − 1))      alpha_grad="lsq"

Conventions at the kinks (named, since ``clip`` has no derivative there): x = α sends its gradient
to α, not to x (as the paper's [α, +∞)); x = 0 passes it to x (as ``torch.clamp``'s backward). Every
x > 0 thus feeds exactly one of dx and dα. For x > α the forward is y_q = α exactly, so dα = dy is the
true derivative (checked by finite differences in ``tests/test_qat_grads.py``); PACT's L2 penalty
on α (λ·α²) belongs to the loss, not here.

References
----------
Choi et al., "PACT: Parameterized Clipping Activation for Quantized Neural Networks",
arXiv:1805.06085, 2018, section 2 (eq. 1-3).
"""
from __future__ import annotations

import numpy as np

from ..core._checks import choice, int_value
from ..core.rounding import round_scalar_ref
from ..core._types import ArrayLike
from ._common import dy_array, real_scalar, working_dtype, x_array

ALPHA_GRADS = ("paper", "lsq")


def _prepare(x, alpha, bits):
    b = int_value(bits, "bits", 1, 16)
    xa = x_array(x)
    wd = working_dtype(xa, alpha)
    aw = real_scalar(alpha, "alpha", wd, 0.0, lo_open=True)
    levels = wd.type(2 ** b - 1)
    s = aw / levels
    if not s > 0:
        raise ValueError(f"alpha: the step alpha / (2**bits - 1) underflows to 0 in {wd.name}, got alpha={alpha!r}")
    return xa.astype(wd), aw, s, levels, wd


def pact_fake_quantize(x: ArrayLike, alpha: float, bits: int) -> np.ndarray:
    """PACT forward: ``round(clip(x, 0, α) / s) · s`` with ``s = α / (2^bits − 1)``.

    Parameters
    ----------
    x : ndarray of float, any shape (no NaN; ±Inf clip to α and 0)
    alpha : float > 0 — the clipping level α (one per layer, as in the paper)
    bits : int in [1, 16]

    Returns
    -------
    y_q : ndarray of the working dtype (``x``'s for a Python-float alpha), shape of ``x``
    """
    xa, aw, s, _, wd = _prepare(x, alpha, bits)
    q = np.rint(np.clip(xa, 0, aw) / s) + wd.type(0)  # + 0: the code of -0.0 is 0, not -0
    return (q * s).astype(wd)


def pact_grad(dy: ArrayLike, x: ArrayLike, alpha: float, bits: int, *, alpha_grad: str =
              "paper") -> tuple[np.ndarray, np.ndarray]:
    """PACT backward: ``(dx, dalpha)`` (module docstring).

    Parameters
    ----------
    dy : ndarray of float, shape of ``x``, finite
    x, alpha, bits : as in :func:`pact_fake_quantize`
    alpha_grad : {"paper", "lsq"} — the paper's clip-only gradient, or the one that also differentiates
        the step size α / (2^bits − 1)

    Returns
    -------
    dx : ndarray, shape of ``x``
    dalpha : 0-d ndarray of the working dtype (summed in float64, C order, rounded once)
    """
    choice(alpha_grad, "alpha_grad", ALPHA_GRADS)
    xa, aw, s, levels, wd = _prepare(x, alpha, bits)
    d = dy_array(dy, xa, wd)
    upper = xa >= aw
    inside = (xa >= 0) & ~upper
    dx = d * inside.astype(wd)
    t = d * upper.astype(wd)
    if alpha_grad == "lsq":
        u = (np.clip(xa, 0, aw) / s).astype(wd)
        t = t + d * np.where(inside, (np.rint(u) - u) / levels, wd.type(0)).astype(wd)
    dalpha = np.cumsum(t.reshape(-1), dtype=np.float64)[-1] + 0.0 if t.size else 0.0  # from +0, as the twin
    return dx, np.asarray(dalpha, dtype=np.float64).astype(wd)


def pact_grad_ref(dy: ArrayLike, x: ArrayLike, alpha: float, bits: int, *, alpha_grad: str =
                  "paper") -> tuple[np.ndarray, np.ndarray]:
    """Loop twin of :func:`pact_grad`, one element at a time."""
    choice(alpha_grad, "alpha_grad", ALPHA_GRADS)
    xa, aw, s, levels, wd = _prepare(x, alpha, bits)
    d = dy_array(dy, xa, wd)
    dx = np.empty(xa.shape, wd)
    acc = 0.0
    for idx in np.ndindex(xa.shape):
        xi, di = xa[idx], d[idx]
        if xi >= aw:
            w, term = 0, di
        elif xi >= 0:
            w, term = 1, wd.type(0)
            if alpha_grad == "lsq":
                u = wd.type(xi / s)
                term = di * ((wd.type(round_scalar_ref(float(u), "half_even")) - u) / levels)
        else:
            w, term = 0, wd.type(0)
        dx[idx] = di * wd.type(w)
        acc += float(term)
    return dx, np.asarray(acc).astype(wd)


def pact_fake_quantize_ref(x: ArrayLike, alpha: float, bits: int) -> np.ndarray:
    """Loop twin of :func:`pact_fake_quantize`."""
    xa, aw, s, _, wd = _prepare(x, alpha, bits)
    out = np.empty(xa.shape, wd)
    for idx in np.ndindex(xa.shape):
        y = min(max(xa[idx], wd.type(0)), aw)
        out[idx] = wd.type(round_scalar_ref(float(wd.type(y / s)), "half_even")) * s
    return out
