"""refquant.ptq.gptq: a 2×4 GPTQ worked by hand, an exact rational oracle written from the paper's OBS
equations, the loop twin, recorded outputs of the reference code (torch), and the conventions the
references disagree on."""
import json
import os
from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from refquant.ptq.gptq import GPTQResult, _inverse_cholesky, gptq_params, gptq_quantize
from refquant.ptq.gptq_ref import gptq_quantize_ref

GOLD = np.load(os.path.join(os.path.dirname(__file__), "data", "gptq_goldens.npz"))
FIELDS = ("codes", "w_hat", "scale", "zero_point", "g_idx", "perm")


def _layer(rows, k, seed, n=None, dead=()):
    """A weight and the Hessian 2/n XᵀX of correlated inputs with unequal channel scales."""
    rng = np.random.default_rng(seed)
    n = n or 2 * k + 8
    w = rng.standard_normal((rows, k))
    x = rng.standard_normal((n, k)) @ (np.eye(k) + 0.5 * rng.standard_normal((k, k))) * rng.uniform(0.2, 3.0, k)
    x[:, list(dead)] = 0.0
    return w, 2.0 / n * x.T @ x, x


def _same(a: GPTQResult, b: GPTQResult):
    for f in FIELDS:
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert a.loss == b.loss and a.percdamp == b.percdamp


# ---------------------------------------------------------------- a 2 × 4 GPTQ by hand
T4 = np.array([[2.0, 1, 0, 0], [1, 2, 1, 0], [0, 1, 2, 1], [0, 0, 1, 2]])


def test_inverse_cholesky_by_hand():
    # H = T4 (tridiagonal 2, 1), percdamp = 0.
    # H⁻¹ = (1/5)·[[4, −3, 2, −1], [−3, 6, −4, 2], [2, −4, 6, −3], [−1, 2, −3, 4]]
    # Upper Cholesky U of H⁻¹ (H⁻¹ = UᵀU): row j of U is row j of the inverse Hessian of the columns
    # j… (the Schur complement after eliminating 0…j−1) over the square root of its diagonal:
    #   j = 0: T4⁻¹ row 0 = [4, −3, 2, −1]/5   → U00² = 4/5, U[0, 1:]/U00 = [−3/4, 1/2, −1/4]
    #   j = 1: T3⁻¹ = (1/4)[[3, −2, 1], ...]    → U11² = 3/4, U[1, 2:]/U11 = [−2/3, 1/3]
    #   j = 2: T2⁻¹ = (1/3)[[2, −1], ...]        → U22² = 2/3, U23/U22 = −1/2
    #   j = 3: T1⁻¹ = 1/2                       → U33² = 1/2
    U, damp = _inverse_cholesky(T4, 0.0, 0.0)
    assert damp == 0.0
    np.testing.assert_allclose(U.T @ U, np.linalg.inv(T4), rtol=1e-14, atol=1e-15)
    assert np.array_equal(U, np.triu(U))
    np.testing.assert_allclose(np.diag(U) ** 2, [4 / 5, 3 / 4, 2 / 3, 1 / 2], rtol=1e-14)
    np.testing.assert_allclose(U[0, 1:] / U[0, 0], [-3 / 4, 1 / 2, -1 / 4], rtol=1e-14)
    np.testing.assert_allclose(U[1, 2:] / U[1, 1], [-2 / 3, 1 / 3], rtol=1e-14)
    np.testing.assert_allclose(U[2, 3] / U[2, 2], -1 / 2, rtol=1e-14)


