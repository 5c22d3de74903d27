"""The recipe schema: typed, frozen dataclasses validated strictly by :mod:`core.config`.

A recipe = backbone x SSL method x augmentation policy x pretraining data x optimisation x label regime.
YAML files under ``pretrain/recipes/`` provide the values (see :mod:`pretrain.recipes`); the defaults
here are the papers' values where a paper fixes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pretrain.augment.config import SourceConfig, StageConfig


@dataclass(frozen=True)
class BackboneConfig:
    """Backbone architecture; ``name`` is a key of :data:`pretrain.backbones.BACKBONES`."""

    name: str = "resnet50"


@dataclass(frozen=True)
class MocoConfig:
    """MoCo v2 (Chen et al. 2020, arXiv 2003.04297; MoCo: He et al. 2019, arXiv 1911.05722)."""

    kind: Literal["moco"] = "moco"
    dim: int = 128  # output dimension of the projection head
    hidden_dim: int = 2048  # hidden width of the 2-layer MLP head
    queue_size: int = 65536
    momentum: float = 0.999  # key-encoder EMA momentum m
    temperature: float = 0.2
    shuffle_bn: bool = True  # shuffle the key batch across processes under DDP (no-op on one process)

    def __post_init__(self) -> None:
        if self.queue_size < 1 or self.dim < 1 or self.hidden_dim < 1:
            raise ValueError("queue_size, dim and hidden_dim must be positive")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


@dataclass(frozen=True)
class SimCLRConfig:
    """SimCLR (Chen et al. 2020, arXiv 2002.05709): NT-Xent over 2N views, 2-layer MLP projector.

    Defaults: the paper's ImageNet setup (projector 2048 -> 128, temperature 0.1 for batch 4096).
    """

    kind: Literal["simclr"] = "simclr"
    dim: int = 128  # output dimension of the projector g
    hidden_dim: int = 2048  # hidden width of g (the ResNet-50 feature width in the paper)
    temperature: float = 0.1

    def __post_init__(self) -> None:
        _check_positive(dim=self.dim, hidden_dim=self.hidden_dim, temperature=self.temperature)


@dataclass(frozen=True)
class BYOLConfig:
    """BYOL (Grill et al. 2020, arXiv 2006.07733): online projector + predictor, EMA target.

    Defaults: the paper (projector and predictor 4096 -> 256, tau_base = 0.996 with the cosine schedule).
    """

    kind: Literal["byol"] = "byol"
    dim: int = 256  # projection (and prediction) dimension
    hidden_dim: int = 4096  # hidden width of the projector
    pred_hidden_dim: int = 4096  # hidden width of the predictor
    base_momentum: float = 0.996  # tau_base; tau rises to 1 along a cosine over training

    def __post_init__(self) -> None:
        _check_positive(dim=self.dim, hidden_dim=self.hidden_dim, pred_hidden_dim=self.pred_hidden_dim)
        if not 0.0 <= self.base_momentum <= 1.0:
            raise ValueError(f"base_momentum must be in [0, 1], got {self.base_momentum}")


@dataclass(frozen=True)
class SimSiamConfig:
    """SimSiam (Chen & He 2020, arXiv 2011.10566): 3-layer projector, bottleneck predictor, stop-gradient.

    Defaults: the paper (projector 2048-2048-2048, predictor 2048 -> 512 -> 2048, fixed predictor lr).
    """

    kind: Literal["simsiam"] = "simsiam"
    dim: int = 2048  # projection dimension (output of the projector and the predictor)
    hidden_dim: int = 2048  # hidden width of the projector
    pred_hidden_dim: int = 512  # bottleneck width of the predictor
    fix_pred_lr: bool = True  # keep the predictor's lr at the base lr (no schedule), Sec. 4.3

    def __post_init__(self) -> None:
        _check_positive(dim=self.dim, hidden_dim=self.hidden_dim, pred_hidden_dim=self.pred_hidden_dim)


@dataclass(frozen=True)
class BarlowConfig:
    """Barlow Twins (Zbontar et al. 2021, arXiv 2103.03230): cross-correlation towards the identity.

    Defaults: the paper (projector 8192-8192-8192, lambda = 0.0051 as in the official code).
    """

    kind: Literal["barlow"] = "barlow"
    dim: int = 8192  # projector output dimension D (C is D x D)
    hidden_dim: int = 8192  # width of the projector's two hidden layers
    lambd: float = 0.0051  # weight of the redundancy-reduction (off-diagonal) term

    def __post_init__(self) -> None:
        _check_positive(dim=self.dim, hidden_dim=self.hidden_dim)
        if self.lambd < 0:
            raise ValueError(f"lambd must be non-negative, got {self.lambd}")


# tagged union: the strict loader dispatches on ``kind``
MethodConfig = MocoConfig | SimCLRConfig | BYOLConfig | SimSiamConfig | BarlowConfig


@dataclass(frozen=True)
class ViewConfig:
    """One view of the standard SSL view pipeline, applied per sample with independent parameters.

    Order (as in MoCo v2 / SimCLR): random resized crop -> horizontal flip -> colour jitter (p) ->
    grayscale (p) -> Gaussian blur (p) -> solarize (p).  ``size`` is the output side in pixels.
    """

    size: int = 224
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0

    def __post_init__(self) -> None:
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        if self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")


@dataclass(frozen=True)
class AugmentConfig:
    """The augmentation policy: source stages (the generative swap, at most one), per-view pipelines (two
    views), then batch-level ``stages`` in order."""

    views: tuple[ViewConfig, ...] = (ViewConfig(), ViewConfig())
    stages: tuple[StageConfig, ...] = ()
    sources: tuple[SourceConfig, ...] = ()

    def __post_init__(self) -> None:
        if len(self.views) != 2:
            raise ValueError(f"exactly two views are supported, got {len(self.views)}")
        if len(self.sources) > 1:
            raise ValueError("at most one source stage (generative) per recipe")
        mixing = [s for s in self.stages if s.kind in ("mixup", "cutmix")]
        if len(mixing) > 1:
            raise ValueError("at most one mixing stage (mixup or cutmix) per recipe")


@dataclass(frozen=True)
class DataConfig:
    """Pretraining images: an ImageFolder-layout dataset under the data root.

    ``dataset`` names a dataset of :mod:`tasks.datasets` whose ``split`` is an ImageFolder tree.
    Images are decoded, resized (shorter side) and centre-cropped to ``image_size`` once per sample;
    the random crops of the views are then taken from that square (batched, on the training device).
    """

    dataset: str = "imagenet"
    split: str = "train"
    image_size: int = 256
    in_memory: bool = False  # decode the whole split once into a uint8 tensor (small data only)
    num_workers: int = 8
    max_images: int | None = None  # use only the first N images (sorted order), for quick runs
    # corrupt/unreadable images: "raise" stops with the file's path (lazy, no extra pass);
    # "skip" decodes every file once up front, drops bad ones and records them in pretrain.json
    on_corrupt: Literal["raise", "skip"] = "raise"


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and schedule; ``lr`` is for ``batch_size`` = ``lr_batch_size`` and scaled linearly.

    ``name``: ``sgd`` (torch's SGD with momentum), ``adamw``, or ``lars`` (:class:`pretrain.optim.LARS`,
    You et al. 2017, arXiv 1708.03888, as used by SimCLR, BYOL and Barlow Twins).  ``momentum`` applies to
    ``sgd`` and ``lars``; ``eta`` and ``exclude_bias_and_norm`` to ``lars`` only.  With
    ``exclude_bias_and_norm`` (the three papers' choice), biases and normalisation parameters (every
    parameter with at most one dimension) form separate optimiser groups with no weight decay and no
    LARS adaptation; sgd and adamw decay every parameter, as MoCo v2 and SimSiam do.
    ``bias_lr_scale`` multiplies the learning rate of those bias/norm groups at every step of the schedule
    (Barlow Twins, arXiv 2103.03230 Sec. 4: lr 0.2 for weights and 0.0048 for biases and BN parameters,
    i.e. 0.024); it needs the separate groups, so a value other than 1 requires ``name: lars`` with
    ``exclude_bias_and_norm``.
    """

    name: Literal["sgd", "adamw", "lars"] = "sgd"
    lr: float = 0.03
    lr_batch_size: int = 256
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: float = 0.0
    schedule: Literal["cosine", "constant"] = "cosine"
    eta: float = 0.001  # LARS trust coefficient
    exclude_bias_and_norm: bool = True  # LARS: biases and norm parameters get neither wd nor adaptation
    bias_lr_scale: float = 1.0  # lr of the bias/norm groups relative to the weights' lr

    def __post_init__(self) -> None:
        if self.eta <= 0:
            raise ValueError(f"eta must be positive, got {self.eta}")
        if self.bias_lr_scale <= 0:
            raise ValueError(f"bias_lr_scale must be positive, got {self.bias_lr_scale}")
        if self.bias_lr_scale != 1.0 and not self.splits_bias_and_norm:
            raise ValueError(
                "bias_lr_scale needs separate bias/norm groups: set name: lars, exclude_bias_and_norm: true"
            )
        if self.name in ("sgd", "lars") and not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    @property
    def splits_bias_and_norm(self) -> bool:
        """Whether biases and normalisation parameters get their own optimiser groups."""
        return self.name == "lars" and self.exclude_bias_and_norm


