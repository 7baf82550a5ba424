"""Weight files in and out: ``.npz``, ``.npy`` and ``.safetensors``; the layout of quantized weights.

Reading
-------
:func:`iter_weights` yields ``(name, array)`` one array at a time (``.npy``: one array named after the
file; ``.npz``: its members; ``.safetensors``: its tensors, memory-mapped, so a file larger than
memory is read one tensor at a time). ``BF16`` tensors are widened to float32 exactly: a bfloat16 is
the top half of a float32, ``float32_bits = bf16_bits << 16``.

``.safetensors`` is read and written by :mod:`refquant.io.safetensors` (memory-mapped; BF16 widened to
float32 exactly).

Quantized weights (:func:`save_quantized`, :func:`load_quantized`)
--------------------------------------------------------------------
One file (``.npz``, or ``.safetensors`` when the name ends so) holds, per quantized array ``<name>``,
the stored parts of its tensor, named after the tensor's fields:

=========  =====================================  ====================================================
kind       arrays                                 rebuilds
=========  =====================================  ====================================================
uniform    ``<name>.codes`` (int8/int16, (rows,   :class:`~refquant.core.qtensor.QTensor`:
           K), one code per element),             ``x ≈ scale · (codes − zero_point)``
           ``<name>.scale``, ``<name>.zero_point``
           (affine only)
codebook   ``<name>.codes`` (uint8/uint16),       :class:`~refquant.formats.codebook.CodebookTensor`:
           ``<name>.codebook``, ``<name>.scale``  ``x ≈ scale · codebook[codes]`` (fp8, fp4, log2; the
           (if any)                               fixed tables are written too, for self-containment)
nf4        ``<name>.packed`` (uint8, bitsandbytes :class:`~refquant.formats.nf4.NF4Tensor`
           order), ``<name>.absmax``; double
           quant: ``<name>.absmax_codes`` (int8),
           ``<name>.absmax_scale``,
           ``<name>.absmax_offset`` instead
shared     ``<name>.codes``, ``<name>.codebook``  :class:`~refquant.formats.weight_sharing.SharedWeights`
ggml       ``<name>.blocks`` (uint8, (rows,       :class:`~refquant.formats.ggml.GGMLTensor`, the
           K/32 · bytes per block))               ggml block structs byte for byte
mx         ``<name>.codes`` (uint8 element bit    :class:`~refquant.formats.mx.MXTensor`:
           patterns), ``<name>.scales`` (E8M0)    ``x ≈ 2^(scale − 127) · value(code)``
nvfp4      ``<name>.codes`` (uint8 E2M1),         :class:`~refquant.formats.nvfp4.NVFP4Tensor`; the
           ``<name>.block_scales`` (E4M3)         float32 tensor scale in the JSON entry
=========  =====================================  ====================================================

plus the arrays kept as they were (under their own names) and one JSON entry ``__refquant__`` (an
.npz member holding a string; in safetensors, the ``__metadata__`` key ``__refquant__``)::

    {"layout": 1, "refquant": "0.2.0", "format": "int4", "options": {"group_size": 32, ...},
     "arrays": {<name>: {"kind": "uniform", "shape": [original shape], "dtype": "float32",
                         "quantized_shape": [rows, K], "parts": {"codes": "<name>.codes", ...},
                         ...the tensor's other fields}},
     "kept": [names]}

A weight of more than two dimensions is quantized as ``(shape[0], -1)``; ``shape`` restores it.
"""
from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
import json
import os

import numpy as np

from .._version import __version__
from ..core.qtensor import QTensor
from ..core.ranges import QRange
from ..formats.codebook import CodebookTensor
from ..formats.ggml import GGMLTensor
from ..formats.mx import MXTensor
from ..formats.nf4 import NF4Tensor
from ..formats.nvfp4 import NVFP4Tensor
from ..formats.weight_sharing import SharedWeights
from .safetensors import read_safetensors, read_safetensors_header, write_safetensors

READ_EXTENSIONS = (".npz", ".npy", ".safetensors")
WRITE_EXTENSIONS = (".npz", ".safetensors")
MANIFEST = "__refquant__"