def test_gptq_2x4_by_hand():
    # 2 bits (maxq = 3), asymmetric, one group per row, H = T4, no damping. Eq. (3)–(4): after
    # column j, W[:, k] −= e_j · U_jk/U_jj with e_j = w_j − ŵ_j (the ratios of the test above).
    # Row 0, w = [0.6, 1.3, 2.4, 3.0]: xmin = min(0.6, 0) = 0, xmax = 3 → scale 1, zero round(0) = 0.
    #   j=0: 0.6 → q 1, e −0.4:  w1 = 1.3 − (−0.4)(−3/4) = 1.0,  w2 = 2.4 − (−0.4)(1/2) = 2.6,
    #                            w3 = 3.0 − (−0.4)(−1/4) = 2.9
    #   j=1: 1.0 → q 1, e 0
    #   j=2: 2.6 → q 3, e −0.4:  w3 = 2.9 − (−0.4)(−1/2) = 2.7
    #   j=3: 2.7 → q 3, e −0.3                                   codes [1, 1, 3, 3] (RTN: [1, 1, 2, 3])
    # Row 1, w = [−1.0, 0.4, 1.4, 2.0]: xmin −1, xmax 2 → scale 1, zero round(1/1) = 1 (ŵ ∈ {−1, 0, 1, 2}).
    #   j=0: −1.0 → q round(−1) + 1 = 0, ŵ −1, e 0
    #   j=1: 0.4 → q 1, ŵ 0, e 0.4:  w2 = 1.4 − 0.4(−2/3) = 5/3,  w3 = 2.0 − 0.4(1/3) = 28/15
    #   j=2: 5/3 → q round(5/3) + 1 = 3, ŵ 2, e −1/3:  w3 = 28/15 − (−1/3)(−1/2) = 1.7
    #   j=3: 1.7 → q 3, ŵ 2, e −0.3                              codes [0, 1, 3, 3] (RTN: [0, 1, 2, 3])
    # loss = ½ Σ e_j²/U_jj²:  row 0: 0.16/(4/5) + 0 + 0.16/(2/3) + 0.09/(1/2) = 0.2 + 0.24 + 0.18 = 0.62
    #                          row 1: 0 + 0.16/(3/4) + (1/9)/(2/3) + 0.09/(1/2) = 0.21333 + 0.16667 + 0.18 = 0.56
    #   → (0.62 + 0.56)/2 = 0.59. The OBS identity: Σ e_j²/U_jj² = δᵀHδ with δ = w − ŵ:
    #   row 0 δ = [−0.4, 0.3, −0.6, 0]: 2(0.16 + 0.09 + 0.36) + 2(−0.12 − 0.18 + 0) = 0.62
    #         (RTN δ = [−0.4, 0.3, 0.4, 0]: 0.82)
    #   row 1 δ = [0, 0.4, −0.6, 0]:    2(0.16 + 0.36) + 2(0 − 0.24 + 0) = 0.56 (RTN δ = [0, 0.4, 0.4, 0]: 0.96)
    w = np.array([[0.6, 1.3, 2.4, 3.0], [-1.0, 0.4, 1.4, 2.0]])
    r = gptq_quantize(w, T4, bits=2, group_size=0, percdamp=0.0)
    assert np.array_equal(r.codes, [[1, 1, 3, 3], [0, 1, 3, 3]])
    assert np.array_equal(r.scale, [[1.0], [1.0]]) and np.array_equal(r.zero_point, [[0], [1]])
    assert np.array_equal(r.w_hat, np.array([[1, 1, 3, 3], [-1, 0, 2, 2]], np.float32))
    assert np.array_equal(r.g_idx, [0, 0, 0, 0]) and np.array_equal(r.perm, [0, 1, 2, 3])
    assert r.loss == pytest.approx(0.59, rel=1e-12)
    d = w - r.w_hat
    assert np.einsum("ri,ij,rj->", d, T4, d) / 2 == pytest.approx(0.59, rel=1e-12)
    rtn = gptq_quantize(w, np.eye(4), bits=2, group_size=0, percdamp=0.0)
    assert np.array_equal(rtn.codes, [[1, 1, 2, 3], [0, 1, 2, 3]])


