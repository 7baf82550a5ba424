"""Gradients of fake quantization: the straight-through estimator (refquant.qat.ste), LSQ / LSQ+
(refquant.qat.lsq), PACT (refquant.qat.pact), and PyTorch's kernels (refquant.mirrors.torch_qat and
torch_lsq, public in refquant.torch_ops).

Hand-computed goldens (the arithmetic in comments); loop twins equal to the vectorised code (tolerance
0); finite differences where a derivative exists; PyTorch's recorded outputs
(tests/data/torch_fakequant_grad_goldens.npz, always) and live PyTorch (when installed); bad input;
inputs never mutated.

What finite differences can and cannot check. The forward x̂ is a staircase: its true derivative in x
is 0 almost everywhere and in s is ``round(v)`` (with v = x/s, the code held fixed) — neither is a
straight-through gradient. So the tests check the STE gradients as the *exact derivative of the
surrogate* they differentiate: ``round`` replaced by the identity plus the rounding offset frozen at
the current point (``c = round(v0) − v0``), which agrees with x̂ at that point. Where the forward is
smooth, the STE gradient is the true derivative and the test uses x̂ itself: the clamped branches
(LSQ's ∂x̂/∂s = qmax for v ≥ qmax; PACT's ∂y_q/∂α = 1 for x > α).
"""
import os

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from refquant import torch_ops as T
from refquant.core.uniform import fake_quantize
from refquant.mirrors import torch_lsq as L, torch_qat as Q, torch_qat_ref as QR
from refquant.qat import lsq, pact, ste

try:  # the oracle; only the differential tests need it
    import torch
except ImportError:
    torch = None
requires_torch = pytest.mark.skipif(torch is None, reason="PyTorch (an optional oracle) is not installed")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

F32 = np.float32
GOLD = np.load(os.path.join(os.path.dirname(__file__), "data", "torch_fakequant_grad_goldens.npz"))
CASES = [str(n) for n in GOLD["names"]]


def case(name):
    return {k.split(".", 1)[1]: GOLD[k] for k in GOLD.files if k.startswith(name + ".")}


