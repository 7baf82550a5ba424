"""refquant.ptq.awq: the pseudo-quantizer by hand, the scale search and clipping search against their
loop twins (tolerance 0), a salient channel that the search protects, the conventions where llm-awq
and AutoAWQ differ, whole-model runs on the tiny GPT and LLaMA, and recorded outputs of AutoAWQ."""
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from refquant.core.uniform import fake_quantize, qparams_from_range
from refquant.models import gpt, llama
from refquant.models.lm import fold_scale, llama_lm, tiny_gpt, weight
from refquant.ptq.awq import (awq_search_scale, awq_search_scale_ref, layer_loss, pseudo_quantize,
                              pseudo_quantize_ref, scale_candidates, scale_candidates_ref, weight_mean)
from refquant.ptq.awq_clip import apply_clip, awq_clip, awq_clip_ref
from refquant.ptq.awq_model import awq_quantize

F32 = st.floats(-4, 4, allow_nan=False, width=32)


# ---------------------------------------------------------------- the pseudo-quantizer, eq. (8)-(10)
def test_pseudo_quantizer_by_hand():
    # [-1, 0.5, 2], 2 bits: scale = (2 - (-1)) / 3 = 1, zero = -round(-1 / 1) = 1,
    # q = clamp(round([-1, 0.5, 2]) + 1, 0, 3) = [0, 1, 3] (round(0.5) = 0, half to even) -> ŵ = [-1, 0, 2]
    t = pseudo_quantize(np.array([[-1.0, 0.5, 2.0]], np.float32), bits=2, group_size=0)
    np.testing.assert_array_equal(t.w_hat, [[-1.0, 0.0, 2.0]])
    np.testing.assert_array_equal(t.codes, [[0, 1, 3]])
    assert t.scale[0, 0] == 1.0 and t.zero_point[0, 0] == 1 and t.w_hat.dtype == np.float32
    # symmetric, 3 bits: [0.5, -4]: scale = 4 / (2^2 - 1) = 4/3, q = round([0.375, -3]) = [0, -3] -> ŵ = [0, -4]
    t = pseudo_quantize(np.array([[0.5, -4.0]]), bits=3, group_size=0, zero_point=False)
    np.testing.assert_allclose(t.w_hat, [[0.0, -4.0]], rtol=1e-15)
    np.testing.assert_array_equal(t.codes, [[0, -3]])
    assert t.codes.dtype == np.int8 and t.zero_point[0, 0] == 0


def test_all_positive_group_is_not_widened_to_zero_unlike_the_core_quantizer():
    # AWQ, [1, 2, 3, 4], 2 bits: scale = (4 - 1) / 3 = 1, zero = clamp(-round(1 / 1), 0, 3) = 0,
    # q = clamp(round(w) + 0, 0, 3) = [1, 2, 3, 3] -> ŵ = [1, 2, 3, 3]: the maximum 4 > (maxq - zero)·scale = 3 clips.
    w = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    t = pseudo_quantize(w, bits=2, group_size=4)
    np.testing.assert_array_equal(t.w_hat, [[1, 2, 3, 3]])
    assert t.zero_point[0, 0] == 0 and t.scale[0, 0] == 1.0
    # all negative, [-4, -3, -2, -1]: scale 1, zero = clamp(-round(-4), 0, 3) = 3, q = clamp(round(w) + 3, 0, 3)
    # = [0, 0, 1, 2] -> ŵ = q - 3 = [-3, -3, -2, -1]: the minimum clips to -(maxq·scale) = -3
    np.testing.assert_array_equal(pseudo_quantize(-w[:, ::-1], bits=2, group_size=4).w_hat, [[-3, -3, -2, -1]])
    # refquant's core widens the range to [0, 4]: scale = 4/3, zero = 0, q = round([0.75, 1.5, 2.25, 3]) = [1, 2, 2, 3]
    s, z = qparams_from_range(0.0, 4.0, "uint2")
    np.testing.assert_allclose(fake_quantize(w, s, z, "uint2"), [[4 / 3, 8 / 3, 8 / 3, 4]], rtol=1e-6)


def test_ties_round_half_to_even():
    # [0, 2.5, 3], 2 bits: scale 1, zero 0, round(2.5) = 2 -> ŵ = [0, 2, 3]
    np.testing.assert_array_equal(pseudo_quantize(np.array([[0, 2.5, 3]]), bits=2, group_size=0).w_hat, [[0, 2, 3]])


