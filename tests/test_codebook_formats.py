"""Codebooks, minifloats (FP8/FP4), NF4, log quantization: goldens, properties, bad input."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from refquant import onnx_ops as O
from refquant.formats.codebook import codebook_dequantize, codebook_quantize, codebook_quantize_ref, uniform_codebook
from refquant.formats.logquant import log_codebook, log_quantize
from refquant.formats.minifloat import minifloat_codebook, minifloat_decode, minifloat_encode
from refquant.formats.nf4 import nf4_codebook, nf4_derive, nf4_quantize
from refquant import quantize

F32 = np.float32


# ---------------------------------------------------------------- codebooks
@pytest.mark.parametrize("ties, expected", [("even", [0, 2, 1, 2, 0]), ("down", [0, 1, 1, 2, 0]), ("up", [1, 2, 1, 2, 0])])
def test_codebook_golden_and_tie_rules(ties, expected):
    c = np.array([-1.0, 0.0, 2.0])  # thresholds -0.5 and 1.0
    x = np.array([-0.5, 1.0, 0.4, 5.0, -np.inf])
    assert codebook_quantize(x, c, ties=ties).tolist() == expected
    assert codebook_quantize_ref(x, c, ties=ties).tolist() == expected


@given(hnp.arrays(np.float64, st.integers(0, 30), elements=st.floats(-10, 10) | st.sampled_from([0.25, -0.75, 1.5])),
       hnp.arrays(np.float64, st.integers(1, 9), elements=st.floats(-8, 8), unique=True), st.sampled_from(["even", "down", "up"]))
def test_nearest_codeword_is_optimal_and_equals_ref(x, c, ties):
    c = np.sort(c)
    idx = codebook_quantize(x, c, ties=ties)
    assert np.array_equal(idx, codebook_quantize_ref(x, c, ties=ties))
    d = np.abs(x[:, None] - c[None, :])
    assert np.all(d[np.arange(x.size), idx] <= d.min(axis=1))  # no codeword is closer


@given(hnp.arrays(F32, st.integers(1, 40), elements=st.floats(-300, 300, width=32)), st.sampled_from([0, 4, -6]))
def test_uniform_quantization_is_a_codebook_special_case(x, zp):
    # a power-of-two scale makes x / scale exact, so both decide ties on the same exact values;
    # index parity is the parity of q - zp when qmin - zp is even (qmin = -128, zp even)
    s = 0.5
    q = quantize(x, s, zp, "int8")
    idx = codebook_quantize(x, uniform_codebook(s, zp, "int8"), ties="even")
    assert np.array_equal(idx.astype(np.int64) - 128, q.astype(np.int64))


def test_even_index_is_not_half_even_when_qmin_minus_zero_point_is_odd():
    # found by hypothesis: zp = 3, x = 0.75, s = 0.5: x / s = 1.5 rounds to 2 (even), q = 5; the
    # codebook's tie is between q = 4 (index 132, even) and q = 5 (index 133): "even" picks q = 4
    x = np.array([0.75], F32)
    assert quantize(x, 0.5, 3, "int8").tolist() == [5]
    assert (codebook_quantize(x, uniform_codebook(0.5, 3, "int8")).astype(int) - 128).tolist() == [4]


def test_per_channel_and_per_group_codebooks():
    x = np.array([[0.1, 0.9, 2.2], [5.0, 6.4, 9.0]])
    cb = np.array([[0.0, 1.0, 2.0], [5.0, 6.0, 7.0]])  # one codebook per row (axis 0)
    assert codebook_quantize(x, cb, axis=0).tolist() == [[0, 1, 2], [0, 1, 2]]
    assert codebook_dequantize(codebook_quantize(x, cb, axis=0), cb, axis=0).tolist() == [[0, 1, 2], [5, 6, 7]]
    # scale-normalised: groups of 2 along axis 1, scales 1 and 10 per row
    s = np.array([[1.0, 10.0], [1.0, 10.0]])
    idx = codebook_quantize(x, np.array([0.0, 0.25, 0.5, 1.0]), scale=s, axis=1, block_size=2)
    assert idx.tolist() == [[0, 3, 1], [3, 3, 3]]  # 2.2/10 = 0.22 -> 0.25; 5.0/1 saturates


@pytest.mark.parametrize("call, match", [
    (lambda: codebook_quantize(np.ones(2), np.array([1.0, 0.0])), "strictly increasing"),
    (lambda: codebook_quantize(np.ones(2), np.array([0.0, 0.0])), "strictly increasing"),
    (lambda: codebook_quantize(np.ones(2), np.array([0.0, np.nan])), "finite"),
    (lambda: codebook_quantize(np.array([np.nan]), np.array([0.0, 1.0])), "x contains NaN"),
    (lambda: codebook_quantize(np.ones(2), np.array([0.0, 1.0]), ties="random"), "ties: unknown"),
    (lambda: codebook_quantize(np.ones((2, 3)), np.zeros((3, 2)) + [0, 1], axis=0), "3 rows"),
    (lambda: codebook_dequantize(np.array([3]), np.array([0.0, 1.0])), "indices must lie"),
    (lambda: codebook_dequantize(np.array([0.5]), np.array([0.0, 1.0])), "indices: expected an integer"),
])
def test_codebook_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- minifloats
@pytest.mark.parametrize("fmt, code, value", [
    ("float8e4m3fn", 0x38, 1.0), ("float8e4m3fn", 0x7E, 448.0), ("float8e4m3fn", 0x08, 2.0**-6),
    ("float8e4m3fn", 0x01, 2.0**-9), ("float8e4m3fn", 0xFE, -448.0), ("float8e4m3fn", 0x80, -0.0),
    ("float8e5m2", 0x3C, 1.0), ("float8e5m2", 0x7B, 57344.0), ("float8e5m2", 0x7C, np.inf),
    ("float8e5m2", 0xFC, -np.inf), ("float8e5m2", 0x01, 2.0**-16), ("float8e5m2", 0x04, 2.0**-14),
    ("float4e2m1", 0x1, 0.5), ("float4e2m1", 0x5, 3.0), ("float4e2m1", 0x7, 6.0), ("float4e2m1", 0xF, -6.0),
])
def test_minifloat_decode_golden(fmt, code, value):
    # value = 2^(e - bias) * (1 + m / 2^M), subnormal 2^(1 - bias) * m / 2^M; e.g. E4M3 0x7E = 0 1111 110 = 2^8 * 1.75
    assert minifloat_decode(np.array([code]), fmt)[0] == value


def test_minifloat_nan_codes_and_table_sizes():
    assert np.isnan(minifloat_decode(np.array([0x7F, 0xFF]), "float8e4m3fn")).all()
    assert np.isnan(minifloat_decode(np.array([0x7D, 0x7E, 0x7F]), "float8e5m2")).all()
    assert minifloat_codebook("float4e2m1").tolist() == [-6, -4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert len(minifloat_codebook("float8e4m3fn")) == 253  # 256 - 2 NaN - one duplicate zero
    assert len(minifloat_codebook("float8e5m2")) == 247  # 256 - 6 NaN - 2 Inf - one duplicate zero


@pytest.mark.parametrize("fmt", ["float8e4m3fn", "float8e5m2", "float4e2m1"])
def test_minifloat_decode_all_codes_match_ml_dtypes(fmt):
    md = pytest.importorskip("ml_dtypes")
    dt = {"float8e4m3fn": md.float8_e4m3fn, "float8e5m2": md.float8_e5m2, "float4e2m1": md.float4_e2m1fn}[fmt]
    codes = np.arange(256 if fmt.startswith("float8") else 16, dtype=np.uint8)
    assert np.array_equal(minifloat_decode(codes, fmt), codes.view(dt).astype(F32), equal_nan=True)


@pytest.mark.parametrize("x, sat, nonsat", [
    (464.0, 0x7E, 0x7E),   # halfway between 448 (mantissa 110) and 480: ties to even -> 448
    (465.0, 0x7E, 0x7F),   # rounds past max: saturate to 448, or NaN
    (np.inf, 0x7E, 0x7F),
    (1.0625, 0x38, 0x38),  # halfway between 1.0 (0x38) and 1.125 (0x39): even -> 0x38
    (1.1875, 0x3A, 0x3A),  # halfway between 1.125 (0x39) and 1.25 (0x3A): even -> 0x3A
    (-0.0, 0x80, 0x80),
    (2.0**-10, 0x00, 0x00),  # half the smallest subnormal 2^-9: tie -> even (0)
])
def test_e4m3_encode_golden(x, sat, nonsat):
    assert minifloat_encode(np.array([x], F32), "float8e4m3fn")[0] == sat
    assert minifloat_encode(np.array([x], F32), "float8e4m3fn", saturate=False)[0] == nonsat


def test_e5m2_overflow_to_inf_without_saturation():
    # 61440 is halfway between 57344 (mantissa 11, odd) and 65536: ties to even -> Inf
    assert minifloat_encode(np.array([61440.0, 61439.0], F32), "float8e5m2", saturate=False).tolist() == [0x7C, 0x7B]
    assert minifloat_encode(np.array([61440.0, -np.inf], F32), "float8e5m2").tolist() == [0x7B, 0xFB]


@given(hnp.arrays(F32, 30, elements=st.floats(-1e6, 1e6, width=32)), st.sampled_from(["float8e4m3fn", "float8e5m2", "float4e2m1"]))
def test_minifloat_encode_is_nearest_and_round_trips(x, fmt):
    codes = minifloat_encode(x, fmt)
    y = minifloat_decode(codes, fmt)
    table = minifloat_codebook(fmt)
    clipped = np.clip(x.astype(np.float64), table[0], table[-1])
    best = np.abs(clipped[:, None] - table[None, :]).min(axis=1)
    assert np.all(np.abs(clipped - y) == best)
    assert np.array_equal(minifloat_encode(y, fmt), codes) or np.any(y == 0)  # +-0 may flip sign only


def test_onnx_float8_quantize_linear_golden():
    y = O.quantize_linear(np.array([448.0, 500.0, -1e9, 1.0625], F32), np.array(1.0, F32), output_dtype="float8e4m3fn")
    assert y.tolist() == [0x7E, 0x7E, 0xFE, 0x38]
    d = O.dequantize_linear(y, np.array(2.0, F32), x_dtype="float8e4m3fn")
    assert d.tolist() == [896.0, 896.0, -896.0, 2.0]
    with pytest.raises(ValueError, match="y_zero_point must be 0"):
        O.quantize_linear(np.ones(2, F32), np.array(1.0, F32), np.array(1, np.uint8), output_dtype="float8e5m2")


# ---------------------------------------------------------------- NF4
def test_nf4_table_and_derivation():
    t = nf4_codebook()
    assert t.dtype == F32 and t[0] == -1 and t[7] == 0 and t[15] == 1 and np.all(np.diff(t) > 0)
    assert np.abs(nf4_derive() - t).max() < 1e-6


def test_nf4_golden_block():
    # one block, absmax 1: 1.0 -> 15, -1.0 -> 0, 0 -> 7, 0.5 < threshold 0.50166 -> 12,
    # the float32 threshold 0.03979015 itself -> 7 (bitsandbytes compares x > t: on t goes down)
    x = np.array([1.0, -1.0, 0.0, 0.5, 0.03979014977812767], F32)
    t = nf4_quantize(x)
    assert t.codes().tolist() == [15, 0, 7, 12, 7]
    assert t.packed.tolist() == [0xF0, 0x7C, 0x77]  # first element in the high nibble; odd tail padded with 7
    assert t.absmax.tolist() == [1.0]
    assert t.dequantize().tolist() == [1.0, -1.0, 0.0, float(nf4_codebook()[12]), 0.0]


def test_nf4_all_zero_block_and_storage():
    t = nf4_quantize(np.zeros(64, F32))
    assert t.absmax.tolist() == [0.0] and np.all(t.codes() == 7) and np.all(t.dequantize() == 0)
    x = np.random.default_rng(0).standard_normal((64, 64)).astype(F32)
    assert nf4_quantize(x).bits_per_element() == 4.5  # 4 + 32 / 64
    d = nf4_quantize(x, double_quant=True)
    assert d.bits_per_element() < 4.2
    assert np.abs(d.dequantize() - nf4_quantize(x).dequantize()).max() < 0.05


def test_nf4_bad_input():
    with pytest.raises(ValueError, match="block_size must be"):
        nf4_quantize(np.ones(4), 0)
    with pytest.raises(ValueError, match="x must be finite"):
        nf4_quantize(np.array([np.inf]))


# ---------------------------------------------------------------- logarithmic
def test_log_quant_golden_log_and_linear_domain():
    x = np.array([5.0, 3.0, 0.7, 0.3, 0.0, -5.0, 2.9])
    # 3 bits: e_max = round(log2 5) = 2, 3 exponents -> levels {0, ±1, ±2, ±4};
    # log thresholds 1/sqrt2 = 0.707, sqrt2 = 1.414, 2 sqrt2 = 2.83
    assert log_codebook(3, 2).tolist() == [-4, -2, -1, 0, 1, 2, 4]
    assert log_quantize(x, 3).dequantize().tolist() == [4, 4, 0, 0, 0, -4, 4]
    # linear thresholds 0.5, 1.5, 3: 0.7 -> 1, 2.9 -> 2, 3.0 is a tie -> down (2)
    assert log_quantize(x, 3, domain="linear").dequantize().tolist() == [4, 2, 1, 0, 0, -4, 2]


@given(hnp.arrays(np.float64, 50, elements=st.floats(-1e3, 1e3).filter(lambda v: v == 0 or abs(v) > 1e-250)),
       st.sampled_from([2.0, np.sqrt(2.0)]), st.integers(3, 6))
def test_log_quant_relative_error_bound(x, base, bits):
    lq = log_quantize(x, bits, base=base)
    y = lq.dequantize().astype(np.float64)
    mags = lq.codebook[lq.codebook > 0].astype(np.float64)
    inside = (np.abs(x) >= mags.min()) & (np.abs(x) <= mags.max())
    rel = np.abs(y[inside] / x[inside] - 1)
    assert np.all(rel <= np.sqrt(base) - 1 + 1e-12)  # thresholds are float64 roundings of base^(e+1/2)
    assert np.all(np.sign(y) * np.sign(x) >= 0)


def test_log_quant_of_subnormal_data_raises():
    # found by hypothesis: max|x| = 5e-324 puts e_max at -1074, and the lower levels underflow float64
    with pytest.raises(ValueError, match="underflow"):
        log_quantize(np.full(3, 5e-324), 3)


def test_codebook_midpoints_are_exact_across_huge_dynamic_range():
    # found by hypothesis: the float64 midpoint of 4.5e-145 and 0.5 rounds to 0.25 exactly,
    # but 0.25 is nearer to 4.5e-145; the TwoSum comparison gets it right
    c = np.array([0.0, 4.50844515e-145, 0.5])
    assert codebook_quantize(np.array([0.25]), c).tolist() == [1]
    assert codebook_quantize_ref(np.array([0.25]), c).tolist() == [1]


def test_log_quant_bad_input():
    with pytest.raises(ValueError, match="bits must be"):
        log_codebook(1, 0)
    with pytest.raises(ValueError, match="base must be"):
        log_codebook(4, 0, base=1.0)
    with pytest.raises(ValueError, match="domain"):
        log_quantize(np.ones(3), domain="ln")
    with pytest.raises(ValueError, match="x must be finite"):
        log_quantize(np.array([np.inf]))


def test_absmax_scale_and_codebook_fake_quantize_golden():
    from refquant.formats.codebook import absmax_scale, codebook_fake_quantize

    x = np.array([[1.0, -3.0, 0.0, 0.0], [6.0, 2.0, 0.5, -0.25]], F32)
    s = absmax_scale(x, 6.0, axis=1, block_size=2)  # blocks {1,-3} {0,0} | {6,2} {0.5,-0.25}
    assert s.tolist() == [[0.5, 1.0], [1.0, F32(0.5) / F32(6)]]  # all-zero block -> scale 1
    fp4 = minifloat_codebook("float4e2m1")
    y = codebook_fake_quantize(x, fp4, scale=s, axis=1, block_size=2)
    # 1 / 0.5 = 2 -> 2 * 0.5 = 1; -3 / 0.5 = -6 -> -3; 6 -> 6; 2 -> 2; 0.5 / (1/12) = 6 -> 0.5; -0.25 * 12 = -3 -> -0.25
    assert np.allclose(y, [[1.0, -3.0, 0.0, 0.0], [6.0, 2.0, 0.5, -0.25]], rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="x is empty"):
        absmax_scale(np.zeros(0))


# ---------------------------------------------------------------- bad input, closed (issue 9)
CB5 = np.array([-1.0, -0.25, 0.0, 0.5, 1.0], np.float32)


@pytest.mark.parametrize("kw, match", [
    (dict(codebook=CB5[::-1].copy()), "codebook must be sorted"),
    (dict(codebook=np.array([-1.0, np.nan, 1.0])), "codebook must be finite"),
    (dict(indices=np.array([5], np.uint8)), r"indices must lie in \[0, 4\]"),
    (dict(indices=np.array([0.0])), "indices: expected an integer array"),
    (dict(scale=np.float32(0)), "scale must be > 0"),
    (dict(scale=np.full(3, 0.5, np.float32)), "scale has shape"),
    (dict(axis=7, scale=None), "axis=7 is out of range for indices"),
    (dict(codebook=np.stack([CB5, CB5]), scale=None), "codebook has 2 rows but indices have 1 parameter groups"),
])
def test_codebook_tensor_validates_what_it_holds(kw, match):
    from refquant.formats.codebook import CodebookTensor
    args = dict(indices=np.array([0, 4, 2], np.uint8), codebook=CB5, scale=np.float32(0.5))
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        CodebookTensor(**args)


@pytest.mark.parametrize("call, match", [
    (lambda: codebook_quantize(np.ones(3), CB5, thresholds=np.array([np.nan, 0.0, 0.2, 0.7])), "thresholds must be finite"),
    (lambda: codebook_quantize(np.ones(3), CB5, thresholds=np.array([-0.6, -0.1, 0.2, 0.7]) + 0j), "thresholds: expected a real"),
    (lambda: codebook_quantize_ref(np.ones(3), CB5, ties="bogus"), "ties: unknown"),  # was accepted
    (lambda: uniform_codebook(0.1, 0.5, "int4"), "zero_point must be an int"),  # int(0.5) == 0 silently
    (lambda: uniform_codebook(-0.1, 0, "int4"), "scale must be in"),
    (lambda: uniform_codebook(0.1, 100, "int4"), r"zero_point must be in \[-8, 7\]"),
    (lambda: codebook_dequantize(np.array([0, 2]), np.array([-10.0, 0.0, 10.0], np.float32), scale=np.float32(1e38)),
     "scale · codebook overflows float32"),  # 10 · 1e38 is Inf in float32
    (lambda: log_codebook(4, 10**30), "e_max must be in"),
    (lambda: log_codebook(4, 0, base=float("nan")), "base must be finite"),
    (lambda: log_quantize(np.ones(3), 4, e_max=3.5), "e_max must be an int"),
    (lambda: minifloat_encode(np.ones(3), ["float8e4m3fn"]), "fmt: unknown minifloat format"),
    (lambda: nf4_quantize(np.zeros(0)), "x is empty"),
    (lambda: nf4_quantize(np.ones(4), 2**64 - 1), "block_size must be in"),
    (lambda: nf4_quantize(np.array([1e308, 1.0])), "x has values beyond the float32 range"),
    (lambda: nf4_derive(0.5 + 1e-12), "rounds to 0.5 or 1 in float32"),  # the quantiles would be 0: NaN table
])
def test_format_bad_input_raises_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_codebook_quantize_saturates_quotients_beyond_float32():
    # 3e38 / 0.5 overflows float32 to +Inf: that saturates to the last codeword (no RuntimeWarning)
    with np.errstate(all="raise"):
        assert codebook_quantize(np.array([3e38, -3e38], np.float32), CB5, scale=np.float32(0.5)).tolist() == [4, 0]


def test_nf4_double_quant_goes_through_the_core_quantizer_bit_identically():
    # the hand-written step it replaced: clip(rint(c / s), -127, 127) per group of 256, in float32
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(64 * 600) * rng.uniform(0.1, 3, 64 * 600)).astype(np.float32)
    q, s, offset = nf4_quantize(x, double_quant=True).double_quant
    absmax = nf4_quantize(x).absmax
    cp = np.zeros(3 * 256, np.float32)
    cp[:absmax.size] = absmax - offset
    s0 = np.abs(cp.reshape(3, 256)).max(axis=1) / np.float32(127)
    q0 = np.clip(np.rint(cp.reshape(3, 256) / s0[:, None]), -127, 127).astype(np.int8).reshape(-1)[:absmax.size]
    assert q.dtype == np.int8 and np.array_equal(q, q0) and np.array_equal(s, s0)


def test_nf4_block_with_subnormal_absmax_does_not_produce_nan():
    # absmax 1e-45 (subnormal): 1/absmax is Inf in float32; zeros of the block stay code 7
    t = nf4_quantize(np.array([1e-45, 0.0, -1e-45, 0.0], np.float32), block_size=4)
    assert t.codes().tolist() == [15, 7, 0, 7]
    assert not np.isnan(t.dequantize()).any()