def same(a, b):
    """Equal values, shapes and signs of zeros (PyTorch's ``dy * mask`` gives -0.0 for dy < 0)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and np.array_equal(a, b) and np.array_equal(np.signbit(a), np.signbit(b))


# ======================================================================== hand-computed goldens
# scale 0.5, zero point 3, codes [0, 7]: x/s = [-4, -3.5, -3.4, -3, 4, 4.5, 5]
X_STE = np.array([-2.0, -1.75, -1.7, -1.5, 2.0, 2.25, 2.5], F32)


def test_ste_windows_golden():
    dy = np.ones(7, F32)
    # rne(x/s) + 3 = [-1, -4+3 = -1 (tie to even), -3+3 = 0, 0, 7, 4+3 = 7 (tie to even), 8]
    assert ste.ste_grad(dy, X_STE, F32(0.5), 3, (0, 7), window="code").tolist() == [0, 0, 1, 1, 1, 1, 0]
    # qmin - z = -3 <= x/s <= qmax - z = 4
    assert ste.ste_grad(dy, X_STE, F32(0.5), 3, (0, 7), window="range").tolist() == [0, 0, 0, 1, 1, 0, 0]
    assert ste.ste_grad(dy, X_STE, F32(0.5), 3, (0, 7), window="none").tolist() == [1] * 7
    # PyTorch's mask is the "code" window (reciprocal 2 is exact here)
    assert T.fake_quantize_per_tensor_affine_backward(dy, X_STE, 0.5, 3, 0, 7).tolist() == [0, 0, 1, 1, 1, 1, 0]


def test_torch_fake_quantize_backward_is_dy_times_mask():
    dy = np.array([-1.0, -2.0, 3.0, -4.0], F32)
    x = np.array([-9.0, 0.0, 1.0, 9.0], F32)  # scale 1, zero point 0, [-2, 2]: inside = [0, 1, 1, 0]
    dx = T.fake_quantize_per_tensor_affine_backward(dy, x, 1.0, 0, -2, 2)
    assert same(dx, np.array([-0.0, -2.0, 3.0, -0.0], F32))  # dy · 0.0 keeps the sign, as PyTorch
    # per channel, axis 1, integer and float zero points; scales [1, 0.5]
    x2 = np.array([[2.5, 1.25], [3.5, -1.25]], F32)
    # int zp [1, 0]: codes rne(2.5)+1 = 3, rne(3.5)+1 = 5 > 4; rne(2.5)+0 = 2, rne(-2.5) = -2
    assert T.fake_quantize_per_channel_affine_backward(np.ones((2, 2), F32), x2, np.array([1.0, 0.5], F32),
                                                       np.array([1, 0], np.int32), 1, -2, 4).tolist() == [[1, 1], [0, 1]]
    # float zp [1.0, 0.5]: rne(2.5 + 1) = 4, rne(3.5 + 1) = 4, rne(2.5 + 0.5) = 3, rne(-2.5 + 0.5) = -2
    assert T.fake_quantize_per_channel_affine_backward(np.ones((2, 2), F32), x2, np.array([1.0, 0.5], F32),
                                                       np.array([1.0, 0.5], F32), 1, -2, 4).tolist() == [[1, 1], [1, 1]]


X_LSQ = np.array([2.5, 3.5, -0.5, 0.5, 1.5], F32)  # scale 1, codes [-2, 4], dy = 1


def test_learnable_per_tensor_golden_integer_zero_point():
    # forward (zero point after rounding): rne(x) + 1 = [3, 5 -> 4, 1, 1, 3]; y = q - 1
    assert T.fake_quantize_learnable_per_tensor_affine(X_LSQ, 1.0, 1.0, -2, 4).tolist() == [2, 3, 0, 0, 2]
    # backward (zero point BEFORE rounding): k = rne(x + 1) = rne([3.5, 4.5, 0.5, 1.5, 2.5]) = [4, 4, 0, 2, 2]
    dx, ds, dz = T.fake_quantize_learnable_per_tensor_affine_backward(np.ones(5, F32), X_LSQ, 1.0, 1.0, -2, 4)
    assert dx.tolist() == [1] * 5  # x = 3.5 passes although the forward clamped it (code 5 > 4)
    # (k - 1) - x = [0.5, -0.5, -0.5, 0.5, -0.5]: the backward's x̂ at 3.5 is 3, the forward returned 3 too,
    # but at 2.5 the backward's is 3, the forward's 2
    assert ds.tolist() == [-0.5] and dz.tolist() == [0.0] and ds.shape == (1,)


def test_learnable_per_tensor_zero_point_rounded_twice_golden():
    # zp = 2.5: forward z = nearbyint(2.5) = 2: codes rne(x) + 2 = [4, 6 -> 4, 2, 2, 4], y = q - 2
    assert T.fake_quantize_learnable_per_tensor_affine(X_LSQ, 1.0, 2.5, -2, 4).tolist() == [2, 2, 0, 0, 2]
    # backward z_b = (int)(2.5 + 0.5) = 3: k = rne(x + 3) = rne([5.5, 6.5, 2.5, 3.5, 4.5]) = [6, 6, 2, 4, 4]
    dx, ds, dz = T.fake_quantize_learnable_per_tensor_affine_backward(np.ones(5, F32), X_LSQ, 1.0, 2.5, -2, 4, 0.5)
    assert dx.tolist() == [0, 0, 1, 1, 1]
    # above: qmax - z_b = 1 (twice); inside: (k - 3) - x = [-1 + 0.5, 1 - 0.5, 1 - 1.5]; sum 1.5; times g = 0.5
    assert ds.tolist() == [0.75]
    assert dz.tolist() == [-1.0]  # -s · g for the two outside: 2 · (-1 · 0.5)
    # had the backward used the forward's z = 2: k = rne(x + 2) = [4, 6, 2, 2, 4], one outside
    dx2, ds2, _ = T.fake_quantize_learnable_per_tensor_affine_backward(np.ones(5, F32), X_LSQ, 1.0, 2.0, -2, 4)
    assert dx2.tolist() == [1, 0, 1, 1, 1] and ds2.tolist() != [1.5]


@pytest.mark.parametrize("zp, forward, backward", [
    (2.5, 2, 3), (0.5, 0, 1), (-0.7, -1, 0), (-1.5, -2, -1), (-0.5, 0, 0), (3.2, 3, 3), (127.5, 128, 128),
    (1.5, 2, 2), (9.0, 7, 7), (-9.6, -8, -8)])  # [-8, 7]: clamped before the cast
def test_per_tensor_zero_point_rules(zp, forward, backward):
    # nearbyint (ties to even) forward; (int64) clamp(zp + 0.5) (truncation) backward
    lo, hi = (-8, 7) if abs(zp) < 100 else (0, 255)
    assert int(L._zero_point_forward(F32(zp), lo, hi)) == forward
    assert L._zero_point_backward_per_tensor(F32(zp), lo, hi) == backward
    # seen from outside, x far below the range (s = 1): the forward returns (qmin - z) · s
    y = T.fake_quantize_learnable_per_tensor_affine(np.array([-1000.0], F32), 1.0, zp, lo, hi)
    assert y.tolist() == [lo - forward]
    _, ds, _ = T.fake_quantize_learnable_per_tensor_affine_backward(np.ones(1, F32), np.array([-1000.0], F32), 1.0, zp,
                                                                   lo, hi)
    assert ds.tolist() == [lo - backward]  # below the range: dscale = qmin - z_b


def test_learnable_per_channel_rounds_the_zero_point_to_even_both_ways():
    x = np.array([[-20.0, 20.0], [-20.0, 20.0]], F32)  # every element outside [-8, 7]
    zp = np.array([2.5, 0.5], F32)  # round -> [2, 0] (ties to even), forward and backward
    assert T.fake_quantize_learnable_per_channel_affine(x, [1.0, 1.0], zp, 0, -8, 7).tolist() == [[-10, 5], [-8, 7]]
    _, ds, dz = T.fake_quantize_learnable_per_channel_affine_backward(np.ones((2, 2), F32), x, np.ones(2, F32), zp, 0,
                                                                    -8, 7)
    assert ds.tolist() == [(-8 - 2) + (7 - 2), (-8 - 0) + (7 - 0)] and dz.tolist() == [-2, -2]


def test_lsq_golden():
    x = np.array([0.3, 1.0, 3.6, 5.0, -5.0, -4.0])  # s = 0.5, int4 [-8, 7]
    # v = [0.6, 2, 7.2, 10, -10, -8]: inside (|v| strictly within): 0.6 -> round 1, 1 - 0.6 = 0.4; 2 -> 0
    # 7.2 and 10 >= 7: qmax = 7; -10 and -8 <= -8: qmin = -8 (the end itself counts as clamped)
    dx, ds, db = lsq.lsq_grad(np.ones(6), x, 0.5, "int4")
    assert dx.tolist() == [1, 1, 0, 0, 0, 0]
    assert ds == pytest.approx(0.4 + 0 + 7 + 7 - 8 - 8, abs=1e-12) and db == 4
    assert lsq.lsq_fake_quantize(x, 0.5, "int4").tolist() == [0.5, 1.0, 3.5, 3.5, -4.0, -4.0]
    # LSQ+ offset 0.5: v = (x - 0.5) / 0.5 = [-0.4, 1, 6.2, 9, -11, -9]; round(-0.4) - (-0.4) = 0.4
    dx, ds, db = lsq.lsq_grad(np.ones(6), x, 0.5, "int4", offset=0.5, grad_scale=0.25)
    assert dx.tolist() == [1, 1, 1, 0, 0, 0]
    assert ds == pytest.approx(0.25 * (0.4 + 0 + (6 - 6.2) + 7 - 8 - 8), abs=1e-12) and db == 0.25 * 3
    assert lsq.lsq_grad_scale(100, 7) == 1 / np.sqrt(700)
    assert lsq.lsq_init_scale([1.0, -3.0], 4) == 2 * 2 / 2  # 2 · mean|x| / sqrt(Q_P)


def test_lsq_and_pytorch_disagree_half_a_step_beyond_the_range():
    # v = x/s = 7.2 with int4 [-8, 7]: LSQ clips first (∂/∂s = 7, ∂/∂x = 0); PyTorch rounds first:
    # k = rne(7.2) = 7 is inside, so ∂/∂s = k - v = -0.2 and ∂/∂x = 1
    x = np.array([3.6], F32)
    dx, ds, _ = lsq.lsq_grad(np.ones(1, F32), x, F32(0.5), "int4")
    tdx, tds, _ = T.fake_quantize_learnable_per_tensor_affine_backward(np.ones(1, F32), x, 0.5, 0.0, -8, 7)
    assert (dx[0], ds) == (0, 7) and tdx[0] == 1 and tds[0] == pytest.approx(-0.2, abs=1e-6)
    # away from the band they agree: v = 0.6 and v = 10
    x = np.array([0.3, 5.0], F32)
    dx, ds, _ = lsq.lsq_grad(np.ones(2, F32), x, F32(0.5), "int4")
    tdx, tds, _ = T.fake_quantize_learnable_per_tensor_affine_backward(np.ones(2, F32), x, 0.5, 0.0, -8, 7)
    assert np.array_equal(dx, tdx) and ds == pytest.approx(tds[0], abs=1e-6)


def test_pact_golden():
    x = np.array([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0])  # alpha 2, 2 bits: s = 2/3
    # y = [0, 0, 0.5, 1, 2, 2]; y/s = [0, 0, 0.75, 1.5, 3, 3] -> [0, 0, 1, 2 (tie to even), 3, 3]
    assert pact.pact_fake_quantize(x, 2.0, 2) == pytest.approx([0, 0, 2 / 3, 4 / 3, 2, 2], abs=1e-15)
    dx, da = pact.pact_grad(np.ones(6), x, 2.0, 2)
    assert dx.tolist() == [0, 1, 1, 1, 0, 0] and da == 2  # x = 2 (= α) and x = 3 feed α
    # "lsq": + (round(y/s) - y/s) / 3 inside: (1 - 0.75) / 3 + (2 - 1.5) / 3 = 0.25
    _, da = pact.pact_grad(np.ones(6), x, 2.0, 2, alpha_grad="lsq")
    assert da == pytest.approx(2.25, abs=1e-12)


@given(hnp.arrays(F32, (3, 8), elements=st.one_of(st.floats(-40, 40, width=32), st.integers(-80, 80).map(lambda k: k / 4))),
       st.data(), st.sampled_from([(-8, 7), (0, 15), (-128, 127)]))
def test_ste_code_window_is_pytorchs_mask(x, data, r):
    # written from the paper side (qat.ste), equal to the mirror of PyTorch's kernel bit for bit
    dy = data.draw(hnp.arrays(F32, x.shape, elements=st.floats(-4, 4, width=32)))
    s = data.draw(hnp.arrays(F32, (8,), elements=st.sampled_from([0.25, 0.37, 1.0, 0.013, 2.5])))
    z = data.draw(hnp.arrays(np.int64, (8,), elements=st.integers(*r)))
    got = ste.ste_grad(dy, x, s[0], z[0], r, scale_op="multiply_reciprocal")
    assert same(got, T.fake_quantize_per_tensor_affine_backward(dy, x, s[0], int(z[0]), *r))
    got = ste.ste_grad(dy, x, s, z, r, axis=1, scale_op="multiply_reciprocal")
    assert same(got, T.fake_quantize_per_channel_affine_backward(dy, x, s, z.astype(np.int32), 1, *r))


@given(hnp.arrays(np.float64, 40, elements=st.floats(-12, 12)), st.data())
def test_lsq_equals_pytorch_learnable_away_from_the_half_step_bands(x, data):
    # zero point 0, dyadic scale (x/s exact both ways): the two differ only for v in (qmin - 0.5, qmin] and
    # [qmax, qmax + 0.5), where LSQ clamps and PyTorch's rounded code is still inside
    s, (lo, hi) = 0.5, (-8, 7)
    x = x.astype(F32)
    dy = data.draw(hnp.arrays(F32, 40, elements=st.floats(-4, 4, width=32)))
    v = x.astype(np.float64) / s
    band = ((v > lo - 0.5) & (v <= lo)) | ((v >= hi) & (v < hi + 0.5))
    dx, ds, db = lsq.lsq_grad(dy, x, F32(s), (lo, hi))
    tdx, tds, tdz = T.fake_quantize_learnable_per_tensor_affine_backward(dy, x, s, 0.0, lo, hi, reduce=False)
    assert np.array_equal(dx[~band], tdx[~band]) and np.all(dx[band] == 0) and np.array_equal(tdx[band], dy[band])
    if not band.any():
        assert float(ds) == pytest.approx(float(tds.astype(np.float64).sum()), rel=1e-5, abs=1e-5)
        assert float(db) * -s == pytest.approx(float(tdz.astype(np.float64).sum()), abs=1e-5)  # β = -s·z


# ======================================================================== loop twins, tolerance 0
finite = st.floats(-60, 60, allow_nan=False, width=32)
ties = st.integers(-40, 40).map(lambda k: k / 4)  # quarter steps: exact ties of x/s for dyadic scales
values = st.one_of(finite, ties, st.sampled_from([0.0, -0.0, np.inf, -np.inf]))


@st.composite
def granular(draw, with_inf=True):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=6))
    x = draw(hnp.arrays(F32, shape, elements=values if with_inf else st.one_of(finite, ties)))
    dy = draw(hnp.arrays(F32, shape, elements=st.floats(-4, 4, width=32)))
    kind = draw(st.sampled_from(["tensor", "channel", "block"]))
    axis = None if kind == "tensor" else draw(st.integers(-len(shape), len(shape) - 1))
    block = draw(st.integers(1, 4)) if kind == "block" else 0
    from refquant.core.granularity import param_shape
    ps = param_shape(shape, axis, block)
    s = draw(hnp.arrays(F32, ps, elements=st.sampled_from([0.25, 0.5, 1.0, 0.37, 2.0, 0.013])))
    lo, hi = draw(st.sampled_from([(-8, 7), (0, 15), (-128, 127), (0, 3)]))
    z = draw(hnp.arrays(np.int64, ps, elements=st.integers(lo, hi)))
    return x, dy, s, z, (lo, hi), axis, block


@given(granular(), st.sampled_from(ste.WINDOWS), st.sampled_from(ste.SCALE_OPS),
       st.sampled_from(["half_even", "half_away", "floor"]))
def test_ste_equals_loop_twin(c, window, scale_op, rounding):
    x, dy, s, z, r, axis, block = c
    kw = dict(axis=axis, block_size=block, window=window, scale_op=scale_op, rounding=rounding)
    assert same(ste.ste_grad(dy, x, s, z, r, **kw), ste.ste_grad_ref(dy, x, s, z, r, **kw))


@given(granular(), st.booleans(), st.sampled_from([1.0, 0.125, 0.3]))
def test_lsq_equals_loop_twin(c, with_offset, g):
    x, dy, s, z, r, axis, block = c
    off = (z.astype(F32) * F32(0.3) - F32(0.1)) if with_offset else 0.0
    kw = dict(offset=off, axis=axis, block_size=block)
    for a, b in zip(lsq.lsq_grad(dy, x, s, r, grad_scale=g, **kw), lsq.lsq_grad_ref(dy, x, s, r, grad_scale=g, **kw)):
        assert same(a, b)
    assert same(lsq.lsq_fake_quantize(x, s, r, **kw), lsq.lsq_fake_quantize_ref(x, s, r, **kw))


@given(hnp.arrays(F32, hnp.array_shapes(max_dims=3, max_side=6), elements=values), st.data(),
       st.sampled_from([0.5, 1.0, 6.0, 0.37]), st.integers(1, 8), st.sampled_from(pact.ALPHA_GRADS))
def test_pact_equals_loop_twin(x, data, alpha, bits, alpha_grad):
    dy = data.draw(hnp.arrays(F32, x.shape, elements=st.floats(-4, 4, width=32)))
    for a, b in zip(pact.pact_grad(dy, x, alpha, bits, alpha_grad=alpha_grad),
                    pact.pact_grad_ref(dy, x, alpha, bits, alpha_grad=alpha_grad)):
        assert same(a, b)
    assert same(pact.pact_fake_quantize(x, alpha, bits), pact.pact_fake_quantize_ref(x, alpha, bits))


@st.composite
def torch_case(draw):
    """Per-tensor or per-channel (axis >= 0) arguments of the PyTorch mirrors, ties and edges included."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=5))
    lo, hi = draw(st.sampled_from([(-8, 7), (0, 15), (-128, 127), (0, 255), (-2, 4)]))
    per_channel = draw(st.booleans())
    axis = draw(st.integers(0, len(shape) - 1)) if per_channel else -1
    n = shape[axis] if per_channel else 1
    s = draw(hnp.arrays(F32, (n,), elements=st.sampled_from([0.25, 0.5, 1.0, 0.37, 0.013, 1.7])))
    zf = draw(hnp.arrays(F32, (n,), elements=st.one_of(st.integers(lo, hi).map(float),
                                                      st.floats(lo - 2, hi + 2, width=32),
                                                      st.sampled_from([2.5, 0.5, -0.5, -0.7, -1.5]))))
    k = draw(hnp.arrays(np.float64, shape, elements=st.integers(2 * lo - 2 * hi, 2 * hi - 2 * lo).map(lambda v: v / 4)))
    sb = s.reshape([-1 if d == axis else 1 for d in range(len(shape))]) if per_channel else s[0]
    x = (k * sb).astype(F32)
    dy = draw(hnp.arrays(F32, shape, elements=st.floats(-4, 4, width=32)))
    gf = draw(st.sampled_from([1.0, 0.03, 0.5]))
    return x, dy, s, zf, axis, lo, hi, gf


