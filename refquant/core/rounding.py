"""Rounding rules, by name. Every quantizer takes one of these names as ``rounding=``.

==============  ===============================  ===========================================
name            rule                             who uses it
==============  ===============================  ===========================================
``half_even``   nearest, ties to even            ONNX (``np.rint``), PyTorch (``nearbyint``),
                                                 IEEE 754 default — refquant's default
``half_away``   nearest, ties away from zero     C ``roundf`` / ``std::round``: TFLite
                                                 ``TfLiteRound``, ggml, gemmlowp RoundingDivideByPOT
``half_up``     nearest, ties toward +infinity   ``floor(v + 0.5)`` done right; gemmlowp
                                                 SaturatingRoundingDoublingHighMul
``floor``       toward -infinity                 truncating shifts
``stochastic``  up with probability v - floor(v) Gupta et al. 2015 (needs ``rng``)
==============  ===============================  ===========================================

All deterministic rules are exact: they never compute ``v + 0.5`` (which rounds the sum first —
``0.49999997 + 0.5 == 1.0`` in float32 — and so rounds 0.49999997 up). They use
``v - floor(v)``, which is exact for the cases that matter (see ``_round_half_up``).

References
----------
IEEE 754-2019, section 4.3 (rounding-direction attributes).
Gupta et al., "Deep Learning with Limited Numerical Precision", ICML 2015, section 3 (stochastic rounding).
"""
from __future__ import annotations

from fractions import Fraction
import math

import numpy as np

from ._checks import float_array, real_value

ROUNDING_MODES = ("half_even", "half_away", "half_up", "floor", "stochastic")


def _round_half_away(v, out):
    t = np.trunc(v)
    frac = np.abs(v - t)  # exact: v and trunc(v) share the binade or trunc(v) == 0
    np.add(t, np.where(frac >= 0.5, np.sign(v), 0).astype(v.dtype, copy=False), out=out)
    return out


def _round_half_up(v, out):
    f = np.floor(v)
    # v - floor(v) is exact when |v| >= 1 (same exponent range) and when -1 < v < 0 it is
    # 1 - |v|, exact for |v| >= 0.5 (Sterbenz); for |v| < 0.5 any rounding stays below 0.5.
    np.add(f, (v - f >= 0.5).astype(v.dtype), out=out)
    return out


def round_array(v: np.ndarray, mode: str = "half_even", rng: np.random.Generator | None = None,
                out: np.ndarray | None = None) -> np.ndarray:
    """Round a float array to integer-valued floats with the named rule.

    Parameters
    ----------
    v : ndarray of float, any shape
    mode : {"half_even", "half_away", "half_up", "floor", "stochastic"}
    rng : numpy.random.Generator, required for ``"stochastic"``
        Draws ``rng.random(v.shape)`` (C order); ``v`` rounds up where the draw is < v - floor(v).
    out : ndarray, optional
        Destination of the same shape and dtype as ``v`` (may be ``v`` itself).

    Returns
    -------
    ndarray of the same shape and dtype as ``v``. ±Inf stays ±Inf.
    """
    if not isinstance(mode, str) or mode not in ROUNDING_MODES:
        raise ValueError(f"mode: unknown rounding mode {mode!r}; expected one of {ROUNDING_MODES}")
    v = float_array(v, "v", check_nan=False)  # NaN rounds to NaN: a primitive, not a quantizer
    if out is None:
        out = np.empty_like(v)
    elif not isinstance(out, np.ndarray) or out.shape != v.shape or out.dtype != v.dtype or not out.flags.writeable:
        raise ValueError(f"out: expected a writeable array of shape {v.shape} and dtype {v.dtype}")
    if mode == "half_even":
        return np.rint(v, out=out)
    if mode in ("half_away", "half_up"):
        with np.errstate(invalid="ignore"):  # inf - inf where v is infinite: compares False
            return (_round_half_away if mode == "half_away" else _round_half_up)(v, out)
    if mode == "floor":
        return np.floor(v, out=out)
    if mode == "stochastic":
        if not isinstance(rng, np.random.Generator):
            raise ValueError("rng: stochastic rounding needs an explicit numpy.random.Generator")
        f = np.floor(v)
        with np.errstate(invalid="ignore"):  # inf - inf where v is infinite; masked below
            up = rng.random(v.shape) < (v - f)
        return np.add(f, up.astype(v.dtype), out=out)
    raise ValueError(f"rounding: unknown mode {mode!r}; expected one of {ROUNDING_MODES}")


def round_scalar_ref(v: float, mode: str = "half_even", draw: float | None = None) -> int | float:
    """Slow, exact twin of :func:`round_array` for one finite or infinite value.

    Works on the exact rational value of ``v`` (``fractions.Fraction``), so it shares no
    floating-point shortcut with the vectorised code. Returns a Python int (or ±inf).
    For ``"stochastic"``, ``draw`` is the uniform [0, 1) number for this element.
    """
    if not isinstance(mode, str) or mode not in ROUNDING_MODES:
        raise ValueError(f"mode: unknown rounding mode {mode!r}; expected one of {ROUNDING_MODES}")
    v = real_value(v, "v", finite=False)
    if math.isinf(v):
        return v
    r = Fraction(float(v))
    fl = math.floor(r)
    frac = r - fl  # exact, in [0, 1)
    if mode == "floor":
        return fl
    if mode == "stochastic":
        if draw is None:
            raise ValueError("draw: stochastic rounding needs a uniform draw")
        return fl + (1 if Fraction(draw) < frac else 0)
    if frac != Fraction(1, 2):
        return fl + (1 if frac > Fraction(1, 2) else 0)
    # an exact tie
    if mode == "half_even":
        return fl if fl % 2 == 0 else fl + 1
    if mode == "half_away":
        return fl + 1 if r > 0 else fl
    if mode == "half_up":
        return fl + 1
    raise ValueError(f"rounding: unknown mode {mode!r}; expected one of {ROUNDING_MODES}")
