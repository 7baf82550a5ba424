"""The loop twin of :func:`refquant.ptq.gptq.gptq_quantize`: Algorithm 1 one column at a time.

No lazy batch update: after quantizing column j, ``W[:, j:] −= E[:, j] · Hinv[j, j:]`` on every later
column at once (the OBS update of the paper's eq. 2–3, with the Cholesky rows of :mod:`refquant.ptq.gptq`).
The preparation (damping, act-order permutation, static groups, the quantizer's parameters) is the
vectorised module's own, so the twin differs from it only in the order of the updates.

References
----------
Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers",
ICLR 2023, Algorithm 1. IST-DASLab ``gptq.py: GPTQ.fasterquant`` (the lazy form the twin is checked against).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..core._types import ArrayLike
from .gptq import GPTQResult, _codes, _prepare, _result, gptq_params


def gptq_quantize_ref(w: ArrayLike, hessian: ArrayLike, *, bits: int = 4, group_size: int = 128,
                      symmetric: bool = False, act_order: bool = False, static_groups: bool = False,
                      percdamp: float = 0.01, block_size: int = 128, mse: bool = False, norm: float = 2.4,
                      grid: int = 100, max_shrink: float = 0.8, symmetric_nonnegative_clip: bool = True,
                      group_params_from: str = "block_start", damp_auto_increment: float = 0.0,
                      group_quantizer: Callable[[np.ndarray], tuple] | None = None) -> GPTQResult:
    """The loop twin of :func:`gptq_quantize`: Algorithm 1 one column at a time, no lazy batching —
    after quantizing column j, ``W[:, j:] −= E[:, j] · Hinv[j, j:]`` on every later column at once.

    ``block_size`` plays no part in the updates here; it only says which weights
    ``group_params_from="block_start"`` means: a copy of W taken at every multiple of ``block_size``.
    Equal to :func:`gptq_quantize` exactly for ``block_size=1`` (then eq. (5) is a product of one term,
    rounded once, like the rank-1 update here); for larger blocks eq. (5) sums B products per weight
    in one matrix product, in another order than the B successive subtractions here, so the float64
    weights differ by rounding (~1e-16 relative) and codes agree unless a value falls that close to
    a rounding boundary.
    """
    qopts = dict(symmetric=symmetric, mse=mse, norm=norm, grid=grid, max_shrink=max_shrink,
                 symmetric_nonnegative_clip=symmetric_nonnegative_clip)
    W, Hinv, perm, row_params, static, damp = _prepare(w, hessian, bits, group_size, block_size, percdamp,
                                                       damp_auto_increment, act_order, static_groups,
                                                       group_params_from, dict(qopts, group_quantizer=group_quantizer))
    rows, K = W.shape
    maxq = 2 ** bits - 1
    Q = np.zeros_like(W)
    What = np.zeros_like(W) if group_quantizer is not None else None
    params = [row_params] if group_size == 0 else (static or [])
    loss = 0.0
    snapshot = W
    for j in range(K):
        if j % block_size == 0:
            snapshot = W.copy()  # what a lazy implementation holds in W at the start of the block
        if group_size == 0:
            s, z = row_params
        elif static is not None:
            s, z = static[perm[j] // group_size]
        elif j % group_size == 0:
            src = snapshot if group_params_from == "block_start" else W
            if group_quantizer is None:
                s, z = gptq_params(src[:, j:j + group_size], bits, **qopts)
                params.append((s, z))
            else:
                gp, round_column = group_quantizer(np.array(src[:, j:j + group_size]))
                params.append(gp)
        if group_quantizer is None:
            q = _codes(W[:, j], s, z, maxq)
            dq = s * (q - z)
        else:
            q, dq = round_column(j % group_size, W[:, j].copy())
            What[:, j] = dq
        Q[:, j] = q
        d = Hinv[j, j]
        loss += np.sum((W[:, j] - dq) ** 2) / d ** 2 / 2
        err = (W[:, j] - dq) / d
        W[:, j:] -= np.outer(err, Hinv[j, j:])
    return _result(Q, params, perm, group_size, act_order, static, bits, symmetric, damp, loss,
                   None if group_quantizer is None else What)