@settings(max_examples=30)  # the twins' exact-rational fused multiply-adds are slow
@given(torch_case())
def test_torch_mirrors_equal_loop_twins(c):
    x, dy, s, zf, axis, lo, hi, gf = c
    zi = np.clip(np.rint(zf), lo, hi).astype(np.int32)
    if axis < 0:
        assert same(Q.fake_quantize_per_tensor_affine_backward(dy, x, s[0], int(zi[0]), lo, hi),
                    QR.fake_quantize_per_tensor_affine_backward_ref(dy, x, s[0], int(zi[0]), lo, hi))
        if lo <= 0 <= hi:
            for red in (True, False):
                for a, b in zip(L.fake_quantize_learnable_per_tensor_affine_backward(dy, x, s, zf, lo, hi, gf, reduce=red),
                                QR.fake_quantize_learnable_per_tensor_affine_backward_ref(dy, x, s, zf, lo, hi, gf,
                                                                                          reduce=red)):
                    assert same(a, b)
        return
    for zp in (zi, zf):
        assert same(Q.fake_quantize_per_channel_affine_backward(dy, x, s, zp, axis, lo, hi),
                    QR.fake_quantize_per_channel_affine_backward_ref(dy, x, s, zp, axis, lo, hi))
    if lo <= 0 <= hi:
        for red in (True, False):
            for a, b in zip(L.fake_quantize_learnable_per_channel_affine_backward(dy, x, s, zf, axis, lo, hi, gf, reduce=red),
                            QR.fake_quantize_learnable_per_channel_affine_backward_ref(dy, x, s, zf, axis, lo, hi, gf,
                                                                                       reduce=red)):
                assert same(a, b)


