"""Calibration: estimating the real range [lo, hi] that a quantizer should cover.

Streaming observers are pure functions ``update(state, x) -> state`` over frozen states; the
search-based estimators (percentile, MSE, KL) take the collected calibration sample. All take
the granularity arguments ``axis`` / ``block_size`` of :mod:`refquant.granularity` and return
``(lo, hi)`` of the parameter shape; :func:`calibrate` turns a range into (scale, zero point).

When each wins
--------------
* **min-max** — exact cover, no clipping. Best for weights without outliers and at 8 bits; one
  outlier stretches the grid for everybody (the step grows with the outlier).
* **moving-average min-max** — min-max over batches, smoothed: robust to one unusual batch
  during QAT or streaming calibration (PyTorch's default activation observer for QAT).
* **percentile** — clips the rare tail (99.99 %): wins on activations with a few huge outliers,
  loses when the outliers carry the signal (LLM outlier features, Dettmers et al. 2022).
* **MSE** — searches the clipping ratio that minimises the reconstruction error of this tensor
  at this bit width: the best trade-off of clipping against rounding error, especially at 4 bits
  and on heavy-tailed (Laplace/Student-t) data; costs ``n_grid`` quantizations.
* **KL / entropy** — TensorRT's histogram method: keeps the distribution's shape, clips heavy
  tails of ReLU-like activations aggressively; meant for 8-bit activations, less for weights.

References
----------
Krishnamoorthi 2018, arXiv:1806.08342, section 3.1 (min-max, moving average).
Migacz, "8-bit Inference with TensorRT", GTC 2017 (KL calibration algorithm, slides 29-38).
Banner et al., "Post training 4-bit quantization of convolutional networks", NeurIPS 2019
(MSE-optimal clipping). Wu et al., "Integer Quantization for Deep Learning Inference",
arXiv:2004.09602, section 4.1 and appendix A (max, percentile, MSE, entropy calibration compared).
PyTorch ``torch/ao/quantization/observer.py: MinMaxObserver, MovingAverageMinMaxObserver``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import choice, float_array, int_value, real_value, to_float
from .granularity import from_groups, to_groups
from .ranges import qrange as as_qrange
from .uniform import fake_quantize, qparams_from_range
from ._types import ArrayLike, QRangeLike


@dataclass(frozen=True)
class MinMaxState:
    """Running range of a streaming observer."""

    lo: np.ndarray  # parameter shape: () per-tensor, (C,) per-channel, blocked shape per-group
    hi: np.ndarray  # same shape as lo
    batches: int  # number of batches observed


def _groups(x, axis, block_size, name="x"):
    a = float_array(x, name)
    if a.size == 0:
        raise ValueError(f"{name} is empty; there is no range to calibrate")
    if np.isinf(a).any():
        raise ValueError(f"{name} contains Inf; a calibration range must be finite")
    return a, to_groups(a.astype(np.result_type(a.dtype, np.float32), copy=False), axis, block_size)


def minmax_range(x: ArrayLike, *, axis: int | None = None, block_size: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(min x, max x)`` per tensor / channel / group. Returns ``(lo, hi)`` of the parameter shape."""
    a, g = _groups(x, axis, block_size)
    return (from_groups(np.nanmin(g, axis=1), a.shape, axis, block_size),
            from_groups(np.nanmax(g, axis=1), a.shape, axis, block_size))


def minmax_update(state: MinMaxState | None, x: ArrayLike, *, axis: int | None = None, block_size: int =
                  0) -> MinMaxState:
    """Running min-max: ``lo ← min(lo, min x)``, ``hi ← max(hi, max x)``. ``state=None`` starts."""
    lo, hi = minmax_range(x, axis=axis, block_size=block_size)
    if state is None:
        return MinMaxState(lo, hi, 1)
    _check_state(state, lo)
    return MinMaxState(np.minimum(state.lo, lo), np.maximum(state.hi, hi), state.batches + 1)


