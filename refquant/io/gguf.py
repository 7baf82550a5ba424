"""GGUF checkpoints of LLaMA-family models: memory-mapped reading, block-by-block streaming, and
writing small synthetic ones.

A GGUF file (llama.cpp's container, version 3) is a header — key/value metadata and a table of
tensors (name, shape, ggml type, offset) — followed by the tensors' bytes, aligned to
``general.alignment`` (32). :func:`open_gguf` parses the header and memory-maps the file: no tensor
is read until asked for, so opening SmolLM2-135M takes ~0.1 s and a few MB, where ``gguf.GGUFReader``
(which builds a NumPy view per metadata item) takes seconds and ~150 MB. :func:`tensor` dequantizes
one tensor with :mod:`refquant.formats.ggml` (byte-exact with ggml; every type of its ``TYPE_TRAITS``
table, the read-only IQ1 / IQ2 / IQ3 grid types included, plus f32, f16 and bf16); :func:`iter_blocks` yields one
block's weights at a time, so a checkpoint can be calibrated or quantized without holding it all in
memory; :func:`forward_streamed` runs the model that way.

Shapes: GGUF lists dimensions fastest-first (ne0 = the input width of a linear layer); arrays here
are NumPy row-major, (out, in), as :mod:`refquant.models.llama` expects.

Writing uses the ``gguf`` package (llama.cpp's own writer; ``pip install "refquant[llm]"``).

References
----------
GGUF specification, ggml ``docs/gguf.md``; llama.cpp ``gguf-py/gguf/gguf_reader.py`` and
``gguf_writer.py``; ``src/llama-model.cpp`` (LLM_ARCH_LLAMA hyperparameter keys).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
import importlib.util
import os
import struct

import numpy as np

from ..core._types import ArrayLike
from ..formats import ggml, mx
from ..models.llama import LlamaConfig, block, block_names, embed, head

# ggml type id -> (name, values per block, bytes per block); the types refquant can dequantize
GGML_TYPES = {0: ("f32", 1, 4), 1: ("f16", 1, 2), 30: ("bf16", 1, 2),
              **{t.type_id: (t.name, t.block_size, t.type_size) for t in ggml.TYPE_TRAITS.values()}}
TYPE_IDS = {name: i for i, (name, _, _) in GGML_TYPES.items()}
_WRITABLE = ("f32", "f16") + tuple(t for t, tr in ggml.TYPE_TRAITS.items() if tr.quantize)  # the IQ1-IQ3 only read
# GGUF metadata value types: id -> struct format (8 string, 9 array)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    ggml_type: int  # ggml type id (GGML_TYPES)
    shape: tuple  # NumPy order: (out, in) for a matrix
    offset: int  # byte offset of the data in the file


@dataclass(frozen=True)
class GGUFFile:
    path: str
    metadata: dict  # key -> int / float / bool / str / list
    tensors: dict  # name -> TensorInfo, in file order
    data: np.memmap  # the whole file, read-only
    metadata_types: dict = field(default_factory=dict)  # key -> (GGUF value type, array element type or None)


def _read_string(buf, off):
    n, = struct.unpack_from("<Q", buf, off)
    return bytes(buf[off + 8: off + 8 + n]).decode("utf-8", errors="surrogateescape"), off + 8 + n


def _read_value(buf, off, vtype):
    if vtype in _SCALARS:
        fmt = _SCALARS[vtype]
        return struct.unpack_from(fmt, buf, off)[0], off + struct.calcsize(fmt)
    if vtype == 8:
        return _read_string(buf, off)
    if vtype == 9:
        sub, n = struct.unpack_from("<IQ", buf, off)
        off += 12
        if sub in _SCALARS:  # numeric arrays in one read
            dt = np.dtype(_SCALARS[sub])
            vals = np.frombuffer(buf, dt, n, off).tolist()
            return vals, off + n * dt.itemsize
        out = []
        for _ in range(n):
            v, off = _read_value(buf, off, sub)
            out.append(v)
        return out, off
    raise ValueError(f"GGUF: unknown metadata value type {vtype} at byte {off}")


def open_gguf(path: str) -> GGUFFile:
    """Parse the header of a GGUF file and memory-map it (little-endian GGUF v2/v3)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"path: GGUF file {path!r} not found")
    mm = np.memmap(path, np.uint8, mode="r")
    buf = memoryview(mm)
    if bytes(buf[:4]) != b"GGUF":
        raise ValueError(f"path: {path!r} is not a GGUF file (magic {bytes(buf[:4])!r})")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
    if version not in (2, 3):
        raise ValueError(f"path: GGUF version {version} is not supported (2 or 3)")
    off, meta, mtypes = 24, {}, {}
    for _ in range(n_kv):
        key, off = _read_string(buf, off)
        vtype, = struct.unpack_from("<I", buf, off)
        mtypes[key] = (vtype, struct.unpack_from("<I", buf, off + 4)[0] if vtype == 9 else None)
        meta[key], off = _read_value(buf, off + 4, vtype)
    infos = []
    for _ in range(n_tensors):
        name, off = _read_string(buf, off)
        nd, = struct.unpack_from("<I", buf, off)
        dims = struct.unpack_from(f"<{nd}Q", buf, off + 4)
        gtype, toff = struct.unpack_from("<IQ", buf, off + 4 + 8 * nd)
        off += 4 + 8 * nd + 12
        infos.append((name, gtype, tuple(reversed(dims)), toff))
    align = int(meta.get("general.alignment", 32))
    start = (off + align - 1) // align * align
    tensors = {n: TensorInfo(n, t, s, start + o) for n, t, s, o in infos}
    return GGUFFile(path, meta, tensors, mm, mtypes)


