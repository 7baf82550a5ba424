"""GPTQ and AWQ checkpoint layouts, bit for bit: refquant's codes, scales and zero points packed into
the int32 words of a GPTQ (v1 / v2) or AWQ-GEMM checkpoint, unpacked, and dequantized as the
references' torch fallbacks compute it.

refquant holds a quantized (out, in) weight as unsigned ``codes`` (out, in), ``scale`` and
``zero_point`` (out, n_groups) and ``g_idx`` (in,) — the fields of :class:`refquant.ptq.gptq.GPTQResult`
— with ``w ≈ scale[:, g_idx] · (codes − zero_point[:, g_idx])``. The checkpoints store (in, out)
matrices, the transpose of refquant's::

    GPTQ             qweight int32   (in·bits/32, out)        codes, packed DOWN the input dimension
                     qzeros  int32   (n_groups, out·bits/32)  zero points, packed ALONG the output dimension
                     scales  float16 (n_groups, out)
                     g_idx   int32   (in,)                    the group of every input channel
    AWQ GEMM         qweight int32   (in, out/8)              codes, packed along the output dimension,
    (4 bits only)    qzeros  int32   (in/group_size, out/8)   interleaved; zero points packed the same
                     scales  float16 (in/group_size, out)

**GPTQ words.** 32 consecutive values v0 … v31 (32 input channels of one output channel in ``qweight``;
32 output channels of one group in ``qzeros``) make one bit stream of 32·bits bits, least significant
first — v_i in stream bits [i·bits, (i+1)·bits) — cut into ``bits`` words, word w holding stream bits
[32w, 32w + 32). At 2, 4 and 8 bits a word holds 32/bits whole values::

    4 bits   bit 31                                                  bit 0
             | v7    | v6    | v5    | v4    | v3    | v2    | v1    | v0    |   codes 0,1,…,7 -> 0x76543210
    2 bits   | v15 | v14 | … | v1 | v0 |   2 bits each          8 bits: | v3 | v2 | v1 | v0 |, a byte each

At 3 bits the 32 values fill three words exactly and two straddle a boundary (AutoGPTQ's ``pack``:
ten values, one split, ten, one split, ten)::

    word 0   | v10 bits 1-0 | v9    | … | v1  | v0  |        v0 … v9 at bits 0, 3, …, 27
               31  30         29-27       5-3   2-0
    word 1   | v21 bit 0 | v20   | … | v11 | v10 bit 2 |     v11 … v20 at bits 1, 4, …, 28
               31          30-28       3-1   0
    word 2   | v31   | … | v22 | v21 bits 2-1 |             v22 … v31 at bits 2, 5, …, 29
               31-29       4-2   1  0

— the same stream rule, which is also :mod:`refquant.core.packing`'s (ONNX's) little-endian sub-byte
layout, read as little-endian int32 words.

**AWQ words.** One word holds 8 consecutive output channels e0 … e7 of one input channel; nibble i
holds e[AWQ_ORDER[i]], AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)::

             | e7    | e5    | e3    | e1    | e6    | e4    | e2    | e0    |   codes 0,1,…,7 -> 0x75316420
    unpack:  e_k = nibble AWQ_REVERSE_ORDER[k],  AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)

so that the CUDA kernel's ``w & 0x000F000F`` picks the pair (e0, e1) as one half2, ``w & 0x00F000F0``
(e2, e3), and after one shift by 8 (e4, e5), (e6, e7) (``dequantize_s4_to_fp16x2``). AWQ stores the zero
points as they are.

**GPTQ zero points.** v2 (GPTQModel, ``qzero_format=2``, checkpoint_format ``"gptq_v2"``) stores z.
v1 (AutoGPTQ, GPTQ-for-LLaMa, ``"gptq"``) stores z − 1, and its readers add 1 after masking. A zero
point of 0 (an asymmetric group whose weights are all ≥ 0; a symmetric one is always 2^(bits−1)) has no
v1 field. What the references do with it (``underflow=`` of :func:`pack_gptq`):

* AutoGPTQ ``QuantLinear.pack``: ``zeros -= 1`` on float zeros; ``astype(np.uint32)`` turns −1.0 into
  0xFFFFFFFF (x86-64), and ``qzeros |= z << shift`` sets every bit from the field's first bit to bit 31
  of its word: that field and every later field of the word read 2^bits − 1 (``"autogptq"``).
* field-wise, modulo 2^bits: the field alone holds 2^bits − 1 (``"wrap"``). A field-wise v1 → v2
  (GPTQModel's at 3 bits) reads 0 back, and so does :func:`unpack_gptq`; AutoGPTQ's readers add 1
  without wrapping and use zero 2^bits (:func:`dequantize_gptq` mirrors them); GPTQModel's word-wise
  v1 → v2 at 2, 4, 8 bits reads 0 and carries 1 into the next field (:func:`gptq_v1_to_v2`, ``"word"``).
* GPTQModel exports v1 at 2, 4, 8 bits by subtracting 1 from every field with one int32 subtraction
  per word (``0x11111111`` at 4 bits): a 0 field borrows from the next (:func:`gptq_v2_to_v1`, ``"word"``).
* ``"raise"`` (default): refused, with the groups named.

**Dequantization** mirrors the torch fallbacks (AutoGPTQ ``qlinear_cuda.QuantLinear.forward``,
GPTQModel ``PackableQuantLinear.dequantize_weight``, AutoAWQ ``dequantize_gemm``): the integer q − z
(int8, int16 at 8 bits) times the float16 scale, in float16. The product of an integer of at most 9
bits and an 11-bit significand is exact in float32, so it is rounded once, to float16 — as torch's CPU
half multiply does. The result is returned (out, in), the transpose of the references' (in, out).
The references' packers recompute the codes from the float weight (``round((W + z·s) / fp16(s))``;
GPTQModel clamps, AutoGPTQ and AutoAWQ do not); these functions take the codes.

References
----------
AutoGPTQ ``auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py``, ``qlinear_cuda.py: QuantLinear.pack,
forward``; GPTQModel ``gptqmodel/nn_modules/qlinear/__init__.py: PackableQuantLinear.pack_original,
pack_block, dequantize_weight``, ``gptqmodel/utils/model.py: convert_gptq_v1_to_v2_format_module,
convert_gptq_v2_to_v1_format_module, _shift_gptq_qzeros``; AutoAWQ ``awq/modules/linear/gemm.py:
WQLinear_GEMM.from_linear``, ``awq/utils/packing_utils.py: AWQ_ORDER, AWQ_REVERSE_ORDER, unpack_awq,
reverse_awq_order, dequantize_gemm``; llm-awq ``awq/kernels/csrc/quantization/dequantize.cuh``.
"""
from __future__ import annotations

