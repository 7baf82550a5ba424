"""refquant.ptq.ggml_grids: GPTQ on the grid of a ggml type — byte for byte the type's own quantizer when
there is no error feedback, a valid block whose dequantization is GPTQ's ŵ when there is, hand-worked column
rules, and the code fields' pack / unpack round trip."""
import numpy as np
import pytest

from refquant.ptq import ggml_grids as gg
from refquant.ptq.gptq import gptq_quantize
from refquant.ptq.gptq_ref import gptq_quantize_ref

TYPES = gg.GRID_TYPES


def _weights(qt, rows=6, blocks=2, seed=0):
    rng = np.random.default_rng(seed)
    K = gg.BLOCK[qt] * blocks
    w = (rng.standard_normal((rows, K)) * rng.uniform(0.01, 2.0, (rows, 1))).astype(np.float32)
    w[0, :gg.BLOCK[qt]] = 0.0  # an all-zero block
    w[1, :40] = np.abs(w[1, :40])  # a non-negative stretch
    w[2] = np.round(w[2] * 4) / 4  # values on a coarse grid: exact ties for the rounding rules
    return w


def _hessian(K, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2 * K, K)) @ (np.eye(K) + 0.3 * rng.standard_normal((K, K)) / np.sqrt(K))
    return x.T @ x / len(x)


@pytest.mark.parametrize("qt", TYPES)
def test_identity_hessian_is_the_types_own_quantizer(qt):
    # H = I: Hinv is diagonal, so no column feeds back into another; each block's header comes from the
    # original weights and each column is rounded the type's way -> exactly ggml's reference bytes.
    w = _weights(qt)
    w0 = w.copy()
    data, r = gg.gptq_ggml(w, np.eye(w.shape[1]), qt)
    assert np.array_equal(data, gg.quantize(w, qt))
    assert np.array_equal(gg.dequantize(data, qt), r.w_hat)
    assert np.array_equal(w, w0)  # input not modified


@pytest.mark.parametrize("qt", TYPES)
def test_with_feedback_the_blocks_hold_gptqs_choice(qt):
    w = _weights(qt, seed=3)
    H = _hessian(w.shape[1])
    data, r = gg.gptq_ggml(w, H, qt)
    assert data.dtype == np.uint8 and data.shape == (w.shape[0], w.shape[1] // gg.BLOCK[qt] * gg.BLOCK_BYTES[qt])
    assert np.array_equal(gg.dequantize(data, qt), r.w_hat)  # the stored blocks are exactly what GPTQ chose
    # and GPTQ lowers the layer objective tr(Δ H Δᵀ) below the type's own round-to-nearest
    rtn = gg.dequantize(gg.quantize(w, qt), qt)

    def err(wh):
        d = (wh - w).astype(np.float64)
        return np.einsum("ij,jk,ik->", d, H, d)
    assert err(r.w_hat) < 0.9 * err(rtn)


@pytest.mark.parametrize("qt", TYPES)
def test_lazy_batch_equals_loop_twin_at_block_size_1(qt):
    w = _weights(qt, rows=3, blocks=1, seed=5)
    H = _hessian(w.shape[1], seed=6)
    kw = dict(group_size=gg.BLOCK[qt], group_params_from="updated", block_size=1)
    a = gptq_quantize(w, H, group_quantizer=gg.gptq_group_quantizer(qt), **kw)
    b = gptq_quantize_ref(w, H, group_quantizer=gg.gptq_group_quantizer(qt), **kw)
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.w_hat, b.w_hat) and a.loss == b.loss
    assert np.array_equal(gg.gptq_blocks(a, qt), gg.gptq_blocks(b, qt))


@pytest.mark.parametrize("qt", TYPES)
def test_pack_unpack_round_trip(qt):
    rng = np.random.default_rng(7)
    blk = gg.quantize(rng.standard_normal((5, gg.BLOCK[qt])).astype(np.float32), qt)
    codes = gg.unpack_codes(blk, qt)
    assert codes.shape == (5, gg.BLOCK[qt])
    assert np.array_equal(gg.pack_codes(blk, codes, qt), blk)
    # new codes in the type's range dequantize as the header says
    lo, hi = {"q8_0": (-128, 127), "q5_0": (0, 31), "q5_1": (0, 31), "q5_K": (0, 31), "q6_K": (0, 63)}.get(qt, (0, 15))
    new = rng.integers(lo, hi + 1, codes.shape)
    back = gg.pack_codes(blk, new, qt)
    assert np.array_equal(gg.unpack_codes(back, qt), new)
    g = gg.block_grid(np.zeros((5, gg.BLOCK[qt])), qt)  # noqa: F841 (all-zero group: must not raise)


