"""refquant.ptq.hqq: the initial grid and one optimizer step by hand, which iterate the reference returns,
kappa across hqq versions, the loop twin, and recorded outputs of mobiusml/hqq (0.2.8.post1 and a torch
transcription of the annealing loop)."""
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from refquant.ptq.hqq import HQQResult, hqq_dequantize, hqq_quantize, hqq_quantize_ref

GOLD = np.load(os.path.join(os.path.dirname(__file__), "data", "hqq_goldens.npz"))
F32 = np.float32


# ---------------------------------------------------------------- by hand
def test_initial_grid_by_hand():
    # Group [0, 6.25], 4 bits: max − min = 6.25, s = fl(fl(1/6.25)·15) = fl(0.16·15) = 2.3999999 —
    # torch's `15 / t` is t.reciprocal()·15, not the correctly rounded 2.4. z = −0·s = 0.
    # The stored step is fl(1/s) = 0.4166667; codes round(w·s) = [0, 15]; ŵ = [0, 15·0.4166667].
    r = hqq_quantize(np.array([[0.0, 6.25]], F32), bits=4, group_size=2, optimize=False)
    assert r.inv_scale.tolist() == [F32(2.3999999)] and r.inv_scale[0] != F32(2.4)
    assert r.scale.tolist() == [F32(1) / F32(2.3999999)] and r.zero_point.tolist() == [0.0]
    assert r.codes.tolist() == [[0, 15]] and r.w_hat.tolist() == [[0.0, F32(15) * r.scale[0]]]


def test_one_step_by_hand_shrinkage_inactive():
    # w = [0, 1, 2, 3.2], 2 bits (maxq 3): s = fl(fl(1/3.2)·3) = 0.3125·3 = 0.9375, z₀ = 0.
    # (1) W·s = [0, 0.9375, 1.875, 3] → codes [0, 1, 2, 3];  (2) W_r = q/s = [0, 1.0667, 2.1333, 3.2]
    # (3) e₀ = (0 + 0.0667 + 0.1333 + 0)/4 = 0.05
    # (4) |x|^(0.7−1)/β = 0.0667^−0.3/10 = 0.225 > 0.0667 and 0.1333^−0.3/10 = 0.183 > 0.1333: W_e = 0 —
    #     every error below β^(−1/(2−p)) = 10^(−1/1.3) ≈ 0.17 (in weight units) is shrunk to zero.
    # (5) z₁ = mean(q − W·s) = mean([0, 0.0625, 0.125, 0]) = 0.046875: the least-squares zero.
    r = hqq_quantize(np.array([[0.0, 1.0, 2.0, 3.2]], F32), bits=2, group_size=4, iters=1)
    assert r.inv_scale.tolist() == [0.9375] and r.codes.tolist() == [[0, 1, 2, 3]]
    assert r.zero_point.tolist() == [0.046875] and r.n_iters == 1
    assert r.errors[0] == pytest.approx(0.05, rel=1e-6)


def test_one_step_by_hand_shrinkage_active():
    # The same shape ×10: w = [0, 10, 20, 32], s = fl(fl(1/32)·3) = 0.09375, the same codes [0, 1, 2, 3];
    # errors W − W_r = [0, −2/3, −4/3, 0] now exceed 0.17:
    #   shrink(−2/3) = −(2/3 − (2/3)^−0.3/10) = −(0.666667 − 0.112935) = −0.553732
    #   shrink(−4/3) = −(4/3 − (4/3)^−0.3/10) = −(1.333333 − 0.091732) = −1.241602
    # z₁ = mean([0, 1 − (10 + 0.553732)·0.09375, 2 − (20 + 1.241602)·0.09375, 3 − 32·0.09375])
    #    = mean([0, 0.010587, 0.008600, 0]) = 0.0047969 — ten times smaller than 0.046875 above:
    #    HQQ is not scale invariant (its shrinkage acts in weight units).
    r = hqq_quantize(np.array([[0.0, 10.0, 20.0, 32.0]], F32), bits=2, group_size=4, iters=1)
    assert r.inv_scale.tolist() == [0.09375] and r.codes.tolist() == [[0, 1, 2, 3]]
    assert r.zero_point[0] == pytest.approx(0.0047968633, rel=1e-5)
    assert r.errors[0] == pytest.approx(0.5, rel=1e-6)


def test_constant_and_narrow_groups():
    # |max − min| ≤ 1e-4 → s = 1 (hqq 0.2.8's guard). A constant group 0.25 (3 bits, no zero rounding):
    # z = −0.25, codes round(0.25 − 0.25) = 0, ŵ = (0 + 0.25)·1 = 0.25 exactly. A group spread over
    # [0, 5e-5]: z = 0, codes round(w) = 0, ŵ = 0.
    w = np.array([[0.25] * 4 + [0.0, 1e-5, 3e-5, 5e-5]], F32)
    r = hqq_quantize(w, bits=3, group_size=4, optimize=False)
    assert r.inv_scale.tolist() == [1.0, 1.0] and r.codes.tolist() == [[0] * 8]
    assert r.w_hat.tolist() == [[0.25] * 4 + [0.0] * 4]


