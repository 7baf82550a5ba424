"""Mixed precision: one format per linear layer, chosen from sensitivities under a total size budget.

Given a sensitivity table Ω (layers L × candidates J, :mod:`refquant.ptq.sensitivity_hessian`) and the
bits s[i, j] layer i stores in candidate format j (:func:`~refquant.ptq.sensitivity_hessian.size_table`),
choose one candidate c_i per layer:

    minimise Σ_i Ω[i, c_i]   subject to   Σ_i s[i, c_i] ≤ B                                      (1)

the multiple-choice knapsack problem. It assumes that the layers' damages add, which holds to first
order for small errors (HAWQ-V2's Ω is additive by construction; ΔNLL and KL measured one layer at a
time are not exactly).

**Dynamic programming** (:func:`allocate_dp`, exact on the discretised problem). Sizes are rounded up
to units of u bits, s'[i, j] = ⌈s[i, j] / u⌉, and the capacity is C = ⌊B / u⌋:

    F_0(c) = 0 for c ≥ 0;    F_i(c) = min over j with s'[i, j] ≤ c of  F_{i−1}(c − s'[i, j]) + Ω[i, j]   (2)

By induction on i, F_i(c) is the least Σ_{k ≤ i} Ω[k, c_k] over the choices for layers 1…i with
Σ s' ≤ c: the best choice with layer i in candidate j leaves c − s'[i, j] for the others, whose best
is F_{i−1}(c − s'[i, j]); (2) takes the best j. So F_L(C) solves the discretised (1), and the choices
are recovered backwards from the stored argmins (ties: the first candidate). Since u·⌈s/u⌉ ≥ s, every
allocation returned fits B. When every s[i, j] is a multiple of u it is optimal for (1) itself: the
registry's sizes are multiples of 8 bits whenever rows·K is, so u = 8 (bytes, the default) is exact
there; otherwise it may miss allocations that use the last L·(u − 1) bits of B. Time O(L·J·C),
memory L·(C + 1) choice bytes (C is capped at the largest possible total). :func:`allocate_dp_ref`
is the same recurrence as plain loops; tests check both against exhaustive search.

**Greedy ΔΩ/Δbits** (:func:`allocate_greedy`, the baseline; Dantzig's value-per-weight rule): start
from each layer's smallest candidate; repeatedly make the single change (layer i → candidate j) that
lowers Ω most per extra bit, (Ω[i, c_i] − Ω[i, j]) / (s[i, j] − s[i, c_i]), among the changes that lower
Ω and keep Σ s ≤ B; stop when none is left. Each step lowers Σ Ω, so it ends; it is not optimal in
general (an early cheap upgrade can block a better expensive one: a test shows such a case).

**llama.cpp's Q4_K_M rule** (:func:`q4km_types`; ``src/llama-quant.cpp: llama_tensor_get_type_impl``,
a non-Falcon model without experts): Q4_K everywhere except

    output.weight (or the tied token_embd)     Q6_K  (Q8_0 if its row length K is not a multiple of 256)
    the k-th attn_v.weight                      Q6_K  if use_more_bits(k, number of attn_v tensors)
    ffn_down of block i                         Q6_K  if use_more_bits(i, number of ffn_down tensors)
    use_more_bits(i, n) = i < n/8  or  i ≥ 7n/8  or  (i − n/8) mod 3 = 2          (C integer division)

then ``tensor_type_fallback``: a row length K that is not a multiple of 256 turns Q4_K into Q5_0 and
Q6_K into Q8_0 (and into F16 when K is not a multiple of 32 either; an output head whose K is not a
multiple of 32 stops llama-quantize). The registry's ``q4_K`` / ``q6_K`` are ggml's own bytes; with
``stand_ins=True`` (or a registry without them) :data:`K_QUANT_STAND_INS` replace them — int4 and int6
with a float32 scale per group of 128, which take any row length: the rule's choice of tensors on the
grid of uniform int4-g128.

References
----------
Kellerer, Pferschy & Pisinger, "Knapsack Problems", Springer 2004, ch. 11 (multiple-choice knapsack,
dynamic programming). Dantzig, "Discrete-Variable Extremum Problems", Operations Research 5 (1957)
(the ratio rule). Dong et al., "HAWQ-V2", NeurIPS 2020, §2 (a Pareto front of Σ Ω against size).
llama.cpp ``src/llama-quant.cpp``: ``llama_tensor_get_type_impl`` (``use_more_bits``, the
LLAMA_FTYPE_MOSTLY_Q4_K_M branches), ``tensor_type_fallback``.
"""
from __future__ import annotations

