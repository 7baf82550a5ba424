"""refquant.ptq.llm_int8: vector-wise quantization by hand, the conventions that separate the readings
(≥ vs >, reciprocal vs division, which weight the outlier path uses, the dequantization constant, the
float16 cast), the exact integer path, loop twins, and bitsandbytes 0.50.2's recorded outputs."""
import os

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from refquant.integer.gemm import int_matmul
from refquant.ptq.llm_int8 import (DEQUANT_CONSTANTS, int8_mm_dequant, int8_vectorwise_dequant,
                                   int8_vectorwise_quant, int8_vectorwise_quant_ref, llm_int8_hook,
                                   llm_int8_linear, llm_int8_linear_ref)

GOLD = np.load(os.path.join(os.path.dirname(__file__), "data", "bnb_int8_goldens.npz"))


def _cases(prefix):
    return sorted({int(k[len(prefix):].split(".")[0]) for k in GOLD.files if k.startswith(prefix)})


# ---------------------------------------------------------------- by hand
def test_vectorwise_quant_2x3_by_hand():
    # Row 0 = [1, −2, 4]: absmax 4, r = fl(fl(1/4)·127) = 0.25·127 = 31.75 (exact):
    #   1·31.75 = 31.75 → 32;  −2·31.75 = −63.5 → −64 (tie, to even);  4·31.75 = 127.
    # Row 1 = [0.5, 0.25, −1]: absmax 1, r = 127: 63.5 → 64 (tie, to even); 31.75 → 32; −127.
    x = np.array([[1.0, -2.0, 4.0], [0.5, 0.25, -1.0]], np.float16)
    codes, absmax, cols = int8_vectorwise_quant(x)
    assert codes.dtype == np.int8 and absmax.dtype == np.float32
    assert codes.tolist() == [[32, -64, 127], [64, 32, -127]]
    assert absmax.tolist() == [4.0, 1.0] and cols.tolist() == []
    # dequantized: (code · absmax) · fl(1/127): 127 · 4 / 127 = 4 up to the float32 reciprocal
    np.testing.assert_allclose(int8_vectorwise_dequant(codes, absmax), [[32 * 4 / 127, -64 * 4 / 127, 4],
                                                                       [64 / 127, 32 / 127, -1]], rtol=1e-6)


def test_scale_is_a_twice_rounded_reciprocal():
    # bitsandbytes computes r = 127.0 / absmax as torch's __rdiv__: fl(fl(1/absmax) · 127).
    # Row [3.625, 1.8125]: exact 127·1.8125/3.625 = 63.5 (→ 64 by half-even division), but
    #   fl(1/3.625) = 0.27586206793785095, ·127 → r = 35.034481048583984 (= fl(127/3.625) here),
    #   1.8125·r = 63.499996185302734 → 63.
    # Row [3.75, 1.875]: fl(1/3.75) = 0.2666666805744171, ·127 → r = 33.866668701171875, while the
    #   single division fl(127/3.75) = 33.86666488647461; 1.875·r = 63.500003814697266 → 64, where
    #   the single division would give 63.499996185302734 → 63.
    x = np.array([[3.625, 1.8125], [3.75, 1.875]], np.float16)
    codes, _, _ = int8_vectorwise_quant(x)
    assert codes[:, 1].tolist() == [63, 64]


