"""MX formats (OCP Microscaling v1.0), ggml's MXFP4 block and NVFP4: hand goldens, oracles, loop twins."""
import os

import numpy as np
import pytest
from hypothesis import example, given, strategies as st
from hypothesis.extra import numpy as hnp

from refquant.formats import mx, nvfp4
from refquant.formats.mx import (ELEMENTS, SCALE_RULES, MXTensor, code_values, e8m0_to_float, encode_elements,
                                 ggml_mxfp4_dequantize, ggml_mxfp4_quantize, ggml_mxfp4_quantize_block_ref,
                                 mx_dequantize, mx_quantize)
from refquant.formats.mx_ref import mx_quantize_ref
from refquant.formats.nvfp4 import nvfp4_dequantize, nvfp4_quantize, nvfp4_quantize_ref

F32 = np.float32
GOLDENS = os.path.join(os.path.dirname(__file__), "data", "mx_goldens.npz")
BELOW_4 = float(np.nextafter(F32(4), F32(0)))  # 4 − 2^−22 = 3.99999976
BELOW_8 = float(np.nextafter(F32(8), F32(0)))  # 8 − 2^−21 = 7.99999952


def block(*vals, n=32):
    x = np.zeros((1, n), F32)
    x[0, :len(vals)] = vals
    return x


# ---------------------------------------------------------------------------------------------- hand goldens
def test_amax_power_of_two_same_scale_under_every_rule():
    # amax = 4 = 2^2, emax(E2M1) = 2: floor = ceil = even = 2 − 2 = 0; rceil: ceil(log2(4/6)) = 0 -> X = 1, byte 127
    x = block(4.0, 1.25, -1.25, 0.75, 0.25, -0.25, 2.5, -3.5)
    # E2M1 magnitude index: 0 0.5 1 1.5 2 3 4 6 -> 0…7, sign bit 8. Ties: 1.25 (1|1.5), 0.75 (0.5|1), 0.25 (0|0.5),
    # 2.5 (2|3), 3.5 (3|4): even index vs the larger magnitude
    even = [6, 2, 8 | 2, 2, 0, 8 | 0, 4, 8 | 6]
    away = [6, 3, 8 | 3, 2, 1, 8 | 1, 5, 8 | 6]
    for rule in SCALE_RULES:
        q = mx_quantize(x, "fp4_e2m1", scale_rounding=rule)
        assert q.scales.tolist() == [[127]]
        assert q.codes[0, :8].tolist() == even and not q.codes[0, 8:].any()
    assert mx_quantize(x, element_rounding="half_away").codes[0, :8].tolist() == away
    assert mx_quantize(x).dequantize()[0, :8].tolist() == [4.0, 1.0, -1.0, 1.0, 0.0, -0.0, 2.0, -4.0]


def test_amax_just_below_a_power_of_two():
    # a = 4 − 2^−22: floor(log2 a) = 1 -> s = 1 − 2 = −1 (byte 126, X = 0.5); a / X = 7.9999995 is clamped to 6
    x = block(BELOW_4, 1.0, 0.3)
    q = mx_quantize(x)
    assert q.scales.tolist() == [[126]] and q.codes[0, :3].tolist() == [7, 4, 1]  # 6, 2, 0.5 (0.3/0.5 = 0.6 -> 0.5)
    assert q.dequantize()[0, :3].tolist() == [3.0, 1.0, 0.25]
    # ceil: ceil(log2 a) = 2 -> s = 0; even: significand 1.99999988 >= 2 − 2^−2 -> s = 1 + 1 − 2 = 0;
    # rceil: fl32(a / 6) = 0.6666666 -> ceil(log2) = 0. X = 1: a -> 4 (code 6), 1 -> 2, 0.3 -> 0.5 (code 1)
    for rule in ("ceil", "even", "rceil"):
        q = mx_quantize(x, scale_rounding=rule)
        assert q.scales.tolist() == [[127]] and q.codes[0, :3].tolist() == [6, 2, 1]


