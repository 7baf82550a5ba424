"""``refquant llm export``: write a quantized GGUF that llama.cpp runs. (Placeholder while it is written; see issue 13.)"""
from __future__ import annotations


def run(args, progress) -> int:
    """Run ``llm export``."""
    raise ValueError("llm export: not implemented yet")


def add_parser(s) -> None:
    """Add ``export`` to the ``llm`` sub-parser collection ``s``."""
    p = s.add_parser("export", help="write a quantized GGUF that llama.cpp runs")
    p.set_defaults(llm_run=run)