def test_q8_0_column_rule_by_hand():
    # One block, amax 127 -> d = 127/127 = 1, 1/d = 1, fp16(d) = 1.
    # 2.5 -> roundf(2.5) = 3 (half away from zero), ŵ 3;  −2.5 -> −3;  200 -> 200 clamps to 127;
    # −300 -> −128 (the int8 range: GPTQ's feedback can leave the block's range, ggml's quantizer never does).
    x = np.zeros((1, 32), np.float32)
    x[0, 0] = 127.0
    g = gg.block_grid(x, "q8_0")
    q, wh = gg.round_column(g, 5, np.array([2.5]))
    assert q.tolist() == [3] and wh.tolist() == [3.0]
    assert gg.round_column(g, 5, np.array([-2.5]))[0].tolist() == [-3]
    assert gg.round_column(g, 5, np.array([200.0]))[0].tolist() == [127]
    assert gg.round_column(g, 5, np.array([-300.0]))[0].tolist() == [-128]


def test_q4_0_column_rule_by_hand():
    # The first value of largest |x| is −8 -> d = −8/−8 = 1, 1/d = 1.
    # q = trunc(w·1 + 8.5): 2.5 -> trunc(11.0) = 11, ŵ = (11 − 8)·1 = 3;  2.4 -> trunc(10.9) = 10, ŵ 2;
    # 7.6 -> trunc(16.1) = 16 -> clamp 15, ŵ 7;  −20 -> trunc(−11.5) = −11 -> clamp 0, ŵ −8.
    x = np.zeros((1, 32), np.float32)
    x[0, 3], x[0, 4] = -8.0, 8.0
    g = gg.block_grid(x, "q4_0")
    q, wh = gg.round_column(g, 0, np.array([2.5, 2.4, 7.6, -20.0]))
    assert q.tolist() == [11, 10, 15, 0] and wh.tolist() == [3.0, 2.0, 7.0, -8.0]


def test_q4_K_column_rule_uses_stored_sub_block_scales():
    # Every sub-block s of 32 holds the values 0, 1, …, 15 twice, times (s + 1): make_qkx2_quants finds
    # scale s + 1 and minimum 0, the 6-bit scales are nearest_int(63/8 · (s+1)) against d = fp16(8/63),
    # so the stored step of sub-block s is d·sc_s, not s + 1 exactly. A column of sub-block 2 is rounded
    # with that stored step: q = nearest_int(w / (d·sc_2)).
    x = np.tile(np.arange(16, dtype=np.float32), 16).reshape(8, 32) * np.arange(1, 9, dtype=np.float32)[:, None]
    g = gg.block_grid(x.reshape(1, 256), "q4_K")
    d, dmin = np.float32(np.float16(8 / 63)), 0.0
    sc2 = round(63 / 8 * 3)  # 23.625 -> 24
    step = np.float32(d * np.float32(sc2))
    assert g.mul[0, 2] == step and dmin == 0.0
    w = np.array([7.2], np.float64)
    q, wh = gg.round_column(g, 2 * 32 + 5, w)
    assert q.tolist() == [int(np.rint(np.float32(7.2) / step))] and wh.tolist() == [float(np.float32(step * q[0]))]


def test_errors():
    w = np.zeros((2, 64))
    with pytest.raises(ValueError, match="qtype"):
        gg.gptq_ggml(w, np.eye(64), "q3_K")
    with pytest.raises(ValueError, match="group_size"):
        gptq_quantize(np.zeros((2, 48)), np.eye(48), group_size=32, group_quantizer=gg.gptq_group_quantizer("q4_0"))
    with pytest.raises(ValueError, match="act_order"):
        gptq_quantize(w, np.eye(64), group_size=32, act_order=True, group_quantizer=gg.gptq_group_quantizer("q4_0"))
    with pytest.raises(TypeError, match="group_quantizer"):
        gptq_quantize(w, np.eye(64), group_size=32, group_quantizer="q4_0")
    r = gptq_quantize(w, np.eye(64), group_size=32)
    with pytest.raises(ValueError, match="r:"):
        gg.gptq_blocks(r, "q4_0")
