"""The contract of an instance-conditioned generator that writes variants of training images offline.

arXiv 2403.05966 ("Can Generative Models Improve Self-Supervised Representation Learning?") generates,
before SSL pretraining, about 10 *variants* of every training image with an instance-conditioned
generator (Stable unCLIP / SD image variations, or IC-GAN) and, during pretraining, replaces a view's
source image by one of them with probability p.  This module fixes what every generator provides; the
variant store (:mod:`pretrain.generative.store`) drives generators, and never knows which one it runs.

* :class:`GeneratorSettings`: the typed, recorded settings of one ``bench generate`` invocation.
* :class:`SourceImage`: one source image handed to a generator (decoded RGB, with its identity).
* :class:`VariantGenerator`: ``generate(sources, seeds) -> variants``.  ``seeds[i][k]`` is the seed of
  variant ``k`` of ``sources[i]``; the store derives it from (settings.seed, the source's relative path,
  k), so a variant's pixels do not depend on batching, sharding or resumption.  A generator must seed all
  randomness of variant ``(i, k)`` from ``seeds[i][k]`` alone (e.g. one ``torch.Generator`` per output).
* :class:`GeneratorSpec`: a registry entry (:data:`pretrain.generative.registry.GENERATORS`), building a
  generator from a local model folder; optional stacks (diffusers) are imported only inside ``build``.

Nothing is ever downloaded: a model is a local folder (``--model DIR``), and a missing folder or file is a
:class:`~core.errors.BenchError` naming where it looked and what must be there.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from PIL import Image

from core.errors import BenchError
from core.paths import cache_dir

if TYPE_CHECKING:
    from pretrain.generative.sources import SourceSet

#: File suffixes that hold weights (hashed into a model folder's digest).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".tar", ".npz")


class MissingExtraError(BenchError):
    """An optional dependency stack is not installed; the message names the pip extra."""

    def __init__(self, what: str, extra: str, module: str) -> None:
        super().__init__(
            f"{what} needs the optional package {module!r}: pip install 'augbench[{extra}]' "
            f"(or `make setup`, whose dev extra includes it)"
        )


class ModelFolderError(BenchError):
    """A local model folder that is missing or lacks required files."""


@dataclass(frozen=True)
class GeneratorSettings:
    """Settings of one generation (recorded in the store manifest; a store refuses other settings).

    Attributes:
        per_image: variants per source image (the paper: 10).
        steps: denoising steps of diffusion generators (the paper: DDIM, 10 steps).
        size: output side in pixels (square; the paper: 224 for SD, 256 for IC-GAN).
        seed: base seed; variant ``k`` of source ``rel`` gets :func:`variant_seed` ``(seed, rel, k)``.
        batch_size: source images per generator call.
        noise_level: Stable unCLIP's image-embedding noise level (0 = closest to the source; the
            diffusers default 0); how far a variant may drift from its source.
        guidance_scale: classifier-free guidance of the diffusion generators (``bench generate``
            defaults: 10.0 for sd-unclip, the pipeline default arXiv 2403.05966's script kept; 3.0 for
            sd-variations, its model card's value; <= 1 disables guidance).
        truncation: IC-GAN's truncated-normal noise bound (the paper: 0.7).
        keep: the oracle's closeness of a variant to its source instance, in [0, 1] (see oracle.py).
        device: ``auto`` (CUDA if available, else CPU), ``cpu`` or ``cuda[:i]``.
    """

    per_image: int = 10
    steps: int = 10
    size: int = 224
    seed: int = 0
    batch_size: int = 8
    noise_level: int = 0
    guidance_scale: float = 3.0
    truncation: float = 0.7
    keep: float = 0.5
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.per_image < 1 or self.steps < 1 or self.size < 8 or self.batch_size < 1:
            raise ValueError("per_image, steps and batch_size must be >= 1 and size >= 8")
        if not 0.0 <= self.keep <= 1.0:
            raise ValueError(f"keep must be in [0, 1], got {self.keep}")
        if self.truncation <= 0.0:
            raise ValueError(f"truncation must be positive, got {self.truncation}")
        if self.noise_level < 0:
            raise ValueError(f"noise_level must be >= 0, got {self.noise_level}")

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass(frozen=True)
class SourceImage:
    """One source image for a generator.

    Attributes:
        index: position of the sample in the dataset split (the loader's order).
        relpath: the source file's path relative to the dataset folder (``train/n01440764/x.JPEG``);
            for container formats (CIFAR pickles) a stable pseudo-path (``train/000123``).
        label: the dataset label (generators must not use it, except the synthetic oracle).
        image: the decoded RGB image at its stored resolution.
    """

    index: int
    relpath: str
    label: int
    image: Image.Image


class VariantGenerator(Protocol):
    """An instance-conditioned generator (see the module docstring for the seeding rule)."""

    name: str

    def describe(self) -> dict[str, Any]:
        """What to record in the store manifest besides the settings (model folder, weights digest,
        scheduler, dtype, anything that changes the pixels)."""
        ...

    def generate(
        self, sources: Sequence[SourceImage], seeds: Sequence[Sequence[int]]
    ) -> list[list[Image.Image]]:
        """``len(seeds[i])`` RGB variants of each ``sources[i]``, each ``size`` x ``size``."""
        ...


@runtime_checkable
class SplitAwareGenerator(Protocol):
    """A generator that needs the whole source split before generating (the synthetic oracle replays how
    the stand-in was rendered); the driver calls ``bind`` once, before the first ``generate``."""

    def bind(self, sources: SourceSet) -> None: ...


@dataclass(frozen=True)
class GeneratorSpec:
    """A registered generator.

    Attributes:
        description: one line for listings.
        needs_model: whether ``--model DIR`` is required.
        model_files: what a model folder must contain (shown when it does not).
        build: ``(model_dir or None, settings) -> VariantGenerator``.
        oracle: the generator is the synthetic-data oracle (labelled as such in every result).
        default_size: output side when ``--size`` is not given (0: the source images' own size).
        default_guidance: classifier-free guidance when ``--guidance-scale`` is not given.
    """

    description: str
    needs_model: bool
    model_files: str
    build: Callable[[Path | None, GeneratorSettings], VariantGenerator]
    oracle: bool = False
    default_size: int = 224
    default_guidance: float = 3.0


def variant_seed(seed: int, relpath: str, k: int) -> int:
    """The 63-bit seed of variant ``k`` of the source at ``relpath`` under base seed ``seed``."""
    digest = hashlib.sha256(f"{seed}/{relpath}/{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def require_model_folder(model_dir: Path | None, generator: str, required: Sequence[str], hint: str) -> Path:
    """Check that ``model_dir`` exists and holds every relative path in ``required``.

    Raises :class:`ModelFolderError` saying where it looked, what is missing and ``hint`` (how to obtain
    the weights); nothing is ever fetched from a hub.
    """
    if model_dir is None:
        raise ModelFolderError(f"generator {generator!r} needs --model DIR (a local folder: {hint})")
    model_dir = Path(model_dir).expanduser()
    if not model_dir.is_dir():
        raise ModelFolderError(f"model folder not found: {model_dir} (generator {generator!r}: {hint})")
    missing = [rel for rel in required if not (model_dir / rel).exists()]
    if missing:
        raise ModelFolderError(
            f"model folder {model_dir} lacks {', '.join(missing)} (generator {generator!r} needs "
            f"{', '.join(required)}; {hint})"
        )
    return model_dir.resolve()


def weights_digest(paths: Path | Sequence[Path]) -> str:
    """SHA-256 over the weight files of a model folder (or of the given files), by relative path.

    Every file under a folder whose suffix is in :data:`WEIGHT_SUFFIXES` contributes its relative path and
    its bytes.  Digests of multi-GB folders are memoised in ``<cache>/weights-digests.json`` keyed by
    (absolute path, size, mtime), so they are computed once per file.
    """
    items: list[tuple[str, Path]] = []
    for root in [paths] if isinstance(paths, Path) else list(paths):
        root = Path(root)
        if root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
            items.extend((str(p.relative_to(root)), p) for p in files)
        else:
            items.append((root.name, root))
    if not items:
        raise ModelFolderError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) under {paths}")
    memo_path = cache_dir() / "weights-digests.json"
    try:
        memo: dict[str, str] = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    h = hashlib.sha256()
    changed = False
    for rel, path in items:
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in memo:
            fh = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    fh.update(block)
            memo[key], changed = fh.hexdigest(), True
        h.update(f"{rel}\0{memo[key]}\n".encode())
    if changed:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_path.with_name(f".{memo_path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(memo, indent=1))
        os.replace(tmp, memo_path)
    return h.hexdigest()
