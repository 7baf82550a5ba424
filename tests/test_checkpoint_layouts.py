"""refquant.mirrors.checkpoint_layouts: hand-worked words (GPTQ 2/3/4/8 bits, AWQ's interleave, v1 zero
points and the zero-point-0 case, the v1 <-> v2 conversions), pack/unpack round trips (hypothesis),
loop twins, round trips of real GPTQ / AWQ results, bad input, and the reference code's own outputs
(tests/data/checkpoint_layout_goldens.npz, recorded by tests/data/make_checkpoint_layout_goldens.py;
when torch is installed the same transcriptions run live on hypothesis inputs)."""
import importlib.util
import os

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from refquant.core.packing import pack as stream_pack
from refquant.mirrors import checkpoint_layouts as L

try:  # the oracle of the live differential tests only; the goldens run without it
    import torch
except ImportError:
    torch = None
requires_torch = pytest.mark.skipif(torch is None, reason="PyTorch (an optional oracle) is not installed")

DATA = os.path.join(os.path.dirname(__file__), "data")
GOLD = np.load(os.path.join(DATA, "checkpoint_layout_goldens.npz"))
U32 = 0xFFFFFFFF


def u32(a):
    return np.asarray(a).view(np.uint32)


def gptq_inputs(codes, zero_point=None, bits=4, n_groups=1):
    """scale 1, zero_point 2^(bits−1) (symmetric GPTQ) unless given, contiguous groups."""
    out, k = codes.shape
    zp = np.full((out, n_groups), 2 ** (bits - 1)) if zero_point is None else zero_point
    return codes, np.ones((out, n_groups)), zp, np.arange(k) // (k // n_groups)


# ---------------------------------------------------------------- hand-worked words
def test_gptq_4bit_word_by_hand():
    # qweight packs 8 input channels per word, v_i at bits 4i: codes 0..7 -> nibbles 7,6,...,0 read MSB first
    c = np.tile(np.arange(32) % 8, (32, 1)).astype(np.uint8)  # every output channel: 0,1,...,7 repeated
    p = L.pack_gptq(*gptq_inputs(c), 4)
    assert p["qweight"].shape == (4, 32) and (u32(p["qweight"]) == 0x76543210).all()
    # zero point 8 in every field: v1 stores 7 -> 0x77777777, v2 stores 8 -> 0x88888888; (1, 32·4/32) words
    assert p["qzeros"].shape == (1, 4) and (u32(p["qzeros"]) == 0x77777777).all()
    assert (u32(L.pack_gptq(*gptq_inputs(c), 4, zeros_format="v2")["qzeros"]) == 0x88888888).all()
    assert p["scales"].dtype == np.float16 and p["scales"].shape == (1, 32) and p["g_idx"].dtype == np.int32


def test_gptq_qzeros_pack_along_the_output_dimension():
    # zero points 1..8 of output channels 0..7 (then 1): v2 word 0 = nibbles 8,7,...,1 read MSB first
    zp = (np.arange(32) % 8 + 1)[:, None]
    p = L.pack_gptq(*gptq_inputs(np.zeros((32, 32), np.uint8), zp), 4, zeros_format="v2")
    assert (u32(p["qzeros"]) == 0x87654321).all()


def test_gptq_2bit_and_8bit_words_by_hand():
    # 2 bits: 0,1,2,3 fill a byte from bit 0: 0b11_10_01_00 = 0xE4 -> 0xE4E4E4E4 (16 values per word)
    c = np.tile(np.arange(32) % 4, (32, 1)).astype(np.uint8)
    assert (u32(L.pack_gptq(*gptq_inputs(c, bits=2), 2)["qweight"]) == 0xE4E4E4E4).all()
    # 8 bits: 1,2,3,4 are the little-endian bytes of 0x04030201
    c = np.tile(np.arange(32) % 4 + 1, (32, 1)).astype(np.uint8)
    assert (u32(L.pack_gptq(*gptq_inputs(c, bits=8), 8)["qweight"]) == 0x04030201).all()


