"""refquant — the pure-NumPy reference implementation of model quantization.

One convention, stated once: ``x ≈ scale · (q − zero_point)``, ``scale`` the step size.
Subpackages follow the data flow, each importing only from those before it (a test enforces it)::

    core → formats, integer → models → io → ptq, qat, mirrors → demo, plotting, CLI

Every public name is importable from ``refquant`` itself. The ecosystem mirrors keep their short
module paths: ``refquant.onnx_ops``, ``refquant.torch_ops`` and ``refquant.ggml_ops`` are the modules
``refquant.mirrors.onnx_ops``, ``refquant.mirrors.torch_ops`` and ``refquant.formats.ggml`` (one module
object each, registered under both names).
"""
import sys as _sys

from .formats import ggml as ggml_ops, registry
from .mirrors import onnx_ops, torch_ops
from .formats.codebook import CodebookTensor, codebook_dequantize, codebook_quantize, uniform_codebook
from .integer.fixedpoint import (multiply_by_quantized_multiplier, quantize_multiplier, rounding_divide_by_pot,
                         saturating_rounding_doubling_high_mul)
from .core.granularity import param_shape
from .integer.gemm import fully_connected, int_matmul, prepack, requantize
from .formats.kmeans import kmeans_codebook, kmeans_sse
from .formats.logquant import log_quantize
from .core.metrics import cosine_similarity, max_error_lsb, mse, sqnr_db
from .formats.minifloat import minifloat_codebook, minifloat_decode, minifloat_encode
from .formats.nf4 import nf4_codebook, nf4_quantize
from .core.observers import (MinMaxState, calibrate, kl_range, minmax_range, minmax_update, moving_average_update,
                        mse_range, percentile_range)
from .core.packing import bits_per_element, pack, storage_bits, unpack
from .core.qtensor import QTensor, quantize_tensor
from .core.ranges import QRange, qrange
from .core.rounding import ROUNDING_MODES, round_array
from .core.dynamic import fake_quantize_per_token, quantize_per_token
from .core.uniform import dequantize, fake_quantize, qparams_from_range, quantize, quantize_ref
from .formats.weight_sharing import share_weights

from ._version import __version__

for _name, _mod in (("onnx_ops", onnx_ops), ("torch_ops", torch_ops), ("ggml_ops", ggml_ops)):
    _sys.modules[f"{__name__}.{_name}"] = _mod  # `import refquant.onnx_ops` keeps working
del _name, _mod

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
    "quantize_per_token", "fake_quantize_per_token", "registry",
    "onnx_ops", "torch_ops", "ggml_ops",
]
