"""IC-GAN's instance features: SwAV ResNet-50 pooled features of a source image, L2-normalised.

IC-GAN (facebookresearch/ic_gan, ``data_utils.load_pretrained_feature_extractor`` with
``feature_extractor="selfsupervised"``) conditions its ImageNet generators on the 2048-d global-average-
pooled ``layer4`` output of a torchvision ResNet-50 loaded from SwAV's ``swav_800ep_pretrain.pth.tar``
(keys ``module.conv1.weight`` ...; the projection head and prototypes are not part of the ResNet and are
ignored), divided by its L2 norm.  IC-GAN's colab and ``predict.py`` preprocess an input image as:

1. centre crop to a square of the short side (``CenterCropLongEdge``);
2. resize to ``resolution x resolution`` (256; PIL bilinear, torchvision ``Resize``);
3. ``ToTensor`` and ImageNet mean/std normalisation;
4. ``F.interpolate`` to 224 x 224, bicubic, ``align_corners=True``.

That is what :func:`preprocess` does.  (arXiv 2403.05966's script, VectorInstitute/GenerativeSSL
``data_generation/img2img_icgan.py``, instead crops and normalises images of a 256-px ImageNet copy and
feeds them to the ResNet without the 224 resize; IC-GAN's own inference path is followed here.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor, nn

from core.errors import CheckpointError
from pretrain.external import LoadReport, load_external

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_SIDE = 224


def swav_resnet50() -> nn.Module:
    """A torchvision ResNet-50 whose output is the pooled 2048-d feature (``fc`` replaced by identity)."""
    net = torchvision.models.resnet50(weights=None)
    net.fc = nn.Identity()
    return net


def load_swav_resnet50(path: Path) -> tuple[nn.Module, LoadReport]:
    """The ResNet-50 feature extractor with every tensor loaded from ``path`` (eval mode).

    ``path``: a torchvision-style ResNet-50 state dict, under any key prefix (SwAV: ``module.``), as ``.pth``/
    ``.pth.tar`` (read with ``torch.load(weights_only=True)``) or safetensors.  Raises
    :class:`~core.errors.CheckpointError` naming the file when it is unreadable or not a ResNet-50.
    """
    net = swav_resnet50()
    try:
        report = load_external(net, path, allow_partial=True)
    except CheckpointError as exc:
        if "no tensor matches" not in str(exc):
            raise
        raise CheckpointError(
            f"{path} is not a ResNet-50 state dict: no tensor matches torchvision's resnet50 keys "
            f"(IC-GAN needs SwAV's swav_800ep_pretrain.pth.tar)"
        ) from None
    if report.missing or report.mismatched:
        bad = report.mismatched[:2] + report.missing[:2]
        raise CheckpointError(
            f"{path} is not a ResNet-50 state dict: {len(report.missing)} resnet50 tensors missing, "
            f"{len(report.mismatched)} of another shape (e.g. {', '.join(bad)}) under key prefix "
            f"{report.prefix!r}; IC-GAN needs SwAV's swav_800ep_pretrain.pth.tar"
        )
    return net.eval(), report


def preprocess(image: Image.Image, resolution: int = 256) -> Tensor:
    """IC-GAN's preprocessing of one input image (module docstring): ``[3, 224, 224]`` float32."""
    img = image.convert("RGB")
    img = TF.center_crop(img, [min(img.size), min(img.size)])
    img = TF.resize(img, [resolution, resolution], interpolation=TF.InterpolationMode.BILINEAR)
    x = TF.normalize(TF.to_tensor(img), list(IMAGENET_MEAN), list(IMAGENET_STD))
    return F.interpolate(x.unsqueeze(0), FEATURE_SIDE, mode="bicubic", align_corners=True)[0]


@torch.inference_mode()
def instance_features(
    net: nn.Module, images: Sequence[Image.Image], resolution: int = 256, device: torch.device | None = None
) -> Tensor:
    """L2-normalised SwAV features ``[len(images), 2048]`` (float32, on ``device``) of ``images``."""
    device = device or torch.device("cpu")
    x = torch.stack([preprocess(im, resolution) for im in images]).to(device)
    feats = net(x).float()
    return feats / torch.linalg.norm(feats, dim=-1, keepdim=True)
