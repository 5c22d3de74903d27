"""The dataset registry: what each dataset is called, where it lives under a data root, how to load,
verify and synthesise it.

Entries are listed explicitly in :func:`build_dataset_registry`; adding a dataset means one module with its
reader/writer/stand-in (like :mod:`tasks.datasets.cifar`) plus one ``DatasetInfo`` there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.errors import DatasetError
from core.registry import Registry
from tasks.datasets import (
    ade20k,
    cifar,
    cityscapes,
    coco,
    food101,
    imagefolder,
    imagenet100,
    inat,
    places365,
    voc,
    voc_seg,
)
from tasks.datasets.base import ImageDataset, OnCorrupt
from tasks.datasets.synth.dense_scenes import SCENES_VERSION
from tasks.datasets.synth.scenes import SCENE_VERSION
from tasks.datasets.synth.shapes import GENERATOR_VERSION

SYNTHETIC_SCALES = ("smoke", "tiny")


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset.

    Attributes:
        name: registry name (``"cifar10"``).
        description: one line for listings.
        relpath: folder under the data root that holds the dataset (must exist for it to be present).
        splits: split names accepted by :meth:`load`.
        train_split: the split to train/pretrain on.
        test_split: the held-out split used for evaluation (CIFAR: ``"test"``; ImageNet: ``"val"``).
        num_classes: number of classes of the real dataset (the synthetic stand-ins have the same count
            where feasible, see ``synthetic_classes``).
        synthetic_classes: number of classes of the synthetic stand-in.
        default_size / default_resize: eval-transform sizes of the real data, used when :meth:`load` gets
            ``None`` (a given ``size`` without ``resize`` keeps their ratio).
        synthetic_image_size: side in pixels of the synthetic stand-in's images.
        prepare_hint: how to obtain the real data (shown in errors).
        loader: ``(root, split, size, resize, on_corrupt) -> ImageDataset``, or ``None`` for datasets that
            are not image-classification sets (detection: VOC, COCO, read by their tasks; semantic
            segmentation: read through mmsegmentation).
        synthesizer: ``(root, seed, scale) -> None``; writes the stand-in into ``root / relpath``.
        verifier: ``(root, check_images) -> list[str]`` of problems.
        counter: ``(root, split) -> number of images`` without decoding any (default: ``len(load(...))``).
        generator_version: version of the stand-in's renderer (a cached stand-in of another version is
            regenerated).
        synthetic_owner: the dataset whose stand-in writer also writes this one's files (``voc12aug`` lives
            in the ``voc`` tree: one writer owns ``VOCdevkit``); ``None``: its own.
    """

    name: str
    description: str
    relpath: str
    splits: tuple[str, ...]
    train_split: str
    test_split: str
    num_classes: int
    synthetic_classes: int
    default_size: int
    default_resize: int
    synthetic_image_size: int
    prepare_hint: str
    loader: Callable[[Path, str, int, int, OnCorrupt], ImageDataset] | None
    synthesizer: Callable[[Path, int, str], None]
    verifier: Callable[[Path, bool], list[str]]
    counter: Callable[[Path, str], int] | None = None
    generator_version: int = GENERATOR_VERSION
    synthetic_owner: str | None = None

    def path(self, root: Path | str) -> Path:
        """Where this dataset lives under ``root``."""
        return Path(root) / self.relpath

    def load(
        self,
        root: Path | str,
        split: str,
        size: int | None = None,
        resize: int | None = None,
        on_corrupt: OnCorrupt = "raise",
    ) -> ImageDataset:
        """Load ``split`` from ``root`` (sizes default to ``default_size``/``default_resize``)."""
        if split not in self.splits:
            raise DatasetError(f"{self.name} has splits {', '.join(self.splits)}; got {split!r}")
        if self.loader is None:
            raise DatasetError(
                f"{self.name} is not an image-classification dataset ({self.description}): it cannot be "
                f"loaded as labelled images (pretraining data and linear/kNN tasks need a classification "
                f"dataset; its detection/segmentation tasks read it themselves)"
            )
        if not self.path(root).is_dir():
            raise DatasetError(f"{self.name} not found: no directory {self.path(root)}; {self.prepare_hint}")
        if size is None:
            size = self.default_size
        if resize is None:  # keep the default resize/size ratio (256/224 for ImageNet)
            resize = round(size * self.default_resize / self.default_size)
        return self.loader(Path(root), split, size, resize, on_corrupt)

    def count(self, root: Path | str, split: str) -> int:
        """Number of images in ``split`` under ``root``."""
        if self.counter is not None:
            return self.counter(Path(root), split)
        return len(self.load(root, split).labels)

    def write_synthetic(self, root: Path | str, seed: int, scale: str) -> None:
        """Write the synthetic stand-in (``scale`` in :data:`SYNTHETIC_SCALES`) into ``root / relpath``.

        Writes in place; use :func:`tasks.datasets.synth.writer.ensure_synthetic` for cached, atomic output.
        """
        if scale not in SYNTHETIC_SCALES:
            raise DatasetError(
                f"unknown synthetic scale {scale!r}; choose from {', '.join(SYNTHETIC_SCALES)}"
            )
        self.synthesizer(Path(root), seed, scale)

    def verify(self, root: Path | str, check_images: bool = False) -> list[str]:
        """Problems with the copy under ``root`` (layout, expected files, counts; with ``check_images`` also
        every image decodes); empty if it looks fine."""
        if not self.path(root).is_dir():
            return [f"{self.name}: no directory {self.path(root)}; {self.prepare_hint}"]
        return self.verifier(Path(root), check_images)


