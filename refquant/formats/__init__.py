"""Layer 2 — non-uniform and block formats built on the core: codebooks, log2, minifloats (FP8 / FP4),
NF4, k-means and weight sharing, ggml blocks (legacy in ``ggml``, k-quants and IQ4 in ``kquants``), OCP MX
and NVFP4 (``mx``, ``nvfp4``), and the registry that names them all and counts their bits (``registry``).
Imports only core."""
