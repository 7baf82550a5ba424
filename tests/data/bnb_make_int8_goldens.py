"""Record what bitsandbytes computes for LLM.int8(), as CI goldens for refquant.ptq.llm_int8.

Needs bitsandbytes (recorded with 0.50.2, its CPU/default backend) and torch 2.13.0 CPU; neither is a
refquant dependency and refquant is not imported. Run from the repository root:
``python tests/data/bnb_make_int8_goldens.py``; it writes ``tests/data/bnb_int8_goldens.npz`` with

* ``vq<i>.x`` (float16), ``vq<i>.threshold`` → ``vq<i>.codes``, ``vq<i>.absmax``, ``vq<i>.outlier_cols``
  (``bitsandbytes.functional.int8_vectorwise_quant``; an empty array where it returns None);
* ``mm<i>.x``, ``mm<i>.w`` (float32, or float16 holding integers: widen them to float32), [``mm<i>.b``],
  ``mm<i>.threshold`` → ``mm<i>.y`` (``bnb.matmul``
  in inference mode, i.e. ``MatMul8bitLt.forward``), ``mm<i>.y_int`` (``int8_scaled_mm`` of the
  same codes: the int8 path alone, before the outlier columns are added) and ``mm<i>.acc`` (its int32
  accumulator, ``int8_linear_matmul``);
* ``meta.versions``: the bitsandbytes, torch and CPU capability used.
"""
import json
import logging
import os

import numpy as np
import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F
from bitsandbytes.autograd._functions import MatmulLtState

logging.disable(logging.WARNING)  # MatMul8bitLt warns that float32 inputs are cast to float16
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bnb_int8_goldens.npz")


def vq_cases(rng):
    yield np.array([[6.0, 1.0, -2.0], [0.5, 5.99, 1.0]], np.float16), 6.0  # 6.0 exactly: an outlier (>=)
    yield np.array([[3.0, 1.5, -0.75], [0.0, 0.0, 0.0], [1.0, -2.0, 3.0]], np.float16), 0.0  # zero row
    yield np.array([[1.204, 0.3088, -1.063]], np.float16), 0.0
    for t in (0.0, 6.0, 3.0):
        for _ in range(6):
            m, k = rng.integers(1, 7), rng.integers(1, 120)
            x = rng.standard_normal((m, k)) * rng.uniform(0.1, 4.0)
            for _ in range(rng.integers(0, 4)):
                x[rng.integers(m), rng.integers(k)] = rng.choice([-1, 1]) * rng.uniform(4, 30)
            yield x.astype(np.float16), t


def mm_cases(rng):
    for i in range(24):
        m, k, n = rng.integers(1, 7), rng.integers(1, 160), rng.integers(1, 12)
        x = (rng.standard_normal((m, k)) * rng.uniform(0.1, 3.0)).astype(np.float32)
        for _ in range(rng.integers(0, 4) if i % 3 else 0):
            x[rng.integers(m), rng.integers(k)] = rng.choice([-1, 1]) * rng.uniform(5, 20)
        w = (rng.standard_normal((n, k)) * 0.1).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32) if i % 2 else None
        yield x, w, b, (0.0 if i % 4 == 0 else 6.0)
    # K = 4096, codes 100…127: bitsandbytes' CPU int8 matmul without AVX-512 (a float32 matmul cast to
    # int32) is no longer exact once partial sums pass 2^24. Integers, so stored exactly as float16.
    k = 4096
    x = rng.integers(100, 128, (2, k)).astype(np.float16)
    w = rng.integers(100, 128, (3, k)).astype(np.float16)
    x[:, 0] = w[:, 0] = 127
    yield x, w, None, 0.0


def main():
    rng = np.random.default_rng(20240611)
    out = {"meta.versions": json.dumps({"bitsandbytes": bnb.__version__, "torch": torch.__version__,
                                        "cpu_capability": torch.backends.cpu.get_cpu_capability()})}
    with torch.inference_mode():
        for i, (x, t) in enumerate(vq_cases(rng)):
            codes, absmax, cols = F.int8_vectorwise_quant(torch.from_numpy(x.copy()), threshold=t)
            out.update({f"vq{i}.x": x, f"vq{i}.threshold": np.float64(t), f"vq{i}.codes": codes.numpy(),
                        f"vq{i}.absmax": absmax.numpy(),
                        f"vq{i}.outlier_cols": np.zeros(0, np.int64) if cols is None else cols.numpy()})
        for i, (x, w, b, t) in enumerate(mm_cases(rng)):
            st = MatmulLtState()
            st.is_training, st.threshold = False, t
            tb = None if b is None else torch.from_numpy(b)
            x32, w32 = torch.from_numpy(x).float(), torch.from_numpy(w).float()
            y = bnb.matmul(x32, w32, state=st, threshold=t, bias=tb)
            CA, SCA, _ = F.int8_vectorwise_quant(x32.half(), threshold=t)
            CB, SCB, _ = F.int8_vectorwise_quant(w32.half())
            y_int = torch.ops.bitsandbytes.int8_scaled_mm.default(CA, CB, SCA, SCB, bias=tb, dtype=torch.float32)
            acc = torch.ops.bitsandbytes.int8_linear_matmul.default(CA, CB)
            out.update({f"mm{i}.x": x, f"mm{i}.w": w, f"mm{i}.threshold": np.float64(t),
                        f"mm{i}.y": y.numpy(), f"mm{i}.y_int": y_int.numpy(), f"mm{i}.acc": acc.numpy()})
            if b is not None:
                out[f"mm{i}.b"] = b
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT}: {sum(k.endswith('.codes') for k in out)} quantizer and "
          f"{sum(k.endswith('.y') for k in out)} matmul cases")


if __name__ == "__main__":
    main()
