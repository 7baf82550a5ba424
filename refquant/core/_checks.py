"""Argument checks shared by every module.

Each check raises ``ValueError`` whose message starts with the argument's name, so a user
who passes bad input learns which argument is wrong and why. None of them mutates its input.
Integers are range-checked as exact Python integers before any cast (a uint64 2^64 − 1 never
becomes −1); floats are checked *after* conversion to the dtype they are used in (a scale that
underflows to 0 in float32 is refused).
"""
from __future__ import annotations

from collections.abc import Collection

import numpy as np

from ._types import ArrayLike, DTypeLike

_FLOATS = (np.float16, np.float32, np.float64)


def float_array(x: ArrayLike, name: str, check_nan: bool = True) -> np.ndarray:
    """``x`` as a floating-point ndarray without NaN (integers are widened to float64).

    ±Inf is allowed: quantizers saturate it. NaN has no defined quantized value, so it is
    an error rather than a silently wrong code (``check_nan=False``: the caller checks later,
    in the same pass as its arithmetic). bool, complex, object and string arrays are refused,
    and so are extended-precision floats (float128), which no kernel mirrors.
    """
    a = np.asarray(x)
    if a.dtype.kind in "iu":
        a = a.astype(np.float64)
    elif a.dtype.kind != "f" or a.dtype.type not in _FLOATS:
        raise ValueError(f"{name}: expected a real floating-point array (float16/32/64), got dtype {a.dtype}")
    if check_nan and a.size and np.isnan(a).any():
        raise ValueError(f"{name} contains NaN; NaN has no quantized value")
    return a


def finite_array(x: ArrayLike, name: str, dtype: DTypeLike | None = None, what: str = "") -> np.ndarray:
    """:func:`float_array` converted to ``dtype`` (if given), every entry finite after the conversion."""
    a = float_array(x, name)
    if dtype is not None:
        a = to_float(a, dtype, name)
    if a.size and not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: {what or 'must be finite'} (got ±Inf)")
    return a


def to_float(a: np.ndarray, dtype: DTypeLike, name: str) -> np.ndarray:
    """Cast a float array to ``dtype``; ValueError if a finite value overflows to ±Inf."""
    dtype = np.dtype(dtype)
    if a.dtype == dtype:
        return a
    with np.errstate(over="ignore"):
        b = a.astype(dtype)
    if b.size and np.isinf(b).any() and not np.isinf(a[np.isinf(b)]).all():
        raise ValueError(f"{name} has values beyond the {dtype.name} range (largest finite "
                         f"{float(np.finfo(dtype).max):.6g})")
    return b


def int_array(q: ArrayLike, name: str, lo: int | None = None, hi: int | None = None, what: str = "") -> np.ndarray:
    """``q`` as an integer ndarray; float and bool arrays are refused (no silent truncation).

    With ``lo`` / ``hi``, every value is checked to lie in [lo, hi], comparing exact Python integers
    (so uint64 2^64 − 1 and int64 −2^63 are seen as what they are, whatever is cast later).
    """
    a = np.asarray(q)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected an integer array, got dtype {a.dtype}")
    if a.size and (lo is not None or hi is not None):
        amin, amax = int(a.min()), int(a.max())
        if (lo is not None and amin < lo) or (hi is not None and amax > hi):
            raise ValueError(f"{name} must lie in [{lo}, {hi}]{what}, got values in [{amin}, {amax}]")
    return a


def int_value(v: object, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """A Python int from an int / NumPy integer / 0-d integer array (not bool), inside [lo, hi]."""
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v[()]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {v!r}")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        bounds = f"[{lo}, {hi}]" if lo is not None and hi is not None else (f">= {lo}" if hi is None else f"<= {hi}")
        raise ValueError(f"{name} must be {'in ' if bounds[0] == '[' else ''}{bounds}, got {v}")
    return v


def real_value(v: object, name: str, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
               hi_open: bool = False, finite: bool = True) -> float:
    """A Python float from a real number (int, float, NumPy real, 0-d real array; not bool, complex
    or str), not NaN, finite unless ``finite=False``, inside the (half-)open or closed interval."""
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v[()]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number, got {v!r}")
    f = float(v)
    if f != f or (finite and not np.isfinite(f)):
        raise ValueError(f"{name} must be {'finite' if finite else 'a number'}, got {v!r}")
    if (lo is not None and (f < lo or (lo_open and f == lo))) or (hi is not None and (f > hi or (hi_open and f == hi))):
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise ValueError(f"{name} must be in {lb}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{rb}, "
                         f"got {v!r}")
    return f


def choice(v: object, name: str, choices: Collection[str]) -> str:
    """``v`` if it is one of ``choices`` (compared as strings only: a list or an int is refused)."""
    if not isinstance(v, str) or v not in choices:
        raise ValueError(f"{name}: unknown {v!r}; expected one of {tuple(choices)}")
    return v


def positive_scale(scale: ArrayLike, name: str = "scale", dtype: DTypeLike | None = None) -> np.ndarray:
    """``scale`` as a float array (cast to ``dtype`` if given) with every entry finite and > 0.

    The check runs after the cast: a scale of 1e-300 underflows to 0 in float32 and is refused,
    1e300 overflows to Inf and is refused.
    """
    s = np.asarray(scale)
    if s.dtype.kind not in "fiu" or (s.dtype.kind == "f" and s.dtype.type not in _FLOATS):
        raise ValueError(f"{name}: expected a real floating-point array (float16/32/64), got dtype {s.dtype}")
    if dtype is None:
        dtype = s.dtype if s.dtype.kind == "f" else np.float32
    if s.size and s.dtype.kind == "f" and np.isnan(s).any():
        raise ValueError(f"{name} must be finite and > 0 (got NaN)")
    with np.errstate(over="ignore", under="ignore"):
        c = s.astype(dtype, copy=False)
    if c.size and not np.all(np.isfinite(c)):
        raise ValueError(f"{name} must be finite and > 0 in {np.dtype(dtype).name} "
                         "(got Inf, or a value beyond its range)")
    if c.size and not np.all(c > 0):
        bad = s.reshape(-1)[np.argmin(c.reshape(-1) > 0)]
        why = (f" (it underflows to 0 in {np.dtype(dtype).name})" if bad > 0 else
               "; a zero scale divides by zero" if bad == 0 else "")
        raise ValueError(f"{name} must be > 0, got {bad!r}{why}")
    return c


def axis_index(axis: int, ndim: int, name: str = "axis", data: str = "the array") -> int:
    """Normalise a possibly negative axis; ValueError when it is out of range (names ``data`` too)."""
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for {data} with {ndim} dimension(s)")
    return int(axis) % ndim


def block_size_value(block_size: int, name: str = "block_size") -> int:
    """``block_size`` as an int >= 0 (0 means no blocking); at most 2^31 (no array is that long here)."""
    b = int_value(block_size, name)
    if b < 0:
        raise ValueError(f"{name} must be >= 0 (0 means no blocking), got {b}")
    if b > 2**31:
        raise ValueError(f"{name} must be <= 2^31, got {b}")
    return b


def broadcast(arrays: dict) -> list:
    """``np.broadcast_arrays`` of the named arrays; ValueError naming them all when they do not broadcast."""
    try:
        return np.broadcast_arrays(*arrays.values())
    except ValueError:
        shapes = ", ".join(f"{k} {np.shape(v)}" for k, v in arrays.items())
        raise ValueError(f"{', '.join(arrays)}: shapes do not broadcast ({shapes})") from None
