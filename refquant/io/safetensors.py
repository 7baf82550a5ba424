"""The safetensors file format, read and written in NumPy.

The safetensors reader and writer are written here (about 80 lines) rather than taken from the
``safetensors`` package: refquant has no run-time dependency beyond NumPy, SciPy, scikit-learn and
matplotlib; the package's NumPy API reads a whole file into memory and has no bfloat16 (NumPy has
none); and the format is small enough to read beside its specification. The package is the test
oracle instead (``tests/test_io_weights.py``: files written by each are read by the other).

The format (huggingface/safetensors, ``README.md`` "Format"; checks as its Rust ``SafeTensors::validate``)::

    8 bytes     N, unsigned little-endian u64: the header's length (at most 100 MB)
    N bytes     UTF-8 JSON object {name: {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
                ..., "__metadata__": {str: str} (optional)}, padded with spaces
    the rest    the tensors' bytes, little-endian, C order; offsets relative to the start of this part

Every offset is checked before use: ``end − begin`` must equal ``prod(shape) · itemsize`` and the
ranges must tile the data part exactly (sorted, no gap, no overlap, ending at the end of the file);
duplicate names are refused. dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U64 U32 U16 U8 BOOL.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from ..core._types import DTypeLike

MAX_HEADER = 100_000_000  # bytes, as the Rust reference implementation
# safetensors dtype name -> little-endian NumPy dtype (BF16 is read as uint16, then widened)
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
          "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
_ST_NAME = {np.dtype(v).newbyteorder("="): k for k, v in DTYPES.items() if k != "BF16"}


def dtype_name(dtype: DTypeLike) -> str | None:
    """The safetensors name of a NumPy dtype (``float32`` -> ``"F32"``), None if safetensors cannot store it."""
    return _ST_NAME.get(np.dtype(dtype).newbyteorder("="))


def read_safetensors_header(path: str) -> tuple:
    """``(entries, metadata, data_start)`` of a safetensors file, every entry checked (module docstring)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 2 <= n <= min(MAX_HEADER, size - 8):
            raise ValueError(f"{path!r}: not a safetensors file (header length {n}, file size {size})")
        raw = f.read(n)

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{path!r}: duplicate name in the safetensors header")
        return dict(pairs)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path!r}: the safetensors header is not UTF-8 JSON ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path!r}: the safetensors header is not JSON ({e.msg})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path!r}: the safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError(f"{path!r}: __metadata__ must map strings to strings")
    data_len, entries, spans = size - 8 - n, {}, []
    for name, e in header.items():
        bad = f"{path!r}: tensor {name!r}"
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{bad}: expected keys dtype, shape, data_offsets")
        if e["dtype"] not in DTYPES:
            raise ValueError(f"{bad}: dtype {e['dtype']!r} not supported (supported: {', '.join(DTYPES)})")
        shape, offs = e["shape"], e["data_offsets"]
        ints = lambda v: isinstance(v, list) and all(type(i) is int and i >= 0 for i in v)  # noqa: E731
        if not ints(shape) or not ints(offs) or len(offs) != 2 or offs[0] > offs[1]:
            raise ValueError(f"{bad}: shape {shape!r} or data_offsets {offs!r} is not valid")
        need = math.prod(shape) * np.dtype(DTYPES[e["dtype"]]).itemsize
        if offs[1] - offs[0] != need:
            raise ValueError(f"{bad}: data_offsets {offs} hold {offs[1] - offs[0]} bytes, {e['dtype']} {shape} needs {need}")
        entries[name] = (e["dtype"], tuple(shape), offs[0], offs[1])
        spans.append((offs[0], offs[1]))
    end = 0
    for b, e in sorted(spans):
        if b != end:
            raise ValueError(f"{path!r}: tensor data {'overlaps' if b < end else 'has a gap'} at byte {min(b, end)}")
        end = e
    if end != data_len:
        raise ValueError(f"{path!r}: the tensors cover {end} bytes of a {data_len}-byte data part")
    return entries, meta, 8 + n


def _bf16_to_f32(u16: np.ndarray) -> np.ndarray:
    return (u16.astype(np.uint32) << 16).view(np.float32)  # exact: bf16 is a float32's top 16 bits


def read_safetensors(path: str, *, mmap: bool = True) -> dict:
    """``{name: array}`` of a safetensors file: read-only memory-mapped views (``mmap=False``: copies);
    BF16 tensors come back as float32 copies."""
    entries, _, start = read_safetensors_header(path)
    if os.path.getsize(path) == start:
        buf = np.zeros(0, np.uint8)
    elif mmap:
        buf = np.memmap(path, dtype=np.uint8, mode="r", offset=start)
    else:
        buf = np.fromfile(path, dtype=np.uint8, offset=start)
    out = {}
    for name, (dt, shape, b, e) in entries.items():
        a = buf[b:e].view(DTYPES[dt]).reshape(shape)
        out[name] = _bf16_to_f32(a) if dt == "BF16" else a
    return out


def write_safetensors(path: str, arrays: dict, metadata: dict | None = None) -> None:
    """Write ``arrays`` (NumPy dtypes of :data:`DTYPES`) and ``metadata`` ({str: str}) as safetensors.

    As the reference writer: tensors sorted by decreasing item size (each stays aligned), then name;
    the header padded with spaces to a multiple of 8 bytes."""
    arrs = {}
    for k, v in arrays.items():
        a = np.asarray(v)
        if not isinstance(k, str) or k == "__metadata__" or a.dtype.newbyteorder("=") not in _ST_NAME:
            raise ValueError(f"arrays[{k!r}]: safetensors stores named arrays of {', '.join(_ST_NAME.values())}, got {a.dtype}")
        arrs[k] = a
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError("metadata: safetensors metadata maps strings to strings")
    order = sorted(arrs, key=lambda k: (-arrs[k].dtype.itemsize, k))
    header, pos = ({"__metadata__": dict(metadata)} if metadata else {}), 0
    for k in order:
        a = arrs[k]
        header[k] = {"dtype": _ST_NAME[a.dtype.newbyteorder("=")], "shape": list(a.shape), "data_offsets": [pos, pos + a.nbytes]}
        pos += a.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for k in order:
            a = arrs[k]
            f.write(np.ascontiguousarray(a, a.dtype.newbyteorder("<")).tobytes())