def moving_average_update(state: MinMaxState | None, x: ArrayLike, *, momentum: float = 0.01, axis: int | None = None,
                          block_size: int = 0) -> MinMaxState:
    """Exponential moving average of batch ranges (PyTorch ``MovingAverageMinMaxObserver``).

    ``lo ← lo + c·(min x − lo)``, ``hi ← hi + c·(max x − hi)`` with ``c = momentum``; the first
    batch sets the range. ``momentum`` in (0, 1]; 1 keeps only the latest batch.
    """
    momentum = real_value(momentum, "momentum", 0, 1, lo_open=True)
    lo, hi = minmax_range(x, axis=axis, block_size=block_size)
    if state is None:
        return MinMaxState(lo, hi, 1)
    _check_state(state, lo)
    c = np.asarray(momentum, dtype=lo.dtype)
    return MinMaxState(state.lo + c * (lo - state.lo), state.hi + c * (hi - state.hi), state.batches + 1)


def _fits_float32(v):
    """The range of x must be a float32 range: the scales are float32."""
    to_float(np.asarray(v), np.float32, "x (its range)")


def _check_state(state, lo):
    if not isinstance(state, MinMaxState):
        raise ValueError(f"state: expected None or a MinMaxState, got {type(state).__name__}")
    if np.shape(state.lo) != lo.shape:
        raise ValueError(f"state: range of shape {np.shape(state.lo)} cannot be updated with a batch "
                         f"whose range has shape {lo.shape} (granularity changed?)")


def percentile_range(x: ArrayLike, percentile: float = 99.99, *, axis: int | None = None, block_size: int =
                     0) -> tuple[np.ndarray, np.ndarray]:
    """``(P_{100−p}(x), P_p(x))``: clip the rarest ``100 − p`` % at each end (linear interpolation)."""
    percentile = real_value(percentile, "percentile", 50, 100, lo_open=True)
    a, g = _groups(x, axis, block_size)
    lo, hi = np.nanpercentile(g, [100 - percentile, percentile], axis=1)
    return from_groups(lo, a.shape, axis, block_size), from_groups(hi, a.shape, axis, block_size)


