"""Weight files: the safetensors reader / writer against hand-built bytes and the reference package's
recorded output; .npz / .npy reading; the quantized layout rebuilt bit-exactly for every registry format."""
import json
import os
import struct

import numpy as np
import pytest
from hypothesis import example, given, strategies as st
from hypothesis.extra import numpy as hnp

from refquant.formats import registry
from refquant.io import safetensors as sft
from refquant.io.weights import (MANIFEST, iter_weights, load_quantized, read_weights, save_quantized, weight_names,
                                 write_weights)

DATA = os.path.join(os.path.dirname(__file__), "data")


def _raw(path, header: dict, data: bytes, pad=b""):
    text = json.dumps(header).encode() + pad
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return str(path)


# -- safetensors: hand-built files -------------------------------------------------------------------

def test_read_hand_built_file(tmp_path):
    # two float32 little-endian (1.0 = 0x3F800000, -2.5 = 0xC0200000) then three int16 (1, -2, 300)
    data = struct.pack("<2f", 1.0, -2.5) + struct.pack("<3h", 1, -2, 300)
    p = _raw(tmp_path / "a.safetensors", {"__metadata__": {"k": "v"},
                                          "f": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                          "i": {"dtype": "I16", "shape": [3, 1], "data_offsets": [8, 14]}}, data)
    out = sft.read_safetensors(p)
    assert out["f"].dtype == np.float32 and out["f"].tolist() == [1.0, -2.5]
    assert out["i"].dtype == np.int16 and out["i"].tolist() == [[1], [-2], [300]]
    assert not out["f"].flags.writeable  # a read-only map of the file
    assert sft.read_safetensors_header(p)[1] == {"k": "v"}
    assert {k: v.tolist() for k, v in sft.read_safetensors(p, mmap=False).items()} == {k: v.tolist() for k, v in out.items()}


def test_bf16_widens_by_a_16_bit_shift(tmp_path):
    # bf16 bits -> float32 bits << 16: 0x3FC0 -> 0x3FC00000 = 1.5; 0xC040 -> -3.0; 0x7F80 -> +inf;
    # 0x0001 -> 0x00010000 = 2^-133 (a subnormal, exact); 0x8000 -> -0.0
    bits = [0x3FC0, 0xC040, 0x7F80, 0x0001, 0x8000]
    p = _raw(tmp_path / "b.safetensors", {"x": {"dtype": "BF16", "shape": [5], "data_offsets": [0, 10]}},
             struct.pack("<5H", *bits))
    x = sft.read_safetensors(p)["x"]
    assert x.dtype == np.float32
    assert x[:3].tolist() == [1.5, -3.0, np.inf] and x[3] == np.float32(2.0 ** -133) and np.signbit(x[4]) and x[4] == 0


def test_written_bytes_follow_the_format(tmp_path):
    p = tmp_path / "w.safetensors"
    sft.write_safetensors(str(p), {"x": np.int16([1, -2])}, {"m": "1"})
    header = b'{"__metadata__":{"m":"1"},"x":{"dtype":"I16","shape":[2],"data_offsets":[0,4]}}'
    header += b" " * (-(8 + len(header)) % 8)  # padded so the data starts 8-byte aligned
    assert p.read_bytes() == struct.pack("<Q", len(header)) + header + struct.pack("<2h", 1, -2)


def test_big_endian_input_is_written_little_endian(tmp_path):
    p = str(tmp_path / "be.safetensors")
    sft.write_safetensors(p, {"x": np.array([1.0, 2.0], dtype=">f4")})
    assert sft.read_safetensors(p)["x"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("header, data, match", [
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4, "needs 8"),
    ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8, "cover 4 bytes of a 8"),
    ({"x": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
      "y": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]}}, b"\0" * 3, "overlaps"),
    ({"x": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}, b"\0" * 2, "gap"),
    ({"x": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\0", "not supported"),
    ({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "not valid"),
    ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4, "not valid"),
    ({"x": {"dtype": "F32", "shape": [1]}}, b"\0" * 4, "expected keys"),
    ({"__metadata__": {"a": 1}}, b"", "strings to strings"),
])
def test_bad_headers_are_refused_before_any_read(tmp_path, header, data, match):
    p = _raw(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(ValueError, match=match):
        sft.read_safetensors(p)


_ENTRY = b'"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}'


@pytest.mark.parametrize("raw, match", [
    (b"\x05\x00\x00", "not a safetensors file"),  # shorter than the 8-byte length
    (struct.pack("<Q", 10 ** 9) + b"{}", "not a safetensors file"),  # header longer than the file
    (struct.pack("<Q", 4) + b"[1] ", "not a JSON object"),
    (struct.pack("<Q", 4) + b"{x:1", "not JSON"),
    (struct.pack("<Q", 2) + b"\xff\xfe", "not UTF-8"),
    (struct.pack("<Q", 2 * len(_ENTRY) + 3) + b"{" + _ENTRY + b"," + _ENTRY + b"}", "duplicate"),
])
def test_malformed_files_are_refused(tmp_path, raw, match):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(raw)
    with pytest.raises(ValueError, match=match):
        sft.read_safetensors(str(p))


def test_writer_refuses_what_safetensors_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match=r"arrays\['s'\]"):
        sft.write_safetensors(str(tmp_path / "x.safetensors"), {"s": np.array(["text"])})
    with pytest.raises(ValueError, match="metadata"):
        sft.write_safetensors(str(tmp_path / "x.safetensors"), {}, {"k": 1})
    assert sft.dtype_name(np.float32) == "F32" and sft.dtype_name(">i2") == "I16" and sft.dtype_name("U4") is None