def raw_tensor(f: GGUFFile, name: str) -> np.ndarray:
    """The stored bytes of a tensor as a read-only view of the map: uint8 (rows, bytes per row) for
    block types, else the float array (f32; f16 / bf16 as uint16 bits for bf16)."""
    if name not in f.tensors:
        raise KeyError(f"name: no tensor {name!r} in {f.path!r}")
    t = f.tensors[name]
    if t.ggml_type not in GGML_TYPES:
        raise ValueError(f"{name}: ggml type {t.ggml_type} is not supported (refquant dequantizes {sorted(TYPE_IDS)})")
    tname, bs, nb = GGML_TYPES[t.ggml_type]
    rows, width = int(np.prod(t.shape[:-1], dtype=np.int64)), t.shape[-1]
    nbytes = rows * width // bs * nb
    view = f.data[t.offset: t.offset + nbytes]
    if tname == "f32":
        return view.view("<f4").reshape(t.shape)
    if tname in ("f16", "bf16"):
        return view.view("<f2" if tname == "f16" else "<u2").reshape(t.shape)
    return view.reshape(t.shape[:-1] + (width // bs * nb,))


def tensor(f: GGUFFile, name: str, rows: ArrayLike | None = None) -> np.ndarray:
    """One tensor dequantized to float32, shape as stored ((out, in) for a matrix); ``rows`` (an index
    array) reads only those rows — the embedding of a few tokens without the whole table."""
    t = f.tensors.get(name)
    raw = raw_tensor(f, name)
    if rows is not None:
        raw = raw[np.asarray(rows)]
    tname = GGML_TYPES[t.ggml_type][0]
    if tname == "f32":
        return np.array(raw, np.float32)
    if tname == "f16":
        return raw.astype(np.float32)
    if tname == "bf16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if tname == "mxfp4":
        return mx.ggml_mxfp4_dequantize(np.asarray(raw))
    return ggml.dequantize(np.asarray(raw), tname)


def _f32(v) -> float:
    # GGUF stores these as float32: the shortest decimal that rounds to it (1e-5f -> 1e-05, not 9.9999997e-06)
    return float(repr(np.float32(v)).removeprefix("np.float32(").removesuffix(")"))


def config(f: GGUFFile) -> LlamaConfig:
    """The :class:`LlamaConfig` of a ``llama``-architecture file, from its metadata."""
    m = f.metadata
    arch = m.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{f.path!r}: architecture {arch!r} is not supported (expected 'llama')")
    n_embd, n_head = m["llama.embedding_length"], m["llama.attention.head_count"]
    vocab = m.get("llama.vocab_size", len(m.get("tokenizer.ggml.tokens", ())) or f.tensors["token_embd.weight"].shape[0])
    return LlamaConfig(vocab_size=int(vocab), context_length=int(m["llama.context_length"]),
                       n_layer=int(m["llama.block_count"]), n_embd=int(n_embd), n_ff=int(m["llama.feed_forward_length"]),
                       n_head=int(n_head), n_kv_head=int(m.get("llama.attention.head_count_kv", n_head)),
                       rope_base=_f32(m.get("llama.rope.freq_base", 10000.0)),
                       rope_dim=int(m.get("llama.rope.dimension_count", n_embd // n_head)),
                       rope_pairs="adjacent", norm_eps=_f32(m["llama.attention.layer_norm_rms_epsilon"]))


def load_params(path: str, n_layer: int | None = None) -> tuple[dict, LlamaConfig]:
    """``(params, config)``: every tensor dequantized (or only the first ``n_layer`` blocks, and the
    config says so). The whole model in float32 — see :func:`iter_blocks` for the streaming path."""
    f = open_gguf(path)
    cfg = config(f)
    if n_layer is not None:
        if not 0 < n_layer <= cfg.n_layer:
            raise ValueError(f"n_layer must be in [1, {cfg.n_layer}], got {n_layer}")
        cfg = replace(cfg, n_layer=n_layer)
    keep = [n for n in f.tensors if not n.startswith("blk.") or int(n.split(".")[1]) < cfg.n_layer]
    return {n: tensor(f, n) for n in keep}, cfg


def iter_blocks(f: GGUFFile, n_layer: int | None = None) -> Iterator:
    """Yield ``(i, params of block i)`` one block at a time, dequantized when reached."""
    for i in range(config(f).n_layer if n_layer is None else n_layer):
        yield i, {n: tensor(f, n) for n in block_names(i)}


def forward_streamed(path: str, idx: ArrayLike, *, n_layer: int | None = None, linear: Callable | None = None,
                     tap: Callable | None = None, on_block: Callable | None = None, head_rows: int =
                     8192) -> np.ndarray:
    """Logits (B, T, V) of the file's model, holding one block's weights at a time.

    The same operations as ``models.llama.forward`` on :func:`load_params`: equal up to the output
    projection, which is applied ``head_rows`` vocabulary rows at a time (BLAS then blocks the sums
    differently: ~1e-6 relative; with a ``linear`` hook the head is one product and the logits are
    identical). The embedding reads only the rows of ``idx``. ``on_block(i, params)`` is called after block i has run, before its weights are
    dropped (a calibrator or quantizer hooks in there).
    """
    f = open_gguf(path)
    cfg = config(f)
    if n_layer is not None:
        cfg = replace(cfg, n_layer=n_layer)
    idx = np.asarray(idx)
    uniq, inv = np.unique(idx, return_inverse=True)
    x = embed({"token_embd.weight": tensor(f, "token_embd.weight", rows=uniq)}, inv.reshape(idx.shape))
    if tap is not None:
        tap("res", x)
    for i, bp in iter_blocks(f, cfg.n_layer):
        x, _ = block(bp, i, x, cfg, linear=linear, tap=tap)
        if on_block is not None:
            on_block(i, bp)
        del bp
    name = "output.weight" if "output.weight" in f.tensors else "token_embd.weight"
    V = f.tensors[name].shape[0]
    norm = {"output_norm.weight": tensor(f, "output_norm.weight")}
    if linear is not None:  # a hook sees the head once, whole, as in the loaded model
        return head(dict(norm, **{"output.weight": tensor(f, name)}), x, cfg, linear=linear)
    out = np.empty(x.shape[:-1] + (V,), np.float32)
    for r0 in range(0, V, head_rows):
        rows = np.arange(r0, min(V, r0 + head_rows))
        out[..., rows] = head(dict(norm, **{"output.weight": tensor(f, name, rows=rows)}), x, cfg)
    return out


# ---------------------------------------------------------------- writing
def _gguf():
    if importlib.util.find_spec("gguf") is None:
        raise ImportError('writing GGUF needs the gguf package: pip install "refquant[llm]"')
    import gguf
    return gguf


def write_gguf(path: str, params: dict, cfg: LlamaConfig, *, types: dict | None = None, tokenizer: dict | None = None,
               raw: dict | None = None, name: str = "refquant synthetic llama", metadata: dict | None = None) -> None:
    """Write a ``llama``-architecture GGUF with the ``gguf`` package's writer.

    ``params``: float arrays named as in :mod:`refquant.models.llama` (GGUF names), stored with
    ``types[name]`` ∈ {"f32", "f16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_K" … "q6_K", "iq4_nl", "iq4_xs",
    "mxfp4"} (default "f32"), quantized by :func:`refquant.formats.ggml.quantize` /
    :func:`refquant.formats.mx.ggml_mxfp4_quantize` (ggml's reference quantizers). ``raw``: tensors to copy
    byte for byte, ``name -> (ggml type id, stored bytes or array, shape)`` (see :func:`truncate_gguf`).
    ``tokenizer``: metadata to add, GGUF key -> value (e.g. ``tokenizer.ggml.tokens``); the value type
    is inferred by the writer (lists of str, int → int32, float → float32; ints → uint32).
    ``metadata``: key/value pairs copied with their GGUF types, ``key -> (value, (value type, array
    element type or None))`` — e.g. ``{k: (f.metadata[k], f.metadata_types[k])}`` of a :class:`GGUFFile`;
    keys the writer already set from ``cfg`` and ``name`` are skipped (theirs win).
    """
    gguf = _gguf()
    if cfg.rope_pairs != "adjacent":
        raise ValueError("cfg: GGUF llama files use adjacent-pair RoPE; permute q/k (models.llama.permute_qk) first")
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(name)
    w.add_context_length(cfg.context_length)
    w.add_embedding_length(cfg.n_embd)
    w.add_block_count(cfg.n_layer)
    w.add_feed_forward_length(cfg.n_ff)
    w.add_head_count(cfg.n_head)
    w.add_head_count_kv(cfg.n_kv_head)
    w.add_rope_freq_base(cfg.rope_base)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_rope_dimension_count(cfg.rope_dim)
    written = set(w.kv_data[0])
    for key, (val, (vtype, sub)) in (metadata or {}).items():
        if key not in written and not (vtype == 9 and len(val) == 0):
            w.add_key_value(key, val, gguf.GGUFValueType(vtype), None if sub is None else gguf.GGUFValueType(sub))
    for key, val in (tokenizer or {}).items():
        if isinstance(val, (list, tuple)):
            w.add_array(key, list(val))
        elif isinstance(val, str):
            w.add_string(key, val)
        elif isinstance(val, bool):
            w.add_bool(key, val)
        elif isinstance(val, int):
            w.add_uint32(key, val)
        else:
            w.add_float32(key, float(val))
    types = types or {}
    unknown = set(types) - set(params)
    if unknown:
        raise ValueError(f"types: no parameters named {sorted(unknown)}")
    for n, v in params.items():
        qt = types.get(n, "f32")
        if qt not in _WRITABLE:
            raise ValueError(f"types[{n!r}]: unknown type {qt!r}; expected f32, f16 or one of {_WRITABLE[2:]}")
        a = np.asarray(v, np.float32)
        if qt == "f32":
            w.add_tensor(n, a)
        elif qt == "f16":
            w.add_tensor(n, a.astype(np.float16))
        else:
            data = mx.ggml_mxfp4_quantize(a) if qt == "mxfp4" else ggml.quantize(a, qt)
            w.add_tensor(n, data, raw_dtype=gguf.GGMLQuantizationType(TYPE_IDS[qt]))
    for n, (tid, data, shape) in (raw or {}).items():
        data = np.ascontiguousarray(data)
        if data.dtype == np.uint8 and GGML_TYPES[tid][1] > 1:
            w.add_tensor(n, data, raw_dtype=gguf.GGMLQuantizationType(tid))
        else:
            w.add_tensor(n, data.reshape(shape), raw_dtype=gguf.GGMLQuantizationType(tid))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def truncate_gguf(src: str, dst: str, n_layer: int) -> LlamaConfig:
    """Copy the first ``n_layer`` blocks of a GGUF (bytes unchanged), the embedding, the output norm and
    head, and the tokenizer metadata: a smaller model for fast tests. Returns its config."""
    f = open_gguf(src)
    cfg = config(f)
    if not 0 < n_layer <= cfg.n_layer:
        raise ValueError(f"n_layer must be in [1, {cfg.n_layer}], got {n_layer}")
    cfg = replace(cfg, n_layer=n_layer)
    keep = [n for n in f.tensors if not n.startswith("blk.") or int(n.split(".")[1]) < n_layer]
    raw = {}
    for n in keep:
        t = f.tensors[n]
        data = raw_tensor(f, n)
        if GGML_TYPES[t.ggml_type][0] == "f16":
            data = data.view(np.float16)
        raw[n] = (t.ggml_type, data, t.shape)
    tok = {k: v for k, v in f.metadata.items() if k.startswith("tokenizer.")}
    write_gguf(dst, {}, cfg, tokenizer=tok, raw=raw, name=f"{f.metadata.get('general.name', 'model')} (first {n_layer} blocks)")
    return cfg
