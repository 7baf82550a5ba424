"""Record the outputs of GPTQ as the reference code computes it, as CI goldens for refquant.ptq.gptq.

A transcription, in torch, of IST-DASLab/gptq ``gptq.py: GPTQ.fasterquant`` and ``quant.py:
Quantizer`` (``perchannel=True``, ``find_params(weight=True)``, the MSE grid), with the scale / zero /
``g_idx`` bookkeeping of AutoGPTQ ``auto_gptq/quantization/gptq.py`` and the damping retry of
GPTQModel ``GPTQ.hessian_inverse``. Changes to the reference, none of which changes what it computes:
no nn.Module state (the quantizer's scale / zero are passed around), float64 instead of float32
(so that the comparison tests the algorithm, not float32 rounding), ``argsort(stable=True)`` (torch
leaves the order of equal diag H entries unspecified), integer codes kept beside the dequantized Q.

Needs torch 2.13.0 CPU (``pip install torch==2.13.0``), not a refquant dependency; refquant is not
imported. Run from the repository root: ``python tests/data/gptq_make_goldens.py``; it writes
``tests/data/gptq_goldens.npz``: the inputs once per layer (``<layer>.w``, ``<layer>.h``) and per case ``c``
``c.layer``, ``c.opts`` (JSON strings) and the outputs ``c.codes``, ``c.scale``, ``c.zero``, ``c.g_idx``,
``c.damp``.
"""
import json
import os

import numpy as np
import torch

D = torch.float64


def quantize(x, scale, zero, maxq):  # quant.py: quantize
    q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
    return scale * (q - zero), q


def find_params(x, bits, sym, mse=False, norm=2.4, grid=100, maxshrink=0.8):  # Quantizer.find_params
    maxq = torch.tensor(2 ** bits - 1, dtype=D)
    tmp = torch.zeros(x.shape[0], dtype=D)
    xmin = torch.minimum(x.min(1)[0], tmp)
    xmax = torch.maximum(x.max(1)[0], tmp)
    if sym:
        xmax = torch.maximum(torch.abs(xmin), xmax)
        tmp = xmin < 0
        if torch.any(tmp):
            xmin[tmp] = -xmax[tmp]
    tmp = (xmin == 0) & (xmax == 0)
    xmin[tmp] = -1
    xmax[tmp] = +1
    scale = (xmax - xmin) / maxq
    zero = torch.full_like(scale, (maxq + 1) / 2) if sym else torch.round(-xmin / scale)
    if mse:
        best = torch.full([x.shape[0]], float("inf"), dtype=D)
        for i in range(int(maxshrink * grid)):
            p = 1 - i / grid
            xmin1 = p * xmin
            xmax1 = p * xmax
            scale1 = (xmax1 - xmin1) / maxq
            zero1 = torch.round(-xmin1 / scale1) if not sym else zero
            q, _ = quantize(x, scale1.unsqueeze(1), zero1.unsqueeze(1), maxq)
            q -= x
            q.abs_()
            q.pow_(norm)
            err = torch.sum(q, 1)
            tmp = err < best
            if torch.any(tmp):
                best[tmp] = err[tmp]
                scale[tmp] = scale1[tmp]
                zero[tmp] = zero1[tmp]
    return scale.reshape(-1, 1), zero.reshape(-1, 1), maxq


def hessian_inverse(H, percdamp, damp_auto_increment):  # GPTQModel GPTQ.hessian_inverse
    damp = percdamp
    diag = torch.arange(H.shape[0])
    mean = torch.mean(torch.diag(H))
    while 0 < damp < 1:
        try:
            H2 = H.clone()
            H2[diag, diag] += damp * mean
            H2 = torch.linalg.cholesky(H2)
            return torch.linalg.cholesky(torch.cholesky_inverse(H2), upper=True), damp
        except torch._C._LinAlgError:
            if damp_auto_increment == 0:
                raise
            damp += damp_auto_increment
    raise ValueError(f"damp {damp}")


