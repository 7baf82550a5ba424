"""Record ggml's k-quant and IQ4 quantizers (C) as CI goldens for tests/test_kquants.py.

NEEDS THE ORACLE (never a refquant dependency, never run in CI): a shared library that exports ggml's own
functions ``quantize_<t>(src, dst, nrow, n_per_row, imatrix)``, ``quantize_row_<t>_ref(src, dst, k)`` and
``dequantize_row_<t>(src, dst, k)`` for t in q2_K, q3_K, q4_K, q5_K, q6_K, iq4_nl, iq4_xs.

What recorded the committed ``ggml_kquants_goldens.npz`` (``--lib``):
  1. From ``ggml/src/ggml-quants.c`` of ggml-org/llama.cpp at commit 01243c587feceaa5d6a6c2305535ef2f549c48b8,
     copy verbatim into one C file: ``best_index_int8``, ``nearest_int``, ``make_qx_quants``,
     ``make_q3_quants``, ``make_qkx2_quants``, ``get_scale_min_k4``, ``make_qkx3_quants``, ``make_qp_quants``,
     and for each type ``quantize_row_<t>_ref``, ``dequantize_row_<t>``, ``quantize_row_<t>_impl``,
     ``quantize_<t>`` (IQ4: ``quantize_row_iq4_nl_impl``, ``quantize_iq4_nl``, ``quantize_row_iq4_nl_ref``,
     ``quantize_iq4_xs``, ``quantize_row_iq4_xs_ref``, ``dequantize_row_iq4_{nl,xs}``).
  2. Put before them a small header in place of ggml-common.h / ggml-impl.h: the block structs of
     ggml-common.h (``block_q2_K`` … ``block_iq4_xs``, sizes 84/110/144/176/210/18/136 checked by
     ``_Static_assert``), ``kvalues_iq4nl``, ``QK_K 256``, ``QK4_NL 32``, ``K_SCALE_SIZE 12``,
     ``GROUP_MAX_EPS 1e-15f``, ``MIN``/``MAX``, ``GGML_ASSERT`` (abort), ``ggml_row_size`` (blocks × size),
     and ``GGML_FP32_TO_FP16`` / ``GGML_FP16_TO_FP32`` as casts through ``_Float16`` (round to nearest even,
     as ggml's own conversion).
  3. ``gcc -O2 -DNDEBUG -ffp-contract=off -fPIC -shared -o libkq_off.so kq.c -lm`` (gcc 12.2.0, x86-64).
     ``-DNDEBUG`` as llama.cpp's release builds (``nearest_int`` asserts |x| < 2^22 otherwise).
Then ``python tests/data/make_ggml_kquants_goldens.py --lib libkq_off.so --fma-lib libkq_fma.so
--check-lib .../libggml-base.so.0``.

``--fma-lib``: the same source built with ``gcc -O2 -DNDEBUG -march=native -ffp-contract=fast`` on an FMA
machine (36 ``vfmadd`` instructions in the quantizers): its bytes are stored too (``<t>_fma``), to show that
contraction changes the chosen bytes and that refquant matches the build without it. A plain
``gcc -O2`` (no ``-march``) emits no FMA on x86-64 and gives the ``-ffp-contract=off`` bytes.

``--check-lib``: another build to compare against (not stored): llama.cpp b11739 (commit 0ce8cd11) as
shipped in llama-cpp-py-sync 0.11739's ``libggml-base.so.0`` (gcc 13.3, no FMA instructions; on glibc < 2.38
load a copy patched as described in make_llamacpp_tokens.py). It gave the same bytes for every type, with and
without the imatrix, on these inputs — except ``quantize_row_iq4_nl_ref`` on the 37 all-zero IQ4_NL blocks:
its older ``quantize_row_iq4_nl_impl`` skips such a block without ``memset(Lb, 0, block_size)``, so the codes
of the previous block are written again (with d = 0: they dequantize to 0 all the same); the recorded
commit writes codes 0. On inputs beyond ~1e15, where the IQ4 search overflows float32 to NaN, its older
``best_index_int8`` (differences to the neighbours instead of 2x against midpoints) sends NaN to level 15,
the recorded commit to level 0. Neither matters for real weights.

Written: ``ggml_kquants_goldens.npz`` with ``x`` (32 rows of 512 float32: Gaussian, LLM-like, heavy tails,
zeros, constants, one outlier, tiny, subnormal, exact ties, one-sign, mixed magnitudes, sparse, large),
``imatrix`` (512 non-negative weights, some zero), and per type t: ``<t>`` (``quantize_<t>(x, NULL)``, what
llama-quantize writes without an imatrix), ``<t>_imatrix`` (``quantize_<t>(x, imatrix)``), ``<t>_deq``
(``dequantize_row_<t>`` of ``<t>``), ``<t>_fma``; ``iq4_nl_row_ref`` (``quantize_row_iq4_nl_ref``); ``meta``.
"""
import argparse
import ctypes
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TYPES = {"q2_K": (84, 256), "q3_K": (110, 256), "q4_K": (144, 256), "q5_K": (176, 256), "q6_K": (210, 256),
         "iq4_nl": (18, 32), "iq4_xs": (136, 256)}
N = 512