def test_constant_group_takes_the_1e_5_floor():
    # [3, 3]: scale = max(0, 1e-5) / 15; zero = clamp(-round(3 / scale), 0, 15) = 0 -> q = 15, ŵ = 15·scale = 1e-5
    t = pseudo_quantize(np.array([[3.0, 3.0]]), bits=4, group_size=0)
    np.testing.assert_allclose(t.w_hat, [[1e-5, 1e-5]], rtol=1e-12)


@settings(max_examples=40)
@given(st.integers(1, 4), st.integers(1, 13), st.sampled_from([0, 1, 3, 4, 8]), st.integers(2, 8), st.booleans(),
       st.data())
def test_pseudo_quantize_equals_its_loop_twin(rows, k, gs, bits, zp, data):
    w = data.draw(hnp.arrays(np.float32, (rows, k), elements=F32))
    before = w.copy()
    a = pseudo_quantize(w, bits=bits, group_size=gs, zero_point=zp)
    b = pseudo_quantize_ref(w, bits=bits, group_size=gs, zero_point=zp)
    for f in ("w_hat", "codes", "scale", "zero_point"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    np.testing.assert_array_equal(w, before)
    g = np.arange(k) // a.group_size  # dequantization: ŵ = scale · (q − zero) per group
    deq = (a.codes.astype(np.float32) - a.zero_point[:, g].astype(np.float32)) * a.scale[:, g]
    np.testing.assert_array_equal(deq, a.w_hat)


# ---------------------------------------------------------------- the scale search, eq. (2)-(5)
W_SAL = np.array([[0.1, 1.5, -1.5, 0.0], [-0.1, 0.0, 1.5, -1.5]], np.float32)
X_SAL = np.array([[10.0, 1.0, 1.0, 1.0], [10.0, -1.0, 1.0, -1.0]], np.float32)


def test_folding_identity():
    # x = [1, 2], W = [3, 4], s = [2, 0.5]: (x / s)·(W·s)ᵀ = [0.5, 4]·[6, 2] = 3 + 8 = 11 = 1·3 + 2·4
    x, w, s = np.array([[1.0, 2.0]]), np.array([[3.0, 4.0]]), np.array([2.0, 0.5])
    assert (x / s) @ (w * s).T == x @ w.T == 11.0


def test_salient_channel_is_protected():
    # Channel 0 carries mean|x| = 10, the others 1, and small weights (±0.1) that round-to-nearest zeroes.
    # RTN (α = 0, s = 1), 2 bits per row: range ±1.5 -> scale 1, zero 2;
    # ŵ row 0 = [0, 1, -2, 0], row 1 = [0, 0, 1, -2];  W − Ŵ = [[0.1, 0.5, 0.5, 0], [-0.1, 0, 0.5, 0.5]];
    # x (W − Ŵ)ᵀ: token 0 -> [1 + .5 + .5, -1 + .5 + .5] = [2, 0],
    # token 1 -> [1 - .5 + .5, -1 + .5 - .5] = [1, -1]; loss = (4 + 0 + 1 + 1) / 4 = 1.5
    r = awq_search_scale([W_SAL], X_SAL, bits=2, group_size=0)
    assert r.losses[0] == pytest.approx(1.5, rel=1e-6)
    assert r.alpha > 0 and r.losses.min() < 1.5
    assert r.scales[0] > 1 > r.scales[1] == r.scales[2] == r.scales[3]  # s = 10^(α/2), 10^(−α/2) after (4)
    np.testing.assert_allclose(r.scales, [10 ** (r.alpha / 2)] + [10 ** (-r.alpha / 2)] * 3, rtol=1e-12)


def test_candidates_by_hand():
    # x̄ = [4, 1], n_grid = 2 -> α ∈ {0, 0.5}.
    # llm-awq: α = 0 -> [1, 1]; α = 0.5 -> [2, 1] / sqrt(2) = [√2, 1/√2]
    c = scale_candidates([4.0, 1.0], 2)
    np.testing.assert_allclose(c, [[1, 1], [2 ** 0.5, 2 ** -0.5]], rtol=1e-15)
    # AutoAWQ duo with w̄ = [1, 0.25]: α = 0 -> [1 / 1.0001, 1 / 0.2501], normalised: sqrt of their ratio each way;
    # α = 0.5 -> [2 / (1 + 1e-4), 1 / (0.5 + 1e-4)] = [1.99980002, 1.99960008] -> [sqrt(r), 1/sqrt(r)], r = their ratio
    d = scale_candidates([4.0, 1.0], 2, w_mean=[1.0, 0.25])
    r0, r1 = (1 / 1.0001) / (1 / 0.2501), (2 / 1.0001) / (1 / 0.5001)  # s0 / s1 at α = 0 and α = 0.5
    np.testing.assert_allclose(d, [[r0 ** 0.5, r0 ** -0.5], [r1 ** 0.5, r1 ** -0.5]], rtol=1e-12)


def test_weight_mean_by_hand():
    # rows [1, -2 | 0, 4] and [2, 2 | -1, 1], groups of 2: |w| / (group absmax + 1e-6), then the mean of the two rows:
    # channel 0: (1/2.000001 + 2/2.000001) / 2 = 0.75 / 1.0000005;  channel 1: (2 + 2) / 2.000001 / 2
    # channel 2: (0 + 1/1.000001) / 2;  channel 3: (4/4.000001 + 1/1.000001) / 2
    w = np.array([[1.0, -2, 0, 4], [2, 2, -1, 1]])
    expect = [(1 + 2) / 2.000001 / 2, 4 / 2.000001 / 2, 1 / 1.000001 / 2, (4 / 4.000001 + 1 / 1.000001) / 2]
    np.testing.assert_allclose(weight_mean([w[:1], w[1:]], 2), expect, rtol=1e-15)


def test_duo_scaling_separates_the_references_even_at_alpha_0():
    # llm-awq's α = 0 candidate is s = 1 (plain RTN: the 1.5 above); AutoAWQ's is 1 / (w̄ + 1e-4): a different loss.
    a = awq_search_scale([W_SAL], X_SAL, bits=2, group_size=0)
    b = awq_search_scale([W_SAL], X_SAL, bits=2, group_size=0, duo_scaling=True)
    assert a.losses[0] == pytest.approx(1.5, rel=1e-6) and b.losses[0] != pytest.approx(1.5, rel=1e-3)
    assert not np.allclose(a.losses, b.losses)


@settings(max_examples=25)
@given(st.integers(1, 3), st.integers(2, 9), st.sampled_from([0, 2, 4]), st.booleans(), st.booleans(), st.data())
def test_scale_search_equals_its_loop_twin(n_lin, k, gs, duo, zp, data):
    ws = [data.draw(hnp.arrays(np.float32, (data.draw(st.integers(1, 3)), k), elements=F32)) for _ in range(n_lin)]
    x = data.draw(hnp.arrays(np.float32, (data.draw(st.integers(1, 5)), k), elements=F32))
    opts = dict(bits=data.draw(st.integers(2, 4)), group_size=gs, duo_scaling=duo, zero_point=zp, n_grid=7)
    a, b = awq_search_scale(ws, x, **opts), awq_search_scale_ref(ws, x, **opts)
    np.testing.assert_array_equal(a.losses, b.losses)
    np.testing.assert_array_equal(a.scales, b.scales)
    assert a.alpha == b.alpha
    xm = np.abs(x.astype(np.float64)).mean(0)
    np.testing.assert_array_equal(scale_candidates(xm, 7), scale_candidates_ref(xm, 7))


# ---------------------------------------------------------------- the clipping search, eq. (6)-(7)
def test_representable_group_is_not_clipped():
    # [0, 1, 2, 3] at 2 bits is exact (scale 1, zero 0): error 0 at i = 0, which no shrink beats strictly -> max 3
    np.testing.assert_array_equal(awq_clip(np.array([[0.0, 1, 2, 3]]), np.ones((4, 4)), bits=2, group_size=4), [[3.0]])


def test_outlier_group_is_clipped_and_apply_clip_clamps():
    # [0, 1, 1, 1, 1, 1, 1, 9], 2 bits, x = ones: unclipped, scale 3 rounds every 1 to 0 (Σ error = -6, err 36);
    # any shrink to ≤ 0.95·9 does better, so the threshold is below 9 and at least 0.55·9
    w = np.array([[0.0, 1, 1, 1, 1, 1, 1, 9]])
    m = awq_clip(w, np.ones((3, 8)), bits=2, group_size=8)
    assert 0.55 * 9 - 1e-12 <= m[0, 0] < 9
    np.testing.assert_array_equal(apply_clip(w, m, 8), np.minimum(w, m[0, 0]))


def test_apply_clip_with_a_shorter_last_group():
    # K = 10, groups of 4: columns 0-3 -> 1, 4-7 -> 2, 8-9 -> 3 (a ceil(10 / 3) = 4-wide guess would misplace 8)
    w = np.arange(10.0)[None] * np.array([[1.0], [-1.0]])
    got = apply_clip(w, np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]), 4)
    np.testing.assert_array_equal(got[0], [0, 1, 1, 1, 2, 2, 2, 2, 3, 3])
    np.testing.assert_array_equal(got[1], -got[0])
    with pytest.raises(ValueError, match="max_val: expected shape"):
        apply_clip(w, np.ones((2, 2)), 4)


