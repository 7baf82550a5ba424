"""Layer 5 — post-training quantization of models: recipes, activation hooks, calibration,
per-layer sensitivity, and the integer-only tiny GPT built from a float checkpoint."""
