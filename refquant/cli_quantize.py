"""``refquant quantize``: every float weight of a file in one registry format; error per array; codes out.

Which arrays: floating-point arrays of two or more dimensions, selected by ``--include`` /
``--exclude`` (fnmatch globs on the array name, case-sensitive; an array is quantized when it matches
an ``--include`` (or none is given) and no ``--exclude``). An array of more than two dimensions is
quantized as ``(shape[0], -1)`` — output channels first, as a linear or convolution weight. Kept
unchanged, with a message: integer and bool arrays, and 1-D / 0-d arrays (biases, norm gains,
scalars: every PTQ scheme — GPTQ, AWQ, llama.cpp — keeps them in float, and a row of length n
would get a scale of its own). ggml formats need K a multiple of their block (32; k-quants 256); other arrays are kept.
Every array is quantized in float32 (float64 and float16 / bfloat16 are converted), so that scales
are float32 as the registry counts them.
"""
from __future__ import annotations

from collections.abc import Callable
import argparse
import fnmatch
import os
import sys

import numpy as np

from .core import metrics
from .core.observers import CALIBRATORS
from .formats import registry
from .formats.ggml import QK
from .io.safetensors import dtype_name
from .io.weights import READ_EXTENSIONS, WRITE_EXTENSIONS, iter_weights, save_quantized, weight_names, weights_kind

# registry option -> the command-line flag that sets it
FLAGS = {"group_size": "--group-size", "symmetric": "--symmetric/--affine", "calibration": "--calibration",
         "block_size": "--block-size", "double_quant": "--double-quant", "bits": "--bits",
         "scale_rounding": "--scale-rounding", "element_rounding": "--element-rounding"}
_OLD_METHODS = {"uniform": "int2 … int8 (the bits are in the name: --method uniform --bits 4 is --format int4)",
                "fp8": "fp8_e4m3 or fp8_e5m2", "fp4": "fp4_e2m1", "log": "log2", "nf4": "nf4", "kmeans": "kmeans"}

EPILOG = """formats (--format NAME):
{formats}

--out writes codes, not fake-quantized floats (.npz, or .safetensors by the extension). Per
quantized array <name>: <name>.codes (integer codes / codebook indices, one per weight, unpacked),
<name>.scale, <name>.zero_point (affine only), <name>.codebook (kmeans, fp8, fp4, log2),
<name>.packed + <name>.absmax (nf4, bitsandbytes nibble order; double quant: .absmax_codes,
.absmax_scale, .absmax_offset), <name>.blocks (ggml: the block
structs byte for byte); arrays that are not quantized are stored unchanged under their own names;
and one JSON entry __refquant__ (in safetensors: the __metadata__ key) with the format, its options
and per array its kind, original shape and dtype, quantized shape (rows, K) and fields. Read it back
with refquant.io.weights.load_quantized(path): it rebuilds every tensor, dequantize() bit-exact.

which arrays: float arrays with 2 or more dimensions (ndim > 2 are quantized as (shape[0], -1));
integer, bool, 1-D and 0-d arrays (biases, norms, scalars) are kept unchanged, with a message."""


def _format_table() -> str:
    lines = []
    for f in registry.FORMATS.values():
        if f.family == "uniform" and f.name != "int8":
            continue  # int2 … int7: as int8
        name = "int2 … int8" if f.family == "uniform" else f.name
        summary = f.summary.replace("8-bit integers", "b-bit integers") if f.family == "uniform" else f.summary
        lines.append(f"  {name:12s} {summary}")
        if f.defaults:
            lines.append(f"  {'':12s} default: {', '.join(_flag_text(k, v) for k, v in f.defaults.items())}")
    return "\n".join(lines)


def _flag_text(option: str, value) -> str:
    if option == "symmetric":
        return "--symmetric" if value else "--affine"
    if option == "double_quant":
        return "--double-quant" if value else "--no-double-quant"
    if option not in FLAGS:
        return f"{option}={value!r} (Python API only)"
    return f"{FLAGS[option]} " + {None: "tensor", 0: "row"}.get(value, str(value))


def _group_size(text: str):
    """``--group-size``: a positive int (groups of G along K), ``row`` / 0 (per row) or ``tensor``."""
    if text in ("row", "0"):
        return 0
    if text == "tensor":
        return "tensor"  # None after parsing: None is "not given" here
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


_group_size.__name__ = "group size (a positive int, row or tensor)"