@settings(max_examples=20)
@given(st.integers(1, 4), st.integers(2, 9), st.sampled_from([0, 2, 3]), st.booleans(), st.data())
def test_clip_equals_its_loop_twin(rows, k, gs, zp, data):
    w = data.draw(hnp.arrays(np.float32, (rows, k), elements=F32))
    x = data.draw(hnp.arrays(np.float32, (data.draw(st.integers(1, 12)), k), elements=F32))
    sel = data.draw(hnp.arrays(bool, rows))
    opts = dict(bits=data.draw(st.integers(2, 4)), group_size=gs, zero_point=zp, n_grid=6, max_shrink=0.5,
                n_sample_token=data.draw(st.integers(1, 6)), rows=sel)
    a, b = awq_clip(w, x, row_batch=2, **opts), awq_clip_ref(w, x, **opts)
    np.testing.assert_array_equal(a, b)
    size = gs or k
    org = np.stack([np.abs(w[:, c:c + size]).max(1) for c in range(0, k, size)], 1)
    np.testing.assert_array_equal(a[~sel], org[~sel])  # rows not searched keep their absmax
    assert np.all(a <= org) and np.all(a >= org * np.float32(0.5) * 0.999)


@pytest.mark.parametrize("seed", range(4))
def test_clip_matmul_accumulation_picks_the_sequential_thresholds(seed):
    # random Gaussian weights and inputs: no two grid points' errors tie to ~1e-15, so the BLAS sums
    # choose the same thresholds as the sequential ones (the loop twin's order)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((40, 72)).astype(np.float32)
    w[3, 5] = 9.0  # an outlier: its group gets clipped
    x = rng.standard_normal((50, 72)).astype(np.float32)
    opts = dict(bits=3, group_size=32, n_grid=20, n_sample_token=50, row_batch=16)
    seq = awq_clip(w, x, **opts)
    np.testing.assert_array_equal(awq_clip(w, x, accumulate="matmul", **opts), seq)
    assert seq[3, 0] < 9.0
    with pytest.raises(ValueError, match="accumulate"):
        awq_clip(w, x, accumulate="pairwise")


