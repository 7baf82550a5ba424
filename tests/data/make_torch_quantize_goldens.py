"""Record PyTorch's quantize_per_tensor / quantize_per_channel codes as CI goldens.

Needs torch 2.13.0 CPU (``pip install torch==2.13.0``), which is not a refquant dependency; CI reads
the file this writes, ``tests/data/torch_quantize_goldens.npz``, without torch. Run from the
repository root: ``python tests/data/make_torch_quantize_goldens.py``. The values are PyTorch's,
recorded on an x86-64 CPU with AVX2 and FMA (``cpu_capability`` in the file); refquant is not
imported.

Each case ``<name>`` stores ``<name>.x`` (float32), ``.scale`` (float64, () or (C,)),
``.zero_point`` (int64 or float32, () or (C,)), ``.axis`` (-1 for per-tensor), ``.func``,
``.dtype`` and ``.int_repr`` — ``torch.Tensor.int_repr()``: the codes, shape of x, for quint8 /
qint8; the packed bytes (two or four codes a byte, element 0 in the low bits) for quint4x2 /
quint2x4. ``fake.*`` holds ``torch.fake_quantize_per_tensor_affine`` on the same ties, for contrast.
"""
import os
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore", category=UserWarning)  # quantized-tensor deprecation notice
F32 = np.float32
RANGES = {"quint8": (0, 255), "qint8": (-128, 127), "quint4x2": (0, 15), "quint2x4": (0, 3)}
rng = np.random.default_rng(20261125)


def near_ties(s, lo, hi, n):
    """(k + 1/2)·s and (k + 1/4)·s in float32, k spanning the code range and beyond, each moved
    by 0..3 float32 ulps up or down: the inputs where the conventions separate."""
    k = rng.integers(-(hi - lo) - 4, (hi - lo) + 5, n) + rng.choice([0.5, 0.5, 0.5, 0.25], n)
    x = (k * np.float64(s)).astype(F32)
    for i, step in enumerate(rng.integers(-3, 4, n)):
        for _ in range(abs(step)):
            x[i] = np.nextafter(x[i], F32(np.inf) if step > 0 else F32(-np.inf))
    return x


def values(s, lo, hi, n_ties, huge):
    wide = (rng.standard_normal(96) * 10.0 ** rng.uniform(-4, 3, 96) * s * (hi - lo)).astype(F32)
    edges = np.array([0.0, -0.0, 1e-45, -1e-45, 1e-38, s * 1e6, -s * 1e6, s * 1e15, -s * 1e15], F32)
    extra = np.array([1e30, -1e30, 3e9, -3e9, np.inf, -np.inf], F32) if huge else np.zeros(0, F32)
    return np.concatenate([near_ties(s, lo, hi, n_ties), wide, edges, extra])


def channel_values(s, lo, hi, n):
    wide = (rng.standard_normal(n // 3) * 10.0 ** rng.uniform(-4, 3, n // 3) * s * (hi - lo)).astype(F32)
    edges = np.array([0.0, -0.0, s * 1e6, -s * 1e6], F32)
    return rng.permutation(np.concatenate([near_ties(s, lo, hi, n - n // 3 - 4), wide, edges]))


def pack_view(q):
    return q.int_repr().numpy()


out, names = {}, []


def record(name, func, dtype, x, scale, zero_point, axis, int_repr):
    names.append(name)
    out.update({f"{name}.x": x, f"{name}.scale": np.asarray(scale, np.float64),
                f"{name}.zero_point": np.asarray(zero_point), f"{name}.axis": np.asarray(axis),
                f"{name}.func": np.asarray(func), f"{name}.dtype": np.asarray(dtype),
                f"{name}.int_repr": int_repr})


for dtype, (lo, hi) in RANGES.items():
    tdt = getattr(torch, dtype)
    eight_bit = hi - lo == 255
    mid = (lo + hi + 1) // 2
    params = [(3.0, mid), (0.0123, lo), (0.25, hi), (float(F32(rng.uniform(1e-3, 2))), int(rng.integers(lo, hi + 1)))]
    if dtype == "qint8":
        params.append((0.7, -37))
    for j, (s, z) in enumerate(params):
        x = values(s, lo, hi, 400, huge=eight_bit)
        q = torch.quantize_per_tensor(torch.from_numpy(x), s, z, tdt)
        record(f"per_tensor_{dtype}_{j}", "quantize_per_tensor", dtype, x, s, z, -1, pack_view(q))
    for j, (shape, axis) in enumerate([((4, 5, 24), 1), ((6, 8, 7), 2)]):
        ch = shape[axis]
        scales = rng.uniform(1e-3, 3, ch)
        rest = tuple(d for i, d in enumerate(shape) if i != axis)
        x = np.stack([channel_values(F32(sc), lo, hi, int(np.prod(rest))).reshape(rest) for sc in scales], 0)
        x = np.ascontiguousarray(np.moveaxis(x, 0, axis))  # channel c along axis has scale c
        xf = np.clip(x, -1e6, 1e6)  # float zero points: keep |x/scale + zp| < 2**31, where lrintf wraps
        zf = np.round(rng.uniform(lo - 2, hi + 2, ch), 2).astype(F32)
        q = torch.quantize_per_channel(torch.from_numpy(xf), torch.from_numpy(scales), torch.from_numpy(zf), axis, tdt)
        record(f"per_channel_float_zp_{dtype}_{j}", "quantize_per_channel", dtype, xf, scales, zf, axis, pack_view(q))
        if eight_bit:
            zi = rng.integers(lo, hi + 1, ch)
            zi[0] = lo if dtype == "qint8" else zi[0]  # the most negative zero point
            q = torch.quantize_per_channel(torch.from_numpy(x), torch.from_numpy(scales), torch.from_numpy(zi),
                                           axis, tdt)
            record(f"per_channel_{dtype}_{j}", "quantize_per_channel", dtype, x, scales, zi, axis, pack_view(q))

x = values(3.0, 0, 255, 400, huge=False)
out["fake.x"] = x
out["fake.args"] = np.array([3.0, 128, 0, 255])
out["fake.out"] = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), 3.0, 128, 0, 255).numpy()
q = torch.quantize_per_tensor(torch.from_numpy(x), 3.0, 128, torch.quint8)
out["fake.quantize_per_tensor"] = q.int_repr().numpy()
out["cases"] = np.array(names)
out["torch_version"] = np.asarray(torch.__version__)
out["cpu_capability"] = np.asarray(torch.backends.cpu.get_cpu_capability())
np.savez_compressed(os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_quantize_goldens.npz"), **out)
print(f"{len(names)} cases, {sum(out[n + '.x'].size for n in names)} values, torch {torch.__version__}")
