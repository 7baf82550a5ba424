"""One registry of weight formats: name → quantize, and the storage it costs, counted one way.

Modelled on llama.cpp's ``type_traits`` table (``ggml/src/ggml.c``: one row per ``ggml_type`` with its
block size, bytes per block and ``from_float`` / ``to_float``). Every consumer — the CLI, the demo,
the PTQ recipes and the mixed-precision search — quantizes through :func:`quantize` and counts bits
through the returned tensor's ``storage_bits()`` (or, without quantizing, :func:`storage_bits`,
which must give the same number: a test checks it on every format).

A weight is a 2-D array ``(rows, K)``: a linear layer's ``(out, in)``. "Per row" is per output
channel; groups run along the input dimension K, the last axis, as in GPTQ, AWQ and ggml.

Every quantized tensor returned honours one informal contract (no base class)::

    t.shape            the original shape
    t.dequantize()     float reconstruction, shape t.shape
    t.storage_bits()   every stored bit: codes, scales, zero points, codebooks, exponents

=============  ==========  ========================================  =====================================
name           family      stored per row of K (n = rows · K)        defaults
=============  ==========  ========================================  =====================================
int2 … int8    uniform     b-bit codes, a float32 scale per group,   ``group_size=0`` (per row; None: per
                           a b-bit zero point per group if affine    tensor), ``symmetric=True``,
                                                                     ``calibration="minmax"``
nf4            nf4         4-bit codes, float32 absmax per block     ``block_size=64`` (of the flattened
                           (double quant: int8 absmax + float32 per  tensor, as bitsandbytes),
                           256 + one float32 offset)                 ``double_quant=False``
fp8_e4m3       minifloat   8-bit codes, a float32 scale per group    ``group_size=0`` (per row)
fp8_e5m2       minifloat   8-bit codes, a float32 scale per group    ``group_size=0``
fp4_e2m1       minifloat   4-bit codes, a float32 scale per group    ``group_size=32``
kmeans         kmeans      ⌈log2 k⌉-bit indices + a float32 codebook  ``bits=4`` (k = 2^bits, per tensor)
log2           log         b-bit sign+exponent codes + 8-bit e_max   ``bits=4``
mxfp8_e4m3 …   mx          element codes + an E8M0 byte per 32       ``scale_rounding="floor"``,
mxfp4, mxint8                                                        ``element_rounding="half_even"``
nvfp4          nvfp4       E2M1 codes + an E4M3 byte per 16 + one    (none)
                           float32 per-tensor scale
q8_0 … q5_1    ggml        blocks of 32: the ggml struct's bytes     (none)
q2_K … q6_K,   ggml        blocks of 256 (iq4_nl: 32), byte-exact    ``imatrix=None`` (llama.cpp's
iq4_nl, iq4_xs             with ggml-quants.c                        importance matrix, one per column)
ggml_mxfp4     ggml        llama.cpp's MXFP4 block: 17 bytes per 32  (none)
                           (E8M0 byte + E2M1 nibbles; ggml type
                           "mxfp4", ties toward zero, log2f scale)
=============  ==========  ========================================  =====================================

``mxfp4`` (OCP, :mod:`.mx`) and ``ggml_mxfp4`` both store 4.25 bits per weight; they differ in a few
bytes (ggml rounds ties toward zero and takes float32 ``log2f``) and in the nibble order. The IQ1 / IQ2 /
IQ3 grid types are dequantize-only (:mod:`.iquants`), so they have no row here.

References
----------
llama.cpp ``ggml/src/ggml.c: type_traits`` (the table) and ``ggml-common.h`` (block structs).
Dettmers et al., "QLoRA", NeurIPS 2023, §3 (NF4, double quantization: 4.127 bits per parameter).
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..core._checks import float_array
from ..core._types import ArrayLike
from ..core.qtensor import quantize_tensor
from ..core.ranges import qrange as as_qrange
from . import ggml, kquants
from .codebook import CodebookTensor, absmax_scale, codebook_quantize, index_bits
from .logquant import log_quantize
from .minifloat import minifloat_codebook, minifloat_format
from .mx import ELEMENTS as MX_ELEMENTS, mx_quantize
from .nf4 import nf4_quantize
from .nvfp4 import nvfp4_quantize
from .weight_sharing import share_weights

SCALE_BITS = 32  # every scale, absmax and codebook entry is stored as float32


@dataclass(frozen=True)
class Format:
    """One row of the registry."""

    name: str  # the key: "int4", "nf4", "q4_0", ...
    family: str  # "uniform", "nf4", "minifloat", "kmeans", "log", "ggml"
    summary: str  # one line for --help and tables
    defaults: MappingProxyType  # the options it takes and their default values
    quantize: Callable  # (w (rows, K) float, **options) -> quantized tensor
    storage_bits: Callable  # (shape (rows, K), **options) -> int, without quantizing
    reference: str  # paper section or mirrored code
    k_multiple: int = 1  # K (the row length) must be a multiple of this: ggml's block size


def _groups(shape, group_size) -> int:
    """Number of scales: one per tensor (None), per row (0) or per group of ``group_size`` along K."""
    rows, k = shape
    if group_size is None:
        return 1
    return rows if group_size == 0 else rows * math.ceil(k / group_size)


def _granularity(group_size):
    """(axis, block_size) of the core's granularity for a registry ``group_size``."""
    if group_size is None:
        return None, 0
    return (0, 0) if group_size == 0 else (1, int(group_size))


