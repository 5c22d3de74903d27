"""The generator registry: ``bench generate --generator NAME``.

Entries are listed explicitly; each ``build`` imports its module only when called, so the core package
imports without the optional stacks (diffusers/transformers live in the ``[gen]`` extra).
"""

from __future__ import annotations

from pathlib import Path

from core.registry import Registry
from pretrain.generative.base import GeneratorSettings, GeneratorSpec, VariantGenerator


def _sd_unclip(model_dir: Path | None, settings: GeneratorSettings) -> VariantGenerator:
    from pretrain.generative.diffusion import build_sd_unclip

    return build_sd_unclip(model_dir, settings)


def _sd_variations(model_dir: Path | None, settings: GeneratorSettings) -> VariantGenerator:
    from pretrain.generative.diffusion import build_sd_variations

    return build_sd_variations(model_dir, settings)


def _icgan(model_dir: Path | None, settings: GeneratorSettings) -> VariantGenerator:
    from pretrain.generative.icgan import build_icgan

    return build_icgan(model_dir, settings)


def _oracle(model_dir: Path | None, settings: GeneratorSettings) -> VariantGenerator:
    from pretrain.generative.oracle import build_oracle

    return build_oracle(model_dir, settings)


def build_generator_registry() -> Registry[GeneratorSpec]:
    """A fresh registry of every generator, listed explicitly."""
    reg: Registry[GeneratorSpec] = Registry("generator")
    reg.register(
        "sd-unclip",
        GeneratorSpec(
            "Stable unCLIP 2.1 image variations (diffusers StableUnCLIPImg2ImgPipeline), as arXiv 2403.05966",
            needs_model=True,
            model_files="a diffusers folder saved by save_pretrained (model_index.json, unet/, vae/, ...)",
            build=_sd_unclip,
            default_guidance=10.0,
        ),
    )
    reg.register(
        "sd-variations",
        GeneratorSpec(
            "Stable Diffusion image variations (diffusers StableDiffusionImageVariationPipeline)",
            needs_model=True,
            model_files="a diffusers folder saved by save_pretrained (model_index.json, unet/, vae/, ...)",
            build=_sd_variations,
        ),
    )
    reg.register(
        "icgan",
        GeneratorSpec(
            "IC-GAN (BigGAN-256 conditioned on SwAV ResNet-50 instance features), as arXiv 2403.05966",
            needs_model=True,
            model_files="the released IC-GAN generator checkpoint and a SwAV ResNet-50 state dict",
            build=_icgan,
            default_size=256,
        ),
    )
    reg.register(
        "oracle",
        GeneratorSpec(
            "synthetic-data oracle: re-renders a stand-in's instance with nuisance attributes redrawn",
            needs_model=False,
            model_files="none (synthetic data only)",
            build=_oracle,
            oracle=True,
            default_size=0,
        ),
    )
    return reg


GENERATORS = build_generator_registry()