from dataclasses import dataclass
import itertools
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..core._types import ArrayLike
from ..formats import registry
from ..models.lm import LM, weight
from .sensitivity_hessian import Candidate, _candidates, _names, candidate_bits, candidate_weight, size_table

MAX_DP_CELLS = 1 << 28  # layers × (capacity + 1) choice bytes allowed in allocate_dp
QK_K = 256  # the k-quants' super-block: the row length they need
K_QUANT_STAND_INS = {"q4_K": Candidate("int4-g128", "int4", {"group_size": 128}),
                     "q6_K": Candidate("int6-g128", "int6", {"group_size": 128})}


@dataclass(frozen=True)
class Allocation:
    """One candidate per layer."""

    choice: tuple  # candidate index per layer
    sensitivity: float  # Σ_i Ω[i, choice_i], summed in layer order
    bits: int  # Σ_i s[i, choice_i]


def _tables(sensitivity, sizes, budget_bits):
    omega = np.asarray(sensitivity, np.float64)
    s = np.asarray(sizes)
    if omega.ndim != 2 or 0 in omega.shape:
        raise ValueError(f"sensitivity: expected a (layers, candidates) table, got shape {omega.shape}")
    if not np.all(np.isfinite(omega)):
        raise ValueError("sensitivity must be finite (NaN or Inf found)")
    if s.shape != omega.shape:
        raise ValueError(f"sizes: shape {s.shape} differs from the sensitivity table's {omega.shape}")
    if s.dtype.kind not in "iu" or s.min() < 1:
        raise ValueError("sizes must be positive integers (bits)")
    if isinstance(budget_bits, bool) or not isinstance(budget_bits, (int, np.integer)) or budget_bits < 0:
        raise ValueError(f"budget_bits must be a non-negative integer, got {budget_bits!r}")
    return omega, s.astype(np.int64), int(budget_bits)


def _result(omega, s, choice) -> Allocation:
    choice = tuple(int(j) for j in choice)
    return Allocation(choice, sum(float(omega[i, j]) for i, j in enumerate(choice)),
                      int(sum(int(s[i, j]) for i, j in enumerate(choice))))