def add_quantize_arguments(sub: argparse._SubParsersAction) -> None:
    """The ``quantize`` sub-command's arguments on an argparse sub-parser collection."""
    import argparse

    qz = sub.add_parser(
        "quantize", help="quantize the float arrays of a .npz / .npy / .safetensors file, report the error, write codes",
        description="Quantize every float weight of a file in one format; print bits per weight, SQNR and\n"
                    "max error per array; with --out, write the codes, scales and zero points.",
        epilog=EPILOG.format(formats=_format_table()), formatter_class=argparse.RawDescriptionHelpFormatter)
    qz.add_argument("--weights", required=True, metavar="FILE", help=f"input file: {', '.join(READ_EXTENSIONS)}")
    qz.add_argument("--format", choices=registry.FORMAT_NAMES, help="weight format (required; see the list below)")
    qz.add_argument("--method", help=argparse.SUPPRESS)  # renamed --format; an error with a hint
    qz.add_argument("--group-size", type=_group_size, metavar="{G,row,tensor}",
                    help="int*, fp8_*, fp4_e2m1: groups of G along K (the last axis), one per row, or one per tensor")
    side = qz.add_mutually_exclusive_group()
    side.add_argument("--symmetric", dest="symmetric", action="store_const", const=True,
                      help="int*: zero point 0, not stored (the default)")
    side.add_argument("--affine", dest="symmetric", action="store_const", const=False,
                      help="int*: a zero point per scale, stored")
    qz.add_argument("--calibration", choices=tuple(CALIBRATORS), help="int*: how the range is chosen (default minmax)")
    qz.add_argument("--block-size", type=int, help="nf4: elements per absmax block (default 64)")
    qz.add_argument("--double-quant", action=argparse.BooleanOptionalAction, default=None,
                    help="nf4: store the absmax values as int8 (QLoRA double quantization)")
    qz.add_argument("--scale-rounding", choices=("floor", "ceil", "even", "rceil"),
                    help="mx*: the E8M0 shared exponent rule (default floor, as the OCP MX spec)")
    qz.add_argument("--element-rounding", choices=("half_even", "half_away"),
                    help="mx*: element rounding (default half_even; half_away: microxcaling)")
    qz.add_argument("--bits", type=int, help="kmeans (2^bits shared values), log2 (bits per code); default 4")
    qz.add_argument("--include", action="append", default=[], metavar="GLOB",
                    help="quantize only arrays whose name matches (repeatable; e.g. '*.attn.*')")
    qz.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                    help="keep arrays whose name matches unchanged (repeatable; e.g. 'lm_head*')")
    qz.add_argument("--out", metavar="FILE", help=f"write codes + scales + zero points: {', '.join(WRITE_EXTENSIONS)}")


def format_options(args: argparse.Namespace) -> dict:
    """The format's options: its defaults, overridden by the flags given; ValueError naming a flag the
    format does not take or a bad value."""
    if args.method is not None:
        hint = _OLD_METHODS.get(args.method, ", ".join(registry.FORMAT_NAMES))
        raise ValueError(f"--method was renamed --format (it names the weight format): for {args.method!r} use "
                         f"--format {hint}")
    if args.format is None:
        raise ValueError(f"--format is required: one of {', '.join(registry.FORMAT_NAMES)}")
    f = registry.FORMATS[args.format]
    given = {k: getattr(args, k) for k in FLAGS if getattr(args, k) is not None}
    for k in given:
        if k not in f.defaults:
            takes = ", ".join(FLAGS[o] for o in f.defaults) or "no options"
            raise ValueError(f"{FLAGS[k]}: not an option of format {f.name} (it takes {takes})")
    if given.get("group_size") == "tensor":
        given["group_size"] = None
    try:  # every value checked on a small weight, before reading the file
        k = max(QK, f.k_multiple)
        registry.quantize(np.linspace(-1, 1, 2 * k, dtype=np.float32).reshape(2, k), f.name, **given)
    except ValueError as e:
        msg = str(e)
        raise ValueError(next((FLAGS[k] + msg[len(k):] for k in FLAGS if msg.startswith(k)), msg)) from None
    return registry.check_options(f.name, given)


