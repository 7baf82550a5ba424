"""``refquant llm compare``: the field's comparison table of LLM PTQ methods (RTN, GPTQ, AWQ, HQQ, W8A8, SmoothQuant, LLM.int8()). (Placeholder while it is written; see issue 11.)"""
from __future__ import annotations


def run(args, progress) -> int:
    """Run ``llm compare``."""
    raise ValueError("llm compare: not implemented yet")


def add_parser(s) -> None:
    """Add ``compare`` to the ``llm`` sub-parser collection ``s``."""
    p = s.add_parser("compare", help="the field's comparison table of LLM PTQ methods (RTN, GPTQ, AWQ, HQQ, W8A8, SmoothQuant, LLM.int8())")
    p.set_defaults(llm_run=run)
