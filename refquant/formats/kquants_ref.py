"""Loop twins of :mod:`refquant.formats.kquants` for Q4_K and Q6_K: one super-block at a time, one value at a
time, statement by statement as ``ggml-quants.c`` writes them, in NumPy float32 scalars.

Slow (a Q4_K block takes ~0.1 s) and obviously sequential: the tests require the vectorised
:func:`refquant.formats.kquants.quantize` to give the same bytes (tolerance 0).

References
----------
llama.cpp ``ggml/src/ggml-quants.c`` (ggml-org/llama.cpp @ 01243c587fec): ``nearest_int``, ``make_qx_quants``,
``make_qkx2_quants``, ``make_qkx3_quants``, ``make_qp_quants``, ``quantize_row_q4_K_ref``,
``quantize_row_q4_K_impl``, ``quantize_row_q6_K_ref``, ``quantize_row_q6_K_impl``.
"""
from __future__ import annotations

import numpy as np

from ..core._checks import float_array

F = np.float32
EPS = F(1e-15)


def nearest_int(v: float) -> int:
    """``(bits(v + 12582912.f) & 0x7fffff) - 0x400000``: round half to even for |v| < 2^22."""
    with np.errstate(over="ignore", invalid="ignore"):
        t = np.array([F(v) + F(12582912.0)], F)
    return int(t.view(np.int32)[0] & 0x7FFFFF) - 0x400000


def _fp16(v) -> bytes:
    with np.errstate(over="ignore"):
        return np.array([v], F).astype("<f2").tobytes()


def _fp16_value(b: bytes) -> F:
    return F(np.frombuffer(b, "<f2")[0])


