"""ptq.mixed_precision and ptq.sensitivity_hessian: the allocators against exhaustive search, the Q4_K_M
rule against llama.cpp's use_more_bits by hand, Hutchinson's trace and the OBS proxy against closed forms."""
import itertools

import numpy as np
import pytest
from hypothesis import example, given, strategies as st

from refquant.formats import registry
from refquant.models import gpt, llama
from refquant.models.lm import llama_lm, tiny_gpt, weight
from refquant.ptq.hessian import update
from refquant.ptq.mixed_precision import (
    K_QUANT_STAND_INS, allocate_dp, allocate_dp_ref, allocate_greedy, allocation_assignments, apply_assignment,
    evaluate_assignments, ggml_candidate, pareto_front, q4km_assignment, q4km_types, use_more_bits)
from refquant.ptq.sensitivity_hessian import (
    Candidate, candidate_bits, fd_hvp, gpt_hessian_traces, hawq_sensitivity, hutchinson_trace, llama_loss_sensitivity,
    loss_sensitivity, obs_proxy, obs_sensitivity, size_table)

GCFG = gpt.GPTConfig(vocab_size=11, context_length=8, n_layer=1, n_head=2, n_embd=8)
LCFG = llama.LlamaConfig(vocab_size=13, context_length=16, n_layer=2, n_embd=8, n_ff=12, n_head=2, n_kv_head=1,
                         rope_dim=4)
CANDS = [Candidate("int2-g4", "int2", {"group_size": 4}), Candidate("int4-g4", "int4", {"group_size": 4}),
         Candidate("int8", "int8"), Candidate("float", None)]


def _windows(vocab, B=3, T=8, seed=0):
    ids = np.random.default_rng(seed).integers(0, vocab, size=(B, T + 1))
    return ids[:, :-1], ids[:, 1:]


# ---------------------------------------------------------------- allocators
def _exhaustive(omega, sizes, budget):
    """The least Σ Ω (summed in layer order from 0.0, as the allocators sum) over every choice that fits."""
    best = None
    for ch in itertools.product(range(omega.shape[1]), repeat=omega.shape[0]):
        if sum(int(sizes[i, j]) for i, j in enumerate(ch)) <= budget:
            cost = sum(float(omega[i, j]) for i, j in enumerate(ch))
            best = cost if best is None or cost < best else best
    return best


@st.composite
def knapsacks(draw):
    L, J = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    omega = np.array(draw(st.lists(st.floats(-5, 100, allow_nan=False), min_size=L * J, max_size=L * J))).reshape(L, J)
    sizes = np.array(draw(st.lists(st.integers(1, 40), min_size=L * J, max_size=L * J))).reshape(L, J)
    budget = draw(st.integers(0, int(sizes.sum()) + 5))
    return omega, sizes, budget


@given(knapsacks())
@example((np.array([[10.0, 0.0], [10.0, 4.5]]), np.array([[1, 3], [1, 2]]), 4))  # the greedy trap below
def test_dp_is_optimal_and_greedy_never_better(case):
    omega, sizes, budget = case
    best = _exhaustive(omega, sizes, budget)
    if best is None:
        for f in (allocate_dp, allocate_dp_ref):
            with pytest.raises(ValueError, match="budget_bits"):
                f(omega, sizes, budget, unit_bits=1)
        with pytest.raises(ValueError, match="budget_bits"):
            allocate_greedy(omega, sizes, budget)
        return
    dp = allocate_dp(omega, sizes, budget, unit_bits=1)
    assert dp == allocate_dp_ref(omega, sizes, budget, unit_bits=1)  # loop twin: same choices, same sums
    assert dp.sensitivity == best  # exact: both sum the same floats in layer order
    assert dp.bits <= budget
    assert dp.bits == sum(int(sizes[i, j]) for i, j in enumerate(dp.choice))
    g = allocate_greedy(omega, sizes, budget)
    assert g.bits <= budget
    assert dp.sensitivity <= g.sensitivity


