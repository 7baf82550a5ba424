"""refquant — the pure-NumPy reference implementation of model quantization.

One convention, stated once: ``x ≈ scale · (q − zero_point)``, ``scale`` the step size.
Modules follow the data flow: ranges/rounding → granularity → uniform → observers → qtensor
→ packing/metrics → non-uniform formats (codebook, logquant, minifloat, nf4, kmeans, ggml_ops)
→ integer arithmetic (fixedpoint, kernels, intops, intlayers) → ecosystem mirrors (onnx_ops,
torch_ops) → models (mlp, model) → recipes → plotting / CLI.
"""
from . import ggml_ops, onnx_ops, torch_ops
from .codebook import CodebookTensor, codebook_dequantize, codebook_quantize, uniform_codebook
from .fixedpoint import (multiply_by_quantized_multiplier, quantize_multiplier, rounding_divide_by_pot,
                         saturating_rounding_doubling_high_mul)
from .granularity import param_shape
from .kernels import fully_connected, int_matmul, prepack, requantize
from .kmeans import kmeans_codebook, kmeans_sse
from .logquant import log_quantize
from .metrics import cosine_similarity, max_error_lsb, mse, sqnr_db
from .minifloat import minifloat_codebook, minifloat_decode, minifloat_encode
from .nf4 import nf4_codebook, nf4_quantize
from .observers import (MinMaxState, calibrate, kl_range, minmax_range, minmax_update, moving_average_update,
                        mse_range, percentile_range)
from .packing import bits_per_element, pack, storage_bits, unpack
from .qtensor import QTensor, quantize_tensor
from .ranges import QRange, qrange
from .rounding import ROUNDING_MODES, round_array
from .uniform import dequantize, fake_quantize, qparams_from_range, quantize, quantize_ref
from .weight_sharing import share_weights

__version__ = "0.1.0"

__all__ = [
    "QRange", "qrange", "ROUNDING_MODES", "round_array", "param_shape",
    "qparams_from_range", "quantize", "quantize_ref", "dequantize", "fake_quantize",
    "MinMaxState", "minmax_range", "minmax_update", "moving_average_update", "percentile_range", "mse_range",
    "kl_range", "calibrate", "QTensor", "quantize_tensor", "pack", "unpack", "storage_bits", "bits_per_element",
    "mse", "sqnr_db", "max_error_lsb", "cosine_similarity",
    "CodebookTensor", "codebook_quantize", "codebook_dequantize", "uniform_codebook", "log_quantize",
    "minifloat_encode", "minifloat_decode", "minifloat_codebook", "nf4_codebook", "nf4_quantize",
    "kmeans_codebook", "kmeans_sse", "share_weights",
    "quantize_multiplier", "saturating_rounding_doubling_high_mul", "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier", "int_matmul", "prepack", "requantize", "fully_connected",
    "onnx_ops", "torch_ops", "ggml_ops",
]