def test_gptq_3bit_straddling_words_by_hand():
    # v_i = i mod 8 sits at stream bits 3i: eight values make the octal number 0o76543210 = 0xFAC688
    # (24 bits), so the 96-bit stream is 0xFAC688 repeated: FAC688FAC688FAC688FAC688, cut into words
    # from the least significant end: 0x88FAC688, 0xC688FAC6, 0xFAC688FA. The straddlers: v10 = 2 =
    # 0b010 -> bits 31,30 of word 0 = 1,0 and bit 0 of word 1 = 0; v21 = 5 = 0b101 -> bit 31 of word 1
    # = 1, bits 1,0 of word 2 = 1,0 (0xA's low bits).
    c = np.tile(np.arange(32) % 8, (32, 1)).astype(np.uint8)
    q = u32(L.pack_gptq(*gptq_inputs(c, bits=3), 3)["qweight"])
    assert q.shape == (3, 32) and [hex(int(w)) for w in q[:, 0]] == ["0x88fac688", "0xc688fac6", "0xfac688fa"]


@pytest.mark.parametrize("i, words", [
    (10, (0xC0000000, 0x1, 0x0)),  # v10 = 0b111: bits 30-31 of word 0, bit 0 of word 1
    (21, (0x0, 0x80000000, 0x3)),  # v21 = 0b111: bit 31 of word 1, bits 0-1 of word 2
    (9, (0x38000000, 0x0, 0x0)),  # v9 at bits 27-29: 0b111 << 27
    (31, (0x0, 0x0, 0xE0000000)),  # v31 at bits 29-31 of word 2
])
def test_gptq_3bit_one_value(i, words):
    c = np.zeros((32, 32), np.uint8)
    c[0, i] = 7  # output channel 0, input channel i
    q = u32(L.pack_gptq(*gptq_inputs(c, bits=3), 3)["qweight"])
    assert tuple(int(w) for w in q[:, 0]) == words and not q[:, 1:].any()


def test_gptq_words_are_the_little_endian_bit_stream():
    # the same stream as core.packing (ONNX's sub-byte order), read as little-endian int32 words
    rng = np.random.default_rng(0)
    for bits in L.BITS:
        c = rng.integers(0, 2 ** bits, (32, 64)).astype(np.uint8)
        q = L.pack_gptq(*gptq_inputs(c, bits=bits), bits)["qweight"]
        for o in (0, 17):
            assert q[:, o].astype("<i4").tobytes() == stream_pack(c[o], f"uint{bits}").tobytes()


def test_awq_word_by_hand():
    # nibble i holds element AWQ_ORDER[i] = 0,2,4,6,1,3,5,7: codes 0..7 -> nibbles (bit 0 up) 0,2,4,6,1,3,5,7
    # -> read MSB first 7,5,3,1,6,4,2,0 = 0x75316420
    c = np.tile(np.arange(8), (32, 4)).T.copy().astype(np.uint8)  # (out 32, in 32): codes[o, i] = o mod 8
    p = L.pack_awq(c, np.ones((32, 1)), np.zeros((32, 1), int), group_size=32)
    assert p["qweight"].shape == (32, 4) and (u32(p["qweight"]) == 0x75316420).all()
    zp = (np.arange(32) % 8)[:, None]
    assert (u32(L.pack_awq(c, np.ones((32, 1)), zp, group_size=32)["qzeros"]) == 0x75316420).all()
    assert np.array_equal(L.unpack_awq(**p)[0], c)


def test_awq_order_and_reverse_order_are_inverse():
    assert [L.AWQ_ORDER[k] for k in L.AWQ_REVERSE_ORDER] == list(range(8))


def test_awq_kernel_mask_picks_adjacent_pairs():
    # dequantize_s4_to_fp16x2: (w >> 4j) & 0x000F000F is the pair (e_2j, e_2j+1) in nibbles 0 and 4
    c = np.repeat((np.arange(8) + 8)[:, None], 8, axis=1).astype(np.uint8)  # (out 8, in 8): codes[o, i] = 8 + o
    w = int(u32(L.pack_awq(c, np.ones((8, 1)), np.zeros((8, 1), int), group_size=8)["qweight"])[0, 0])
    assert [((w >> 4 * j) & 0xF, (w >> (16 + 4 * j)) & 0xF) for j in range(4)] == [(8, 9), (10, 11), (12, 13), (14, 15)]


# ---------------------------------------------------------------- v1 zero points
def _zero0(field, bits=4, underflow="wrap", fmt="v1"):
    zp = np.full((32, 1), 8)
    zp[field] = 0
    return u32(L.pack_gptq(*gptq_inputs(np.zeros((32, 32), np.uint8), zp), bits, zeros_format=fmt,
                           underflow=underflow)["qzeros"])


