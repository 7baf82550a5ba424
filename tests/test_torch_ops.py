"""refquant.torch_ops: goldens (hand-computed, one transcribed from FBGEMM's comment, and PyTorch's own
outputs recorded in tests/data/torch_quantize_goldens.npz), a slow exact-arithmetic twin, bad input, and —
when PyTorch happens to be installed — differential tests against it. PyTorch is not a dependency: without it
only the tests marked ``requires_torch`` skip."""
import os
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, strategies as st
from hypothesis.extra import numpy as hnp

from refquant import torch_ops as T
from refquant.core.packing import pack
from refquant.core.uniform import quantize

try:  # the oracle; a module-level importorskip would skip this whole file, goldens included
    import torch
except ImportError:
    torch = None
requires_torch = pytest.mark.skipif(torch is None, reason="PyTorch (an optional oracle) is not installed")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torch's quantized-tensor deprecation notices

F32 = np.float32


def test_fbgemm_golden_reciprocal_rounds_up():
    # FBGEMM QuantUtils.h: scale 0.00214854861, x 0.273939937: x * (1/s) = 127.5 -> 128 (x / s -> 127)
    y = T.fake_quantize_per_tensor_affine(np.array([0.273939937], F32), 0.00214854861, 0, 0, 255)
    assert y[0] == F32(128) * F32(0.00214854861)


def test_fake_quantize_per_tensor_golden():
    # scale 0.5, zero point 3, range [0, 7]: x / 0.5 = [-2, 0.5 -> 0, 5, 20]; + 3 -> [1, 3, 8 -> 7, 23 -> 7]
    y = T.fake_quantize_per_tensor_affine(np.array([-1.0, 0.25, 2.5, 10.0], F32), 0.5, 3, 0, 7)
    assert y.tolist() == [-1.0, 0.0, 2.0, 2.0]  # (q - 3) * 0.5


def test_minmax_qparams_golden():
    x = np.array([-1.0, 3.0], F32)
    # quint8 affine: scale = 4/255, zero point = 0 - round(-1 / (4/255)) = round(63.75) = 64
    s, z = T.minmax_qparams(x)
    assert s == F32(4) / F32(255) and z == 64
    # qint8 symmetric: scale = 3 / 127.5, zero point 0
    s, z = T.minmax_qparams(x, dtype="qint8", qscheme="per_tensor_symmetric")
    assert s == F32(3) / F32(127.5) and z == 0
    # quint8 symmetric: zero point 128
    s, z = T.minmax_qparams(x, qscheme="per_tensor_symmetric")
    assert z == 128
    # reduce_range quint8 affine: [0, 127]: scale 4/127, zero point round(31.75) = 32
    s, z = T.minmax_qparams(x, reduce_range=True)
    assert s == F32(4) / F32(127) and z == 32
    # per channel along axis 1
    s, z = T.minmax_qparams(np.array([[-1.0, 0.0], [1.0, 2.0]], F32), dtype="qint8",
                            qscheme="per_channel_symmetric", axis=1)
    assert s.tolist() == [F32(1) / F32(127.5), F32(2) / F32(127.5)] and z.tolist() == [0, 0]


def test_all_zero_observer_uses_eps_scale():
    s, z = T.minmax_qparams(np.zeros(4, F32))
    assert s == np.finfo(F32).eps and z == 0


