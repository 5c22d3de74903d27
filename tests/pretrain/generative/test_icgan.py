"""IC-GAN generator: parity with the reference implementation's recorded outputs, key names of the released
checkpoint, sampling, the SwAV feature extractor and the model folder (fixtures: see fixtures/README.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import load_file, save_file

from core.errors import CheckpointError
from pretrain.generative.base import GeneratorSettings, ModelFolderError, SourceImage
from pretrain.generative.icgan import build_icgan
from pretrain.generative.icgan.biggan import (
    BigGANConfig,
    ICGANGenerator,
    config_from_state_dict,
    state_dict_shapes,
)
from pretrain.generative.icgan.features import instance_features, load_swav_resnet50, preprocess
from pretrain.generative.icgan.generator import ICGANVariantGenerator, load_generator, to_pil
from pretrain.generative.icgan.sampling import truncated_normal
from pretrain.generative.registry import GENERATORS

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURES = Path(__file__).parent / "fixtures"
# Parity tolerance: the reference ran on this machine's CPU in float32 and our module matched it bitwise;
# 1e-5 (outputs are in [-1, 1]) leaves room for other BLAS / oneDNN kernels summing in another order.
ATOL = 1e-5


def _tiny_state() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "icgan_tiny256_G_ema.safetensors"))


@pytest.fixture(scope="module")
def swav_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random ResNet-50 saved as SwAV does: ``module.``-prefixed keys, projection head, prototypes."""
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None)
    with torch.no_grad():  # non-default BN statistics so that loading them is visible
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    state = {f"module.{k}": v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    state["module.projection_head.0.weight"] = torch.randn(16, 2048)
    state["module.prototypes.weight"] = torch.randn(8, 16)
    path = tmp_path_factory.mktemp("swav") / "swav_800ep_pretrain.pth.tar"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, swav_file: Path) -> Path:
    """A model folder laid out as the releases unpack, with the tiny fixture generator."""
    root = tmp_path_factory.mktemp("icgan-model")
    (root / "icgan_biggan_imagenet_res256").mkdir()
    torch.save(_tiny_state(), root / "icgan_biggan_imagenet_res256" / "G_ema_best0.pth")
    (root / swav_file.name).symlink_to(swav_file)
    return root


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(3)
    sizes = [(40, 30), (32, 32), (24, 48), (36, 36)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes[:n]]


# --- architecture and parity with the reference -------------------------------------------------------


def test_full_256_keys_and_shapes_equal_reference() -> None:
    recorded = json.loads((FIXTURES / "icgan_res256_keys.json").read_text())
    with torch.device("meta"):
        net = ICGANGenerator()
    assert [[k, s] for k, s in state_dict_shapes(net)] == recorded["keys"]
    assert net.cfg.dim_z == recorded["config"]["dim_z_used"] == 119
    with torch.device("meta"):
        assert config_from_state_dict(net.state_dict()) == BigGANConfig()


def test_tiny_generator_reproduces_reference_outputs() -> None:
    sd, io = _tiny_state(), load_file(str(FIXTURES / "icgan_tiny256_io.safetensors"))
    net = ICGANGenerator(config_from_state_dict(sd))
    net.load_state_dict(sd, strict=True)
    assert net.cfg.ch == 4 and net.cfg.attention == (64,) and net.cfg.resolution == 256
    with torch.no_grad():
        out = net.eval()(io["z"], io["feats"])  # z has 128 values, as the colab samples: 119 are used
    assert out.shape == (3, 3, 256, 256)
    torch.testing.assert_close(out[:, :, ::4, ::4], io["out_stride4"], atol=ATOL, rtol=0)
    torch.testing.assert_close(out[:, :, :8, :8], io["out_corner"], atol=ATOL, rtol=0)
    n = 256 * 256  # every pixel enters the per-channel means and second moments
    mean, meansq = out.double().sum(dim=(2, 3)) / n, (out.double() ** 2).sum(dim=(2, 3)) / n
    torch.testing.assert_close(mean, io["out_sum"] / n, atol=ATOL, rtol=0)
    torch.testing.assert_close(meansq, io["out_sumsq"] / n, atol=ATOL, rtol=0)
    for k, v in net.state_dict().items():  # inference never updates u0 / sv0 / stored statistics
        assert torch.equal(v, sd[k]), k