def test_exactly_six_separates_the_outlier_rules():
    # x = [[6, 1, −2], [0.5, 5.99, 1]] in float16 (5.99 → 5.98828125), threshold 6.
    # ">=" (bitsandbytes): 6.0 is an outlier, so column 0 is an outlier column, zeroed in both rows;
    #   row 0's absmax skips the 6 → 2, r = fl(fl(1/2)·127) = 63.5: 1 → 63.5 → 64, −2 → −127;
    #   row 1's absmax 5.98828125 (the 0.5 in the outlier column still counts, but is not the max):
    #   r = fl(fl(1/5.98828125)·127) ≈ 21.2080; 5.988 → 127, 1 → 21.2 → 21.
    # ">": no outlier; row 0's absmax 6, r = fl(fl(1/6)·127) ≈ 21.166668: 6 → 127, 1 → 21, −2 → −42.33 → −42;
    #   row 1: 0.5 → 10.6 → 11, 127, 21.
    x = np.array([[6.0, 1.0, -2.0], [0.5, 5.99, 1.0]], np.float16)
    codes, absmax, cols = int8_vectorwise_quant(x, 6.0)
    assert cols.tolist() == [0] and codes.tolist() == [[0, 64, -127], [0, 127, 21]]
    assert absmax.tolist() == [2.0, np.float32(np.float16(5.99))]
    codes, absmax, cols = int8_vectorwise_quant(x, 6.0, outlier_rule=">")
    assert cols.tolist() == [] and codes.tolist() == [[127, 21, -42], [11, 127, 21]]
    assert absmax.tolist() == [6.0, np.float32(np.float16(5.99))]


def test_other_entries_of_an_outlier_column_count_in_the_row_absmax():
    # Column 0 is an outlier column because of row 0's 8; row 1's 3 in that column is not an outlier
    # value, so row 1's absmax is 3 (not 1), although its code is then zeroed: r = fl(fl(1/3)·127)
    # ≈ 42.333336, 1 → 42.3 → 42.
    codes, absmax, cols = int8_vectorwise_quant(np.array([[8.0, 2.0], [3.0, 1.0]], np.float32), 6.0)
    assert cols.tolist() == [0] and absmax.tolist() == [2.0, 3.0] and codes.tolist() == [[0, 127], [0, 42]]


def test_zero_rows_get_zero_codes():
    # absmax 0: bitsandbytes computes 0·(127/0) = NaN and casts it; here the guard gives code 0.
    codes, absmax, _ = int8_vectorwise_quant(np.array([[0.0, 0.0], [7.0, 1.0]], np.float32), 6.0)
    assert codes.tolist() == [[0, 0], [0, 127]] and absmax.tolist() == [0.0, 1.0]
    y = llm_int8_linear(np.zeros((2, 3), np.float32), np.ones((4, 3), np.float32), np.arange(4, dtype=np.float32))
    assert np.array_equal(y, np.tile(np.arange(4, dtype=np.float32), (2, 1)))


def test_dequant_constants():
    # acc = 127·127 = 16129 with unit scales is 1.0 exactly in real arithmetic.
    # "exact": fl(16129 · fl32(1/16129)) = 1.0. "default" (bitsandbytes' CPU backend): 16129 · 6.200124e-05
    # = 1.0000180 — the constant's digits 6.2000124 → 6.200124 make every int8-path output 1.8e-5 too large.
    acc = np.array([[16129]], np.int32)
    assert int8_mm_dequant(acc, [1.0], [1.0], dequant_constant="exact")[0, 0] == 1.0
    assert int8_mm_dequant(acc, [1.0], [1.0])[0, 0] == np.float32(1.000018)
    assert DEQUANT_CONSTANTS["exact"] == np.float32(6.200012e-05)


def test_outlier_weight_original_vs_dequantized():
    # x = [[10, 1]], w = [[0.3, 1.0]], threshold 6: column 0 is an outlier column.
    # Int8 path: CA = [0, 127] (absmax 1), CB = [round(0.29980·127) = 38, 127] (absmax 1.0), acc = 127·127.
    # Float path: 10 · w[0, 0]: "original" w = 0.3; "dequantized" 38 · 1.0 / 127 = 0.2992126.
    x, w = np.array([[10.0, 1.0]], np.float32), np.array([[0.3, 1.0]], np.float32)
    y_deq = llm_int8_linear(x, w, threshold=6.0)
    y_org = llm_int8_linear(x, w, threshold=6.0, outlier_weight="original")
    np.testing.assert_allclose(y_org - y_deq, 10 * (0.3 - 38 / 127), rtol=1e-5)
    np.testing.assert_allclose(y_deq, 16129 * 6.200124e-05 + 10 * 38 / 127, rtol=1e-6)