import numpy as np

from ..core._checks import finite_array, int_array, int_value
from ..core._types import ArrayLike

BITS = (2, 3, 4, 8)
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)
ZEROS_FORMATS = ("v1", "v2")
UNDERFLOW = ("raise", "wrap", "autogptq")
ARITHMETIC = ("field", "word")
_MASK = 0xFFFFFFFF
_U32_MINUS_ONE = 0xFFFFFFFF  # np.float32(-1).astype(np.uint32) on x86-64, as AutoGPTQ's pack meets it
# GPTQModel's whole-word offsets, 1 in every field; at 3 bits one per word of a triple, as GPTQModel
# had them before its field-wise shift (bits 2,5,…,29 | 1,4,…,31 | 0,3,…,30 — words 0 and 2 swapped)
_WORD_ONES = {2: (0x55555555,), 4: (0x11111111,), 8: (0x01010101,),
              3: (0b00100100100100100100100100100100, 0b10010010010010010010010010010010,
                  0b01001001001001001001001001001001)}


# ---------------------------------------------------------------- the bit stream
def _pack_words(u, bits):
    """Values (..., n), n % 32 == 0, any uint32 -> words (..., n·bits/32) uint32.

    Word w gets ``(v << o) mod 2^32`` and, for a straddling value, word w+1 its spilled high bits
    masked to the field — AutoGPTQ's uint32 operations for any uint32 v (0xFFFFFFFF included)."""
    u = np.asarray(u, np.uint64).reshape(np.shape(u)[:-1] + (-1, 32))
    words = np.zeros(u.shape[:-1] + (bits,), np.uint64)
    for i in range(32):
        w, o = divmod(i * bits, 32)
        words[..., w] |= u[..., i] << np.uint64(o)
        if o + bits > 32:  # the 3-bit v10 and v21
            words[..., w + 1] |= (u[..., i] >> np.uint64(32 - o)) & np.uint64(2 ** (o + bits - 32) - 1)
    return (words & np.uint64(_MASK)).astype(np.uint32).reshape(u.shape[:-2] + (-1,))