# ---------------------------------------------------------------- which iterate comes back
def _early_stopping_weight():
    w = (np.random.default_rng(6).standard_normal((8, 64)) * 0.02).astype(F32)
    r = hqq_quantize(w, bits=3, group_size=32)
    assert r.n_iters == 4  # the loop stopped early: e_3 >= e_2
    return w, r


def test_reference_returns_two_updates_past_its_best_after_an_early_stop():
    w, r = _early_stopping_weight()
    k = r.n_iters - 1  # the step that saw no improvement: e_k >= e_{k-1}
    e = r.errors
    assert e[k] >= e[k - 1] and all(e[t] > e[t + 1] for t in range(k - 1))
    # the returned zero is z_{k+1}: what a loop without early stop returns after k+1 steps
    z_k1 = hqq_quantize(w, bits=3, group_size=32, iters=k + 1, early_stop=False)
    assert np.array_equal(r.zero_point, z_k1.zero_point) and np.array_equal(r.codes, z_k1.codes)
    # return_best: the first minimum of e_0 … e_{k+1}; here z_{k−1}, strictly better than the returned one
    b = hqq_quantize(w, bits=3, group_size=32, return_best=True)
    assert b.best_iter == k - 1 and e[k + 1] > e[k - 1]
    z_km1 = hqq_quantize(w, bits=3, group_size=32, iters=k - 1, early_stop=False)
    assert np.array_equal(b.zero_point, z_km1.zero_point)
    err = lambda res: np.mean(np.abs(w - res.w_hat), dtype=np.float64)
    assert err(b) < err(r)


def test_without_early_stop_every_step_is_taken():
    w, _ = _early_stopping_weight()
    r = hqq_quantize(w, bits=3, group_size=32, early_stop=False, iters=20)
    assert r.n_iters == 20 and len(r.errors) == 21


def test_hqq_improves_the_error_over_its_initialisation():
    rng = np.random.default_rng(2)
    for scale, bits, g in [(0.02, 4, 64), (0.02, 2, 32), (0.3, 3, 32), (3.0, 2, 32)]:
        w = (rng.standard_normal((32, 128)) * scale).astype(F32)
        init = hqq_quantize(w, bits=bits, group_size=g, optimize=False)
        r = hqq_quantize(w, bits=bits, group_size=g)
        lp = lambda res: np.sum(np.abs(w - res.w_hat).astype(np.float64) ** 0.7)
        assert lp(r) < lp(init) and r.errors[r.best_iter] < r.errors[0] == init.errors[0]


def test_kappa_anneals_beta_only_where_the_shrinkage_acts():
    # Small weights: every error is below 0.17, W_e = 0 whatever β is, so κ changes nothing.
    rng = np.random.default_rng(4)
    w = (rng.standard_normal((16, 64)) * 0.02).astype(F32)
    assert np.array_equal(hqq_quantize(w).zero_point, hqq_quantize(w, kappa=1.0).zero_point)
    # Weights of magnitude ~3 at 2 bits: errors of order 1, the shrinkage acts and β's schedule shows.
    w = (rng.standard_normal((16, 64)) * 3).astype(F32)
    a, b = hqq_quantize(w, bits=2, group_size=32), hqq_quantize(w, bits=2, group_size=32, kappa=1.0)
    assert not np.array_equal(a.zero_point, b.zero_point)


# ---------------------------------------------------------------- loop twin, dequantize
@st.composite
def cases(draw):
    g = draw(st.sampled_from([4, 8, 16]))
    rows, cols = draw(st.integers(1, 4)), g * draw(st.integers(1, 3))
    scale = draw(st.sampled_from([0.01, 1.0, 5.0]))
    seed = draw(st.integers(0, 2 ** 16))
    w = (np.random.default_rng(seed).standard_normal((rows, cols)) * scale).astype(F32)
    opts = dict(bits=draw(st.integers(1, 8)), group_size=g, axis=draw(st.sampled_from([0, 1])),
                lp_norm=draw(st.sampled_from([0.7, 1.0, 0.5])), kappa=draw(st.sampled_from([1.0, 1.01])),
                iters=draw(st.integers(0, 8)), early_stop=draw(st.booleans()), return_best=draw(st.booleans()),
                round_zero=draw(st.sampled_from([None, True, False])))
    return w, opts