def _check_group_size(group_size, name="group_size"):
    if group_size is None:
        return
    if not isinstance(group_size, (int, np.integer)) or isinstance(group_size, bool) or group_size < 0:
        raise ValueError(f"{name} must be None (per tensor), 0 (per row) or a positive int, got {group_size!r}")


def _uniform(bits: int) -> Format:
    r = as_qrange(f"int{bits}")

    def q(w, *, group_size=0, symmetric=True, calibration="minmax"):
        _check_group_size(group_size)
        axis, block = _granularity(group_size)
        return quantize_tensor(w, r, symmetric=symmetric, axis=axis, block_size=block, calibration=calibration)

    def bits_of(shape, *, group_size=0, symmetric=True, calibration="minmax"):
        _check_group_size(group_size)
        g = _groups(shape, group_size)
        return shape[0] * shape[1] * bits + g * SCALE_BITS + (0 if symmetric else g * bits)

    return Format(f"int{bits}", "uniform", f"{bits}-bit integers, scale per row / group (round half to even)",
                  MappingProxyType(dict(group_size=0, symmetric=True, calibration="minmax")), q, bits_of,
                  "Jacob et al. 2018 §2; Frantar et al. 2023 (GPTQ) §5 for groups")


def _minifloat(name: str, fmt: str, default_group) -> Format:
    f = minifloat_format(fmt)
    top = float(minifloat_codebook(fmt).max())

    def q(w, *, group_size=default_group):
        _check_group_size(group_size)
        axis, block = _granularity(group_size)
        s = absmax_scale(w, top, axis=axis, block_size=block)  # max|x| lands on the largest finite value
        idx = codebook_quantize(w, minifloat_codebook(fmt), scale=s, axis=axis, block_size=block)
        return CodebookTensor(idx, minifloat_codebook(fmt), scale=s, axis=axis, block_size=block, fixed_codebook=True)

    def bits_of(shape, *, group_size=default_group):
        _check_group_size(group_size)
        return shape[0] * shape[1] * f.bits + _groups(shape, group_size) * SCALE_BITS

    return Format(name, "minifloat", f"{fmt} codes times an absmax scale per row / group (round to nearest even)",
                  MappingProxyType(dict(group_size=default_group)), q, bits_of,
                  "OCP 8-bit Floating Point Specification (OFP8) v1.0; ONNX float8e4m3fn / float4e2m1")


def _nf4() -> Format:
    def bits_of(shape, *, block_size=64, double_quant=False):
        n = shape[0] * shape[1]
        nb = math.ceil(n / block_size)
        return 4 * n + (8 * nb + SCALE_BITS * math.ceil(nb / 256) + SCALE_BITS if double_quant else SCALE_BITS * nb)

    return Format("nf4", "nf4", "4-bit NormalFloat, absmax per block of 64 (bitsandbytes layout)",
                  MappingProxyType(dict(block_size=64, double_quant=False)),
                  lambda w, *, block_size=64, double_quant=False: nf4_quantize(w, block_size, double_quant=double_quant),
                  bits_of, "Dettmers et al. 2023 (QLoRA) §3; bitsandbytes quantize_4bit")


