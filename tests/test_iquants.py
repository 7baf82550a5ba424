"""IQ1 / IQ2 / IQ3 grid types: dequantization bit-exact with llama.cpp (C goldens) and gguf.quants, loop twin, grids."""
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from refquant import ggml_ops
from refquant.formats import iquants as iq

F32 = np.float32
GOLDENS = os.path.join(os.path.dirname(__file__), "data", "iq_goldens.npz")
TYPES = tuple(iq.BLOCK_BYTES)


def bits(a):
    return np.asarray(a, F32).view(np.uint32)  # compare float32 bit patterns: -0.0 != +0.0


def random_blocks(rng, qtype, nb):
    """Random bytes with a finite fp16 super-scale d (for iq1_m spread over the top nibbles of its scales)."""
    blk = rng.integers(0, 256, (nb, iq.BLOCK_BYTES[qtype]), dtype=np.uint8)
    d = (rng.standard_normal(nb) * 0.01).astype("<f2").view("<u2")
    if qtype == "iq1_m":
        sc = blk[:, 48:56].copy().view("<u2")
        for k in range(4):
            sc[:, k] = (sc[:, k] & 0x0FFF) | (((d >> (4 * k)) & 0xF) << 12)
        blk[:, 48:56] = sc.view(np.uint8)
    else:
        blk[:, 0:2] = d.view(np.uint8).reshape(nb, 2)
    return blk


# ---------------------------------------------------------------------------------------------- oracles
@pytest.mark.parametrize("qtype", TYPES)
def test_llamacpp_dequantize_goldens(qtype):
    # recorded from llama.cpp b11739's dequantize_row_<qtype> (tests/data/make_iq_goldens.py --record):
    # 24 random blocks per type, including d = +0, -0, the smallest normal and a subnormal fp16
    z = np.load(GOLDENS)
    blocks, want = z[f"{qtype}_blocks"], z[f"{qtype}_deq"]
    assert np.array_equal(bits(iq.dequantize(blocks, qtype)), bits(want))
    assert np.array_equal(bits(ggml_ops.dequantize(blocks, qtype)), bits(want))  # reachable as the other types


@pytest.mark.parametrize("qtype", TYPES)
def test_gguf_quants_dequantize_agrees(qtype):
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize
    blk = random_blocks(np.random.default_rng(list(TYPES).index(qtype)), qtype, 64)
    theirs = dequantize(blk.reshape(-1), getattr(gguf.GGMLQuantizationType, qtype.upper())).reshape(64, 256)
    assert np.array_equal(bits(iq.dequantize(blk, qtype)), bits(theirs))


@pytest.mark.parametrize("qtype", TYPES)
def test_vectorised_equals_loop_twin(qtype):
    blk = random_blocks(np.random.default_rng(100 + list(TYPES).index(qtype)), qtype, 6)
    twin = np.stack([iq.dequantize_block_ref(b.tobytes(), qtype) for b in blk])
    assert np.array_equal(bits(iq.dequantize(blk, qtype)), bits(twin))  # tolerance 0


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(TYPES), st.integers(0, 2**32 - 1))
def test_vectorised_equals_loop_twin_property(qtype, seed):
    blk = random_blocks(np.random.default_rng(seed), qtype, 1)
    assert np.array_equal(bits(iq.dequantize(blk, qtype)[0]), bits(iq.dequantize_block_ref(blk[0].tobytes(), qtype)))


# ---------------------------------------------------------------------------------------------- hand goldens
def test_iq2_xxs_hand_block():
    # d = 1.0 (fp16 0x3C00). Sub-block 0: grid indices 0, 1, 0, 0; its u32 = s << 28 | sign indices
    # (l = 0: 1, l = 1: 0, ...), s = 3 -> db = 1 · (0.5 + 3) · 0.25 = 0.875.
    # iq2xxs_grid[0] = 0x0808080808080808: eight 8s -> 0.875 · 8 = 7.0;
    # iq2xxs_grid[1] = 0x080808080808082b: byte 0 (value 0) = 0x2b = 43 -> 0.875 · 43 = 37.625, the rest 7.0.
    # Sign index 1 -> ksigns_iq2xs[1] = 129 = bits 0 and 7: values 0 and 7 of group 0 negative (parity even).
    blk = np.zeros(66, np.uint8)
    blk[0:2] = np.array([1.0], "<f2").view(np.uint8)
    blk[2:6] = [0, 1, 0, 0]
    blk[6:10] = np.array([(3 << 28) | 1], "<u4").view(np.uint8)
    y = iq.dequantize(blk, "iq2_xxs")
    assert y[:8].tolist() == [-7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0, -7.0]
    assert y[8:16].tolist() == [37.625] + [7.0] * 7
    assert y[16:32].tolist() == [7.0] * 16
    # sub-blocks 1..7: indices 0, u32 = 0 -> s = 0, db = 0.5 · 0.25 = 0.125, values 0.125 · 8 = 1.0
    assert y[32:].tolist() == [1.0] * 224