def load(path):
    lib = ctypes.CDLL(path)
    vp, i64 = ctypes.c_void_p, ctypes.c_int64
    for t in TYPES:
        getattr(lib, f"quantize_{t}").argtypes = [vp, vp, i64, i64, vp]
        getattr(lib, f"quantize_{t}").restype = ctypes.c_size_t
        getattr(lib, f"quantize_row_{t}_ref").argtypes = [vp, vp, i64]
        getattr(lib, f"dequantize_row_{t}").argtypes = [vp, vp, i64]
    return lib


def c_quantize(lib, x, t, imatrix=None, row_ref=False):
    nbytes, bs = TYPES[t]
    x = np.ascontiguousarray(x, np.float32)
    out = np.zeros((len(x), N // bs * nbytes), np.uint8)
    if row_ref:
        getattr(lib, f"quantize_row_{t}_ref")(x.ctypes.data, out.ctypes.data, x.size)
    else:
        im = None if imatrix is None else np.ascontiguousarray(imatrix, np.float32)
        getattr(lib, f"quantize_{t}")(x.ctypes.data, out.ctypes.data, len(x), N, None if im is None else im.ctypes.data)
    return out


def c_dequantize(lib, data, t):
    nbytes, bs = TYPES[t]
    out = np.zeros((len(data), data.shape[1] // nbytes * bs), np.float32)
    getattr(lib, f"dequantize_row_{t}")(np.ascontiguousarray(data).ctypes.data, out.ctypes.data, out.size)
    return out


def inputs():
    rng = np.random.default_rng(20260513)
    g = lambda s=1.0: rng.standard_normal(N) * s  # noqa: E731
    rows = [g(), g(0.02), rng.standard_t(1.5, N), rng.standard_t(3, N) * 0.05, rng.laplace(size=N) * 0.03,
            np.concatenate([np.zeros(256), g()[:256]]),                                 # an all-zero super-block
            np.concatenate([np.full(256, 0.7), np.full(256, -3.0)]),                # constant super-blocks
            np.where(np.arange(N) == 77, 0.5, g(0.01)),                             # one outlier (50 sigma)
            np.concatenate([g(1e-6)[:256], g(1e-12)[:256]]),                         # tiny: d below fp16 range
            np.concatenate([g(1e-40)[:256], np.where(np.arange(256) == 9, 1.0, g(1e-41)[:256])]),  # subnormal
            rng.integers(-8, 8, N) / 2.0,                                            # exact halves: ties
            rng.integers(-40, 40, N) / 8.0,                                          # exact eighths
            np.abs(g()) + 1.0, -np.abs(g(0.3)) - 0.1,                                # one sign only
            g() * np.repeat(10.0 ** rng.uniform(-4, 2, N // 16), 16),               # magnitudes per 16
            np.where(rng.random(N) < 0.7, 0.0, g()),                                 # sparse
            rng.uniform(-1, 1, N) ** 5, g(1e4), np.linspace(-1, 1, N),
            np.where(np.arange(N) % 256 == 200, -2.5, 0.0),                         # one value per super-block
            np.tile(np.repeat([0.3, -0.3], 8), N // 16)]                            # a two-level pattern
    while len(rows) < 32:
        rows.append(g(rng.uniform(0.01, 2)))
    x = np.array(rows, np.float32)
    imatrix = np.where(rng.random(N) < 0.1, 0.0, rng.gamma(0.5, 2.0, N)).astype(np.float32)
    return x, imatrix


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--fma-lib")
    ap.add_argument("--check-lib")
    a = ap.parse_args()
    lib = load(a.lib)
    x, imatrix = inputs()
    out = {"x": x, "imatrix": imatrix}
    meta = {"source": "ggml/src/ggml-quants.c, ggml-org/llama.cpp @ 01243c587feceaa5d6a6c2305535ef2f549c48b8",
            "compiler": "gcc 12.2.0 (Debian 12.2.0-14) x86-64: -O2 -DNDEBUG -ffp-contract=off",
            "fma_compiler": "same, -O2 -DNDEBUG -march=native -ffp-contract=fast (AMD EPYC, FMA3)",
            "fma_blocks_differing": {}, "check_lib_blocks_differing": {}}
    for t, (nbytes, _) in TYPES.items():
        out[t] = c_quantize(lib, x, t)
        out[f"{t}_imatrix"] = c_quantize(lib, x, t, imatrix)
        out[f"{t}_deq"] = c_dequantize(lib, out[t], t)
        if a.fma_lib:
            f = c_quantize(load(a.fma_lib), x, t)
            out[f"{t}_fma"] = f
            meta["fma_blocks_differing"][t] = int((f.reshape(-1, nbytes) != out[t].reshape(-1, nbytes)).any(1).sum())
        if a.check_lib:
            other = load(a.check_lib)
            diff = sum(int((c_quantize(other, x, t, im).reshape(-1, nbytes) != out[k].reshape(-1, nbytes)).any(1).sum())
                       for im, k in [(None, t), (imatrix, f"{t}_imatrix")])
            meta["check_lib_blocks_differing"][t] = diff
    out["iq4_nl_row_ref"] = c_quantize(lib, x, "iq4_nl", row_ref=True)
    if a.check_lib:
        other = c_quantize(load(a.check_lib), x, "iq4_nl", row_ref=True)
        differ = (other != out["iq4_nl_row_ref"]).reshape(-1, 18).any(1)
        meta["check_lib_blocks_differing"]["iq4_nl_row_ref"] = int(differ.sum())
    out["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(os.path.join(HERE, "ggml_kquants_goldens.npz"), **out)
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