def test_torch_mirrors_equal_loop_twins_on_the_goldens():
    for name in CASES:
        g = case(name)
        ax, lo, hi = int(g["axis"]), int(g["quant_min"]), int(g["quant_max"])
        gf = float(g["grad_factor"]) if "grad_factor" in g else 1.0
        if str(g["kind"]) == "fq":
            if ax < 0:
                args = (g["dy"], g["x"], g["scale"], int(g["zero_point"]), lo, hi)
                assert same(Q.fake_quantize_per_tensor_affine_backward(*args),
                            QR.fake_quantize_per_tensor_affine_backward_ref(*args)), name
            else:
                args = (g["dy"], g["x"], g["scale"], g["zero_point"], ax, lo, hi)
                assert same(Q.fake_quantize_per_channel_affine_backward(*args),
                            QR.fake_quantize_per_channel_affine_backward_ref(*args)), name
        elif ax < 0:
            args = (g["dy"], g["x"], g["scale"], g["zero_point"], lo, hi, gf)
            for a, b in zip(L.fake_quantize_learnable_per_tensor_affine_backward(*args),
                            QR.fake_quantize_learnable_per_tensor_affine_backward_ref(*args)):
                assert same(a, b), name
        else:
            args = (g["dy"], g["x"], g["scale"], g["zero_point"], ax, lo, hi, gf)
            for a, b in zip(L.fake_quantize_learnable_per_channel_affine_backward(*args),
                            QR.fake_quantize_learnable_per_channel_affine_backward_ref(*args)):
                assert same(a, b), name


