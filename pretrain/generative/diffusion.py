"""The Stable Diffusion variant generators of arXiv 2403.05966: ``sd-unclip`` and ``sd-variations``.

* ``sd-unclip`` runs diffusers' ``StableUnCLIPImg2ImgPipeline`` on a local copy of
  stabilityai/stable-diffusion-2-1-unclip-small, as the paper's generation script does
  (VectorInstitute/GenerativeSSL ``data_generation/img2img_stable_diff.py``): the source image's CLIP
  ViT-L/14 image embedding, noised to ``settings.noise_level`` by the pipeline's DDPM image-noising
  scheduler, conditions the UNet; the text prompt is empty; DDIM with zero-terminal-SNR betas and trailing
  timesteps, eta 0, ``settings.steps`` steps (the paper: 10), classifier-free guidance
  ``settings.guidance_scale`` (the paper kept the pipeline default, 10).
* ``sd-variations`` runs ``StableDiffusionImageVariationPipeline`` on a local copy of
  lambdalabs/sd-image-variations-diffusers (CLIP image embedding as the cross-attention context), with
  DDIM built from the folder's scheduler config, eta 0.  ``noise_level`` does not apply (must be 0).
  The CLIP input is resized without antialiasing, as the model card requires
  (:func:`clip_input_no_antialias`).

Size: both generate at the UNet's native resolution (``unet.sample_size * vae_scale_factor``: 768 px for
unCLIP 2.1 small, 512 px for SD image variations) and resize the result to ``settings.size`` square with
PIL bilinear (antialiased), as the paper's script does (``transforms.Resize((224, 224))`` of the 768-px
output).  Latent diffusion models produce broken images far below their training resolution, so
generating directly at 224 px is not an option.  For unCLIP the source image goes through the folder's
``CLIPImageProcessor`` (short side to 224, centre crop), which selects the same square as the paper's
long-edge centre crop + resize to 224 (bilinear there, bicubic here: a negligible difference for the
embedding).

Seeding (the :class:`~pretrain.generative.base.VariantGenerator` rule): variant ``(i, k)`` is output
``j`` of a pipeline call whose ``generator`` argument is a list holding one CPU ``torch.Generator`` per
output, seeded with ``seeds[i][k]``.  diffusers' ``randn_tensor`` draws row ``j`` of every random tensor
from generator ``j`` alone, so a variant's randomness is: for unCLIP, its image-embedding noise
(``noise_image_embeddings``, one ``[1, D]`` draw) then its initial latents (``[1, 4, h, w]``); for SD
variations, its initial latents.  DDIM with eta 0 draws nothing else.  For unCLIP the per-output image
embeddings are computed here (``feature_extractor`` + ``image_encoder``, repeated per variant) and passed
as ``image_embeds``, because given ``image=`` the pipeline would noise one embedding per *source* with the
generators of the first outputs of the batch.  For SD variations the sources of one call are grouped by
their variant count and passed with ``num_images_per_prompt`` (outputs are source-major, matching the
generator order).  Generators live on the CPU, so the noise is the same on every device.

Batching: ``settings.batch_size`` sources per pipeline call, i.e. a UNet batch of
``2 x batch_size x variants`` with guidance (``batch_size x variants`` without).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from core.errors import ConfigError
from pretrain.generative.base import GeneratorSettings, SourceImage, weights_digest
from pretrain.generative.diffusion_load import PIPELINES, LoadedPipeline, load_pipeline


class DiffusionGenerator:
    """A :class:`~pretrain.generative.base.VariantGenerator` over a loaded diffusers pipeline."""

    def __init__(self, loaded: LoadedPipeline, settings: GeneratorSettings) -> None:
        self.name = loaded.kind.generator
        self.loaded = loaded
        self.settings = settings
        pipe = loaded.pipe
        sample = pipe.unet.config.sample_size
        height, width = (sample, sample) if isinstance(sample, int) else tuple(sample)
        self.native_hw = (int(height) * pipe.vae_scale_factor, int(width) * pipe.vae_scale_factor)
        self._unclip = loaded.kind.generator == "sd-unclip"
        self._prompt: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._digest: str | None = None

    def describe(self) -> dict[str, Any]:
        """Everything besides the settings that determines the pixels (see the module docstring)."""
        import diffusers
        import transformers

        if self._digest is None:
            self._digest = weights_digest(self.loaded.model_dir)
        s = self.settings
        height, width = self.native_hw
        return {
            "generator": self.name,
            "pipeline": self.loaded.kind.pipeline,
            "model_dir": str(self.loaded.model_dir),
            "model_index_class": self.loaded.model_index_class,
            "weights_digest": self._digest,
            "weights_variant": self.loaded.variant or "default",
            "diffusers_version": diffusers.__version__,
            "transformers_version": transformers.__version__,
            "scheduler": dict(self.loaded.scheduler),
            "dtype": str(self.loaded.dtype).removeprefix("torch."),
            "device": str(self.loaded.device),
            "steps": s.steps,
            "guidance_scale": s.guidance_scale,
            "noise_level": s.noise_level if self._unclip else None,
            "prompt": "" if self._unclip else None,
            "size": s.size,
            "generation_size": [height, width],
            "resize": "none" if (height, width) == (s.size, s.size) else "PIL bilinear (antialiased)",
            "source_preprocessing": (
                "CLIPImageProcessor of the folder (short side resize, bicubic antialiased; centre crop)"
                if self._unclip
                else "centre square crop, bicubic resize without antialiasing (model card), CLIP mean/std"
            ),
            "safety_checker": None,
            "seeding": "one CPU torch.Generator per variant seeded with its variant seed"
            + (" (image-embedding noise, then initial latents)" if self._unclip else " (initial latents)"),
        }

    def generate(
        self, sources: Sequence[SourceImage], seeds: Sequence[Sequence[int]]
    ) -> list[list[Image.Image]]:
        """``len(seeds[i])`` RGB ``size`` x ``size`` variants of each ``sources[i]``, in seed order."""
        if len(sources) != len(seeds):
            raise ValueError(f"{len(sources)} sources but {len(seeds)} seed lists")
        out: list[list[Image.Image]] = [[] for _ in sources]
        step = self.settings.batch_size
        for start in range(0, len(sources), step):
            chunk = [i for i in range(start, min(start + step, len(sources))) if len(seeds[i])]
            if not chunk:
                continue
            with torch.inference_mode():
                if self._unclip:
                    images = self._unclip_call([sources[i] for i in chunk], [seeds[i] for i in chunk])
                else:
                    images = self._variations_call([sources[i] for i in chunk], [seeds[i] for i in chunk])
            for i, variants in zip(chunk, images, strict=True):
                out[i] = [self._finish(img) for img in variants]
        return out

    # -- internals --------------------------------------------------------------------------------------

    def _common_kwargs(self, seeds: Sequence[int]) -> dict[str, Any]:
        height, width = self.native_hw
        return {
            "height": height,
            "width": width,
            "num_inference_steps": self.settings.steps,
            "guidance_scale": self.settings.guidance_scale,
            "eta": 0.0,
            "generator": [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds],
            "output_type": "pil",
        }

    def _finish(self, image: Image.Image) -> Image.Image:
        size = self.settings.size
        image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return image

    def _prompt_embeds(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The empty prompt's text-encoder states (and the unconditional ones under guidance), ``[n, L, C]``;
        encoded once, as the pipeline would encode ``prompt=""`` for every output."""
        if self._prompt is None:
            pipe = self.loaded.pipe
            cond, uncond = pipe.encode_prompt(
                prompt="",
                device=self.loaded.device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=self.settings.guidance_scale > 1.0,
            )
            self._prompt = (cond, uncond)
        cond, uncond = self._prompt
        return cond.repeat(n, 1, 1), None if uncond is None else uncond.repeat(n, 1, 1)

    def _unclip_call(
        self, sources: Sequence[SourceImage], seeds: Sequence[Sequence[int]]
    ) -> list[list[Image.Image]]:
        pipe, device, dtype = self.loaded.pipe, self.loaded.device, self.loaded.dtype
        pixels = pipe.feature_extractor(
            images=[s.image.convert("RGB") for s in sources], return_tensors="pt"
        ).pixel_values
        embeds = pipe.image_encoder(pixels.to(device=device, dtype=dtype)).image_embeds  # [B, D]
        counts = torch.tensor([len(s) for s in seeds], device=device)
        embeds = embeds.repeat_interleave(counts, dim=0)  # [N, D], source-major like the seeds
        flat = [seed for per_source in seeds for seed in per_source]
        cond, uncond = self._prompt_embeds(len(flat))
        images = pipe(
            image_embeds=embeds,
            prompt_embeds=cond,
            negative_prompt_embeds=uncond,
            noise_level=self.settings.noise_level,
            **self._common_kwargs(flat),
        ).images
        return _split(images, [len(s) for s in seeds])

    def _variations_call(
        self, sources: Sequence[SourceImage], seeds: Sequence[Sequence[int]]
    ) -> list[list[Image.Image]]:
        pipe = self.loaded.pipe
        out: list[list[Image.Image]] = [[] for _ in sources]
        for count in sorted({len(s) for s in seeds}):
            group = [i for i, s in enumerate(seeds) if len(s) == count]
            flat = [seed for i in group for seed in seeds[i]]
            pixels = clip_input_no_antialias([sources[i].image for i in group], pipe.feature_extractor)
            images = pipe(
                image=pixels.to(device=self.loaded.device, dtype=self.loaded.dtype),
                num_images_per_prompt=count,
                **self._common_kwargs(flat),
            ).images
            for i, variants in zip(group, _split(images, [count] * len(group)), strict=True):
                out[i] = variants
        return out


