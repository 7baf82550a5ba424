"""Record external oracles' MX / NVFP4 / ggml-MXFP4 outputs as goldens for CI.

    python tests/data/make_mx_goldens.py            # writes tests/data/mx_goldens.npz

Not a test and not a dependency. Oracles (none is needed by the tests, which read the .npz):

* torchao 0.18.0 on torch 2.13.0 (CPU): ``torchao.prototype.mx_formats.mx_tensor.to_mx`` for the
  five float element types under the four ``ScaleCalculationMode`` rules, and ``nvfp4_tensor.nvfp4_quantize``
  (two-level with ``per_tensor_amax_to_scale``, and single-level) with ``NVFP4Tensor.dequantize``.
* llama.cpp's compiled ``quantize_row_mxfp4_ref`` / ``dequantize_row_mxfp4`` from ``libggml-base.so.0`` of
  the ``llama-cpp-py-sync`` 0.11739 wheel (llama.cpp commit 0ce8cd11), called through ctypes. On glibc <
  2.38 that wheel needs the patched copy described in ``tests/data/llamacpp_record.py``; set
  ``LLAMACPP_PY_PATH`` to the folder that holds it.

Inputs are generated here (numpy PCG64, fixed seeds) and stored beside the outputs. Element codes are
stored unpacked, one uint8 per value (torchao's packed FP4 pairs are split: low nibble = even index).
"""
import ctypes
import importlib.util
import os
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "mx_goldens.npz")
F32 = np.float32
ELEMS = ("fp8_e4m3", "fp8_e5m2", "fp6_e2m3", "fp6_e3m2", "fp4_e2m1")
MODES = ("floor", "ceil", "even", "rceil")


def mx_inputs():
    rng = np.random.default_rng(20260)
    x = (rng.standard_normal((12, 64)) * np.exp(rng.uniform(-12, 12, (12, 2))).repeat(32, 1)).astype(F32)
    x[0] = 0  # all-zero blocks
    x[1, :32] = np.linspace(-4, 4, 32)  # amax exactly 4 = 2^2
    x[1, 32:] = np.linspace(-1, 1, 32) * np.nextafter(F32(8), F32(0))  # amax one ulp below 8
    x[2] = (rng.integers(-48, 49, 64) / 8).astype(F32)  # ties at every element grid
    x[3, :32] *= 0
    x[3, 5], x[3, 40] = 7.0, 448.0 * 2**4  # saturation under floor
    x[4, 7] = -57344.0 * 2.0**-20
    return x


def rceil_quirk_input():
    # a / M one float32 ulp above 2^-7 for E5M2 (M = 57344): exact ceil is 2^-6, float32 log2 rounds to -7
    x = np.zeros((1, 32), F32)
    x[0, 3] = np.nextafter(F32(448.0), F32(1e9))
    x[0, 4] = -1.5
    return x


def nvfp4_inputs():
    rng = np.random.default_rng(20261)
    x = (rng.standard_normal((8, 64)) * np.exp(rng.uniform(-5, 5, (8, 4))).repeat(16, 1)).astype(F32)
    x[0, :16] = 0
    x[1] = (rng.integers(-48, 49, 64) / 8).astype(F32)
    return x


def ggml_inputs():
    rng = np.random.default_rng(20262)
    x = (rng.standard_normal((48, 64)) * np.exp(rng.uniform(-30, 30, (48, 2))).repeat(32, 1)).astype(F32)
    x[:12] = (rng.integers(-32, 33, (12, 64)) / 4.0 * 2.0 ** rng.integers(-8, 8, (12, 1))).astype(F32)  # ties
    x[12, :32] = 0
    x[13, :32] = np.linspace(-8, 8, 32)
    x[13, 32:] = np.linspace(-1, 1, 32) * np.nextafter(F32(8), F32(0))
    x[14] = 0
    x[14, [1, 40]] = [2.0**-124, -(2.0**-126)]  # amax below 2^-125: ggml's exponent byte wraps
    return x