def test_torch_ref_fma_is_correctly_rounded():
    # 2^24 + 1 is not a float32: 4097 · 4097 + 0 = 16785409 -> 16785408 (even), and a tie broken by c
    assert QR._fma_ref(F32(4097), F32(4097), F32(0)) == F32(16785408)
    assert QR._fma_ref(F32(1 + 2.0**-12), F32(1 + 2.0**-12), F32(-1)) == F32(2.0**-11 + 2.0**-24)


# ======================================================================== finite differences
def central(f, p, h):
    return (f(p + h) - f(p - h)) / (2 * h)


def test_fd_pact_alpha_gradient_is_the_true_derivative_above_alpha():
    rng = np.random.default_rng(1)
    alpha = 1.3
    x = np.concatenate([rng.uniform(1.5, 4, 20), rng.uniform(-3, -0.1, 10)])  # no x in [0, α]: y_q = α or 0
    dy = rng.standard_normal(30)
    _, da = pact.pact_grad(dy, x, alpha, 4)
    fd = central(lambda a: float(dy @ pact.pact_fake_quantize(x, a, 4)), alpha, 1e-6)
    assert da == pytest.approx(dy[:20].sum(), rel=1e-12) and fd == pytest.approx(da, rel=1e-8)


def test_fd_pact_inside_paper_drops_the_step_size_lsq_mode_is_the_surrogates_derivative():
    rng = np.random.default_rng(2)
    alpha, bits = 2.0, 3
    x = rng.uniform(0.05, 1.95, 40)
    x = x[np.abs(x * 7 / alpha - np.round(x * 7 / alpha)) < 0.4]  # away from rounding transitions
    dy = rng.standard_normal(x.size)
    _, da_paper = pact.pact_grad(dy, x, alpha, bits)
    _, da_lsq = pact.pact_grad(dy, x, alpha, bits, alpha_grad="lsq")
    u0 = x / (alpha / 7)
    c = np.round(u0) - u0  # the rounding offset, frozen

    def surrogate(a):  # y_q with round(u) = u + c: s · (x/s + c) = x + c · a / 7
        s = a / 7
        return float(dy @ (s * (x / s + c)))
    assert da_paper == 0
    assert central(surrogate, alpha, 1e-6) == pytest.approx(da_lsq, rel=1e-7, abs=1e-10)
    # the staircase's own derivative (code fixed) is round(u) / 7 · dy — neither of the two
    true = central(lambda a: float(dy @ pact.pact_fake_quantize(x, a, bits)), alpha, 1e-7)
    assert true == pytest.approx(float(dy @ np.round(u0)) / 7, rel=1e-6)


def test_fd_pact_dx_is_the_derivative_of_the_clip():
    x = np.array([-0.5, 0.2, 0.9, 1.7, 2.5])
    dx, _ = pact.pact_grad(np.ones(5), x, 2.0, 4)
    fd = [central(lambda v: float(np.clip(v, 0, 2.0)), xi, 1e-6) for xi in x]
    assert dx == pytest.approx(fd, abs=1e-9)


def test_fd_ste_range_window_is_the_derivative_of_the_clamped_identity():
    rng = np.random.default_rng(3)
    s, z, (lo, hi) = 0.25, 2, (0, 15)
    x = rng.uniform(-2, 5, 200)
    v = x / s
    x = x[np.minimum(np.abs(v - (lo - z)), np.abs(v - (hi - z))) > 1e-3]  # away from the two kinks
    dx = ste.ste_grad(np.ones(x.size), x, s, z, (lo, hi), window="range")
    fd = np.array([central(lambda t: s * np.clip(t / s, lo - z, hi - z), xi, 1e-7) for xi in x])
    assert dx == pytest.approx(fd, abs=1e-6)
    # the forward itself is flat between its steps: its true derivative is 0, not the STE's 1
    flat = np.array([central(lambda t: float(fake_quantize(np.array([t]), s, z, (lo, hi))[0]), xi, 1e-9) for xi in x
                     if abs(xi / s - np.floor(xi / s) - 0.5) > 1e-3])
    assert np.all(flat == 0)


def test_fd_lsq_gradients_are_the_surrogates_derivatives():
    rng = np.random.default_rng(4)
    s, b, (lo, hi) = 0.4, 0.3, (-8, 7)
    x = rng.uniform(-5, 5, 300)
    v = (x - b) / s
    keep = (np.abs(v - lo) > 1e-3) & (np.abs(v - hi) > 1e-3)
    x, v = x[keep], v[keep]
    dy = rng.standard_normal(x.size)
    vc = np.clip(v, lo, hi)
    c = np.round(vc) - vc  # frozen rounding offsets

    def sur(xx, ss, bb):  # x̂ with round(u) = u + c
        return float(dy @ ((np.clip((xx - bb) / ss, lo, hi) + c) * ss + bb))
    dx, ds, db = lsq.lsq_grad(dy, x, s, (lo, hi), offset=b)
    h = 1e-6
    fdx = np.array([(sur(x + h * e, s, b) - sur(x - h * e, s, b)) / (2 * h) for e in np.eye(x.size)])
    assert dx == pytest.approx(fdx, abs=1e-6)
    assert ds == pytest.approx(central(lambda t: sur(x, t, b), s, h), rel=1e-6)
    assert db == pytest.approx(central(lambda t: sur(x, s, t), b, h), rel=1e-6, abs=1e-8)


