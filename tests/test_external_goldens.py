"""Recorded outputs of the implementations refquant mirrors, so CI guards bit-exactness without them.

``tests/data/external_goldens.npz`` was written once, on 2026-11-25, by running the external code:
PyTorch 2.13.0 (CPU) ``fake_quantize_per_tensor_affine``, ``fake_quantize_per_channel_affine``,
``MinMaxObserver`` / ``PerChannelMinMaxObserver``; bitsandbytes 0.50.2 ``quantize_4bit(quant_type="nf4",
blocksize=64)`` (CPU backend); and the reference quantizers of llama.cpp ``ggml-quants.c``
(``quantize_row_*_ref``) transcribed to C and compiled with gcc 12 ``-O2 -ffp-contract=off``.
None of those is a dependency; these values are theirs, not refquant's.
"""
import os

import numpy as np
import pytest

from refquant import ggml_ops as G
from refquant import torch_ops as T
from refquant.formats.nf4 import nf4_quantize

GOLD = np.load(os.path.join(os.path.dirname(__file__), "data", "external_goldens.npz"))


def test_torch_fake_quantize_goldens():
    x = GOLD["torch_x"]
    s, z, lo, hi = GOLD["torch_pt_args"]
    assert np.array_equal(T.fake_quantize_per_tensor_affine(x, float(s), int(z), int(lo), int(hi)), GOLD["torch_pt_out"])
    out = T.fake_quantize_per_channel_affine(x, GOLD["torch_pc_scale"], GOLD["torch_pc_zp"], 1, -128, 127)
    assert np.array_equal(out, GOLD["torch_pc_out"])


@pytest.mark.parametrize("dtype", ["quint8", "qint8"])
@pytest.mark.parametrize("qscheme", T.QSCHEMES)
def test_torch_observer_goldens(dtype, qscheme):
    s, z = T.minmax_qparams(GOLD["torch_x"], dtype=dtype, qscheme=qscheme, axis=1)
    key = f"torch_obs_{dtype}_{qscheme}"
    assert np.array_equal(s.reshape(-1), GOLD[key + "_scale"].reshape(-1))
    assert np.array_equal(z.reshape(-1), GOLD[key + "_zp"].reshape(-1))


@pytest.mark.parametrize("i", [0, 1, 2])
def test_bitsandbytes_nf4_goldens(i):
    t = nf4_quantize(GOLD[f"bnb_nf4_x{i}"], 64)
    assert np.array_equal(t.packed, GOLD[f"bnb_nf4_packed{i}"])
    assert np.array_equal(t.absmax, GOLD[f"bnb_nf4_absmax{i}"])


@pytest.mark.parametrize("qtype", list(G.BLOCK_BYTES))
def test_ggml_reference_goldens(qtype):
    assert G.quantize(GOLD["ggml_x"], qtype).tobytes() == GOLD[f"ggml_{qtype}"].tobytes()