@settings(max_examples=40, deadline=None)
@given(cases())
def test_loop_twin(case):
    w, opts = case
    a, b = hqq_quantize(w, **opts), hqq_quantize_ref(w, **opts)
    for f in ("w_hat", "codes", "scale", "zero_point", "inv_scale"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert a.errors == b.errors and a.n_iters == b.n_iters and a.best_iter == b.best_iter
    assert np.array_equal(hqq_dequantize(a.codes, a.scale, a.zero_point, group_size=a.group_size, axis=a.axis), a.w_hat)
    assert a.codes.dtype == np.uint8 and a.codes.max() <= 2 ** opts["bits"] - 1


def test_axis_0_groups_are_strided_columns_of_the_flat_view():
    # axis=0 views w (4, 8) as w.reshape(g=4, 8): group k is column k of that view, i.e. w[:, k] here.
    w = np.arange(32, dtype=F32).reshape(4, 8) ** 1.5
    r = hqq_quantize(w, bits=4, group_size=4, axis=0, optimize=False)
    for k in range(8):
        col = hqq_quantize(w[:, k:k + 1], bits=4, group_size=4, axis=0, optimize=False)
        assert r.inv_scale[k] == col.inv_scale[0] and np.array_equal(r.codes[:, k], col.codes[:, 0])


def test_storage_bits():
    r = hqq_quantize(np.ones((4, 64), F32), bits=4, group_size=64)
    assert r.storage_bits() == 256 * 4 + 2 * 4 * 16  # codes + a float16 scale and zero per group


# ---------------------------------------------------------------- recorded: hqq 0.2.8.post1 and its transcription
@pytest.mark.parametrize("i", sorted(int(k[1:].split(".")[0]) for k in GOLD.files if k.endswith(".opts")))
def test_hqq_goldens(i):
    # Torch sums the means in float32 in its own vectorised order and takes |x|^(p−1) from SLEEF; refquant
    # sums in float64: codes, scales and step counts agree exactly, zeros to float32 rounding (measured:
    # at most 4 ulp, 3.1e-7 relative, after 20 steps with the shrinkage active).
    o = json.loads(str(GOLD[f"c{i}.opts"]))
    r = hqq_quantize(GOLD[f"w{o['weight']}"], bits=o["bits"], group_size=o["group_size"], axis=o["axis"],
                     kappa=o["kappa"], round_zero=o["round_zero"])
    assert np.array_equal(r.codes, GOLD[f"c{i}.codes"])
    assert np.array_equal(r.inv_scale, GOLD[f"c{i}.inv_scale"])
    z = GOLD[f"c{i}.zero"]
    assert np.all(np.abs(r.zero_point - z) <= 8 * np.finfo(F32).eps * np.maximum(np.abs(z), 1))
    errors = GOLD[f"c{i}.errors"]
    assert r.n_iters == len(errors)
    np.testing.assert_allclose(r.errors[:len(errors)], errors, rtol=2e-5)
    # Quantizer.dequantize on the recorded parameters: (codes − zero) · (1 / s)
    w_ref = hqq_dequantize(GOLD[f"c{i}.codes"], F32(1) / GOLD[f"c{i}.inv_scale"], z, group_size=o["group_size"], axis=o["axis"])
    np.testing.assert_allclose(r.w_hat, w_ref, rtol=1e-5, atol=1e-5 * float(np.abs(w_ref).max()))


def test_goldens_cover_kappa():
    opts = [json.loads(str(GOLD[k])) for k in GOLD.files if k.endswith(".opts")]
    by = {}
    for i, o in enumerate(opts):
        by.setdefault((o["weight"], o["bits"], o["group_size"], o["axis"]), {})[o["kappa"]] = i
    assert any(not np.array_equal(GOLD[f"c{d[1.0]}.zero"], GOLD[f"c{d[1.01]}.zero"]) for d in by.values())


# ---------------------------------------------------------------- bad input, no mutation
def test_no_mutation_and_read_only_result():
    w = (np.random.default_rng(0).standard_normal((4, 64)) * 0.1).astype(F32)
    c = w.copy()
    r = hqq_quantize(w)
    assert np.array_equal(w, c) and isinstance(r, HQQResult)
    with pytest.raises(ValueError):
        r.codes[0, 0] = 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(w=np.array([[np.nan, 1.0]])), "w contains NaN"),
    (dict(w=np.array([[np.inf, 1.0]])), "w must be finite"),
    (dict(w=np.ones(8)), "w: expected a non-empty 2-D"),
    (dict(w=np.ones((2, 8)), bits=0), "bits must be"),
    (dict(w=np.ones((2, 8)), bits=4.0), "bits must be"),
    (dict(w=np.ones((2, 8)), group_size=3), "group_size must be"),
    (dict(w=np.ones((2, 8)), group_size=0), "group_size must be"),
    (dict(w=np.ones((2, 8)), axis=2, group_size=8), "axis must be"),
    (dict(w=np.ones((2, 8)), group_size=8, lp_norm=1.5), "lp_norm must"),
    (dict(w=np.ones((2, 8)), group_size=8, beta=0.0), "beta must"),
    (dict(w=np.ones((2, 8)), group_size=8, kappa=0.9), "kappa must"),
    (dict(w=np.ones((2, 8)), group_size=8, iters=-1), "iters must"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hqq_quantize(**kwargs)


def test_dequantize_bad_input():
    with pytest.raises(ValueError, match="codes: expected a 2-D integer"):
        hqq_dequantize(np.ones((2, 4)), [1.0], [0.0], group_size=8)
    with pytest.raises(ValueError, match="scale, zero_point: expected 1 groups"):
        hqq_dequantize(np.ones((2, 4), np.uint8), [1.0, 2.0], [0.0], group_size=8)