def test_fd_lsq_scale_gradient_outside_the_range_is_the_true_derivative():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.uniform(4, 9, 10), rng.uniform(-9, -4, 10)])  # s = 0.5, int4: all |v| >= 8
    dy = rng.standard_normal(20)
    _, ds, _ = lsq.lsq_grad(dy, x, 0.5, "int4")
    fd = central(lambda t: float(dy @ lsq.lsq_fake_quantize(x, t, "int4")), 0.5, 1e-6)
    assert ds == pytest.approx(fd, rel=1e-8) and ds == pytest.approx(7 * dy[:10].sum() - 8 * dy[10:].sum())


def test_fd_torch_learnable_scale_gradient_outside_the_range():
    # x̂ = (qmax - z)·s above the range, (qmin - z)·s below: dscale is the true derivative there
    x = np.array([30.0, 50.0, -40.0], F32)
    dy = np.array([1.0, -2.0, 0.5], F32)
    _, ds, _ = T.fake_quantize_learnable_per_tensor_affine_backward(dy, x, 1.0, 3.0, -8, 7)
    fd = central(lambda t: float(dy.astype(np.float64) @ T.fake_quantize_learnable_per_tensor_affine(x, t, 3.0, -8, 7)),
                 1.0, 1e-3)
    assert ds[0] == (7 - 3) * (1 - 2) + (-8 - 3) * 0.5 and fd == pytest.approx(ds[0], rel=1e-4)


# ======================================================================== PyTorch: recorded goldens (always)
def _mirror(g):
    ax, lo, hi = int(g["axis"]), int(g["quant_min"]), int(g["quant_max"])
    kind = str(g["kind"])
    if kind == "fq":
        if ax < 0:
            return (T.fake_quantize_per_tensor_affine(g["x"], float(g["scale"]), int(g["zero_point"]), lo, hi),
                    T.fake_quantize_per_tensor_affine_backward(g["dy"], g["x"], g["scale"], int(g["zero_point"]), lo, hi))
        return (T.fake_quantize_per_channel_affine(g["x"], g["scale"], g["zero_point"], ax, lo, hi),
                T.fake_quantize_per_channel_affine_backward(g["dy"], g["x"], g["scale"], g["zero_point"], ax, lo, hi))
    gf = float(g["grad_factor"]) if kind == "lsq" else 1 / np.sqrt(g["x"].size * hi)  # the module: numel
    if ax < 0:
        args = (g["scale"], g["zero_point"], lo, hi, gf)
        return (T.fake_quantize_learnable_per_tensor_affine(g["x"], *args),
                T.fake_quantize_learnable_per_tensor_affine_backward(g["dy"], g["x"], *args),
                T.fake_quantize_learnable_per_tensor_affine_backward(g["dy"], g["x"], *args, reduce=False))
    args = (g["scale"], g["zero_point"], ax, lo, hi, gf)
    return (T.fake_quantize_learnable_per_channel_affine(g["x"], *args),
            T.fake_quantize_learnable_per_channel_affine_backward(g["dy"], g["x"], *args),
            T.fake_quantize_learnable_per_channel_affine_backward(g["dy"], g["x"], *args, reduce=False))


def _sum_tolerance(terms, axis):
    """PyTorch sums float32 terms in float32 in its own order: a few ulps of Σ|terms|."""
    a = np.abs(terms.astype(np.float64))
    tot = a.sum() if axis < 0 else np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1).sum(1)
    return 2.0**-20 * tot + 1e-30


@pytest.mark.parametrize("name", CASES)
def test_torch_goldens(name):
    g = case(name)
    out = _mirror(g)
    assert same(out[0], g["y"]) and same(out[1] if str(g["kind"]) == "fq" else out[1][0], g["dx"])
    if str(g["kind"]) == "fq":
        return
    _, ds, dz = out[1]
    if "dscale_vec" in g:  # the per-element terms: bit-exact (recorded as one-element sums: -0.0 became +0.0)
        assert np.array_equal(out[2][1], g["dscale_vec"]) and np.array_equal(out[2][2], g["dzero_point_vec"])
    if "exact" in name:  # sums that are exact in every order
        assert same(ds, g["dscale"]) and same(dz, g["dzero_point"])
    ax = int(g["axis"])
    terms = out[2]
    assert ds.shape == g["dscale"].shape and dz.shape == g["dzero_point"].shape
    assert np.all(np.abs(ds - g["dscale"]) <= _sum_tolerance(terms[1], ax))
    assert np.all(np.abs(dz - g["dzero_point"]) <= _sum_tolerance(terms[2], ax))


def test_goldens_cover_the_cases_the_brief_names():
    # ties and both clamp edges (x/s + z = qmin - 0.5, qmax + 0.5), axes 0 and 1, float zero points,
    # and zero points where nearbyint and (int)(zp + 0.5) disagree
    g = case("fq_tensor_0")  # s = 0.25, z = 3, [0, 15]
    v = g["x"].astype(np.float64) / 0.25 + 3
    assert {-0.5, 15.5, 0.5, 14.5} <= set(v.tolist())
    axes = {(str(case(n)["kind"]), int(case(n)["axis"])) for n in CASES}
    assert {("fq", 0), ("fq", 1), ("lsq", 0), ("lsq", 1), ("lsq", -1)} <= axes
    assert any(case(n)["zero_point"].dtype.kind == "f" and str(case(n)["kind"]) == "fq" for n in CASES)
    zps = {float(case(n)["zero_point"]) for n in CASES if n.startswith("lsq_tensor")}
    assert {2.5, 0.5, -0.7, -1.5} <= {round(z, 4) for z in zps}
    assert str(GOLD["torch_version"]).startswith("2.13.0")


def test_module_grad_factor_uses_numel_even_per_channel():
    g = case("module_per_channel")  # x (4, 32), 4 channels, quant_max 255
    args = (g["dy"], g["x"], g["scale"], g["zero_point"], 0, 0, 255)
    _, ds_numel, _ = T.fake_quantize_learnable_per_channel_affine_backward(*args, 1 / np.sqrt(128 * 255))
    _, ds_channel, _ = T.fake_quantize_learnable_per_channel_affine_backward(*args, 1 / np.sqrt(32 * 255))
    assert np.allclose(ds_numel, g["dscale"], rtol=1e-6, atol=0)
    assert not np.allclose(ds_channel, g["dscale"], rtol=1e-3, atol=0)  # LSQ's per-scale N would be 32