def log2_boundary_inputs():
    # the 64 floats just below every power of two 2^-149 … 2^127 (log2f rounds up to 44 of them), and the powers
    ks = np.arange(-149, 128)
    bits = (np.ldexp(F32(1), ks).astype(F32).view(np.int32)[:, None] + np.arange(-64, 1)).reshape(-1)
    v = bits.astype(np.int32).view(F32)
    return np.unique(v[v > 0])


def ggml_lib():
    import sys
    sys.path.insert(0, os.environ.get("LLAMACPP_PY_PATH", ""))
    path = os.path.join(importlib.util.find_spec("llama_cpp_py_sync").submodule_search_locations[0], "libggml-base.so.0")
    so = ctypes.CDLL(path)
    so.quantize_row_mxfp4_ref.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    so.dequantize_row_mxfp4.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    return so


def main():
    import torch
    import torchao
    from torchao.prototype.mx_formats.config import ScaleCalculationMode
    from torchao.prototype.mx_formats.kernels import unpack_uint4
    from torchao.prototype.mx_formats.mx_tensor import to_mx
    from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, per_tensor_amax_to_scale

    dtypes = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2, "fp6_e2m3": "fp6_e2m3",
              "fp6_e3m2": "fp6_e3m2", "fp4_e2m1": torch.float4_e2m1fn_x2}

    def torchao_mx(x, elem, mode):
        s, d = to_mx(torch.from_numpy(x), dtypes[elem], 32, ScaleCalculationMode(mode))
        d = d.view(torch.uint8)
        codes = unpack_uint4(d) if elem == "fp4_e2m1" else d
        return codes.numpy().reshape(x.shape), s.view(torch.uint8).numpy().reshape(x.shape[0], -1)

    out = {"oracle": f"torchao {torchao.__version__} on torch {torch.__version__}; llama.cpp libggml-base "
                     "(llama-cpp-py-sync 0.11739, commit 0ce8cd11)"}
    x = mx_inputs()
    out["mx_x"] = x
    for elem in ELEMS:
        for mode in MODES:
            out[f"torchao_{elem}_{mode}_codes"], out[f"torchao_{elem}_{mode}_scales"] = torchao_mx(x, elem, mode)
    q = rceil_quirk_input()
    out["rceil_quirk_x"] = q
    out["rceil_quirk_codes"], out["rceil_quirk_scales"] = torchao_mx(q, "fp8_e5m2", "rceil")

    xn = nvfp4_inputs()
    out["nvfp4_x"] = xn
    xt = torch.from_numpy(xn)
    for name, g in (("amax", per_tensor_amax_to_scale(xt.abs().max())), ("single", None)):
        t = NVFP4Tensor.to_nvfp4(xt, 16, g)
        out[f"nvfp4_{name}_codes"] = unpack_uint4(t.qdata.view(torch.uint8)).numpy().reshape(xn.shape)
        out[f"nvfp4_{name}_scales"] = t.scale.view(torch.uint8).numpy().reshape(xn.shape[0], -1)
        out[f"nvfp4_{name}_deq"] = t.dequantize(torch.float32).numpy()
        if g is not None:
            out[f"nvfp4_{name}_g"] = np.float32(g.item())

    so = ggml_lib()
    xg = ggml_inputs()
    blocks = np.zeros(xg.size // 32 * 17, np.uint8)
    so.quantize_row_mxfp4_ref(xg.ctypes.data, blocks.ctypes.data, xg.size)
    deq = np.zeros(xg.size, F32)
    so.dequantize_row_mxfp4(blocks.ctypes.data, deq.ctypes.data, xg.size)
    out.update(ggml_x=xg, ggml_blocks=blocks.reshape(xg.shape[0], -1), ggml_deq=deq.reshape(xg.shape))
    v = log2_boundary_inputs()
    xb = np.zeros((v.size, 32), F32)
    xb[:, 0] = v
    bb = np.zeros(v.size * 17, np.uint8)
    so.quantize_row_mxfp4_ref(xb.ctypes.data, bb.ctypes.data, xb.size)
    out.update(ggml_log2_amax=v, ggml_log2_e=bb.reshape(-1, 17)[:, 0].copy())
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT}: {len(out)} arrays")


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    main()