def mse_range(x: ArrayLike, qrange: QRangeLike = "int8", *, symmetric: bool = False, symmetric_divisor: str = "qmax",
              n_grid: int = 100, axis: int | None = None, block_size: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clipping range minimising ``Σ (x − fake_quantize(x))²``, by grid search.

    Candidates are ``α·(lo, hi)`` of the min-max range for ``α = k / n_grid``, k = 1..n_grid; each
    row (tensor / channel / group) takes its own best α (the largest α among equal errors). The
    result is never worse than min-max (α = 1 is a candidate). With ``symmetric=True`` the range
    searched, and returned, is ``α·(−amax, amax)`` (``α·(0, amax)`` for non-negative rows).
    """
    n_grid = int_value(n_grid, "n_grid", 1, 100_000)
    choice(symmetric_divisor, "symmetric_divisor", ("qmax", "half_range"))
    a, g = _groups(x, axis, block_size)
    _fits_float32(g)
    pad = np.isnan(g)
    g0 = np.where(pad, 0, g)  # padding contributes 0 error: it is masked below
    lo, hi = np.nanmin(g, axis=1), np.nanmax(g, axis=1)
    if symmetric:
        amax = np.maximum(-lo, hi)
        lo, hi = np.where(lo < 0, -amax, 0), amax
    best_err = np.full(len(g), np.inf)
    best = np.ones(len(g))
    for k in range(n_grid, 0, -1):  # from alpha = 1 downwards: ties keep the larger alpha
        alpha = k / n_grid
        s, z = qparams_from_range(alpha * lo, alpha * hi, qrange, symmetric=symmetric,
                                  symmetric_divisor=symmetric_divisor)
        fq = fake_quantize(g0, s.astype(g0.dtype), z, qrange, axis=0)
        err = np.sum(np.where(pad, 0, (fq.astype(np.float64) - g0) ** 2), axis=1)
        better = err < best_err
        best_err[better], best[better] = err[better], alpha
    return from_groups(best * lo, a.shape, axis, block_size), from_groups(best * hi, a.shape, axis, block_size)


def _smooth(p, eps=1e-4):
    # Move eps of mass onto empty bins so KL(p || q) stays finite (MXNet _smooth_distribution).
    zeros = p == 0
    n_zero, n_nonzero = zeros.sum(), p.size - zeros.sum()
    if n_nonzero == 0:
        return None
    return p + eps * zeros - (eps * n_zero / n_nonzero) * ~zeros


def _kl_threshold(a: np.ndarray, n_bins: int, n_levels: int) -> float:
    amax = float(a.max())
    if amax == 0:
        return 0.0
    hist, edges = np.histogram(a, bins=n_bins, range=(0, amax))
    hist = hist.astype(np.float64)
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[i] = sum(hist[i:])
    best_kl, best_i = np.inf, n_bins
    for i in range(min(n_levels, n_bins), n_bins + 1):
        ref = hist[:i]
        p = ref.copy()
        p[-1] += tail[i]  # outliers clipped into the last kept bin
        # merge the i bins into n_levels, then spread each level over its non-empty bins
        idx = np.minimum(np.arange(i) // max(1, i // n_levels), n_levels - 1)
        nz = (ref != 0).astype(np.float64)
        qsum = np.bincount(idx, weights=ref, minlength=n_levels)
        qcnt = np.bincount(idx, weights=nz, minlength=n_levels)
        q = nz * qsum[idx] / np.maximum(qcnt[idx], 1)
        ps, qs = _smooth(p / p.sum()), _smooth(q / max(q.sum(), 1e-300))
        if ps is None or qs is None:
            continue
        m = ps > 0
        if np.any(qs[m] <= 0):  # smoothing could not make Q positive where P is: KL = +inf
            continue
        kl = float(np.sum(ps[m] * np.log(ps[m] / qs[m])))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return float(edges[best_i])


def kl_range(x: ArrayLike, qrange: QRangeLike = "int8", *, n_bins: int = 2048, axis: int | None = None,
             block_size: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric range ``(−t, t)`` minimising KL(P || Q) between the histogram of ``|x|`` and its
    quantized version (TensorRT entropy calibration).

    ``|x|`` is histogrammed into ``n_bins`` bins over [0, max|x|]; for each candidate threshold
    ``i`` bins (i from the number of levels to ``n_bins``) P is the first i bins with the tail
    added to the last, Q merges them into ``n_levels`` levels (2^(b−1) = 128 for int8, all levels
    for an unsigned range on non-negative data) spread back over the non-empty bins; the threshold
    is the upper edge of bin i. Non-negative data gives ``(0, t)``.

    Meant for per-tensor activations with thousands of samples: each row costs about ``n_bins``
    small NumPy passes (~0.1 s), and a histogram of a 32-element group says little.
    """
    r = as_qrange(qrange)
    n_bins = int_value(n_bins, "n_bins", 2, 1 << 20)
    a, g = _groups(x, axis, block_size)
    t = np.empty(len(g))
    nonneg = np.empty(len(g), dtype=bool)
    for j, row in enumerate(g):
        row = row[~np.isnan(row)]
        nonneg[j] = row.min() >= 0
        n_levels = r.levels if (nonneg[j] and not r.signed) else r.levels // 2
        t[j] = _kl_threshold(np.abs(row), n_bins, n_levels)
    lo = np.where(nonneg, 0.0, -t)
    return from_groups(lo, a.shape, axis, block_size), from_groups(t, a.shape, axis, block_size)


CALIBRATORS = {"minmax": minmax_range, "percentile": percentile_range, "mse": mse_range, "kl": kl_range}


def calibrate(x: ArrayLike, qrange: QRangeLike = "int8", calibration: str = "minmax", *, symmetric: bool = False,
              symmetric_divisor: str = "qmax", axis: int | None = None, block_size: int = 0, **options:
              object) -> tuple[np.ndarray, np.ndarray]:
    """Range estimation followed by :func:`refquant.uniform.qparams_from_range`.

    Parameters
    ----------
    x : ndarray of float — the calibration sample
    qrange : str or QRange
    calibration : {"minmax", "percentile", "mse", "kl"} — the range estimator
    symmetric, symmetric_divisor : as in ``qparams_from_range``
    axis, block_size : granularity
    **options : passed to the range function (``percentile=``, ``n_grid=``, ``n_bins=``)

    Returns
    -------
    scale : ndarray of float32, zero_point : ndarray of int32 (parameter shape)
    """
    choice(calibration, "calibration", tuple(CALIBRATORS))
    kw = dict(axis=axis, block_size=block_size, **options)
    if calibration == "mse":
        kw.update(symmetric=symmetric, symmetric_divisor=symmetric_divisor)
    if calibration in ("mse", "kl"):
        lo, hi = CALIBRATORS[calibration](x, qrange, **kw)
    else:
        lo, hi = CALIBRATORS[calibration](x, **kw)
    _fits_float32(lo), _fits_float32(hi)
    return qparams_from_range(lo, hi, qrange, symmetric=symmetric, symmetric_divisor=symmetric_divisor)