def test_iq3_s_hand_block():
    # d = 0.5; scales[0] = 0x21: sub-block 0 s = 1 -> db = 0.5 · (1 + 2·1) = 1.5, sub-block 1 s = 2 -> 2.5.
    # qs[0] = 4, qh[0] bit 0 = 1 -> index 256 + 4 = 260 for point 0 of sub-block 0; the other points index 0.
    # iq3s_grid[0] = 0x01010101 -> 1.5 · 1; signs[0] = 0b10 -> value 1 negative.
    blk = np.zeros(110, np.uint8)
    blk[0:2] = np.array([0.5], "<f2").view(np.uint8)
    blk[2] = 4
    blk[66] = 1
    blk[74] = 0b10
    blk[106] = 0x21
    y = iq.dequantize(blk, "iq3_s")
    want = 1.5 * iq.grid("iq3s_grid")[260].astype(float)
    want[1] = -want[1]
    assert y[:4].tolist() == want.tolist()
    assert y[4:8].tolist() == [1.5] * 4  # point 1 of group 0: index 0, sign bits 4-7 clear
    assert y[32:40].tolist() == [2.5] * 8


def test_iq1_s_hand_block():
    # d = 2.0; qh[0] = 0x8000 | 2 << 12 -> s = 2, dl = 2 · (2·2 + 1) = 10, δ = −1/8; index 0 for all groups:
    # iq1s_grid[0] = 0xffffffffffffffff = eight −1 -> 10 · (−1 − 0.125) = −11.25.
    # The other sub-blocks: qh = 0 -> dl = 2, δ = +1/8: 2 · (−1 + 0.125) = −1.75.
    blk = np.zeros(50, np.uint8)
    blk[0:2] = np.array([2.0], "<f2").view(np.uint8)
    blk[34:36] = np.array([0x8000 | (2 << 12)], "<u2").view(np.uint8)
    y = iq.dequantize(blk, "iq1_s")
    assert y[:32].tolist() == [-11.25] * 32
    assert y[32:].tolist() == [-1.75] * 224


def test_iq1_m_scale_is_spread_over_four_nibbles():
    # fp16 1.0 = 0x3C00: nibbles (low first) 0, 0, C, 3 go to the top nibbles of scales u16 0..3. Scale bits 0:
    # dl = 1 · (2·0 + 1) = 1, δ = +1/8, iq1s_grid[0] = −1 -> −0.875 everywhere.
    blk = np.zeros(56, np.uint8)
    blk[48:56] = np.array([0x0000, 0x0000, 0xC000, 0x3000], "<u2").view(np.uint8)
    assert iq.dequantize(blk, "iq1_m").tolist() == [-0.875] * 256


# ---------------------------------------------------------------------------------------------- the grids
@pytest.mark.parametrize("name,first,last", [
    # first and last entries of each table as printed in ggml-common.h (little-endian: byte j = value j)
    ("iq2xxs_grid", 0x0808080808080808, 0x2b2b2b1908081908),
    ("iq2xs_grid", 0x0808080808080808, 0x2b2b2b2b2b2b2b2b),
    ("iq2s_grid", 0x0808080808080808, 0x2b2b2b2b2b2b2b2b),
    ("iq3xxs_grid", 0x04040404, 0x3e341c04),
    ("iq3s_grid", 0x01010101, 0x0f0f0101),
    ("iq1s_grid", 0xffffffffffffffff, 0x0101010101010101),
])
def test_grid_tables_match_the_header(name, first, last):
    g = iq.grid(name)
    width = g.shape[1]
    assert int.from_bytes(g[0].tobytes(), "little") == first
    assert int.from_bytes(g[-1].tobytes(), "little") == last
    assert len({r.tobytes() for r in g}) == len(g)  # no repeated point
    assert width == (4 if name.startswith("iq3") else 8)


