"""Layer 5 — post-training quantization of models: recipes, activation hooks, calibration, per-layer
sensitivity, Hessian / input statistics and sequential quantization (``hessian``), the LLM algorithms
(``gptq``; AWQ, SmoothQuant, LLM.int8() and HQQ beside it), and the integer-only tiny GPT built from a
float checkpoint. Every algorithm takes a :class:`refquant.models.lm.LM`, so it runs on the tiny GPT and on
LLaMA alike."""
