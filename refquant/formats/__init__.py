"""Layer 2 — non-uniform and block formats built on the core: codebooks, log2, minifloats (FP8 / FP4),
NF4, k-means and weight sharing, ggml blocks, and the registry that names them all. Imports only core."""
