"""Codebook (nearest-codeword) quantization: the common form of every non-uniform format.

A codebook is a sorted vector of K real values ``c_0 < c_1 < … < c_{K−1}``; a value is stored as
the index of its nearest codeword::

    index(v) = argmin_k |v − c_k|,      v = x / scale (scale optional, per tensor / channel / group)
    x̂        = scale · c_index

Nearest-codeword assignment is decided by the K − 1 thresholds ``t_k = (c_k + c_{k+1}) / 2``,
compared *exactly* with the float64 value of v: the sum ``c_k + c_{k+1}`` is kept as an unevaluated
pair ``s + e`` (TwoSum, Knuth TAOCP vol. 2, §4.2.2) and ``2v − s`` is compared with ``e``, so no
midpoint is ever rounded (valid while |codewords| and |v| stay below 2^1022). A value exactly on a threshold is a tie; ``ties``
names the rule: ``"even"`` (the even index — for a uniform grid with even ``qmin`` this is
round-half-to-even, and for a minifloat table it is IEEE round-to-nearest-even), ``"down"``
(lower index, e.g. bitsandbytes' ``x > t`` trees) or ``"up"``. Custom ``thresholds`` replace the
midpoints, e.g. geometric means for logarithmic quantization.

Uniform quantization is the special case ``c_k = scale · (qmin + k − zero_point)``
(:func:`uniform_codebook`). Values beyond the ends map to the end codewords (saturation);
NaN raises.

References
----------
Gray & Neuhoff, "Quantization", IEEE Trans. Inf. Theory 1998, section II (nearest-neighbour
condition). Lloyd, "Least squares quantization in PCM", 1982 (optimal thresholds are midpoints).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core._checks import choice, float_array, int_array, int_value, positive_scale, real_value, to_float
from ..core.granularity import align, check_param, param_shape, to_groups
from ..core.uniform import _CHUNK, _chunks  # noqa: F401  (the chunking the uniform quantizer uses)
from ..core._types import ArrayLike, QRangeLike

TIES = ("even", "down", "up")


def check_codebook(codebook: ArrayLike, name: str = "codebook") -> np.ndarray:
    """``codebook`` as a float array of shape (K,) or (n_params, K), each row strictly increasing."""
    c = float_array(codebook, name, check_nan=False)
    if c.ndim not in (1, 2) or c.shape[-1] < 1:
        raise ValueError(f"{name}: expected shape (K,) or (n_params, K) with K >= 1, got {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{name} must be finite (got NaN or Inf)")
    if c.shape[-1] > 65536:
        raise ValueError(f"{name}: at most 65536 codewords (16-bit indices), got {c.shape[-1]}")
    if np.any(c[..., 1:] <= c[..., :-1]):  # compared, not subtracted: no overflow near the dtype's max
        raise ValueError(f"{name} must be sorted and free of duplicates (strictly increasing)")
    return c


def _index_dtype(k: int):
    return np.uint8 if k <= 256 else np.uint16


def _midpoint_sums(c: np.ndarray):
    """``c_k + c_{k+1} = s_k + e_k`` exactly (TwoSum): s the rounded sum, e its rounding error."""
    a, b = c[..., :-1].astype(np.float64), c[..., 1:].astype(np.float64)
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def _compare(v: np.ndarray, s: np.ndarray, e: np.ndarray):
    """Sign of ``2v − (s + e)``, exactly: −1, 0 or +1 (elementwise, broadcasting)."""
    with np.errstate(over="ignore"):  # 2v beyond float64 is ±Inf, on the right side of every threshold
        d = 2 * v - s  # exact when 2v and s are within a factor 2 (Sterbenz); otherwise |d| >> |e|
        return np.sign(d - e)  # with gradual underflow d - e == 0 exactly when d == e; ±inf v gives ±1


def _assign(v: np.ndarray, t, ties: str) -> np.ndarray:
    """Index of the codeword for each v; ``t`` is (s, e) midpoint pairs or exact float64 thresholds.

    Midpoint pairs: ``m = s / 2`` is within a quarter ulp of the exact midpoint, so a value farther
    than 4 ulps from both neighbouring ``m`` is ordered correctly by the float64 search alone; the
    exact comparison (:func:`_assign_exact`) runs only on the values near a threshold.
    """
    if isinstance(t, tuple) and t[0].size:
        s, e = t
        m = s / 2
        idx = np.searchsorted(m, v, side="left")
        tol = 4 * np.spacing(np.abs(m))
        below, above = np.maximum(idx - 1, 0), np.minimum(idx, m.size - 1)
        with np.errstate(invalid="ignore"):  # inf - inf cannot occur (m is finite); ±inf v is never near
            near = (np.abs(v - m[below]) <= tol[below]) | (np.abs(v - m[above]) <= tol[above])
        if near.any():
            idx[near] = _assign_exact(v[near], t, ties)
        return idx
    return _assign_exact(v, t, ties)


def _assign_exact(v: np.ndarray, t, ties: str) -> np.ndarray:
    """:func:`_assign` with every value compared exactly (TwoSum midpoints) and ties resolved."""
    if isinstance(t, tuple):
        s, e = t
        idx = np.searchsorted(s / 2, v, side="left")  # approximate: off by one at most near a threshold
        for _ in range(4):  # fix up with exact comparisons until stable
            lo = idx > 0
            back = np.zeros(v.shape, dtype=bool)
            back[lo] = _compare(v[lo], s[idx[lo] - 1], e[idx[lo] - 1]) <= 0  # v not above t_{idx-1}
            hi = idx < s.size
            fwd = np.zeros(v.shape, dtype=bool)
            fwd[hi] = _compare(v[hi], s[idx[hi]], e[idx[hi]]) > 0  # v above t_idx
            if not (back.any() or fwd.any()):
                break
            idx = idx - back + fwd
        size = s.size
        on = np.zeros(v.shape, dtype=bool)
        inside = idx < size
        on[inside] = _compare(v[inside], s[idx[inside]], e[idx[inside]]) == 0
    else:
        idx = np.searchsorted(t, v, side="left")  # number of thresholds strictly below v
        on = np.zeros(v.shape, dtype=bool)
        inside = idx < t.size
        on[inside] = v[inside] == t[idx[inside]]
    if ties == "down":
        return idx
    return idx + (on if ties == "up" else on & (idx % 2 == 1))


def codebook_quantize(x: ArrayLike, codebook: ArrayLike, *, scale: ArrayLike | None = None, axis: int | None = None,
                      block_size: int = 0, ties: str = "even", thresholds: ArrayLike | None = None,
                      scale_op: str = "divide") -> np.ndarray:
    """Index of the nearest codeword for every element of ``x / scale``.

    Parameters
    ----------
    x : ndarray of float, any shape
    codebook : ndarray of shape (K,) (shared) or (n_params, K) (one per channel / group, rows in
        C order of the parameter shape, see :mod:`refquant.granularity`); strictly increasing
    scale : None, float or ndarray of the parameter shape — divides x first (scale-normalised
        codebooks such as NF4: a fixed table times a per-block absmax)
    axis, block_size : granularity of ``scale`` and of a 2-D ``codebook``
    ties : {"even", "down", "up"}
    thresholds : ndarray of shape (K − 1,), optional decision boundaries (1-D codebook only)
    scale_op : {"divide", "multiply_reciprocal"} — ``x / scale`` or ``x * float32(1 / scale)``

    Returns
    -------
    indices : ndarray of uint8 (K <= 256) or uint16, shape of ``x``
    """
    choice(ties, "ties", TIES)
    choice(scale_op, "scale_op", ("divide", "multiply_reciprocal"))
    c = check_codebook(codebook)
    xa = float_array(x, "x")
    sv, wd = None, None
    if scale is not None:
        sv = check_param(positive_scale(scale, "scale", None if type(scale) is not float else xa.dtype),
                         xa.shape, axis, block_size, "scale")
        wd = np.result_type(xa.dtype, sv.dtype)
        if scale_op == "multiply_reciprocal":
            with np.errstate(over="ignore"):
                sv = np.divide(wd.type(1), sv, dtype=wd)
    if thresholds is not None:
        t = check_codebook(thresholds, "thresholds").astype(np.float64) if np.size(thresholds) else np.zeros(0)
        if c.ndim != 1 or t.shape != (c.shape[0] - 1,):
            raise ValueError(f"thresholds: expected {c.shape[-1] - 1} strictly increasing values for a 1-D codebook")
    else:
        t = _midpoint_sums(c)
    if c.ndim == 1:
        # in chunks of _CHUNK elements: the float64 values, search indices and masks of one chunk
        # stay in cache, and the only full-size allocation is the index array returned
        out = np.empty(xa.shape, dtype=_index_dtype(c.shape[0]))
        pars = [] if sv is None else [sv]
        for xc, oc, pc in _chunks(xa, out, pars, None if sv is None else axis, block_size, _CHUNK // 4):
            if sv is None:
                v = xc.astype(np.float64)
            else:
                with np.errstate(over="ignore"):  # x / scale beyond the dtype is ±Inf: an end codeword
                    v = (np.divide if scale_op == "divide" else np.multiply)(xc, pc[0], dtype=wd)
                v = v.astype(np.float64, copy=False)
            oc[...] = _assign(v.reshape(-1), t, ties).reshape(oc.shape)
        return out
    v = xa
    if sv is not None:
        xv, (sa,) = align(xa, [sv], axis, block_size)
        with np.errstate(over="ignore"):
            v = (np.divide if scale_op == "divide" else np.multiply)(xv, sa, dtype=wd).reshape(xa.shape)
    v = v.astype(np.float64)
    g = to_groups(v, axis, block_size)  # (n_params, group_len), NaN-padded
    if g.shape[0] != c.shape[0]:
        raise ValueError(f"codebook has {c.shape[0]} rows but the granularity has {g.shape[0]} parameter groups")
    out = np.empty(g.shape, dtype=np.int64)
    for r in range(g.shape[0]):  # one searchsorted per codebook row
        out[r] = _assign(np.nan_to_num(g[r]), (t[0][r], t[1][r]), ties)
    return _ungroup(out, xa.shape, axis, block_size).astype(_index_dtype(c.shape[1]))


def _ungroup(rows: np.ndarray, shape: tuple, axis, block_size) -> np.ndarray:
    """Inverse of :func:`refquant.granularity.to_groups` for full rows (drops the NaN padding)."""
    if axis is None:
        return rows.reshape(shape)
    a = axis % len(shape)
    moved = shape[:a] + shape[a + 1:]
    if not block_size:
        return np.moveaxis(rows.reshape((shape[a],) + moved), 0, a)
    m = rows.reshape(moved + (-1,))[..., : shape[a]]
    return np.moveaxis(m, -1, a)


def codebook_dequantize(indices: ArrayLike, codebook: ArrayLike, *, scale: ArrayLike | None = None,
                        axis: int | None = None, block_size: int = 0) -> np.ndarray:
    """``x̂ = scale · codebook[indices]`` (float32 unless the codebook or scale is wider).

    ``indices`` integer array, any shape; a 2-D codebook is looked up row by parameter group.
    """
    c = check_codebook(codebook)
    idx = int_array(indices, "indices", 0, c.shape[-1] - 1, f" (codebook has {c.shape[-1]} entries)")
    dtype = np.promote_types(c.dtype, np.float32)
    s = None if scale is None else check_param(
        positive_scale(scale, "scale", None if type(scale) is not float else dtype), idx.shape, axis, block_size,
        "scale", "indices")
    if c.ndim == 1:
        cd = c.astype(dtype)
        if s is None:
            return cd[idx]
        od = np.promote_types(dtype, s.dtype)
        out = np.empty(idx.shape, dtype=od)
        for ic, oc, (sc,) in _chunks(idx, out, [s], axis, block_size):  # chunked: no full-size temporary
            with np.errstate(over="ignore"):
                np.multiply(cd[ic], sc, out=oc, dtype=od)
            if not (np.isfinite(oc.min()) and np.isfinite(oc.max())):
                raise ValueError(f"scale · codebook overflows {od.name}")
        return out
    else:
        g = to_groups(idx.astype(np.float64), axis, block_size, "indices")
        if g.shape[0] != c.shape[0]:
            raise ValueError(f"codebook has {c.shape[0]} rows but indices have {g.shape[0]} parameter groups")
        row = np.arange(c.shape[0]).reshape(-1, 1)
        vals = _ungroup(c.astype(dtype)[row, np.nan_to_num(g).astype(np.int64)], idx.shape, axis, block_size)
    if s is None:
        return vals
    vv, (sv,) = align(vals, [s], axis, block_size)
    with np.errstate(over="ignore"):
        out = np.multiply(vv, sv, dtype=np.promote_types(dtype, sv.dtype)).reshape(idx.shape)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"scale · codebook overflows {out.dtype.name}")
    return out


def codebook_quantize_ref(x: ArrayLike, codebook: ArrayLike, *, ties: str = "even") -> np.ndarray:
    """Loop twin of :func:`codebook_quantize` for a 1-D codebook: exhaustive nearest search with exact
    rational distances (``fractions.Fraction``)."""
    from fractions import Fraction

    choice(ties, "ties", TIES)
    cb = check_codebook(codebook)
    if cb.ndim != 1:
        raise ValueError(f"codebook: the loop twin takes a 1-D codebook, got shape {cb.shape}")
    c = [Fraction(float(v)) for v in cb]
    xa = float_array(x, "x")
    out = np.empty(xa.shape, dtype=_index_dtype(len(c)))
    for i, xi in np.ndenumerate(xa):
        if np.isinf(xi):
            out[i] = 0 if xi < 0 else len(c) - 1
            continue
        f = Fraction(float(xi))
        d = [abs(f - ck) for ck in c]
        best = min(d)
        cands = [k for k, dk in enumerate(d) if dk == best]
        if len(cands) == 1:
            out[i] = cands[0]
        else:  # a tie between two neighbours
            lo, hi = cands
            out[i] = {"down": lo, "up": hi, "even": lo if lo % 2 == 0 else hi}[ties]
    return out


def uniform_codebook(scale: float, zero_point: int, qrange: QRangeLike) -> np.ndarray:
    """The uniform grid ``scale · (q − zero_point)`` for q in [qmin, qmax], as a codebook (float64)."""
    from ..core.ranges import qrange as as_qrange

    r = as_qrange(qrange)
    scale = real_value(scale, "scale", 0, lo_open=True)
    zero_point = int_value(zero_point, "zero_point", r.qmin, r.qmax)
    with np.errstate(over="ignore"):
        c = scale * (np.arange(r.qmin, r.qmax + 1, dtype=np.float64) - zero_point)
    if not np.all(np.isfinite(c)):
        raise ValueError(f"scale={scale!r}: the grid overflows float64")
    return c


@dataclass(frozen=True)
class CodebookTensor:
    """Indices into a codebook with an optional scale: ``x ≈ scale · codebook[indices]``."""

    indices: np.ndarray  # uint8 / uint16, shape of the original tensor
    codebook: np.ndarray  # (K,) shared, or (n_params, K) per channel / group
    scale: np.ndarray | None = None  # parameter shape, or None
    axis: int | None = None  # granularity of scale / 2-D codebook
    block_size: int = 0
    fixed_codebook: bool = False  # True: the table is part of the format (NF4, FP8) and is not stored
    meta_bits: int = 0  # other stored format parameters (log2: the 8-bit exponent e_max)

    def __post_init__(self):
        """Validate what the tensor holds: a finite, strictly increasing codebook (per row), integer
        indices inside it, a finite positive scale (or None) and a granularity that fits both."""
        c = check_codebook(self.codebook)
        idx = int_array(self.indices, "indices", 0, c.shape[-1] - 1, f" (codebook has {c.shape[-1]} entries)")
        want = param_shape(idx.shape, self.axis, self.block_size, data="indices")
        if self.scale is not None:
            check_param(positive_scale(self.scale, "scale"), idx.shape, self.axis, self.block_size, "scale", "indices")
        if c.ndim == 2 and c.shape[0] != int(np.prod(want)):
            raise ValueError(f"codebook has {c.shape[0]} rows but indices have {int(np.prod(want))} parameter groups")
        if not isinstance(self.fixed_codebook, (bool, np.bool_)):
            raise ValueError(f"fixed_codebook must be a bool, got {self.fixed_codebook!r}")
        int_value(self.meta_bits, "meta_bits", 0)

    @property
    def shape(self) -> tuple:
        return self.indices.shape

    def dequantize(self) -> np.ndarray:
        return codebook_dequantize(self.indices, self.codebook, scale=self.scale, axis=self.axis,
                                   block_size=self.block_size)

    def storage_bits(self, codebook_bits: int = 32, scale_bits: int = 32) -> int:
        """``n · index_bits(K)`` + the stored codebook (unless fixed by the format) + scales + ``meta_bits``."""
        extra = 0 if self.fixed_codebook else self.codebook.size * codebook_bits
        extra += 0 if self.scale is None else self.scale.size * scale_bits
        return self.indices.size * index_bits(self.codebook.shape[-1]) + extra + self.meta_bits

    def bits_per_element(self, codebook_bits: int = 32, scale_bits: int = 32) -> float:
        """``ceil(log2 K)`` bits per index plus the stored codebook and scales spread over the elements."""
        return self.storage_bits(codebook_bits, scale_bits) / self.indices.size


def index_bits(k: int) -> int:
    """Bits of one index into a codebook of ``k`` entries: ``max(1, ceil(log2 k))`` (one bit even for k = 1)."""
    return max(1, (int_value(k, "k", 1) - 1).bit_length())




def codebook_fake_quantize(x: ArrayLike, codebook: ArrayLike, *, scale: ArrayLike | None = None,
                           axis: int | None = None, block_size: int = 0, ties: str = "even") -> np.ndarray:
    """``scale · codebook[codebook_quantize(x / scale)]``: the reconstruction, shape of ``x``."""
    idx = codebook_quantize(x, codebook, scale=scale, axis=axis, block_size=block_size, ties=ties)
    return codebook_dequantize(idx, codebook, scale=scale, axis=axis, block_size=block_size)


def absmax_scale(x: ArrayLike, target: float = 1.0, *, axis: int | None = None, block_size: int = 0) -> np.ndarray:
    """Per tensor / channel / group scale ``max|x| / target`` (float32) that maps the largest magnitude
    onto the codebook's end value ``target`` (1 for NF4, 6 for FP4 E2M1, 448 for FP8 E4M3).
    An all-zero group gets scale 1 (its values are 0 whatever the scale)."""
    from ..core.granularity import from_groups

    target = real_value(target, "target", 0, lo_open=True)
    with np.errstate(over="ignore"):
        t32 = np.float32(target)
    if not 0 < t32 < np.inf:
        raise ValueError(f"target={target!r} is 0 or Inf in float32, where the scale is computed")
    xa = float_array(x, "x")
    if xa.size == 0:
        raise ValueError("x is empty; there is no absmax")
    xa = to_float(xa, np.float32, "x")
    g = to_groups(xa, axis, block_size)  # a view unless a partial block needs NaN padding
    hi, lo = np.nanmax(g, axis=1), np.nanmin(g, axis=1)  # max|x| without a full-size |x| copy
    if not (np.all(np.isfinite(hi)) and np.all(np.isfinite(lo))):
        raise ValueError("x must be finite for an absmax scale")
    amax = np.maximum(hi, -lo)
    with np.errstate(over="ignore", under="ignore"):
        s = np.where(amax > 0, amax / np.float32(target), np.float32(1)).astype(np.float32)
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError(f"target={target!r}: max|x| / target leaves the float32 range (0 or Inf)")
    return from_groups(s, xa.shape, axis, block_size)
