"""``bench generate --generator icgan``: IC-GAN variants of source images (arXiv 2403.05966, Sec. 3).

Per source image ``i``: its SwAV ResNet-50 feature ``h_i`` (:mod:`.features`, L2-normalised).  Per variant
``k``: noise ``z_ik`` = :func:`.sampling.truncated_normal` ``(seeds[i][k], dim_z, settings.truncation)``;
the variant is ``G(z_ik, h_i)`` (:class:`.biggan.ICGANGenerator`, eval mode) in [-1, 1] at the model's
resolution (256), resized to ``settings.size`` when different (bilinear, antialiased, on the float image)
and quantised as IC-GAN's ``convert_to_images`` does (``uint8(clip((x + 1) / 2 * 256, 0, 255))``).  Every
operation is per sample (BN uses stored statistics), so a variant does not depend on its batch.

Model folder (``--model DIR``), as the releases unpack (see docs/generative-icgan.md):

* the generator: ``G_ema_best0.pth`` (else ``G_ema_best1.pth``, ``G_ema_best.pth``, ``G_ema.pth`` or a
  converted ``G_ema.safetensors``) in ``DIR/icgan_biggan_imagenet_res256/`` (the release tarball's folder)
  or in ``DIR``; the release's ``state_dict_best0.pth`` (training state and config, which pickles
  ``nn.ReLU`` objects) is never read: the architecture is inferred from the ``G_ema`` tensor shapes;
* SwAV's ``swav_800ep_pretrain.pth.tar`` (or ``swav_pretrained.pth.tar``, the name IC-GAN's download
  script uses, or a ``.safetensors`` conversion) in ``DIR`` or that sub-folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from core.errors import CheckpointError
from pretrain.external import read_state_dict
from pretrain.generative.base import GeneratorSettings, SourceImage, require_model_folder, weights_digest
from pretrain.generative.icgan.biggan import ICGANGenerator, config_from_state_dict
from pretrain.generative.icgan.features import instance_features, load_swav_resnet50
from pretrain.generative.icgan.sampling import noise_batch

RELEASE_SUBDIR = "icgan_biggan_imagenet_res256"
GENERATOR_NAMES = ("G_ema_best0.pth", "G_ema_best1.pth", "G_ema_best.pth", "G_ema.pth", "G_ema.safetensors")
SWAV_NAMES = ("swav_800ep_pretrain.pth.tar", "swav_pretrained.pth.tar", "swav_800ep_pretrain.safetensors")
HINT = (
    f"extract IC-GAN's icgan_biggan_imagenet_res256.tar.gz into DIR and put SwAV's {SWAV_NAMES[0]} "
    f"beside it; also accepted: {', '.join(GENERATOR_NAMES[1:])} in DIR/{RELEASE_SUBDIR} or DIR, "
    f"{SWAV_NAMES[1]}"
)


@dataclass(frozen=True)
class ModelFiles:
    """The files of an IC-GAN model folder that are used."""

    root: Path
    generator: Path
    swav: Path


def _first(folders: Sequence[Path], names: Sequence[str]) -> Path | None:
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def find_model_files(model_dir: Path | None) -> ModelFiles:
    """Resolve the generator and SwAV files of ``model_dir`` (module docstring); a missing folder or file is a
    :class:`~pretrain.generative.base.ModelFolderError` saying what is needed."""
    root = require_model_folder(model_dir, "icgan", [], HINT)
    folders = [root / RELEASE_SUBDIR, root]
    gen, swav = _first(folders, GENERATOR_NAMES), _first(folders, SWAV_NAMES)
    if gen is None or swav is None:
        missing = [] if gen else [f"{RELEASE_SUBDIR}/{GENERATOR_NAMES[0]}"]
        missing += [] if swav else [SWAV_NAMES[0]]
        require_model_folder(root, "icgan", missing, HINT)  # raises: something is missing
    assert gen is not None and swav is not None
    return ModelFiles(root, gen, swav)


def load_generator(path: Path) -> ICGANGenerator:
    """The generator whose architecture and weights are those of the ``G_ema`` state dict at ``path``
    (``torch.load(weights_only=True)`` or safetensors; strict load), in eval mode."""
    sd = read_state_dict(path)
    try:
        cfg = config_from_state_dict(sd)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    net = ICGANGenerator(cfg)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        lines = " ".join([ln.strip() for ln in str(exc).splitlines() if ln.strip()][1:3])
        raise CheckpointError(f"{path} does not match the IC-GAN generator layout: {lines}") from None
    return net.eval()


class ICGANVariantGenerator:
    """:class:`~pretrain.generative.base.VariantGenerator` for IC-GAN (module docstring)."""

    name = "icgan"

    def __init__(
        self,
        generator: ICGANGenerator,
        features: nn.Module,
        settings: GeneratorSettings,
        files: ModelFiles | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.device = settings.torch_device()
        self.generator = generator.eval().to(self.device)
        self.features = features.eval().to(self.device)
        self.files = files
        self.extra = dict(extra or {})
        self.autocast_dtype: torch.dtype | None = None
        if self.device.type == "cuda":
            self.autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def describe(self) -> dict[str, Any]:
        cfg = self.generator.cfg
        info: dict[str, Any] = {
            "generator": "icgan",
            "architecture": "IC-GAN BigGAN (instance-conditioned, hierarchical z, shared_feat), eval mode",
            "resolution": cfg.resolution,
            "G_ch": cfg.ch,
            "dim_z": cfg.dim_z,
            "shared_dim_feat": cfg.shared_dim_feat,
            "attention": list(cfg.attention),
            "truncation": self.settings.truncation,
            "noise": f"N(0, 1) truncated to +-{2 * self.settings.truncation:g} (inverse CDF, float64)",
            "features": "SwAV ResNet-50 avgpool, L2-normalised; crop short side, 256 bilinear, 224 bicubic",
            "output_size": self.settings.size,
            "resize": "none" if self.settings.size == cfg.resolution else "bilinear, antialias (float)",
            "dtype": str(self.autocast_dtype or torch.float32).replace("torch.", ""),
            "device": str(self.device),
        }
        if self.files is not None:
            info["model_dir"] = str(self.files.root)
            info["generator_file"] = str(self.files.generator.relative_to(self.files.root))
            info["feature_extractor_file"] = str(self.files.swav.relative_to(self.files.root))
            info["weights_digest"] = weights_digest([self.files.generator, self.files.swav])
        return {**info, **self.extra}

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.autocast_dtype)

    @torch.inference_mode()
    def generate_tensors(self, images: Sequence[Image.Image], seeds: Sequence[Sequence[int]]) -> list[Tensor]:
        """Float variants: entry ``i`` is ``[len(seeds[i]), 3, size, size]`` in [-1, 1] (CPU, float32)."""
        if len(images) != len(seeds):
            raise ValueError(f"{len(images)} source images but {len(seeds)} seed lists")
        cfg, step = self.generator.cfg, self.settings.batch_size
        feats = torch.cat([
            instance_features(self.features, images[s : s + step], cfg.resolution, self.device)
            for s in range(0, len(images), step)
        ]) if images else torch.zeros(0, cfg.feat_dim)  # fmt: skip
        owner = [i for i, row in enumerate(seeds) for _ in row]
        flat = [int(s) for row in seeds for s in row]
        outs: list[Tensor] = []
        for s in range(0, len(flat), step):
            z = noise_batch(flat[s : s + step], cfg.dim_z, self.settings.truncation).to(self.device)
            with self._autocast():
                x = self.generator(z, feats[owner[s : s + step]])
            x = x.float()
            if self.settings.size != cfg.resolution:
                size = (self.settings.size, self.settings.size)
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            outs.append(x.cpu())
        allx = torch.cat(outs) if outs else torch.zeros(0, 3, self.settings.size, self.settings.size)
        return list(torch.split(allx, [len(row) for row in seeds]))

    def generate(
        self, sources: Sequence[SourceImage], seeds: Sequence[Sequence[int]]
    ) -> list[list[Image.Image]]:
        """``len(seeds[i])`` RGB ``size x size`` variants of each ``sources[i]`` (module docstring)."""
        tensors = self.generate_tensors([src.image for src in sources], seeds)
        return [[to_pil(x) for x in batch] for batch in tensors]


def to_pil(x: Tensor) -> Image.Image:
    """IC-GAN's ``convert_to_images`` of one ``[3, H, W]`` image in [-1, 1]:
    ``uint8(clip((x + 1) / 2 * 256, 0, 255))``."""
    arr = ((x.float() + 1.0) / 2.0 * 256.0).clamp(0.0, 255.0).to(torch.uint8)
    return Image.fromarray(arr.permute(1, 2, 0).contiguous().numpy())


def build_icgan(model_dir: Path | None, settings: GeneratorSettings) -> ICGANVariantGenerator:
    """The IC-GAN variant generator of the model folder ``model_dir`` (module docstring)."""
    files = find_model_files(model_dir)
    generator = load_generator(files.generator)
    features, report = load_swav_resnet50(files.swav)
    if generator.cfg.feat_dim != 2048:
        raise CheckpointError(
            f"{files.generator}: shared_feat takes {generator.cfg.feat_dim}-d features, "
            f"SwAV ResNet-50 gives 2048"
        )
    extra = {"feature_extractor_load": report.summary()}
    return ICGANVariantGenerator(generator, features, settings, files, extra)
