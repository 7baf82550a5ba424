"""Loop twin of :func:`refquant.formats.mx.mx_quantize`: the OCP MX spec's steps, one block and one element
at a time, in exact fractions.

Per block of ``block_size`` values V along the last axis (the spec's conversion, §6.3)::

    X = 2^s,  s = floor(log2 amax(V)) − emax_elem              ("floor"; "ceil", "even", "rceil": mx.py)
    P_i = the finite element code nearest to V_i / X           (ties: even magnitude index, or away)

``_shared_exponent_ref`` computes s from ``frexp`` and a :class:`fractions.Fraction` significand; the codes
are chosen by comparing exact distances to every code of the element's sign. The vectorised
:func:`refquant.formats.mx.mx_quantize` must give the same codes and scales, byte for byte (tests/test_mx.py).

References
----------
OCP "Microscaling Formats (MX) Specification" v1.0 (2023), §5.3 (element types), §5.4.1 (E8M0),
§6.3 (conversion).
"""
from __future__ import annotations

from fractions import Fraction
import math

import numpy as np

from ..core._checks import choice
from ..core._types import ArrayLike
from .mx import ELEMENT_ROUNDING, F32, SCALE_RULES, ElementFormat, _as_f32, code_values, element_format


def _shared_exponent_ref(a: float, f: ElementFormat, rule: str) -> int:
    choice(rule, "scale_rounding", SCALE_RULES)
    if rule == "rceil":
        a = float(F32(a) / F32(f.max_normal))
    if a == 0:
        return -127
    k = math.frexp(a)[1] - 1  # floor(log2 a), exactly
    sig = Fraction(a) / Fraction(2) ** k  # in [1, 2)
    s = {"floor": k - f.emax, "ceil": k + (sig != 1) - f.emax, "rceil": k + (sig != 1),
         "even": k + (sig >= 2 - Fraction(1, 2 ** (f.mbits + 1))) - f.emax}[rule]
    if s > 127:
        raise ValueError(f"x: a block's amax needs the scale 2^{s}, beyond E8M0's largest 2^127")
    return max(s, -127)


def mx_quantize_ref(x: ArrayLike, elem: str = "fp4_e2m1", *, block_size: int = 32, scale_rounding: str = "floor",
                    element_rounding: str = "half_even") -> tuple[np.ndarray, np.ndarray]:
    """Loop twin of :func:`mx_quantize` along the last axis: per block, the spec's steps with exact fractions.

    Returns ``(codes, scales)``. Each element is the code, among all finite codes of its sign (int8: q ∈
    [−127, 127]), nearest to V_i / X; a tie goes to the code with even magnitude index (half_even) or the
    larger magnitude (half_away).
    """
    f = element_format(elem)
    choice(element_rounding, "element_rounding", ELEMENT_ROUNDING)
    xa = _as_f32(x)
    top = 1 << (f.bits - 1)  # the sign bit of a float code
    exact = {c: Fraction(float(v)) for c, v in enumerate(code_values(elem)) if np.isfinite(v)}
    if f.minifloat is None:
        exact.pop(0x80)  # q = -128 is never produced
    rows = xa.reshape(-1, xa.shape[-1])
    codes = np.zeros(rows.shape, np.uint8)
    scales = np.zeros((rows.shape[0], -(-rows.shape[1] // block_size)), np.uint8)
    for r, row in enumerate(rows):
        for j in range(scales.shape[1]):
            blk = [float(v) for v in row[j * block_size:(j + 1) * block_size]]
            s = _shared_exponent_ref(max(abs(v) for v in blk), f, scale_rounding)
            scales[r, j] = s + 127
            for i, v in enumerate(blk):
                t = Fraction(v) / Fraction(2) ** s
                cands = [c for c in exact if f.minifloat is None or (c & top) == (top if math.copysign(1, v) < 0 else 0)]
                dist = {c: abs(t - exact[c]) for c in cands}
                best = min(dist.values())
                near = sorted((c for c in cands if dist[c] == best), key=lambda c: abs(exact[c]))
                mag = [abs(exact[c]) * 64 if f.minifloat is None else c & (top - 1) for c in near]  # index of |value|
                if len(near) == 1 or element_rounding == "half_away":
                    pick = near[-1]
                else:  # a tie between two neighbours: the even magnitude index (mantissa LSB 0 / even q)
                    pick = near[[m % 2 for m in mag].index(0)]
                codes[r, j * block_size + i] = pick
    return codes.reshape(xa.shape), scales.reshape(xa.shape[:-1] + (scales.shape[1],))
