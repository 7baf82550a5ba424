"""Record a safetensors file written by the reference implementation (safetensors 0.8.0 via torch
2.13.0), with torch's own float32 view of every tensor, for tests/test_io_weights.py.

    pip install torch==2.13.0 safetensors==0.8.0 && python tests/data/make_safetensors_oracle.py

Writes tests/data/safetensors_oracle.safetensors (the file, as the package writes it) and
tests/data/safetensors_oracle.npz (per tensor: torch's values, ``tensor.float().numpy()`` for the
float types, ``.numpy()`` otherwise). CI reads both without torch.
"""
import os

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
g = torch.Generator().manual_seed(0)
x = torch.randn(3, 5, generator=g) * 100
special = torch.tensor([0.0, -0.0, 1.5, -3.0, float("inf"), float("-inf"), 1e-40, 3.0e38])
tensors = {
    "bf16": x.to(torch.bfloat16),
    "bf16_special": special.to(torch.bfloat16),
    "f16": x.to(torch.float16),
    "f32": x,
    "f64": x.to(torch.float64),
    "i8": torch.arange(-4, 4, dtype=torch.int8),
    "u8": torch.arange(250, 256, dtype=torch.uint8),
    "i16": torch.tensor([-32768, 32767], dtype=torch.int16),
    "i32": torch.tensor([[-(2 ** 31), 2 ** 31 - 1]], dtype=torch.int32),
    "i64": torch.tensor([-(2 ** 63), 2 ** 63 - 1], dtype=torch.int64),
    "bool": torch.tensor([True, False, True]),
    "scalar": torch.tensor(2.5),
    "empty": torch.zeros(0, 4),
}
save_file(tensors, os.path.join(HERE, "safetensors_oracle.safetensors"), metadata={"producer": "safetensors 0.8.0"})
expected = {k: (v.float().numpy() if v.is_floating_point() and v.dtype != torch.float64 else v.numpy())
            for k, v in tensors.items()}
np.savez(os.path.join(HERE, "safetensors_oracle.npz"), **expected)
print({k: (v.dtype, v.shape) for k, v in expected.items()})