@given(knapsacks(), st.integers(2, 16))
def test_dp_with_a_unit_is_feasible_and_exact_on_multiples(case, unit):
    omega, sizes, budget = case
    # sizes rounded up to units: whatever is returned fits the budget in bits
    try:
        a = allocate_dp(omega, sizes, budget, unit_bits=unit)
    except ValueError:
        a = None
    if a is not None:
        assert a.bits <= budget
    # sizes that are multiples of the unit: the discretised problem is the problem itself
    best = _exhaustive(omega, sizes * unit, budget * unit)
    if best is not None:
        assert allocate_dp(omega, sizes * unit, budget * unit, unit_bits=unit).sensitivity == best


def test_greedy_trap_by_hand():
    # layer A: 1 bit Ω 10 | 3 bits Ω 0;  layer B: 1 bit Ω 10 | 2 bits Ω 4.5;  budget 4 bits.
    # Greedy starts at (1, 1) bits = 2, Ω = 20; ratios A: 10/2 = 5, B: 5.5/1 = 5.5 -> takes B (3 bits,
    # Ω 14.5); A's upgrade would need 5 bits > 4: stops. Optimum: A upgraded, B not: 4 bits, Ω 10.
    omega, sizes = np.array([[10.0, 0.0], [10.0, 4.5]]), np.array([[1, 3], [1, 2]])
    g = allocate_greedy(omega, sizes, 4)
    assert (g.choice, g.sensitivity, g.bits) == ((0, 1), 14.5, 3)
    d = allocate_dp(omega, sizes, 4, unit_bits=1)
    assert (d.choice, d.sensitivity, d.bits) == ((1, 0), 10.0, 4)


def test_infeasible_budget_names_the_budget():
    omega, sizes = np.zeros((2, 2)), np.array([[8, 16], [8, 16]])
    with pytest.raises(ValueError, match="budget_bits: 15 bits is below the smallest allocation"):
        allocate_dp(omega, sizes, 15)
    with pytest.raises(ValueError, match="budget_bits: 15 bits is below the smallest allocation, 16 bits"):
        allocate_greedy(omega, sizes, 15)


@pytest.mark.parametrize("kw,match", [
    (dict(sensitivity=[[np.nan, 1.0]]), "sensitivity must be finite"),
    (dict(sensitivity=[1.0, 2.0]), "sensitivity: expected a"),
    (dict(sizes=[[8.0, 16.0]]), "sizes must be positive integers"),
    (dict(sizes=[[0, 16]]), "sizes must be positive integers"),
    (dict(sizes=[[8, 16, 24]]), "sizes: shape"),
    (dict(budget_bits=-1), "budget_bits must be"),
    (dict(budget_bits=10.5), "budget_bits must be"),
    (dict(unit_bits=0), "unit_bits must be"),
])
def test_bad_input(kw, match):
    args = dict(sensitivity=[[1.0, 0.5]], sizes=[[8, 16]], budget_bits=64, unit_bits=8) | kw
    with pytest.raises(ValueError, match=match):
        allocate_dp(**args)


def test_dp_table_limit_names_unit_bits(monkeypatch):
    import refquant.ptq.mixed_precision as mp
    monkeypatch.setattr(mp, "MAX_DP_CELLS", 100)
    with pytest.raises(ValueError, match="unit_bits: 1 gives a capacity of 200 units"):
        allocate_dp(np.zeros((1, 2)), np.array([[100, 200]]), 200, unit_bits=1)


def test_inputs_not_mutated():
    omega, sizes = np.array([[3.0, 1.0], [2.0, 0.5]]), np.array([[8, 16], [8, 24]])
    o0, s0 = omega.copy(), sizes.copy()
    allocate_dp(omega, sizes, 32)
    allocate_greedy(omega, sizes, 32)
    np.testing.assert_array_equal(omega, o0)
    np.testing.assert_array_equal(sizes, s0)


