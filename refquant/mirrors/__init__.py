"""Layer 5 — other ecosystems' quantization ops, bit-exact: ONNX (``onnx_ops``) and PyTorch
(``torch_ops``). ``refquant.onnx_ops`` and ``refquant.torch_ops`` are aliases of these modules."""