def _unpack_words(words, bits):
    """uint32 words (..., m), m % bits == 0 -> the values (..., 32·m/bits) as int64."""
    w = np.asarray(words, np.uint64).reshape(np.shape(words)[:-1] + (-1, bits))
    out = np.empty(w.shape[:-1] + (32,), np.uint64)
    for i in range(32):
        k, o = divmod(i * bits, 32)
        v = w[..., k] >> np.uint64(o)
        if o + bits > 32:
            v |= w[..., k + 1] << np.uint64(32 - o)
        out[..., i] = v & np.uint64(2 ** bits - 1)
    return out.astype(np.int64).reshape(w.shape[:-2] + (-1,))


def _pack_run_ref(v, bits):
    """Loop twin of :func:`_pack_words` for one run of 32 Python ints: AutoGPTQ ``pack``'s loop."""
    out = [0] * bits
    if bits != 3:
        for row in range(bits):
            for j in range(32 // bits):
                out[row] |= v[row * (32 // bits) + j] << (bits * j)
        return [o & _MASK for o in out]
    for j in range(10):
        out[0] |= v[j] << (3 * j)
    out[0] |= v[10] << 30
    out[1] |= (v[10] >> 2) & 1
    for j in range(10):
        out[1] |= v[11 + j] << (3 * j + 1)
    out[1] |= v[21] << 31
    out[2] |= (v[21] >> 1) & 0x3
    for j in range(10):
        out[2] |= v[22 + j] << (3 * j + 2)
    return [o & _MASK for o in out]


def _unpack_run_ref(words, bits):
    """Loop twin of :func:`_unpack_words` for one run: the torch fallback's ``wf`` shifts and 3-bit fixes."""
    m = 2 ** bits - 1
    if bits != 3:
        return [(words[k] >> (bits * j)) & m for k in range(bits) for j in range(32 // bits)]
    wf = ([0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 0], [0, 1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31],
          [0, 2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 0])
    v = [[words[k] >> s for s in wf[k]] for k in range(3)]
    v[0][10] = (v[0][10] & 0x3) | ((v[1][0] << 2) & 0x4)
    v[1][11] = (v[1][11] & 0x1) | ((v[2][0] << 1) & 0x6)
    v = [[x & 0x7 for x in row] for row in v]
    return v[0][:11] + v[1][1:12] + v[2][1:11]


def _rows_ref(run_fn, a, n_in, n_out):
    """Apply a one-run twin to every run of ``n_in`` entries along the last axis of a 2-D array."""
    a = np.asarray(a, np.uint64)
    out = np.zeros((a.shape[0], a.shape[1] // n_in * n_out), np.uint64)
    for r in range(a.shape[0]):
        for c in range(a.shape[1] // n_in):
            out[r, c * n_out:(c + 1) * n_out] = run_fn([int(x) for x in a[r, c * n_in:(c + 1) * n_in]])
    return out


# ---------------------------------------------------------------- checks
def _bits(bits, allowed=BITS, who="GPTQ"):
    b = int_value(bits, "bits")
    if b not in allowed:
        raise ValueError(f"bits must be one of {allowed} (the widths {who}'s packers take), got {b}")
    return b


def _choice(v, name, options):
    if v not in options:
        raise ValueError(f"{name}: expected one of {options}, got {v!r}")
    return v


def _words(a, name):
    a = np.asarray(a)
    if a.dtype != np.int32 or a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D int32 array (the checkpoint's storage), "
                         f"got {a.dtype} of shape {a.shape}")
    return a.view(np.uint32)


def _scales(scales, name, shape, positive):
    s = finite_array(scales, name, np.float16, "must be finite in float16")
    if s.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {s.shape}")
    if positive and s.size and not (s > 0).all():
        raise ValueError(f"{name} must be > 0 in float16 (the step size; below 6e-8 it rounds to 0), "
                         f"got min {float(s.min())!r}")
    return s


def _check_quantized(codes, scale, zero_point, bits, mult_out, mult_in):
    maxq = 2 ** bits - 1
    codes = int_array(codes, "codes", 0, maxq, f" (unsigned {bits}-bit codes)")
    if codes.ndim != 2:
        raise ValueError(f"codes: expected an (out, in) matrix, got shape {codes.shape}")
    out, k = codes.shape
    for what, n, m in (("out", out, mult_out), ("in", k, mult_in)):
        if n % m:
            raise ValueError(f"codes: {what} = {n} is not a multiple of {m} (shape {codes.shape})")
    scale = np.asarray(scale)
    if scale.ndim != 2 or scale.shape[0] != out or scale.shape[1] < 1:
        raise ValueError(f"scale: expected shape ({out}, n_groups) for codes of shape {codes.shape}, got {scale.shape}")
    scale = _scales(scale, "scale", scale.shape, True)
    zero_point = int_array(zero_point, "zero_point", 0, maxq, f" (a {bits}-bit code)")
    if zero_point.shape != scale.shape:
        raise ValueError(f"zero_point: expected shape {scale.shape} (as scale), got {zero_point.shape}")
    return codes, scale, zero_point


# ---------------------------------------------------------------- GPTQ
def _pack_gptq(codes, scale, zero_point, g_idx, bits, zeros_format, underflow, words_fn):
    bits = _bits(bits)
    _choice(zeros_format, "zeros_format", ZEROS_FORMATS)
    _choice(underflow, "underflow", UNDERFLOW)
    codes, scale, zero_point = _check_quantized(codes, scale, zero_point, bits, 32, 32)
    n_groups = scale.shape[1]
    g_idx = int_array(g_idx, "g_idx", 0, n_groups - 1, f" (groups of scale, shape {scale.shape})")
    if g_idx.shape != (codes.shape[1],):
        raise ValueError(f"g_idx: expected shape ({codes.shape[1]},) (one group per input channel), got {g_idx.shape}")
    fields = zero_point.astype(np.int64)
    if zeros_format == "v1":
        fields = fields - 1
        low = np.argwhere(fields < 0)
        if low.size and underflow == "raise":
            where = [tuple(map(int, p)) for p in low[:4]]
            raise ValueError(
                f"zero_point is 0 at (row, group) {where}{' …' if len(low) > 4 else ''}: "
                "v1 stores zero − 1 = −1. Use zeros_format='v2', or underflow='wrap' (the field holds "
                f"{2 ** bits - 1}; AutoGPTQ's readers take zero {2 ** bits}) or 'autogptq' (its packer's bits)")
        fields[fields < 0] = 2 ** bits - 1 if underflow == "wrap" else _U32_MINUS_ONE
    return dict(qweight=np.ascontiguousarray(words_fn(codes, bits).T).view(np.int32),
                qzeros=words_fn(fields.T, bits).view(np.int32),
                scales=np.ascontiguousarray(scale.T), g_idx=g_idx.astype(np.int32))


def pack_gptq(codes: ArrayLike, scale: ArrayLike, zero_point: ArrayLike, g_idx: ArrayLike, bits: int, *,
              zeros_format: str = "v1", underflow: str = "raise") -> dict[str, np.ndarray]:
    """Pack a GPTQ result into a GPTQ checkpoint's ``qweight``, ``qzeros``, ``scales``, ``g_idx``.

    Parameters
    ----------
    codes : integer ndarray (out, in), values in [0, 2^bits − 1]; out and in multiples of 32
    scale : float ndarray (out, n_groups); stored as float16, must stay finite and > 0 there
    zero_point : integer ndarray (out, n_groups), values in [0, 2^bits − 1]
    g_idx : integer ndarray (in,), values in [0, n_groups)
    bits : 2, 3, 4 or 8
    zeros_format : "v1" (z − 1, AutoGPTQ) or "v2" (z, GPTQModel)
    underflow : "raise", "wrap" or "autogptq" — a v1 zero point of 0 (module docstring)

    Returns
    -------
    dict of qweight int32 (in·bits/32, out), qzeros int32 (n_groups, out·bits/32),
    scales float16 (n_groups, out), g_idx int32 (in,)
    """
    return _pack_gptq(codes, scale, zero_point, g_idx, bits, zeros_format, underflow, _pack_words)


def pack_gptq_ref(codes: ArrayLike, scale: ArrayLike, zero_point: ArrayLike, g_idx: ArrayLike, bits: int, *,
                  zeros_format: str = "v1", underflow: str = "raise") -> dict[str, np.ndarray]:
    """Loop twin of :func:`pack_gptq`: AutoGPTQ's pack loop on Python ints, one run at a time."""
    def words(a, b):
        return _rows_ref(lambda v: _pack_run_ref(v, b), a, 32, b).astype(np.uint32)
    return _pack_gptq(codes, scale, zero_point, g_idx, bits, zeros_format, underflow, words)


def _read_gptq(qweight, qzeros, scales, g_idx, bits, words_fn):
    """(codes (out, in), raw zero fields (out, n_groups), scales (out, n_groups) float16, g_idx)."""
    bits = _bits(bits)
    qw, qz = _words(qweight, "qweight"), _words(qzeros, "qzeros")
    out = qw.shape[1]
    if qw.shape[0] % bits or out % 32:
        raise ValueError(f"qweight: expected shape (in·{bits}/32, out) with in and out multiples of 32, "
                         f"got {qw.shape}")
    k = qw.shape[0] * 32 // bits
    if qz.shape[1] != out * bits // 32 or qz.shape[0] < 1:
        raise ValueError(f"qzeros: expected shape (n_groups, {out * bits // 32}) for out = {out}, got {qz.shape}")
    s = _scales(scales, "scales", (qz.shape[0], out), False)
    g = int_array(g_idx, "g_idx", 0, qz.shape[0] - 1, f" (groups of qzeros, shape {qz.shape})")
    if g.shape != (k,):
        raise ValueError(f"g_idx: expected shape ({k},) for qweight of shape {qw.shape}, got {g.shape}")
    return words_fn(qw.T, bits), words_fn(qz, bits).T, np.ascontiguousarray(s.T), g.astype(np.int32)


def unpack_gptq(qweight: ArrayLike, qzeros: ArrayLike, scales: ArrayLike, g_idx: ArrayLike, bits: int, *,
                zeros_format: str = "v1") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_gptq`: ``(codes (out, in) uint8, scale (out, n_groups) float16,
    zero_point (out, n_groups) int32, g_idx (in,) int32)``.

    v1 zero points are read field-wise modulo 2^bits, ``(field + 1) mod 2^bits`` — the inverse of
    ``underflow="wrap"`` and what GPTQModel's field-wise v1 → v2 gives; the references' readers add 1
    without wrapping (see :func:`dequantize_gptq`)."""
    return _unpack_gptq(qweight, qzeros, scales, g_idx, bits, zeros_format, _unpack_words)


def unpack_gptq_ref(qweight: ArrayLike, qzeros: ArrayLike, scales: ArrayLike, g_idx: ArrayLike, bits: int, *,
                    zeros_format: str = "v1") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Loop twin of :func:`unpack_gptq`: the torch fallback's unpacking, one run at a time."""
    def values(a, b):
        return _rows_ref(lambda w: _unpack_run_ref(w, b), a, b, 32).astype(np.int64)
    return _unpack_gptq(qweight, qzeros, scales, g_idx, bits, zeros_format, values)


def _unpack_gptq(qweight, qzeros, scales, g_idx, bits, zeros_format, words_fn):
    _choice(zeros_format, "zeros_format", ZEROS_FORMATS)
    codes, raw, s, g = _read_gptq(qweight, qzeros, scales, g_idx, bits, words_fn)
    zero = (raw + 1) % 2 ** int(bits) if zeros_format == "v1" else raw
    return codes.astype(np.uint8), s, zero.astype(np.int32), g


def dequantize_gptq(qweight: ArrayLike, qzeros: ArrayLike, scales: ArrayLike, g_idx: ArrayLike, bits: int, *,
                    zeros_format: str = "v1") -> np.ndarray:
    """The weight (out, in) float16 as the references' torch fallbacks dequantize a GPTQ checkpoint:
    ``scales[g_idx] · (q − z[g_idx])``, z = field + 1 (v1, no wrap: a stored 2^bits − 1 is zero 2^bits)
    or z = field (v2); the integer difference times the float16 scale, rounded once to float16.

    Mirrors AutoGPTQ ``qlinear_cuda.py: QuantLinear.forward`` (v1; ``qlinear_cuda_old`` uses
    ``c // group_size`` in place of g_idx) and GPTQModel ``dequantize_weight`` (v2), transposed."""
    _choice(zeros_format, "zeros_format", ZEROS_FORMATS)
    codes, raw, s, g = _read_gptq(qweight, qzeros, scales, g_idx, bits, _unpack_words)
    z = raw + 1 if zeros_format == "v1" else raw
    return ((codes - z[:, g]).astype(np.float32) * s[:, g].astype(np.float32)).astype(np.float16)


def _shift_zeros(qzeros, bits, delta, arithmetic):
    bits = _bits(bits)
    _choice(arithmetic, "arithmetic", ARITHMETIC)
    q = _words(qzeros, "qzeros")
    if q.shape[1] % bits:
        raise ValueError(f"qzeros: {q.shape[1]} columns is not a multiple of bits={bits} (out·bits/32 columns)")
    if arithmetic == "field":
        return _pack_words((_unpack_words(q, bits) + delta) % 2 ** bits, bits).view(np.int32)
    ones = np.array(_WORD_ONES[bits] * (q.shape[1] // len(_WORD_ONES[bits])), np.int64)
    return ((q.astype(np.int64) + delta * ones) & _MASK).astype(np.uint32).view(np.int32)


def gptq_v1_to_v2(qzeros: ArrayLike, bits: int, *, arithmetic: str = "field") -> np.ndarray:
    """v1 ``qzeros`` (z − 1) to v2 (z); a new int32 array.

    ``arithmetic="field"``: every field + 1 modulo 2^bits (GPTQModel ``_shift_gptq_qzeros``, its 3-bit
    path). ``"word"``: GPTQModel ``convert_gptq_v1_to_v2_format_module`` on int32 words — one addition
    of Σ_i 2^(i·bits) per word, wrapping at 2^32: a field holding 2^bits − 1 carries into the next field
    (and out of the word from the top one). Equal to "field" at 2, 4, 8 bits when no field wraps. At 3
    bits "word" adds GPTQModel's earlier per-word constants, whose words 0 and 2 are swapped: v0 … v9
    get + 4, v10 + 0, v22 … v31 + 2 (with carries) — reproduced, not corrected.
    """
    return _shift_zeros(qzeros, bits, 1, arithmetic)


def gptq_v2_to_v1(qzeros: ArrayLike, bits: int, *, arithmetic: str = "field") -> np.ndarray:
    """v2 ``qzeros`` (z) to v1 (z − 1); the inverse of :func:`gptq_v1_to_v2` with the same ``arithmetic``
    (GPTQModel ``convert_gptq_v2_to_v1_format_module`` for "word": a 0 field borrows from the next)."""
    return _shift_zeros(qzeros, bits, -1, arithmetic)


# ---------------------------------------------------------------- AWQ GEMM
def _pack_awq_words(u):
    """(rows, n) values -> (rows, n/8) uint32, nibble i = element AWQ_ORDER[i] of each 8."""
    u = np.asarray(u, np.uint64).reshape(u.shape[0], -1, 8)[..., list(AWQ_ORDER)]
    return (u << (np.uint64(4) * np.arange(8, dtype=np.uint64))).sum(-1).astype(np.uint32)


def _pack_awq_words_ref(u):
    """Loop twin: AutoAWQ ``WQLinear_GEMM.from_linear``'s loop, ``qweight[:, col] |= x << (i·4)``."""
    out = np.zeros((u.shape[0], u.shape[1] // 8), np.uint32)
    for col in range(u.shape[1] // 8):
        for i in range(8):
            out[:, col] |= np.asarray(u[:, col * 8 + AWQ_ORDER[i]], np.uint32) << np.uint32(4 * i)
    return out


def _unpack_awq_words(w):
    """(rows, m) uint32 -> (rows, 8m) values: AutoAWQ ``unpack_awq`` + ``reverse_awq_order`` + mask."""
    nib = (np.asarray(w, np.uint32)[..., None] >> (np.uint32(4) * np.arange(8, dtype=np.uint32))) & np.uint32(15)
    return nib[..., list(AWQ_REVERSE_ORDER)].astype(np.int64).reshape(w.shape[0], -1)


def pack_awq(codes: ArrayLike, scale: ArrayLike, zero_point: ArrayLike, bits: int = 4, group_size: int =
             128) -> dict[str, np.ndarray]:
    """Pack AWQ codes into an AutoAWQ GEMM checkpoint's ``qweight``, ``qzeros``, ``scales``.

    Parameters
    ----------
    codes : integer ndarray (out, in), values in [0, 15]; out a multiple of 8 (the layout's unit;
        AutoAWQ's ``from_linear`` sizes its buffers ``out // 32 · 4`` columns, so needs out % 32 == 0),
        in a multiple of group_size
    scale : float ndarray (out, in / group_size); stored as float16, finite and > 0 there
    zero_point : integer ndarray (out, in / group_size), values in [0, 15] (stored without offset)
    bits : 4 (``WQLinear_GEMM`` packs nothing else)
    group_size : positive int, contiguous groups of input channels

    Returns
    -------
    dict of qweight int32 (in, out/8), qzeros int32 (in/group_size, out/8), scales float16 (in/group_size, out)
    """
    return _pack_awq(codes, scale, zero_point, bits, group_size, _pack_awq_words)


def pack_awq_ref(codes: ArrayLike, scale: ArrayLike, zero_point: ArrayLike, bits: int = 4, group_size: int =
                 128) -> dict[str, np.ndarray]:
    """Loop twin of :func:`pack_awq` (AutoAWQ's loop)."""
    return _pack_awq(codes, scale, zero_point, bits, group_size, _pack_awq_words_ref)


def _pack_awq(codes, scale, zero_point, bits, group_size, words_fn):
    bits = _bits(bits, (4,), "AutoAWQ WQLinear_GEMM")
    gs = int_value(group_size, "group_size", 1)
    codes, scale, zero_point = _check_quantized(codes, scale, zero_point, bits, 8, gs)
    if scale.shape[1] != codes.shape[1] // gs:
        raise ValueError(f"scale: expected {codes.shape[1] // gs} groups (in = {codes.shape[1]} / group_size = {gs}), "
                         f"got shape {scale.shape}")
    return dict(qweight=words_fn(codes.T).view(np.int32), qzeros=words_fn(zero_point.T).view(np.int32),
                scales=np.ascontiguousarray(scale.T))


def _read_awq(qweight, qzeros, scales, bits):
    _bits(bits, (4,), "AutoAWQ WQLinear_GEMM")
    qw, qz = _words(qweight, "qweight"), _words(qzeros, "qzeros")
    k, out = qw.shape[0], qw.shape[1] * 8
    if qz.shape[1] != qw.shape[1] or qz.shape[0] < 1 or k % qz.shape[0]:
        raise ValueError(f"qzeros: expected shape (n_groups, {qw.shape[1]}) with n_groups dividing in = {k}, "
                         f"got {qz.shape}")
    s = _scales(scales, "scales", (qz.shape[0], out), False)
    return _unpack_awq_words(qw).T, _unpack_awq_words(qz).T, np.ascontiguousarray(s.T)


def unpack_awq(qweight: ArrayLike, qzeros: ArrayLike, scales: ArrayLike, bits: int =
               4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_awq`: ``(codes (out, in) uint8, scale (out, n_groups) float16,
    zero_point (out, n_groups) int32)``; group_size = in / n_groups."""
    codes, zeros, s = _read_awq(qweight, qzeros, scales, bits)
    return codes.astype(np.uint8), s, zeros.astype(np.int32)


def dequantize_awq(qweight: ArrayLike, qzeros: ArrayLike, scales: ArrayLike, bits: int = 4) -> np.ndarray:
    """The weight (out, in) float16 as AutoAWQ ``dequantize_gemm`` computes it (transposed):
    ``(iweight − izeros) · scales``, each repeated over its group of ``in / n_groups`` input channels,
    the int8 difference times the float16 scale rounded once to float16."""
    codes, zeros, s = _read_awq(qweight, qzeros, scales, bits)
    g = np.arange(codes.shape[1]) // (codes.shape[1] // s.shape[1])  # repeat_interleave(group_size)
    return ((codes - zeros[:, g]).astype(np.float32) * s[:, g].astype(np.float32)).astype(np.float16)
