"""Logarithmic (power-of-two) quantization: values stored as a sign and an exponent.

With b bits, one sign bit and b − 1 bits of exponent code; one of the 2^(b−1) codes per sign is
spent on zero, so the levels are ``{0} ∪ {±base^e : e = e_max − n + 1, …, e_max}``, n = 2^(b−1) − 1
(base 2: powers of two, multiplication becomes a shift; base √2 halves the spacing in log space).

Rounding happens in the **log domain** by default: |x| goes to ``base^e`` with e the nearest
integer to ``log_base |x|``, i.e. the decision threshold between ``base^e`` and ``base^(e+1)`` is
their geometric mean ``base^(e + 1/2)``. Then, for |x| inside [base^(e_min), base^(e_max)],

    base^(−1/2) <= x̂ / x <= base^(1/2),     so the relative error is at most √base − 1
                                             (41.4 % for base 2, 18.9 % for base √2).

``domain="linear"`` uses arithmetic midpoints instead (the nearest level, minimising the absolute
error). Underflow: |x| below the threshold between 0 and ``base^e_min`` — ``base^(e_min − 1/2)``
in the log domain, ``base^e_min / 2`` in the linear one — becomes 0. Overflow saturates at
``±base^e_max``. ``e_max`` comes from calibration: ``round(log_base(max|x|))`` by default.

References
----------
Miyashita, Lee & Murmann, "Convolutional Neural Networks using Logarithmic Data Representation",
arXiv:1603.01025, 2016, eq. (3) (LogQuant = Clip(Round(log2|x|), FSR − 2^bitwidth, FSR)) and §3.2 (base √2).
"""
from __future__ import annotations

import numpy as np

from ..core._checks import choice, float_array, int_value, real_value
from ..core._types import ArrayLike
from .codebook import CodebookTensor, check_codebook, codebook_quantize


def log_codebook(bits: int, e_max: int, base: float = 2.0) -> np.ndarray:
    """Sorted levels ``{0, ±base^e}`` for the ``2^(bits−1) − 1`` exponents up to ``e_max`` (float64)."""
    bits = int_value(bits, "bits", 2, 16)
    base = real_value(base, "base", 1, lo_open=True)
    e_max = int_value(e_max, "e_max", -2**20, 2**20)
    n = (1 << (bits - 1)) - 1
    with np.errstate(over="ignore", under="ignore"):
        mags = base ** np.arange(e_max - n + 1, e_max + 1, dtype=np.float64)
    if not np.all(np.isfinite(mags)) or mags[0] == 0:
        raise ValueError(f"bits={bits}, e_max={e_max}, base={base!r}: the {n} levels base^(e_max - {n - 1}) .. "
                         "base^e_max over/underflow float64")
    return np.concatenate([-mags[::-1], [0.0], mags])


def log_thresholds(codebook: np.ndarray, base: float = 2.0, domain: str = "log") -> np.ndarray:
    """Decision thresholds for :func:`log_codebook`: geometric means (log) or midpoints (linear)."""
    choice(domain, "domain", ("log", "linear"))
    base = real_value(base, "base", 1, lo_open=True)
    codebook = check_codebook(codebook)
    mags = codebook[codebook > 0]
    if codebook.ndim != 1 or mags.size == 0:
        raise ValueError(f"codebook: expected a 1-D log codebook with positive levels, got {codebook!r:.80}")
    if domain == "linear":
        pos = np.concatenate([[mags[0] / 2], (mags[:-1] + mags[1:]) / 2])
    else:
        pos = mags * np.sqrt(float(base)) ** -1  # base^(e - 1/2) below each level
    return np.concatenate([-pos[::-1], pos])


def log_quantize(x: ArrayLike, bits: int = 4, *, base: float = 2.0, e_max: int | None = None, domain: str =
                 "log") -> CodebookTensor:
    """Quantize ``x`` to signed powers of ``base``; returns a :class:`CodebookTensor` (per-tensor).

    Parameters
    ----------
    x : ndarray of float, any shape, finite (NaN / Inf raise)
    bits : total bits per value (sign + exponent code), 2..16
    base : 2 or √2 (any value > 1)
    e_max : largest exponent; default ``round(log_base(max|x|))`` (0 for an all-zero tensor)
    domain : {"log", "linear"} — where rounding happens
    """
    choice(domain, "domain", ("log", "linear"))
    base = real_value(base, "base", 1, lo_open=True)
    xa = float_array(x, "x")
    if not np.all(np.isfinite(xa)):
        raise ValueError("x must be finite for logarithmic quantization (calibration takes max|x|)")
    if e_max is None:
        amax = float(max(xa.max(), -xa.min())) if xa.size else 0.0  # max|x| without a full |x| copy
        e_max = int(np.rint(np.log(amax) / np.log(base))) if amax > 0 else 0
    cb = log_codebook(bits, e_max, base)
    t = log_thresholds(cb, base, domain)
    idx = codebook_quantize(xa, cb, thresholds=t, ties="down")
    # float64 levels: exact powers, any magnitude; e_max is stored (8 bits, as an fp8/E8M0 exponent)
    return CodebookTensor(idx, cb, fixed_codebook=True, meta_bits=8)