# ======================================================================== PyTorch, live (when installed)
@requires_torch
@settings(max_examples=40)
@given(torch_case())
@example((np.array([2.5, 3.5, -0.5, 0.5, 1.5], F32), np.ones(5, F32), np.ones(1, F32), np.array([2.5], F32), -1,
          -2, 4, 1.0))
def test_torch_mirrors_match_pytorch(c):
    x, dy, s, zf, axis, lo, hi, gf = c
    X = torch.tensor(x, requires_grad=True)
    zi = np.clip(np.rint(zf), lo, hi).astype(np.int32)
    if axis < 0:
        torch.fake_quantize_per_tensor_affine(X, float(s[0]), int(zi[0]), lo, hi).backward(torch.tensor(dy))
        assert same(T.fake_quantize_per_tensor_affine_backward(dy, x, s[0], int(zi[0]), lo, hi), X.grad.numpy())
    else:
        for zp in (zi, zf):
            X.grad = None
            y = torch.fake_quantize_per_channel_affine(X, torch.tensor(s), torch.tensor(zp), axis, lo, hi)
            y.backward(torch.tensor(dy))
            assert same(T.fake_quantize_per_channel_affine(x, s, zp, axis, lo, hi), y.detach().numpy())
            assert same(T.fake_quantize_per_channel_affine_backward(dy, x, s, zp, axis, lo, hi), X.grad.numpy())
    if not lo <= 0 <= hi or (axis >= 0 and x.ndim == 1):  # PyTorch's per-channel backward fails on 1-D x
        return
    X = torch.tensor(x, requires_grad=True)
    S, Z = torch.tensor(s, requires_grad=True), torch.tensor(zf, requires_grad=True)
    if axis < 0:
        y = torch._fake_quantize_learnable_per_tensor_affine(X, S, Z, lo, hi, gf)
        mine = T.fake_quantize_learnable_per_tensor_affine(x, s, zf, lo, hi, gf)
        dx, ds, dz = T.fake_quantize_learnable_per_tensor_affine_backward(dy, x, s, zf, lo, hi, gf)
        _, dsv, dzv = T.fake_quantize_learnable_per_tensor_affine_backward(dy, x, s, zf, lo, hi, gf, reduce=False)
    else:
        y = torch._fake_quantize_learnable_per_channel_affine(X, S, Z, axis, lo, hi, gf)
        mine = T.fake_quantize_learnable_per_channel_affine(x, s, zf, axis, lo, hi, gf)
        dx, ds, dz = T.fake_quantize_learnable_per_channel_affine_backward(dy, x, s, zf, axis, lo, hi, gf)
        _, dsv, dzv = T.fake_quantize_learnable_per_channel_affine_backward(dy, x, s, zf, axis, lo, hi, gf, reduce=False)
    y.backward(torch.tensor(dy))
    assert same(mine, y.detach().numpy()) and same(dx, X.grad.numpy())
    assert np.all(np.abs(ds - S.grad.numpy()) <= _sum_tolerance(dsv, axis))
    assert np.all(np.abs(dz - Z.grad.numpy()) <= _sum_tolerance(dzv, axis))


@requires_torch
def test_torch_per_element_terms_match_pytorch_exactly():
    rng = np.random.default_rng(6)
    s = F32(0.37)
    x = ((rng.integers(-60, 60, 40) + 0.5) * np.float64(s)).astype(F32)  # ties of x/s
    dy = rng.standard_normal(40).astype(F32)
    _, dsv, dzv = T.fake_quantize_learnable_per_tensor_affine_backward(dy, x, s, 2.5, -8, 7, 0.1, reduce=False)
    for i in range(40):  # one element per call: PyTorch's sum is the term
        _, a, b = torch.ops.aten._fake_quantize_learnable_per_tensor_affine_backward(
            torch.tensor(dy[i:i + 1]), torch.tensor(x[i:i + 1]), torch.tensor([s]), torch.tensor([2.5]), -8, 7, 0.1)
        assert a.item() == dsv[i] and b.item() == dzv[i]


