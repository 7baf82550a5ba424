"""ggml k-quants (Q2_K … Q6_K) and IQ4_NL / IQ4_XS: C goldens, loop twins, gguf agreement, hand-worked blocks."""
import json
import os

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from refquant.formats import kquants as K
from refquant.formats import kquants_ref as KR
from refquant.formats import kquants_search as KS

F32 = np.float32
GOLD = np.load(os.path.join(os.path.dirname(__file__), "data", "ggml_kquants_goldens.npz"))
META = json.loads(str(GOLD["meta"]))
TYPES = list(K.BLOCK_BYTES)


# ---- recorded C outputs (tests/data/make_ggml_kquants_goldens.py: ggml-quants.c @ 01243c58, gcc -O2 -ffp-contract=off)

@pytest.mark.parametrize("qtype", TYPES)
def test_quantize_equals_c_golden(qtype):
    x = GOLD["x"]
    np.testing.assert_array_equal(K.quantize(x, qtype), GOLD[qtype])


@pytest.mark.parametrize("qtype", TYPES)
def test_quantize_with_imatrix_equals_c_golden(qtype):
    np.testing.assert_array_equal(K.quantize(GOLD["x"], qtype, GOLD["imatrix"]), GOLD[f"{qtype}_imatrix"])


def test_iq4_nl_row_ref_equals_c_golden():
    got = K.quantize(GOLD["x"], "iq4_nl", row_ref=True)
    np.testing.assert_array_equal(got, GOLD["iq4_nl_row_ref"])
    assert not np.array_equal(got, GOLD["iq4_nl"])  # ntry -1 and 7 are different searches


@pytest.mark.parametrize("qtype", TYPES)
def test_dequantize_equals_c_golden_bitwise(qtype):
    got = K.dequantize(GOLD[qtype], qtype)
    assert got.dtype == F32
    np.testing.assert_array_equal(got.view(np.uint32), GOLD[f"{qtype}_deq"].view(np.uint32))


@pytest.mark.parametrize("qtype", TYPES)
def test_chunks_of_blocks_change_no_byte(qtype, monkeypatch):
    # quantize / dequantize run in chunks of _CHUNK // block size blocks (bounded memory, issue 14); 3 blocks per
    # chunk (iq4_nl: 24) cut across the golden rows of 2 (16) blocks, so the imatrix column of each block is
    # found through its index modulo the blocks per row, and every chunk boundary is exercised
    monkeypatch.setattr(K, "_CHUNK", 3 * 256)
    np.testing.assert_array_equal(K.quantize(GOLD["x"], qtype), GOLD[qtype])
    np.testing.assert_array_equal(K.quantize(GOLD["x"], qtype, GOLD["imatrix"]), GOLD[f"{qtype}_imatrix"])
    deq = K.dequantize(GOLD[qtype], qtype)
    np.testing.assert_array_equal(deq.view(np.uint32), GOLD[f"{qtype}_deq"].view(np.uint32))


@pytest.mark.parametrize("qtype", [t for t in TYPES if META["fma_blocks_differing"][t]])
def test_an_fma_build_chooses_other_bytes(qtype):
    # gcc -O2 -march=native -ffp-contract=fast fuses a*b + c; we match the build without contraction
    nb = K.BLOCK_BYTES[qtype]
    ours = K.quantize(GOLD["x"], qtype).reshape(-1, nb)
    differ = (ours != GOLD[f"{qtype}_fma"].reshape(-1, nb)).any(axis=1)
    assert differ.sum() == META["fma_blocks_differing"][qtype] > 0


# ---- loop twins (kquants_ref: one block, one value at a time), tolerance 0

@pytest.mark.parametrize("row", [2, 7, 10, 14])  # heavy tails, one outlier, exact halves, mixed magnitudes
def test_q4_K_and_q6_K_equal_their_loop_twins(row):
    x = GOLD["x"][row, :256]
    assert K.quantize(x, "q4_K").tobytes() == KR.quantize_q4_K_block_ref(x) == GOLD["q4_K"][row, :144].tobytes()
    assert K.quantize(x, "q6_K").tobytes() == KR.quantize_q6_K_block_ref(x) == GOLD["q6_K"][row, :210].tobytes()