# ---------------------------------------------------------------- whole models
GCFG = gpt.GPTConfig(vocab_size=11, context_length=8, n_layer=2, n_head=2, n_embd=8)
LCFG = llama.LlamaConfig(vocab_size=13, context_length=16, n_layer=1, n_embd=8, n_ff=12, n_head=2, n_kv_head=2,
                         rope_dim=4)
CALIB = [np.arange(16).reshape(2, 8) % 11, (np.arange(16).reshape(2, 8) * 5 + 3) % 11]


def _gpt():
    p = gpt.init_params(GCFG, seed=1)
    rng = np.random.default_rng(2)
    return {k: (v + 0.2 * rng.standard_normal(v.shape)).astype(np.float32) if v.ndim == 1 else v for k, v in p.items()}


@pytest.mark.parametrize("lm,p", [(tiny_gpt(GCFG), _gpt()), (llama_lm(LCFG), llama.init_params(LCFG))],
                         ids=["tiny-gpt", "llama"])
@pytest.mark.parametrize("inspect", ["module", "layer"])
def test_awq_quantize_runs_on_both_models(lm, p, inspect):
    before = {k: v.copy() for k, v in p.items()}
    q, res = awq_quantize(lm, p, CALIB, bits=3, group_size=4, n_grid=5, inspect=inspect)
    for k, v in before.items():
        np.testing.assert_array_equal(p[k], v)
    assert set(res.tensors) == set(lm.linear_names)
    for name, t in res.tensors.items():
        np.testing.assert_array_equal(weight(lm, q, name), t.w_hat)
    assert len(res.scales) == len(lm.scale_folds) - 1  # every fold but the head's
    head = lm.linear_names[-1]
    assert head not in res.clips  # head="rtn": quantized without a search
    _, res_f = awq_quantize(lm, p, CALIB, bits=3, group_size=4, n_grid=3, inspect="layer", head="float")
    assert head not in res_f.tensors and len(res_f.tensors) == len(lm.linear_names) - 1
    from refquant.ptq.recipes import Recipe, apply_method  # a float head is not counted in the recipe's bits
    r = Recipe("awq-fh", "int3", {"group_size": 4, "symmetric": False}, method="awq",
               method_options={"head": "float", "n_grid": 3, "inspect": "layer"})
    assert set(apply_method(lm, p, r, CALIB)[1]) == set(lm.linear_names) - {head}
    g = Recipe("gptq-fh", "int3", {"group_size": 4, "symmetric": False}, method="gptq", method_options={"head": "float"})
    qg, bits_g = apply_method(lm, p, g, CALIB)
    assert set(bits_g) == set(lm.linear_names) - {head}
    np.testing.assert_array_equal(weight(lm, qg, head), weight(lm, p, head))  # the head passed through, float
    assert not np.array_equal(weight(lm, qg, lm.linear_names[0]), weight(lm, p, lm.linear_names[0]))
    with pytest.raises(ValueError, match="GPTQ's head must be 'gptq' or 'float', got 'rtn'"):
        apply_method(lm, p, Recipe("g", "int3", {"group_size": 4, "symmetric": False}, method="gptq",
                                   method_options={"head": "rtn"}), CALIB)
    _, res_a = awq_quantize(lm, p, CALIB, bits=3, group_size=4, n_grid=3, inspect="layer", head="awq")
    assert head in res_a.clips and len(res_a.scales) == len(lm.scale_folds)
    # 8 bits: the folded, clipped, quantized model stays close to the float one (symmetric: the asymmetric
    # quantizer loses range on groups of one sign, see test_all_positive_group_is_not_widened_to_zero...)
    q8, _ = awq_quantize(lm, p, CALIB, bits=8, group_size=4, n_grid=5, inspect=inspect, zero_point=False)
    idx = CALIB[0]
    np.testing.assert_allclose(lm.forward(q8, idx), lm.forward(p, idx), atol=2e-3)