@pytest.mark.parametrize("elem", ELEMENTS)
@pytest.mark.parametrize("rule", SCALE_RULES)
def test_all_zero_block(elem, rule):
    # no log2 of 0: the smallest scale, byte 0 (2^−127); float codes keep −0's sign bit, int8 has no −0
    x = np.zeros((2, 32), F32)
    x[1, 3] = -0.0
    q = mx_quantize(x, elem, scale_rounding=rule)
    assert q.scales.tolist() == [[0], [0]]
    neg_zero = 0 if elem == "int8" else 1 << (ELEMENTS[elem].bits - 1)
    assert q.codes[1, 3] == neg_zero and np.count_nonzero(q.codes) == (neg_zero > 0)
    assert np.array_equal(q.dequantize(), x) and np.array_equal(np.signbit(q.dequantize()), np.signbit(x) & (elem != "int8"))


def test_floor_saturates_where_ceil_does_not():
    # amax 7: floor s = 2 − 2 = 0, 7 / 1 clamped to 6 (code 7); 0.75 is a tie 0.5|1 -> 1 (code 2)
    # ceil: s = 3 − 2 = 1, X = 2: 3.5 is a tie 3|4 -> 4 (code 6, even index); 0.375 -> 0.5 (code 1)
    # rceil: fl32(7/6) = 1.1666666 -> s = 1; even: significand 1.75 >= 1.75 -> s = 2 + 1 − 2 = 1
    x = block(7.0, 0.75)
    assert mx_quantize(x).codes[0, :2].tolist() == [7, 2] and mx_quantize(x).dequantize()[0, 0] == 6.0
    for rule in ("ceil", "rceil", "even"):
        q = mx_quantize(x, scale_rounding=rule)
        assert q.scales.tolist() == [[128]] and q.codes[0, :2].tolist() == [6, 1]
        assert q.dequantize()[0, :2].tolist() == [8.0, 1.0]
    # amax 6.5 (significand 1.625 < 1.75): even keeps floor's X = 1 and clamps to 6; ceil: 3.25 -> 3 (code 5)
    assert mx_quantize(block(6.5), scale_rounding="even").codes[0, 0] == 7
    assert mx_quantize(block(6.5), scale_rounding="ceil").codes[0, 0] == 5
    # E4M3: amax 480: floor s = 8 − 8 = 0, 480 clamped to 448 = 0 1111 110 = 0x7E;
    # ceil s = 9 − 8 = 1: 240 = 1.875·2^7 = 0 1110 111 = 0x77
    assert mx_quantize(block(480.0), "fp8_e4m3").codes[0, 0] == 0x7E
    assert mx_quantize(block(480.0), "fp8_e4m3", scale_rounding="ceil").codes[0, 0] == 0x77


@pytest.mark.parametrize("elem,top", [("fp8_e4m3", 0x7E), ("fp8_e5m2", 0x7B), ("fp6_e2m3", 0x1F), ("fp6_e3m2", 0x1F),
                                      ("fp4_e2m1", 0x7), ("int8", 0x7F)])
def test_largest_code_at_amax_m_times_8(elem, top):
    # amax = M · 2^3 with M = 448 = 1.75·2^8, 57344 = 1.75·2^15, 7.5 = 1.875·2^2, 28 = 1.75·2^4, 6 = 1.5·2^2,
    # 127/64: floor(log2 amax) = emax + 3 -> s = 3 (byte 130), amax / X = M, the largest code; −amax: its sign bit
    f = ELEMENTS[elem]
    q = mx_quantize(block(f.max_normal * 8, -f.max_normal * 8), elem)
    neg = 0x81 if elem == "int8" else top | (1 << (f.bits - 1))  # int8: −127 = 0x81 (two's complement)
    assert q.scales.tolist() == [[130]] and q.codes[0, :2].tolist() == [top, neg]


def test_mxint8_goldens():
    # amax 1.5: floor(log2 1.5) = 0 = emax -> s = 0; q = round(64 x): 1.5 -> 96, −0.5 -> −32 = 0xE0,
    # 1/128 -> 0.5 (tie: even 0, away 1), −1/128 -> −0.5 (even 0, away −1 = 0xFF), 3/128 -> 1.5 (tie: 2 either way)
    x = block(1.5, -0.5, 1 / 128, -1 / 128, 3 / 128)
    assert mx_quantize(x, "int8").codes[0, :5].tolist() == [96, 0xE0, 0, 0, 2]
    assert mx_quantize(x, "int8", element_rounding="half_away").codes[0, :5].tolist() == [96, 0xE0, 1, 0xFF, 2]
    # 1.999 · 64 = 127.94 rounds to 128, clamped to 127; ceil: s = 1, 1.5 -> round(48) = 48
    assert mx_quantize(block(1.999), "int8").codes[0, 0] == 127
    assert mx_quantize(x, "int8", scale_rounding="ceil").codes[0, 0] == 48


