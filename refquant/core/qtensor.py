"""A quantized tensor as data: codes plus everything needed to read them back.

References
----------
ONNX QuantizeLinear / DequantizeLinear (opset 21): the same (values, scale, zero point, axis,
block size) tuple travels between the two operators.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import int_array, positive_scale
from .granularity import check_param
from .observers import calibrate
from .packing import bits_per_element, storage_bits
from .ranges import QRange, qrange as as_qrange
from .uniform import dequantize, quantize
from ._types import ArrayLike, QRangeLike


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class QTensor:
    """Integer codes with their quantization parameters: ``x ≈ scale · (values − zero_point)``.

    Arrays are copied and made read-only on construction, so a QTensor never changes. The
    constructor validates what it holds: codes and zero points are integers inside ``qrange``,
    the scale is finite and > 0, both have the parameter shape of ``axis`` / ``block_size``.
    """

    values: np.ndarray  # integer codes, qrange.dtype, shape of the original tensor
    scale: np.ndarray  # float; parameter shape: (), (C,) or blocked (see refquant.granularity)
    zero_point: np.ndarray | None  # int, same shape as scale; None: symmetric, 0, not stored
    qrange: QRange  # the codes' integer range
    axis: int | None = None  # None: per-tensor; else the channel / blocking axis
    block_size: int = 0  # 0: per-channel (or per-tensor); B > 0: groups of B along axis

    def __post_init__(self):
        if not isinstance(self.qrange, QRange):
            raise ValueError(f"qrange must be a QRange, got {self.qrange!r}")
        r = self.qrange
        v = int_array(self.values, "values")
        if v.size and (int(v.min()) < r.qmin or int(v.max()) > r.qmax):  # exact ints: no uint64 wrap
            raise ValueError(f"values outside {r} (the qrange): got values in [{v.min()}, {v.max()}]")
        s = check_param(positive_scale(self.scale, "scale"), v.shape, self.axis, self.block_size, "scale", "values")
        object.__setattr__(self, "values", _frozen(v))
        object.__setattr__(self, "scale", _frozen(s))
        if self.zero_point is not None:
            z = check_param(int_array(self.zero_point, "zero_point", r.qmin, r.qmax, f" (qrange {r})"), v.shape,
                            self.axis, self.block_size, "zero_point", "values")
            object.__setattr__(self, "zero_point", _frozen(z))

    @property
    def shape(self) -> tuple:
        return self.values.shape

    def dequantize(self) -> np.ndarray:
        """``scale · (values − zero_point)`` in the scale's dtype, shape of ``values``."""
        zp = 0 if self.zero_point is None else self.zero_point
        return dequantize(self.values, self.scale, zp, axis=self.axis, block_size=self.block_size)

    def storage_bits(self, scale_bits: int | None = None) -> int:
        """Bits to store codes + scales + zero points (``scale_bits`` defaults to the scale's dtype)."""
        sb = self.scale.dtype.itemsize * 8 if scale_bits is None else scale_bits
        nz = 0 if self.zero_point is None else self.zero_point.size
        return storage_bits(self.values.size, self.qrange, n_scales=self.scale.size, scale_bits=sb,
                            n_zero_points=nz)

    def bits_per_element(self, scale_bits: int | None = None) -> float:
        sb = self.scale.dtype.itemsize * 8 if scale_bits is None else scale_bits
        nz = 0 if self.zero_point is None else self.zero_point.size
        return bits_per_element(self.values.size, self.qrange, n_scales=self.scale.size, scale_bits=sb,
                                n_zero_points=nz)


def quantize_tensor(x: ArrayLike, qrange: QRangeLike = "int8", *, symmetric: bool = False, axis: int | None = None,
                    block_size: int = 0, calibration: str = "minmax", symmetric_divisor: str = "qmax",
                    rounding: str = "half_even", rng: np.random.Generator | None = None, **options: object) -> QTensor:
    """Calibrate on ``x`` itself (``calibration``, see :func:`refquant.observers.calibrate`) and quantize.

    Symmetric signed tensors store no zero point (it is 0); everything else stores one per scale.
    """
    r = as_qrange(qrange)
    scale, zp = calibrate(x, r, calibration, symmetric=symmetric, symmetric_divisor=symmetric_divisor, axis=axis,
                          block_size=block_size, **options)
    q = quantize(x, scale, zp, r, axis=axis, block_size=block_size, rounding=rounding, rng=rng)
    keep_zp = not (symmetric and r.signed)
    return QTensor(q, scale, zp if keep_zp else None, r, axis, block_size)
