"""Record AutoAWQ's own outputs as goldens for tests/test_awq.py (run by hand; CI only reads the .npz).

    pip download autoawq==0.2.9 --no-deps && tar xzf autoawq-0.2.9.tar.gz
    python tests/data/awq_record_autoawq.py autoawq-0.2.9/awq/quantize/quantizer.py

AutoAWQ imports CUDA kernels, transformers and datasets at import time, so instead of importing the
package this script parses its ``quantizer.py`` and executes the methods of ``AwqQuantizer`` that
are pure torch — ``pseudo_quantize_tensor``, ``_search_best_scale`` / ``_compute_best_scale`` /
``_compute_loss`` / ``_module_forward`` (on a bias-free ``nn.Linear`` that is both the scaled layer
and ``module2inspect``) and ``_compute_best_clip`` — in float32 on CPU with torch 2.13, unchanged.
Only ``clear_memory``, ``get_op_name`` and ``_sanitize_kwargs`` are stubbed (bookkeeping).

One CPU artefact is removed: ``_compute_best_scale`` saves ``org_sd = {k: v.cpu() ...}``, which on a
GPU is a copy but on the CPU is the weight tensor itself; the in-place ``fc.weight.mul_(scales)`` of
the first grid point then overwrites the saved state, and every later α is evaluated on W·s(α=0)
instead of W. With ``duo_scaling=False`` s(0) = 1 exactly and nothing changes; with duo scaling the
CPU run picks a different α. The layer below returns copies from ``state_dict`` (the GPU behaviour).
"""
import ast
import inspect
import logging
import os
import sys
from typing import Dict, List

import numpy as np
import torch
import torch.nn as nn

METHODS = ("pseudo_quantize_tensor", "_search_best_scale", "_compute_best_scale", "_compute_loss",
           "_module_forward", "_compute_best_clip")


def load_methods(path):
    tree = ast.parse(open(path).read())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "AwqQuantizer")
    ns = {"torch": torch, "nn": nn, "List": List, "Dict": Dict, "Optional": None, "logging": logging,
          "inspect": inspect, "clear_memory": lambda *a: None, "get_op_name": lambda module, op: "op"}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name in METHODS:
            exec(compile(ast.Module([node], []), path, "exec"), ns)
    return {m: ns[m] for m in METHODS}


class CopyingLinear(nn.Linear):
    """``state_dict`` returns copies, as ``v.cpu()`` of a GPU tensor does."""

    def state_dict(self, *args, **kwargs):
        return {k: v.clone() for k, v in super().state_dict(*args, **kwargs).items()}


def quantizer(methods, bits, group_size, zero_point, duo_scaling):
    attrs = dict(w_bit=bits, group_size=group_size, zero_point=zero_point, duo_scaling=duo_scaling,
                 max_chunk_memory=1024 * 1024 * 1024, n_parallel_calib_samples=None,
                 _sanitize_kwargs=lambda self, kw, m: {})
    return type("Q", (), {**methods, **attrs})()


def main(path, out):
    methods = load_methods(path)
    rng = np.random.default_rng(0)
    rec = {}
    for i, (bits, gs, zp) in enumerate([(4, 16, True), (3, 8, True), (4, 16, False), (2, 32, True)]):
        w = (rng.standard_normal((6, 32)) * rng.uniform(0.1, 2, 32)).astype(np.float32)
        w[0, :16] = np.abs(w[0, :16])  # an all-positive group
        w[1, 16:] = -np.abs(w[1, 16:])  # an all-negative group
        q = quantizer(methods, bits, gs, zp, False)
        w_hat, scales, zeros = q.pseudo_quantize_tensor(torch.from_numpy(w.copy()))
        rec[f"pq{i}_w"], rec[f"pq{i}_w_hat"], rec[f"pq{i}_scale"] = w, w_hat.numpy(), scales.numpy()
        rec[f"pq{i}_args"] = np.array([bits, gs, int(zp)])
    for i, (bits, gs, duo) in enumerate([(4, 16, False), (4, 16, True), (3, 8, False), (3, 8, True)]):
        x = (rng.standard_normal((64, 32)) * np.exp(rng.uniform(-1, 2, 32))).astype(np.float32)
        w = (rng.standard_normal((12, 32)) * 0.1).astype(np.float32)
        lin = CopyingLinear(32, 12, bias=False)
        lin.weight.data = torch.from_numpy(w.copy())
        q = quantizer(methods, bits, gs, True, duo)
        _, _, s = q._search_best_scale(lin, None, [lin], torch.from_numpy(x.copy()))
        rec[f"sc{i}_x"], rec[f"sc{i}_w"], rec[f"sc{i}_scales"] = x, w, s.numpy()
        rec[f"sc{i}_args"] = np.array([bits, gs, int(duo)])
    for i, (bits, gs, n_tok) in enumerate([(4, 16, 512), (3, 8, 100), (2, 32, 512)]):
        x = (rng.standard_normal((700, 32)) * np.exp(rng.uniform(-1, 1, 32))).astype(np.float32)
        w = rng.standard_t(3, (64, 32)).astype(np.float32)  # heavy tails: outliers worth clipping
        q = quantizer(methods, bits, gs, True, False)
        m = q._compute_best_clip(torch.from_numpy(w.copy()), torch.from_numpy(x.copy()), n_sample_token=n_tok)
        rec[f"cl{i}_x"], rec[f"cl{i}_w"], rec[f"cl{i}_max_val"] = x, w, m.numpy().reshape(64, -1)
        rec[f"cl{i}_args"] = np.array([bits, gs, n_tok])
    np.savez_compressed(out, **rec)
    print(f"wrote {out}: {len(rec)} arrays (torch {torch.__version__})", file=sys.stderr)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main(sys.argv[1], os.path.join(os.path.dirname(os.path.abspath(__file__)), "awq_autoawq_goldens.npz"))