def test_scale_range_ends():
    # amax 2^127: floor s = 127 − 2 = 125 (byte 252); amax 2^−149 (float32's smallest): s = −151 -> clamped to
    # −127 (byte 0) and 2^−149 / 2^−127 = 2^−22 rounds to 0 in E2M1
    assert mx_quantize(block(2.0 ** 127)).scales.tolist() == [[252]]
    q = mx_quantize(block(2.0 ** -149))
    assert q.scales.tolist() == [[0]] and not q.codes.any()
    # MXINT8 with ceil / rceil on amax 1.5 · 2^127 needs 2^128: E8M0 has none
    with pytest.raises(ValueError, match="beyond E8M0"):
        mx_quantize(block(1.5 * 2.0 ** 127), "int8", scale_rounding="ceil")


def test_layout_axis_partial_blocks_and_storage():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3)).astype(F32)
    q0 = mx_quantize(x, "fp6_e3m2", axis=0)
    qt = mx_quantize(x.T, "fp6_e3m2")
    assert np.array_equal(q0.codes, qt.codes.T) and np.array_equal(q0.scales, qt.scales.T)
    assert q0.scales.shape == (2, 3) and q0.shape == (40, 3)  # 40 = 32 + a partial block of 8
    assert np.array_equal(q0.dequantize(), qt.dequantize().T)
    assert q0.storage_bits() == 120 * 6 + 6 * 8  # 6-bit codes and one E8M0 byte per block
    # a partial block is the zero-padded full block
    pad = mx_quantize(np.concatenate([x.T, np.zeros((3, 24), F32)], axis=1), "fp6_e3m2")
    assert np.array_equal(pad.codes[:, :40], qt.codes) and np.array_equal(pad.scales, qt.scales)
    assert mx_quantize(rng.standard_normal((2, 64)), "fp4_e2m1").storage_bits() == 128 * 4 + 4 * 8  # 4.25 bits


def test_e8m0_and_dequantize_goldens():
    assert e8m0_to_float(np.array([0, 127, 254], np.uint8)).tolist() == [2.0 ** -127, 1.0, 2.0 ** 127]
    # E2M1 codes 7 (6), 0xF (−6), 3 (1.5) with byte 125: X = 2^−2
    assert mx_dequantize(np.array([[7, 0xF, 3]], np.uint8), np.array([[125]], np.uint8)).tolist() == [[1.5, -1.5, 0.375]]


# ------------------------------------------------------------------------------------------------- ggml MXFP4
def test_ggml_mxfp4_hand_golden():
    # a = 8 − 2^−21: log2f(a) = 3 − 8.6e−8 rounds to 3.0f, so e = 3 − 2 + 127 = 128 (the spec's floor gives 2:
    # byte 127), d = 2^(128 − 128) = 1 on kvalues {0 1 2 3 4 6 8 12}: a -> 8 (index 6), 1 -> 1, ties toward
    # zero: 0.5 -> 0, −0.5 -> 0 (code 0, not −0), 5 -> 4 (index 4), −5 -> 8|4, 7 -> 6 (index 5), −7 -> 8|5;
    # element 16 (3.0 -> index 3) goes to the high nibble of qs[0]
    x = block(BELOW_8, 1.0, 0.5, -0.5, 5.0, -5.0, 7.0, -7.0)
    x[0, 16] = 3.0
    want = bytes([128, 0x36, 1, 0, 0, 4, 12, 5, 13] + [0] * 8)
    assert ggml_mxfp4_quantize(x).tobytes() == want == ggml_mxfp4_quantize_block_ref(x[0])
    assert ggml_mxfp4_dequantize(want)[:8].tolist() == [8.0, 1.0, 0.0, 0.0, 4.0, -4.0, 6.0, -6.0]
    assert mx_quantize(x).scales.tolist() == [[127]]