def test_autogptq_293_all_positive_row_by_hand():
    # AutoGPTQ #293: 4 bits, symmetric, x = [0.8315, 0.4567, 0.4362, 0.2019] (the tensor, as one row).
    # Reference: xmin = min(x, 0) = 0 stays 0 (it is not < 0), xmax = 0.8315 → scale = 0.8315/15 = 0.055433,
    # zero = 8: q = clamp(round(x/scale) + 8, 0, 15) = clamp([15, 8, 8, 4] + 8) = [15, 15, 15, 12]
    #   → ŵ = scale·(q − 8) = [7, 7, 7, 4]·0.055433 = [0.3880, 0.3880, 0.3880, 0.2217] (the output)
    # Fixed (xmin = −xmax): scale = 2·0.8315/15 = 0.110867; x/scale = [7.5, 4.12, 3.93, 1.82]
    #   → q = [15 (16 clamped), 12, 12, 10] → ŵ = [7, 4, 4, 2]·0.110867 = [0.7761, 0.4435, 0.4435, 0.2217]
    x = np.array([[0.8315, 0.4567, 0.4362, 0.2019]])
    for clip, expect_scale, expect_w in [(True, 0.8315 / 15, [0.3880, 0.3880, 0.3880, 0.2217]),
                                         (False, 2 * 0.8315 / 15, [0.7761, 0.4435, 0.4435, 0.2217])]:
        s, z = gptq_params(x, 4, symmetric=True, symmetric_nonnegative_clip=clip)
        assert s[0] == pytest.approx(expect_scale, rel=1e-15) and z[0] == 8
        r = gptq_quantize(x, np.eye(4), bits=4, group_size=0, symmetric=True, symmetric_nonnegative_clip=clip)
        np.testing.assert_allclose(r.w_hat[0], expect_w, atol=5e-5)
    # rows with a negative weight, or all ≤ 0, are widened to [−xmax, xmax] either way
    for row in ([[-0.5, 0.25]], [[-0.5, -0.25]]):
        assert gptq_params(np.array(row), 4, symmetric=True)[0] == gptq_params(
            np.array(row), 4, symmetric=True, symmetric_nonnegative_clip=False)[0]


def test_quantizer_all_zero_row_and_zero_point_range():
    # an all-zero row gets [−1, 1]: asymmetric scale 2/3, zero round(1/(2/3)) = round(1.5) = 2 (half to even)
    s, z = gptq_params(np.zeros((1, 3)), 2)
    assert s[0] == pytest.approx(2 / 3) and z[0] == 2
    rng = np.random.default_rng(0)
    for bits in (2, 3, 4, 8):
        s, z = gptq_params(rng.standard_normal((50, 7)) + rng.uniform(-3, 3, (50, 1)), bits, mse=True)
        assert np.all((0 <= z) & (z <= 2 ** bits - 1)) and np.all(s > 0)


# ---------------------------------------------------------------- an exact oracle from the paper's OBS equations
def _frac_inverse(A):
    n = len(A)
    M = [row[:] + [F(int(i == j)) for j in range(n)] for i, row in enumerate(A)]
    for c in range(n):
        p = next(r for r in range(c, n) if M[r][c] != 0)
        M[c], M[p] = M[p], M[c]
        M[c] = [v / M[c][c] for v in M[c]]
        for r in range(n):
            if r != c and M[r][c] != 0:
                f = M[r][c]
                M[r] = [a - f * b for a, b in zip(M[r], M[c])]
    return [row[n:] for row in M]


def _frac_params(cols, bits, symmetric):
    """The quantizer's (scale, zero) of one row's values, in exact arithmetic (round: half to even)."""
    maxq = 2 ** bits - 1
    xmin, xmax = min(min(cols), 0), max(max(cols), 0)
    if symmetric:
        xmax = max(-xmin, xmax)
        if xmin < 0:
            xmin = -xmax
    if xmin == 0 and xmax == 0:
        xmin, xmax = F(-1), F(1)
    scale = (xmax - xmin) / maxq
    return scale, (F(maxq + 1, 2) if symmetric else F(round(-xmin / scale)))


