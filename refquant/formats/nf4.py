"""NF4 (4-bit NormalFloat, QLoRA): a 16-value codebook for normally distributed weights, scaled per
block by the block's absolute maximum.

Encoding, as bitsandbytes' ``quantize_4bit(quant_type="nf4")`` (CUDA kernel ``kQuantizeBlockwise``)::

    absmax_b = max |x| over block b (blocks of 64 consecutive elements of the flattened tensor)
    v        = x * float32(1 / absmax_b)                           (float32 multiply by the reciprocal)
    code     = number of thresholds t_k with v > t_k                (t_k = float32 midpoints of the table;
                                                                     a value exactly on t_k goes down)
    x̂        = NF4[code] * absmax_b

Packing: two codes per byte, the **first element in the high nibble** (bitsandbytes; the opposite of
ONNX int4); an odd count pads the last low nibble with code 7 (the value 0.0). An all-zero block
stores absmax 0 and codes 7. Checked byte for byte against bitsandbytes 0.50.2 (CPU backend), values on thresholds included.

Double quantization (QLoRA §3): the float32 absmax values are themselves quantized, after
subtracting their mean, to 8 bits in blocks of 256 — 32/64 = 0.5 bit per weight becomes
8/64 + 32/(64·256) ≈ 0.127. QLoRA and bitsandbytes use an 8-bit "dynamic" float map for that
step; refquant uses symmetric int8 (absmax/127) and says so: this part is not byte-exact.

References
----------
Dettmers et al., "QLoRA: Efficient Finetuning of Quantized LLMs", NeurIPS 2023, §3 (NF4, eq. 4;
double quantization) and appendix E. bitsandbytes ``functional.py: create_normal_map`` and
``csrc/kernels.cu: dQuantizeNF4, kQuantizeBlockwise``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core._checks import float_array, int_value, real_value, to_float
from ..core.uniform import _CHUNK, quantize
from ..core._types import ArrayLike
from .codebook import codebook_quantize

# bitsandbytes' table (functional.py / kernels.cu nf4_dequantization_lut), float32
_NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                 -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                 0.7229568362236023, 1.0], dtype=np.float32)
# the decision tree of dQuantizeNF4: float32 midpoints of neighbouring table values
_THRESHOLDS = ((_NF4[:-1].astype(np.float64) + _NF4[1:]) / 2).astype(np.float32)


def nf4_codebook() -> np.ndarray:
    """The 16 NF4 values as bitsandbytes tabulates them (float32, sorted; code k is value k)."""
    return _NF4.copy()


def nf4_derive(offset: float = 0.9677083) -> np.ndarray:
    """Rebuild the NF4 values from normal quantiles (bitsandbytes ``create_normal_map``).

    8 positive values ``Φ⁻¹(p)`` for p on ``linspace(offset, 0.5, 9)[:-1]``, 7 negative values
    ``−Φ⁻¹(p)`` for p on ``linspace(offset, 0.5, 8)[:-1]``, and an exact 0; all divided by the
    largest. Asymmetric (8 positive, 7 negative) so that 0 is exactly representable with 4 bits.
    ``offset`` = (1 − 1/(2·15) + 1 − 1/(2·16)) / 2: the mean of the outermost quantile centres for
    15 and 16 levels. Agrees with the table to ~1e-7 (the table was computed in float32).
    """
    from scipy.stats import norm

    offset = real_value(offset, "offset", 0.5, 1, lo_open=True, hi_open=True)
    if not 0.5 < np.float32(offset) < 1:  # the quantiles are taken on a float32 grid, as bitsandbytes does
        raise ValueError(f"offset={offset!r} rounds to 0.5 or 1 in float32; the quantiles would be 0 or Inf")
    pos = norm.ppf(np.linspace(offset, 0.5, 9, dtype=np.float32)[:-1].astype(np.float64))
    neg = -norm.ppf(np.linspace(offset, 0.5, 8, dtype=np.float32)[:-1].astype(np.float64))
    v = np.sort(np.concatenate([pos, [0.0], neg]))
    return v / v.max()


@dataclass(frozen=True)
class NF4Tensor:
    """A tensor in NF4: packed codes (bitsandbytes order) plus per-block absmax."""

    packed: np.ndarray  # uint8, ceil(n / 2) bytes: element 2j in the high nibble of byte j
    absmax: np.ndarray  # float32, (n_blocks,): the scales used for dequantization
    shape: tuple  # shape of the original tensor
    block_size: int = 64  # elements per absmax block (of the flattened tensor)
    double_quant: tuple | None = None  # (int8 codes, float32 scale per 256 absmax, float32 offset)

    def __post_init__(self):
        if not isinstance(self.shape, tuple):
            raise ValueError(f"shape must be a tuple, got {self.shape!r}")
        n = int(np.prod([int_value(d, "shape", 0) for d in self.shape], dtype=object))
        bs = int_value(self.block_size, "block_size", 1)
        p = np.asarray(self.packed)
        if p.dtype != np.uint8 or p.shape != (-(-n // 2),):
            raise ValueError(f"packed: expected {-(-n // 2)} uint8 bytes for shape {self.shape}, "
                             f"got {p.dtype} {p.shape}")
        a = np.asarray(self.absmax)
        if a.dtype != np.float32 or a.shape != (-(-n // bs),) or not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ValueError(f"absmax: expected {-(-n // bs)} finite float32 values >= 0, got {a.dtype} {a.shape}")
        if self.double_quant is not None and not (isinstance(self.double_quant, tuple) and len(self.double_quant) == 3):
            raise ValueError("double_quant must be None or (codes, scales, offset)")

    def codes(self) -> np.ndarray:
        """Unpacked codes, uint8, shape of the original tensor."""
        n = int(np.prod(self.shape))
        pairs = np.stack([self.packed >> 4, self.packed & 0x0F], axis=1).reshape(-1)
        return pairs[:n].reshape(self.shape)

    def dequantize(self) -> np.ndarray:
        """``NF4[code] · absmax`` in float32, shape of the original tensor."""
        n = int(np.prod(self.shape))
        out = np.empty(n, np.float32)
        table = _NF4.astype(np.float32)
        k = max(1, _CHUNK // self.block_size)
        step = (k + k % 2) * self.block_size  # whole blocks, an even number of codes: whole bytes
        for i in range(0, n, step):  # in chunks: no full-size code, block-index or gather temporaries
            p = self.packed[i // 2:(i + step) // 2]
            codes = np.stack([p >> 4, p & 0x0F], axis=1).reshape(-1)[:min(step, n - i)]
            am = np.repeat(self.absmax[i // self.block_size:(i + step) // self.block_size + 1], self.block_size)
            np.multiply(table[codes], am[:codes.size], out=out[i:i + codes.size])
        return out.reshape(self.shape)

    def storage_bits(self) -> int:
        """4 bits per element + one float32 absmax per block (double quantization: int8 absmax codes,
        a float32 scale per 256 of them and one float32 offset)."""
        n = int(np.prod(self.shape))
        if self.double_quant is None:
            return 4 * n + 32 * self.absmax.size
        q, s, _ = self.double_quant
        return 4 * n + 8 * q.size + 32 * s.size + 32

    def bits_per_element(self) -> float:
        return self.storage_bits() / int(np.prod(self.shape))


def nf4_quantize(x: ArrayLike, block_size: int = 64, *, double_quant: bool = False) -> NF4Tensor:
    """Quantize ``x`` (any shape, flattened in C order) to NF4 with one absmax per ``block_size`` elements.

    The last block may be partial. With ``double_quant``, the absmax values are stored as int8 in
    groups of 256 after subtracting their mean, and dequantization uses the reconstructed absmax.
    """
    block_size = int_value(block_size, "block_size", 1, 2**31)
    xa = float_array(x, "x")
    xa = to_float(xa, np.float32, "x")
    flat = xa.reshape(-1)
    n = flat.size
    if n == 0:
        raise ValueError("x is empty; there is no block to quantize")
    nb = -(-n // block_size)
    absmax = np.empty(nb, np.float32)
    packed = np.empty(-(-n // 2), np.uint8)
    # an even number of whole blocks per chunk (two codes per byte): a chunk's temporaries stay in
    # cache and the only full-size arrays are the packed codes and absmax returned
    k = max(1, _CHUNK // block_size)
    step = (k + k % 2) * block_size
    for i in range(0, n, step):
        fc = flat[i:i + step]
        b0 = i // block_size
        am = np.maximum.reduceat(np.abs(fc), np.arange(0, fc.size, block_size))  # a last block may be partial
        if not np.all(np.isfinite(am)):
            raise ValueError("x must be finite: the block absmax would be infinite")
        absmax[b0:b0 + am.size] = am
        with np.errstate(divide="ignore", over="ignore"):  # all-zero block: v = 0 -> code 7
            recip = np.where(am > 0, np.float32(1) / am, np.float32(0))
        recip = np.repeat(recip, block_size)[:fc.size]
        with np.errstate(over="ignore", invalid="ignore"):
            v = fc * recip  # float32, as the kernel
        # a block whose absmax is subnormal has 1/absmax = Inf: its non-zero values become ±Inf and take the
        # end codes (±1 · absmax), as in the float32 kernel; its zeros give 0 · Inf = NaN there, kept at code 7 here
        v = np.where(fc == 0, np.float32(0), v)
        codes = codebook_quantize(v, _NF4, thresholds=_THRESHOLDS.astype(np.float64), ties="down")
        if codes.size % 2:
            codes = np.append(codes, np.uint8(7))  # the missing element is padded with 0.0 (code 7)
        packed[i // 2:i // 2 + codes.size // 2] = (codes[0::2] << 4) | codes[1::2]
    dq = None
    if double_quant:
        offset = np.float32(absmax.mean())
        c = absmax - offset
        g = -(-nb // 256)
        cp = np.zeros(g * 256, np.float32)
        cp[:nb] = c
        s = np.abs(cp.reshape(g, 256)).max(axis=1) / np.float32(127)
        s = np.where(s > 0, s, np.float32(1))
        # symmetric int8 in [-127, 127], round half to even, one scale per group of 256: the core quantizer
        q = quantize(cp.reshape(g, 256), s, 0, "int8_narrow", axis=0).reshape(-1)[:nb]
        dq = (q, s.astype(np.float32), offset)
        absmax = (q.astype(np.float32) * np.repeat(s, 256)[:nb] + offset).astype(np.float32)
    return NF4Tensor(packed, absmax.astype(np.float32), xa.shape, int(block_size), dq)