def test_ggml_mxfp4_zero_and_tiny_blocks():
    assert ggml_mxfp4_quantize(np.zeros(32, F32)).tobytes() == bytes(17)
    # amax 2^−126: floor(log2f) − 2 + 127 = −1, an undefined C cast that x86-64 wraps to 255 (d = 2^127)
    out = ggml_mxfp4_quantize(block(-(2.0 ** -126)))
    assert out[0, 0] == 255 and not out[0, 1:].any()


# ------------------------------------------------------------------------------------------------------ NVFP4
def test_nvfp4_hand_goldens():
    # single level: amax 6 -> b = 1 -> E4M3 1.0 = 0 0111 000 = 0x38, r = 1: 6 -> 7, 3 -> 5, 1 -> 2,
    # 0.25 (tie 0|0.5) -> 0, −0.25 -> −0 (8)
    t = nvfp4_quantize(block(6.0, 3.0, 1.0, 0.25, -0.25, n=16), per_tensor_scale=None)
    assert t.block_scales.tolist() == [[0x38]] and t.codes[0, :5].tolist() == [7, 5, 2, 0, 8]
    # two levels, amax 168 = 2688 · 2^−4: g = 0.0625; block 1: b = 168/6 = 28, s = 28/g = 448 (0x7E), x·r with
    # r = 16/448: 168 -> 6 (7), 42 -> 1.5 (3); block 2: b = 21/6 = 3.5, s = 56 = 1.75·2^5 = 0 1100 110 = 0x66,
    # 21 -> 6 (7), 7 -> 2 (4). Dequantized: value · (g · s) = value · 28 and value · 3.5, exact
    x = np.zeros((1, 32), F32)
    x[0, [0, 1, 16, 17]] = [168.0, 42.0, 21.0, 7.0]
    t = nvfp4_quantize(x)
    assert t.per_tensor_scale == 0.0625 and t.block_scales.tolist() == [[0x7E, 0x66]]
    assert t.codes[0, [0, 1, 16, 17]].tolist() == [7, 3, 7, 4] and np.array_equal(t.dequantize(), x)
    assert t.storage_bits() == 32 * 4 + 2 * 8 + 32  # 4.5 bits + 32 / n
    # an all-zero tensor: g = 1 (torchao would divide 0 by 0), scales clamp to 2^−6 = 0x08
    z = nvfp4_quantize(np.zeros((2, 16), F32))
    assert z.per_tensor_scale == 1.0 and z.block_scales.tolist() == [[8], [8]] and not z.dequantize().any()


# ------------------------------------------------------------------------------------------- element oracles
ML = {"fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2", "fp6_e2m3": "float6_e2m3fn",
      "fp6_e3m2": "float6_e3m2fn", "fp4_e2m1": "float4_e2m1fn"}


@pytest.mark.parametrize("elem", ML)
def test_element_casts_match_ml_dtypes(elem):
    md = pytest.importorskip("ml_dtypes")
    dt = getattr(md, ML[elem])
    f = ELEMENTS[elem]
    codes = np.arange(1 << f.bits, dtype=np.uint8)
    ours, theirs = code_values(elem), codes.view(dt).astype(np.float64)
    assert np.array_equal(ours, theirs, equal_nan=True)
    assert f.max_normal == float(md.finfo(dt).max) and 2.0 ** f.emax <= f.max_normal < 2.0 ** (f.emax + 1)
    grid = np.unique(ours[np.isfinite(ours)])
    mids = (grid[1:] + grid[:-1]) / 2  # every tie, where RNE must pick the even code
    v = np.concatenate([grid, mids, np.random.default_rng(1).uniform(-f.max_normal, f.max_normal, 2000), [-1e-30]])
    assert np.array_equal(encode_elements(v, elem), v.astype(F32).astype(dt).view(np.uint8))


