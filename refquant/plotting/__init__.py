"""Plots of what quantization does. Every function draws on a given ``ax`` and returns it; nothing
here creates figures or saves files (the CLI, benchmarks and notebooks do).

One module per theme, all names re-exported here (``from refquant import plotting;
plotting.plot_levels(ax, ...)``):

- :mod:`.basics` — levels, transfer curves, ranges, codebooks, SQNR and perplexity-vs-bits curves,
  per-layer attribution (notebooks 01–06 and the demo).
"""
from .basics import (FAMILY_COLORS, family_of, plot_channel_ranges, plot_code_histogram, plot_codebook,
                     plot_curves, plot_dot_chart, plot_family_curves, plot_layer_attribution, plot_levels,
                     plot_ppl_vs_bits, plot_ranges, plot_sqnr_vs_bits, plot_stochastic_transfer, plot_transfer)

__all__ = ["FAMILY_COLORS", "family_of", "plot_channel_ranges", "plot_code_histogram", "plot_codebook", "plot_curves",
           "plot_dot_chart", "plot_family_curves", "plot_layer_attribution", "plot_levels", "plot_ppl_vs_bits",
           "plot_ranges", "plot_sqnr_vs_bits", "plot_stochastic_transfer", "plot_transfer"]