@given(hnp.arrays(st.sampled_from([np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
                                    np.uint64, np.uint32, np.uint16, np.uint8, np.bool_]),
                  hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
@example(a=np.array(0.0))  # a 0-d array: found by hypothesis (a byte view of it fails)
def test_write_read_round_trip(tmp_path_factory, a):
    p = str(tmp_path_factory.mktemp("rt") / "x.safetensors")
    sft.write_safetensors(p, {"a": a, "b": np.arange(3, dtype=np.uint8)})
    b = sft.read_safetensors(p)["a"]
    assert b.dtype == a.dtype and b.shape == a.shape
    assert b.tobytes() == a.tobytes()  # bit for bit, NaN payloads too


# -- safetensors: the reference implementation -------------------------------------------------------

def test_reads_a_file_written_by_the_reference_package():
    # recorded by tests/data/make_safetensors_oracle.py (safetensors 0.8.0 through torch 2.13.0)
    ours = sft.read_safetensors(os.path.join(DATA, "safetensors_oracle.safetensors"))
    with np.load(os.path.join(DATA, "safetensors_oracle.npz")) as z:
        assert set(z.files) == set(ours)
        for k in z.files:
            want, got = z[k], ours[k]
            assert got.shape == want.shape, k
            assert np.array_equal(got.astype(want.dtype), want, equal_nan=True), k
    assert ours["bf16"].dtype == np.float32 and ours["f16"].dtype == np.float16
    assert sft.read_safetensors_header(os.path.join(DATA, "safetensors_oracle.safetensors"))[1] == \
        {"producer": "safetensors 0.8.0"}


def test_the_reference_package_reads_our_files(tmp_path):
    stnp = pytest.importorskip("safetensors.numpy")
    arrays = {"f": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "h": np.float16([1, 2.5]),
              "i": np.arange(-3, 3, dtype=np.int64), "u": np.arange(5, dtype=np.uint16), "m": np.array([True, False]),
              "s": np.array(3.0), "e": np.zeros((0, 2), np.float32)}
    p = str(tmp_path / "ours.safetensors")
    sft.write_safetensors(p, arrays, {"k": "v"})
    theirs = stnp.load_file(p)
    assert set(theirs) == set(arrays)
    for k, v in arrays.items():
        assert theirs[k].dtype == v.dtype and np.array_equal(theirs[k], v), k
    stnp.save_file(arrays, str(tmp_path / "theirs.safetensors"))
    back = sft.read_safetensors(str(tmp_path / "theirs.safetensors"))
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in arrays.items())


# -- npz / npy / dispatch ----------------------------------------------------------------------------

def test_iter_weights_reads_every_kind(tmp_path):
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.int8([1, 2])
    np.savez(tmp_path / "w.npz", a=a, b=b)
    np.save(tmp_path / "single.npy", a)
    sft.write_safetensors(str(tmp_path / "w.safetensors"), {"a": a, "b": b})
    for f, names in [("w.npz", ["a", "b"]), ("single.npy", ["single"]), ("w.safetensors", None)]:
        path = str(tmp_path / f)
        got = dict(iter_weights(path))
        assert weight_names(path) == list(got) and (names is None or list(got) == names)
        assert np.array_equal(got[list(got)[0]], a)
    assert set(read_weights(str(tmp_path / "w.safetensors"))) == {"a", "b"}


def test_bad_weight_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        read_weights(str(tmp_path / "nope.npz"))
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ValueError, match="extension '.txt'"):
        read_weights(str(tmp_path / "w.txt"))
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        read_weights(str(tmp_path / "bad.npz"))
    (tmp_path / "bad.npy").write_text("not an npy")
    with pytest.raises(ValueError, match="not a readable .npy"):
        read_weights(str(tmp_path / "bad.npy"))
    with pytest.raises(ValueError, match="reserved"):
        write_weights(str(tmp_path / "o.npz"), {MANIFEST: np.zeros(1)})


