"""The Stable Diffusion variant generators (sd-unclip, sd-variations) on tiny random pipelines, offline."""

from __future__ import annotations

import shutil
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import BenchError, ConfigError
from pretrain.generative.base import (
    GeneratorSettings,
    MissingExtraError,
    ModelFolderError,
    SourceImage,
    weights_digest,
)
from pretrain.generative.registry import GENERATORS

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["sd-unclip", "sd-variations"]
BASE = GeneratorSettings(steps=3, size=24, batch_size=4, guidance_scale=3.0, device="cpu")


@pytest.fixture()
def folders(tiny_unclip_dir: Path, tiny_variations_dir: Path) -> dict[str, Path]:
    return {"sd-unclip": tiny_unclip_dir, "sd-variations": tiny_variations_dir}


def _sources(n: int) -> list[SourceImage]:
    """``n`` distinct random RGB images of assorted non-square sizes."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        h, w = 36 + 6 * i, 48 - 4 * i
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out.append(
            SourceImage(
                index=i, relpath=f"train/c{i % 2}/img{i}.png", label=i % 2, image=Image.fromarray(pixels)
            )
        )
    return out


def _build(name: str, folder: Path, settings: GeneratorSettings = BASE) -> Any:
    return GENERATORS.get(name).build(folder, settings)


def _px(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _assert_close(a: Image.Image, b: Image.Image) -> None:
    """Equal up to floating-point rounding of batched kernels: at most one uint8 level on a few pixels.

    (The randomness of a variant is exactly its own; the CPU GEMM/conv kernels round differently for
    different batch sizes at the 1e-7 level, which flips an occasional pixel by one level.)"""
    diff = np.abs(_px(a) - _px(b))
    assert diff.max() <= 1, diff.max()
    assert (diff > 0).mean() < 0.01


def _assert_different(a: Image.Image, b: Image.Image) -> None:
    assert np.abs(_px(a) - _px(b)).mean() > 5.0


@pytest.mark.parametrize("name", NAMES)
def test_loads_offline_and_generates_variants(
    name: str, folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    gen = _build(name, folders[name])
    sources = _sources(3)
    out = gen.generate(sources, [[1, 2], [3], [4, 5, 6]])
    assert [len(v) for v in out] == [2, 1, 3]
    for variants in out:
        for img in variants:
            assert isinstance(img, Image.Image)
            assert img.mode == "RGB" and img.size == (24, 24)
            assert _px(img).std() > 0  # not a blank image
    # the variants of one source differ from each other
    _assert_different(out[2][0], out[2][1])


@pytest.mark.parametrize("name", NAMES)
def test_describe_records_what_changes_pixels(name: str, folders: dict[str, Path]) -> None:
    settings = replace(BASE, noise_level=7 if name == "sd-unclip" else 0, guidance_scale=2.5)
    gen = _build(name, folders[name], settings)
    info = gen.describe()
    assert info["model_dir"] == str(folders[name].resolve())
    assert info["weights_digest"] == weights_digest(folders[name])
    assert (
        info["pipeline"]
        == {
            "sd-unclip": "StableUnCLIPImg2ImgPipeline",
            "sd-variations": "StableDiffusionImageVariationPipeline",
        }[name]
    )
    assert type(gen.loaded.pipe).__name__ == info["pipeline"]
    assert info["dtype"] == "float32" and info["device"] == "cpu"
    assert (info["steps"], info["guidance_scale"], info["size"]) == (3, 2.5, 24)
    assert info["generation_size"] == [32, 32]  # the tiny UNet's native resolution
    assert info["safety_checker"] is None
    sched = info["scheduler"]
    assert sched["class"] == "DDIMScheduler" == type(gen.loaded.pipe.scheduler).__name__
    assert sched["eta"] == 0.0
    if name == "sd-unclip":  # the paper's swap: zero-terminal-SNR betas, trailing timesteps
        assert info["noise_level"] == 7
        assert sched["folder_class"] == "DDIMScheduler"
        assert sched["rescale_betas_zero_snr"] is True and sched["timestep_spacing"] == "trailing"
        assert sched["prediction_type"] == "v_prediction"
    else:  # PNDM in the folder, replaced by DDIM with the folder's betas
        assert info["noise_level"] is None
        assert sched["folder_class"] == "PNDMScheduler"
        assert sched["rescale_betas_zero_snr"] is False and sched["prediction_type"] == "epsilon"


@pytest.mark.parametrize("name", NAMES)
def test_cpu_runs_in_fp32(name: str, folders: dict[str, Path]) -> None:
    pipe = _build(name, folders[name]).loaded.pipe
    for component in ("unet", "vae", "image_encoder"):
        assert getattr(pipe, component).dtype == torch.float32
    if name == "sd-unclip":
        assert pipe.text_encoder.dtype == torch.float32


@pytest.mark.parametrize("name", NAMES)
def test_fp16_path_runs(name: str, folders: dict[str, Path]) -> None:
    """The dtype used on CUDA, exercised on the CPU: every tensor the generator builds itself (image
    embeddings, prompt states) follows the pipeline's dtype."""
    from pretrain.generative.diffusion import _build as build_with_dtype

    gen = build_with_dtype(name, folders[name], BASE, dtype=torch.float16)
    assert gen.loaded.pipe.unet.dtype == torch.float16 and gen.describe()["dtype"] == "float16"
    out = gen.generate(_sources(1), [[1]])
    assert out[0][0].size == (24, 24)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_pixels(name: str, folders: dict[str, Path]) -> None:
    sources = _sources(2)
    a = _build(name, folders[name]).generate(sources, [[11, 12], [13]])
    b = _build(name, folders[name]).generate(sources, [[11, 12], [13]])  # a fresh load
    for va, vb in zip(a, b, strict=True):
        for x, y in zip(va, vb, strict=True):
            assert np.array_equal(_px(x), _px(y))
    c = _build(name, folders[name]).generate(sources, [[21, 12], [13]])
    _assert_different(a[0][0], c[0][0])
    assert np.array_equal(_px(a[0][1]), _px(c[0][1]))  # the other variants keep their seeds' pixels


