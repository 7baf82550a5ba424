"""Write refquant's IQ grid tables from ggml-common.h, and record llama.cpp's IQ dequantization as CI goldens.

    python tests/data/make_iq_goldens.py --header .../ggml/src/ggml-common.h   # refquant/data/iq_grids.npz
    python tests/data/make_iq_goldens.py --record                              # tests/data/iq_goldens.npz

Not a test and not a dependency.

``--header``: parses the C tables ``iq2xxs_grid`` (uint64[256]), ``iq2xs_grid`` (uint64[512]), ``iq2s_grid``
(uint64[1024]), ``iq3xxs_grid`` (uint32[256]), ``iq3s_grid`` (uint32[512]), ``iq1s_grid`` (uint64[2048]) and
``ksigns_iq2xs`` (uint8[128]) of ``ggml/src/ggml-common.h`` and stores each grid entry as the bytes the C code
reads (``(const uint8_t *)(grid + i)``, little-endian: byte j = value j of the grid point; iq1s as int8).
Recorded from the copy vendored by llama-cpp-python (llama.cpp commit 0c1e57098bba); the tables have not
changed since they were introduced (llama.cpp PRs #4773, #4897, #5999, #6302).

``--record``: random blocks of every IQ type (24 per type, numpy PCG64, seed 13; the fp16 scale fields set to finite
values) dequantized by llama.cpp's compiled ``dequantize_row_<type>`` from ``libggml-base.so.0`` of the
``llama-cpp-py-sync`` 0.11739 wheel (llama.cpp commit 0ce8cd11, b11739), through ctypes. On glibc < 2.38 that
wheel needs the patched copy described in ``tests/data/llamacpp_record.py``; set ``LLAMACPP_PY_PATH`` to the
folder that holds it.
"""
import argparse
import ctypes
import importlib.util
import os
import re
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GRIDS_OUT = os.path.join(HERE, "..", "..", "refquant", "data", "iq_grids.npz")
NB = 24  # blocks per type
GOLDENS_OUT = os.path.join(HERE, "iq_goldens.npz")
TABLES = {"iq2xxs_grid": ("<u8", 256), "iq2xs_grid": ("<u8", 512), "iq2s_grid": ("<u8", 1024),
          "iq3xxs_grid": ("<u4", 256), "iq3s_grid": ("<u4", 512), "iq1s_grid": ("<u8", 2048),
          "ksigns_iq2xs": ("u1", 128)}
BLOCK_BYTES = {"iq2_xxs": 66, "iq2_xs": 74, "iq2_s": 82, "iq3_xxs": 98, "iq3_s": 110, "iq1_s": 50, "iq1_m": 56}


def parse_table(text: str, name: str) -> list:
    m = re.search(r"GGML_TABLE_BEGIN\(\s*\w+\s*,\s*" + name + r"\s*,[^)]*\)(.*?)GGML_TABLE_END\(\)", text, re.S)
    if m is None:
        raise SystemExit(f"{name}: not found in the header")
    return [int(v, 0) for v in re.findall(r"0x[0-9a-fA-F]+|\d+", m.group(1))]


def write_grids(header: str) -> None:
    text = open(header).read()
    out = {}
    for name, (dt, n) in TABLES.items():
        vals = parse_table(text, name)
        assert len(vals) == n, (name, len(vals))
        a = np.array(vals, dtype=np.uint64).astype(dt)
        if name == "ksigns_iq2xs":
            out[name] = a
        else:
            width = np.dtype(dt).itemsize
            b = a.view(np.uint8).reshape(n, width)  # byte j of entry i = value j of grid point i
            out[name] = b.view(np.int8) if name == "iq1s_grid" else b
    np.savez_compressed(GRIDS_OUT, **out)
    print("wrote", os.path.normpath(GRIDS_OUT), {k: v.shape for k, v in out.items()})


def random_blocks(rng, qtype: str, nb: int) -> np.ndarray:
    blk = rng.integers(0, 256, (nb, BLOCK_BYTES[qtype]), dtype=np.uint8)
    d = (rng.standard_normal(nb) * 0.01).astype("<f2")  # a finite fp16 super-scale of either sign
    d[:4] = np.array([0.0, -0.0, 6.1e-5, 1e-7], "<f2")  # zero, negative zero, smallest normal, a subnormal
    if qtype == "iq1_m":  # the fp16 scale is spread over the top nibbles of the four uint16 scales
        bits = d.view("<u2").astype(np.uint16)
        sc = blk[:, 48:56].copy().view("<u2")
        for k in range(4):
            sc[:, k] = (sc[:, k] & 0x0FFF) | (((bits >> (4 * k)) & 0xF) << 12)
        blk[:, 48:56] = sc.view(np.uint8)
    else:
        blk[:, 0:2] = d.view(np.uint8).reshape(nb, 2)
    return blk


def record() -> None:
    sys.path.insert(0, os.environ.get("LLAMACPP_PY_PATH", ""))
    so = ctypes.CDLL(os.path.join(importlib.util.find_spec("llama_cpp_py_sync").submodule_search_locations[0],
                                  "libggml-base.so.0"))
    rng = np.random.default_rng(13)
    out = {}
    for qtype in BLOCK_BYTES:
        blk = random_blocks(rng, qtype, NB)
        y = np.zeros(NB * 256, np.float32)
        fn = getattr(so, f"dequantize_row_{qtype}")
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        fn(blk.ctypes.data, y.ctypes.data, y.size)
        out[f"{qtype}_blocks"], out[f"{qtype}_deq"] = blk, y.reshape(NB, 256)
    np.savez_compressed(GOLDENS_OUT, **out)
    print("wrote", GOLDENS_OUT)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--header")
    ap.add_argument("--record", action="store_true")
    a = ap.parse_args()
    if a.header:
        write_grids(a.header)
    if a.record:
        record()