def fasterquant(W, H, bits=4, sym=False, blocksize=128, percdamp=0.01, groupsize=-1, actorder=False,
                static_groups=False, mse=False, damp_auto_increment=0.0):
    W = W.clone()
    H = H.clone()
    columns = W.shape[1]
    qargs = dict(bits=bits, sym=sym, mse=mse)
    scale, zero, maxq = find_params(W, **qargs)  # `if not self.quantizer.ready()`: before the dead columns
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    scales, zeros, now_idx = [], [], 1
    if static_groups:
        groups = []
        for i in range(0, columns, groupsize):
            g = find_params(W[:, i:(i + groupsize)], **qargs)
            scales.append(g[0])
            zeros.append(g[1])
            groups.append(g)
    if actorder:
        perm = torch.argsort(torch.diag(H), descending=True, stable=True)
        W = W[:, perm]
        H = H[perm][:, perm]
        invperm = torch.argsort(perm)
    Q = torch.zeros_like(W)
    Qint = torch.zeros_like(W)
    Hinv, damp = hessian_inverse(H, percdamp, damp_auto_increment)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if groupsize != -1:
                if not static_groups:
                    if (i1 + i) % groupsize == 0:
                        scale, zero, maxq = find_params(W[:, (i1 + i):(i1 + i + groupsize)], **qargs)
                    if ((i1 + i) // groupsize) - now_idx == -1:
                        scales.append(scale)
                        zeros.append(zero)
                        now_idx += 1
                else:
                    idx = i1 + i
                    if actorder:
                        idx = perm[idx]
                    scale, zero, maxq = groups[idx // groupsize]
            q, qi = quantize(w.unsqueeze(1), scale, zero, maxq)
            q, qi = q.flatten(), qi.flatten()
            Q1[:, i] = q
            Qint[:, i1 + i] = qi
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    gs = groupsize if groupsize != -1 else columns
    if static_groups and actorder:
        g_idx = torch.tensor([int(perm[i]) // gs for i in range(columns)])
    else:
        g_idx = torch.tensor([i // gs for i in range(columns)])
    if actorder:
        Q = Q[:, invperm]
        Qint = Qint[:, invperm]
        g_idx = g_idx[invperm]
    if not scales:
        scales, zeros = [scale], [zero]
    return Qint, Q, torch.cat(scales, 1), torch.cat(zeros, 1), g_idx, damp


def cases():
    rng = np.random.default_rng(20261126)

    def layer(rows, k, n=256, dead=()):
        w = rng.standard_normal((rows, k)) * rng.uniform(0.5, 2.0, (rows, 1))
        x = rng.standard_normal((n, k)) @ (np.eye(k) + 0.4 * rng.standard_normal((k, k)))
        x *= rng.uniform(0.2, 3.0, k)  # unequal channel scales: diag H spread out
        x[:, list(dead)] = 0
        return w, 2.0 / n * x.T @ x

    w, h = layer(12, 96)
    yield "asym_g32_b128", "a", w, h, dict(groupsize=32)  # every group starts inside the one block
    w, h = layer(12, 128)
    yield "asym_g32_b64", "b", w, h, dict(groupsize=32, blocksize=64)
    yield "asym_g48_b64", "b", w, h, dict(groupsize=48, blocksize=64)  # groups straddle blocks
    yield "asym_g64_b32", "b", w, h, dict(groupsize=64, blocksize=32)
    w2 = w.copy()
    w2[0] = np.abs(w2[0])  # an all-positive row: AutoGPTQ #293
    w2[1, :32] = np.abs(w2[1, :32])  # an all-positive group
    w2[2] = -np.abs(w2[2])
    w2[3, 32:64] = 0.0  # an all-zero group
    yield "sym_g32_b64_positive_rows", "b2", w2, h, dict(groupsize=32, blocksize=64, sym=True)
    yield "sym_rows_positive_rows", "b2", w2, h, dict(sym=True)
    yield "act_g32_b64", "b", w, h, dict(groupsize=32, blocksize=64, actorder=True)
    yield "act_static_g32_b64", "b", w, h, dict(groupsize=32, blocksize=64, actorder=True, static_groups=True)
    yield "static_g32_b64", "b", w, h, dict(groupsize=32, blocksize=64, static_groups=True)
    yield "act_rows", "b", w, h, dict(actorder=True)
    yield "mse_sym_rows", "b", w, h, dict(sym=True, mse=True)
    yield "mse_asym_g32_b64", "b", w, h, dict(groupsize=32, blocksize=64, mse=True)
    for b in (2, 3, 8):
        yield f"w{b}_g32_b64", "b", w, h, dict(bits=b, groupsize=32, blocksize=64)
    yield "percdamp_0.1", "b", w, h, dict(groupsize=32, blocksize=64, percdamp=0.1)
    w, h = layer(8, 64, dead=(3, 17, 40))
    w[0, 3] = 10.0  # the row's largest weight sits in a dead column: per-row range comes from it
    yield "dead_rows", "c", w, h, dict()
    yield "dead_act_g16_b32", "c", w, h, dict(groupsize=16, blocksize=32, actorder=True)
    w, h = layer(8, 48)
    lam = np.linalg.eigvalsh(h)
    h = h - (lam[0] + 0.012 * np.mean(np.diag(h))) * np.eye(48)  # indefinite: needs percdamp > 0.012
    yield "damp_auto", "d", w, h, dict(groupsize=16, blocksize=32, damp_auto_increment=0.0015)


def main():
    out = {}
    for name, lay, w, h, opts in cases():
        codes, q, scale, zero, g_idx, damp = fasterquant(torch.tensor(w, dtype=D), torch.tensor(h, dtype=D), **opts)
        out[lay + ".w"], out[lay + ".h"] = w, h
        out[name + ".layer"], out[name + ".opts"] = np.array(lay), np.array(json.dumps(opts))
        out[name + ".codes"] = codes.numpy().astype(np.uint8)
        out[name + ".scale"] = scale.numpy()
        out[name + ".zero"], out[name + ".g_idx"] = zero.numpy(), g_idx.numpy().astype(np.int32)
        out[name + ".damp"] = np.float64(damp)
    out["torch_version"] = np.array(torch.__version__)
    out["cases"] = np.array(json.dumps([c[0] for c in cases()]))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gptq_goldens.npz")
    np.savez_compressed(path, **out)
    print(f"wrote {len(out)} arrays to {path}")


if __name__ == "__main__":
    main()