def test_v1_zero_point_0_wrap_and_autogptq():
    # wrap: field 0 holds 0 − 1 mod 16 = 15, the others 8 − 1 = 7
    assert int(_zero0(0)[0, 0]) == 0x7777777F
    # AutoGPTQ: uint32(−1) = 0xFFFFFFFF shifted by 0 sets the whole word; by 12 (field 3), bits 12..31
    assert int(_zero0(0, underflow="autogptq")[0, 0]) == 0xFFFFFFFF
    assert int(_zero0(3, underflow="autogptq")[0, 0]) == 0xFFFFF777
    assert int(_zero0(3, underflow="autogptq")[0, 1]) == 0x77777777  # the next word is untouched


def test_v1_zero_point_0_autogptq_3bit_straddler():
    # v10 = −1 as uint32: << 30 sets bits 30-31 of word 0, (>> 2) & 1 sets bit 0 of word 1; others z − 1 = 3
    zp = np.full((32, 1), 4)
    zp[10] = 0
    q = u32(L.pack_gptq(*gptq_inputs(np.zeros((32, 32), np.uint8), zp, bits=3), 3, underflow="autogptq")["qzeros"])
    wrap = u32(L.pack_gptq(*gptq_inputs(np.zeros((32, 32), np.uint8), zp, bits=3), 3, underflow="wrap")["qzeros"])
    assert np.array_equal(q, wrap)  # a straddler's bits are the field's own: nothing above it in its words


def test_v1_zero_point_0_raises_by_default():
    with pytest.raises(ValueError, match=r"zero_point is 0 at \(row, group\) \[\(5, 0\)\]"):
        _zero0(5, underflow="raise")


def test_v1_zero_point_0_readers():
    zp = np.full((32, 1), 8)
    zp[0] = 0
    c = np.full((32, 32), 3, np.uint8)
    p = L.pack_gptq(c, np.full((32, 1), 0.5), zp, np.zeros(32, int), 4, underflow="wrap")
    # unpack reads (15 + 1) mod 16 = 0 back; the references' dequantizer reads 15 + 1 = 16: 0.5·(3 − 16)
    assert L.unpack_gptq(**p, bits=4)[2][0, 0] == 0
    w = L.dequantize_gptq(**p, bits=4)
    assert (w[0] == -6.5).all() and (w[1:] == 0.5 * (3 - 8)).all()
    # the field-wise v1 -> v2 reads 0; GPTQModel's word addition reads 0 and carries into field 1:
    # 0x7777777F + 0x11111111 = 0x88888890 (field 0 = 0, field 1 = 9)
    assert int(u32(L.gptq_v1_to_v2(p["qzeros"], 4))[0, 0]) == 0x88888880
    assert int(u32(L.gptq_v1_to_v2(p["qzeros"], 4, arithmetic="word"))[0, 0]) == 0x88888890


def test_v2_to_v1_word_borrows():
    # v2 0x88888880 − 0x11111111 = 0x7777776F: field 0 = 15 (wraps), field 1 = 6 (borrowed); field-wise: 0x7777777F
    q = _zero0(0, fmt="v2").view(np.int32)
    assert int(u32(L.gptq_v2_to_v1(q, 4, arithmetic="word"))[0, 0]) == 0x7777776F
    assert int(u32(L.gptq_v2_to_v1(q, 4))[0, 0]) == 0x7777777F


