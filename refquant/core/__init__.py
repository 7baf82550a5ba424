"""Layer 1 — the uniform quantizer and everything it needs: integer ranges, rounding rules,
granularity (per-tensor / per-channel / per-group), quantize / dequantize, observers (calibration),
the quantized-tensor type, bit packing and error metrics. Imports nothing else from refquant."""