def _microxcaling_elemwise(a, ebits, mbits, emax, max_norm, round):
    # microxcaling mx/elemwise_ops.py: _quantize_elemwise_core(saturate_normals=True, allow_denorm=True) and
    # _round_mantissa, transliterated to NumPy (mbits counts the sign and implicit bits; int8: ebits = 0)
    if ebits:
        private_exp = np.maximum(np.floor(np.log2(np.abs(a) + (a == 0))), -(2 ** (ebits - 1)) + 2)
        out = a / 2.0 ** private_exp * 2.0 ** (mbits - 2)
    else:
        private_exp, out = 0.0, a * 2.0 ** (mbits - 2)
    if round == "nearest":
        out = np.sign(out) * np.floor(np.abs(out) + 0.5)
    else:  # "even"
        out = np.sign(out) * (np.floor(np.abs(out) + 0.5) - ((np.abs(out) - 0.5) % 2 == 0))
    return np.clip(out / 2.0 ** (mbits - 2) * 2.0 ** private_exp, -max_norm, max_norm)


# mx/formats.py: _get_format_params -> (ebits, mbits, emax, max_norm)
MICROXCALING = {"fp8_e4m3": (4, 5, 8, 448.0), "fp8_e5m2": (5, 4, 15, 57344.0), "fp6_e3m2": (3, 4, 4, 28.0),
                "fp6_e2m3": (2, 5, 2, 7.5), "fp4_e2m1": (2, 3, 2, 6.0), "int8": (0, 8, 0, 127 / 64)}


@pytest.mark.parametrize("elem", ELEMENTS)
def test_half_away_is_microxcalings_nearest(elem):
    # round="nearest" is sign(A)·floor(|A| + 0.5): ties away from zero; round="even" is RNE
    f = ELEMENTS[elem]
    assert MICROXCALING[elem][2:] == (f.emax, f.max_normal)
    grid = np.unique(code_values(elem)[np.isfinite(code_values(elem))])
    v = np.concatenate([grid, (grid[1:] + grid[:-1]) / 2, np.random.default_rng(2).uniform(-1.2, 1.2, 3000) * f.max_normal])
    for ours, theirs in (("half_away", "nearest"), ("half_even", "even")):
        got = code_values(elem)[encode_elements(v, elem, ours)]
        assert np.array_equal(got, _microxcaling_elemwise(v, *MICROXCALING[elem], theirs)), ours


def test_e8m0_matches_ml_dtypes():
    md = pytest.importorskip("ml_dtypes")
    s = np.arange(255, dtype=np.uint8)
    assert np.array_equal(e8m0_to_float(s), s.view(md.float8_e8m0fnu).astype(np.float64))
    assert np.isnan(np.uint8(255).reshape(1).view(md.float8_e8m0fnu).astype(float)[0])  # 0xFF: NaN, refused below


# -------------------------------------------------------------------------------- recorded external oracles
@pytest.fixture(scope="module")
def goldens():
    return np.load(GOLDENS)


@pytest.mark.parametrize("elem", ["fp8_e4m3", "fp8_e5m2", "fp6_e2m3", "fp6_e3m2", "fp4_e2m1"])
@pytest.mark.parametrize("rule", SCALE_RULES)
def test_torchao_to_mx_goldens(goldens, elem, rule):
    q = mx_quantize(goldens["mx_x"], elem, scale_rounding=rule)
    assert np.array_equal(q.scales, goldens[f"torchao_{elem}_{rule}_scales"])
    assert np.array_equal(q.codes, goldens[f"torchao_{elem}_{rule}_codes"])


def test_torchao_eager_rceil_differs_one_ulp_above_a_power_of_two(goldens):
    # a = 448 + 2^−15 (one ulp): a / 57344 = 2^−7 (1 + 6.8e−8) rounds to 2^−7 (1 + 2^−23): ceil -> −6 (byte 121);
    # torchao 0.18's float32 log2 of it is −7 + 1.7e−7, which rounds to −7 (spacing 4.8e−7): byte 120, and
    # a · 2^7 = 57344.004 is clamped to 57344 (0x7B), −1.5 · 128 = −192 = 1 10110 10 (0xDA).
    # Ours: a · 2^6 = 28672.002 -> 28672 = 1.75·2^14 = 0 11101 11 (0x77); −96 = 1 10101 10 (0xD6)
    x = goldens["rceil_quirk_x"]
    assert goldens["rceil_quirk_scales"].tolist() == [[120]] and goldens["rceil_quirk_codes"][0, 3:5].tolist() == [0x7B, 0xDA]
    q = mx_quantize(x, "fp8_e5m2", scale_rounding="rceil")
    assert q.scales.tolist() == [[121]] and q.codes[0, 3:5].tolist() == [0x77, 0xD6]
    d = np.divide(x.max(), F32(57344), dtype=F32)  # the quirk, modelled: ceil of a float32 log2
    assert int(np.ceil(np.log2(d).astype(F32))) + 127 == 120


