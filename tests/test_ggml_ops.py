"""ggml block formats: hand-computed golden blocks, the loop twin, round trips, bad input."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from refquant import ggml_ops as G

F32 = np.float32
ONE_FP16 = [0x00, 0x3C]  # 1.0 in IEEE half, little-endian


def test_q8_0_golden_half_away_from_zero():
    # amax 127 -> d = 1, id = 1; roundf: 0.5 -> 1, -0.5 -> -1, 2.5 -> 3, -1.5 -> -2
    x = np.zeros(32, F32)
    x[:6] = [127, 0.5, -0.5, 2.5, -1.5, -127]
    b = G.quantize(x, "q8_0")
    assert b.tolist()[:2] == ONE_FP16
    assert b[2:8].view(np.int8).tolist() == [127, 1, -1, 3, -2, -127]
    assert b.shape == (34,)


def test_q4_0_golden_signed_max_and_nibble_order():
    # the largest |x| is -8 (first), so d = -8 / -8 = 1 and id = 1; q = min(15, trunc(x + 8.5)):
    # -8 -> 0, 0 -> 8, 0.5 -> 9 (9.0 truncates to 9: ties go up), -0.5 -> 8, 8 -> 16 -> 15
    x = np.zeros(32, F32)
    x[0], x[1], x[2], x[16], x[17] = -8, 0.5, -0.5, 8, 7
    b = G.quantize(x, "q4_0")
    assert b[:2].tolist() == ONE_FP16
    # byte j: element j in the low nibble, element j + 16 in the high nibble
    assert b[2:5].tolist() == [0 | (15 << 4), 9 | (15 << 4), 8 | (8 << 4)]
    assert G.dequantize(b, "q4_0")[[0, 1, 2, 16, 17]].tolist() == [-8, 1, 0, 7, 7]


def test_all_zero_blocks_are_guarded():
    for qt, q in [("q4_0", 0x88), ("q5_0", 0x00)]:
        b = G.quantize(np.zeros(32, F32), qt)
        # d = 0 / -8 = -0.0 (fp16 0x8000, as in C), id = 0: q = 8 (q4_0) / 16 (q5_0)
        assert b[:2].tolist() == [0x00, 0x80] and b[-16:].tolist() == [q] * 16
        assert np.all(G.dequantize(b, qt) == 0)
    b = G.quantize(np.zeros(32, F32), "q5_0")
    assert b[2:6].tolist() == [0xFF, 0xFF, 0xFF, 0xFF]  # 16 = 0b10000: every 5th bit set
    assert np.all(G.dequantize(G.quantize(np.zeros(32, F32), "q8_0"), "q8_0") == 0)


def test_q4_1_golden():
    # min 0, max 15: d = 1, m = 0; q = min(15, trunc(x + 0.5)): 0.5 -> 1, 1.49 -> 1, 15 -> 15
    x = np.zeros(32, F32)
    x[:3] = [0.5, 1.49, 15.0]
    b = G.quantize(x, "q4_1")
    assert b[:4].tolist() == ONE_FP16 + [0, 0]
    assert (b[4:7] & 0x0F).tolist() == [1, 1, 15]


def test_q5_1_golden_high_bits():
    # min 0, max 31: d = 1; element j has q = j: the 5th bit is set for j >= 16, i.e. qh = 0xFFFF0000
    x = np.arange(32, dtype=F32)
    b = G.quantize(x, "q5_1")
    assert b[:4].tolist() == ONE_FP16 + [0, 0]
    assert b[4:8].tolist() == [0x00, 0x00, 0xFF, 0xFF]
    assert b[8].tolist() == 0 | (0 << 4)  # element 0 (q 0) and element 16 (q 16: low nibble 0)
    assert np.array_equal(G.dequantize(b, "q5_1"), x)


def test_fp16_scale_underflow_zeroes_tiny_blocks():
    # found by hypothesis: a block of 2e-22 has d = 2e-22 / 127, far below fp16's smallest subnormal
    # (2^-24 = 6e-8), so d is stored as 0 and the block dequantizes to 0 — a property of the format
    b = G.quantize(np.full(32, 1.9551902e-22, F32), "q8_0")
    assert b[:2].tolist() == [0, 0] and b[2:].view(np.int8).tolist() == [127] * 32
    assert np.all(G.dequantize(b, "q8_0") == 0)


@pytest.mark.parametrize("qt", list(G.BLOCK_BYTES))
def test_subnormal_scale_is_treated_as_zero(qt):
    # found by hypothesis: amax = 1.1754944e-38 gives d subnormal and 1/d = +Inf in float32; C would
    # cast 0·Inf = NaN to an integer (undefined); refquant uses id = 0, as for an all-zero block
    x = np.zeros(32, F32)
    x[1] = 1.1754944e-38
    b = G.quantize(x, qt)
    assert b.tobytes() == G.quantize_block_ref(x, qt)
    assert np.all(G.dequantize(b, qt) == 0)


def test_signed_zeros_follow_c_comparisons():
    # found by hypothesis: C's `v < min` keeps the first of +0.0 / -0.0, NumPy's min may return -0.0
    x = np.ones(32, F32)
    x[1], x[2] = 0.0, -0.0
    assert G.quantize(x, "q4_1")[2:4].tolist() == [0, 0]  # m = +0.0
    x[1], x[2] = -0.0, 0.0
    assert G.quantize(x, "q4_1")[2:4].tolist() == [0, 0x80]  # m = -0.0


@given(hnp.arrays(F32, (2, 64), elements=st.floats(-1e4, 1e4, width=32) | st.sampled_from([0.0, 0.5, -8.5])),
       st.sampled_from(list(G.BLOCK_BYTES)))
def test_vectorised_equals_loop_twin_and_error_bound(x, qt):
    b = G.quantize(x, qt)
    assert b.shape == (2, 2 * G.BLOCK_BYTES[qt])
    blocks = x.reshape(-1, 32)
    assert b.tobytes() == b"".join(G.quantize_block_ref(blk, qt) for blk in blocks)
    y = G.dequantize(b, qt).reshape(-1, 32)
    levels = {"q8_0": 254, "q4_0": 15, "q4_1": 15, "q5_0": 31, "q5_1": 31}[qt]
    span = np.where(np.isin(qt, ["q4_1", "q5_1"]), np.ptp(blocks, axis=1), 2 * np.abs(blocks).max(axis=1))
    # within one step (d) plus the fp16 rounding of d and m, where d is a normal fp16 (>= 2^-14)
    ok = span / levels >= 2.0**-14
    err = np.abs(y - blocks).max(axis=1)
    assert np.all((err <= span / levels * 1.01 + 1e-3 * np.abs(blocks).max(axis=1))[ok])


@pytest.mark.parametrize("call, match", [
    (lambda: G.quantize(np.ones(31, F32), "q8_0"), "multiple of 32"),
    (lambda: G.quantize(np.ones(32, F32), "q3_Q"), "qtype: unknown"),
    (lambda: G.quantize(np.ones(32, F32), "q4_0", np.ones(32)), "imatrix: the legacy type"),
    (lambda: G.quantize(np.full(32, np.nan, F32), "q4_0"), "x contains NaN"),
    (lambda: G.quantize(np.full(32, np.inf, F32), "q4_0"), "x must be finite"),
    (lambda: G.dequantize(np.zeros(33, np.uint8), "q8_0"), "multiple of 34 bytes"),
    (lambda: G.dequantize(np.zeros(34, np.int8), "q8_0"), "expected uint8"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- bad input, closed (issue 9)
@pytest.mark.parametrize("qtype, big", [("q8_0", 9e6), ("q4_0", 6e5), ("q5_0", 1.1e6), ("q4_1", 1e6), ("q5_1", 2.1e6)])
def test_block_whose_fp16_scale_overflows_raises(qtype, big):
    # q8_0: d = 9e6 / 127 = 70866 > 65504 (fp16 max): ggml would store Inf and dequantize 0 · Inf = NaN
    x = np.zeros((2, 32), np.float32)
    x[1, 3] = big
    with pytest.raises(ValueError, match="x: block 1 needs the scale d"):
        G.quantize(x, qtype)
    with pytest.raises(ValueError, match="beyond fp16"):
        G.quantize_block_ref(x[1], qtype)


def test_block_whose_fp16_minimum_overflows_raises():
    # q4_1 stores the block minimum m in fp16: -7e4 rounds to -Inf there
    x = np.full(32, -7e4, np.float32)
    x[0] = -6.99e4
    with pytest.raises(ValueError, match="the minimum m"):
        G.quantize(x, "q4_1")


def test_largest_fp16_scale_round_trips_without_nan():
    # d = 65504 exactly: amax = 65504 · 127 for q8_0; the round trip is finite
    x = np.zeros(32, np.float32)
    x[0] = np.float32(65504 * 127)
    y = G.dequantize(G.quantize(x, "q8_0"), "q8_0")
    assert np.all(np.isfinite(y)) and y[0] == np.float32(65504 * 127)


def test_dequantize_refuses_non_finite_stored_scales():
    blk = G.quantize(np.ones(32, np.float32), "q8_0")
    blk[:2] = np.array([np.inf], "<f2").view(np.uint8)
    with pytest.raises(ValueError, match="data: block 0 has a non-finite fp16"):
        G.dequantize(blk, "q8_0")


def test_k_quants_go_through_the_same_entry_points():
    # ggml_ops.quantize / dequantize forward the k-quants to formats.kquants, byte for byte
    from refquant.formats import kquants
    x = np.random.default_rng(3).standard_normal((2, 256)).astype(F32)
    for t in ("q4_K", "q6_K", "iq4_nl"):
        assert np.array_equal(G.quantize(x, t), kquants.quantize(x, t))
        assert np.array_equal(G.dequantize(G.quantize(x, t), t), kquants.dequantize(kquants.quantize(x, t), t))


def test_mxfp4_and_the_iq_types_go_through_the_same_entry_points():
    # ggml's MXFP4 block (formats.ggml_mxfp4) and the dequantize-only IQ grid types (formats.iquants)
    from refquant.formats import ggml_mxfp4, iquants, mx
    x = np.random.default_rng(4).standard_normal((2, 64)).astype(F32)
    b = G.quantize(x, "mxfp4")
    assert np.array_equal(b, ggml_mxfp4.ggml_mxfp4_quantize(x)) and b.shape == (2, 2 * 17)
    assert np.array_equal(G.dequantize(b, "mxfp4"), ggml_mxfp4.ggml_mxfp4_dequantize(b))
    assert G.quantize_tensor(x, "mxfp4").storage_bits() == 4 * 17 * 8
    assert mx.ggml_mxfp4_quantize is ggml_mxfp4.ggml_mxfp4_quantize  # still importable where it was
    blk = np.zeros((1, 66), np.uint8)
    assert np.array_equal(G.dequantize(blk, "iq2_xxs"), iquants.dequantize(blk, "iq2_xxs"))
    with pytest.raises(ValueError, match="imatrix: mxfp4"):
        G.quantize(x, "mxfp4", imatrix=np.ones(64))


def test_type_traits_cover_every_entry_point():
    # every type in TYPE_TRAITS dequantizes through G.dequantize; the quantizable ones round-trip their block shape
    rng = np.random.default_rng(5)
    for t in G.TYPE_TRAITS.values():
        x = rng.standard_normal((1, t.block_size)).astype(F32)
        if t.quantize:
            b = G.quantize(x, t.name)
        else:
            b = np.zeros((1, t.type_size), np.uint8)
        assert b.shape == (1, t.type_size)
        assert G.dequantize(b, t.name).shape == (1, t.block_size)
