"""Granularity: which elements share one scale and zero point.

Three granularities, chosen by two arguments that every quantizer and calibrator takes:

===============  =====================  ===================================================
granularity      arguments              shape of ``scale`` / ``zero_point`` for x of shape S
===============  =====================  ===================================================
per-tensor       ``axis=None``          ``()``
per-channel      ``axis=a``             ``(S[a],)``
per-group/block  ``axis=a, block_size=B``  S with ``S[a]`` replaced by ``ceil(S[a] / B)``
===============  =====================  ===================================================

In per-group mode element ``i`` along ``axis`` uses parameter ``i // B``; the last block may be
partial. This is ONNX's blocked quantization (QuantizeLinear-21, attribute ``block_size``).

References
----------
ONNX operator spec, QuantizeLinear (opset 21): per-axis and blocked quantization.
ONNX ``onnx/reference/ops/_quant_utils.py: reshape_input``.
"""
from __future__ import annotations

import numpy as np

from ._checks import axis_index, block_size_value
from ._types import ArrayLike


def param_shape(shape: tuple, axis: int | None, block_size: int = 0, *, data: str = "shape") -> tuple:
    """Shape that ``scale`` and ``zero_point`` must have for data of ``shape``.

    ``data`` names the data in error messages (the caller's argument, e.g. ``"x"``).
    """
    block_size = block_size_value(block_size)
    if not isinstance(shape, tuple) or not all(isinstance(n, (int, np.integer)) and not isinstance(n, (bool, np.bool_))
                                               and n >= 0 for n in shape):
        raise ValueError(f"{data}: expected a shape (a tuple of ints >= 0), got {shape!r}")
    if axis is None:
        if block_size:
            raise ValueError("block_size: blocked quantization needs an axis (got axis=None)")
        return ()
    a = axis_index(axis, len(shape), data=data)
    if block_size == 0:
        return (shape[a],)
    return shape[:a] + (-(-shape[a] // block_size),) + shape[a + 1:]


def check_param(p: ArrayLike, shape: tuple, axis: int | None, block_size: int, name: str, data: str = "x"
                ) -> np.ndarray:
    """``p`` as an array of exactly :func:`param_shape` (a size-1 value counts as per-tensor only
    when ``axis`` is None). Errors name ``name`` and the data argument ``data``."""
    p = np.asarray(p)
    want = param_shape(shape, axis, block_size, data=data)
    if axis is None and p.size == 1 and p.ndim <= 1:
        return p.reshape(())
    if p.shape != want:
        kind = "per-tensor" if axis is None else ("per-channel" if not block_size else "blocked")
        raise ValueError(
            f"{name} has shape {p.shape}, but {kind} quantization of {data} with shape {shape} "
            f"(axis={axis}, block_size={block_size}) needs shape {want}")
    return p


def align(x: np.ndarray, params: list[np.ndarray], axis: int | None, block_size: int
          ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Views of ``x`` and of each parameter (already of :func:`param_shape`) that broadcast.

    Returns ``(xv, [pv, ...])``; ``xv`` is ``x`` itself or a reshaped view of it, so a result
    computed on ``xv`` is reshaped back with ``.reshape(x.shape)``. Blocks that divide the axis
    split it into ``(n_blocks, B)`` (no copy); a partial last block repeats the parameters.
    A 0-d parameter (shared by all elements) is passed through unchanged.
    """
    if axis is None:
        return x, [p.reshape(()) for p in params]
    block_size = block_size_value(block_size)  # a Python int: NumPy uint8 arithmetic would wrap below
    a = axis_index(axis, x.ndim)
    if not block_size:
        dims = [1] * x.ndim
        dims[a] = x.shape[a]
        return x, [p if p.ndim == 0 else p.reshape(dims) for p in params]
    n = x.shape[a]
    if n % block_size == 0:
        xv = x.reshape(x.shape[:a] + (n // block_size, block_size) + x.shape[a + 1:])
        return xv, [p if p.ndim == 0 else np.expand_dims(p, a + 1) for p in params]
    # (..., n_blocks, ...) -> (..., n, ...): element i uses block i // B
    return x, [p if p.ndim == 0 else np.take(p, np.arange(n) // block_size, axis=a) for p in params]


def to_groups(x: np.ndarray, axis: int | None = None, block_size: int = 0, data: str = "x") -> np.ndarray:
    """Rearrange ``x`` into rows, one row per parameter: ``(n_params, group_len)``.

    Rows of a partial last block are padded with NaN (inputs never contain NaN, so calibrators
    skip the padding with ``nan``-aware reductions). Rows are in C order of :func:`param_shape`.
    """
    block_size = block_size_value(block_size)
    if axis is None:
        if block_size:
            raise ValueError("block_size: blocked quantization needs an axis (got axis=None)")
        return x.reshape(1, -1)
    a = axis_index(axis, x.ndim, data=data)
    if not block_size:
        return np.moveaxis(x, a, 0).reshape(x.shape[a], -1)
    xm = np.moveaxis(x, a, -1)  # (..., n)
    n = xm.shape[-1]
    nb = -(-n // block_size)
    if nb == 1:  # one (possibly partial) block: a row of n, no padding (a huge block_size allocates nothing)
        return xm.reshape(-1, n)
    if nb * block_size != n:
        pad = np.full(xm.shape[:-1] + (nb * block_size - n,), np.nan, dtype=np.result_type(x.dtype, np.float32))
        xm = np.concatenate([xm.astype(pad.dtype, copy=False), pad], axis=-1)
    return xm.reshape(-1, block_size)  # (prod(...) * nb, B)


def from_groups(values: np.ndarray, shape: tuple, axis: int | None = None, block_size: int = 0) -> np.ndarray:
    """Inverse of :func:`to_groups` for one value per row: returns an array of :func:`param_shape`."""
    values = np.asarray(values)
    if axis is None:
        return values.reshape(())
    block_size = block_size_value(block_size)
    a = axis_index(axis, len(shape))
    if not block_size:
        return values.reshape(shape[a])
    nb = -(-shape[a] // block_size)
    other = shape[:a] + shape[a + 1:]
    return np.moveaxis(values.reshape(other + (nb,)), -1, a)


def _chunks(a: np.ndarray, out: np.ndarray, params: list, axis, block_size, size: int = 1 << 16):  # uniform._CHUNK
    """Yield ``(a_chunk, out_chunk, [param_chunk, ...])`` over pieces of about ``size`` elements.

    Each pass of the caller then runs on cache-resident temporaries (several passes over a chunk
    cost about one pass over memory). ``out`` has ``a``'s shape; chunks are views into it, in C
    order. A parameter that is constant (e.g. every zero point 0) is passed as a scalar.
    """
    params = [np.asarray(p.flat[0]) if p.ndim and p.size and np.all(p == p.flat[0]) else p for p in params]
    if all(p.ndim == 0 for p in params):
        av, ov, pv = a.reshape(-1), out.reshape(-1), params
    else:
        av, pv = align(a, params, axis, block_size)
        ov = out.reshape(av.shape)
    if av.size == 0:
        return
    rows = av.shape[0]
    step = max(1, size // max(1, av.size // rows))
    for i in range(0, rows, step):
        sl = slice(i, i + step)
        yield av[sl], ov[sl], [p[sl] if p.ndim and p.shape[0] > 1 else p for p in pv]
