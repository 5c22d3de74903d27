"""Loading the diffusers pipelines of the diffusion generators from local model folders (never a hub).

What each generator needs (:data:`PIPELINES`), the import guard for the optional ``[gen]`` stack, the
model-folder check, ``from_pretrained(DIR, local_files_only=True)`` with the dtype rule (fp16 on CUDA,
fp32 elsewhere) and the DDIM scheduler swap.  :mod:`pretrain.generative.diffusion` builds generators on
top of this.  diffusers/transformers are imported only inside these functions.

Scheduler rule (arXiv 2403.05966's generation script, VectorInstitute/GenerativeSSL
``data_generation/img2img_stable_diff.py``): Stable unCLIP samples with
``DDIMScheduler.from_config(folder scheduler config, rescale_betas_zero_snr=True,
timestep_spacing="trailing")``, eta 0.  SD image variations (not in the paper) samples with
``DDIMScheduler.from_config(folder scheduler config)`` (the lambdalabs folder ships PNDM): zero-terminal-SNR
rescaling is only valid for v-prediction models, and that model predicts epsilon.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pretrain.generative.base import MissingExtraError, ModelFolderError, require_model_folder


@dataclass(frozen=True)
class PipelineKind:
    """How one diffusion generator loads its pipeline.

    Attributes:
        generator: the registry name (``sd-unclip`` / ``sd-variations``).
        pipeline: the diffusers pipeline class name.
        components: the component folders the pipeline needs (besides ``model_index.json``).
        hint: how to obtain a folder (shown when it is missing or incomplete).
        zero_snr_trailing: swap in DDIM with zero-terminal-SNR betas and trailing timesteps (the paper).
        has_safety_checker: the pipeline has a ``safety_checker`` component (always disabled here).
    """

    generator: str
    pipeline: str
    components: tuple[str, ...]
    hint: str
    zero_snr_trailing: bool
    has_safety_checker: bool


_SAVE_HINT = (
    "save it once on a machine with internet: {cls}.from_pretrained('{repo}').save_pretrained(DIR), "
    "or pass the Hugging Face cache snapshot folder models--{flat}/snapshots/<revision>; "
    "see docs/generative-diffusion.md"
)

PIPELINES: dict[str, PipelineKind] = {
    "sd-unclip": PipelineKind(
        generator="sd-unclip",
        pipeline="StableUnCLIPImg2ImgPipeline",
        components=(
            "feature_extractor",
            "image_encoder",
            "image_normalizer",
            "image_noising_scheduler",
            "tokenizer",
            "text_encoder",
            "unet",
            "scheduler",
            "vae",
        ),
        hint=_SAVE_HINT.format(
            cls="StableUnCLIPImg2ImgPipeline",
            repo="stabilityai/stable-diffusion-2-1-unclip-small",
            flat="stabilityai--stable-diffusion-2-1-unclip-small",
        ),
        zero_snr_trailing=True,
        has_safety_checker=False,
    ),
    "sd-variations": PipelineKind(
        generator="sd-variations",
        pipeline="StableDiffusionImageVariationPipeline",
        components=("feature_extractor", "image_encoder", "unet", "scheduler", "vae"),
        hint=_SAVE_HINT.format(
            cls="StableDiffusionImageVariationPipeline",
            repo="lambdalabs/sd-image-variations-diffusers",
            flat="lambdalabs--sd-image-variations-diffusers",
        ),
        zero_snr_trailing=False,
        has_safety_checker=True,
    ),
}


def import_gen_stack(generator: str) -> Any:
    """Import diffusers (and check transformers); a missing one raises :class:`MissingExtraError`."""
    modules: dict[str, Any] = {}
    for module in ("diffusers", "transformers"):
        try:
            modules[module] = importlib.import_module(module)
        except ImportError as exc:
            raise MissingExtraError(f"generator {generator!r}", "gen", module) from exc
    return modules["diffusers"]


def dtype_for(device: torch.device) -> torch.dtype:
    """fp16 on CUDA (as the paper's generation), fp32 elsewhere (fp16 kernels on CPU are slow or absent)."""
    return torch.float16 if device.type == "cuda" else torch.float32


def weights_variant(model_dir: Path) -> str | None:
    """``"fp16"`` when the UNet folder holds only fp16-variant weight files (``*.fp16.safetensors``, as in
    some hub snapshots fetched with ``variant="fp16"``), else ``None`` (the default weight files)."""
    names = [p.name for p in (model_dir / "unet").iterdir() if p.is_file()]
    plain = [n for n in names if n.startswith("diffusion_pytorch_model") and n.count(".") == 1]
    fp16 = [n for n in names if n.startswith("diffusion_pytorch_model.fp16.")]
    return "fp16" if fp16 and not plain else None


@dataclass(frozen=True)
class LoadedPipeline:
    """A loaded pipeline and what was decided while loading it (recorded by ``describe()``)."""

    pipe: Any
    kind: PipelineKind
    model_dir: Path
    dtype: torch.dtype
    device: torch.device
    variant: str | None
    model_index_class: str
    folder_scheduler: str
    scheduler: dict[str, Any]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def load_pipeline(
    kind: PipelineKind, model_dir: Path | None, device: torch.device, dtype: torch.dtype | None = None
) -> LoadedPipeline:
    """Load ``kind``'s pipeline from ``model_dir`` onto ``device`` (offline; ``dtype`` defaults to
    :func:`dtype_for`), swap in the DDIM scheduler and disable the safety checker and progress bar."""
    diffusers = import_gen_stack(kind.generator)
    folder = require_model_folder(
        model_dir, kind.generator, ("model_index.json", *kind.components), kind.hint
    )
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelFolderError(f"unreadable {folder / 'model_index.json'}: {_first_line(exc)}") from exc
    dtype = dtype or dtype_for(device)
    variant = weights_variant(folder)
    extra: dict[str, Any] = {}
    if kind.has_safety_checker:
        extra = {"safety_checker": None, "requires_safety_checker": False}
    cls = getattr(diffusers, kind.pipeline)
    try:
        with warnings.catch_warnings():  # newer diffusers renamed the keyword to `dtype`; older lack `dtype`
            warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
            pipe = cls.from_pretrained(
                str(folder),
                local_files_only=True,
                torch_dtype=dtype,
                variant=variant,
                low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None,
                **extra,
            )
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise ModelFolderError(
            f"cannot load {kind.pipeline} from {folder}: {_first_line(exc)} ({kind.hint})"
        ) from exc
    missing = [name for name in kind.components if getattr(pipe, name, None) is None]
    if missing:
        raise ModelFolderError(
            f"model folder {folder} gave no {', '.join(missing)} (model_index.json lists them as null?); "
            f"generator {kind.generator!r} needs {', '.join(kind.components)}"
        )
    folder_scheduler = type(pipe.scheduler).__name__
    if kind.zero_snr_trailing:
        pipe.scheduler = diffusers.DDIMScheduler.from_config(
            pipe.scheduler.config, rescale_betas_zero_snr=True, timestep_spacing="trailing"
        )
    else:
        pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    cfg = pipe.scheduler.config
    scheduler = {
        "class": "DDIMScheduler",
        "folder_class": folder_scheduler,
        "prediction_type": cfg.prediction_type,
        "timestep_spacing": cfg.timestep_spacing,
        "rescale_betas_zero_snr": bool(cfg.rescale_betas_zero_snr),
        "beta_schedule": cfg.beta_schedule,
        "eta": 0.0,
    }
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)  # the driver shows progress over source images
    return LoadedPipeline(
        pipe=pipe,
        kind=kind,
        model_dir=folder,
        dtype=dtype,
        device=device,
        variant=variant,
        model_index_class=str(index.get("_class_name", "")),
        folder_scheduler=folder_scheduler,
        scheduler=scheduler,
    )