def test_autocast_path_stays_close_to_float32() -> None:
    """The CUDA path runs under bf16/fp16 autocast (sigma kept in float32); exercised here on the CPU."""
    sd, io = _tiny_state(), load_file(str(FIXTURES / "icgan_tiny256_io.safetensors"))
    net = ICGANGenerator(config_from_state_dict(sd))
    net.load_state_dict(sd)
    with torch.no_grad():
        ref = net.eval()(io["z"], io["feats"])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(io["z"], io["feats"])
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().mean() < 0.01 and (low.float() - ref).abs().max() < 0.1


def test_preprocessing_matches_reference() -> None:
    ref = load_file(str(FIXTURES / "swav_preprocess.safetensors"))
    x = preprocess(Image.fromarray(ref["image"].numpy()), 256)
    assert x.shape == (3, 224, 224)
    torch.testing.assert_close(x[:, ::4, ::4], ref["x_stride4"], atol=ATOL, rtol=0)
    torch.testing.assert_close(x.double().sum(dim=(1, 2)) / 224**2, ref["x_sum"] / 224**2, atol=ATOL, rtol=0)


def test_class_conditional_or_broken_checkpoint_is_refused(tmp_path: Path) -> None:
    sd = _tiny_state()
    cc = dict(sd, **{"blocks.0.0.bn1.gain.weight": torch.zeros(64, 33 + 8)})  # + a class embedding
    save_file(cc, str(tmp_path / "cc.safetensors"))
    with pytest.raises(CheckpointError, match="class-conditional cc_icgan"):
        load_generator(tmp_path / "cc.safetensors")
    save_file({k: v for k, v in sd.items() if k != "blocks.2.0.conv2.u0"}, str(tmp_path / "cut.safetensors"))
    with pytest.raises(CheckpointError, match=r"cut.safetensors does not match .*blocks\.2\.0\.conv2\.u0"):
        load_generator(tmp_path / "cut.safetensors")


# --- sampling -----------------------------------------------------------------------------------------


def test_truncated_normal_bound_seed_and_moments() -> None:
    t = 0.7
    z = truncated_normal(123, 20000, t)
    assert z.dtype == torch.float32 and z.shape == (20000,)
    assert z.abs().max() <= 2 * t and z.abs().max() > 2 * t - 0.01
    assert torch.equal(z, truncated_normal(123, 20000, t))
    assert not torch.equal(z[:100], truncated_normal(124, 100, t))
    assert torch.equal(truncated_normal(2**63 - 1, 5, t), truncated_normal(2**63 - 1, 5, t))
    # Variance of N(0, 1) truncated to [-b, b]: 1 - 2 b phi(b) / (2 Phi(b) - 1).
    b = 2 * t
    phi, cdf = math.exp(-b * b / 2) / math.sqrt(2 * math.pi), 0.5 * (1 + math.erf(b / math.sqrt(2)))
    var = 1 - 2 * b * phi / (2 * cdf - 1)
    assert abs(z.mean().item()) < 0.02 and abs(z.var().item() - var) < 0.02


# --- the variant generator ----------------------------------------------------------------------------