def test_3bit_word_conversion_reproduces_the_swapped_constants():
    # v1 fields all 0 (zero points 1): the word additions write the constants themselves.
    # word 0 += bits 2,5,…,29: v0…v9 = 0b100 = 4, v10's low bits 0; word 1 += bits 1,4,…,31: v10's bit 2
    # = 0 -> v10 = 0, v11…v20 = 1, v21 bit 0 = 1; word 2 += bits 0,3,…,30: v21 bits 1-2 = 0b01 -> v21 = 3,
    # v22…v31 (bits 2+3j) = 0b010 = 2. The field-wise conversion gives 1 everywhere.
    zp = np.ones((32, 1), int)
    q = L.pack_gptq(*gptq_inputs(np.zeros((32, 32), np.uint8), zp, bits=3), 3)["qzeros"]
    assert not q.any()
    words = L.gptq_v1_to_v2(q, 3, arithmetic="word")
    fields = L._unpack_words(u32(words), 3)[0]
    assert fields.tolist() == [4] * 10 + [0] + [1] * 10 + [3] + [2] * 10
    assert (L._unpack_words(u32(L.gptq_v1_to_v2(q, 3)), 3) == 1).all()


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_word_equals_field_without_wrap(bits):
    rng = np.random.default_rng(bits)
    zp = rng.integers(1, 2 ** bits, (64, 2))  # v1 fields 0 … 2^bits − 2: no carry, no borrow
    p = L.pack_gptq(*gptq_inputs(np.zeros((64, 64), np.uint8), zp, bits=bits, n_groups=2), bits)
    v2 = L.gptq_v1_to_v2(p["qzeros"], bits, arithmetic="word")
    assert np.array_equal(v2, L.gptq_v1_to_v2(p["qzeros"], bits))
    assert np.array_equal(L.gptq_v2_to_v1(v2, bits, arithmetic="word"), p["qzeros"])


# ---------------------------------------------------------------- dequantization
def test_dequantize_rounds_once_to_float16():
    # fp16(0.1) = 1638/16384 = 0.0999755859375; × (q − z) = 3 -> 4914/16384 = 0.2999267578125, exactly
    # halfway between the float16 neighbours 1228/4096 and 1229/4096 (ulp 2^-12): ties to even -> 0.2998046875
    c = np.full((32, 32), 11, np.uint8)
    p = L.pack_gptq(c, np.full((32, 1), 0.1), np.full((32, 1), 8), np.zeros(32, int), 4, zeros_format="v2")
    w = L.dequantize_gptq(**p, bits=4, zeros_format="v2")
    assert w.dtype == np.float16 and w.shape == (32, 32) and (w == 0.2998046875).all()
    a = L.pack_awq(c, np.full((32, 1), 0.1), np.full((32, 1), 8), group_size=32)
    assert (L.dequantize_awq(**a) == 0.2998046875).all()


# ---------------------------------------------------------------- round trips (hypothesis)
@st.composite
def gptq_case(draw, bits=st.sampled_from(L.BITS)):
    b = draw(bits)
    out, k = 32 * draw(st.integers(1, 2)), 32 * draw(st.integers(1, 3))
    n_groups = draw(st.sampled_from([d for d in (1, 2, 4, 8) if k % d == 0]))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2 ** b, (out, k)).astype(np.uint8)
    zp = rng.integers(0, 2 ** b, (out, n_groups)).astype(np.int32)
    scale = rng.uniform(1e-4, 2.0, (out, n_groups))
    g_idx = np.arange(k) // (k // n_groups)
    if draw(st.booleans()):  # act_order: any order of the groups
        g_idx = g_idx[rng.permutation(k)]
    return codes, scale, zp, g_idx, b


