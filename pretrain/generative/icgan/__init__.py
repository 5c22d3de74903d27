"""IC-GAN (BigGAN-256 conditioned on SwAV ResNet-50 instance features) as a variant generator, as used by
arXiv 2403.05966.  ``build_icgan(model_dir, settings)`` is the registry's entry point; see
:mod:`pretrain.generative.icgan.generator` for the sampling and the model folder, :mod:`.biggan` for the
architecture and :mod:`.features` for the instance features."""

from pretrain.generative.icgan.generator import ICGANVariantGenerator, build_icgan

__all__ = ["ICGANVariantGenerator", "build_icgan"]