@pytest.mark.parametrize("mode", ["amax", "single"])
def test_torchao_nvfp4_goldens(goldens, mode):
    t = nvfp4_quantize(goldens["nvfp4_x"], per_tensor_scale="amax" if mode == "amax" else None)
    assert np.array_equal(t.block_scales, goldens[f"nvfp4_{mode}_scales"])
    assert np.array_equal(t.codes, goldens[f"nvfp4_{mode}_codes"])
    assert np.array_equal(t.dequantize(), goldens[f"nvfp4_{mode}_deq"])
    if mode == "amax":
        assert F32(t.per_tensor_scale) == goldens["nvfp4_amax_g"]


def test_llamacpp_mxfp4_goldens(goldens):
    x = goldens["ggml_x"]
    assert np.array_equal(ggml_mxfp4_quantize(x), goldens["ggml_blocks"])
    assert np.array_equal(ggml_mxfp4_dequantize(goldens["ggml_blocks"]), goldens["ggml_deq"])
    for row in x[:16]:  # the loop twin on tie-heavy, boundary and tiny blocks
        for b in row.reshape(-1, 32):
            assert ggml_mxfp4_quantize_block_ref(b) == ggml_mxfp4_quantize(b).tobytes()


def test_llamacpp_mxfp4_log2f_boundary(goldens):
    # every float within 64 ulps below each power of two 2^−149 … 2^127, as a block's amax: ggml's exponent
    # byte is floor of log2 rounded to float32 (one more than floor(log2 a) for 7412 of them)
    v = goldens["ggml_log2_amax"]
    x = np.zeros((v.size, 32), F32)
    x[:, 0] = v
    e = ggml_mxfp4_quantize(x)[:, 0]
    assert np.array_equal(e, goldens["ggml_log2_e"])
    exact = (np.floor(np.log2(v.astype(np.float64))).astype(np.int64) + 125) & 0xFF
    assert np.count_nonzero(e != exact) == 7412


def test_ggml_mxfp4_in_the_registry_and_beside_ocp():
    # registry "ggml_mxfp4" stores ggml's own bytes: 17 per 32 weights = 4.25 bits, as OCP mxfp4 (4 + 8/32)
    from refquant.formats import ggml_mxfp4, registry
    x = np.random.default_rng(8).standard_normal((16, 256)).astype(F32)
    t = registry.quantize(x, "ggml_mxfp4")
    assert np.array_equal(t.data, ggml_mxfp4.ggml_mxfp4_quantize(x))
    assert t.storage_bits() == 16 * 8 * 17 * 8 == registry.storage_bits("ggml_mxfp4", x.shape)
    assert registry.bits_per_weight("ggml_mxfp4", x.shape) == registry.bits_per_weight("mxfp4", x.shape) == 4.25
    # on continuous data (no ties, no amax a few ulps below 2^k) the two decode to the same values; the codes
    # differ only where OCP keeps the sign of a value that rounds to zero (code 8, -0) and ggml writes code 0
    ocp = mx_quantize(x, "fp4_e2m1")
    assert np.array_equal(t.dequantize(), ocp.dequantize())
    g = t.data.reshape(-1, 17)
    codes = np.concatenate([g[:, 1:] & 0xF, g[:, 1:] >> 4], axis=1).reshape(x.shape)
    diff = codes != ocp.codes
    assert diff.any() and np.all(ocp.codes[diff] == 8) and np.all(codes[diff] == 0)
    assert np.array_equal(g[:, 0], ocp.scales.reshape(-1))


@pytest.mark.parametrize("bad,match", [(np.inf, "must be finite"), (np.nan, "contains NaN")])
def test_ggml_mxfp4_refuses_non_finite(bad, match):
    x = np.zeros(32, F32)
    x[3] = bad
    with pytest.raises(ValueError, match=match):
        ggml_mxfp4_quantize(x)


