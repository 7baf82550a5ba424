"""Record HQQ as the reference code computes it, as CI goldens for refquant.ptq.hqq.

Two oracles, both torch float32 on CPU:

* mobiusml/hqq 0.2.8.post1 itself (``pip install --no-deps hqq==0.2.8.post1 termcolor``):
  ``Quantizer.quantize(W, nbits, group_size=…, axis=…, round_zero=…, optimize=True, bitpack=False,
  device="cpu")``. That release's ``optimize_weights_proximal_legacy`` never applies kappa.
* a transcription of its ``Quantizer.quantize`` initialisation and of the legacy optimizer loop, with
  ``beta *= kappa`` as earlier hqq releases (commit b21fe876) and the paper have it, and returning
  what the library keeps to itself (the errors the loop measures, the number of steps). With kappa = 1
  the transcription must equal the library bit for bit; this script asserts it for every case.

Needs torch 2.13.0 CPU and hqq; neither is a refquant dependency, refquant is not imported. Run from the
repository root: ``python tests/data/hqq_make_goldens.py``; it writes ``tests/data/hqq_goldens.npz``:
per weight ``w<j>`` (float32), per case ``c<i>.opts`` (JSON: weight, bits, group_size, axis, kappa,
round_zero) → ``c<i>.codes`` (uint8, the weight's shape), ``c<i>.inv_scale``, ``c<i>.zero`` (float32,
one per group in HQQ's group order) and ``c<i>.errors`` (the loop's measured mean |W − W_r|, float32).
"""
import json
import os

import numpy as np
import torch
from hqq.core.quantize import Quantizer

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hqq_goldens.npz")


def shrink_lp_op(x, beta, lp_norm):  # hqq/core/optimize.py
    if lp_norm == 1:
        return torch.sign(x) * torch.nn.functional.relu(torch.abs(x) - 1.0 / beta)
    return torch.sign(x) * torch.nn.functional.relu(torch.abs(x) - (1.0 / beta) * torch.pow(torch.abs(x), lp_norm - 1))


def quantize(tensor, nbits, group_size, axis, round_zero, kappa, lp_norm=0.7, beta=10.0, iters=20):
    W = tensor.float()  # Quantizer.quantize
    W = W.reshape([-1, group_size]) if axis == 1 else W.reshape([group_size, -1])
    _min = W.min(axis=axis, keepdim=True)[0]
    _max = W.max(axis=axis, keepdim=True)[0]
    max_v = round(2 ** nbits - 1)
    denom = _max - _min
    scale = max_v / denom
    scale = torch.where(denom.abs() <= 1e-4, torch.full_like(scale, 1.0), scale)
    scale = scale.clamp(max=2e4)
    zero = -_min * scale
    if round_zero:
        zero = torch.round(zero)
    W_f, errors = W, []  # optimize_weights_proximal_legacy, CPU: float32
    best_error = torch.tensor(torch.inf, dtype=torch.float32)
    for i in range(iters):
        W_q = torch.round(W_f * scale + zero).clamp_(0, max_v)
        W_r = (W_q - zero) / scale
        W_e = shrink_lp_op(W_f - W_r, beta, lp_norm)
        zero = torch.mean(W_q - (W_f - W_e) * scale, axis=axis, keepdim=True)
        beta *= kappa  # the earlier releases' annealing; 0.2.8.post1 leaves beta alone
        current_error = torch.abs(W_f - W_r).mean().float()
        errors.append(current_error.item())
        if current_error < best_error:
            best_error = current_error
        else:
            break
    W_q = torch.round(W * scale + zero).clamp_(0, max_v)
    return W_q, scale, zero, errors


def weights(rng):
    yield (rng.standard_normal((16, 128)) * 0.02).astype(np.float32)
    w = (rng.standard_t(3, (24, 96)) * 0.05).astype(np.float32)  # heavy tails
    w[3, 7] = 0.9
    yield w
    w = (rng.standard_normal((8, 64)) * 0.1).astype(np.float32)
    w[0, :32] = 0.25  # a constant group (max − min = 0)
    w[1, :32] = np.linspace(0, 5e-5, 32)  # a group narrower than 1e-4
    yield w
    yield (rng.standard_normal((8, 64)) * 3.0).astype(np.float32)  # errors above 0.17: the shrinkage acts, kappa shows


def main():
    rng = np.random.default_rng(20240612)
    out, i = {}, 0
    for j, w in enumerate(weights(rng)):
        out[f"w{j}"] = w
        for nbits, g, axis in [(4, 64, 1), (4, 32, 0), (3, 32, 1), (2, 32, 1), (4, 64, 0), (8, 64, 1)]:
            for kappa in (1.01, 1.0):
                round_zero = nbits == 4
                W_q, s, z, errors = quantize(torch.from_numpy(w), nbits, g, axis, round_zero, kappa)
                if kappa == 1.0:  # the library itself must agree with the transcription
                    Wl, meta = Quantizer.quantize(torch.from_numpy(w), nbits=nbits, group_size=g, axis=axis,
                                                  round_zero=round_zero, optimize=True, bitpack=False, device="cpu")
                    assert torch.equal(Wl, W_q) and torch.equal(meta["zero"], z), (j, nbits, g, axis)
                    assert torch.equal(meta["scale"], 1.0 / s)
                codes = W_q.reshape(w.shape)  # both groupings are views of the row-major flat tensor
                out.update({f"c{i}.opts": json.dumps(dict(weight=j, bits=nbits, group_size=g, axis=axis, kappa=kappa,
                                                           round_zero=round_zero)),
                            f"c{i}.codes": codes.numpy().astype(np.uint8), f"c{i}.inv_scale": s.numpy().ravel(),
                            f"c{i}.zero": z.numpy().ravel(), f"c{i}.errors": np.array(errors, np.float32)})
                i += 1
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT}: {i} cases")


if __name__ == "__main__":
    main()