@given(gptq_case(), st.sampled_from(["v1", "v2"]))
@settings(max_examples=40)
def test_gptq_round_trip_and_twins(case, fmt):
    codes, scale, zp, g_idx, bits = case
    args = [a.copy() for a in (codes, scale, zp, g_idx)]
    p = L.pack_gptq(codes, scale, zp, g_idx, bits, zeros_format=fmt, underflow="wrap")
    for a, b in zip(args, (codes, scale, zp, g_idx)):
        assert np.array_equal(a, b)  # inputs untouched
    assert p["qweight"].shape == (codes.shape[1] * bits // 32, codes.shape[0])
    assert p["qzeros"].shape == (zp.shape[1], codes.shape[0] * bits // 32)
    r = L.pack_gptq_ref(codes, scale, zp, g_idx, bits, zeros_format=fmt, underflow="wrap")
    assert all(np.array_equal(p[k], r[k]) and p[k].dtype == r[k].dtype for k in p)
    c2, s2, z2, g2 = L.unpack_gptq(**p, bits=bits, zeros_format=fmt)
    assert np.array_equal(c2, codes) and np.array_equal(z2, zp) and np.array_equal(g2, g_idx)
    assert np.array_equal(s2, scale.astype(np.float16))
    twin = L.unpack_gptq_ref(**p, bits=bits, zeros_format=fmt)
    assert all(np.array_equal(a, b) for a, b in zip(twin, (c2, s2, z2, g2)))
    other = "v2" if fmt == "v1" else "v1"
    conv = L.gptq_v1_to_v2 if fmt == "v1" else L.gptq_v2_to_v1
    assert np.array_equal(conv(p["qzeros"], bits), L.pack_gptq(codes, scale, zp, g_idx, bits, zeros_format=other,
                                                              underflow="wrap")["qzeros"])


@given(st.sampled_from(L.BITS), st.lists(st.integers(0, U32), min_size=32, max_size=32))
@example(3, [U32] * 32)
def test_word_packer_twin_on_any_uint32(bits, values):
    # the vectorised packer applies AutoGPTQ's uint32 operations to any uint32 (its −1 included)
    assert L._pack_words(np.array([values], np.uint64), bits)[0].tolist() == L._pack_run_ref(values, bits)


@given(st.sampled_from(L.BITS), st.lists(st.integers(0, U32), min_size=8, max_size=8))
def test_word_unpacker_twin_on_any_words(bits, words):
    w = words[:bits]
    assert L._unpack_words(np.array([w], np.uint32), bits)[0].tolist() == L._unpack_run_ref(w, bits)


@given(st.integers(1, 3), st.sampled_from([8, 16, 32, 64]), st.integers(1, 3), st.integers(0, 2 ** 32 - 1))
@settings(max_examples=30)
def test_awq_round_trip_and_twin(n8, gs, n_groups, seed):
    rng = np.random.default_rng(seed)
    out, k = 8 * n8, gs * n_groups
    codes = rng.integers(0, 16, (out, k)).astype(np.uint8)
    zp = rng.integers(0, 16, (out, n_groups))
    scale = rng.uniform(1e-4, 2.0, (out, n_groups)).astype(np.float32)
    p = L.pack_awq(codes, scale, zp, group_size=gs)
    assert p["qweight"].shape == (k, out // 8) and p["qzeros"].shape == (n_groups, out // 8)
    r = L.pack_awq_ref(codes, scale, zp, group_size=gs)
    assert all(np.array_equal(p[key], r[key]) for key in p)
    c2, s2, z2 = L.unpack_awq(**p)
    assert np.array_equal(c2, codes) and np.array_equal(z2, zp) and np.array_equal(s2, scale.astype(np.float16))


# ---------------------------------------------------------------- real results
def _layer(rows, k, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((256, k)) * rng.uniform(0.2, 3.0, k)
    w = rng.standard_normal((rows, k)) * 0.05
    w[:3] = np.abs(w[:3])  # all-positive rows: zero point 0 in every group of theirs
    return w.astype(np.float32), 2 * x.T @ x / len(x)


@pytest.mark.parametrize("kw", [dict(bits=4, group_size=32), dict(bits=3, group_size=32, act_order=True),
                                dict(bits=8, group_size=0), dict(bits=2, group_size=64, symmetric=True)])
def test_gptq_result_round_trip(kw):
    from refquant.ptq.gptq import gptq_quantize
    w, h = _layer(64, 64)
    r = gptq_quantize(w, h, **kw)
    bits = kw["bits"]
    p = L.pack_gptq(r.codes, r.scale, r.zero_point, r.g_idx, bits, zeros_format="v2")
    codes, scale, zp, g_idx = L.unpack_gptq(**p, bits=bits, zeros_format="v2")
    assert np.array_equal(codes, r.codes) and np.array_equal(zp, r.zero_point) and np.array_equal(g_idx, r.g_idx)
    assert np.array_equal(scale, r.scale.astype(np.float16))
    # dequantized in float16: the scale rounded to float16 (≤ 2^-11 relative) and the product rounded once
    diff = np.abs(r.codes.astype(float) - r.zero_point[:, r.g_idx])
    err = np.abs(L.dequantize_gptq(**p, bits=bits, zeros_format="v2").astype(float) - r.w_hat)
    assert (err <= diff * r.scale[:, r.g_idx] * 2.0 ** -9.9 + 1e-7).all()
    if kw.get("symmetric"):
        assert np.array_equal(L.unpack_gptq(**L.pack_gptq(r.codes, r.scale, r.zero_point, r.g_idx, bits), bits=bits)[2],
                              r.zero_point)  # v1 holds every symmetric zero point
    else:
        assert (r.zero_point == 0).any()
        with pytest.raises(ValueError, match="zero_point is 0"):
            L.pack_gptq(r.codes, r.scale, r.zero_point, r.g_idx, bits)


def test_awq_result_round_trip():
    from refquant.ptq.awq import pseudo_quantize
    w, _ = _layer(64, 128)
    t = pseudo_quantize(w, bits=4, group_size=64)
    p = L.pack_awq(t.codes, t.scale, t.zero_point, group_size=t.group_size)
    codes, scale, zp = L.unpack_awq(**p)
    assert np.array_equal(codes, t.codes) and np.array_equal(zp, t.zero_point)
    g = np.arange(128) // 64
    diff = np.abs(t.codes.astype(float) - t.zero_point[:, g])
    err = np.abs(L.dequantize_awq(**p).astype(float) - t.w_hat)
    assert (err <= diff * t.scale[:, g] * 2.0 ** -9.9 + 1e-7).all()


# ---------------------------------------------------------------- the references' outputs
def _g(i, name):
    return GOLD[f"g{i}.{name}"]


@pytest.mark.parametrize("i", range(int(GOLD["n_gptq"])))
def test_gptq_goldens(i):
    """AutoGPTQ pack (v1, its own zero-point-0 bits), GPTQModel pack_block (v2), both torch dequantizers,
    GPTQModel's word and field-wise conversions."""
    codes, zp, scales, g_idx, bits = _g(i, "codes"), _g(i, "zeros"), _g(i, "scales"), _g(i, "g_idx"), int(_g(i, "bits"))
    v1 = L.pack_gptq(codes, scales, zp, g_idx, bits, underflow="autogptq")
    v2 = L.pack_gptq(codes, scales, zp, g_idx, bits, zeros_format="v2")
    for fmt, p in (("v1", v1), ("v2", v2)):
        assert np.array_equal(p["qweight"], _g(i, f"{fmt}.qweight"))
        assert np.array_equal(p["qzeros"], _g(i, f"{fmt}.qzeros"))
        w = L.dequantize_gptq(_g(i, f"{fmt}.qweight"), _g(i, f"{fmt}.qzeros"), scales.T, g_idx, bits, zeros_format=fmt)
        assert np.array_equal(w.T.view(np.uint16), _g(i, f"{fmt}.dequant").view(np.uint16))  # bit for bit
    for a in L.ARITHMETIC:
        assert np.array_equal(L.gptq_v1_to_v2(_g(i, "v1.qzeros"), bits, arithmetic=a), _g(i, f"{a}.v1_to_v2"))
        assert np.array_equal(L.gptq_v2_to_v1(_g(i, "v2.qzeros"), bits, arithmetic=a), _g(i, f"{a}.v2_to_v1"))


def test_gptq_goldens_cover_zero_point_0():
    z0 = [i for i in range(int(GOLD["n_gptq"])) if (_g(i, "zeros") == 0).any()]
    assert {int(_g(i, "bits")) for i in z0} == set(L.BITS)
    i = z0[0]  # the references disagree there: AutoGPTQ's bits are not the field-wise ones
    wrap = L.pack_gptq(_g(i, "codes"), _g(i, "scales"), _g(i, "zeros"), _g(i, "g_idx"), int(_g(i, "bits")),
                       underflow="wrap")
    assert not np.array_equal(_g(i, "v1.qzeros"), wrap["qzeros"])


@pytest.mark.parametrize("i", range(int(GOLD["n_awq"])))
def test_awq_goldens(i):
    """AutoAWQ WQLinear_GEMM.from_linear's words and dequantize_gemm's float16 weight."""
    a = lambda n: GOLD[f"a{i}.{n}"]  # noqa: E731
    p = L.pack_awq(a("codes"), a("scales"), a("zeros"), group_size=int(a("group_size")))
    assert np.array_equal(p["qweight"], a("qweight")) and np.array_equal(p["qzeros"], a("qzeros"))
    w = L.dequantize_awq(a("qweight"), a("qzeros"), a("scales").T)
    assert np.array_equal(w.T.view(np.uint16), a("dequant").view(np.uint16))


def _oracle():
    spec = importlib.util.spec_from_file_location("make_checkpoint_layout_goldens",
                                                  os.path.join(DATA, "make_checkpoint_layout_goldens.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@requires_torch
@given(st.sampled_from(L.BITS), st.integers(1, 2), st.integers(1, 3), st.booleans(), st.booleans(),
       st.integers(0, 2 ** 32 - 1))
@settings(max_examples=15)
def test_live_against_the_reference_transcriptions(bits, n_out, n_in, act_order, zero0, seed):
    M = _oracle()
    c = M.gptq_case(np.random.default_rng(seed), bits, 32 * n_out, 32 * n_in, 32, act_order, zero0)
    v1 = L.pack_gptq(c["codes"], c["scales"], c["zeros"], c["g_idx"], bits, underflow="autogptq")
    v2 = L.pack_gptq(c["codes"], c["scales"], c["zeros"], c["g_idx"], bits, zeros_format="v2")
    for fmt, p in (("v1", v1), ("v2", v2)):
        assert np.array_equal(p["qweight"], c[f"{fmt}.qweight"]) and np.array_equal(p["qzeros"], c[f"{fmt}.qzeros"])
        w = L.dequantize_gptq(**p, bits=bits, zeros_format=fmt)
        assert np.array_equal(w.T.view(np.uint16), c[f"{fmt}.dequant"].view(np.uint16))
    for a in L.ARITHMETIC:
        assert np.array_equal(L.gptq_v1_to_v2(v1["qzeros"], bits, arithmetic=a), c[f"{a}.v1_to_v2"])
        assert np.array_equal(L.gptq_v2_to_v1(v2["qzeros"], bits, arithmetic=a), c[f"{a}.v2_to_v1"])
    a = M.awq_case(np.random.default_rng(seed), 32 * n_out, 32 * n_in, 32)
    p = L.pack_awq(a["codes"], a["scales"], a["zeros"], group_size=32)
    assert np.array_equal(p["qweight"], a["qweight"]) and np.array_equal(p["qzeros"], a["qzeros"])
    assert np.array_equal(L.dequantize_awq(**p).T.view(np.uint16), a["dequant"].view(np.uint16))


# ---------------------------------------------------------------- bad input
_C = np.zeros((32, 32), np.uint8)
_S, _Z, _G = np.ones((32, 1)), np.full((32, 1), 8), np.zeros(32, int)


@pytest.mark.parametrize("kwargs, match", [
    (dict(codes=np.full((32, 32), 16)), r"codes must lie in \[0, 15\]"),
    (dict(codes=np.full((32, 32), -1)), r"codes must lie in \[0, 15\]"),
    (dict(codes=_C.astype(float)), "codes: expected an integer array"),
    (dict(codes=np.zeros((32, 40), np.uint8), g_idx=np.zeros(40, int)), r"codes: in = 40 is not a multiple of 32"),
    (dict(codes=np.zeros((8, 32), np.uint8), scale=np.ones((8, 1)), zero_point=np.full((8, 1), 8)),
     "codes: out = 8 is not a multiple of 32"),
    (dict(codes=np.zeros(32, np.uint8)), r"codes: expected an \(out, in\) matrix"),
    (dict(bits=5), r"bits must be one of \(2, 3, 4, 8\)"),
    (dict(bits=True), "bits must be an int"),
    (dict(bits=4.0), "bits must be an int"),
    (dict(scale=np.ones((16, 1))), r"scale: expected shape \(32, n_groups\)"),
    (dict(scale=np.full((32, 1), 1e-9)), r"scale must be > 0 in float16"),
    (dict(scale=np.full((32, 1), 1e6)), "scale has values beyond the float16 range"),
    (dict(scale=np.full((32, 1), np.nan)), "scale contains NaN"),
    (dict(zero_point=np.full((32, 1), 16)), r"zero_point must lie in \[0, 15\]"),
    (dict(zero_point=np.full((32, 2), 8)), r"zero_point: expected shape \(32, 1\)"),
    (dict(g_idx=np.ones(32, int)), r"g_idx must lie in \[0, 0\]"),
    (dict(g_idx=np.zeros(31, int)), r"g_idx: expected shape \(32,\)"),
    (dict(zeros_format="v3"), "zeros_format: expected one of"),
    (dict(underflow="clip"), "underflow: expected one of"),
])
def test_pack_gptq_bad_input(kwargs, match):
    args = dict(codes=_C, scale=_S, zero_point=_Z, g_idx=_G, bits=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        L.pack_gptq(**args)


_P = L.pack_gptq(_C, _S, _Z, _G, 4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(qweight=_P["qweight"].astype(np.int64)), "qweight: expected a 2-D int32 array"),
    (dict(qweight=_P["qweight"].view(np.uint32)), "qweight: expected a 2-D int32 array"),
    (dict(qweight=_P["qweight"][:3]), r"qweight: expected shape \(in·4/32, out\)"),
    (dict(qzeros=_P["qzeros"][:, :3]), r"qzeros: expected shape \(n_groups, 4\)"),
    (dict(scales=np.ones((1, 31), np.float16)), r"scales: expected shape \(1, 32\)"),
    (dict(scales=np.full((1, 32), np.inf)), "scales: must be finite"),
    (dict(g_idx=np.zeros(16, int)), r"g_idx: expected shape \(32,\)"),
    (dict(g_idx=np.full(32, 1)), r"g_idx must lie in \[0, 0\]"),
    (dict(bits=3), r"qweight: expected shape \(in·3/32, out\)"),
    (dict(zeros_format="gptq"), "zeros_format: expected one of"),
])
@pytest.mark.parametrize("fn", [L.unpack_gptq, L.dequantize_gptq])
def test_unpack_gptq_bad_input(fn, kwargs, match):
    args = dict(_P, bits=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fn(**args)


@pytest.mark.parametrize("kwargs, match", [
    (dict(qzeros=_P["qzeros"].astype(np.int64)), "qzeros: expected a 2-D int32 array"),
    (dict(bits=3), "qzeros: 4 columns is not a multiple of bits=3"),
    (dict(bits=6), r"bits must be one of \(2, 3, 4, 8\)"),
    (dict(arithmetic="carry"), "arithmetic: expected one of"),
])
@pytest.mark.parametrize("fn", [L.gptq_v1_to_v2, L.gptq_v2_to_v1])
def test_conversion_bad_input(fn, kwargs, match):
    args = dict(qzeros=_P["qzeros"], bits=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fn(**args)


@pytest.mark.parametrize("kwargs, match", [
    (dict(bits=3), r"bits must be one of \(4,\) \(the widths AutoAWQ WQLinear_GEMM"),
    (dict(group_size=0), "group_size must be >= 1"),
    (dict(group_size=24), "codes: in = 32 is not a multiple of 24"),
    (dict(group_size=16), "scale: expected 2 groups"),
    (dict(codes=np.zeros((12, 32), np.uint8), scale=np.ones((12, 1)), zero_point=np.zeros((12, 1), int)),
     "codes: out = 12 is not a multiple of 8"),
    (dict(zero_point=np.full((32, 1), -1)), r"zero_point must lie in \[0, 15\]"),
])
def test_pack_awq_bad_input(kwargs, match):
    args = dict(codes=_C, scale=_S, zero_point=np.zeros((32, 1), int), group_size=32)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        L.pack_awq(**args)


_A = L.pack_awq(_C, _S, np.zeros((32, 1), int), group_size=32)


@pytest.mark.parametrize("kwargs, match", [
    (dict(qweight=_A["qweight"].astype(np.float32)), "qweight: expected a 2-D int32 array"),
    (dict(qzeros=_A["qzeros"][:, :3]), r"qzeros: expected shape \(n_groups, 4\)"),
    (dict(qzeros=np.zeros((3, 4), np.int32)), "with n_groups dividing in = 32"),
    (dict(scales=np.ones((1, 4), np.float16)), r"scales: expected shape \(1, 32\)"),
    (dict(bits=8), r"bits must be one of \(4,\)"),
])
@pytest.mark.parametrize("fn", [L.unpack_awq, L.dequantize_awq])
def test_unpack_awq_bad_input(fn, kwargs, match):
    args = dict(_A)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fn(**args)


def test_readers_do_not_mutate():
    p = {k: v.copy() for k, v in _P.items()}
    L.unpack_gptq(**p, bits=4)
    L.dequantize_gptq(**p, bits=4)
    L.gptq_v1_to_v2(p["qzeros"], 4, arithmetic="word")
    L.gptq_v2_to_v1(p["qzeros"], 4)
    assert all(np.array_equal(p[k], _P[k]) for k in p)
    a = {k: v.copy() for k, v in _A.items()}
    L.unpack_awq(**a)
    L.dequantize_awq(**a)
    assert all(np.array_equal(a[k], _A[k]) for k in a)