def check_out(path: str, weights: str) -> None:
    """``--out``: a known extension, in a writable directory, not the input file."""
    weights_kind(path, WRITE_EXTENSIONS, "--out")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise ValueError(f"--out: directory {d!r} does not exist")
    if not os.access(d, os.W_OK):
        raise ValueError(f"--out: directory {d!r} is not writable")
    if os.path.isdir(path):
        raise ValueError(f"--out: {path!r} is a directory")
    if os.path.exists(path) and os.path.exists(weights) and os.path.samefile(path, weights):
        raise ValueError(f"--out: {path!r} is the --weights file; write the codes elsewhere")


def _selected(name: str, include, exclude) -> bool:
    inc = not include or any(fnmatch.fnmatchcase(name, g) for g in include)
    return inc and not any(fnmatch.fnmatchcase(name, g) for g in exclude)


def run_quantize(args: argparse.Namespace, progress: Callable[[str], object]) -> int:
    """Quantize every selected float array of ``args.weights`` in ``args.format``; table to stdout."""
    opts = format_options(args)
    if not os.path.isfile(args.weights):
        raise FileNotFoundError(f"--weights: file {args.weights!r} not found")
    weights_kind(args.weights, READ_EXTENSIONS, "--weights")
    if args.out:
        check_out(args.out, args.weights)
    try:
        names = weight_names(args.weights)
    except ValueError as e:
        raise ValueError(f"--weights: {e}") from None
    for g in args.include + args.exclude:
        if not any(fnmatch.fnmatchcase(n, g) for n in names):
            print(f"warning: pattern {g!r} matches no array of {args.weights}", file=sys.stderr)
    tensors, shapes, dtypes, kept = {}, {}, {}, {}
    total_in = total_bits = 0
    print(f"{'array':32s} {'shape':>14s} {'bits/elem':>9s} {'SQNR dB':>8s} {'max |err|':>10s}")
    for i, (name, a) in enumerate(iter_weights(args.weights)):
        progress(f"[{i + 1}/{len(names)}] {name} {tuple(a.shape)}")
        why = None
        if not _selected(name, args.include, args.exclude):
            why = "not selected by --include / --exclude"
        elif a.dtype.kind != "f":
            why = f"{a.dtype} is not a float type"
        elif a.ndim < 2:
            why = f"{a.ndim}-D: biases, norms and scalars stay float"
        elif a.size == 0:
            why = "empty"
        elif (a.size // a.shape[0]) % registry.FORMATS[args.format].k_multiple:
            why = f"{args.format} needs rows of a multiple of {registry.FORMATS[args.format].k_multiple}, got {a.size // a.shape[0]}"
        if why is not None:
            if args.out and args.out.endswith(".safetensors") and dtype_name(a.dtype) is None:
                print(f"{name:32s} {str(tuple(a.shape)):>14s}   dropped ({why}; safetensors cannot store {a.dtype})")
                continue
            kept[name] = a
            print(f"{name:32s} {str(tuple(a.shape)):>14s}   kept ({why})")
            continue
        w = np.asarray(a, dtype=np.float32).reshape(a.shape[0], -1)  # (out, in): rows x K
        if not np.all(np.isfinite(w)):
            raise ValueError(f"--weights: array {name!r} contains NaN or Inf")
        t = registry.quantize(w, args.format, **opts)
        w_hat, nbits = t.dequantize(), t.storage_bits()
        tensors[name], shapes[name], dtypes[name] = t, tuple(a.shape), str(a.dtype)
        total_in, total_bits = total_in + w.size, total_bits + nbits
        note = f"  as {w.shape}" if a.ndim > 2 else ""
        print(f"{name:32s} {str(tuple(a.shape)):>14s} {nbits / w.size:9.3f} {metrics.sqnr_db(w, w_hat):8.2f} "
              f"{np.abs(w_hat - w).max():10.3g}{note}")
    if total_in:
        print(f"total: {total_in} values in {len(tensors)} arrays, {total_bits / total_in:.3f} bits per value "
              f"including scales; {len(kept)} arrays kept unchanged")
    else:
        print(f"no array quantized ({len(kept)} kept unchanged)")
    if args.out:
        progress(f"writing {args.out}")
        try:
            save_quantized(args.out, tensors, format=args.format, options=opts, shapes=shapes, dtypes=dtypes,
                           kept=kept)
        except OSError as e:
            print(f"error: cannot write {args.out!r}: {e.strerror or e}", file=sys.stderr)
            return 1
        print(f"wrote codes, scales and zero points to {args.out} (refquant.io.weights.load_quantized reads it)")
    return 0
