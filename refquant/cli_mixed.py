"""``refquant mixed``: per-layer bit allocation under a size budget (placeholder while it is written; issue 12)."""
from __future__ import annotations


def run_mixed_command(args, progress) -> int:
    """Run ``mixed``."""
    raise ValueError("mixed: not implemented yet")


def add_mixed_parser(sub) -> None:
    """Add ``mixed`` to the top-level sub-parser collection ``sub``."""
    sub.add_parser("mixed", help="bit allocation by sensitivity under a size budget (uniform, greedy, DP, Q4_K_M rule)")
