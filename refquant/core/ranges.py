"""Integer ranges: which codes a b-bit quantized value may take.

A range is fixed by three facts, and every quantizer in refquant takes one explicitly:

=========  ==========================  ====================  ==============================
range      signed                      unsigned              used by
=========  ==========================  ====================  ==============================
full       [-2^(b-1), 2^(b-1) - 1]     [0, 2^b - 1]          ONNX, PyTorch, TFLite activations
narrow     [-(2^(b-1) - 1), 2^(b-1)-1] [1, 2^b - 1]          TFLite int8 weights, TensorRT
=========  ==========================  ====================  ==============================

The narrow ("restricted") signed range drops the most negative code so that the grid is
symmetric around 0: with a symmetric scale, -amax and +amax are both representable.

References
----------
Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", CVPR 2018, section 2.1 (the affine map and its integer range).
ONNX operator spec, QuantizeLinear (saturation ranges per output type).
TFLite quantization spec (https://www.tensorflow.org/lite/performance/quantization_spec):
int8 weights use [-127, 127].

Widths run from 2 to 32 bits. Ranges of 17-32 bits (``int32`` accumulators and biases, a
``(-(2^30 - 1), 2^30 - 1)`` residual stream) are stored in int32 / uint32; their codes are exact in
float64 (|q| <= 2^32 < 2^53), which is where :func:`refquant.core.uniform.quantize` clamps them.
By name, the widths are 2-16 (weight and activation types) and 32 (``"int32"``, ``"uint32"``: the
accumulator and the bias). A ``(qmin, qmax)`` pair — PyTorch's ``quant_min`` / ``quant_max`` — fits in
16 bits, as the mirrored PyTorch APIs (``refquant.mirrors.torch_ops``, ``torch_qat``) compute in
float32 and rely on :func:`qrange` to refuse wider pairs; any other width up to 32 bits, or a wider
custom sub-range (the residual stream's ``QRange(31, limits=(-(2**30 - 1), 2**30 - 1))``), is a
:class:`QRange` built explicitly.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ._types import QRangeLike


@dataclass(frozen=True)
class QRange:
    """The set of integer codes ``{qmin, ..., qmax}`` of a b-bit type.

    Attributes
    ----------
    bits : int
        Bit width b, 2 <= b <= 32.
    signed : bool
        Two's-complement signed (``int<b>``) or unsigned (``uint<b>``).
    narrow : bool
        Drop the lowest code: signed [-(2^(b-1)-1), 2^(b-1)-1], unsigned [1, 2^b-1].
    limits : (int, int) or None
        A custom sub-range ``(qmin, qmax)`` of the type, as PyTorch's ``quant_min`` /
        ``quant_max`` (e.g. ``(0, 127)`` for ``reduce_range``); overrides ``narrow``.
    """

    bits: int
    signed: bool = True
    narrow: bool = False
    limits: tuple | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.bits, (int, np.integer)) or isinstance(self.bits, (bool, np.bool_)):
            raise ValueError(f"bits must be an int, got {self.bits!r}")
        if not 2 <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be in [2, {MAX_BITS}], got {self.bits}")
        for name in ("signed", "narrow"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.limits is not None:
            if not (isinstance(self.limits, tuple) and len(self.limits) == 2 and all(
                    isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in self.limits)):
                raise ValueError(f"limits must be None or a pair of ints (qmin, qmax), got {self.limits!r}")
            lo, hi = int(self.limits[0]), int(self.limits[1])
            if lo > hi:
                raise ValueError(f"limits: qmin > qmax, ({lo}, {hi}) is empty")
            tlo = -(1 << (self.bits - 1)) if self.signed else 0
            thi = (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1
            if lo < tlo or hi > thi:
                raise ValueError(f"limits ({lo}, {hi}) exceed the {self.bits}-bit type's range [{tlo}, {thi}]")

    @property
    def qmin(self) -> int:
        """Smallest code (a Python int)."""
        if self.limits is not None:
            return int(self.limits[0])
        lo = -(1 << (self.bits - 1)) if self.signed else 0
        return lo + 1 if self.narrow else lo

    @property
    def qmax(self) -> int:
        """Largest code (a Python int)."""
        if self.limits is not None:
            return int(self.limits[1])
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def levels(self) -> int:
        """Number of codes, ``qmax - qmin + 1``."""
        return self.qmax - self.qmin + 1

    @property
    def dtype(self) -> np.dtype:
        """Smallest NumPy integer type that stores every code (sub-byte types travel in 8 bits,
        17-31-bit types in 32)."""
        width = 8 if self.bits <= 8 else 16 if self.bits <= 16 else 32
        return np.dtype(f"{'int' if self.signed else 'uint'}{width}")

    @property
    def name(self) -> str:
        """``int<b>``, ``uint<b>``, ``int<b>_narrow`` or ``int<b>[qmin,qmax]`` for custom limits."""
        base = f"{'int' if self.signed else 'uint'}{self.bits}"
        if self.limits is not None:
            return f"{base}[{self.qmin},{self.qmax}]"
        return base + ("_narrow" if self.narrow else "")

    def __str__(self) -> str:
        return self.name if self.limits is not None else f"{self.name}[{self.qmin}, {self.qmax}]"


MAX_BITS = 32  # widest range: int32 / uint32 codes, exact in float64 (the quantizer's buffer for them)
PAIR_BITS = 16  # widest (qmin, qmax) pair that qrange() accepts (module docstring)
_NAME = re.compile(r"^(u?)int(\d+)(_narrow)?$")


def qrange(spec: QRangeLike = "int8", *, narrow: bool | None = None) -> QRange:
    """Build a :class:`QRange` from a type name or return a given one unchanged.

    Parameters
    ----------
    spec : str, (int, int) or QRange
        ``"int<b>"`` / ``"uint<b>"`` for 2 <= b <= 16 or b = 32, optionally with suffix ``"_narrow"``
        (e.g. ``"int4"``, ``"uint8"``, ``"int8_narrow"``); a pair ``(qmin, qmax)`` of up to 16 bits
        for a custom range, stored in the smallest type (at least 8 bits wide for storage) that holds it;
        or a ``QRange``.
    narrow : bool, optional
        Override the narrow flag.

    Examples
    --------
    >>> r = qrange("int4"); (r.qmin, r.qmax)
    (-8, 7)
    >>> r = qrange("int8", narrow=True); (r.qmin, r.qmax)
    (-127, 127)
    """
    if isinstance(spec, QRange):
        r = spec
    elif isinstance(spec, tuple) and len(spec) == 2:
        lo, hi = spec
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in spec):
            raise ValueError(f"qrange: (qmin, qmax) must be ints, got {spec!r}")
        lo, hi = int(lo), int(hi)
        if lo > hi:
            raise ValueError(f"qrange: qmin > qmax, ({lo}, {hi}) is empty")
        signed = lo < 0
        bits = next((b for b in range(2, PAIR_BITS + 1) if (-(1 << (b - 1)) <= lo and hi < (1 << (b - 1)) if signed
                                                  else hi < (1 << b))), None)
        if bits is None:
            raise ValueError(f"qrange: ({lo}, {hi}) does not fit in {PAIR_BITS} bits (a wider custom range "
                             f"is a QRange(bits, limits=(qmin, qmax)), bits <= {MAX_BITS})")
        r = QRange(bits, signed, False, (lo, hi))
    elif isinstance(spec, str):
        m = _NAME.match(spec)
        if m is None:
            raise ValueError(f"qrange: unknown integer type name {spec!r}; expected e.g. 'int8', 'uint4', 'int8_narrow'")
        if not (2 <= int(m.group(2)) <= 16 or int(m.group(2)) == MAX_BITS):
            raise ValueError(f"qrange: {spec!r}: bits must be in [2, 16] or {MAX_BITS}, got {int(m.group(2))}")
        r = QRange(int(m.group(2)), signed=m.group(1) == "", narrow=m.group(3) is not None)
    else:
        raise ValueError(f"qrange: expected a type name, (qmin, qmax) or QRange, got {spec!r}")
    if narrow is not None and not isinstance(narrow, (bool, np.bool_)):
        raise ValueError(f"narrow must be None or a bool, got {narrow!r}")
    if narrow is not None and narrow != r.narrow and r.limits is None:
        r = QRange(r.bits, r.signed, narrow)
    return r