@pytest.mark.parametrize("name", NAMES)
def test_variant_does_not_depend_on_its_batch(name: str, folders: dict[str, Path]) -> None:
    """Variant (source 2, seed 31) generated with different batch mates, positions, batch sizes and
    variant counts per source: the same image (up to float rounding); its seed, not its slot, decides."""
    gen = _build(name, folders[name])
    sources = _sources(4)
    full = gen.generate(sources, [[10, 11], [20, 21], [30, 31], [40, 41]])[2][1]
    alone = gen.generate([sources[2]], [[31]])[0][0]
    reordered = gen.generate([sources[3], sources[2], sources[0]], [[41], [31, 30, 32], [10]])[1][0]
    unbatched = _build(name, folders[name], replace(BASE, batch_size=1))
    single = unbatched.generate(sources, [[], [20], [31], []])[2][0]
    for other in (alone, reordered, single):
        _assert_close(full, other)
    # the seed, not the position in the batch, decides: the neighbouring output is another image
    _assert_different(full, gen.generate(sources, [[10, 11], [20, 21], [31, 30], [40, 41]])[2][1])


def test_noise_level_reaches_unclip(folders: dict[str, Path]) -> None:
    sources, seeds = _sources(2), [[5], [6]]
    gen0 = _build("sd-unclip", folders["sd-unclip"], replace(BASE, noise_level=0))
    a = gen0.generate(sources, seeds)
    b = _build("sd-unclip", folders["sd-unclip"], replace(BASE, noise_level=0)).generate(sources, seeds)
    c = _build("sd-unclip", folders["sd-unclip"], replace(BASE, noise_level=800)).generate(sources, seeds)
    assert np.array_equal(_px(a[0][0]), _px(b[0][0]))
    assert np.abs(_px(a[0][0]) - _px(c[0][0])).mean() > 0.5
    # noise_level enters through the pipeline's image-noising path: spy on it
    levels: list[int] = []
    pipe = gen0.loaded.pipe
    original = pipe.noise_image_embeddings

    def spy(*args: Any, **kwargs: Any) -> Any:
        levels.append(int(kwargs["noise_level"].flatten()[0]))
        return original(*args, **kwargs)

    pipe.noise_image_embeddings = spy
    gen0.settings = replace(BASE, noise_level=123)
    gen0.generate(sources[:1], [[5]])
    assert levels == [123]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("change", [{"guidance_scale": 7.0}, {"guidance_scale": 1.0}, {"steps": 5}])
def test_settings_reach_the_pipeline(name: str, change: dict[str, Any], folders: dict[str, Path]) -> None:
    sources, seeds = _sources(1), [[3]]
    base = _build(name, folders[name]).generate(sources, seeds)[0][0]
    changed = _build(name, folders[name], replace(BASE, **change)).generate(sources, seeds)[0][0]
    assert np.abs(_px(base) - _px(changed)).mean() > 0.5


def test_size_is_the_output_side(folders: dict[str, Path]) -> None:
    gen = _build("sd-variations", folders["sd-variations"], replace(BASE, size=32))  # = native: no resize
    assert gen.describe()["resize"] == "none"
    assert gen.generate(_sources(1), [[1]])[0][0].size == (32, 32)
    gen = _build("sd-unclip", folders["sd-unclip"], replace(BASE, size=64))
    assert gen.generate(_sources(1), [[1]])[0][0].size == (64, 64)


def test_noise_level_validation(folders: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="0..999"):
        _build("sd-unclip", folders["sd-unclip"], replace(BASE, noise_level=1000))
    with pytest.raises(ConfigError, match="sd-unclip only"):
        _build("sd-variations", folders["sd-variations"], replace(BASE, noise_level=100))


