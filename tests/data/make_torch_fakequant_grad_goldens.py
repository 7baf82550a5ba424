"""Record PyTorch's fake-quantize gradients and learnable fake-quantizers as CI goldens.

Needs torch 2.13.0 CPU (``pip install torch==2.13.0``), which is not a refquant dependency; CI reads
the file this writes, ``tests/data/torch_fakequant_grad_goldens.npz``, without torch. Run from the
repository root: ``python tests/data/make_torch_fakequant_grad_goldens.py``. refquant is not imported;
every value is PyTorch's, recorded with ``cpu_capability`` (stored in the file).

Case kinds (``<name>.kind``), each with ``.x``, ``.dy`` (float32), ``.scale`` (float32),
``.zero_point`` (int32 or float32), ``.axis`` (-1: per tensor), ``.quant_min``, ``.quant_max``:

* ``fq`` — ``torch.fake_quantize_per_{tensor,channel}_affine``: ``.y`` and ``.dx`` (``x.grad`` after
  ``y.backward(dy)``).
* ``lsq`` — ``torch._fake_quantize_learnable_per_{tensor,channel}_affine`` with ``.grad_factor``:
  ``.y``, ``.dx``, ``.dscale``, ``.dzero_point`` (PyTorch's float32 sums) and ``.dscale_vec``,
  ``.dzero_point_vec`` — the per-element terms, shape of x, recorded one element (per channel) per
  call, where PyTorch's sum is the term itself.
* ``module`` — ``torch.ao.quantization._learnable_fake_quantize._LearnableFakeQuantize`` with
  ``use_grad_scaling=True`` after ``enable_param_learning()``: ``.dscale``, ``.dzero_point``, the
  gradients the module produces (its grad factor is ``1 / sqrt(x.numel() * quant_max)``).
"""
import os
import warnings

import numpy as np
import torch
from torch.ao.quantization import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver
from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize

warnings.filterwarnings("ignore", category=UserWarning)
F32 = np.float32
rng = np.random.default_rng(20261201)
out, names = {}, []


def nudge(x, steps):
    """Move each float32 ``x[i]`` by ``steps[i]`` ulps."""
    x = x.copy()
    for i, st in enumerate(steps):
        for _ in range(abs(int(st))):
            x.flat[i] = np.nextafter(x.flat[i], F32(np.inf) if st > 0 else F32(-np.inf))
    return x


def tensor_values(s, z, lo, hi, n):
    """Codes near ties and on the clamp edges (x/s + z = qmin - 0.5, qmax + 0.5, ...), a few ulps
    either side; wide values; ±0."""
    zi = int(np.rint(z))
    edges = np.array([lo - 0.5, lo - 1, lo, lo + 0.5, hi - 0.5, hi, hi + 0.5, hi + 1, lo - 0.25, hi + 0.25]) - zi
    k = np.concatenate([edges, rng.integers(lo - zi - 3, hi - zi + 4, n) + rng.choice([0.5, 0.5, 0.25, 0.0], n)])
    x = (k * np.float64(s)).astype(F32)
    x = np.concatenate([x, nudge(x[:10], np.ones(10)), nudge(x[:10], -np.ones(10)),
                        nudge(x[10:], rng.integers(-2, 3, n))])
    wide = (rng.standard_normal(16) * s * (hi - lo) * 2).astype(F32)
    return np.concatenate([x, wide, np.array([0.0, -0.0], F32)])


def channel_values(shape, axis, s, z, lo, hi):
    """Per-channel: each entry a tie, an edge or a random value for its own channel's scale."""
    ch = np.arange(shape[axis]).reshape([-1 if d == axis else 1 for d in range(len(shape))])
    ch = np.broadcast_to(ch, shape)
    zi = np.rint(z)[ch]
    k = rng.integers(lo - 3, hi + 4, shape) + rng.choice([0.5, 0.5, 0.25, 0.0, -0.5], shape)
    x = ((k - zi) * s[ch].astype(np.float64)).astype(F32)
    return nudge(x.reshape(-1), rng.integers(-1, 2, x.size)).reshape(shape)


def record(name, **fields):
    names.append(name)
    out.update({f"{name}.{k}": np.asarray(v) for k, v in fields.items()})


def t(a, grad=False):
    return torch.tensor(np.ascontiguousarray(a), requires_grad=grad)


# --------------------------------------------------------------- fake_quantize_per_tensor_affine
for j, (s, z, lo, hi) in enumerate([(0.25, 3, 0, 15), (F32(0.0123), 128, 0, 255), (1.0, 1, -128, 127),
                                    (F32(0.7), -37, -128, 127), (0.5, 0, -8, 7)]):
    s = F32(s)
    x = tensor_values(s, z, lo, hi, 120)
    dy = rng.standard_normal(x.shape).astype(F32)
    X = t(x, True)
    y = torch.fake_quantize_per_tensor_affine(X, float(s), z, lo, hi)
    y.backward(t(dy))
    record(f"fq_tensor_{j}", kind="fq", x=x, dy=dy, scale=s, zero_point=np.int32(z), axis=-1, quant_min=lo,
           quant_max=hi, y=y.detach().numpy(), dx=X.grad.numpy())

