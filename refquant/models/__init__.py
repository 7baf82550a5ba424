"""Layer 3 — float models in NumPy (tiny GPT, MLP) with training. They know nothing about quantization:
it enters through the ``linear=`` / ``tap=`` hooks of their forward passes. Imports nothing else from
refquant (a test enforces it)."""