@pytest.mark.parametrize("name", NAMES)
def test_missing_folder_is_a_clear_error(name: str, tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="needs --model DIR"):
        _build(name, None)  # type: ignore[arg-type]
    missing = tmp_path / "nowhere"
    with pytest.raises(BenchError, match=f"model folder not found: {missing}") as info:
        _build(name, missing)
    assert "save_pretrained" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "component"),
    [("sd-unclip", "image_normalizer"), ("sd-unclip", "unet"), ("sd-variations", "image_encoder")],
)
def test_missing_component_is_named(
    name: str, component: str, folders: dict[str, Path], tmp_path: Path
) -> None:
    folder = shutil.copytree(folders[name], tmp_path / "model")
    shutil.rmtree(folder / component)
    with pytest.raises(ModelFolderError, match=f"lacks {component} ") as info:
        _build(name, folder)
    assert "model_index.json" in str(info.value)  # lists everything that is needed
    (folder / "model_index.json").unlink()
    with pytest.raises(ModelFolderError, match="lacks model_index.json"):
        _build(name, folder)


def test_wrong_kind_of_folder_is_named(folders: dict[str, Path]) -> None:
    with pytest.raises(
        ModelFolderError, match="lacks image_normalizer, image_noising_scheduler, tokenizer, text_encoder"
    ):
        _build("sd-unclip", folders["sd-variations"])


def test_corrupt_weights_are_a_clear_error(folders: dict[str, Path], tmp_path: Path) -> None:
    folder = shutil.copytree(folders["sd-variations"], tmp_path / "model")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelFolderError, match="cannot load StableDiffusionImageVariationPipeline"):
        _build("sd-variations", folder)


def test_fp16_variant_folder_loads(folders: dict[str, Path], tmp_path: Path) -> None:
    """A hub snapshot fetched with variant="fp16" names its weights ``*.fp16.safetensors``."""
    folder = shutil.copytree(folders["sd-variations"], tmp_path / "model")
    for path in list(folder.rglob("*.safetensors")):
        stem, suffix = path.name.split(".", 1)
        path.rename(path.with_name(f"{stem}.fp16.{suffix}"))
    gen = _build("sd-variations", folder)
    assert gen.describe()["weights_variant"] == "fp16"
    reference = _build("sd-variations", folders["sd-variations"]).generate(_sources(1), [[9]])
    assert np.array_equal(_px(gen.generate(_sources(1), [[9]])[0][0]), _px(reference[0][0]))


@pytest.mark.parametrize("module", ["diffusers", "transformers"])
@pytest.mark.parametrize("name", NAMES)
def test_missing_stack_names_the_extra(
    name: str, module: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(MissingExtraError) as info:
        _build(name, tmp_path)
    message = str(info.value)
    assert f"'{module}'" in message and "augbench[gen]" in message and name in message
    assert "\n" not in message


def test_core_imports_without_diffusers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The generator modules import diffusers only inside the build functions."""
    import importlib

    monkeypatch.setitem(sys.modules, "diffusers", None)
    monkeypatch.setitem(sys.modules, "transformers", None)
    for mod in (
        "pretrain.generative.diffusion",
        "pretrain.generative.diffusion_load",
        "pretrain.generative.registry",
    ):
        monkeypatch.delitem(sys.modules, mod, raising=False)
        importlib.import_module(mod)


def test_variations_clip_input_follows_the_model_card(folders: dict[str, Path]) -> None:
    """The lambdalabs card's transform (ToTensor, Resize((224, 224), BICUBIC, antialias=False), Normalize
    with CLIP's mean/std), after a centred square crop, is what reaches the image encoder."""
    from torchvision import transforms

    gen = _build("sd-variations", folders["sd-variations"])
    sources = _sources(3)
    side = 32  # the tiny feature extractor's crop size (224 for the real model)
    reference = torch.stack(
        [
            transforms.Compose(
                [
                    transforms.ToTensor(),
                    transforms.CenterCrop(min(s.image.size)),
                    transforms.Resize(
                        (side, side), interpolation=transforms.InterpolationMode.BICUBIC, antialias=False
                    ),
                    transforms.Normalize(
                        [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
                    ),
                ]
            )(s.image)
            for s in sources
        ]
    )
    seen: list[torch.Tensor] = []
    encoder = gen.loaded.pipe.image_encoder
    original = encoder.forward

    def spy(pixel_values: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        seen.append(pixel_values.clone())
        return original(pixel_values, *args, **kwargs)

    encoder.forward = spy
    gen.generate(sources, [[1], [2], [3]])
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], reference, rtol=0, atol=1e-5)
    # the resize really is the non-antialiased one (the sources are downscaled, so antialiasing shows)
    with_antialias = transforms.Compose(
        [
            transforms.ToTensor(),
            transforms.CenterCrop(min(sources[2].image.size)),
            transforms.Resize(
                (side, side), interpolation=transforms.InterpolationMode.BICUBIC, antialias=True
            ),
            transforms.Normalize([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]),
        ]
    )(sources[2].image)
    assert (with_antialias - reference[2]).abs().mean() > 0.05