def _discretise(sizes, budget_bits, unit_bits):
    if isinstance(unit_bits, bool) or not isinstance(unit_bits, (int, np.integer)) or unit_bits < 1:
        raise ValueError(f"unit_bits must be a positive integer, got {unit_bits!r}")
    su = -(-sizes // unit_bits)  # ⌈s / u⌉
    cap = min(budget_bits // unit_bits, int(su.max(1).sum()))
    need = int(su.min(1).sum())
    if need > cap:
        raise ValueError(f"budget_bits: {budget_bits} bits is below the smallest allocation, "
                         f"{need} units of {unit_bits} bits (= {need * unit_bits} bits; a smaller unit_bits "
                         f"rounds less, the exact minimum is {int(sizes.min(1).sum())} bits)")
    return su, cap


def allocate_dp(sensitivity: ArrayLike, sizes: ArrayLike, budget_bits: int, *, unit_bits: int = 8) -> Allocation:
    """Recurrence (2), vectorised over the capacity: the allocation minimising Σ Ω within ``budget_bits``.

    Parameters
    ----------
    sensitivity : array_like of float, shape (L, J) — Ω[i, j], finite (may be negative).
    sizes : array_like of int, shape (L, J) — bits s[i, j] > 0.
    budget_bits : int — B.
    unit_bits : int — u: sizes are rounded up to multiples of u (exact when they all are multiples).

    Raises ValueError when no allocation fits (after rounding) or the table would exceed
    :data:`MAX_DP_CELLS` (choose a larger ``unit_bits``).
    """
    omega, s, budget = _tables(sensitivity, sizes, budget_bits)
    su, cap = _discretise(s, budget, unit_bits)
    L, J = omega.shape
    if L * (cap + 1) > MAX_DP_CELLS:
        raise ValueError(f"unit_bits: {unit_bits} gives a capacity of {cap} units, {L} × {cap + 1} table cells "
                         f"(limit {MAX_DP_CELLS}); use a larger unit_bits")
    F = np.zeros(cap + 1)  # F_0
    choice = np.zeros((L, cap + 1), np.uint8 if J < 256 else np.int32)
    for i in range(L):
        cand = np.full((J, cap + 1), np.inf)
        for j in range(J):
            k = int(su[i, j])
            if k <= cap:
                cand[j, k:] = F[: cap + 1 - k] + omega[i, j]  # F_{i-1}(c − s') + Ω[i, j]
        choice[i] = cand.argmin(0)
        F = cand.min(0)
    if not np.isfinite(F[cap]):
        raise ValueError(f"budget_bits: no allocation fits in {budget} bits")
    picked, c = [], cap
    for i in reversed(range(L)):
        j = int(choice[i, c])
        picked.append(j)
        c -= int(su[i, j])
    return _result(omega, s, picked[::-1])


def allocate_dp_ref(sensitivity: ArrayLike, sizes: ArrayLike, budget_bits: int, *, unit_bits: int = 8) -> Allocation:
    """:func:`allocate_dp` written as loops over layers, capacities and candidates (the slow twin; equal
    results, ties to the first candidate)."""
    omega, s, budget = _tables(sensitivity, sizes, budget_bits)
    su, cap = _discretise(s, budget, unit_bits)
    L, J = omega.shape
    F = [0.0] * (cap + 1)
    choices = []
    for i in range(L):
        new, arg = [np.inf] * (cap + 1), [0] * (cap + 1)
        for c in range(cap + 1):
            for j in range(J):
                k = int(su[i, j])
                if k <= c and F[c - k] + float(omega[i, j]) < new[c]:
                    new[c], arg[c] = F[c - k] + float(omega[i, j]), j
        F = new
        choices.append(arg)
    if F[cap] == np.inf:
        raise ValueError(f"budget_bits: no allocation fits in {budget} bits")
    picked, c = [], cap
    for i in reversed(range(L)):
        picked.append(choices[i][c])
        c -= int(su[i, picked[-1]])
    return _result(omega, s, picked[::-1])


def allocate_greedy(sensitivity: ArrayLike, sizes: ArrayLike, budget_bits: int) -> Allocation:
    """The greedy ΔΩ/Δbits baseline (module docstring), exactly in bits. Ties: the first layer, then
    the first candidate. ValueError when even the smallest candidates exceed ``budget_bits``."""
    omega, s, budget = _tables(sensitivity, sizes, budget_bits)
    L, J = omega.shape
    choice = [min(range(J), key=lambda j: (s[i, j], omega[i, j])) for i in range(L)]  # the smallest format
    total = int(sum(s[i, j] for i, j in enumerate(choice)))
    if total > budget:
        raise ValueError(f"budget_bits: {budget} bits is below the smallest allocation, {total} bits")
    while True:
        best, best_key = None, None
        for i, j in itertools.product(range(L), range(J)):
            d_omega = omega[i, choice[i]] - omega[i, j]
            d_bits = int(s[i, j] - s[i, choice[i]])
            if d_omega <= 0 or total + d_bits > budget:
                continue
            # d_bits <= 0 cannot happen from the smallest start (that j would have had the better ratio)
            key = np.inf if d_bits <= 0 else d_omega / d_bits
            if best_key is None or key > best_key:
                best, best_key = (i, j, d_bits), key
        if best is None:
            return _result(omega, s, choice)
        i, j, d_bits = best
        choice[i] = j
        total += d_bits


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's ``use_more_bits``: the first and last eighth of the layers and every third one between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def q4km_types(names: Sequence[str], row_lengths: Mapping | None = None) -> dict:
    """``{name: ggml type}`` that llama-quantize's Q4_K_M gives the weights ``names`` (GGUF names, in
    file order; see the module docstring). With ``row_lengths`` (``{name: K}``) the shape fallbacks
    apply ("q5_0", "q8_0", "f16"); without, only "q4_K" and "q6_K" (the rule's choice of tensors)."""
    names = list(names)
    n_v = sum("attn_v.weight" in n for n in names)
    n_down = sum("ffn_down" in n for n in names)
    i_v = i_down = 0
    out = {}
    for n in names:
        K = None if row_lengths is None else int(row_lengths[n])
        if n in ("output.weight", "token_embd.weight"):
            t = "q8_0" if K is not None and K % QK_K else "q6_K"
            if t == "q8_0" and K % 32:  # llama.cpp: "no tensor type fallback is defined for type q8_0"
                raise ValueError(f"row_lengths: {n} has K = {K}, not a multiple of 32; llama.cpp cannot quantize it")
        elif "attn_v.weight" in n:
            t = "q6_K" if use_more_bits(i_v, n_v) else "q4_K"
            i_v += 1
        elif "ffn_down" in n:
            t = "q6_K" if use_more_bits(i_down, n_down) else "q4_K"
            i_down += 1
        else:
            t = "q4_K"
        if K is not None and t in ("q4_K", "q6_K") and K % QK_K:
            t = {"q4_K": "q5_0", "q6_K": "q8_0"}[t] if K % 32 == 0 else "f16"
        out[n] = t
    return out


def ggml_candidate(qtype: str, *, stand_in: bool = False) -> Candidate:
    """The registry format for a ggml type: itself when registered (and not ``stand_in``), else its
    stand-in (:data:`K_QUANT_STAND_INS`); "f16" becomes the float32 candidate."""
    if qtype in K_QUANT_STAND_INS and (stand_in or qtype not in registry.FORMAT_NAMES):
        return K_QUANT_STAND_INS[qtype]
    if qtype in registry.FORMAT_NAMES:
        return Candidate(qtype, qtype)
    if qtype == "f16":
        return Candidate("float", None)
    raise ValueError(f"qtype: {qtype!r} is neither registered nor a known stand-in")


def q4km_assignment(lm: LM, params: dict, names: Sequence[str] | None = None, *, fallback: bool = True, stand_ins: bool = False) -> dict:
    """``{name: Candidate}`` of the Q4_K_M rule on ``lm``'s linear layers. ``fallback``: apply
    llama.cpp's row-length fallbacks, as llama-quantize would write the file (without them a registered
    q4_K / q6_K refuses rows whose K is not a multiple of 256); ``stand_ins``: int4 / int6 g128 for
    q4_K / q6_K (module docstring)."""
    names = _names(lm, names)
    rows = {n: weight(lm, params, n).shape[1] for n in names} if fallback else None
    return {n: ggml_candidate(t, stand_in=stand_ins) for n, t in q4km_types(names, rows).items()}


def assignment(names: Sequence[str], candidates: Sequence[Candidate], choice: Allocation | Sequence[int]) -> dict:
    """``{names[i]: candidates[choice[i]]}`` (choice: an :class:`Allocation`'s or a sequence of indices)."""
    choice = getattr(choice, "choice", choice)
    if len(choice) != len(names):
        raise ValueError(f"choice: {len(choice)} entries for {len(names)} layers")
    return {n: candidates[int(j)] for n, j in zip(names, choice)}


def apply_assignment(lm: LM, params: dict, assign: Mapping) -> tuple:
    """``(params_q, bits, n_weights)``: a copy of ``params`` with every assigned linear weight
    fake-quantized (a tied head gets its own entry), the bits they store and how many weights they are."""
    q, bits, n = dict(params), 0, 0
    for name, c in assign.items():
        w = weight(lm, params, name)
        if c.format is not None:
            q[name] = candidate_weight(w, c)
        bits += candidate_bits(c, w.shape)
        n += w.size
    return q, bits, n


def evaluate_assignments(lm: LM, params: dict, assignments: Mapping, perplexity: Callable[[dict], float]) -> list:
    """One row ``{"method", "bits_per_weight", "perplexity"}`` per ``{method: assignment}``;
    ``perplexity(params_q)`` scores a parameter dict (e.g. via ``refquant.models.train.evaluate``)."""
    rows = []
    for method, assign in assignments.items():
        q, bits, n = apply_assignment(lm, params, assign)
        rows.append({"method": method, "bits_per_weight": bits / n, "perplexity": float(perplexity(q))})
    return rows


def allocation_assignments(lm: LM, params: dict, candidates: Sequence[Candidate], sensitivity: ArrayLike | Mapping,
                           budgets: Mapping, *, names: Sequence[str] | None = None,
                           unit_bits: int = 8) -> dict:
    """``{method: assignment}``: ``uniform-<label>`` per candidate, and ``greedy-[<measure>-]<budget>``
    and ``dp-[<measure>-]<budget>`` for every ``{budget label: bits}`` and every sensitivity table
    (``sensitivity``: one (L, J) table, or ``{measure: table}``)."""
    names, candidates = _names(lm, names), _candidates(candidates)
    sizes = size_table(lm, params, candidates, names)
    tables = sensitivity if isinstance(sensitivity, Mapping) else {"": sensitivity}
    out = {f"uniform-{c.label}": {n: c for n in names} for c in candidates}
    for measure, omega in tables.items():
        tag = f"{measure}-" if measure else ""
        for label, b in budgets.items():
            out[f"greedy-{tag}{label}"] = assignment(names, candidates, allocate_greedy(omega, sizes, int(b)))
            dp = allocate_dp(omega, sizes, int(b), unit_bits=unit_bits)
            out[f"dp-{tag}{label}"] = assignment(names, candidates, dp)
    return out


def _beats(o, r) -> bool:
    b, pp = "bits_per_weight", "perplexity"
    return o[b] <= r[b] and o[pp] <= r[pp] and (o[b] < r[b] or o[pp] < r[pp])


def pareto_front(rows: Iterable[Mapping]) -> list:
    """The rows no other row beats in both ``bits_per_weight`` and ``perplexity`` (≤ in both, < in
    one), sorted by size."""
    rows = list(rows)
    keep = [r for r in rows if not any(_beats(o, r) for o in rows)]
    return sorted(keep, key=lambda r: (r["bits_per_weight"], r["perplexity"]))
