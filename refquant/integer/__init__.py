"""Layer 2 — integer-only arithmetic: gemmlowp / TFLite fixed point, exact int8 GEMM and requantization,
I-BERT integer nonlinearities, integer linear and attention blocks. Imports only core."""
