"""Record GPTQ / AWQ checkpoint words as the reference packers write them and the weights their torch
fallbacks dequantize, as CI goldens for refquant.mirrors.checkpoint_layouts.

Transcriptions (torch 2.13 CPU and numpy, as the references use them), starting where the references
hold integer codes — their recomputation of the codes from the float weight
(``round((W + z·s) / fp16(s))``) is left out, since refquant's functions take the codes:

* ``autogptq_pack``: AutoGPTQ ``qlinear_cuda.py: QuantLinear.pack`` from ``intweight.numpy().astype(np.uint32)``
  on, and its qzeros loop after ``zeros -= 1`` on float zeros (v1; the ``astype(np.uint32)`` of −1.0 is
  0xFFFFFFFF on x86-64).
* ``gptqmodel_pack``: GPTQModel ``PackableQuantLinear.pack_block`` (``_pack_rows_2_4_8``, ``_pack_rows_3``
  in int64, masked to 32 bits) and its numpy qzeros loop without the −1 (v2).
* ``autogptq_dequant`` / ``gptqmodel_dequant``: the torch fallback of AutoGPTQ ``QuantLinear.forward``
  (v1: zeros + 1) and GPTQModel ``dequantize_weight`` (v2), ``num_itr == 1``; dequant dtype int8
  (int16 at 8 bits).
* ``gptqmodel_word``: GPTQModel ``convert_gptq_v1_to_v2_format_module`` / ``_v2_to_v1`` on int32
  (``qzeros += constant`` in place; at 3 bits the per-word constants of the versions before its
  field-wise fix). ``gptqmodel_field``: ``_shift_gptq_qzeros`` (``unpack_cols``, ``& mask``,
  ``pack_cols``; 3 bits through ``_unpack_cols_3bit`` / ``_pack_cols_3bit``).
* ``autoawq_pack`` / ``autoawq_dequant``: AutoAWQ ``WQLinear_GEMM.from_linear``'s loops from
  ``intweight`` on, and ``packing_utils.dequantize_gemm`` (``unpack_awq``, ``reverse_awq_order``).

Needs torch 2.13.0 CPU (``pip install torch==2.13.0``), not a refquant dependency; refquant is not
imported. Run from the repository root: ``python tests/data/make_checkpoint_layout_goldens.py``; it
writes ``tests/data/checkpoint_layout_goldens.npz``: per GPTQ case ``g<i>.`` the inputs ``codes``
(out, in), ``zeros``, ``scales`` (out, n_groups), ``g_idx``, ``bits`` and the outputs ``v1.qweight``,
``v1.qzeros`` (AutoGPTQ), ``v2.qweight``, ``v2.qzeros`` (GPTQModel), ``v1.dequant``, ``v2.dequant``
((in, out) float16), ``word.v1_to_v2``, ``word.v2_to_v1``, ``field.v1_to_v2``, ``field.v2_to_v1``; per
AWQ case ``a<i>.`` ``codes``, ``zeros``, ``scales``, ``group_size``, ``qweight``, ``qzeros``, ``dequant``.
"""
import os

import numpy as np
import torch

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]