def test_float16_cast_moves_values_onto_the_threshold():
    # 5.9999 rounds to 6.0 in float16 (spacing 2^-8 on [4, 8)): an outlier only after the cast.
    x = np.array([[5.9999, 1.0], [0.5, 0.25]], np.float32)
    assert int8_vectorwise_quant(x.astype(np.float16), 6.0)[2].tolist() == [0]
    assert int8_vectorwise_quant(x, 6.0)[2].tolist() == []
    w = np.array([[0.3, 1.0]], np.float32)
    assert not np.array_equal(llm_int8_linear(x, w), llm_int8_linear(x, w, cast=None))


def test_every_column_an_outlier_is_the_float_matmul():
    # Every column holds a value ≥ the threshold, so CA = 0, acc = 0 and y = b + Σ_k x_k w_kᵀ: with the
    # original weights that is the float layer, up to float32 summation order.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    x[0] = 7.0
    w, b = rng.standard_normal((4, 7)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    y = llm_int8_linear(x, w, b, threshold=6.0, outlier_weight="original")
    np.testing.assert_allclose(y, x.astype(np.float64) @ w.T.astype(np.float64) + b, rtol=1e-6, atol=1e-6)
    codes, _, _ = int8_vectorwise_quant(x.astype(np.float16), 6.0)
    assert not codes.any()


def test_integer_path_is_exact():
    # K = 4096 codes of 100…127: partial sums pass 2^24, where a float32 accumulation stops being exact.
    # The int8 path must equal the int64 product, dequantized by the same float32 formula.
    rng = np.random.default_rng(7)
    x = rng.integers(100, 128, (3, 4096)).astype(np.float32)
    w = rng.integers(100, 128, (5, 4096)).astype(np.float32) * np.array([[1], [-1], [1], [-1], [1]], np.float32)
    x[:, 0] = w[:, 0] = 127  # absmax 127: every code is the integer itself (r = fl(fl(1/127)·127) = 1)
    CA, SCA, _ = int8_vectorwise_quant(x.astype(np.float16))
    CB, SCB, _ = int8_vectorwise_quant(w.astype(np.float16))
    assert np.array_equal(CA, x) and np.array_equal(CB, w)
    acc64 = x.astype(np.int64) @ w.T.astype(np.int64)
    assert np.abs(acc64).max() > 2 ** 24
    expected = (acc64.astype(np.float32) * (SCA[:, None] * SCB[None, :])) * np.float32(6.200124e-05)
    assert np.array_equal(llm_int8_linear(x, w, threshold=0.0), expected)


# ---------------------------------------------------------------- loop twins
@st.composite
def layers(draw):
    m, k, n = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 3))
    vals = st.one_of(st.just(0.0), st.floats(2 ** -20, 12, width=32), st.floats(-12, -2 ** -20, width=32))
    x = np.array(draw(st.lists(vals, min_size=m * k, max_size=m * k)), np.float32).reshape(m, k)
    w = np.array(draw(st.lists(vals, min_size=n * k, max_size=n * k)), np.float32).reshape(n, k)
    b = draw(st.one_of(st.none(), st.just(np.linspace(-1, 1, n, dtype=np.float32))))
    opts = dict(threshold=draw(st.sampled_from([0.0, 6.0, 2.5])), outlier_rule=draw(st.sampled_from([">=", ">"])),
                outlier_weight=draw(st.sampled_from(["dequantized", "original"])),
                cast=draw(st.sampled_from(["float16", None])), dequant_constant=draw(st.sampled_from(["default", "exact"])))
    return x, w, b, opts


@settings(max_examples=40, deadline=None)
@given(layers())
@example((np.array([[6.0, 0.0], [0.0, 0.0]], np.float32), np.ones((1, 2), np.float32), None,
          dict(threshold=6.0, outlier_rule=">=", outlier_weight="dequantized", cast="float16", dequant_constant="default")))