def weights_kind(path: str, extensions: Collection[str] = READ_EXTENSIONS, name: str = "path") -> str:
    """``"npz"``, ``"npy"`` or ``"safetensors"`` from the extension of ``path``; ValueError otherwise."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in extensions:
        raise ValueError(f"{name}: {path!r} has extension {ext or '(none)'!r}; expected {', '.join(extensions)}")
    return ext[1:]


def weight_names(path: str) -> list:
    """The array names of a weight file, in file order, without reading the arrays."""
    kind = weights_kind(path)
    if kind == "npy":
        return [os.path.splitext(os.path.basename(path))[0]]
    if kind == "safetensors":
        return list(read_safetensors_header(path)[0])
    with _open_npz(path) as z:
        return list(z.files)


def _open_npz(path):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path!r} not found") from None
        raise ValueError(f"{path!r} is not a readable .npz file ({type(e).__name__})") from None


def iter_weights(path: str) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, array)`` of a .npz, .npy or .safetensors file, one array at a time."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} not found")
    kind = weights_kind(path)
    if kind == "safetensors":
        yield from read_safetensors(path).items()
    elif kind == "npy":
        try:
            a = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"{path!r} is not a readable .npy file ({type(e).__name__}: {e})") from None
        yield weight_names(path)[0], a
    else:
        with _open_npz(path) as z:
            for name in z.files:
                try:
                    a = z[name]
                except (OSError, ValueError, EOFError) as e:
                    raise ValueError(f"{path!r}: member {name!r} is not readable ({type(e).__name__}: {e})") from None
                yield name, a


def read_weights(path: str) -> dict:
    """``{name: array}`` of a .npz, .npy or .safetensors file (safetensors / npy memory-mapped)."""
    return dict(iter_weights(path))


def write_weights(path: str, arrays: dict, manifest: dict | None = None) -> None:
    """Write ``arrays`` as .npz (compressed) or .safetensors by the extension of ``path``; ``manifest``
    (JSON-serialisable) goes to the ``__refquant__`` entry."""
    kind = weights_kind(path, WRITE_EXTENSIONS)
    if MANIFEST in arrays:
        raise ValueError(f"arrays: the name {MANIFEST!r} is reserved for the manifest")
    text = None if manifest is None else json.dumps(manifest)
    if kind == "safetensors":
        write_safetensors(path, arrays, None if text is None else {MANIFEST: text})
    else:
        np.savez_compressed(path, **arrays, **({} if text is None else {MANIFEST: np.array(text)}))


# -- quantized weights --------------------------------------------------------------------------------

def _parts(t) -> tuple:
    """``(kind, {suffix: array}, {field: JSON value})``: the stored parts of one quantized tensor."""
    if isinstance(t, QTensor):
        r = t.qrange
        arrays = {"codes": t.values, "scale": t.scale} | ({} if t.zero_point is None else {"zero_point": t.zero_point})
        return "uniform", arrays, {"qrange": [r.bits, r.signed, r.narrow, None if r.limits is None else list(r.limits)],
                                   "axis": t.axis, "block_size": t.block_size}
    if isinstance(t, CodebookTensor):
        arrays = {"codes": t.indices, "codebook": t.codebook} | ({} if t.scale is None else {"scale": t.scale})
        return "codebook", arrays, {"axis": t.axis, "block_size": t.block_size, "fixed_codebook": t.fixed_codebook,
                                    "meta_bits": t.meta_bits}
    if isinstance(t, NF4Tensor):
        if t.double_quant is None:
            arrays = {"packed": t.packed, "absmax": t.absmax}
        else:
            q, s, off = t.double_quant
            arrays = {"packed": t.packed, "absmax_codes": q, "absmax_scale": s, "absmax_offset": np.float32(off)}
        return "nf4", arrays, {"block_size": t.block_size, "double_quant": t.double_quant is not None}
    if isinstance(t, SharedWeights):
        return "shared", {"codes": t.indices, "codebook": t.codebook}, {}
    if isinstance(t, GGMLTensor):
        return "ggml", {"blocks": t.data}, {"qtype": t.qtype}
    if isinstance(t, MXTensor):
        return "mx", {"codes": t.codes, "scales": t.scales}, {"elem": t.elem, "block_size": t.block_size,
                                                              "axis": t.axis}
    if isinstance(t, NVFP4Tensor):
        return "nvfp4", {"codes": t.codes, "block_scales": t.block_scales}, {
            "per_tensor_scale": None if t.per_tensor_scale is None else float(t.per_tensor_scale)}
    raise TypeError(f"tensors: cannot store a {type(t).__name__}")


def _nf4_absmax(q, s, offset) -> np.ndarray:
    # the double-quantized absmax exactly as refquant.formats.nf4.nf4_quantize reconstructs it
    return (q.astype(np.float32) * np.repeat(s, 256)[: q.size] + offset).astype(np.float32)


def _rebuild(kind: str, a: dict, f: dict):
    if kind == "uniform":
        bits, signed, narrow, limits = f["qrange"]
        r = QRange(bits, signed, narrow, None if limits is None else tuple(limits))
        return QTensor(a["codes"], a["scale"], a.get("zero_point"), r, f["axis"], f["block_size"])
    if kind == "codebook":
        return CodebookTensor(a["codes"], a["codebook"], a.get("scale"), f["axis"], f["block_size"],
                              f["fixed_codebook"], f["meta_bits"])
    if kind == "nf4":
        shape = tuple(f["quantized_shape"])
        if not f["double_quant"]:
            return NF4Tensor(a["packed"], a["absmax"], shape, f["block_size"])
        q, s, off = a["absmax_codes"], a["absmax_scale"], np.float32(a["absmax_offset"])
        return NF4Tensor(a["packed"], _nf4_absmax(q, s, off), shape, f["block_size"], (q, s, off))
    if kind == "shared":
        return SharedWeights(a["codes"], a["codebook"])
    if kind == "ggml":
        return GGMLTensor(a["blocks"], f["qtype"], tuple(f["quantized_shape"]))
    if kind == "mx":
        return MXTensor(a["codes"], a["scales"], f["elem"], f["block_size"], f["axis"])
    if kind == "nvfp4":  # the float32 tensor scale survives JSON exactly (a float64 holds it)
        g = f["per_tensor_scale"]
        return NVFP4Tensor(a["codes"], a["block_scales"], None if g is None else float(np.float32(g)))
    raise ValueError(f"__refquant__: unknown kind {kind!r}")


def save_quantized(path: str, tensors: dict, *, format: str, options: dict, shapes: dict | None = None,
                   dtypes: dict | None = None, kept: dict | None = None) -> None:
    """Write quantized ``tensors`` ({name: tensor}) and the ``kept`` arrays in the layout of the module
    docstring. ``shapes`` / ``dtypes``: each name's original shape and dtype name (default: the tensor's)."""
    arrays, entries = {}, {}

    def put(key, v):
        if key in arrays or key == MANIFEST:
            raise ValueError(f"tensors / kept: the stored name {key!r} is used twice")
        arrays[key] = np.asarray(v)
    for name, t in tensors.items():
        kind, parts, fields = _parts(t)
        entries[name] = {"kind": kind, "shape": list((shapes or {}).get(name, t.shape)),
                         "dtype": str((dtypes or {}).get(name, "float32")), "quantized_shape": list(t.shape),
                         "parts": {suffix: f"{name}.{suffix}" for suffix in parts}, **fields}
        for suffix, v in parts.items():
            put(f"{name}.{suffix}", v)
    for name, v in (kept or {}).items():
        put(name, v)
    manifest = {"layout": 1, "refquant": __version__, "format": format, "options": dict(options),
                "arrays": entries, "kept": list(kept or {})}
    write_weights(path, arrays, manifest)


@dataclass(frozen=True)
class QuantizedWeights:
    """A file written by :func:`save_quantized`, read back."""

    format: str  # the registry format name
    options: dict  # the format's options, as used
    tensors: dict  # name -> quantized tensor of shape quantized_shape (rows, K)
    shapes: dict  # name -> the original shape (dequantize() is reshaped to it)
    kept: dict  # name -> array stored unchanged

    def dequantize(self, name: str) -> np.ndarray:
        """The float reconstruction of ``name`` in its original shape."""
        return self.tensors[name].dequantize().reshape(self.shapes[name])


def load_quantized(path: str) -> QuantizedWeights:
    """Read a file written by :func:`save_quantized`; every tensor rebuilt exactly (same arrays)."""
    kind = weights_kind(path, WRITE_EXTENSIONS)
    if kind == "safetensors":
        arrays = read_safetensors(path, mmap=False)
        text = read_safetensors_header(path)[1].get(MANIFEST)
    else:
        arrays = read_weights(path)
        text = str(arrays.pop(MANIFEST)) if MANIFEST in arrays else None
    if text is None:
        raise ValueError(f"{path!r} has no {MANIFEST} entry: not written by refquant quantize --out")
    m = json.loads(text)
    tensors, shapes = {}, {}
    for name, f in m["arrays"].items():
        tensors[name] = _rebuild(f["kind"], {suffix: arrays[key] for suffix, key in f["parts"].items()}, f)
        shapes[name] = tuple(f["shape"])
    return QuantizedWeights(m["format"], m["options"], tensors, shapes, {k: arrays[k] for k in m["kept"]})