def make_qkx_quants(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int, use_mad: bool,
                    variant: int = 2) -> tuple[np.float32, np.ndarray, np.float32]:
    """``make_qkx2_quants`` (variant 2) / ``make_qkx3_quants`` (variant 3) for one group: (scale, L, the_min)."""
    n = len(x)
    mn, mx = x[0], x[0]
    sum_w = w[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < mn:
            mn = x[i]
        if x[i] > mx:
            mx = x[i]
        sum_w = sum_w + w[i]
        sum_x = sum_x + w[i] * x[i]
    if mn > 0:
        mn = F(0)
    if (mx == mn) if variant == 2 else (mx <= mn):
        return F(0), [0] * n, -mn
    iscale = F(nmax) / (mx - mn)
    scale = F(1) / iscale
    L = [0] * n
    best = F(0)
    for i in range(n):
        L[i] = max(0, min(nmax, nearest_int(iscale * (x[i] - mn))))
        diff = scale * F(L[i]) + mn - x[i]
        best = best + w[i] * (abs(diff) if use_mad else diff * diff)
    for k in range(nstep + 1):
        iscale = (F(rmin) + F(rdelta) * F(k) + F(nmax)) / (mx - mn)
        sum_l = sum_l2 = sum_xl = F(0)
        laux = [0] * n
        for i in range(n):
            v = iscale * (x[i] - mn)
            if variant == 2:
                laux[i] = max(0, min(nmax, nearest_int(v)))
            else:
                laux[i] = nearest_int(v if v < F(nmax) else F(nmax)) if v > 0 else 0
            lf = F(laux[i])
            sum_l = sum_l + w[i] * lf
            sum_l2 = sum_l2 + w[i] * lf * lf
            sum_xl = sum_xl + w[i] * lf * x[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > 0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > 0:
                this_min = F(0)
                this_scale = sum_xl / sum_l2
            cur = F(0)
            for i in range(n):
                diff = this_scale * F(laux[i]) + this_min - x[i]
                cur = cur + w[i] * (abs(diff) if use_mad else diff * diff)
            if cur < best:
                L, best, scale, mn = list(laux), cur, this_scale, this_min
    return scale, L, -mn


def make_qx_quants(x: np.ndarray, nmax: int, qw: np.ndarray | None = None) -> tuple[np.float32, np.ndarray]:
    """``make_qx_quants(n, nmax, x, L, rmse_type=1, qw)`` for one group: (scale, L)."""
    n = len(x)
    amax = mx = F(0)
    for v in x:
        if abs(v) > amax:
            amax, mx = abs(v), v
    if amax < EPS:
        return F(0), [0] * n
    w = [qw[i] if qw is not None else x[i] * x[i] for i in range(n)]

    def fit(iscale):
        ls, sumlx, suml2 = [], F(0), F(0)
        for i in range(n):
            l = max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
            ls.append(l + nmax)
            sumlx = sumlx + w[i] * x[i] * F(l)
            suml2 = suml2 + w[i] * F(l) * F(l)
        return ls, sumlx, suml2

    L, sumlx, suml2 = fit(F(-nmax) / mx)
    scale = sumlx / suml2 if suml2 else F(0)
    best = scale * sumlx
    for k in range(-9, 10):
        if k == 0:
            continue
        ls, sumlx, suml2 = fit(-(F(nmax) + F(0.1) * F(k)) / mx)
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            L, scale = ls, sumlx / suml2
            best = scale * sumlx
    return scale, L


def make_qp_quants(x: np.ndarray, nmax: int, qw: np.ndarray) -> tuple[np.float32, np.ndarray]:
    """``make_qp_quants`` for one super-block's scales or minimums: (scale, L as uint8 values)."""
    n = len(x)
    mx = F(0)
    for v in x:
        mx = mx if mx > v else v
    if mx < EPS:
        return F(0), [0] * n
    iscale = F(nmax) / mx
    L = [nearest_int(iscale * v) & 0xFF for v in x]
    scale = F(1) / iscale
    best = F(0)
    for i in range(n):
        diff = x[i] - scale * F(L[i])
        best = best + qw[i] * diff * diff
    for k in range(-4, 5):
        if k == 0:
            continue
        iscale_k = (F(0.1) * F(k) + F(nmax)) / mx
        scale_k = F(1) / iscale_k
        mse = F(0)
        for i in range(n):
            diff = x[i] - scale_k * F(min(nmax, nearest_int(iscale_k * x[i])))
            mse = mse + qw[i] * diff * diff
        if mse < best:
            best, iscale = mse, iscale_k
    sumlx = suml2 = F(0)
    for i in range(n):
        l = min(nmax, nearest_int(iscale * x[i]))
        L[i] = l & 0xFF
        sumlx = sumlx + qw[i] * x[i] * F(l)
        suml2 = suml2 + qw[i] * F(l) * F(l)
    for _ in range(5):
        changed = 0
        for i in range(n):
            slx = sumlx - qw[i] * x[i] * F(L[i])
            sl2 = suml2 - qw[i] * F(L[i]) * F(L[i])
            if slx > 0 and sl2 > 0:
                new = min(nmax, nearest_int(x[i] * sl2 / slx))
                if new != L[i]:
                    slx = slx + qw[i] * x[i] * F(new)
                    sl2 = sl2 + qw[i] * F(new) * F(new)
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i], sumlx, suml2 = new & 0xFF, slx, sl2
                        changed += 1
        if not changed:
            break
    return (sumlx / suml2 if suml2 > 0 else F(0)), L


def _block(x, n):
    xs = [F(v) for v in float_array(x, "x").astype(F).reshape(-1)]
    if len(xs) != n:
        raise ValueError(f"x: one super-block is {n} values, got {len(xs)}")
    return xs


def quantize_q4_K_block_ref(x: np.ndarray, imatrix: np.ndarray | None = None) -> bytes:
    """One Q4_K super-block (256 values): ``quantize_row_q4_K_ref``, or ``quantize_row_q4_K_impl`` with an imatrix."""
    with np.errstate(all="ignore"):
        return _q4_K(_block(x, 256), imatrix)


def quantize_q6_K_block_ref(x: np.ndarray, imatrix: np.ndarray | None = None) -> bytes:
    """One Q6_K super-block: ``quantize_row_q6_K_ref``, or ``quantize_row_q6_K_impl`` with an imatrix (used raw)."""
    with np.errstate(all="ignore"):
        return _q6_K(_block(x, 256), imatrix)


def _q4_K(x, imatrix):
    scales, mins, L = [F(0)] * 8, [F(0)] * 8, [0] * 256
    if imatrix is None:
        max_scale = max_min = F(0)
        for j in range(8):
            xg = x[32 * j:32 * j + 32]
            sum_x2 = F(0)
            for v in xg:
                sum_x2 = sum_x2 + v * v
            av_x = np.sqrt(sum_x2 / F(32))
            w = [av_x + abs(v) for v in xg]
            scales[j], L[32 * j:32 * j + 32], mins[j] = make_qkx_quants(xg, w, 15, -1.0, 0.1, 20, False)
            max_scale = scales[j] if scales[j] > max_scale else max_scale
            max_min = mins[j] if mins[j] > max_min else max_min
        inv_scale = F(63) / max_scale if max_scale > 0 else F(0)
        inv_min = F(63) / max_min if max_min > 0 else F(0)
        ls = [min(63, nearest_int(inv_scale * scales[j]) & 0xFF) for j in range(8)]
        lm = [min(63, nearest_int(inv_min * mins[j]) & 0xFF) for j in range(8)]
        d, dmin = _fp16(max_scale / F(63)), _fp16(max_min / F(63))
    else:
        qw = [F(v) for v in float_array(imatrix, "imatrix").astype(F).reshape(-1)]
        sum_x2 = F(0)
        for v in x:
            sum_x2 = sum_x2 + v * v
        sigma2 = F(2) * sum_x2 / F(256)
        sw = [F(0)] * 8
        for j in range(8):
            xg = x[32 * j:32 * j + 32]
            w = [qw[32 * j + i] * np.sqrt(sigma2 + xg[i] * xg[i]) for i in range(32)]
            for v in w:
                sw[j] = sw[j] + v
            scales[j], L[32 * j:32 * j + 32], mins[j] = make_qkx_quants(xg, w, 15, -0.9, 0.05, 36, False, 3)
        d_block, ls = make_qp_quants(scales, 63, sw)
        m_block, lm = make_qp_quants(mins, 63, sw)
        d, dmin = _fp16(d_block), _fp16(m_block)
    sc = [0] * 12
    for j in range(8):
        if j < 4:
            sc[j], sc[j + 4] = ls[j], lm[j]
        else:
            sc[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4)
            sc[j - 4] |= (ls[j] >> 4) << 6
            sc[j] |= (lm[j] >> 4) << 6
    sc = [v & 0xFF for v in sc]
    for j in range(8):  # get_scale_min_k4, then re-round every value on the stored scales
        s, m = (sc[j] & 63, sc[j + 4] & 63) if j < 4 else \
            ((sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4), (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4))
        dd = _fp16_value(d) * F(s)
        if not dd:
            continue
        dm = _fp16_value(dmin) * F(m)
        for i in range(32):
            L[32 * j + i] = max(0, min(15, nearest_int((x[32 * j + i] + dm) / dd)))
    qs = bytes(L[j + l] | (L[j + l + 32] << 4) for j in range(0, 256, 64) for l in range(32))
    return d + dmin + bytes(sc) + qs


def _q6_K(x, imatrix):
    qw = None if imatrix is None else [F(v) for v in float_array(imatrix, "imatrix").astype(F).reshape(-1)]
    scales, L = [F(0)] * 16, [0] * 256
    max_scale = max_abs = F(0)
    for ib in range(16):
        scales[ib], L[16 * ib:16 * ib + 16] = make_qx_quants(
            x[16 * ib:16 * ib + 16], 32, None if qw is None else qw[16 * ib:16 * ib + 16])
        if abs(scales[ib]) > max_abs:
            max_abs, max_scale = abs(scales[ib]), scales[ib]
    if max_abs < EPS:
        return bytes(210)
    iscale = F(-128) / max_scale
    d = _fp16(F(1) / iscale)
    sc = [int(np.array([min(127, nearest_int(iscale * s))]).astype(np.uint8).view(np.int8)[0]) for s in scales]
    for j in range(16):
        dd = _fp16_value(d) * F(sc[j])
        if not dd:
            continue
        for i in range(16):
            L[16 * j + i] = max(-32, min(31, nearest_int(x[16 * j + i] / dd))) + 32
    ql, qh = [0] * 128, [0] * 64
    for h, j in enumerate((0, 128)):
        for l in range(32):
            q1, q2, q3, q4 = L[j + l], L[j + l + 32], L[j + l + 64], L[j + l + 96]
            ql[64 * h + l] = (q1 & 0xF) | ((q3 & 0xF) << 4)
            ql[64 * h + l + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4)
            qh[32 * h + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
    return bytes(ql) + bytes(qh) + np.array(sc, np.int8).tobytes() + d