def test_build_generate_sizes_determinism_and_describe(model_dir: Path) -> None:
    settings = GeneratorSettings(per_image=2, size=64, batch_size=2, truncation=0.7)
    gen = GENERATORS.get("icgan").build(model_dir, settings)
    sources = [SourceImage(i, f"train/x{i}.png", 0, im) for i, im in enumerate(_images(3))]
    seeds = [[10, 11], [12, 13], [14, 15]]
    out = gen.generate(sources, seeds)
    assert [len(row) for row in out] == [2, 2, 2]
    assert all(im.mode == "RGB" and im.size == (64, 64) for row in out for im in row)
    again = gen.generate(sources, seeds)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for ra, rb in zip(out, again, strict=True)
               for a, b in zip(ra, rb, strict=True))  # fmt: skip
    assert not np.array_equal(np.asarray(out[0][0]), np.asarray(out[0][1]))  # different seeds
    info = gen.describe()
    assert info["generator_file"] == "icgan_biggan_imagenet_res256/G_ema_best0.pth"
    assert info["feature_extractor_file"] == "swav_800ep_pretrain.pth.tar"
    assert len(info["weights_digest"]) == 64 and info["truncation"] == 0.7 and info["resolution"] == 256
    assert info["dtype"] == "float32" and info["output_size"] == 64
    assert "(key prefix 'module.')" in info["feature_extractor_load"]


def test_variant_depends_on_its_seed_and_source_only(model_dir: Path) -> None:
    big = build_icgan(model_dir, GeneratorSettings(per_image=2, size=256, batch_size=3))
    one = build_icgan(model_dir, GeneratorSettings(per_image=2, size=256, batch_size=1))
    images = _images(3)
    seeds = [[1, 2], [3, 4], [5, 6]]
    full = big.generate_tensors(images, seeds)
    assert [tuple(x.shape) for x in full] == [(2, 3, 256, 256)] * 3
    alone = one.generate_tensors([images[2], images[0]], [[6, 5], [2]])
    torch.testing.assert_close(alone[0], full[2].flip(0), atol=ATOL, rtol=0)
    torch.testing.assert_close(alone[1][0], full[0][1], atol=ATOL, rtol=0)
    pixels = np.asarray(to_pil(alone[1][0])).astype(int) - np.asarray(to_pil(full[0][1])).astype(int)
    assert np.abs(pixels).max() <= 1  # uint8 rounding of float-tolerance differences
    # The variant is G(truncated_normal(seed), L2-normalised SwAV feature of its source).
    feats = instance_features(one.features, [images[0]])
    z = truncated_normal(2, one.generator.cfg.dim_z, 0.7)[None]
    with torch.no_grad():
        torch.testing.assert_close(one.generator(z, feats)[0], full[0][1], atol=ATOL, rtol=0)


def test_to_pil_quantises_like_convert_to_images() -> None:
    x = torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0]).view(1, 1, 5).expand(3, 1, 5)
    assert np.asarray(to_pil(x))[0, :, 0].tolist() == [0, 64, 128, 255, 255]


# --- the SwAV feature extractor -----------------------------------------------------------------------


def test_swav_extractor_loads_module_prefix_and_gives_pooled_features(swav_file: Path) -> None:
    net, report = load_swav_resnet50(swav_file)
    state = torch.load(swav_file, weights_only=True)
    assert report.prefix == "module." and not report.missing and not report.mismatched
    assert report.ignored == ["module.projection_head.0.weight", "module.prototypes.weight"]
    assert all(torch.equal(v, state[f"module.{k}"]) for k, v in net.state_dict().items())
    image = _images(1)[0]
    feats = instance_features(net, [image])
    # IC-GAN's ResNet forward: stem, layer1-4, global average pool (no classifier), then L2 normalisation.
    x = preprocess(image)[None]
    with torch.no_grad():
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        h = net.layer4(net.layer3(net.layer2(net.layer1(h))))
        ref = torch.flatten(net.avgpool(h), 1)
    torch.testing.assert_close(feats, ref / ref.norm(dim=-1, keepdim=True), atol=1e-6, rtol=0)
    assert feats.shape == (1, 2048)