@pytest.mark.parametrize("call, match", [
    (lambda: T.fake_quantize_per_tensor_affine(np.ones(2, F32), 0.1, 300, 0, 255), "zero_point must be"),
    (lambda: T.fake_quantize_per_tensor_affine(np.ones(2, F32), 0.1, 0, 10, 5), "quant_min .* > quant_max"),
    (lambda: T.fake_quantize_per_tensor_affine(np.ones(2, F32), 0.0, 0, 0, 255), "scale must be > 0"),
    (lambda: T.fake_quantize_per_channel_affine(np.ones((2, 3), F32), np.ones(2, F32), np.zeros(2, np.int32), 1, 0, 255), "scale has shape"),
    (lambda: T.minmax_qparams(np.ones(2), dtype="qint4"), "dtype: expected"),
    (lambda: T.minmax_qparams(np.ones(2), qscheme="per_block"), "qscheme: unknown"),
    (lambda: T.minmax_qparams(np.ones(2), qscheme="per_tensor_symmetric", reduce_range=True), "reduce_range"),
    (lambda: T.minmax_qparams(np.zeros(0)), "x is empty"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- differential, only where torch is installed
@requires_torch
@given(hnp.arrays(F32, (4, 9), elements=st.floats(-50, 50, width=32)), st.sampled_from(["quint8", "qint8"]),
       st.sampled_from(T.QSCHEMES), st.booleans())
def test_minmax_qparams_match_torch_observers(x, dtype, qscheme, reduce_range):
    if reduce_range and dtype == "quint8" and qscheme.endswith("symmetric"):
        return
    tq = getattr(torch, qscheme)
    tdt = getattr(torch, dtype)
    if qscheme.startswith("per_channel"):
        ob = torch.ao.quantization.PerChannelMinMaxObserver(ch_axis=1, dtype=tdt, qscheme=tq, reduce_range=reduce_range)
    else:
        ob = torch.ao.quantization.MinMaxObserver(dtype=tdt, qscheme=tq, reduce_range=reduce_range)
    ob(torch.from_numpy(x))
    ts, tz = ob.calculate_qparams()
    s, z = T.minmax_qparams(x, dtype=dtype, qscheme=qscheme, axis=1, reduce_range=reduce_range)
    assert np.array_equal(ts.numpy().reshape(s.shape), s) and np.array_equal(tz.numpy().reshape(z.shape), z)


@requires_torch
@given(hnp.arrays(F32, (3, 7), elements=st.floats(-100, 100, width=32)), st.floats(2.0**-10, 1, width=32),
       st.integers(0, 255), st.data())
def test_fake_quantize_matches_torch(x, s, z, data):
    got = T.fake_quantize_per_tensor_affine(x, float(s), z, 0, 255)
    ref = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), float(s), z, 0, 255).numpy()
    assert np.array_equal(got, ref)
    sc = data.draw(hnp.arrays(F32, (7,), elements=st.floats(2.0**-10, 1, width=32)))
    zc = data.draw(hnp.arrays(np.int32, (7,), elements=st.integers(-128, 127)))
    got = T.fake_quantize_per_channel_affine(x, sc, zc, 1, -128, 127)
    ref = torch.fake_quantize_per_channel_affine(torch.from_numpy(x), torch.from_numpy(sc), torch.from_numpy(zc),
                                                 1, -128, 127).numpy()
    assert np.array_equal(got, ref)


# ================================================================ quantize_per_tensor / quantize_per_channel
GOLD = np.load(os.path.join(os.path.dirname(__file__), "data", "torch_quantize_goldens.npz"))
SUB_BYTE = {"quint4x2": "uint4", "quint2x4": "uint2"}  # PyTorch's int_repr packing = core.packing.pack
INF = F32(np.inf)


def int_repr(q, dtype):
    return pack(q, SUB_BYTE[dtype]) if dtype in SUB_BYTE else q


def test_separating_case_zero_point_before_rounding():
    x = np.array([2.5, 3.5], F32)
    # quint8, scale 1, zero point 1: rne(2.5 + 1) = rne(3.5) = 4, rne(3.5 + 1) = rne(4.5) = 4
    assert T.quantize_per_tensor(x, 1.0, 1, "quint8").tolist() == [4, 4]
    assert T.quantize_per_channel(x[None], [1.0], [1], 0, "quint8").tolist() == [[4, 4]]
    # zero point after rounding (core's multiply_reciprocal, the fake-quantizer): rne(2.5)+1 = 3, rne(3.5)+1 = 5
    assert quantize(x, F32(1), 1, "uint8", scale_op="multiply_reciprocal").tolist() == [3, 5]
    assert T.fake_quantize_per_tensor_affine(x, 1.0, 1, 0, 255).tolist() == [2.0, 4.0]  # (3-1)·1, (5-1)·1
    # the sub-byte kernel adds after rounding too: [3, 5], packed 3 | 5 << 4 = 83 (PyTorch's int_repr)
    q = T.quantize_per_tensor(x, 1.0, 1, "quint4x2")
    assert q.tolist() == [3, 5] and int_repr(q, "quint4x2").tolist() == [83]


def test_fused_multiply_add_separates_per_tensor_from_per_channel():
    # scale 3: inv = fl32(1/3) = (2**25 + 1) / (3 · 2**25), so x · inv = -100.5 · (1 + 2**-25) = -100.5 - 2.995e-6.
    # per-tensor (fused): -100.5 - 2.995e-6 + 128 = 27.5 - 2.995e-6, rounded once to float32 (ulp 2**-19 =
    #   1.9e-6): 27.4999962 -> 27.
    # per-channel: fl32(x · inv) = -100.5 (half an ulp at 100.5 is 3.8e-6 > 2.995e-6); -100.5 + 128 = 27.5 -> 28.
    # fake-quantize: rne(-100.5) = -100; -100 + 128 = 28 -> (28 - 128) · 3 = -300.
    x = np.array([-301.5], F32)
    assert T.quantize_per_tensor(x, 3.0, 128, "quint8").tolist() == [27]
    assert T.quantize_per_channel(x, [3.0], [128], 0, "quint8").tolist() == [28]
    assert T.fake_quantize_per_tensor_affine(x, 3.0, 128, 0, 255).tolist() == [-300.0]


def test_ties_each_dtype():
    # qint8, scale 0.5 (inv 2, exact), zero point -3: x · 2 = [0.5, 1.5, -0.5, -2.5, 127.5];
    # + (-3) = [-2.5, -1.5, -3.5, -5.5, 124.5] -> half to even [-2, -2, -4, -6, 124]
    x = np.array([0.25, 0.75, -0.25, -1.25, 63.75], F32)
    assert T.quantize_per_tensor(x, 0.5, -3, "qint8").tolist() == [-2, -2, -4, -6, 124]
    assert T.quantize_per_channel(x, [0.5] * 5, [-3] * 5, 0, "qint8").tolist() == [-2, -2, -4, -6, 124]
    # quint2x4, scale 1, zero point 1, after rounding: rne([0.5, 1.5, 2.5, -0.5]) = [0, 2, 2, -0]; + 1
    assert T.quantize_per_tensor(np.array([0.5, 1.5, 2.5, -0.5], F32), 1.0, 1, "quint2x4").tolist() == [1, 3, 3, 1]
    # quint4x2, zero point 15: rne([-14.5, -15.5, 0.5]) = [-14, -16, 0]; + 15 = [1, -1, 15] -> clamp [1, 0, 15]
    assert T.quantize_per_tensor(np.array([-14.5, -15.5, 0.5], F32), 1.0, 15, "quint4x2").tolist() == [1, 0, 15]


@pytest.mark.parametrize("dtype, zp, lo, hi", [("quint8", 0, 0, 255), ("qint8", 0, -128, 127),
                                               ("quint4x2", 3, 0, 15), ("quint2x4", 1, 0, 3)])
def test_saturation(dtype, zp, lo, hi):
    x = np.array([1e30, -1e30, INF, -INF, 300, -300], F32)  # every value beyond the codes: clamp
    assert T.quantize_per_tensor(x, 1.0, zp, dtype).tolist() == [hi, lo] * 3
    if dtype in ("quint8", "qint8"):
        assert T.quantize_per_channel(x[:, None], [1.0], [zp], 1, dtype).ravel().tolist() == [hi, lo] * 3
    assert T.quantize_per_channel(x[None], [1.0], np.array([zp], F32), 0, dtype).ravel().tolist() == [hi, lo] * 3


def test_per_channel_nonzero_axis():
    # axis 1 of (2, 3): scales [1, 0.5, 2] (inv 1, 2, 0.5), zero points [1, 0, 100], quint8:
    #   channel 0: 2.5 + 1 = 3.5 -> 4; -0.5 + 1 = 0.5 -> 0
    #   channel 1: 0.75 · 2 = 1.5 -> 2; 1.25 · 2 = 2.5 -> 2
    #   channel 2: 3 · 0.5 + 100 = 101.5 -> 102; 1e9 · 0.5 + 100 -> 255 (saturates)
    x = np.array([[2.5, 0.75, 3.0], [-0.5, 1.25, 1e9]], F32)
    assert T.quantize_per_channel(x, [1.0, 0.5, 2.0], [1, 0, 100], 1, "quint8").tolist() == [[4, 2, 102], [0, 2, 255]]


def test_per_channel_float_zero_points_sub_byte():
    # quint4x2, axis 0, scales [1, 1], zero points [0.5, 2.25] (float: per_channel_affine_float_qparams):
    #   row 0: [2.5, 3.5, 1.25] + 0.5 = [3.0, 4.0, 1.75] -> [3, 4, 2]
    #   row 1: [0.25, -3, 20] + 2.25 = [2.5, -0.75, 22.25] -> [2, -1, 22] -> clamp [2, 0, 15]
    x = np.array([[2.5, 3.5, 1.25], [0.25, -3.0, 20.0]], F32)
    q = T.quantize_per_channel(x, [1.0, 1.0], np.array([0.5, 2.25], F32), 0, "quint4x2")
    assert q.tolist() == [[3, 4, 2], [2, 0, 15]]


def test_inputs_not_mutated():
    x = np.array([[2.5, -1.0], [0.5, 7.0]], F32)
    sc, zp = np.array([0.5, 2.0]), np.array([3, 4])
    copies = [a.copy() for a in (x, sc, zp)]
    T.quantize_per_tensor(x, 0.5, 3, "quint8")
    T.quantize_per_channel(x, sc, zp, 1, "qint8")
    T.quantize_per_channel(x, sc, zp.astype(F32), 0, "quint2x4")
    assert all(np.array_equal(a, b) for a, b in zip((x, sc, zp), copies))


X2 = np.ones((2, 3), F32)


@pytest.mark.parametrize("call, match", [
    (lambda: T.quantize_per_tensor(X2, 1.0, 0, "qint4"), "dtype: expected one of"),
    (lambda: T.quantize_per_tensor(X2, 1.0, 256, "quint8"), r"zero_point must be an int in \[0, 255\]"),
    (lambda: T.quantize_per_tensor(X2, 1.0, -1, "quint8"), "zero_point must be"),
    (lambda: T.quantize_per_tensor(X2, 1.0, -129, "qint8"), "zero_point must be"),
    (lambda: T.quantize_per_tensor(X2, 1.0, 16, "quint4x2"), r"zero_point must be an int in \[0, 15\]"),
    (lambda: T.quantize_per_tensor(X2, 1.0, 4, "quint2x4"), "zero_point must be"),
    (lambda: T.quantize_per_tensor(X2, 1.0, 1.0, "quint8"), "zero_point must be an int"),
    (lambda: T.quantize_per_tensor(X2, 1.0, True, "quint8"), "zero_point must be an int"),
    (lambda: T.quantize_per_tensor(X2, 0.0, 0, "quint8"), "scale must be > 0"),
    (lambda: T.quantize_per_tensor(X2, -1.0, 0, "quint8"), "scale must be > 0"),
    (lambda: T.quantize_per_tensor(X2, float("inf"), 0, "quint8"), "scale must be finite"),
    (lambda: T.quantize_per_tensor(X2, 1e-50, 0, "quint8"), "scale must be a normal float32"),  # float32 0
    (lambda: T.quantize_per_tensor(X2, 1e-40, 0, "quint8"), "scale must be a normal float32"),  # 1/s overflows
    (lambda: T.quantize_per_tensor(np.array([1.0, np.nan]), 1.0, 0, "quint8"), "x contains NaN"),
    (lambda: T.quantize_per_channel(X2, [1.0] * 3, [0] * 3, -1, "quint8"), r"axis must be an int in \[0, 2\)"),
    (lambda: T.quantize_per_channel(X2, [1.0] * 3, [0] * 3, 2, "quint8"), "axis must be"),
    (lambda: T.quantize_per_channel(np.float32(1), [1.0], [0], 0, "quint8"), "x must have at least one"),
    (lambda: T.quantize_per_channel(X2, [1.0] * 2, [0] * 3, 1, "quint8"), r"scales has shape \(2,\)"),
    (lambda: T.quantize_per_channel(X2, [1.0] * 3, [0] * 2, 1, "quint8"), r"zero_points has shape \(2,\)"),
    (lambda: T.quantize_per_channel(X2, [1.0, 0.0, 1.0], [0] * 3, 1, "quint8"), "scales must be > 0"),
    (lambda: T.quantize_per_channel(X2, [1.0] * 3, [0, 0, 256], 1, "quint8"), r"zero_points must lie in \[0, 255\]"),
    (lambda: T.quantize_per_channel(X2, [1.0] * 3, [-129, 0, 0], 1, "qint8"), "zero_points must lie in"),
    (lambda: T.quantize_per_channel(X2, [1.0] * 3, [0] * 3, 1, "quint4x2"), "dtype: PyTorch quantizes quint4x2"),
    (lambda: T.quantize_per_channel(X2, [1.0] * 3, [0.0, np.inf, 0.0], 1, "quint4x2"), "zero_points must be"),
    (lambda: T.quantize_per_channel(X2, [1.0] * 3, [0] * 3, 1, "int8"), "dtype: expected one of"),
])
def test_quantize_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- fma_float32 against exact rationals
def round_f32(v: Fraction) -> F32:
    """The float32 nearest to the rational ``v``, ties to even (Inf past the overflow boundary
    2**128 - 2**103, which is itself a tie that goes to even: Inf)."""
    if abs(v) >= 2**128 - 2**103:
        return F32(np.inf) if v > 0 else F32(-np.inf)
    c = F32(float(v))  # within one float32 ulp of the answer: check it and both neighbours
    cands = [q for q in (c, np.nextafter(c, INF), np.nextafter(c, -INF)) if np.isfinite(q)]
    return min(cands, key=lambda q: (abs(Fraction(float(q)) - v), int(np.array(q).view(np.uint32)) & 1))


def test_fma_golden_double_rounding():
    # a = 1 + 2**-23, b = 1 - 2**-23, c = 2**24 + 2: a · b = 1 - 2**-46, so a · b + c = 16777219 - 2**-46,
    # just below the float32 midpoint 16777219 between 16777218 and 16777220: the fused result is 16777218.
    # Rounding to float64 first gives 16777219 exactly, whose float32 tie goes to even 16777220.
    a, b, c = F32(1 + 2.0**-23), F32(1 - 2.0**-23), F32(2**24 + 2)
    assert T.fma_float32(a, b, c) == F32(16777218)
    assert F32(np.float64(a) * np.float64(b) + np.float64(c)) == F32(16777220)  # the trap avoided
    # at the overflow boundary: a · b = 2**103 (1 - 2**-46); max32 + a · b = (2**128 - 2**103) - 2**57, just
    # below the midpoint between max32 and 2**128: max32, not Inf (float64 rounds to the midpoint itself)
    big = np.finfo(F32).max
    assert T.fma_float32(F32(2.0**52 * (1 + 2.0**-23)), F32(2.0**51 * (1 - 2.0**-23)), big) == big
    assert T.fma_float32(INF, F32(1), F32(1)) == INF and np.isnan(T.fma_float32(INF, F32(0), F32(1)))


def midpoint_operands(c, a, side, steps):
    """(a, b) with a · b within a few float32 steps of half an ulp of ``c``: where rounding twice goes wrong."""
    m = np.float64(c) + side * np.float64(np.spacing(abs(c))) / 2
    b = F32((m - np.float64(c)) / np.float64(a)) if a else F32(0)
    for _ in range(abs(steps)):
        b = np.nextafter(b, INF if steps > 0 else -INF)
    return a, b


F32S = st.floats(width=32, allow_nan=False, allow_infinity=False)


@given(st.one_of(
    st.tuples(F32S, F32S, F32S),
    st.builds(lambda c, a, side, k: (*midpoint_operands(F32(c), F32(a), side, k), F32(c)),
              st.floats(-2.0**40, 2.0**40, width=32), st.floats(-4, 4, width=32), st.sampled_from([-1, 1]),
              st.integers(-3, 3))))
@example((F32(1.2461340427398682), F32(-0.050155118107795715), F32(1960942.0)))  # fl32(fl64) is 1 ulp off
def test_fma_float32_is_correctly_rounded(abc):
    a, b, c = (F32(v) for v in abc)
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    assert T.fma_float32(a, b, c) == round_f32(exact)


# ---------------------------------------------------------------- the slow twin: exact arithmetic, element by element
def quantize_ref(x, scales, zero_points, axis, dtype):
    """Straight from the table in refquant.torch_ops: per-tensor 8-bit fused (T1), per-channel separately
    rounded (T2), per-tensor sub-byte zero point after rounding (T3). ``axis=None``: per-tensor."""
    lo, hi = T.QDTYPES[dtype]
    xa = np.asarray(x, F32)
    out = np.empty(xa.shape, np.int64)
    for idx in np.ndindex(xa.shape):
        c = () if axis is None else idx[axis]
        s = F32(np.asarray(scales, np.float64)[c])
        inv = Fraction(float(round_f32(1 / Fraction(float(s)))))
        z = np.asarray(zero_points)[c]
        xi = xa[idx]
        if not np.isfinite(xi):
            out[idx] = hi if xi > 0 else lo
            continue
        if axis is None and dtype not in SUB_BYTE:                               # (T1)
            k = round(Fraction(float(round_f32(Fraction(float(xi)) * inv + int(z)))))
        elif axis is None:                                                        # (T3)
            k = round(Fraction(float(round_f32(Fraction(float(xi)) * inv)))) + int(z)
        else:                                                                     # (T2)
            p = round_f32(Fraction(float(xi)) * inv)
            v = round_f32(Fraction(float(p)) + Fraction(float(F32(z)))) if np.isfinite(p) else p
            k = round(Fraction(float(v))) if np.isfinite(v) else (hi if v > 0 else lo)
        out[idx] = min(max(k, lo), hi)
    return out


@st.composite
def quantize_case(draw, per_channel=False, max_n=12):
    """Inputs on and next to the ties that separate the conventions: (k + 1/2 or 1/4) · scale ± a few ulps."""
    dtype = draw(st.sampled_from(list(T.QDTYPES) if not per_channel else ["quint8", "qint8", "quint4x2", "quint2x4"]))
    lo, hi = T.QDTYPES[dtype]
    float_zp = per_channel and (dtype in SUB_BYTE or draw(st.booleans()))
    ch = draw(st.integers(1, 3)) if per_channel else 1
    scales = [F32(draw(st.floats(2.0**-12, 8, width=32))) for _ in range(ch)]
    if float_zp:
        zps = np.array([draw(st.floats(lo - 2, hi + 2, width=32)) for _ in range(ch)], F32)
    else:
        zps = np.array([draw(st.integers(lo, hi)) for _ in range(ch)], np.int64)
    n = draw(st.integers(1, max_n))
    xs = np.empty((ch, n), F32)
    for c in range(ch):
        for j in range(n):
            k = draw(st.integers(-(hi - lo) - 4, (hi - lo) + 4)) + draw(st.sampled_from([0.5, 0.25, 0.0]))
            v = F32(k * np.float64(scales[c]))
            for _ in range(abs(step := draw(st.integers(-2, 2)))):
                v = np.nextafter(v, INF if step > 0 else -INF)
            xs[c, j] = v
    if not per_channel:
        return dtype, xs[0], scales[0], int(zps[0])
    return dtype, np.ascontiguousarray(xs.T), np.array(scales, np.float64), zps  # channels along axis 1


@given(quantize_case())
@example(("quint8", np.array([2.5, 3.5], F32), F32(1), 1))     # the separating case
@example(("quint8", np.array([-301.5], F32), F32(3), 128))     # fused vs separate rounding
def test_quantize_per_tensor_equals_exact_twin(case):
    dtype, x, s, z = case
    assert np.array_equal(T.quantize_per_tensor(x, float(s), z, dtype), quantize_ref(x, s, z, None, dtype))


@given(quantize_case(per_channel=True))
def test_quantize_per_channel_equals_exact_twin(case):
    dtype, x, s, z = case
    assert np.array_equal(T.quantize_per_channel(x, s, z, 1, dtype), quantize_ref(x, s, z, 1, dtype))


# ---------------------------------------------------------------- PyTorch's recorded outputs (no torch needed)
@pytest.mark.parametrize("name", [str(n) for n in GOLD["cases"]])
def test_torch_quantize_goldens(name):
    g = {k: GOLD[f"{name}.{k}"] for k in ("x", "scale", "zero_point", "axis", "func", "dtype", "int_repr")}
    dtype, axis = str(g["dtype"]), int(g["axis"])
    if str(g["func"]) == "quantize_per_tensor":
        q = T.quantize_per_tensor(g["x"], float(g["scale"]), int(g["zero_point"]), dtype)
    else:
        q = T.quantize_per_channel(g["x"], g["scale"], g["zero_point"], axis, dtype)
    assert q.shape == g["x"].shape
    assert np.array_equal(int_repr(q, dtype), g["int_repr"])


def test_torch_goldens_separate_the_conventions():
    """The recorded codes would catch a regression to either neighbouring convention."""
    assert sum(GOLD[f"{n}.x"].size for n in GOLD["cases"]) > 10000 and str(GOLD["torch_version"]).startswith("2.13.0")
    fused_differs = after_differs = 0
    for n in GOLD["cases"]:
        x, s, z, dtype = GOLD[f"{n}.x"], GOLD[f"{n}.scale"], GOLD[f"{n}.zero_point"], str(GOLD[f"{n}.dtype"])
        if str(GOLD[f"{n}.func"]) != "quantize_per_tensor" or dtype in SUB_BYTE:
            continue
        r = (T.QDTYPES[dtype][0], T.QDTYPES[dtype][1])
        sep = quantize(x, F32(s), int(z), r, scale_op="multiply_reciprocal", zero_point_order="before_rounding")
        aft = quantize(x, F32(s), int(z), r, scale_op="multiply_reciprocal")
        fused_differs += int(np.sum(sep != GOLD[f"{n}.int_repr"]))
        after_differs += int(np.sum(aft != GOLD[f"{n}.int_repr"]))
    assert fused_differs > 0 and after_differs > 100


def test_torch_fake_quantize_differs_from_quantize_golden():
    x, (s, z, lo, hi) = GOLD["fake.x"], GOLD["fake.args"]
    fake = T.fake_quantize_per_tensor_affine(x, float(s), int(z), int(lo), int(hi))
    q = T.quantize_per_tensor(x, float(s), int(z), "quint8")
    assert np.array_equal(fake, GOLD["fake.out"]) and np.array_equal(q, GOLD["fake.quantize_per_tensor"])
    assert np.any(np.rint(fake / F32(s)) + z != q)  # the two PyTorch conventions disagree on these ties


# ---------------------------------------------------------------- differential against the installed PyTorch
def torch_int_repr(fn, x, *args):
    return fn(torch.from_numpy(np.ascontiguousarray(x)), *args).int_repr().numpy()


@requires_torch
@given(quantize_case(max_n=24))  # >= 8 elements exercise FBGEMM's vector loop, the rest its masked tail
def test_quantize_per_tensor_matches_torch(case):
    dtype, x, s, z = case
    ref = torch_int_repr(torch.quantize_per_tensor, x, float(s), z, getattr(torch, dtype))
    assert np.array_equal(int_repr(T.quantize_per_tensor(x, float(s), z, dtype), dtype), ref)


@requires_torch
@given(quantize_case(per_channel=True, max_n=20))
def test_quantize_per_channel_matches_torch(case):
    dtype, x, s, z = case
    ref = torch_int_repr(torch.quantize_per_channel, x, torch.from_numpy(s), torch.from_numpy(z), 1,
                         getattr(torch, dtype))
    got = int_repr(T.quantize_per_channel(x, s, z, 1, dtype), dtype)
    assert np.array_equal(got.reshape(-1), ref.reshape(-1))


@requires_torch
def test_documented_divergences_from_torch():
    """Where refquant saturates on purpose and PyTorch's lrintf overflows (the module docstring lists these)."""
    x = np.array([1e30, np.inf, 3e9, -3e9], F32)
    t4 = torch_int_repr(torch.quantize_per_tensor, x, 1.0, 0, torch.quint4x2)
    assert t4.tolist() == [0 | 0 << 4, 15 | 0 << 4]                 # PyTorch: 1e30, Inf -> 0; 3e9 -> 15, -3e9 -> 0
    assert T.quantize_per_tensor(x, 1.0, 0, "quint4x2").tolist() == [15, 15, 15, 0]
    tf = torch_int_repr(torch.quantize_per_channel, x[None], torch.ones(1), torch.zeros(1), 0, torch.quint8)
    assert tf.tolist() == [[0, 0, 0, 255]]                          # low 32 bits of lrintf: 3e9 wraps negative
    assert T.quantize_per_channel(x[None], [1.0], np.zeros(1, F32), 0, "quint8").tolist() == [[255, 255, 255, 0]]


# ================================================================ fake_quantize_per_channel_affine, float zero points
def test_fake_quantize_per_channel_float_zero_point_golden():
    # scale 1, zero point 0.5, [0, 3]: rne(x + 0.5) = rne([1.5, 2.5, -2.5]) = [2, 2, -2] -> clamp [2, 2, 0]; (q - 0.5)·1
    y = T.fake_quantize_per_channel_affine(np.array([[1.0, 2.0, -3.0]], F32), [1.0], np.array([0.5], F32), 0, 0, 3)
    assert y.tolist() == [[1.5, 1.5, -0.5]]


def test_fake_quantize_per_channel_float_zero_point_is_fused():
    # scale 0.7 (float32 0.699999988), inv = fl(1/0.7) = 1.42857146, x = 1.04999995: x·inv = 1.5 - 3.2e-8, which
    # rounds to 1.5 in float32. Separately rounded: 1.5 + (-2) = -0.5 -> rne 0; fused (one rounding):
    # -0.5 - 3.2e-8 -> -0.50000006 -> -1. y = (q - zp)·s: fused (-1 + 2)·0.7 = 0.7 (PyTorch), separate 1.4
    x = np.array([[1.0499999523162842]], F32)
    y = T.fake_quantize_per_channel_affine(x, np.array([0.7], F32), np.array([-2.0], F32), 0, -8, 7)
    assert y.tolist() == [[float(F32(0.7))]]


def test_fake_quantize_per_channel_float_zero_point_bad_input():
    x = np.ones((2, 3), F32)
    with pytest.raises(ValueError, match="zero_point must be finite"):
        T.fake_quantize_per_channel_affine(x, np.ones(3, F32), np.array([0.5, np.inf, 0.0]), 1, 0, 255)
    with pytest.raises(ValueError, match="zero_point"):
        T.fake_quantize_per_channel_affine(x, np.ones(3, F32), np.zeros(2, F32), 1, 0, 255)
    with pytest.raises(ValueError, match="x contains NaN"):
        T.fake_quantize_per_channel_affine(x * np.nan, np.ones(3, F32), np.zeros(3, F32), 1, 0, 255)


def test_qat_mirrors_are_public_in_torch_ops():
    from refquant.mirrors import fp32, torch_lsq, torch_qat
    for name in ("fake_quantize_per_tensor_affine_backward", "fake_quantize_per_channel_affine_backward"):
        assert getattr(T, name) is getattr(torch_qat, name)
    for name in ("fake_quantize_learnable_per_tensor_affine", "fake_quantize_learnable_per_tensor_affine_backward",
                 "fake_quantize_learnable_per_channel_affine", "fake_quantize_learnable_per_channel_affine_backward"):
        assert getattr(T, name) is getattr(torch_lsq, name)
    assert T.fma_float32 is fp32.fma_float32


@requires_torch
@given(hnp.arrays(F32, (4, 6), elements=st.floats(-30, 30, width=32)), st.data())
def test_fake_quantize_per_channel_float_zero_points_match_torch(x, data):
    s = data.draw(hnp.arrays(F32, (6,), elements=st.floats(2.0**-6, 2, width=32)))
    z = data.draw(hnp.arrays(F32, (6,), elements=st.floats(-10, 20, width=32)))
    got = T.fake_quantize_per_channel_affine(x, s, z, 1, 0, 15)
    ref = torch.fake_quantize_per_channel_affine(torch.from_numpy(x), torch.from_numpy(s), torch.from_numpy(z),
                                                 1, 0, 15).numpy()
    assert np.array_equal(got, ref) and np.array_equal(np.signbit(got), np.signbit(ref))