def test_gguf_dequantizes_mxfp4():
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize, quantize
    rng = np.random.default_rng(3)
    blocks = rng.integers(0, 256, (64, 17), dtype=np.uint8)
    blocks[:, 0] = rng.integers(0, 253, 64)  # e <= 252: no float32 overflow
    assert np.array_equal(ggml_mxfp4_dequantize(blocks.reshape(8, -1)), dequantize(blocks.reshape(8, -1), gguf.GGMLQuantizationType.MXFP4))
    x = (rng.standard_normal((8, 128)) * np.exp(rng.uniform(-20, 20, (8, 1)))).astype(F32)
    ours = ggml_mxfp4_quantize(x)
    assert np.array_equal(dequantize(ours, gguf.GGMLQuantizationType.MXFP4), ggml_mxfp4_dequantize(ours))
    assert np.array_equal(quantize(x, gguf.GGMLQuantizationType.MXFP4), ours)


# --------------------------------------------------------------------------------------- loop twins, properties
TIES = (np.arange(-60, 60).reshape(3, 40) / 8.0 * np.array([[1.0], [2.0 ** -5], [2.0 ** 9]])).astype(F32)


@pytest.mark.parametrize("elem", ELEMENTS)
def test_mx_quantize_equals_loop_twin(elem):
    x = TIES[:, ::2].copy()
    x[0, :4] = [BELOW_4, -0.0, 1e-40, 7.0]
    for rule in SCALE_RULES:
        for rounding in ("half_even", "half_away"):
            q = mx_quantize(x, elem, block_size=8, scale_rounding=rule, element_rounding=rounding)
            codes, scales = mx_quantize_ref(x, elem, block_size=8, scale_rounding=rule, element_rounding=rounding)
            assert np.array_equal(q.codes, codes) and np.array_equal(q.scales, scales), (rule, rounding)


@pytest.mark.parametrize("mode", ["amax", None, 0.01])
def test_nvfp4_equals_loop_twin(mode):
    x = np.concatenate([TIES[:2, :24], np.random.default_rng(4).standard_normal((2, 24)).astype(F32)])
    t = nvfp4_quantize(x, per_tensor_scale=mode)
    codes, scales, g = nvfp4_quantize_ref(x, per_tensor_scale=mode)
    assert np.array_equal(t.codes, codes) and np.array_equal(t.block_scales, scales) and t.per_tensor_scale == g


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
arrays32 = hnp.arrays(F32, hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=70), elements=finite32)


@given(arrays32, st.sampled_from(sorted(ELEMENTS)), st.sampled_from(["half_even", "half_away"]))
def test_floor_is_idempotent(x, elem, rounding):
    # a dequantized block keeps its amax's binade (the largest element never rounds below 2^emax · X)
    y = mx_quantize(x, elem, element_rounding=rounding).dequantize()
    assert np.array_equal(mx_quantize(y, elem, element_rounding=rounding).dequantize(), y)


@given(arrays32, st.sampled_from(sorted(ELEMENTS)), st.sampled_from(SCALE_RULES))
@example(np.array([1.701412e38], F32), "int8", "ceil")  # found by hypothesis: ceil needs 2^128
def test_which_rules_clamp(x, elem, rule):
    f = ELEMENTS[elem]
    try:
        q = mx_quantize(x, elem, scale_rounding=rule)
    except ValueError as e:  # only MXINT8 (emax 0) rounding its scale up from an amax above 2^127
        assert "beyond E8M0" in str(e) and elem == "int8" and rule != "floor" and np.abs(x).max() > 2.0 ** 127
        return
    amax = np.abs(np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, -x.shape[-1] % 32)])).reshape(x.shape[:-1] + (-1, 32)).max(-1)
    ratio = amax.astype(np.float64) / e8m0_to_float(q.scales)
    if rule in ("ceil", "rceil"):
        assert np.all(ratio <= f.max_normal)  # never clamped
    elif rule == "floor":
        assert np.all((ratio < 2.0 ** (f.emax + 1)) | (q.scales == 0))  # a / X in [2^emax, 2^(emax+1)) unless clamped low