# --------------------------------------------------------------- fake_quantize_per_channel_affine
for j, (shape, axis, float_zp, lo, hi) in enumerate([((4, 30), 0, False, 0, 255), ((30, 5), 1, False, -128, 127),
                                                    ((3, 4, 9), 2, False, 0, 15), ((4, 30), 0, True, 0, 255),
                                                    ((30, 5), 1, True, -128, 127)]):
    ch = shape[axis]
    s = rng.uniform(0.01, 1.5, ch).astype(F32)
    s[0] = 0.25
    if float_zp:
        z = rng.uniform(lo - 2, hi + 2, ch).astype(F32)
        z[:3] = [lo + 0.5, lo + 2.5, hi - 0.5]
    else:
        z = rng.integers(lo, hi + 1, ch).astype(np.int32)
    x = channel_values(shape, axis, s, z.astype(np.float64), lo, hi)
    dy = rng.standard_normal(shape).astype(F32)
    X = t(x, True)
    y = torch.fake_quantize_per_channel_affine(X, t(s), t(z), axis, lo, hi)
    y.backward(t(dy))
    record(f"fq_channel_{j}", kind="fq", x=x, dy=dy, scale=s, zero_point=z, axis=axis, quant_min=lo, quant_max=hi,
           y=y.detach().numpy(), dx=X.grad.numpy())


# --------------------------------------------------------------- learnable, per tensor
def lsq_tensor(name, x, dy, s, z, lo, hi, gf):
    X, S, Z = t(x, True), t(np.array([s], F32), True), t(np.array([z], F32), True)
    y = torch._fake_quantize_learnable_per_tensor_affine(X, S, Z, lo, hi, gf)
    y.backward(t(dy))
    ds_vec, dz_vec = np.empty_like(x), np.empty_like(x)
    for i in range(x.size):  # one element per call: PyTorch's sum is the term itself
        _, a, b = torch.ops.aten._fake_quantize_learnable_per_tensor_affine_backward(
            t(dy.reshape(-1)[i:i + 1]), t(x.reshape(-1)[i:i + 1]), t(np.array([s], F32)), t(np.array([z], F32)),
            lo, hi, gf)
        ds_vec.flat[i], dz_vec.flat[i] = a.item(), b.item()
    record(name, kind="lsq", x=x, dy=dy, scale=F32(s), zero_point=F32(z), axis=-1, quant_min=lo, quant_max=hi,
           grad_factor=gf, y=y.detach().numpy(), dx=X.grad.numpy(), dscale=S.grad.numpy(),
           dzero_point=Z.grad.numpy(), dscale_vec=ds_vec, dzero_point_vec=dz_vec)


# zero points where nearbyint (forward) and (int)(zp + 0.5) (backward) disagree, and where they agree
for j, (s, z, lo, hi) in enumerate([(1.0, 2.5, -2, 4), (0.25, 0.5, 0, 15), (0.5, -0.7, -8, 7), (0.5, -1.5, -8, 7),
                                    (0.5, -0.5, -8, 7), (F32(0.0123), 127.5, 0, 255), (F32(0.37), 3.0, -128, 127),
                                    (F32(0.37), 3.2, -128, 127), (0.125, 300.0, 0, 255), (0.125, -9.0, -8, 7)]):
    s = F32(s)
    x = tensor_values(s, z, lo, hi, 60)
    dy = rng.standard_normal(x.shape).astype(F32)
    gf = float(rng.choice([1.0, 1.0 / np.sqrt(x.size * max(hi, 1)), 0.3]))
    lsq_tensor(f"lsq_tensor_{j}", x, dy, s, F32(z), lo, hi, gf)

# exact sums: dyadic scale, x on a 1/8 grid, small integer dy — every float32 partial sum is exact, so
# PyTorch's blocked sum equals any other order
for j, (s, z, lo, hi) in enumerate([(0.5, 1.0, -8, 7), (0.25, 2.5, 0, 15)]):
    x = (rng.integers(-120, 121, 300) / 8).astype(F32)
    dy = rng.integers(-3, 4, 300).astype(F32)
    lsq_tensor(f"lsq_tensor_exact_{j}", x, dy, F32(s), F32(z), lo, hi, 1.0)


