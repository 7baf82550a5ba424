"""refquant — the pure-NumPy reference implementation of model quantization.

One convention, stated once: ``x ≈ scale · (q − zero_point)``, ``scale`` the step size.
Modules follow the data flow: ranges/rounding → granularity → uniform → observers → qtensor
→ packing/metrics → ecosystem mirrors (onnx_ops, torch_ops) → plotting / CLI.
"""
from . import onnx_ops, torch_ops
from .granularity import param_shape
from .metrics import cosine_similarity, max_error_lsb, mse, sqnr_db
from .observers import (MinMaxState, calibrate, kl_range, minmax_range, minmax_update, moving_average_update,
                        mse_range, percentile_range)
from .packing import bits_per_element, pack, storage_bits, unpack
from .qtensor import QTensor, quantize_tensor
from .ranges import QRange, qrange
from .rounding import ROUNDING_MODES, round_array
from .uniform import dequantize, fake_quantize, qparams_from_range, quantize, quantize_ref

__version__ = "0.1.0"

__all__ = [
    "QRange", "qrange", "ROUNDING_MODES", "round_array", "param_shape",
    "qparams_from_range", "quantize", "quantize_ref", "dequantize", "fake_quantize",
    "MinMaxState", "minmax_range", "minmax_update", "moving_average_update", "percentile_range", "mse_range",
    "kl_range", "calibrate", "QTensor", "quantize_tensor", "pack", "unpack", "storage_bits", "bits_per_element",
    "mse", "sqnr_db", "max_error_lsb", "cosine_similarity", "onnx_ops", "torch_ops",
]