def test_module_loss_at_alpha_0_is_the_rtn_error_at_the_inspected_linear():
    lm, p = tiny_gpt(GCFG), _gpt()
    _, res = awq_quantize(lm, p, CALIB, bits=3, group_size=4, n_grid=4, clip=False)
    fold = lm.scale_folds[0]  # ln_1 -> c_attn, checked at attn.c_proj
    rtn = dict(p)
    rtn[fold.linears[0]] = pseudo_quantize(p[fold.linears[0]], bits=3, group_size=4).w_hat
    seen = {}

    def rec(store):
        def hook(name, x, w, b):
            y = gpt.affine(x, w, b)
            store.setdefault(name, []).append(y)
            return y
        return hook
    ref, got = {}, {}
    for b in CALIB:
        lm.forward(p, b, linear=rec(ref))
        lm.forward(rtn, b, linear=rec(got))
    seen = [(a.astype(np.float64) - c) ** 2 for a, c in zip(ref[fold.inspect], got[fold.inspect])]
    expect = sum(float(s.sum()) for s in seen) / sum(s.size for s in seen)
    assert res.scales[fold.linears].losses[0] == pytest.approx(expect, rel=1e-12)


def test_clip_qk_modes_separate_on_the_fused_c_attn():
    lm, p = tiny_gpt(GCFG), _gpt()
    runs = {m: awq_quantize(lm, p, CALIB, bits=2, group_size=4, n_grid=4, inspect="layer", clip_qk=m)[1]
            for m in ("rows", "pure", "layer")}
    name = "h0.attn.c_attn.w"
    assert name not in runs["layer"].clips  # AutoAWQ: a linear with query/key rows is not clipped at all
    folded = dict(p)
    for fold in lm.scale_folds[:-1]:
        folded = fold_scale(lm, folded, fold, runs["rows"].scales[fold.linears].scales)
    absmax = np.abs(folded[name]).reshape(24, 2, 4).max(-1)  # (rows, groups) of the folded weight
    rows, pure = runs["rows"].clips[name], runs["pure"].clips[name]
    np.testing.assert_array_equal(rows[:16], absmax[:16])  # refquant: query/key rows (0:16) are not clipped
    assert np.any(pure[:16] < absmax[:16])  # llm-awq: the fused weight is clipped whole
    np.testing.assert_array_equal(rows[16:], pure[16:])  # the V rows: the same search in both
    lq = llama_lm(LCFG)
    for mode in ("rows", "pure", "layer"):  # separate q and k weights: skipped by every mode, as by both references
        c = awq_quantize(lq, llama.init_params(LCFG), CALIB, bits=2, group_size=4, n_grid=4, inspect="layer",
                         clip_qk=mode)[1].clips
        assert "blk.0.attn_q.weight" not in c and "blk.0.attn_k.weight" not in c and "blk.0.attn_v.weight" in c