@pytest.mark.parametrize("row", [0, 7])
def test_imatrix_paths_equal_their_loop_twins(row):
    x, im = GOLD["x"][row, :256], GOLD["imatrix"][:256]
    assert K.quantize(x, "q4_K", im).tobytes() == KR.quantize_q4_K_block_ref(x, im) == \
        GOLD["q4_K_imatrix"][row, :144].tobytes()
    assert K.quantize(x, "q6_K", im).tobytes() == KR.quantize_q6_K_block_ref(x, im) == \
        GOLD["q6_K_imatrix"][row, :210].tobytes()


# ---- gguf's own NumPy dequantizers (optional oracle)

def _random_blocks(qtype, n, rng):
    """Random bytes with finite random fp16 scale fields (everything else arbitrary)."""
    b = rng.integers(0, 256, (n, K.BLOCK_BYTES[qtype]), dtype=np.uint8)
    offsets = {"q2_K": [80, 82], "q3_K": [108], "q4_K": [0, 2], "q5_K": [0, 2], "q6_K": [208],
               "iq4_nl": [0], "iq4_xs": [0]}[qtype]
    for o in offsets:
        b[:, o:o + 2] = (rng.standard_normal(n) * 0.01).astype("<f2").view(np.uint8).reshape(n, 2)
    return b


@pytest.mark.parametrize("qtype", TYPES)
def test_dequantize_agrees_with_gguf_on_random_blocks(qtype):
    gguf = pytest.importorskip("gguf")
    gq = pytest.importorskip("gguf.quants")
    b = _random_blocks(qtype, 64, np.random.default_rng(K.BLOCK_BYTES[qtype]))
    ref = gq.dequantize(b.reshape(-1), getattr(gguf.GGMLQuantizationType, qtype.upper()))
    np.testing.assert_array_equal(K.dequantize(b.reshape(-1), qtype).view(np.uint32), ref.view(np.uint32))


# ---- hand-worked

def test_nearest_int_rounds_half_to_even_through_the_float_trick():
    # v + 12582912 (= 1.5·2^23) lands where float32 has no fraction bits: the FPU rounds half to even
    v = F32([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999998, 3.5000002, 4194303.0, -0.0])
    assert KS.nearest_int(v).tolist() == [0, 2, 2, 0, -2, -2, 2, 4, 4194303, 0]
    assert KR.nearest_int(F32(2.5)) == 2 and KR.nearest_int(F32(-3.5)) == -4  # roundf would give 3 and -4


@given(hnp.arrays(F32, 20, elements=st.floats(-4194303, 4194303, width=32)))
def test_nearest_int_is_rint_below_2_pow_22(v):
    assert np.array_equal(KS.nearest_int(v), np.rint(v).astype(np.int64))


def test_scale_min_k4_packing_by_hand():
    # sc = 1..8, m = 63, 0, 0, 0, 33, 34, 35, 36. Bytes 0-3: sc[0..3] | high bits of sc[4..7] (5..8 >> 4 = 0);
    # bytes 4-7: m[0..3] | (m[4..7] >> 4) << 6 = 2 << 6 = 128; bytes 8-11: sc[4..7] & 15 | (m[4..7] & 15) << 4
    ls, lm = np.array([[1, 2, 3, 4, 5, 6, 7, 8]]), np.array([[63, 0, 0, 0, 33, 34, 35, 36]])
    packed = K.pack_scale_min_k4(ls, lm)
    assert packed.tolist() == [[1, 2, 3, 4, 63 | 128, 128, 128, 128, 5 | 16, 6 | 32, 7 | 48, 8 | 64]]
    sc, m = K.unpack_scale_min_k4(packed)
    assert sc.tolist() == ls.tolist() and m.tolist() == lm.tolist()


SIX_BITS = hnp.arrays(np.int64, (3, 8), elements=st.integers(0, 63))


@given(SIX_BITS, SIX_BITS)
def test_scale_min_k4_round_trip(ls, lm):
    sc, m = K.unpack_scale_min_k4(K.pack_scale_min_k4(ls, lm))
    assert np.array_equal(sc, ls) and np.array_equal(m, lm)


def test_best_index_int8_midpoints_go_up():
    # kvalues ... -10, 1, 13 ...: midpoint of 1 and 13 is 7 (2v = 14 = 1 + 13 -> upper level, index 9);
    # 6.9 stays at 1 (index 8); -115.5 is the midpoint of -127 and -104 -> index 1; NaN -> 0
    v = F32([7.0, 6.9, -115.5, -115.6, 1e9, -1e9, np.nan])
    assert KS.best_index_int8(KS.KVALUES_IQ4NL, v).tolist() == [9, 8, 1, 0, 15, 0, 0]


