"""Plots of what quantization does. Every function draws on a given ``ax`` and returns it; nothing
here creates figures or saves files (the CLI, benchmarks and notebooks do).

One module per theme, all names re-exported here (``from refquant import plotting;
plotting.plot_levels(ax, ...)``):

- :mod:`.basics` — levels, transfer curves, ranges, codebooks, SQNR and perplexity-vs-bits curves,
  per-layer attribution (notebooks 01–06 and the demo).
- :mod:`.ptq_llm` — GPTQ, AWQ, SmoothQuant, LLM.int8() (notebook 08).
- :mod:`.qat_mixed` — QAT and mixed precision (notebook 09).
- :mod:`.formats_zoo` — the formats people ship (notebook 10).

Each theme module lists its public names in ``__all__``; they are re-exported here.
"""
from . import formats_zoo, ptq_llm, qat_mixed
from .basics import (FAMILY_COLORS, family_of, plot_channel_ranges, plot_code_histogram, plot_codebook,
                     plot_curves, plot_dot_chart, plot_family_curves, plot_layer_attribution, plot_levels,
                     plot_ppl_vs_bits, plot_ranges, plot_sqnr_vs_bits, plot_stochastic_transfer, plot_transfer)

from .formats_zoo import *  # noqa: F401,F403  (names in formats_zoo.__all__)
from .ptq_llm import *  # noqa: F401,F403
from .qat_mixed import *  # noqa: F401,F403

__all__ = ["FAMILY_COLORS", "family_of", "plot_channel_ranges", "plot_code_histogram", "plot_codebook", "plot_curves",
           "plot_dot_chart", "plot_family_curves", "plot_layer_attribution", "plot_levels", "plot_ppl_vs_bits",
           "plot_ranges", "plot_sqnr_vs_bits", "plot_stochastic_transfer", "plot_transfer"] + formats_zoo.__all__ + ptq_llm.__all__ + qat_mixed.__all__