# ======================================================================== bad input, no mutation
X2 = np.ones((2, 3), F32)
ONE = np.ones(1, F32)
BAD = [
    (lambda: T.fake_quantize_per_tensor_affine_backward(np.ones(3, F32), X2, 0.1, 0, 0, 255), "dy has shape"),
    (lambda: T.fake_quantize_per_tensor_affine_backward(X2, X2, 0.0, 0, 0, 255), "scale must be finite and > 0"),
    (lambda: T.fake_quantize_per_tensor_affine_backward(X2, X2, 0.1, 300, 0, 255), "zero_point must be"),
    (lambda: T.fake_quantize_per_tensor_affine_backward(X2, X2, 0.1, 0, 9, 3), r"quant_min \(9\) > quant_max"),
    (lambda: T.fake_quantize_per_tensor_affine_backward(X2 * np.nan, X2, 0.1, 0, 0, 255), "dy contains NaN"),
    (lambda: T.fake_quantize_per_tensor_affine_backward(X2 * np.inf, X2, 0.1, 0, 0, 255), "dy must be finite"),
    (lambda: T.fake_quantize_per_tensor_affine_backward(X2, X2 * np.nan, 0.1, 0, 0, 255), "x contains NaN"),
    (lambda: T.fake_quantize_per_tensor_affine_backward(X2, X2, 0.1, 0, 0, 2**20), "quant_min, quant_max"),
    (lambda: T.fake_quantize_per_channel_affine_backward(X2, X2, np.ones(2, F32), np.zeros(3, np.int32), 1, 0, 255),
     "scale has shape"),
    (lambda: T.fake_quantize_per_channel_affine_backward(X2, X2, np.ones(3, F32), np.zeros(2, np.int32), 1, 0, 255),
     "zero_point has shape"),
    (lambda: T.fake_quantize_per_channel_affine_backward(X2, X2, np.ones(3, F32), np.full(3, 300), 1, 0, 255),
     "zero_point must lie"),
    (lambda: T.fake_quantize_per_channel_affine_backward(X2, X2, np.ones(3, F32), np.full(3, np.nan), 1, 0, 255),
     "zero_point contains NaN"),
    (lambda: T.fake_quantize_per_channel_affine_backward(X2, X2, np.ones(3, F32), np.zeros(3, np.int32), -1, 0, 255),
     "axis must be"),
    (lambda: T.fake_quantize_per_channel_affine_backward(ONE[0], ONE[0], ONE, ONE, 0, 0, 255), "at least one dimension"),
    (lambda: T.fake_quantize_learnable_per_tensor_affine_backward(X2, X2, ONE, ONE, 1, 255), "quant_min <= 0"),
    (lambda: T.fake_quantize_learnable_per_tensor_affine_backward(X2, X2, ONE, ONE, 0, 255, np.inf), "grad_factor"),
    (lambda: T.fake_quantize_learnable_per_tensor_affine_backward(X2, X2, np.ones(2, F32), ONE, 0, 255), "scale has shape"),
    (lambda: T.fake_quantize_learnable_per_tensor_affine_backward(X2, X2, ONE, [np.inf], 0, 255), "zero_point must be finite"),
    (lambda: T.fake_quantize_learnable_per_tensor_affine(X2, -ONE, ONE, 0, 255), "scale must be finite and > 0"),
    (lambda: T.fake_quantize_learnable_per_tensor_affine(X2, ONE, "1", 0, 255), "zero_point"),
    (lambda: T.fake_quantize_learnable_per_channel_affine(X2, np.ones(3, F32), np.ones(2, F32), 1, 0, 255),
     "zero_point has shape"),
    (lambda: T.fake_quantize_learnable_per_channel_affine_backward(X2, X2, np.ones(3, F32), np.ones(3, F32), 2, 0, 255),
     "axis must be"),
    (lambda: T.fake_quantize_learnable_per_channel_affine_backward(X2, X2, np.ones(3, F32), np.ones(3, F32), 1, 0, 255,
                                                                   "g"), "grad_factor"),
    (lambda: ste.ste_grad(X2, X2, 0.1, 0, "int8", window="clipped"), "window: unknown"),
    (lambda: ste.ste_grad(X2, X2, 0.1, 0, "int8", rounding="stochastic"), "rounding: unknown"),
    (lambda: ste.ste_grad(X2[0], X2, 0.1), "dy has shape"),
    (lambda: ste.ste_grad(X2, X2, 0.1, 200, "int8"), "zero_point must lie"),
    (lambda: ste.ste_grad(X2, X2, np.ones(3), 0, "int8", axis=0), "scale has shape"),
    (lambda: lsq.lsq_grad(X2, X2, -1.0), "scale must be > 0"),
    (lambda: lsq.lsq_grad(X2, X2, 1.0, offset=np.inf), "offset must be finite"),
    (lambda: lsq.lsq_grad(X2, X2, np.ones(2), offset=np.ones(3), axis=0), "offset has shape"),
    (lambda: lsq.lsq_grad(X2, X2, 1.0, grad_scale=np.nan), "grad_scale"),
    (lambda: lsq.lsq_grad_scale(0, 7), "n must be"),
    (lambda: lsq.lsq_init_scale(np.zeros(3), 7), "all zeros"),
    (lambda: pact.pact_grad(X2, X2, 0.0, 4), "alpha must be"),
    (lambda: pact.pact_grad(X2, X2, 1.0, 0), "bits must be"),
    (lambda: pact.pact_grad(X2, X2, 1.0, 4, alpha_grad="full"), "alpha_grad: unknown"),
    (lambda: pact.pact_fake_quantize(X2 * np.nan, 1.0, 4), "x contains NaN"),
]


@pytest.mark.parametrize("call, match", BAD, ids=[m for _, m in BAD])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_inputs_not_mutated():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((3, 4)) * 3).astype(F32)
    dy = rng.standard_normal((3, 4)).astype(F32)
    s3, z3, zf3 = np.array([0.1, 0.2, 0.3], F32), np.array([1, 2, 3], np.int32), np.array([1.5, 2.5, -0.5], F32)
    args = [x, dy, s3, z3, zf3]
    keep = [a.copy() for a in args]
    T.fake_quantize_per_tensor_affine_backward(dy, x, 0.1, 3, 0, 15)
    T.fake_quantize_per_channel_affine_backward(dy, x, s3, z3, 0, 0, 15)
    T.fake_quantize_per_channel_affine_backward(dy, x, s3, zf3, 0, 0, 15)
    T.fake_quantize_per_channel_affine(x, s3, zf3, 0, 0, 15)
    T.fake_quantize_learnable_per_tensor_affine(x, s3[:1], zf3[:1], 0, 15)
    T.fake_quantize_learnable_per_tensor_affine_backward(dy, x, s3[:1], zf3[:1], 0, 15)
    T.fake_quantize_learnable_per_channel_affine(x, s3, zf3, 0, 0, 15)
    T.fake_quantize_learnable_per_channel_affine_backward(dy, x, s3, zf3, 0, 0, 15)
    QR.fake_quantize_learnable_per_channel_affine_backward_ref(dy, x, s3, zf3, 0, 0, 15)
    ste.ste_grad(dy, x, s3, z3, "uint4", axis=0)
    lsq.lsq_grad(dy, x, s3, "int4", offset=zf3, axis=0)
    pact.pact_grad(dy, x, 1.0, 4, alpha_grad="lsq")
    for a, k in zip(args, keep):
        assert np.array_equal(a, k) and a.dtype == k.dtype


def test_empty_input_gives_zero_gradients():
    e = np.zeros((0, 3), F32)
    dx, ds, dz = T.fake_quantize_learnable_per_channel_affine_backward(e, e, np.ones(3, F32), np.ones(3, F32), 1, 0, 255)
    assert dx.shape == (0, 3) and ds.tolist() == [0, 0, 0] and dz.tolist() == [0, 0, 0]
    dx, ds, dz = T.fake_quantize_learnable_per_tensor_affine_backward(e, e, ONE, ONE, 0, 255)
    assert ds.tolist() == [0] and dz.tolist() == [0]
    dx, ds, db = lsq.lsq_grad(e, e, np.ones(3), "int4", axis=1)
    assert ds.tolist() == [0, 0, 0] and db.tolist() == [0, 0, 0]
