"""Tiny randomly initialised diffusers pipelines, saved as model folders, for offline tests.

Each builder assembles a pipeline from small configs (UNet ~0.2M parameters, VAE ~44k, CLIP ~8k), with
every component's random weights drawn from a fixed seed, and writes it with ``save_pretrained``: the
resulting folder has the same layout as the real model repositories (``model_index.json`` plus one
folder per component), so the generators load it exactly as they load real weights.  Nothing is
downloaded: the CLIP tokenizer is built from a vocabulary and merges file written here.

* :func:`build_tiny_unclip`: ``StableUnCLIPImg2ImgPipeline`` laid out like
  stabilityai/stable-diffusion-2-1-unclip-small (v-prediction DDIM, squaredcos DDPM image-noising
  scheduler, image normaliser, CLIP text encoder + tokenizer), native resolution 32 px by default.
* :func:`build_tiny_variations`: ``StableDiffusionImageVariationPipeline`` laid out like
  lambdalabs/sd-image-variations-diffusers (epsilon-prediction PNDM scheduler, no safety checker), native
  resolution 32 px by default.

Both take a few hundred milliseconds per 10-step generation of a handful of images on one CPU thread.
Used by tests/pretrain/generative (session fixture in conftest.py) and by end-to-end ``bench generate``
tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

#: Embedding width of the tiny CLIP encoders (image projection, text hidden size).
EMBED_DIM = 16
#: Pixel side of the tiny CLIP image encoder's input.
CLIP_SIZE = 32
#: Latent side of the tiny UNets; with the 2-level VAE (factor 2) the native output is 32 px.
LATENT_SIZE = 16
#: Token length of the tiny text encoder / tokenizer.
MAX_TOKENS = 8


def _vision_encoder() -> Any:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=EMBED_DIM,
        projection_dim=EMBED_DIM,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=CLIP_SIZE,
        patch_size=8,
    )
    return CLIPVisionModelWithProjection(config).eval()


def _feature_extractor() -> Any:
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": CLIP_SIZE}, crop_size={"height": CLIP_SIZE, "width": CLIP_SIZE}
    )


def _unet(cross_attention_dim: int, class_embed_dim: int | None, latent_size: int) -> Any:
    from diffusers import UNet2DConditionModel

    extra: dict[str, Any] = {}
    if class_embed_dim is not None:  # unCLIP: the noised image embedding enters as a class embedding
        extra = {"class_embed_type": "projection", "projection_class_embeddings_input_dim": class_embed_dim}
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_head_dim=4,
        norm_num_groups=8,
        cross_attention_dim=cross_attention_dim,
        **extra,
    ).eval()


def _vae(latent_size: int) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=latent_size * 2,
    ).eval()


def _tokenizer(folder: Path) -> Any:
    """A CLIP BPE tokenizer over printable ASCII (no merges), built from vocab.json / merges.txt written
    to ``folder`` (the pipeline's own tokenizer folder, as in the real repositories)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(33, 127)]
    tokens = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer.from_pretrained(folder, model_max_length=MAX_TOKENS, local_files_only=True)


def _text_encoder(vocab_size: int, bos: int, eos: int) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=EMBED_DIM,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    return CLIPTextModel(config).eval()


def build_tiny_unclip(dir: Path, latent_size: int = LATENT_SIZE) -> Path:
    """Write a tiny random ``StableUnCLIPImg2ImgPipeline`` to ``dir`` (created) and return ``dir``; its
    native resolution is ``2 * latent_size`` px."""
    from diffusers import DDIMScheduler, DDPMScheduler, StableUnCLIPImg2ImgPipeline
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )

    dir = Path(dir)
    torch.manual_seed(0)
    tokenizer = _tokenizer(dir / "tokenizer")
    normalizer = StableUnCLIPImageNormalizer(embedding_dim=EMBED_DIM)
    with torch.no_grad():  # a non-trivial normaliser, so scale/unscale are exercised
        normalizer.mean.normal_(0.0, 0.1)
        normalizer.std.uniform_(0.5, 1.5)
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=_feature_extractor(),
        image_encoder=_vision_encoder(),
        image_normalizer=normalizer,
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=tokenizer,
        text_encoder=_text_encoder(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id),
        unet=_unet(cross_attention_dim=EMBED_DIM, class_embed_dim=2 * EMBED_DIM, latent_size=latent_size),
        # as stable-diffusion-2-1-unclip-small ships it
        scheduler=DDIMScheduler(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            prediction_type="v_prediction",
            set_alpha_to_one=False,
            steps_offset=1,
            clip_sample=False,
        ),
        vae=_vae(latent_size),
    )
    pipe.save_pretrained(dir, safe_serialization=True)
    return dir


def build_tiny_variations(dir: Path, latent_size: int = LATENT_SIZE) -> Path:
    """Write a tiny random ``StableDiffusionImageVariationPipeline`` to ``dir`` and return ``dir``; its
    native resolution is ``2 * latent_size`` px."""
    from diffusers import PNDMScheduler, StableDiffusionImageVariationPipeline

    dir = Path(dir)
    torch.manual_seed(1)
    pipe = StableDiffusionImageVariationPipeline(
        vae=_vae(latent_size),
        image_encoder=_vision_encoder(),
        unet=_unet(cross_attention_dim=EMBED_DIM, class_embed_dim=None, latent_size=latent_size),
        # lambdalabs/sd-image-variations-diffusers ships a PNDM scheduler (the generator swaps in DDIM)
        scheduler=PNDMScheduler(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            skip_prk_steps=True,
            steps_offset=1,
            set_alpha_to_one=False,
        ),
        safety_checker=None,
        feature_extractor=_feature_extractor(),
        requires_safety_checker=False,
    )
    pipe.save_pretrained(dir, safe_serialization=True)
    return dir