def test_layer_loss_by_hand():
    # x = [[1, 2]], W = [[1, 1]], Ŵ = [[1, 0]]: x (W − Ŵ)ᵀ = 2 -> mean of 2² = 4
    assert layer_loss(np.array([[1.0, 2.0]]), [np.array([[1.0, 1.0]])])([np.array([[1.0, 0.0]])]) == 4.0


def test_bad_input_is_refused_with_the_argument_named():
    w = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="bits must be an int in"):
        pseudo_quantize(w, bits=1)
    with pytest.raises(ValueError, match="group_size must be"):
        pseudo_quantize(w, group_size=-1)
    with pytest.raises(ValueError, match="w contains NaN"):
        pseudo_quantize(np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="w_list: expected"):
        awq_search_scale([w], np.ones((3, 5)))
    with pytest.raises(ValueError, match="x: expected inputs"):
        awq_clip(w, np.ones((3, 5)))
    with pytest.raises(ValueError, match="n_grid must be"):
        awq_search_scale([w], np.ones((3, 4)), n_grid=0)
    lm, p = tiny_gpt(GCFG), _gpt()
    with pytest.raises(ValueError, match="inspect: expected one of"):
        awq_quantize(lm, p, CALIB, inspect="block")
    with pytest.raises(ValueError, match="clip_qk: expected one of"):
        awq_quantize(lm, p, CALIB, clip_qk="all")
    with pytest.raises(ValueError, match="head: expected one of"):
        awq_quantize(lm, p, CALIB, head="skip")
    with pytest.raises(ValueError, match="calib_batches: no calibration batch"):
        awq_quantize(lm, p, [])


# ---------------------------------------------------------------- recorded outputs of AutoAWQ 0.2.9 itself
GOLD = np.load(os.path.join(os.path.dirname(__file__), "data", "awq_autoawq_goldens.npz"))  # awq_record_autoawq.py


@pytest.mark.parametrize("i", range(4))
def test_pseudo_quantizer_is_bit_exact_with_autoawq(i):
    bits, gs, zp = (int(v) for v in GOLD[f"pq{i}_args"])
    t = pseudo_quantize(GOLD[f"pq{i}_w"], bits=bits, group_size=gs, zero_point=bool(zp))
    np.testing.assert_array_equal(t.w_hat, GOLD[f"pq{i}_w_hat"])
    np.testing.assert_array_equal(t.scale, GOLD[f"pq{i}_scale"])


@pytest.mark.parametrize("i", range(4))
def test_scale_search_matches_autoawq(i):
    # AutoAWQ computes x̄ and the candidates in float32, here in float64: the same α, scales equal to 1e-6
    bits, gs, duo = (int(v) for v in GOLD[f"sc{i}_args"])
    r = awq_search_scale([GOLD[f"sc{i}_w"]], GOLD[f"sc{i}_x"], bits=bits, group_size=gs, duo_scaling=bool(duo))
    np.testing.assert_allclose(r.scales, GOLD[f"sc{i}_scales"], rtol=1e-6)


@pytest.mark.parametrize("i", range(3))
def test_clip_search_is_exact_with_autoawq(i):
    bits, gs, n_tok = (int(v) for v in GOLD[f"cl{i}_args"])
    m = awq_clip(GOLD[f"cl{i}_w"], GOLD[f"cl{i}_x"], bits=bits, group_size=gs, n_sample_token=n_tok)
    np.testing.assert_array_equal(m, GOLD[f"cl{i}_max_val"])