def _load_cifar10(root: Path, split: str, size: int, resize: int, on_corrupt: OnCorrupt) -> ImageDataset:
    del on_corrupt  # in-memory pickles: a damaged file always raises
    return cifar.load_cifar10(root, split, size, resize)


def _load_cifar100(root: Path, split: str, size: int, resize: int, on_corrupt: OnCorrupt) -> ImageDataset:
    del on_corrupt  # in-memory pickles: a damaged file always raises
    return cifar.load_cifar100(root, split, size, resize)


def _load_imagenet(root: Path, split: str, size: int, resize: int, on_corrupt: OnCorrupt) -> ImageDataset:
    return imagefolder.load_imagenet(root, split, size, resize, on_corrupt)


def build_dataset_registry() -> Registry[DatasetInfo]:
    """A fresh registry holding every dataset, listed explicitly."""
    registry: Registry[DatasetInfo] = Registry("dataset")
    cifar10 = DatasetInfo(
        name="cifar10",
        description="CIFAR-10 (python version): 50k train / 10k test 32x32 images, 10 classes",
        relpath=cifar.CIFAR10_DIR,
        splits=("train", "test"),
        train_split="train",
        test_split="test",
        num_classes=10,
        synthetic_classes=10,
        default_size=32,
        default_resize=32,
        synthetic_image_size=32,
        prepare_hint=cifar.CIFAR10_PREPARE_HINT,
        loader=_load_cifar10,
        synthesizer=cifar.write_synthetic_cifar10,
        verifier=cifar.verify_cifar10,
    )
    imagenet = DatasetInfo(
        name="imagenet",
        description="ImageNet-1k (ILSVRC2012) as an ImageFolder tree: train / val per wnid",
        relpath=imagefolder.IMAGENET_DIR,
        splits=imagefolder.IMAGENET_SPLITS,
        train_split="train",
        test_split="val",
        num_classes=1000,
        synthetic_classes=imagefolder.IMAGENET_SYNTH_CLASSES,
        default_size=224,
        default_resize=256,
        synthetic_image_size=imagefolder.IMAGENET_SYNTH_SIZE,
        prepare_hint=imagefolder.IMAGENET_PREPARE_HINT,
        loader=_load_imagenet,
        synthesizer=imagefolder.write_synthetic_imagenet,
        verifier=imagefolder.verify_imagenet,
        generator_version=GENERATOR_VERSION * 1000 + imagefolder.IMAGENET_SYNTH_REVISION,
    )
    imagenet_100 = DatasetInfo(
        name="imagenet100",
        description="ImageNet-100 (CMC's 100-class subset), read from the ImageNet tree: train / val",
        relpath=imagefolder.IMAGENET_DIR,
        splits=imagefolder.IMAGENET_SPLITS,
        train_split="train",
        test_split="val",
        num_classes=imagenet100.IMAGENET100_NUM_CLASSES,
        synthetic_classes=imagefolder.IMAGENET_SYNTH_CLASSES - len(imagefolder.IMAGENET_SYNTH_UNLISTED),
        default_size=224,
        default_resize=256,
        synthetic_image_size=imagefolder.IMAGENET_SYNTH_SIZE,
        prepare_hint=imagenet100.IMAGENET100_PREPARE_HINT,
        loader=imagenet100.load_imagenet100,
        synthesizer=imagefolder.write_synthetic_imagenet,  # the owner's writer: see synthetic_owner
        synthetic_owner="imagenet",
        verifier=imagenet100.verify_imagenet100,
        counter=imagenet100.count_imagenet100,
        generator_version=GENERATOR_VERSION * 1000 + imagefolder.IMAGENET_SYNTH_REVISION,
    )
    cifar100 = DatasetInfo(
        name="cifar100",
        description="CIFAR-100 (python version): 50k train / 10k test 32x32 images, 100 fine classes",
        relpath=cifar.CIFAR100_DIR,
        splits=("train", "test"),
        train_split="train",
        test_split="test",
        num_classes=100,
        synthetic_classes=100,
        default_size=32,
        default_resize=32,
        synthetic_image_size=32,
        prepare_hint=cifar.CIFAR100_PREPARE_HINT,
        loader=_load_cifar100,
        synthesizer=cifar.write_synthetic_cifar100,
        verifier=cifar.verify_cifar100,
    )
    food = DatasetInfo(
        name="food101",
        description="Food-101: 75,750 train / 25,250 test photos (max side 512 px), 101 dishes",
        relpath=food101.FOOD101_DIR,
        splits=food101.FOOD101_SPLITS,
        train_split="train",
        test_split="test",
        num_classes=food101.FOOD101_NUM_CLASSES,
        synthetic_classes=food101.FOOD101_SYNTH_CLASSES,
        default_size=224,
        default_resize=256,
        synthetic_image_size=food101.FOOD101_SYNTH_SIZE,
        prepare_hint=food101.FOOD101_PREPARE_HINT,
        loader=food101.load_food101,
        synthesizer=food101.write_synthetic_food101,
        verifier=food101.verify_food101,
    )
    places = DatasetInfo(
        name="places365",
        description="Places365-Standard: 1.8M train / 36.5k val scene photos (256 px or large), 365 scenes",
        relpath=places365.PLACES365_DIR,
        splits=places365.PLACES365_SPLITS,
        train_split="train",
        test_split="val",
        num_classes=places365.PLACES365_NUM_CLASSES,
        synthetic_classes=places365.PLACES365_SYNTH_CLASSES,
        default_size=224,
        default_resize=256,
        synthetic_image_size=places365.PLACES365_SYNTH_SIZE,
        prepare_hint=places365.PLACES365_PREPARE_HINT,
        loader=places365.load_places365,
        synthesizer=places365.write_synthetic_places365,
        verifier=places365.verify_places365,
    )
    inat2018 = DatasetInfo(
        name="inat2018",
        description="iNaturalist 2018: 437,513 train / 24,426 val photos of 8,142 species, long-tailed",
        relpath=inat.INAT2018_DIR,
        splits=inat.INAT2018_SPLITS,
        train_split="train",
        test_split="val",
        num_classes=inat.INAT2018_NUM_CLASSES,
        synthetic_classes=inat.INAT2018_SYNTH_CLASSES,
        default_size=224,
        default_resize=256,
        synthetic_image_size=inat.INAT2018_SYNTH_SIZE,
        prepare_hint=inat.INAT2018_PREPARE_HINT,
        loader=inat.load_inat2018,
        synthesizer=inat.write_synthetic_inat2018,
        verifier=inat.verify_inat2018,
    )
    voc_info = DatasetInfo(
        name="voc",
        description="PASCAL VOC 2007+2012 detection (the VOCdevkit tree, also holding VOC12aug's files)",
        relpath=voc.VOC_DIR,
        splits=voc.VOC_SPLITS,
        train_split="trainval",
        test_split="test",
        num_classes=len(voc.VOC_CLASSES),
        synthetic_classes=len(voc.VOC_SYNTH_SHAPES),
        default_size=800,
        default_resize=800,
        synthetic_image_size=max(voc.VOC_SYNTH_STYLE.widths),
        prepare_hint=voc.VOC_PREPARE_HINT,
        loader=None,
        synthesizer=voc.write_synthetic_voc,
        verifier=voc.verify_voc,
        counter=voc.count_voc,
        # the tree holds both renderers' scenes (detection objects, dense segmentation scenes)
        generator_version=SCENE_VERSION * 1000 + SCENES_VERSION,
    )
    coco_info = DatasetInfo(
        name="coco",
        description="COCO 2017 instances: 118k train2017 / 5k val2017 images, 80 classes, polygon masks",
        relpath=coco.COCO_DIR,
        splits=coco.COCO_SPLITS,
        train_split="train2017",
        test_split="val2017",
        num_classes=coco.COCO_NUM_CLASSES,
        synthetic_classes=len(coco.COCO_SYNTH_CATEGORIES),
        default_size=800,
        default_resize=800,
        synthetic_image_size=max(coco.COCO_SYNTH_STYLE.widths),
        prepare_hint=coco.COCO_PREPARE_HINT,
        loader=None,
        synthesizer=coco.write_synthetic_coco,
        verifier=coco.verify_coco,
        counter=coco.count_coco,
        generator_version=SCENE_VERSION,
    )
    for info in (
        cifar10,
        imagenet,
        imagenet_100,
        cifar100,
        food,
        places,
        inat2018,
        voc_info,
        coco_info,
        *segmentation_datasets(),
    ):
        registry.register(info.name, info)
    return registry