@pytest.mark.parametrize("qtype, expected", [
    ("q2_K", [0] * 84), ("q3_K", [0] * 110), ("q4_K", [0] * 144), ("q5_K", [0] * 176), ("q6_K", [0] * 210),
    # IQ4_NL: d = 0; the ntry-7 path re-indexes with id = 0: best_index(0) = 8 (level 1 is nearest to 0)
    ("iq4_nl", [0, 0] + [0x88] * 16),
    # IQ4_XS: d = -0/32 = -0.0 (fp16 0x8000); every sub-scale nearest_int(0) + 32 = 32: low nibble 0,
    # high 2 bits 0b10 -> scales_h = 0xAAAA, scales_l = 0; codes best_index(0·x) = 8
    ("iq4_xs", [0x00, 0x80, 0xAA, 0xAA, 0, 0, 0, 0] + [0x88] * 128),
])
def test_all_zero_block(qtype, expected):
    x = np.zeros(K.BLOCK_SIZE[qtype], F32)
    b = K.quantize(x, qtype)
    assert b.tolist() == expected
    assert np.all(K.dequantize(b, qtype) == 0)
    if qtype == "iq4_nl":  # quantize_row_iq4_nl_ref (ntry -1) keeps codes 0
        assert K.quantize(x, qtype, row_ref=True).tolist() == [0] * 18


def test_q4_K_one_value_in_a_zero_block():
    # group 0 = [1, 0 x 31]: min-max grid scale 1/15 = 0.06666667 fits exactly (error 0, no candidate is
    # better); other groups are flat (scale 0). max_scale = 1/15 -> sc[0] = nearest_int(63/(1/15)·(1/15)) = 63,
    # d = fp16(0.06666667/63 = 0.0010582011) = 2^-10·(1 + 86/1024) = 0x1456; dmin = 0.
    # Re-rounding on the stored scale: nearest_int(1 / (d·63 = 0.06669044)) = nearest_int(14.9946) = 15.
    x = np.zeros(256, F32)
    x[0] = 1.0
    b = K.quantize(x, "q4_K")
    assert b[:16].tolist() == [0x56, 0x14, 0, 0, 63] + [0] * 11
    assert b[16] == 15 and not b[17:].any()  # qs[0]: element 0 low nibble, element 32 high nibble
    y = K.dequantize(b, "q4_K")
    assert y[0] == F32(15) * (F32(np.float16(0.0010582011)) * F32(63)) and not y[1:].any()


def test_q6_K_constant_block():
    # each group of 16 ones: max = 1, iscale = -32: l = -32 everywhere, scale = Σx·l/Σl² = -1/32; the other
    # grids round to -31 (Σxl)²/Σl² = 16 = best: not strictly better. max_scale = -1/32, iscale = -128/-1/32 =
    # 4096: d = fp16(1/4096) = 0x0C00, sc = nearest_int(4096·(-1/32)) = -128 (0x80); codes l = -32 -> 0.
    b = K.quantize(np.ones(256, F32), "q6_K")
    assert b.tolist() == [0] * 192 + [0x80] * 16 + [0x00, 0x0C]
    assert np.all(K.dequantize(b, "q6_K") == 1.0)  # 2^-12 · (-128) · (0 - 32) = 1 exactly


# ---- quality, as ggml's tests/test-quantize-fns.cpp states it

@pytest.mark.parametrize("qtype, bound", [("q2_K", 0.0075), ("q3_K", 0.0040), ("q4_K", 0.002), ("q5_K", 0.002),
                                          ("q6_K", 0.002), ("iq4_nl", 0.002), ("iq4_xs", 0.002)])
def test_total_quantization_error_within_ggml_bounds(qtype, bound):
    # generate_data(0, 4096): 0.1 + 2·cosf(i); array_rmse = sqrt(Σ d²) / n (their definition)
    x = (0.1 + (F32(2) * np.cos(np.arange(32 * 128, dtype=F32))).astype(np.float64)).astype(F32)
    y = K.dequantize(K.quantize(x, qtype, row_ref=qtype == "iq4_nl"), qtype)  # ggml's from_float
    assert np.sqrt(np.sum((x.astype(np.float64) - y) ** 2)) / x.size < bound


