"""The format registry: one bit-accounting, checked against hand counts and against every tensor it returns."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from refquant.formats import registry
from refquant.formats.registry import FORMAT_NAMES, bits_per_weight, get_format, quantize, storage_bits

# Hand counts. n = rows * K weights; scales are float32 (32 bits).
HAND = [
    # int4 group 128 on (256, 512): 256*512*4 codes + 256*(512/128) scales * 32 = 524288 + 32768
    ("int4", (256, 512), dict(group_size=128), 557056),
    # int8 per row, symmetric (no zero point): 10*100*8 + 10*32 = 8000 + 320
    ("int8", (10, 100), {}, 8320),
    # int4 affine groups of 32 on (2, 64): 512 codes*... 2*64*4 = 512, 4 groups: 4*32 scales + 4*4 zero points
    ("int4", (2, 64), dict(group_size=32, symmetric=False), 512 + 128 + 16),
    # int3 per tensor: 5*7*3 + one scale
    ("int3", (5, 7), dict(group_size=None), 105 + 32),
    # int4 groups of 32 with a partial last group: K = 40 -> 2 groups per row; 3*40*4 + 6*32
    ("int4", (3, 40), dict(group_size=32), 480 + 192),
    # nf4 on 4096 weights: 4*4096 + 64 blocks * 32 = 16384 + 2048 (4.5 bits)
    ("nf4", (64, 64), {}, 18432),
    # nf4 double quant: 64 int8 absmax codes + one float32 scale per 256 of them + one float32 offset
    ("nf4", (64, 64), dict(double_quant=True), 16384 + 512 + 32 + 32),
    # fp4 e2m1 groups of 32 on (4, 64): 256*4 + 8*32 (5.0 bits)
    ("fp4_e2m1", (4, 64), {}, 1024 + 256),
    # fp8 e4m3 per row on (3, 10): 30*8 + 3*32
    ("fp8_e4m3", (3, 10), {}, 240 + 96),
    ("fp8_e5m2", (3, 10), dict(group_size=5), 240 + 6 * 32),
    # k-means 16 on 256 weights: 4-bit indices + 16 float32 centroids
    ("kmeans", (16, 16), {}, 1024 + 512),
    # log2 4-bit on 16 weights: 4 bits each + the 8-bit exponent e_max
    ("log2", (2, 8), {}, 64 + 8),
    # MX: (3, 70) -> 3 rows * ceil(70/32) = 9 E8M0 bytes; mxfp4 4-bit codes: 210*4 + 9*8
    ("mxfp4", (3, 70), {}, 840 + 72),
    ("mxfp8_e4m3", (2, 64), {}, 1024 + 4 * 8), ("mxfp8_e5m2", (1, 32), {}, 256 + 8),
    ("mxfp6_e2m3", (1, 32), {}, 192 + 8), ("mxfp6_e3m2", (1, 32), dict(scale_rounding="ceil"), 192 + 8),
    ("mxint8", (1, 32), {}, 256 + 8),
    # NVFP4 on (2, 40): 80*4 codes + 2*ceil(40/16)=6 E4M3 bytes + one float32 tensor scale
    ("nvfp4", (2, 40), {}, 320 + 48 + 32),
    # ggml: (2, 64) = 4 blocks of 32; q4_0 blocks are 18 bytes (fp16 d + 16 bytes of nibbles)
    ("q4_0", (2, 64), {}, 4 * 18 * 8),
    ("q8_0", (1, 32), {}, 34 * 8),
    ("q4_1", (1, 32), {}, 20 * 8),
    ("q5_0", (1, 32), {}, 22 * 8),
    ("q5_1", (1, 32), {}, 24 * 8),
    # k-quants: (2, 512) = 4 super-blocks of 256; q4_K blocks are 144 bytes (fp16 d, dmin, 12 bytes of 6-bit
    # scales and mins, 128 bytes of nibbles): 4.5 bits; q6_K 210 bytes: 6.5625 bits
    ("q4_K", (2, 512), {}, 4 * 144 * 8), ("q6_K", (1, 256), {}, 210 * 8), ("q2_K", (1, 256), {}, 84 * 8),
    ("q3_K", (1, 256), {}, 110 * 8), ("q5_K", (1, 256), {}, 176 * 8), ("iq4_xs", (1, 256), {}, 136 * 8),
    ("iq4_nl", (1, 64), {}, 2 * 18 * 8),
    # ggml MXFP4: (2, 64) = 4 blocks of 32, 17 bytes each (one E8M0 byte + 16 bytes of nibbles): 4.25 bits
    ("ggml_mxfp4", (2, 64), {}, 4 * 17 * 8),
]


@pytest.mark.parametrize("name,shape,opts,bits", HAND, ids=[f"{h[0]}-{h[1]}-{h[2]}" for h in HAND])
def test_storage_bits_hand_counts(name, shape, opts, bits):
    assert storage_bits(name, shape, **opts) == bits
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    t = quantize(w, name, **opts)
    assert t.storage_bits() == bits
    assert t.shape == shape
    assert t.dequantize().shape == shape


def test_every_format_has_a_hand_count():
    assert {h[0] for h in HAND} | {f"int{b}" for b in range(2, 9)} == set(FORMAT_NAMES)


def test_bits_per_weight_of_the_well_known_formats():
    assert bits_per_weight("q8_0", (4, 64)) == 8.5  # 34 bytes / 32 weights
    assert bits_per_weight("q4_0", (4, 64)) == 4.5
    assert bits_per_weight("q5_1", (4, 64)) == 6.0
    assert bits_per_weight("q4_K", (4, 256)) == 4.5 and bits_per_weight("q6_K", (4, 256)) == 6.5625
    assert bits_per_weight("int4", (8, 1024), group_size=128) == 4.25
    assert bits_per_weight("mxfp4", (8, 1024)) == 4.25  # OCP MX: 4 + 8/32
    # QLoRA §3: NF4 with double quantization costs 4 + 8/64 + 32/(64*256) = 4.127 bits
    assert bits_per_weight("nf4", (256, 4096), double_quant=True) == pytest.approx(4 + 8 / 64 + 32 / (64 * 256) + 32 / (256 * 4096))


@st.composite
def _case(draw):
    name = draw(st.sampled_from(FORMAT_NAMES))
    rows = draw(st.integers(1, 5))
    m = get_format(name).k_multiple
    k = m * draw(st.integers(1, 2 if m > 32 else 4)) if m > 1 else draw(st.integers(1, 70))
    opts = {}
    if "group_size" in get_format(name).defaults:
        opts["group_size"] = draw(st.sampled_from([None, 0, 1, 7, 32]))
    if "symmetric" in get_format(name).defaults:
        opts["symmetric"] = draw(st.booleans())
    if name == "nf4":
        opts["double_quant"] = draw(st.booleans())
    return name, (rows, k), opts


@given(_case(), st.integers(0, 2**32 - 1))
def test_storage_bits_equals_the_tensors_own_count(case, seed):
    name, shape, opts = case
    w = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    t = quantize(w, name, **opts)
    if name == "kmeans":  # an upper bound: fewer distinct values than 2^bits store a smaller codebook
        assert t.storage_bits() <= storage_bits(name, shape, **opts)
    else:
        assert t.storage_bits() == storage_bits(name, shape, **opts)
    assert np.all(np.isfinite(t.dequantize()))


def test_quantize_does_not_mutate_and_reconstructs():
    w = np.random.default_rng(1).standard_normal((4, 256)).astype(np.float32)
    w0 = w.copy()
    for name in FORMAT_NAMES:
        t = quantize(w, name)
        assert np.array_equal(w, w0)
        err = np.abs(t.dequantize() - w).max()
        assert err < np.abs(w).max(), name  # every format keeps the sign and rough magnitude


@pytest.mark.parametrize("call,match", [
    (lambda: quantize(np.ones((2, 32)), "int9"), "format: unknown 'int9'"),
    (lambda: quantize(np.ones((2, 32)), "int4", group=32), "group: not an option of format 'int4'"),
    (lambda: quantize(np.ones((2, 32)), "q4_0", group_size=32), "group_size: not an option of format 'q4_0'"),
    (lambda: quantize(np.ones(32), "int4"), "w: a weight must be 2-D"),
    (lambda: quantize(np.ones((2, 30)), "q4_0"), "multiple of 32"),
    (lambda: quantize(np.array([[1.0, np.nan]]), "int4"), "w contains NaN"),
    (lambda: quantize(np.array([[1.0, np.inf]]), "int4"), "w must be finite"),
    (lambda: quantize(np.ones((2, 32)), "int4", group_size=-1), "group_size must be"),
    (lambda: storage_bits("int4", (0, 5)), "shape: a weight must be 2-D"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_table_is_read_only():
    with pytest.raises(TypeError):
        registry.FORMATS["int4"] = None
