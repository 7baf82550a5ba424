"""Argument checks shared by every module.

Each check raises ``ValueError`` whose message starts with the argument's name, so a user
who passes bad input learns which argument is wrong and why. None of them mutates its input.
"""
from __future__ import annotations

import numpy as np


def float_array(x, name: str, check_nan: bool = True) -> np.ndarray:
    """``x`` as a floating-point ndarray without NaN (integers are widened to float64).

    ±Inf is allowed: quantizers saturate it. NaN has no defined quantized value, so it is
    an error rather than a silently wrong code (``check_nan=False``: the caller checks later,
    in the same pass as its arithmetic).
    """
    a = np.asarray(x)
    if a.dtype.kind in "iu":
        a = a.astype(np.float64)
    elif a.dtype.kind != "f":
        raise ValueError(f"{name}: expected a real floating-point array, got dtype {a.dtype}")
    if check_nan and a.size and np.isnan(a).any():
        raise ValueError(f"{name} contains NaN; NaN has no quantized value")
    return a


def int_array(q, name: str) -> np.ndarray:
    """``q`` as an integer ndarray; float arrays are refused (no silent truncation)."""
    a = np.asarray(q)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected an integer array, got dtype {a.dtype}")
    return a


def positive_scale(scale, name: str = "scale", dtype=None) -> np.ndarray:
    """``scale`` as a float array (cast to ``dtype`` if given) with every entry finite and > 0."""
    s = np.asarray(scale)
    if s.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected a floating-point array, got dtype {s.dtype}")
    if dtype is None:
        dtype = s.dtype if s.dtype.kind == "f" else np.float32
    s = s.astype(dtype, copy=False)
    if s.size and not np.all(np.isfinite(s)):
        raise ValueError(f"{name} must be finite (got NaN or Inf)")
    if s.size and not np.all(s > 0):
        raise ValueError(f"{name} must be > 0 (got min {s.min()!r}; a zero scale divides by zero)")
    return s


def axis_index(axis: int, ndim: int, name: str = "axis") -> int:
    """Normalise a possibly negative axis; ValueError when it is out of range."""
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise ValueError(f"{name} must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array of {ndim} dimension(s)")
    return int(axis) % ndim


def block_size_value(block_size, name: str = "block_size") -> int:
    if not isinstance(block_size, (int, np.integer)) or isinstance(block_size, bool):
        raise ValueError(f"{name} must be an int, got {block_size!r}")
    if block_size < 0:
        raise ValueError(f"{name} must be >= 0 (0 means no blocking), got {block_size}")
    return int(block_size)
