"""Shared hypothesis strategies: float data, ranges, scales, granularities."""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refquant.core.ranges import QRange

BITS = st.integers(2, 16)
qranges = st.builds(QRange, BITS, st.booleans(), st.booleans())
finite32 = st.floats(-2.0**20, 2.0**20, allow_nan=False, allow_infinity=False, width=32)
scales32 = st.floats(2.0**-13, 2.0**10, allow_nan=False, allow_infinity=False, width=32)
modes = st.sampled_from(["half_even", "half_away", "half_up", "floor"])


def arrays(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=6), elements=finite32, dtype=np.float32):
    return hnp.arrays(dtype, shape, elements=elements)


@st.composite
def data_with_zero_point(draw, qr=qranges):
    r = draw(qr)
    x = draw(arrays())
    s = np.float32(draw(scales32))
    z = draw(st.integers(r.qmin, r.qmax))
    return x, s, z, r


@st.composite
def granular_case(draw):
    """x with per-tensor, per-channel or blocked scale / zero point of the right shape."""
    r = draw(qranges)
    x = draw(arrays(hnp.array_shapes(min_dims=1, max_dims=3, max_side=7)))
    kind = draw(st.sampled_from(["tensor", "channel", "block"]))
    axis, block = None, 0
    if kind != "tensor":
        axis = draw(st.integers(-x.ndim, x.ndim - 1))
    if kind == "block":
        block = draw(st.integers(1, 8))
    from refquant.core.granularity import param_shape
    shape = param_shape(x.shape, axis, block)
    s = draw(hnp.arrays(np.float32, shape, elements=scales32))
    z = draw(hnp.arrays(np.int64, shape, elements=st.integers(r.qmin, r.qmax)))
    return x, s, z, r, axis, block