# -- the quantized layout ----------------------------------------------------------------------------

W = np.random.default_rng(7).standard_normal((8, 64)).astype(np.float32)
W256 = np.random.default_rng(8).standard_normal((8, 256)).astype(np.float32)  # k-quants: rows of 256
CASES = [(name, {}) for name in registry.FORMAT_NAMES] + [
    ("int4", {"symmetric": False, "group_size": 32}), ("int3", {"group_size": None, "calibration": "mse"}),
    ("nf4", {"double_quant": True, "block_size": 32}), ("kmeans", {"bits": 3}), ("fp8_e5m2", {"group_size": 16}),
    ("mxfp6_e3m2", {"scale_rounding": "rceil", "element_rounding": "half_away"})]


@pytest.mark.parametrize("ext", ["npz", "safetensors"])
@pytest.mark.parametrize("fmt, opts", CASES, ids=[f"{f}-{o}" for f, o in CASES])
def test_load_quantized_rebuilds_every_format_bit_exactly(tmp_path, fmt, opts, ext):
    w = W256 if registry.FORMATS[fmt].k_multiple > W.shape[1] else W
    t = registry.quantize(w, fmt, **opts)
    bias = np.linspace(0, 1, 8)
    p = str(tmp_path / f"q.{ext}")
    shape = (8, 4, w.shape[1] // 4)
    save_quantized(p, {"layer.w": t}, format=fmt, options=opts, shapes={"layer.w": shape}, kept={"layer.b": bias})
    q = load_quantized(p)
    r = q.tensors["layer.w"]
    assert type(r) is type(t) and r.shape == t.shape
    want, got = t.dequantize(), r.dequantize()
    assert got.dtype == want.dtype and np.array_equal(got.view(np.uint8), want.view(np.uint8))  # bit for bit
    assert r.storage_bits() == t.storage_bits()
    assert q.dequantize("layer.w").shape == shape and q.format == fmt and q.options == opts
    assert np.array_equal(q.kept["layer.b"], bias)


def test_layout_of_a_hand_computed_int8_row(tmp_path):
    # int8 per row, symmetric, min-max: scale = max|w| / 127 = 3/127; codes = rint(w / scale) =
    # rint([0, 42.33, 84.67, 127]) = [0, 42, 85, 127]; no zero point is stored (symmetric)
    t = registry.quantize(np.float32([[0, 1, 2, 3]]), "int8")
    p = str(tmp_path / "q.npz")
    save_quantized(p, {"w": t}, format="int8", options={})
    with np.load(p) as z:
        assert sorted(z.files) == [MANIFEST, "w.codes", "w.scale"]
        assert z["w.codes"].dtype == np.int8 and z["w.codes"].tolist() == [[0, 42, 85, 127]]
        assert z["w.scale"].shape == (1,) and np.isclose(z["w.scale"][0], 3 / 127, rtol=1e-7)
        m = json.loads(str(z[MANIFEST]))
    entry = m["arrays"]["w"]
    assert m["format"] == "int8" and entry["kind"] == "uniform" and entry["shape"] == [1, 4]
    assert entry["parts"] == {"codes": "w.codes", "scale": "w.scale"} and entry["qrange"] == [8, True, False, None]


def test_affine_writes_zero_points_and_ggml_writes_blocks(tmp_path):
    p = str(tmp_path / "q.safetensors")
    save_quantized(p, {"a": registry.quantize(W, "int4", symmetric=False), "g": registry.quantize(W, "q4_0")},
                   format="mixed", options={})
    arrays = sft.read_safetensors(p)
    assert arrays["a.zero_point"].shape == (8,) and arrays["a.codes"].dtype == np.int8
    assert arrays["g.blocks"].dtype == np.uint8 and arrays["g.blocks"].shape == (8, 2 * 18)  # 2 blocks of 18 bytes


def test_save_quantized_refuses_colliding_names(tmp_path):
    t = registry.quantize(W, "int8")
    with pytest.raises(ValueError, match="'w.codes' is used twice"):
        save_quantized(str(tmp_path / "q.npz"), {"w": t}, format="int8", options={}, kept={"w.codes": np.zeros(2)})


def test_load_quantized_needs_the_manifest(tmp_path):
    np.savez(tmp_path / "plain.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="no __refquant__"):
        load_quantized(str(tmp_path / "plain.npz"))
