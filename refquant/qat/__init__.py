"""Layer 5 — quantization-aware training: the gradients of fake quantization written from the papers
(``ste``: straight-through windows; ``lsq``: LSQ / LSQ+ step sizes and offsets; ``pact``: PACT's clipping
level), the ``linear=`` / ``linear_backward=`` hooks that put them into a model (``hooks``), the training
loop from PTQ parameters (``train``), and Deep Compression's centroid fine-tuning (``trained_sharing``).
The PyTorch-exact versions of these gradients are mirrors: :mod:`refquant.mirrors.torch_qat`,
:mod:`refquant.mirrors.torch_lsq`."""
