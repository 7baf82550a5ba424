"""Layer 5 — quantization-aware training: quantizers with gradients, training loops."""