def _kmeans() -> Format:
    def bits_of(shape, *, bits=4):
        k = 2 ** bits  # an upper bound: fewer distinct values store a smaller codebook
        return shape[0] * shape[1] * index_bits(k) + SCALE_BITS * k

    return Format("kmeans", "kmeans", "k = 2^bits shared values per tensor (1-D k-means; Deep Compression)",
                  MappingProxyType(dict(bits=4)), lambda w, *, bits=4: share_weights(w, 2 ** bits), bits_of,
                  "Han et al. 2016 (Deep Compression) §3")


def _log2() -> Format:
    return Format("log2", "log", "sign and power-of-two exponent per value, one exponent e_max per tensor",
                  MappingProxyType(dict(bits=4)), lambda w, *, bits=4: log_quantize(w, bits),
                  lambda shape, *, bits=4: shape[0] * shape[1] * bits + 8,
                  "Miyashita et al. 2016, 'Convolutional Neural Networks using Logarithmic Data Representation'")


def _ggml(qtype: str) -> Format:
    nbytes = ggml.BLOCK_BYTES[qtype]

    def bits_of(shape):
        if shape[1] % ggml.QK:
            raise ValueError(f"w: {qtype} needs rows that are a multiple of {ggml.QK}, got K={shape[1]}")
        return shape[0] * shape[1] // ggml.QK * nbytes * 8

    return Format(qtype, "ggml", f"llama.cpp {qtype}: blocks of 32, {nbytes} bytes each ({8 * nbytes / 32:g} bits/weight)",
                  MappingProxyType({}), lambda w: ggml.quantize_tensor(w, qtype), bits_of,
                  f"ggml-quants.c: quantize_row_{qtype}_ref", ggml.QK)


MX_NAMES = {"mxfp8_e4m3": "fp8_e4m3", "mxfp8_e5m2": "fp8_e5m2", "mxfp6_e2m3": "fp6_e2m3",
            "mxfp6_e3m2": "fp6_e3m2", "mxfp4": "fp4_e2m1", "mxint8": "int8"}


def _mx(name: str) -> Format:
    elem = MX_NAMES[name]
    bits = MX_ELEMENTS[elem].bits

    def q(w, *, scale_rounding="floor", element_rounding="half_even"):
        return mx_quantize(w, elem, scale_rounding=scale_rounding, element_rounding=element_rounding)

    def bits_of(shape, *, scale_rounding="floor", element_rounding="half_even"):
        return shape[0] * shape[1] * bits + shape[0] * math.ceil(shape[1] / 32) * 8  # one E8M0 byte per 32

    return Format(name, "mx", f"OCP MX {elem} codes, E8M0 power-of-two scale per 32 along K ({bits + 0.25:g} bits/weight)",
                  MappingProxyType(dict(scale_rounding="floor", element_rounding="half_even")), q, bits_of,
                  "OCP Microscaling Formats v1.0 §6.3; torchao mx_tensor.to_mx")


def _nvfp4() -> Format:
    return Format("nvfp4", "nvfp4", "FP4 E2M1 codes, E4M3 scale per 16 along K, one float32 per-tensor scale",
                  MappingProxyType({}), lambda w: nvfp4_quantize(w),
                  lambda shape: shape[0] * shape[1] * 4 + shape[0] * math.ceil(shape[1] / 16) * 8 + 32,
                  "NVIDIA NVFP4; torchao nvfp4_tensor.nvfp4_quantize")


def _kquant(qtype: str) -> Format:
    nbytes, bs = kquants.BLOCK_BYTES[qtype], kquants.BLOCK_SIZE[qtype]

    def bits_of(shape, *, imatrix=None):
        if shape[1] % bs:
            raise ValueError(f"w: {qtype} needs rows that are a multiple of {bs}, got K={shape[1]}")
        return shape[0] * shape[1] // bs * nbytes * 8

    return Format(qtype, "ggml", f"llama.cpp {qtype}: blocks of {bs}, {nbytes} bytes each ({8 * nbytes / bs:g} bits/weight)",
                  MappingProxyType(dict(imatrix=None)),
                  lambda w, *, imatrix=None: ggml.quantize_tensor(w, qtype, imatrix), bits_of,
                  f"ggml-quants.c: quantize_row_{qtype}_ref; quantize_{qtype} with an importance matrix", bs)