def segmentation_datasets() -> tuple[DatasetInfo, ...]:
    """The semantic-segmentation datasets (no classification loader; see ``tasks/segmentation``)."""
    voc12aug = DatasetInfo(
        name="voc12aug",
        description="PASCAL VOC 2012 segmentation + SBD (aug): 10,582 train / 1,449 val, 20 classes + bg",
        relpath=voc_seg.VOC2012_DIR,
        splits=voc_seg.VOC_SPLITS,
        train_split="train",
        test_split="val",
        num_classes=len(voc_seg.VOC_CLASSES),
        synthetic_classes=len(voc_seg.VOC_STYLE.labels) - 1,
        default_size=512,
        default_resize=512,
        synthetic_image_size=voc_seg.VOC_SYNTH_SIZE[0],
        prepare_hint=voc_seg.VOC12AUG_PREPARE_HINT,
        loader=None,
        synthesizer=voc.write_synthetic_voc,  # the owner's writer: see synthetic_owner
        synthetic_owner="voc",
        verifier=voc_seg.verify_voc12aug,
        counter=voc_seg.count_voc12aug,
        generator_version=SCENE_VERSION * 1000 + SCENES_VERSION,
    )
    city = DatasetInfo(
        name="cityscapes",
        description="Cityscapes fine: 2,975 train / 500 val street scenes (2048x1024), 19 train ids",
        relpath=cityscapes.CITYSCAPES_DIR,
        splits=cityscapes.CITYSCAPES_SPLITS,
        train_split="train",
        test_split="val",
        num_classes=len(cityscapes.CITYSCAPES_CLASSES),
        synthetic_classes=len(cityscapes.CITYSCAPES_STYLE.labels) - 1,
        default_size=769,
        default_resize=769,
        synthetic_image_size=cityscapes.CITYSCAPES_SYNTH_SIZE[0],
        prepare_hint=cityscapes.CITYSCAPES_PREPARE_HINT,
        loader=None,
        synthesizer=cityscapes.write_synthetic_cityscapes,
        verifier=cityscapes.verify_cityscapes,
        counter=cityscapes.count_cityscapes,
        generator_version=SCENES_VERSION,
    )
    ade = DatasetInfo(
        name="ade20k",
        description="ADE20K SceneParsing (ADEChallengeData2016): 20,210 train / 2,000 val, 150 classes",
        relpath=ade20k.ADE20K_DIR,
        splits=ade20k.ADE20K_SPLITS,
        train_split="train",
        test_split="val",
        num_classes=ade20k.ADE20K_NUM_CLASSES,
        synthetic_classes=len(ade20k.ADE20K_STYLE.labels) - 1,
        default_size=512,
        default_resize=512,
        synthetic_image_size=ade20k.ADE20K_SYNTH_SIZE[0],
        prepare_hint=ade20k.ADE20K_PREPARE_HINT,
        loader=None,
        synthesizer=ade20k.write_synthetic_ade20k,
        verifier=ade20k.verify_ade20k,
        counter=ade20k.count_ade20k,
        generator_version=SCENES_VERSION,
    )
    return voc12aug, city, ade


#: The datasets augbench knows about.
DATASETS: Registry[DatasetInfo] = build_dataset_registry()