def test_ksigns_is_the_parity_table():
    # ggml-common.h ksigns_iq2xs starts 0, 129, 130, 3, 132, 5, 6, 135: bit 7 set iff i has an odd popcount
    assert iq.ksigns()[:8].tolist() == [0, 129, 130, 3, 132, 5, 6, 135]
    assert all(bin(int(v)).count("1") % 2 == 0 for v in iq.ksigns())  # every stored sign pattern: even minus count


@pytest.mark.parametrize("name", ["iq2xxs_grid", "iq2xs_grid"])
def test_iq2_signed_points_halved_lie_in_e8(name):
    # in units (8, 25, 43) -> (1, 3, 5): all coordinates odd; with an even number of minus signs the sum is
    # ≡ 0 (mod 4), so v / 2 has half-odd coordinates with an even sum: a point of E8's coset D8 + ½.
    units = np.vectorize({8: 1, 25: 3, 43: 5}.get)(iq.grid(name))  # (n, 8)
    signs = 1 - 2 * ((iq.ksigns()[:, None] >> np.arange(8)) & 1)  # (128, 8)
    v = units[:, None, :] * signs[None]  # every stored point with every stored sign pattern
    assert np.all(v % 2 == 1) and np.all(v.sum(axis=2) % 4 == 0)


def test_type_traits_match_gguf():
    gguf = pytest.importorskip("gguf")
    from gguf.constants import GGML_QUANT_SIZES
    for t in ggml_ops.TYPE_TRAITS.values():
        qt = gguf.GGMLQuantizationType(t.type_id)
        assert qt.name.lower() == t.name.lower()
        assert GGML_QUANT_SIZES[qt] == (t.block_size, t.type_size)
    assert ggml_ops.TYPE_TRAITS["iq2_xxs"].bits_per_weight == 2.0625  # 66 bytes / 256
    assert [t for t, v in ggml_ops.TYPE_TRAITS.items() if not v.quantize] == ["iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s",
                                                                            "iq3_s", "iq2_s", "iq1_m"]


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("qtype", TYPES)
def test_quantize_is_refused(qtype):
    with pytest.raises(ValueError, match="dequantize-only"):
        ggml_ops.quantize(np.zeros((1, 256), F32), qtype)


@pytest.mark.parametrize("call,match", [
    (lambda: iq.dequantize(np.zeros(65, np.uint8), "iq2_xxs"), "multiple of 66 bytes"),
    (lambda: iq.dequantize(np.zeros(66, np.int8), "iq2_xxs"), "expected uint8"),
    (lambda: iq.dequantize(np.zeros(66, np.uint8), "iq5_xxs"), "qtype: unknown IQ type"),
    (lambda: iq.dequantize(np.r_[np.array([np.inf], "<f2").view(np.uint8), np.zeros(64, np.uint8)], "iq2_xxs"),
     "block 0 has a non-finite"),
    (lambda: iq.dequantize(np.r_[np.zeros(48, np.uint8), np.array([0, 0, 0xF000, 0x7000], "<u2").view(np.uint8)],
                           "iq1_m"), "non-finite fp16 super-scale"),  # d bits 0x7F00 -> NaN
    (lambda: iq.dequantize_block_ref(bytes(65), "iq2_xxs"), "one iq2_xxs block is 66 bytes"),
    (lambda: iq.grid("ksigns_iq2xs"), "name: unknown grid"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_input_not_mutated_and_shapes():
    blk = random_blocks(np.random.default_rng(3), "iq3_xxs", 6).reshape(2, 3 * 98)
    keep = blk.copy()
    y = iq.dequantize(blk, "iq3_xxs")
    assert y.shape == (2, 768) and y.dtype == F32
    assert np.array_equal(blk, keep)
    assert np.array_equal(iq.dequantize(blk.tobytes(), "iq3_xxs"), y.reshape(-1))