def test_loop_twins(case):
    x, w, b, opts = case
    t, rule = opts["threshold"], opts["outlier_rule"]
    for v in (x, x.astype(np.float16)):
        got, ref = int8_vectorwise_quant(v, t, outlier_rule=rule), int8_vectorwise_quant_ref(v, t, outlier_rule=rule)
        for g, r in zip(got, ref):
            assert np.array_equal(g, r) and g.dtype == r.dtype
    assert np.array_equal(llm_int8_linear(x, w, b, **opts), llm_int8_linear_ref(x, w, b, **opts))


def test_batched_input_is_row_by_row():
    rng = np.random.default_rng(5)
    x, w = (rng.standard_normal((2, 3, 8)) * 3).astype(np.float32), rng.standard_normal((4, 8)).astype(np.float32)
    y = llm_int8_linear(x, w)
    assert y.shape == (2, 3, 4)
    assert np.array_equal(y.reshape(6, 4), llm_int8_linear(x.reshape(6, 8), w))


# ---------------------------------------------------------------- bitsandbytes 0.50.2, recorded
@pytest.mark.parametrize("i", _cases("vq"))
def test_bnb_vectorwise_quant_goldens(i):
    codes, absmax, cols = int8_vectorwise_quant(GOLD[f"vq{i}.x"], float(GOLD[f"vq{i}.threshold"]))
    assert np.array_equal(codes, GOLD[f"vq{i}.codes"])
    assert np.array_equal(absmax, GOLD[f"vq{i}.absmax"])
    assert np.array_equal(cols, GOLD[f"vq{i}.outlier_cols"])


@pytest.mark.parametrize("i", _cases("mm"))
def test_bnb_matmul_goldens(i):
    x, w = GOLD[f"mm{i}.x"].astype(np.float32), GOLD[f"mm{i}.w"].astype(np.float32)
    b = GOLD[f"mm{i}.b"] if f"mm{i}.b" in GOLD.files else None
    t = float(GOLD[f"mm{i}.threshold"])
    CA, SCA, cols = int8_vectorwise_quant(x.astype(np.float16), t)
    CB, SCB, _ = int8_vectorwise_quant(w.astype(np.float16))
    acc64 = CA.astype(np.int64) @ CB.T.astype(np.int64)
    y_int = int8_mm_dequant(acc64.astype(np.int32), SCA, SCB, b)
    y = llm_int8_linear(x, w, b, threshold=t)
    assert np.array_equal(int_matmul(CA, CB.T), acc64)
    if np.abs(acc64).max() < 2 ** 24:  # bitsandbytes' float32 "int8" matmul is exact here: bit for bit
        assert np.array_equal(GOLD[f"mm{i}.acc"], acc64)
        assert np.array_equal(y_int, GOLD[f"mm{i}.y_int"])
    else:  # K = 4096: bitsandbytes' CPU accumulation (float32 without AVX-512) rounds; refquant's does not
        assert not np.array_equal(GOLD[f"mm{i}.acc"], acc64)
        np.testing.assert_allclose(GOLD[f"mm{i}.acc"], acc64, rtol=1e-6)
    if cols.size == 0:
        assert np.array_equal(y, y_int)
        if np.abs(acc64).max() < 2 ** 24:
            assert np.array_equal(y, GOLD[f"mm{i}.y"])
    else:  # the outlier columns: bitsandbytes' addmm sums in BLAS order, refquant in column order
        bound = np.abs(y_int) + np.abs(x[:, cols]) @ np.abs(int8_vectorwise_dequant(CB[:, cols], SCB)).T
        assert np.all(np.abs(y - GOLD[f"mm{i}.y"]) <= 4 * np.finfo(np.float32).eps * bound)


def test_bnb_goldens_cover_the_cases():
    assert any(GOLD[f"mm{i}.threshold"] > 0 and np.abs(GOLD[f"mm{i}.x"]).max() >= 6 for i in _cases("mm"))
    assert any(GOLD[f"vq{i}.outlier_cols"].size for i in _cases("vq"))