# ---------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call,match", [
    (lambda: mx_quantize(np.array([1.0, np.nan])), "x contains NaN"),
    (lambda: mx_quantize(np.array([1.0, np.inf])), "x must be finite"),
    (lambda: mx_quantize(np.array([1e39])), "x has values beyond the float32 range"),
    (lambda: mx_quantize(np.float32(1.0)), "x: expected an array"),
    (lambda: mx_quantize(np.ones(4), "fp5"), "elem: unknown 'fp5'"),
    (lambda: mx_quantize(np.ones(4), scale_rounding="round"), "scale_rounding: unknown"),
    (lambda: mx_quantize(np.ones(4), element_rounding="half_down"), "element_rounding: unknown"),
    (lambda: mx_quantize(np.ones(4), block_size=0), "block_size must be >= 1"),
    (lambda: mx_quantize(np.ones(4), axis=1), "axis must be in"),
    (lambda: mx_quantize(np.array(["a"])), "x: expected a real floating-point array"),
    (lambda: mx_dequantize(np.zeros((1, 4), np.uint8), np.array([[255]], np.uint8)), "0xFF is E8M0's NaN"),
    (lambda: mx_dequantize(np.array([[0x7F]], np.uint8), np.array([[127]], np.uint8), "fp8_e4m3"), "0x7f is not a finite"),
    (lambda: mx_dequantize(np.array([[0x7C]], np.uint8), np.array([[127]], np.uint8), "fp8_e5m2"), "0x7c is not a finite"),
    (lambda: mx_dequantize(np.array([[16]], np.uint8), np.array([[127]], np.uint8)), r"codes must lie in \[0, 15\]"),
    (lambda: mx_dequantize(np.zeros((1, 33), np.uint8), np.zeros((1, 1), np.uint8)), r"scales: expected shape \(1, 2\)"),
    (lambda: mx_dequantize(np.zeros((1, 4)), np.zeros((1, 1), np.uint8)), "codes: expected an integer array"),
    (lambda: mx_dequantize(np.array([[0x7B]], np.uint8), np.array([[254]], np.uint8), "fp8_e5m2"), "beyond the float32 range"),
    (lambda: ggml_mxfp4_quantize(np.ones(40, F32)), "multiple of 32"),
    (lambda: ggml_mxfp4_dequantize(bytes(18)), "multiple of 17 bytes"),
    (lambda: ggml_mxfp4_dequantize(np.zeros(17, np.int8)), "expected uint8"),
    (lambda: ggml_mxfp4_dequantize(bytes([254]) + bytes([7]) + bytes(15)), "overflows float32"),
    (lambda: ggml_mxfp4_quantize_block_ref(np.ones(31)), "one block is 32 values"),
    (lambda: nvfp4_quantize(np.ones(16), per_tensor_scale=0.0), "per_tensor_scale must be > 0"),
    (lambda: nvfp4_quantize(np.ones(16), per_tensor_scale="max"), "per_tensor_scale: expected 'amax'"),
    (lambda: nvfp4_quantize(np.ones(16), per_tensor_scale=np.ones(2)), "per_tensor_scale: expected one number"),
    (lambda: nvfp4_quantize(np.ones(16), per_tensor_scale=1e-39), "no finite float32 reciprocal"),
    (lambda: nvfp4_quantize(np.array([1.0, np.inf])), "x must be finite"),
    (lambda: nvfp4_dequantize(np.zeros((1, 16), np.uint8), np.array([[0x7F]], np.uint8)), "E4M3's NaN"),
    (lambda: nvfp4_dequantize(np.zeros((1, 17), np.uint8), np.zeros((1, 1), np.uint8)), r"block_scales: expected shape \(1, 2\)"),
    (lambda: nvfp4_dequantize(np.full((1, 16), 16, np.uint8), np.zeros((1, 1), np.uint8)), r"codes must lie in \[0, 15\]"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_inputs_not_mutated_and_tensor_frozen():
    x = np.random.default_rng(5).standard_normal((3, 48)).astype(F32)
    keep = x.copy()
    q = mx_quantize(x, "fp8_e4m3")
    nvfp4_quantize(x)
    ggml_mxfp4_quantize(x[:, :32])
    mx_quantize_ref(x[:1, :8], "fp4_e2m1")
    assert np.array_equal(x, keep)
    assert isinstance(q, MXTensor) and isinstance(nvfp4_quantize(x), nvfp4.NVFP4Tensor)
    with pytest.raises(AttributeError):
        q.elem = "int8"
    assert mx.GGML_BLOCK_BYTES == 17