# ---------------------------------------------------------------- llama.cpp's Q4_K_M rule
# use_more_bits(i, 32): n/8 = 4, 7n/8 = 28 -> i < 4, i >= 28, and (i - 4) % 3 == 2 -> i = 6, 9, ..., 27
MORE_32 = [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
# use_more_bits(i, 30): n/8 = 3, 7n/8 = 210 // 8 = 26 -> i < 3, i >= 26, (i - 3) % 3 == 2 -> i = 5, 8, ..., 23
MORE_30 = [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]


@pytest.mark.parametrize("n,more", [(32, MORE_32), (30, MORE_30)])
def test_use_more_bits_by_hand(n, more):
    assert [i for i in range(n) if use_more_bits(i, n)] == more


def test_q4km_rule_on_32_layers():
    names = llama.linear_names(llama.LlamaConfig(n_layer=32, n_embd=4096, n_head=32, n_kv_head=8, n_ff=11008))
    t = q4km_types(names)
    for kind in ("attn_v.weight", "ffn_down.weight"):
        assert [i for i in range(32) if t[f"blk.{i}.{kind}"] == "q6_K"] == MORE_32
    assert t["output.weight"] == "q6_K"
    others = [n for n in names if n != "output.weight" and not any(k in n for k in ("attn_v", "ffn_down"))]
    assert len(others) == 32 * 5 and {t[n] for n in others} == {"q4_K"}  # q, k, attn_output, gate, up


def test_q4km_fallback_on_row_lengths():
    # SmolLM2-135M: K = 576 for q/k/v/o/gate/up and the head (576 % 256 = 64), K = 1536 = 6·256 for ffn_down
    names = llama.linear_names(llama.LlamaConfig(n_layer=4))
    K = {n: 1536 if "ffn_down" in n else 576 for n in names}
    t = q4km_types(names, K)
    # 4 layers: n/8 = 0, 7n/8 = 3 -> more bits for i >= 3 and (i - 0) % 3 == 2: blocks 2 and 3
    assert [t[f"blk.{i}.attn_v.weight"] for i in range(4)] == ["q5_0", "q5_0", "q8_0", "q8_0"]
    assert [t[f"blk.{i}.ffn_down.weight"] for i in range(4)] == ["q4_K", "q4_K", "q6_K", "q6_K"]
    assert t["output.weight"] == "q8_0" and t["blk.0.attn_q.weight"] == "q5_0"
    assert q4km_types(["blk.0.attn_q.weight"], {"blk.0.attn_q.weight": 100}) == {"blk.0.attn_q.weight": "f16"}


def test_ggml_candidates_registered_or_stand_ins():
    for t in ("q4_K", "q6_K"):
        assert ggml_candidate(t) == (Candidate(t, t) if t in registry.FORMAT_NAMES else K_QUANT_STAND_INS[t])
        assert ggml_candidate(t, stand_in=True) == K_QUANT_STAND_INS[t]
    assert K_QUANT_STAND_INS["q6_K"] == Candidate("int6-g128", "int6", {"group_size": 128})
    assert ggml_candidate("q8_0") == Candidate("q8_0", "q8_0")
    assert ggml_candidate("f16").format is None
    with pytest.raises(ValueError, match="qtype: 'q9_X'"):
        ggml_candidate("q9_X")


def test_q4km_assignment_on_a_tiny_llama():
    lm, p = llama_lm(LCFG), llama.init_params(LCFG)
    a = q4km_assignment(lm, p, fallback=False)
    assert list(a) == list(lm.linear_names)
    assert a["output.weight"] == ggml_candidate("q6_K") and a["blk.0.attn_q.weight"] == ggml_candidate("q4_K")
    a = q4km_assignment(lm, p, fallback=False, stand_ins=True)
    # 2 layers: n/8 = 0, 7n/8 = 1 -> block 1 gets more bits (and block 0 does not: 0 % 3 != 2)
    assert [a[f"blk.{i}.attn_v.weight"].label for i in range(2)] == ["int4-g128", "int6-g128"]
    # K = 8: no fallback for the head's q8_0 (llama-quantize throws)
    with pytest.raises(ValueError, match="row_lengths: output.weight has K = 8"):
        q4km_assignment(lm, p)
    # K = 32 (and 64 for ffn_down): every q4_K -> q5_0, q6_K -> q8_0, the head q8_0
    cfg = llama.LlamaConfig(vocab_size=13, context_length=16, n_layer=2, n_embd=32, n_ff=64, n_head=2, n_kv_head=1,
                            rope_dim=4)
    lm32 = llama_lm(cfg)
    a = q4km_assignment(lm32, llama.init_params(cfg))
    # 2 layers: n/8 = 0, 7n/8 = 1 -> block 1 gets more bits (and block 0 does not: 0 % 3 != 2)
    assert [a[f"blk.{i}.attn_v.weight"].label for i in range(2)] == ["q5_0", "q8_0"]
    assert [a[f"blk.{i}.ffn_down.weight"].label for i in range(2)] == ["q5_0", "q8_0"]
    assert a["output.weight"].label == "q8_0" and a["blk.1.ffn_up.weight"].label == "q5_0"


def test_q4km_with_the_registered_k_quants():
    if "q4_K" not in registry.FORMAT_NAMES:
        pytest.skip("k-quants not in the registry")
    cfg = llama.LlamaConfig(vocab_size=13, context_length=16, n_layer=1, n_embd=256, n_ff=512, n_head=2, n_kv_head=1,
                            rope_dim=4)
    lm, p = llama_lm(cfg), llama.init_params(cfg)
    a = q4km_assignment(lm, p)  # every K is 256 or 512: no fallback
    # one layer: use_more_bits(0, 1) (0 >= 7·1 // 8 = 0) -> attn_v and ffn_down q6_K, and the head
    assert {n for n, c in a.items() if c.format == "q6_K"} == {"blk.0.attn_v.weight", "blk.0.ffn_down.weight",
                                                               "output.weight"}
    _, bits, n = apply_assignment(lm, p, a)
    # q4_K: q 256·256 + k 128·256 + o 256·256 + gate, up 2·512·256 = 425984 weights × 144/256 bytes · 8 = 4.5 bits
    # q6_K: v 128·256 + down 256·512 + head 13·256 = 167168 weights × 210/256 · 8 = 6.5625 bits
    assert (bits, n) == (425984 * 9 // 2 + 167168 * 105 // 16, 425984 + 167168)  # 1916928 + 1097040


# ---------------------------------------------------------------- Hutchinson and the OBS proxy
def test_hutchinson_is_exact_for_a_diagonal_hessian():
    d = np.array([[1.5, -2.0, 0.25], [4.0, 0.0, 3.0]])  # H = diag(d), Tr H = 6.75
    est = hutchinson_trace(lambda v: d * v, d.shape, n_samples=5, seed=1)
    assert est.samples == (6.75,) * 5 and est.trace == 6.75 and est.std_error == 0.0


def test_hutchinson_on_a_quadratic_through_finite_differences():
    # L(w) = ½ wᵀ A w + bᵀ w, gradient A w + b: the central difference is A v up to rounding
    rng = np.random.default_rng(0)
    M = rng.standard_normal((12, 12))
    A, b, w0 = M @ M.T + np.eye(12), rng.standard_normal(12), rng.standard_normal(12)
    grad = lambda w: A @ w + b  # noqa: E731
    v = np.sign(rng.standard_normal(12))
    np.testing.assert_allclose(fd_hvp(grad, w0, v, 1e-3), A @ v, rtol=1e-9, atol=1e-9)
    est = hutchinson_trace(lambda v: fd_hvp(grad, w0, v), (12,), n_samples=400, seed=2)
    exact = np.trace(A)
    # one sample's variance is 2 Σ_{i≠j} A_ij²: the estimate lies within 4 of its standard deviations
    sd = np.sqrt(2 * ((A**2).sum() - (np.diag(A) ** 2).sum()) / 400)
    assert abs(est.trace - exact) < 4 * sd
    assert est.std_error == pytest.approx(sd, rel=0.25)


def test_hutchinson_bad_input():
    with pytest.raises(ValueError, match="n_samples must be"):
        hutchinson_trace(lambda v: v, (3,), n_samples=0)
    with pytest.raises(ValueError, match="hvp: returned shape"):
        hutchinson_trace(lambda v: v[:2], (3,))
    with pytest.raises(ValueError, match="eps must be"):
        fd_hvp(lambda w: w, np.zeros(2), np.ones(2), 0.0)


def test_obs_proxy_is_the_output_error():
    # H = (2/n) X Xᵀ (inputs as columns of X, n tokens) -> tr(ΔW H ΔWᵀ) = (2/n) ‖ΔW X‖²_F
    rng = np.random.default_rng(1)
    X, dW = rng.standard_normal((5, 40)), rng.standard_normal((3, 5))
    H = update(None, X.T[None], count="tokens").H
    assert obs_proxy(dW, H) == pytest.approx(2 / 40 * ((dW @ X) ** 2).sum(), rel=1e-12)
    with pytest.raises(ValueError, match="dw, H"):
        obs_proxy(dW, H[:4, :4])


# ---------------------------------------------------------------- the three measures on small models
def _recorded_inputs(lm, p, x):
    seen = {}

    def hook(name, xx, w, b):
        seen[name] = xx.reshape(-1, xx.shape[-1]).astype(np.float64)
        return gpt.affine(xx, w, b)

    lm.forward(p, x, linear=hook)
    return seen


@pytest.mark.parametrize("which", ["gpt", "llama"])
def test_obs_sensitivity_from_recorded_inputs(which):
    lm, p = (tiny_gpt(GCFG), gpt.init_params(GCFG)) if which == "gpt" else (llama_lm(LCFG), llama.init_params(LCFG))
    x, _ = _windows(11)
    table = obs_sensitivity(lm, p, [x], CANDS)
    X = _recorded_inputs(lm, p, x)
    for i, name in enumerate(lm.linear_names):
        w = np.asarray(p.get(name, p.get("token_embd.weight")), np.float64)  # the tied head: the embedding
        for j, c in enumerate(CANDS):
            w32 = w.astype(np.float32)  # as stored
            dW = (registry.quantize(w32, c.format, **c.options).dequantize().astype(np.float32) - w
                  if c.format else np.zeros_like(w))
            assert table[i, j] == pytest.approx(2 / len(X[name]) * ((X[name] @ dW.T) ** 2).sum(), rel=1e-9, abs=1e-15)
    assert np.all(table[:, -1] == 0)


def test_loss_sensitivity_equals_a_model_with_the_layer_replaced():
    lm, p = tiny_gpt(GCFG), gpt.init_params(GCFG, seed=3, dtype=np.float64)
    p0 = {k: v.copy() for k, v in p.items()}
    x, y = _windows(11)
    out = loss_sensitivity(lm, p, (x, y), CANDS)
    np.testing.assert_array_equal(p["lm_head.w"], p0["lm_head.w"])
    nll0, _ = gpt.cross_entropy(gpt.forward(p, x, GCFG), y)
    assert out["nll"] == pytest.approx(nll0, rel=1e-12)
    for i, name in enumerate(lm.linear_names):
        for j, c in enumerate(CANDS[:-1]):
            q = {**p, name: registry.quantize(p[name], c.format, **c.options).dequantize().astype(np.float64)}
            nll, _ = gpt.cross_entropy(gpt.forward(q, x, GCFG), y)
            assert out["delta_nll"][i, j] == pytest.approx(nll - nll0, abs=1e-12)
    assert np.all(out["kl"] >= 0) and np.all(out["kl"][:, -1] == 0) and np.all(out["delta_nll"][:, -1] == 0)
    assert out["kl"][:, 0].sum() > out["kl"][:, 2].sum()  # 2 bits hurt more than 8


def test_hessian_trace_of_the_head_against_the_exact_trace():
    # Tr H of the loss w.r.t. lm_head.w (11 × 8 = 88 weights), exactly: Σ_k e_kᵀ H e_k by central differences
    p, (x, y) = gpt.init_params(GCFG, seed=4, dtype=np.float64), _windows(11, B=2, T=6, seed=1)

    def grad(w):
        return gpt.loss_and_grads({**p, "lm_head.w": w}, x, y, GCFG)[1]["lm_head.w"]

    w0 = p["lm_head.w"]
    E = np.eye(w0.size).reshape(w0.size, *w0.shape)
    exact = sum(float((e * fd_hvp(grad, w0, e)).sum()) for e in E)
    est = gpt_hessian_traces(p, GCFG, (x, y), ["lm_head.w"], n_samples=64, seed=0)["lm_head.w"]
    assert abs(est.trace - exact) < 4 * est.std_error
    table = hawq_sensitivity(tiny_gpt(GCFG), p, {"lm_head.w": exact}, CANDS, ["lm_head.w"])
    err = ((registry.quantize(w0, "int2", group_size=4).dequantize() - w0) ** 2).sum()
    assert table[0, 0] == pytest.approx(exact / 88 * err, rel=1e-12)  # eq. (2)
    assert table[0, -1] == 0


def test_hessian_trace_is_unavailable_for_llama():
    with pytest.raises(TypeError, match="LLaMA has none"):
        gpt_hessian_traces(llama.init_params(LCFG), LCFG, _windows(13))


# ---------------------------------------------------------------- sizes, assignments, rows
def test_sizes_rows_and_the_tied_head():
    lm, p = llama_lm(LCFG), llama.init_params(LCFG)
    sizes = size_table(lm, p, CANDS)
    # output.weight is the tied (13, 8) embedding: int2 groups of 4 -> 104·2 + 26·32 = 1040 bits
    assert sizes[-1, 0] == 1040 and sizes[-1, -1] == 13 * 8 * 32
    assert candidate_bits(CANDS[2], (13, 8)) == 13 * 8 * 8 + 13 * 32
    p0 = {k: v.copy() for k, v in p.items()}
    q, bits, n = apply_assignment(lm, p, {"output.weight": CANDS[0]})
    assert "output.weight" in q and "output.weight" not in p and (bits, n) == (1040, 104)
    np.testing.assert_array_equal(q["token_embd.weight"], p0["token_embd.weight"])

    omega = np.tile([3.0, 1.0, 0.1, 0.0], (len(lm.linear_names), 1))
    budget = int(sizes[:, 1].sum())  # the size of uniform int4-g4
    a = allocation_assignments(lm, p, CANDS, {"toy": omega}, {"int4-g4": budget}, unit_bits=1)
    assert set(a) == {f"uniform-{c.label}" for c in CANDS} | {"greedy-toy-int4-g4", "dp-toy-int4-g4"}
    x, y = _windows(13)
    rows = evaluate_assignments(lm, p, {k: a[k] for k in ("uniform-int4-g4", "dp-toy-int4-g4")},
                                lambda q: float(np.exp(gpt.cross_entropy(lm.forward(q, x), y)[0])))
    n_weights = sum(weight(lm, p, n).size for n in lm.linear_names)
    assert rows[0]["bits_per_weight"] == budget / n_weights
    assert rows[1]["bits_per_weight"] <= rows[0]["bits_per_weight"]


def test_pareto_front_by_hand():
    rows = [{"method": "a", "bits_per_weight": 4.0, "perplexity": 10.0},
            {"method": "b", "bits_per_weight": 3.0, "perplexity": 12.0},
            {"method": "c", "bits_per_weight": 4.5, "perplexity": 10.5},  # beaten by a
            {"method": "d", "bits_per_weight": 3.0, "perplexity": 12.0}]  # equal to b: both kept
    assert [r["method"] for r in pareto_front(rows)] == ["b", "d", "a"]


def test_llama_loss_sensitivity_equals_the_full_forward():
    # resuming at the layer's block computes the same operations on the same operands: equal, tolerance 0
    lm, p = llama_lm(LCFG), llama.init_params(LCFG, seed=2)
    x, y = _windows(13, B=2, T=6)
    seen = []
    fast = llama_loss_sensitivity(p, LCFG, (x, y), CANDS, progress=lambda i, n, name: seen.append((i, n, name)))
    slow = loss_sensitivity(lm, p, (x, y), CANDS)
    for k in ("delta_nll", "kl"):
        np.testing.assert_array_equal(fast[k], slow[k])
    assert fast["nll"] == slow["nll"]
    assert seen == [(i + 1, len(lm.linear_names), n) for i, n in enumerate(lm.linear_names)]
    assert np.all(fast["kl"][:, :-1] > 0)  # every layer moves the output of a random model