# ---------------------------------------------------------------- hook, bad input, no mutation
def test_hook_on_the_tiny_gpt():
    from refquant.io.checkpoint import load_checkpoint
    from refquant.models.gpt import forward, linear_names
    p, cfg, _ = load_checkpoint()
    idx = np.arange(2 * 16).reshape(2, 16) % cfg.vocab_size
    ref = forward(p, idx, cfg)
    names = linear_names(cfg)
    y = forward(p, idx, cfg, linear=llm_int8_hook(6.0))
    assert not np.array_equal(y, ref)
    np.testing.assert_allclose(y, ref, atol=0.1 * np.abs(ref).max())
    only = forward(p, idx, cfg, linear=llm_int8_hook(6.0, layers=[names[0]]))
    assert not np.array_equal(only, ref) and not np.array_equal(only, y)


def test_no_mutation():
    x = np.array([[7.0, 1.0, -2.0], [0.5, 3.0, 1.0]], np.float32)
    w, b = np.array([[0.3, 1.0, -0.5]], np.float32), np.array([0.25], np.float32)
    copies = [a.copy() for a in (x, w, b)]
    llm_int8_linear(x, w, b)
    llm_int8_linear_ref(x, w, b)
    int8_vectorwise_quant(x, 6.0)
    for a, c in zip((x, w, b), copies):
        assert np.array_equal(a, c)


@pytest.mark.parametrize("call, match", [
    (lambda: int8_vectorwise_quant(np.array([[1.0, np.nan]])), "x contains NaN"),
    (lambda: int8_vectorwise_quant(np.array([[1.0, np.inf]])), "x: ±Inf"),
    (lambda: int8_vectorwise_quant(np.array([[np.inf, 1.0]], np.float16)), "x: ±Inf"),
    (lambda: llm_int8_linear(np.array([[70000.0, 1.0]], np.float32), np.ones((1, 2)), threshold=0.0), "x: ±Inf"),
    (lambda: int8_vectorwise_quant(np.array([[1, 2]], np.int8).astype(np.complex64)), "x: expected a real"),
    (lambda: int8_vectorwise_quant(np.array([[1e-38, 0.0]], np.float32)), "x: a row absmax"),
    (lambda: int8_vectorwise_quant_ref(np.array([[1e-38, 0.0]], np.float32)), "x: a row absmax"),
    (lambda: int8_vectorwise_quant(np.ones((2, 0))), "x: expected an array of shape"),
    (lambda: int8_vectorwise_quant(np.ones((2, 2)), -1.0), "threshold must be"),
    (lambda: int8_vectorwise_quant(np.ones((2, 2)), 6.0, outlier_rule="=>"), "outlier_rule"),
    (lambda: llm_int8_linear(np.ones((2, 3)), np.ones((4, 2))), "x, w: expected"),
    (lambda: llm_int8_linear(np.ones((2, 3)), np.ones((4, 3)), np.ones(3)), "b: expected shape"),
    (lambda: llm_int8_linear(np.ones((2, 3)), np.ones((4, 3)), outlier_weight="fp16"), "outlier_weight"),
    (lambda: llm_int8_linear(np.ones((2, 3)), np.ones((4, 3)), cast="bfloat16"), "cast"),
    (lambda: llm_int8_linear(np.ones((2, 3)), np.ones((4, 3)), dequant_constant="cuda"), "dequant_constant"),
    (lambda: int8_mm_dequant(np.ones((2, 2)), [1, 1], [1, 1]), "acc: expected a 2-D int32"),
    (lambda: int8_mm_dequant(np.ones((2, 2), np.int32), [1], [1, 1]), "row_absmax, col_absmax"),
    (lambda: int8_vectorwise_dequant(np.ones((2, 2), np.int32), [1, 1]), "codes: expected int8"),
    (lambda: llm_int8_hook(6.0, threshhold=5), "options: unknown"),
    (lambda: llm_int8_hook(float("nan")), "threshold must be"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