def _pack_loop(dst, src, bits, index):
    """AutoGPTQ's shared loop; ``index(a, j)`` picks row j (qweight) or column j (qzeros)."""
    i = 0
    k = 0
    n = dst.shape[0] if index is _row else dst.shape[1]
    while k < n:
        d = (lambda kk: _row(dst, kk)) if index is _row else (lambda kk: _col(dst, kk))
        if bits in [2, 4, 8]:
            for j in range(i, i + (32 // bits)):
                d(k)[...] |= index(src, j) << (bits * (j - i))
            i += 32 // bits
            k += 1
        elif bits == 3:
            for j in range(i, i + 10):
                d(k)[...] |= index(src, j) << (3 * (j - i))
            i += 10
            d(k)[...] |= index(src, i) << 30
            k += 1
            d(k)[...] |= (index(src, i) >> 2) & 1
            i += 1
            for j in range(i, i + 10):
                d(k)[...] |= index(src, j) << (3 * (j - i) + 1)
            i += 10
            d(k)[...] |= index(src, i) << 31
            k += 1
            d(k)[...] |= (index(src, i) >> 1) & 0x3
            i += 1
            for j in range(i, i + 10):
                d(k)[...] |= index(src, j) << (3 * (j - i) + 2)
            i += 10
            k += 1


def _row(a, j):
    return a[j]


def _col(a, j):
    return a[:, j]


def autogptq_pack(intweight, zeros, bits):
    """intweight (in, out) ints, zeros (n_groups, out) float tensor -> v1 (qweight, qzeros) int32."""
    intweight = np.asarray(intweight).astype(np.uint32)
    qweight = np.zeros((intweight.shape[0] // 32 * bits, intweight.shape[1]), dtype=np.uint32)
    _pack_loop(qweight, intweight, bits, _row)
    zeros = zeros.clone()
    zeros -= 1
    zeros = zeros.numpy().astype(np.uint32)
    qzeros = np.zeros((zeros.shape[0], zeros.shape[1] // 32 * bits), dtype=np.uint32)
    _pack_loop(qzeros, zeros, bits, _col)
    return qweight.astype(np.int32), qzeros.astype(np.int32)


def gptqmodel_pack(int_block, zeros, bits):
    """int_block (in, out) int32 tensor, zeros (n_groups, out) tensor -> v2 (qweight, qzeros) int32."""
    MASK32 = (1 << 32) - 1
    in_features, out_features = int_block.shape
    qweight = torch.empty((in_features // 32 * bits, out_features), dtype=torch.int32)
    for g in range(in_features // 32):
        x = int_block[g * 32:(g + 1) * 32].to(torch.int64)
        if bits in (2, 4, 8):
            pf = 32 // bits
            shifts = (torch.arange(pf, dtype=torch.int64) * bits).view(1, pf, 1)
            qweight[g * bits:(g + 1) * bits] = ((x.view(bits, pf, -1) << shifts).sum(dim=1, dtype=torch.int64)
                                                & MASK32).to(torch.int32)
        else:
            r10 = torch.arange(10, dtype=torch.int64).view(-1, 1)
            A = ((x[0:10] << (r10 * 3)).sum(dim=0, dtype=torch.int64)) & MASK32
            A = (A | ((x[10] << 30) & MASK32)) & MASK32
            B = ((x[10] >> 2) & 1) & MASK32
            B = (B | ((x[11:21] << (r10 * 3 + 1)).sum(dim=0, dtype=torch.int64))) & MASK32
            B = (B | ((x[21] << 31) & MASK32)) & MASK32
            C = ((x[21] >> 1) & 0x3) & MASK32
            C = (C | ((x[22:32] << (r10 * 3 + 2)).sum(dim=0, dtype=torch.int64))) & MASK32
            qweight[g * 3 + 0] = A.to(torch.int32)
            qweight[g * 3 + 1] = B.to(torch.int32)
            qweight[g * 3 + 2] = C.to(torch.int32)
    zeros_np = zeros.numpy().astype(np.uint32, copy=False)
    qzeros_np = np.zeros((zeros_np.shape[0], zeros_np.shape[1] // 32 * bits), dtype=np.uint32)
    _pack_loop(qzeros_np, zeros_np, bits, _col)
    return qweight.numpy(), qzeros_np.astype(np.int32)


def _unpack(qweight, qzeros, bits):
    """The torch fallback's unpacking (AutoGPTQ forward == GPTQModel dequantize_weight): (weight (in, out), zeros)."""
    dq = torch.int16 if bits == 8 else torch.int8
    if bits in [2, 4, 8]:
        wf = torch.tensor(list(range(0, 32, bits)), dtype=torch.int32).unsqueeze(0)
        zeros = torch.bitwise_right_shift(torch.unsqueeze(qzeros, 2).expand(-1, -1, 32 // bits), wf.unsqueeze(0)).to(dq)
        zeros = torch.bitwise_and(zeros, (2 ** bits) - 1)
        weight = torch.bitwise_right_shift(torch.unsqueeze(qweight, 1).expand(-1, 32 // bits, -1),
                                           wf.unsqueeze(-1)).to(dq)
        weight = torch.bitwise_and(weight, (2 ** bits) - 1)
    else:
        wf = torch.tensor([[0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 0], [0, 1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31],
                           [0, 2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 0]], dtype=torch.int32).reshape(1, 3, 12)
        zeros = qzeros.reshape(qzeros.shape[0], qzeros.shape[1] // 3, 3, 1).expand(-1, -1, -1, 12)
        zeros = (zeros >> wf.unsqueeze(0))
        zeros[:, :, 0, 10] = (zeros[:, :, 0, 10] & 0x3) | ((zeros[:, :, 1, 0] << 2) & 0x4)
        zeros[:, :, 1, 11] = (zeros[:, :, 1, 11] & 0x1) | ((zeros[:, :, 2, 0] << 1) & 0x6)
        zeros = zeros & 0x7
        zeros = torch.cat([zeros[:, :, 0, :11], zeros[:, :, 1, 1:12], zeros[:, :, 2, 1:11]], dim=2)
        weight = qweight.reshape(qweight.shape[0] // 3, 3, 1, qweight.shape[1]).expand(-1, -1, 12, -1)
        weight = (weight >> wf.unsqueeze(-1)) & 0x7
        weight[:, 0, 10] = (weight[:, 0, 10] & 0x3) | ((weight[:, 1, 0] << 2) & 0x4)
        weight[:, 1, 11] = (weight[:, 1, 11] & 0x1) | ((weight[:, 2, 0] << 1) & 0x6)
        weight = weight & 0x7
        weight = torch.cat([weight[:, 0, :11], weight[:, 1, 1:12], weight[:, 2, 1:11]], dim=1)
    return weight.reshape(weight.shape[0] * weight.shape[1], weight.shape[2]), zeros


def autogptq_dequant(qweight, qzeros, scales, g_idx, bits):
    weight, zeros = _unpack(torch.from_numpy(qweight), torch.from_numpy(qzeros), bits)
    zeros = (zeros + 1).reshape(scales.shape)
    g = torch.from_numpy(g_idx).long()
    return (scales[g] * (weight - zeros[g])).numpy()


def gptqmodel_dequant(qweight, qzeros, scales, g_idx, bits):
    weight, zeros = _unpack(torch.from_numpy(qweight), torch.from_numpy(qzeros), bits)
    zeros = zeros.reshape(scales.shape)
    g = torch.from_numpy(g_idx).long()
    return (scales[g] * (weight - zeros[g])).numpy()


def gptqmodel_word(qzeros, bits, sign):
    q = torch.from_numpy(qzeros.copy())
    if bits == 3:
        for r, off in enumerate((0b00100100100100100100100100100100, 0b10010010010010010010010010010010,
                                 0b01001001001001001001001001001001)):
            q[:, range(r, q.shape[1], 3)] += sign * off
    else:
        q += sign * {2: 0b01010101010101010101010101010101, 4: 0b00010001000100010001000100010001,
                     8: 0b00000001000000010000000100000001}[bits]
    return q.numpy()


def gptqmodel_field(qzeros, bits, delta):
    q = torch.from_numpy(qzeros.copy())
    if bits == 3:
        rows, cols = q.shape
        words = q.to(torch.int64).reshape(rows, cols // 3, 3)
        w0, w1, w2 = words[:, :, 0], words[:, :, 1], words[:, :, 2]
        u = torch.empty((rows, cols // 3, 32), dtype=torch.int64)
        for idx in range(10):
            u[:, :, idx] = (w0 >> (3 * idx)) & 0x7
            u[:, :, 11 + idx] = (w1 >> (1 + 3 * idx)) & 0x7
            u[:, :, 22 + idx] = (w2 >> (2 + 3 * idx)) & 0x7
        u[:, :, 10] = ((w0 >> 30) & 0x3) | ((w1 << 2) & 0x4)
        u[:, :, 21] = ((w1 >> 31) & 0x1) | ((w2 << 1) & 0x6)
        v = (u + delta) & 0x7
        a = torch.zeros((rows, cols // 3), dtype=torch.int64)
        for idx in range(10):
            a |= v[:, :, idx] << (3 * idx)
        a |= v[:, :, 10] << 30
        b = (v[:, :, 10] >> 2) & 0x1
        for idx in range(10):
            b |= v[:, :, 11 + idx] << (1 + 3 * idx)
        b |= v[:, :, 21] << 31
        c = (v[:, :, 21] >> 1) & 0x3
        for idx in range(10):
            c |= v[:, :, 22 + idx] << (2 + 3 * idx)
        return (torch.stack((a, b, c), dim=2).reshape(rows, cols) & ((1 << 32) - 1)).to(torch.int32).numpy()
    pf, mask = 32 // bits, (1 << bits) - 1
    qu = q.to(torch.int64) & ((1 << 32) - 1)
    vals = torch.empty(q.shape[0], q.shape[1] * pf, dtype=torch.int64)
    for i in range(pf):
        vals[:, i::pf] = (qu >> (i * bits)) & mask  # unpack_cols: column i + pf·j is field i of word j
    vals = (vals + delta) & mask
    packed = torch.zeros(q.shape[0], q.shape[1], dtype=torch.int32)
    for i in range(pf):
        packed |= (vals[:, i::pf] << (i * bits)).to(torch.int32)
    return packed.numpy()


def autoawq_pack(intweight, zeros):
    """intweight (in, out) int32 tensor, zeros (n_groups, out) -> (qweight, qzeros) int32, w_bit = 4."""
    pack_num = 8
    out = []
    for src in (intweight.to(torch.int32), zeros.to(dtype=torch.int32)):
        q = torch.zeros((src.shape[0], src.shape[1] // 32 * 4), dtype=torch.int32)
        for col in range(src.shape[1] // pack_num):
            for i in range(pack_num):
                q[:, col] |= src[:, col * pack_num + AWQ_ORDER[i]] << (i * 4)
        out.append(q.numpy())
    return tuple(out)


def autoawq_dequant(qweight, qzeros, scales, group_size, bits=4):
    qweight, qzeros = torch.from_numpy(qweight), torch.from_numpy(qzeros)
    shifts = torch.arange(0, 32, bits)
    iweight = torch.bitwise_right_shift(qweight[:, :, None], shifts[None, None, :]).to(torch.int8)
    iweight = iweight.view(iweight.shape[0], -1)
    izeros = torch.bitwise_right_shift(qzeros[:, :, None], shifts[None, None, :]).to(torch.int8)
    izeros = izeros.view(izeros.shape[0], -1)
    order = torch.arange(izeros.shape[-1], dtype=torch.int32).view(-1, 32 // bits)[:, AWQ_REVERSE_ORDER].view(-1)
    izeros, iweight = izeros[:, order], iweight[:, order]
    iweight = torch.bitwise_and(iweight, (2 ** bits) - 1)
    izeros = torch.bitwise_and(izeros, (2 ** bits) - 1)
    scales = scales.repeat_interleave(group_size, dim=0)
    izeros = izeros.repeat_interleave(group_size, dim=0)
    return ((iweight - izeros) * scales).numpy()


def gptq_case(rng, bits, out, k, group_size, act_order=False, zero0=False):
    """Inputs and every reference's outputs for one GPTQ layer (codes (out, in) as refquant holds them)."""
    maxq = 2 ** bits - 1
    n_groups = k // group_size
    codes = rng.integers(0, maxq + 1, size=(out, k)).astype(np.uint8)
    zeros = rng.integers(0 if zero0 else 1, maxq + 1, size=(out, n_groups)).astype(np.int32)
    if zero0:  # a zero point 0 in the bottom field of a word, and one in the top field (3 bits: the straddling v10)
        zeros[0, 0] = zeros[32 // bits - 1 if bits != 3 else 10, -1] = 0
    scales = (rng.uniform(1e-3, 0.05, size=(out, n_groups))).astype(np.float16)
    g_idx = np.arange(k) // group_size
    if act_order:
        g_idx = g_idx[rng.permutation(k)]
    g_idx = g_idx.astype(np.int32)
    c = dict(codes=codes, zeros=zeros, scales=scales, g_idx=g_idx, bits=np.int64(bits))
    zt = torch.from_numpy(zeros.T.astype(np.float32).copy())  # the quantizer's float zeros, (n_groups, out)
    c["v1.qweight"], c["v1.qzeros"] = autogptq_pack(codes.T, zt, bits)
    c["v2.qweight"], c["v2.qzeros"] = gptqmodel_pack(torch.from_numpy(codes.T.astype(np.int32).copy()), zt, bits)
    st = torch.from_numpy(scales.T.copy())
    c["v1.dequant"] = autogptq_dequant(c["v1.qweight"], c["v1.qzeros"], st, g_idx, bits)
    c["v2.dequant"] = gptqmodel_dequant(c["v2.qweight"], c["v2.qzeros"], st, g_idx, bits)
    c["word.v1_to_v2"] = gptqmodel_word(c["v1.qzeros"], bits, +1)
    c["word.v2_to_v1"] = gptqmodel_word(c["v2.qzeros"], bits, -1)
    c["field.v1_to_v2"] = gptqmodel_field(c["v1.qzeros"], bits, +1)
    c["field.v2_to_v1"] = gptqmodel_field(c["v2.qzeros"], bits, -1)
    return c


def awq_case(rng, out, k, group_size):
    n_groups = k // group_size
    codes = rng.integers(0, 16, size=(out, k)).astype(np.uint8)
    zeros = rng.integers(0, 16, size=(out, n_groups)).astype(np.int32)
    scales = rng.uniform(1e-3, 0.05, size=(out, n_groups)).astype(np.float16)
    c = dict(codes=codes, zeros=zeros, scales=scales, group_size=np.int64(group_size))
    c["qweight"], c["qzeros"] = autoawq_pack(torch.from_numpy(codes.T.astype(np.int32).copy()),
                                             torch.from_numpy(zeros.T.copy()))
    c["dequant"] = autoawq_dequant(c["qweight"], c["qzeros"], torch.from_numpy(scales.T.copy()), group_size)
    return c


GPTQ_CASES = [  # (bits, out, in, group_size, act_order, zero0)
    (2, 64, 64, 32, False, False), (3, 64, 96, 32, False, False), (4, 64, 64, 32, False, False),
    (8, 32, 64, 32, False, False), (4, 32, 128, 32, True, False), (3, 32, 64, 64, True, False),
    (2, 32, 64, 32, False, True), (3, 64, 64, 32, False, True), (4, 64, 64, 16, False, True),
    (8, 32, 32, 32, False, True),
]
AWQ_CASES = [(64, 64, 32), (32, 128, 64), (96, 32, 32)]  # from_linear needs out % 32 == 0 (out // 32 · 4 columns)


def main():
    rng = np.random.default_rng(20250713)
    out = {}
    for i, (bits, o, k, gs, act, z0) in enumerate(GPTQ_CASES):
        for name, v in gptq_case(rng, bits, o, k, gs, act, z0).items():
            out[f"g{i}.{name}"] = v
    for i, (o, k, gs) in enumerate(AWQ_CASES):
        for name, v in awq_case(rng, o, k, gs).items():
            out[f"a{i}.{name}"] = v
    out["n_gptq"], out["n_awq"] = np.int64(len(GPTQ_CASES)), np.int64(len(AWQ_CASES))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoint_layout_goldens.npz")
    np.savez_compressed(path, **out)


if __name__ == "__main__":
    main()