def clip_input_no_antialias(images: Sequence[Image.Image], feature_extractor: Any) -> torch.Tensor:
    """SD image variations' CLIP input, ``[B, 3, h, w]`` float32, as its model card prescribes.

    The lambdalabs v2 model was trained on CLIP inputs resized *without* antialiasing and its card says
    inference must resize the same way (``transforms.Resize((224, 224), BICUBIC, antialias=False)`` on
    the [0, 1] tensor, then CLIP's mean/std).  The card squashes the whole image; training saw square
    crops, so the largest centred square is cropped first (no distortion of non-square sources).
    ``h, w`` (224) and mean/std come from the folder's ``feature_extractor`` config.
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    crop = feature_extractor.crop_size
    h, w = (crop["height"], crop["width"]) if isinstance(crop, dict) else (crop.height, crop.width)
    mean = torch.tensor(feature_extractor.image_mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(feature_extractor.image_std, dtype=torch.float32).view(3, 1, 1)
    out = []
    for image in images:
        x = TF.pil_to_tensor(image.convert("RGB")).float() / 255.0  # [3, H, W] in [0, 1]
        side = min(x.shape[-2:])
        x = TF.center_crop(x, [side, side])
        x = TF.resize(x, [h, w], interpolation=InterpolationMode.BICUBIC, antialias=False)
        out.append((x - mean) / std)
    return torch.stack(out)


def _split(images: Sequence[Image.Image], counts: Sequence[int]) -> list[list[Image.Image]]:
    if len(images) != sum(counts):
        raise RuntimeError(f"pipeline returned {len(images)} images, expected {sum(counts)}")
    out, start = [], 0
    for n in counts:
        out.append(list(images[start : start + n]))
        start += n
    return out


def _build(
    generator: str, model_dir: Path | None, settings: GeneratorSettings, dtype: torch.dtype | None = None
) -> DiffusionGenerator:
    kind = PIPELINES[generator]
    if generator == "sd-variations" and settings.noise_level != 0:
        raise ConfigError(
            f"noise_level={settings.noise_level} applies to sd-unclip only (sd-variations has no "
            "image-embedding noise); leave it at 0"
        )
    device = settings.torch_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"generator {generator!r}: device {settings.device!r} requested but CUDA is not available"
        )
    loaded = load_pipeline(kind, model_dir, device, dtype)
    if generator == "sd-unclip":
        limit = int(loaded.pipe.image_noising_scheduler.config.num_train_timesteps)
        if settings.noise_level >= limit:
            raise ConfigError(
                f"noise_level={settings.noise_level} out of range for {loaded.model_dir}: its image-noising "
                f"scheduler has {limit} steps (0..{limit - 1})"
            )
    return DiffusionGenerator(loaded, settings)


def build_sd_unclip(model_dir: Path | None, settings: GeneratorSettings) -> DiffusionGenerator:
    """The ``sd-unclip`` generator from a local stable-diffusion-2-1-unclip(-small) folder."""
    return _build("sd-unclip", model_dir, settings)


def build_sd_variations(model_dir: Path | None, settings: GeneratorSettings) -> DiffusionGenerator:
    """The ``sd-variations`` generator from a local sd-image-variations-diffusers folder."""
    return _build("sd-variations", model_dir, settings)