def _ggml_mxfp4() -> Format:
    t = ggml.TYPE_TRAITS["mxfp4"]  # 17 bytes per 32: one E8M0 byte + 16 bytes of E2M1 nibbles

    def bits_of(shape):
        if shape[1] % t.block_size:
            raise ValueError(f"w: ggml_mxfp4 needs rows that are a multiple of {t.block_size}, got K={shape[1]}")
        return shape[0] * shape[1] // t.block_size * t.type_size * 8

    return Format("ggml_mxfp4", "ggml", f"llama.cpp mxfp4: E2M1 codes, E8M0 scale per 32, ties toward zero "
                  f"({t.bits_per_weight:g} bits/weight)", MappingProxyType({}),
                  lambda w: ggml.quantize_tensor(w, "mxfp4"), bits_of, "ggml-quants.c: quantize_row_mxfp4_ref",
                  t.block_size)


def _table() -> dict:
    rows = [_uniform(b) for b in range(2, 9)]
    rows += [_nf4(), _minifloat("fp8_e4m3", "float8e4m3fn", 0), _minifloat("fp8_e5m2", "float8e5m2", 0),
             _minifloat("fp4_e2m1", "float4e2m1", 32), _kmeans(), _log2()]
    rows += [_mx(n) for n in MX_NAMES] + [_nvfp4()]
    rows += [_ggml(t) for t in ggml.BLOCK_BYTES] + [_kquant(t) for t in kquants.BLOCK_BYTES] + [_ggml_mxfp4()]
    return {f.name: f for f in rows}


FORMATS = MappingProxyType(_table())  # name -> Format, in a fixed order
FORMAT_NAMES = tuple(FORMATS)


def get_format(name: str) -> Format:
    """The registry row ``name``; ValueError listing the names otherwise."""
    if not isinstance(name, str) or name not in FORMATS:
        raise ValueError(f"format: unknown {name!r}; expected one of {', '.join(FORMAT_NAMES)}")
    return FORMATS[name]


def check_options(format: str, options: Mapping[str, Any]) -> dict:
    """The options of ``format`` merged over its defaults; ValueError naming an unknown option."""
    return _options(get_format(format), dict(options))


def _options(f: Format, options: dict) -> dict:
    unknown = set(options) - set(f.defaults)
    if unknown:
        takes = ", ".join(f.defaults) or "no options"
        raise ValueError(f"{sorted(unknown)[0]}: not an option of format {f.name!r} (it takes {takes})")
    return {**f.defaults, **options}


def _shape(shape, name="shape") -> tuple:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"{name}: a weight must be 2-D (rows, K) with rows, K >= 1, got {shape}")
    return shape


def quantize(w: ArrayLike, format: str, **options: Any) -> Any:
    """Quantize a weight ``w`` (rows, K) in the registry format ``format``.

    Parameters
    ----------
    w : ndarray of float, shape (rows, K) — a linear layer's (out, in); finite
    format : str — a key of :data:`FORMATS`
    **options : the format's options (see the module table); unknown ones raise ValueError

    Returns
    -------
    A quantized tensor with ``.shape``, ``.dequantize()`` and ``.storage_bits()``.
    """
    f = get_format(format)
    opts = _options(f, options)
    wa = float_array(w, "w")
    _shape(wa.shape, "w")
    if not np.all(np.isfinite(wa)):
        raise ValueError("w must be finite (NaN or Inf found): a weight format has no code for them")
    return f.quantize(wa, **opts)


def storage_bits(format: str, shape: Sequence[int], **options: Any) -> int:
    """Bits that ``format`` stores for a weight of ``shape`` (rows, K), without quantizing anything.

    Equals ``quantize(w, format, **options).storage_bits()`` for every ``w`` of that shape (for
    ``kmeans`` an upper bound, reached when ``w`` has at least 2^bits distinct values).
    """
    f = get_format(format)
    return int(f.storage_bits(_shape(shape), **_options(f, options)))


def bits_per_weight(format: str, shape: Sequence[int], **options: Any) -> float:
    """:func:`storage_bits` divided by the number of weights."""
    rows, k = _shape(shape)
    return storage_bits(format, (rows, k), **options) / (rows * k)
