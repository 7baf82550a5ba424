"""Peak extra memory of ``registry.quantize`` per format, as a multiple of the input (issue 14).

tracemalloc sees every NumPy buffer; the peak during the call (the returned tensor included) is
divided by ``w.nbytes`` of a 512 x 1024 float32 matrix (2 MiB). The bounds are set from measurements
(``python benchmarks/bench_memory.py --rows 512 --cols 1024``) with a margin, so a format that goes
back to full-size float64 / int64 temporaries (17x before the chunked codebook path) fails here.
At 4096 x 4096 the same code measures lower: the per-chunk temporaries are a fixed ~1 MiB.
"""
import tracemalloc

import numpy as np
import pytest

from refquant.formats import registry

_UNIFORM = {f"int{b}": 1.0 for b in range(2, 9)}  # measured 0.50: int8 codes (0.25) + a float32 chunk buffer
_CODEBOOK = {name: 1.5 for name in ("nf4", "fp8_e4m3", "fp8_e5m2", "fp4_e2m1", "log2",  # measured 0.78-1.00
                                    "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4", "mxint8",
                                    "nvfp4")}  # measured 0.81-1.03
_GGML_LEGACY = {name: 1.5 for name in ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "ggml_mxfp4")}  # measured 0.52-0.89
_KQUANTS = {name: 2.0 for name in ("q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "iq4_nl", "iq4_xs")}  # measured 0.92-1.63
# (before chunking: 6.4-12.1): the bytes (0.14-0.21) + the search temporaries of one chunk of 2^16 values (~1.4 MiB)
_KMEANS = {"kmeans": 2.0}  # measured 1.68 (before: 14.0): the sorted copy (1.0) + the DP on 4096 summary points
BOUNDS = {**_UNIFORM, **_CODEBOOK, **_GGML_LEGACY, **_KQUANTS, **_KMEANS}


def _peak_ratio(w, name):
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        t = registry.quantize(w, name)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert t.shape == w.shape
    return (peak - base) / w.nbytes


@pytest.fixture(scope="module")
def w():
    return np.random.default_rng(0).standard_normal((512, 1024)).astype(np.float32)


def test_every_format_has_a_bound():
    assert set(BOUNDS) == set(registry.FORMAT_NAMES)


@pytest.mark.parametrize("name", registry.FORMAT_NAMES)
def test_peak_memory_within_bound(w, name):
    ratio = _peak_ratio(w, name)
    assert ratio <= BOUNDS[name], f"{name}: peak extra memory {ratio:.2f}x the input, bound {BOUNDS[name]}x"


def test_the_measure_sees_a_full_size_temporary(w):
    # the measure itself: a float64 copy of w is 2x its float32 size, and tracemalloc must see it
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        y = w.astype(np.float64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert y.nbytes == 2 * w.nbytes
    assert (peak - base) / w.nbytes >= 2.0