@dataclass(frozen=True)
class TrainConfig:
    """Training-loop settings.

    ``sync_bn``: under DDP with more than one process, BatchNorm layers compute their batch statistics
    over the global batch (``torch.nn.SyncBatchNorm``), as SimCLR ("global BN", arXiv 2002.05709 Sec.
    2.2), BYOL, SimSiam and Barlow Twins train; a no-op on one process.  MoCo v2 keeps per-process BN
    with its shuffled key batch (``method.shuffle_bn``) instead, see :meth:`MoCoV2.convert_sync_batchnorm_`.
    torch synchronises BN only for accelerator tensors, so CPU multi-process runs need ``sync_bn: false``.
    """

    epochs: int = 200
    batch_size: int = 256
    seed: int = 0
    precision: Literal["bf16", "fp16", "fp32", "auto"] = "auto"
    channels_last: bool = True
    checkpoint_every: int = 1000  # steps between full-state checkpoints (and one at the end)
    log_every: int = 10  # steps between TensorBoard scalar writes
    max_steps: int | None = None  # stop after this many steps in total (for quick runs/tests)
    sync_bn: bool = False  # SyncBatchNorm under DDP (world size > 1); the paper profile turns it on


@dataclass(frozen=True)
class RecipeConfig:
    """A complete pretraining recipe."""

    name: str
    method: MethodConfig = field(default_factory=MocoConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    label_fraction: float = 0.0  # fraction of pretraining images whose labels the method may use

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_fraction <= 1.0:
            raise ValueError(f"label_fraction must be in [0, 1], got {self.label_fraction}")
