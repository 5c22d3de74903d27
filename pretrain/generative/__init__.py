"""Generative augmentations (arXiv 2403.05966): instance-conditioned generators, the variant store and
``bench generate``.  See :mod:`pretrain.generative.base` for the generator contract."""