def test_swav_extractor_refuses_wrong_files(tmp_path: Path) -> None:
    r18 = {f"module.{k}": v for k, v in torchvision.models.resnet18(weights=None).state_dict().items()}
    torch.save(r18, tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match=r"r18.pth is not a ResNet-50 state dict: \d+ resnet50 tensors"):
        load_swav_resnet50(tmp_path / "r18.pth")
    torch.save({"encoder.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="other.pth is not a ResNet-50 state dict: no tensor"):
        load_swav_resnet50(tmp_path / "other.pth")
    torch.save({"act": torch.nn.ReLU()}, tmp_path / "pickled.pth.tar")  # needs unpickling nn.ReLU
    with pytest.raises(CheckpointError, match=r"cannot load .*pickled.pth.tar safely"):
        load_swav_resnet50(tmp_path / "pickled.pth.tar")


# --- model folder -------------------------------------------------------------------------------------


def test_model_folder_errors(tmp_path: Path, swav_file: Path) -> None:
    settings = GeneratorSettings()
    with pytest.raises(ModelFolderError, match="needs --model DIR"):
        build_icgan(None, settings)
    with pytest.raises(ModelFolderError, match="model folder not found"):
        build_icgan(tmp_path / "nowhere", settings)
    (tmp_path / "swav_pretrained.pth.tar").symlink_to(swav_file)
    with pytest.raises(ModelFolderError, match=r"lacks icgan_biggan_imagenet_res256/G_ema_best0.pth \("):
        build_icgan(tmp_path, settings)
    (tmp_path / "swav_pretrained.pth.tar").unlink()
    save_file(_tiny_state(), str(tmp_path / "G_ema.safetensors"))
    with pytest.raises(ModelFolderError, match=r"lacks swav_800ep_pretrain.pth.tar \("):
        build_icgan(tmp_path, settings)
    (tmp_path / "swav_pretrained.pth.tar").symlink_to(swav_file)  # IC-GAN's download-script name
    gen = build_icgan(tmp_path, settings)
    assert isinstance(gen, ICGANVariantGenerator)
    assert gen.describe()["generator_file"] == "G_ema.safetensors"


def test_generator_file_needing_pickled_objects_is_refused(tmp_path: Path, swav_file: Path) -> None:
    torch.save({"config": {"G_activation": torch.nn.ReLU()}}, tmp_path / "G_ema_best0.pth")
    (tmp_path / swav_file.name).symlink_to(swav_file)
    with pytest.raises(CheckpointError, match=r"cannot load .*G_ema_best0.pth safely \(torch.load with"):
        build_icgan(tmp_path, GeneratorSettings())


# --- end to end through the generation driver ----------------------------------------------------------


def test_bench_generate_writes_icgan_store(tiny_root: Path, model_dir: Path, tmp_path: Path) -> None:
    """``bench generate --generator icgan`` on the ImageNet stand-in: a resumable store whose variants are
    the generator's output for the recorded seeds."""
    from bench.cli import main
    from pretrain.generative.base import variant_seed
    from pretrain.generative.sources import load_sources
    from pretrain.generative.store import VariantStore

    settings = GeneratorSettings(per_image=2, size=64, batch_size=2, seed=5)
    out = tmp_path / "store"
    argv = ["generate", "--generator", "icgan", "--model", str(model_dir), "--dataset", "imagenet",
            "--data-root", str(tiny_root), "--out", str(out), "--limit", "3", "--per-image", "2",
            "--size", "64", "--batch-size", "2", "--seed", "5", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    store = VariantStore(out)
    assert len(store.done()) == 3 and not store.is_complete()
    info = store.manifest()["generator_info"]
    assert info["generator"] == "icgan" and len(info["weights_digest"]) == 64
    assert info["generator_file"] == "icgan_biggan_imagenet_res256/G_ema_best0.pth"
    assert store.manifest()["settings"]["truncation"] == 0.7
    sources = load_sources(tiny_root, "imagenet", "train")
    rel = sources.relpaths[1]
    seeds = [[variant_seed(5, rel, k) for k in range(2)]]
    direct = build_icgan(model_dir, settings).generate([SourceImage(1, rel, 0, sources.open(1))], seeds)[0]
    for k in range(2):
        with Image.open(store.variant_path(rel, k)) as stored:  # JPEG (quality 95) like the source
            assert stored.size == (64, 64)
            diff = np.asarray(stored.convert("RGB"), dtype=int) - np.asarray(direct[k], dtype=int)
        assert np.abs(diff).mean() < 3.0
    assert main(argv) == 0  # nothing left to do for these 3 sources
    assert len(list(store.records())) == 3