# --------------------------------------------------------------- learnable, per channel
def lsq_channel(name, x, dy, s, z, axis, lo, hi, gf):
    X, S, Z = t(x, True), t(s, True), t(z, True)
    y = torch._fake_quantize_learnable_per_channel_affine(X, S, Z, axis, lo, hi, gf)
    y.backward(t(dy))
    ds_vec, dz_vec = np.empty_like(x), np.empty_like(x)
    xm, dym = np.moveaxis(x, axis, -1), np.moveaxis(dy, axis, -1)
    dsm, dzm = np.moveaxis(ds_vec, axis, -1), np.moveaxis(dz_vec, axis, -1)
    for idx in np.ndindex(xm.shape[:-1]):  # one element per channel per call
        xs = np.expand_dims(xm[idx], 0)  # (1, C): the channel axis is 1
        _, a, b = torch.ops.aten._fake_quantize_learnable_per_channel_affine_backward(
            t(np.expand_dims(dym[idx], 0)), t(xs), t(s), t(z), 1, lo, hi, gf)
        dsm[idx], dzm[idx] = a.numpy(), b.numpy()
    record(name, kind="lsq", x=x, dy=dy, scale=s, zero_point=z, axis=axis, quant_min=lo, quant_max=hi,
           grad_factor=gf, y=y.detach().numpy(), dx=X.grad.numpy(), dscale=S.grad.numpy(),
           dzero_point=Z.grad.numpy(), dscale_vec=ds_vec, dzero_point_vec=dz_vec)


for j, (shape, axis, lo, hi) in enumerate([((5, 24), 0, -8, 7), ((24, 5), 1, 0, 15), ((3, 6, 4), 1, -128, 127),
                                          ((6, 20), 0, 0, 255)]):
    ch = shape[axis]
    s = rng.uniform(0.05, 1.0, ch).astype(F32)
    s[0] = 0.5
    z = rng.uniform(lo - 1, hi + 1, ch).astype(F32)
    z[:4] = [2.5, 0.5, -0.5 if lo < 0 else 1.5, float(lo) - 0.7]
    x = channel_values(shape, axis, s, np.clip(np.rint(z.astype(np.float64)), lo, hi), lo, hi)
    dy = rng.standard_normal(shape).astype(F32)
    gf = 1.0 if j % 2 else 1.0 / np.sqrt(x.size * hi)
    lsq_channel(f"lsq_channel_{j}", x, dy, s, z, axis, lo, hi, gf)

x = (rng.integers(-100, 101, (4, 50)) / 8).astype(F32)
lsq_channel("lsq_channel_exact_0", x, rng.integers(-3, 4, (4, 50)).astype(F32), np.array([0.5, 0.25, 1.0, 0.125], F32),
            np.array([1.0, 2.5, -3.0, 0.5], F32), 0, -8, 7, 1.0)


# --------------------------------------------------------------- _LearnableFakeQuantize, use_grad_scaling
def module_case(name, x, dy, s, z, lo, hi, per_channel):
    if per_channel:
        m = _LearnableFakeQuantize(MovingAveragePerChannelMinMaxObserver, quant_min=lo, quant_max=hi,
                                   channel_len=len(s), use_grad_scaling=True, ch_axis=0, dtype=torch.quint8,
                                   qscheme=torch.per_channel_affine)
    else:
        m = _LearnableFakeQuantize(MovingAverageMinMaxObserver, quant_min=lo, quant_max=hi,
                                   use_grad_scaling=True, dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    m.enable_param_learning()
    with torch.no_grad():
        m.scale.copy_(t(np.atleast_1d(s)))
        m.zero_point.copy_(t(np.atleast_1d(z)))
    X = t(x, True)
    y = m(X)
    y.backward(t(dy))
    record(name, kind="module", x=x, dy=dy, scale=np.asarray(s, F32), zero_point=np.asarray(z, F32),
           axis=0 if per_channel else -1, quant_min=lo, quant_max=hi, y=y.detach().numpy(), dx=X.grad.numpy(),
           dscale=m.scale.grad.numpy(), dzero_point=m.zero_point.grad.numpy())


x = (rng.standard_normal((4, 32)) * 2).astype(F32)
module_case("module_per_channel", x, rng.standard_normal((4, 32)).astype(F32),
            np.array([0.05, 0.02, 0.1, 0.03], F32), np.array([100.0, 128.0, 20.5, 200.0], F32), 0, 255, True)
module_case("module_per_tensor", x, rng.standard_normal((4, 32)).astype(F32), F32(0.04), F32(120.5), 0, 255, False)

out["names"] = np.array(names)
out["torch_version"] = np.array(torch.__version__)
out["cpu_capability"] = np.array(torch.backends.cpu.get_cpu_capability())
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_fakequant_grad_goldens.npz")
np.savez_compressed(path, **out)
print(f"wrote {path}: {len(names)} cases, {sum(out[f'{n}.x'].size for n in names)} values "
      f"(torch {torch.__version__}, {out['cpu_capability']})")