def obs_oracle(w, h, *, bits, group_size, symmetric=False, act_order=False, static_groups=False,
               percdamp=F(1, 100), block_size=None):
    """GPTQ as the OBS update of the paper (eq. 2–3), in Fractions: after quantizing column q,
    δ = −(w_q − quant(w_q)) / [H⁻¹]_qq · H⁻¹[:, q], and H⁻¹ ← H⁻¹ − H⁻¹[:, q] H⁻¹[q, :] / [H⁻¹]_qq.
    No Cholesky; group parameters from the current weights (or, with block_size, from the weights
    as they stood at the last multiple of block_size)."""
    rows, K = len(w), len(h)
    maxq = 2 ** bits - 1
    W = [[F(v) for v in row] for row in w]
    H = [[F(v) for v in row] for row in h]
    row_params = [_frac_params(W[r], bits, symmetric) for r in range(rows)]
    for j in range(K):
        if H[j][j] == 0:
            H[j][j] = F(1)
            for r in range(rows):
                W[r][j] = F(0)
    gs = group_size or K
    static = {g: [_frac_params(W[r][g * gs:(g + 1) * gs], bits, symmetric) for r in range(rows)]
              for g in range((K + gs - 1) // gs)}
    perm = sorted(range(K), key=lambda j: -H[j][j]) if act_order else list(range(K))
    lam = percdamp * sum(H[j][j] for j in range(K)) / K
    Hp = [[H[a][b] + (lam if a == b else 0) for b in perm] for a in perm]
    Wp = [[row[j] for j in perm] for row in W]
    Hinv = _frac_inverse(Hp)
    codes = [[0] * K for _ in range(rows)]
    scales, zeros, loss = [], [], F(0)
    snap = Wp
    for t in range(K):
        if block_size and t % block_size == 0:
            snap = [row[:] for row in Wp]
        if group_size == 0:
            params = row_params
        elif static_groups:
            params = static[perm[t] // gs]
        elif t % gs == 0:
            src = snap if block_size else Wp
            params = [_frac_params(src[r][t:t + gs], bits, symmetric) for r in range(rows)]
            scales.append([p[0] for p in params])
            zeros.append([p[1] for p in params])
        for r in range(rows):
            s, z = params[r]
            q = min(max(round(Wp[r][t] / s) + z, 0), maxq)
            e = Wp[r][t] - s * (q - z)
            codes[r][perm[t]] = int(q)
            loss += e * e / Hinv[t][t] / 2
            for u in range(t + 1, K):
                Wp[r][u] -= e * Hinv[t][u] / Hinv[t][t]  # eq. (2)
        Hinv = [[Hinv[a][b] - Hinv[a][t] * Hinv[t][b] / Hinv[t][t] for b in range(K)] for a in range(K)]  # eq. (3)
    if group_size == 0:
        scales, zeros = [[p[0] for p in row_params]], [[p[1] for p in row_params]]
    elif static_groups:
        scales = [[p[0] for p in static[g]] for g in sorted(static)]
        zeros = [[p[1] for p in static[g]] for g in sorted(static)]
    return np.array(codes), np.array(scales, dtype=object).T, np.array(zeros, dtype=object).T, loss


ORACLE_CASES = [
    dict(bits=2, group_size=0),
    dict(bits=3, group_size=0, symmetric=True),
    dict(bits=4, group_size=3, group_params_from="updated"),
    dict(bits=2, group_size=3, block_size=4),  # groups start at 0, 3, 6: two of them inside a block
    dict(bits=3, group_size=4, act_order=True, group_params_from="updated"),
    dict(bits=3, group_size=3, act_order=True, static_groups=True),
    dict(bits=4, group_size=0, act_order=True, dead=(2, 5)),
    dict(bits=2, group_size=4, symmetric=True, block_size=2, dead=(0,)),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", ORACLE_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_matches_the_exact_obs_oracle(case, seed):
    case = dict(case)
    dead = case.pop("dead", ())
    w, h, _ = _layer(3, 8, seed, dead=dead)
    if dead:
        w[0, dead[0]] = 5.0  # the row's largest weight sits in a dead column (per-row range sees it)
    block = case.get("block_size")
    updated = case.get("group_params_from") == "updated"
    r = gptq_quantize(w, h, **case)
    codes, scale, zero, loss = obs_oracle(w, h, bits=case["bits"], group_size=case["group_size"],
                                          symmetric=case.get("symmetric", False), act_order=case.get("act_order", False),
                                          static_groups=case.get("static_groups", False),
                                          block_size=None if updated else (block or 128))
    assert np.array_equal(r.codes, codes)
    assert np.array_equal(r.zero_point, zero.astype(np.int64))
    np.testing.assert_allclose(r.scale, scale.astype(float), rtol=1e-13)
    assert r.loss == pytest.approx(float(loss), rel=1e-10)
    if dead:
        assert np.all(r.w_hat[:, list(dead)] == 0)


# ---------------------------------------------------------------- the loop twin
@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 5), k=st.integers(1, 19),
       group_size=st.sampled_from([0, 1, 2, 3, 5, 8]), bits=st.integers(2, 4), symmetric=st.booleans(),
       act_order=st.booleans(), static_groups=st.booleans(), mse=st.booleans(),
       group_params_from=st.sampled_from(["block_start", "updated"]), dead=st.booleans())
def test_lazy_equals_loop_twin_exactly_with_block_1(seed, rows, k, group_size, bits, symmetric, act_order, static_groups,
                                                     mse, group_params_from, dead):
    w, h, _ = _layer(rows, k, seed, dead=(0,) if dead else ())
    kw = dict(bits=bits, group_size=group_size, symmetric=symmetric, act_order=act_order, static_groups=static_groups,
              mse=mse, group_params_from=group_params_from, block_size=1)
    # B = 1: eq. (5) is a product of one term, rounded once, as the loop's rank-1 update: tolerance 0
    _same(gptq_quantize(w, h, **kw), gptq_quantize_ref(w, h, **kw))


@pytest.mark.parametrize("kw", [dict(group_size=32), dict(group_size=32, act_order=True),
                                dict(group_size=48, block_size=64, group_params_from="updated"),
                                dict(group_size=0, symmetric=True, mse=True), dict(group_size=16, bits=2, block_size=32)])
def test_lazy_equals_loop_twin_with_blocks(kw):
    # B > 1: eq. (5) sums B products per weight in one matrix product, the loop subtracts them one by
    # one; the float64 weights differ by rounding only, so the codes agree and the scales agree to ~1e-15
    w, h, _ = _layer(24, 200, 3)
    a, b = gptq_quantize(w, h, **kw), gptq_quantize_ref(w, h, **kw)
    for f in ("codes", "zero_point", "g_idx", "perm"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    np.testing.assert_allclose(a.scale, b.scale, rtol=1e-13)
    np.testing.assert_array_max_ulp(a.w_hat, b.w_hat, maxulp=1)
    assert a.loss == pytest.approx(b.loss, rel=1e-12)


# ---------------------------------------------------------------- the reference code's own outputs
_OPT = dict(groupsize="group_size", blocksize="block_size", sym="symmetric", actorder="act_order")


def _golden(case):
    layer = str(GOLD[case + ".layer"])
    kw = {_OPT.get(k, k): v for k, v in json.loads(str(GOLD[case + ".opts"])).items()}
    kw["group_size"] = max(kw.get("group_size", -1), 0)  # the reference's −1 (one group per row) is our 0
    return GOLD[layer + ".w"], GOLD[layer + ".h"], kw


@pytest.mark.parametrize("case", json.loads(str(GOLD["cases"])))
def test_matches_the_recorded_reference(case):
    """Recorded by tests/data/gptq_make_goldens.py (IST-DASLab fasterquant + Quantizer transcribed to
    torch 2.13 float64, AutoGPTQ's g_idx, GPTQModel's damping retry)."""
    w, h, kw = _golden(case)
    w0 = w.copy()
    r = gptq_quantize(w, h, **kw)
    assert np.array_equal(w, w0)
    assert np.array_equal(r.codes, GOLD[case + ".codes"])
    assert np.array_equal(r.zero_point, GOLD[case + ".zero"])
    assert np.array_equal(r.g_idx, GOLD[case + ".g_idx"])
    np.testing.assert_allclose(r.scale, GOLD[case + ".scale"], rtol=1e-13)  # torch's BLAS / LAPACK: other rounding
    assert r.percdamp == float(GOLD[case + ".damp"])


@pytest.mark.parametrize("case, switch", [("asym_g32_b64", dict(group_params_from="updated")),
                                          ("asym_g48_b64", dict(group_params_from="updated")),
                                          ("sym_g32_b64_positive_rows", dict(symmetric_nonnegative_clip=False)),
                                          ("sym_rows_positive_rows", dict(symmetric_nonnegative_clip=False))])
def test_each_switch_separates_from_the_reference(case, switch):
    """The non-default side of each switch gives other codes on the case that separates them."""
    w, h, kw = _golden(case)
    assert not np.array_equal(gptq_quantize(w, h, **kw, **switch).codes, GOLD[case + ".codes"])


def test_group_params_from_agrees_when_groups_start_at_block_starts():
    w, h, _ = _layer(8, 96, 4)
    for gs, bs in [(32, 32), (64, 32), (96, 32)]:  # every group start is a block start
        a = gptq_quantize(w, h, group_size=gs, block_size=bs)
        b = gptq_quantize(w, h, group_size=gs, block_size=bs, group_params_from="updated")
        assert np.array_equal(a.codes, b.codes) and np.allclose(a.scale, b.scale, rtol=1e-13)


# ---------------------------------------------------------------- properties
def _rtn(w, bits, groups, **q):
    """Round to nearest with the GPTQ quantizer, each group's parameters from the original weights."""
    codes = np.empty(w.shape)
    for cols in groups:
        s, z = gptq_params(w[:, cols], bits, **q)
        codes[:, cols] = np.clip(np.rint(w[:, cols] / s[:, None]) + z[:, None], 0, 2 ** bits - 1)
    return codes


@pytest.mark.parametrize("kw", [dict(group_size=0), dict(group_size=8), dict(group_size=8, symmetric=True, mse=True),
                                dict(group_size=8, act_order=True), dict(group_size=8, act_order=True, static_groups=True)])
def test_diagonal_hessian_is_round_to_nearest(kw):
    # A diagonal H decouples the columns: Hinv is diagonal, every update (4)–(5) is a product with 0,
    # and GPTQ is RTN exactly — with the groups GPTQ forms (with act_order and without static groups,
    # consecutive in the processing order, so not RTN's contiguous groups).
    rng = np.random.default_rng(5)
    w = rng.standard_normal((6, 40))
    kw = dict(kw, bits=3)
    for h in (np.eye(40), np.diag(rng.uniform(0.1, 5.0, 40))):
        r = gptq_quantize(w, h, **kw)
        groups = [np.flatnonzero(r.g_idx == g) for g in range(r.scale.shape[1])]
        q = {k: v for k, v in kw.items() if k in ("symmetric", "mse")}
        assert np.array_equal(r.codes, _rtn(w, 3, groups, **q))
        if not kw.get("act_order"):
            assert np.array_equal(groups, [np.arange(40)] if kw["group_size"] == 0 else np.arange(40).reshape(5, 8))


@pytest.mark.parametrize("kw", [dict(bits=4, group_size=32), dict(bits=3, group_size=32), dict(bits=3, group_size=0),
                                dict(bits=2, group_size=32, act_order=True), dict(bits=4, group_size=32, symmetric=True)])
def test_gptq_beats_rtn_in_output_error(kw):
    w, h, x = _layer(64, 128, 6, n=512)
    r = gptq_quantize(w, h, **kw)
    rtn = gptq_quantize(w, np.eye(128), **kw)  # = RTN (test above)
    err = lambda wh: np.linalg.norm((w - wh) @ x.T)  # noqa: E731  ‖(W − Ŵ) X‖
    assert err(r.w_hat) < 0.85 * err(rtn.w_hat)


def test_act_order_perm_and_g_idx():
    w, h, _ = _layer(5, 50, 7)
    r = gptq_quantize(w, h, group_size=16, act_order=True)
    d = np.diag(h)
    assert np.all(np.diff(d[r.perm]) <= 0) and np.array_equal(np.sort(r.perm), np.arange(50))
    for g in range(4):  # group g holds the columns quantized 16g … 16g + 15
        assert np.array_equal(np.flatnonzero(r.g_idx == g), np.sort(r.perm[16 * g:16 * g + 16]))
    assert r.scale.shape == (5, 4) and r.zero_point.shape == (5, 4)
    s = gptq_quantize(w, h, group_size=16, act_order=True, static_groups=True)
    assert np.array_equal(s.g_idx, np.arange(50) // 16) and np.array_equal(s.perm, r.perm)
    for res in (r, s):  # the result's one dequantization rule, in the original column order
        deq = res.scale[:, res.g_idx] * (res.codes.astype(np.int64) - res.zero_point[:, res.g_idx])
        assert np.array_equal(res.w_hat, deq.astype(np.float32))


def test_static_groups_come_from_the_original_weights():
    w, h, _ = _layer(5, 48, 8)
    h2 = _layer(5, 48, 9)[1]
    a = gptq_quantize(w, h, group_size=16, static_groups=True, act_order=True)
    b = gptq_quantize(w, h2, group_size=16, static_groups=True)
    for g in range(3):
        s, z = gptq_params(w[:, 16 * g:16 * g + 16], 4)
        for r in (a, b):  # whatever H and the order: the parameters of the untouched groups
            assert np.array_equal(r.scale[:, g], s) and np.array_equal(r.zero_point[:, g], z)
    assert not np.array_equal(a.codes, b.codes)  # the error feedback still differs


def test_result_is_frozen_and_inputs_untouched():
    w, h, _ = _layer(4, 20, 10)
    w0, h0 = w.copy(), h.copy()
    r = gptq_quantize(w.astype(np.float32), h, group_size=8)
    assert np.array_equal(w, w0) and np.array_equal(h, h0)
    assert (r.w_hat.dtype, r.codes.dtype, r.scale.dtype, r.zero_point.dtype, r.g_idx.dtype) == (
        np.float32, np.uint8, np.float64, np.int32, np.int32)
    for f in FIELDS:
        with pytest.raises(ValueError):
            getattr(r, f).flat[0] = 1


def test_storage_bits_by_hand():
    w, h, _ = _layer(4, 20, 11)
    # 4·20 codes of 4 bits = 320; 4 rows × 3 groups: 12 float32 scales = 384, 12 4-bit zero points = 48
    assert gptq_quantize(w, h, group_size=8).storage_bits() == 320 + 384 + 48
    assert gptq_quantize(w, h, group_size=8, symmetric=True).storage_bits() == 320 + 384
    # act_order without static groups: the groups are scattered, a 32-bit g_idx per column (20 · 32)
    assert gptq_quantize(w, h, group_size=8, act_order=True).storage_bits() == 320 + 384 + 48 + 640


# ---------------------------------------------------------------- damping
def test_cholesky_failure_names_percdamp():
    h = np.array([[1.0, 2.0], [2.0, 1.0]])  # indefinite (eigenvalues 3, −1)
    with pytest.raises(np.linalg.LinAlgError, match="percdamp=0.01"):
        gptq_quantize(np.ones((2, 2)), h)
    with pytest.raises(ValueError, match="damp_auto_increment"):  # LinAlgError is a ValueError
        gptq_quantize(np.ones((2, 2)), h)
    with pytest.raises(np.linalg.LinAlgError, match="percdamp=0.0 "):  # singular without damping
        gptq_quantize(np.ones((2, 2)), np.ones((2, 2)), percdamp=0.0)


def test_damp_auto_increment_schedule():
    # GPTQModel: damp = percdamp, percdamp + inc, percdamp + 2·inc, … (each added to the undamped H)
    # while damp < 1. H = [[1, 1.3], [1.3, 1]] has eigenvalues 2.3 and −0.3, mean diag 1: H + λI is
    # positive definite iff λ > 0.3. From 0.01 in steps of 0.1: 0.01, 0.11, 0.21 fail, 0.31 succeeds.
    h = np.array([[1.0, 1.3], [1.3, 1.0]])
    r = gptq_quantize(np.ones((2, 2)), h, group_size=0, damp_auto_increment=0.1)
    assert r.percdamp == 0.01 + 0.1 + 0.1 + 0.1  # accumulated in float, as GPTQModel's damp += inc
    # H = [[1, 2], [2, 1]] needs λ > 1: 0.5, 0.75 fail and 1.0 leaves the schedule
    with pytest.raises(np.linalg.LinAlgError, match="every percdamp"):
        gptq_quantize(np.ones((2, 2)), np.array([[1.0, 2.0], [2.0, 1.0]]), percdamp=0.5, damp_auto_increment=0.25)
    w, h2, _ = _layer(3, 10, 12)
    assert gptq_quantize(w, h2, damp_auto_increment=0.0015).percdamp == 0.01  # no retry needed


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("args, kw, match", [
    ((np.ones((2, 3)), np.eye(2)), {}, "hessian: expected shape \\(3, 3\\)"),
    ((np.ones((2, 3)), np.ones((3, 2))), {}, "hessian: expected shape"),
    ((np.ones(3), np.eye(3)), {}, "w: expected a \\(rows, K\\)"),
    ((np.array([[1.0, np.nan]]), np.eye(2)), {}, "w contains NaN"),
    ((np.array([[1.0, np.inf]]), np.eye(2)), {}, "w contains Inf"),
    ((np.ones((1, 2)), np.array([[1.0, np.nan], [np.nan, 1.0]])), {}, "hessian contains NaN"),
    ((np.ones((1, 2)), np.array([[1.0, 0.5], [0.0, 1.0]])), {}, "hessian: not symmetric"),
    ((np.ones((1, 2)), np.eye(2)), dict(bits=0), "bits must be in 1..8"),
    ((np.ones((1, 2)), np.eye(2)), dict(bits=9), "bits must be in 1..8"),
    ((np.ones((1, 2)), np.eye(2)), dict(group_size=-1), "group_size must be 0"),
    ((np.ones((1, 2)), np.eye(2)), dict(block_size=0), "block_size must be >= 1"),
    ((np.ones((1, 2)), np.eye(2)), dict(percdamp=-0.1), "percdamp must be finite"),
    ((np.ones((1, 2)), np.eye(2)), dict(percdamp=1.5, damp_auto_increment=0.1), "percdamp must be in \\(0, 1\\)"),
    ((np.ones((1, 2)), np.eye(2)), dict(group_params_from="current"), "group_params_from"),
    ((np.ones((1, 2)), np.eye(2)), dict(mse=True, max_shrink=0.0), "mse options"),
])
def test_bad_input_value_error(args, kw, match):
    with pytest.raises(ValueError, match=match):
        gptq_quantize(*args, **kw)


@pytest.mark.parametrize("kw", [dict(bits=4.0), dict(group_size=None), dict(block_size=True)])
def test_bad_input_type_error(kw):
    with pytest.raises(TypeError):
        gptq_quantize(np.ones((1, 2)), np.eye(2), **kw)


# ---------------------------------------------------------------- on the shipped tiny GPT, sequentially
def test_sequential_gptq_on_the_tiny_gpt_closes_most_of_rtns_gap():
    from refquant.io.checkpoint import load_checkpoint
    from refquant.models import lm
    from refquant.models.corpus import train_val_split
    from refquant.models.train import evaluate, get_batch
    from refquant.ptq.gptq import gptq_layer
    from refquant.ptq.hessian import quantize_sequential

    p, cfg, meta = load_checkpoint()
    _, val = train_val_split(meta.get("seed", 0), n_train=0, n_val=20000)
    rng = np.random.default_rng(0)
    calib = [get_batch(val[10000:], 8, cfg.context_length, rng)[0] for _ in range(2)]  # disjoint from the eval text
    model = lm.tiny_gpt(cfg)
    q, res = quantize_sequential(model.forward, p, calib, model.sequential_groups, gptq_layer(bits=2, group_size=32))
    assert set(res) == set(model.linear_names) and all(isinstance(r, GPTQResult) for r in res.values())
    rtn = {**p, **{n: gptq_quantize(p[n], np.eye(p[n].shape[1]), bits=2, group_size=32).w_hat for n in model.linear_names}}
    ppl = {k: evaluate(v, val[:10000], cfg, n_windows=16)[0] for k, v in (("float", p), ("gptq", q), ("rtn", rtn))}
    # measured: float 1.626, GPTQ W2 g32 1.659, RTN (the same quantizer) 1.811
    assert ppl["gptq"] - ppl["float"] < 0.5 * (ppl["rtn"] - ppl["float"])


# ---------------------------------------------------------------- a caller-supplied group quantizer
@pytest.mark.parametrize("group_size,block_size", [(32, 128), (48, 32), (32, 1)])
def test_group_quantizer_of_the_default_grid_reproduces_the_default(group_size, block_size):
    # The hook given GPTQ's own quantizer (gptq_params on the group's weights, then eq. (2) per column)
    # must give the default's codes, ŵ and loss exactly: the hook changes where the grid comes from, not the algorithm.
    w, H, _ = _layer(5, 96, 11)

    def own(wg):
        s, z = gptq_params(wg, 3)
        return (s, z), lambda i, col: (np.clip(np.rint(col / s) + z, 0, 7), s * (np.clip(np.rint(col / s) + z, 0, 7) - z))

    for from_ in ("block_start", "updated"):
        kw = dict(group_size=group_size, block_size=block_size, group_params_from=from_)
        a = gptq_quantize(w, H, bits=3, **kw)
        b = gptq_quantize(w, H, group_quantizer=own, **kw)
        assert np.array_equal(a.codes, b.codes) and np.array_equal(a.w_hat, b.w_hat) and a.loss == b.loss
        assert np.array_equal(np.stack([p[0] for p in b.group_params], 1), a.scale)
        assert b.scale.shape == (5, 0) and b.bits == 0
        with pytest.raises(ValueError, match="storage_bits"):
            b.storage_bits()