def test_more_bits_less_error_and_imatrix_helps_where_it_weighs():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 512)).astype(F32)
    im = rng.gamma(0.3, 1.0, 512).astype(F32)
    err = {t: np.mean((w - K.dequantize(K.quantize(w, t), t)) ** 2) for t in TYPES}
    assert err["q2_K"] > err["q3_K"] > err["iq4_xs"] > err["q5_K"] > err["q6_K"]
    assert err["q3_K"] > err["q4_K"] > err["q5_K"]
    for t in TYPES:
        plain = np.sum(im * (w - K.dequantize(K.quantize(w, t), t)) ** 2)
        weighted = np.sum(im * (w - K.dequantize(K.quantize(w, t, im), t)) ** 2)
        assert weighted < 0.9 * plain, t


# ---- layout and bad input

def test_shapes_and_bits_per_weight():
    x = np.random.default_rng(1).standard_normal((2, 3, 512)).astype(F32)
    bpw = {"q2_K": 2.625, "q3_K": 3.4375, "q4_K": 4.5, "q5_K": 5.5, "q6_K": 6.5625, "iq4_nl": 4.5, "iq4_xs": 4.25}
    for t in TYPES:
        b = K.quantize(x, t)
        assert b.shape == (2, 3, 512 // K.BLOCK_SIZE[t] * K.BLOCK_BYTES[t]) and b.dtype == np.uint8
        assert 8 * K.BLOCK_BYTES[t] / K.BLOCK_SIZE[t] == bpw[t]
        assert K.dequantize(b, t).shape == x.shape
        assert np.array_equal(b[1, 2], K.quantize(x[1, 2], t))  # rows are independent


def test_row_ref_changes_only_iq4_nl_and_inputs_are_not_mutated():
    x = GOLD["x"][:4].copy()
    im = GOLD["imatrix"].copy()
    for t in TYPES:
        if t != "iq4_nl":
            assert np.array_equal(K.quantize(x, t, row_ref=True), K.quantize(x, t))
        K.quantize(x, t, im)
    assert np.array_equal(x, GOLD["x"][:4]) and np.array_equal(im, GOLD["imatrix"])
    x64 = x.astype(np.float64)
    assert np.array_equal(K.quantize(x64, "q4_K"), GOLD["q4_K"][:4])  # converted to float32 first


def test_bad_input():
    x = np.zeros(256, F32)
    with pytest.raises(ValueError, match="x: the last axis"):
        K.quantize(np.zeros(300, F32), "q4_K")
    with pytest.raises(ValueError, match="x: the last axis"):
        K.quantize(np.zeros(48, F32), "iq4_nl")
    with pytest.raises(ValueError, match="x contains NaN"):
        K.quantize(np.where(np.arange(256) == 3, np.nan, x), "q6_K")
    with pytest.raises(ValueError, match="x:? must be finite"):
        K.quantize(np.where(np.arange(256) == 3, np.inf, x), "q6_K")
    with pytest.raises(ValueError, match="x has values beyond the float32 range"):
        K.quantize(np.where(np.arange(256) == 3, 1e39, x.astype(np.float64)), "q6_K")
    with pytest.raises(ValueError, match="qtype"):
        K.quantize(x, "q4_k")
    with pytest.raises(ValueError, match=r"imatrix: expected shape \(256,\)"):
        K.quantize(x, "q4_K", np.ones(512, F32))
    with pytest.raises(ValueError, match="imatrix: weights must be non-negative"):
        K.quantize(x, "q4_K", -np.ones(256, F32))
    with pytest.raises(ValueError, match="imatrix has values beyond the float32 range"):
        K.quantize(x, "q4_K", np.full(256, 1e300))
    with pytest.raises(ValueError, match="qtype"):
        K.quantize(x, ["q4_K"])
    with pytest.raises(ValueError, match="ls: expected shape"):
        K.pack_scale_min_k4(np.zeros((2, 4), np.int64), np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match="imatrix contains NaN"):
        K.quantize(x, "q4_K", np.full(256, np.nan, F32))
    with pytest.raises(ValueError, match="row_ref"):
        K.quantize(x, "iq4_nl", np.ones(256, F32), row_ref=True)
    with pytest.raises(ValueError, match="data: expected uint8"):
        K.dequantize(np.zeros(144, np.int8), "q4_K")
    with pytest.raises(ValueError, match="data: the last axis must be a multiple of 144"):
        K.dequantize(np.zeros(145, np.uint8), "q4_K")
    with pytest.raises(ValueError, match="x: one super-block"):
        KR.quantize_q4_K_block_ref(np.zeros(32, F32))
