"""Layer 5 — other ecosystems' quantization, bit-exact: ONNX (``onnx_ops``), PyTorch (``torch_ops``:
quantize / fake-quantize and, re-exported from ``torch_qat`` / ``torch_lsq``, their gradients; loop twins in
``torch_qat_ref``; an exact float32 FMA in ``fp32``), and the GPTQ / AWQ checkpoint layouts
(``checkpoint_layouts``). ``refquant.onnx_ops`` and ``refquant.torch_ops`` are aliases of these modules."""
