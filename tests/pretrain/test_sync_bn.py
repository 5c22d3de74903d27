"""``train.sync_bn``: BatchNorm -> SyncBatchNorm conversion under DDP.

torch's SyncBatchNorm refuses CPU tensors once a process group exists (pinned below), so a real
multi-process run of the converted layers needs GPUs and is not tested here.  What is tested: which
layers each method converts when the world size is faked to 2, that parameters/buffers/keys survive the
conversion, that nothing happens on one process, that MoCo v2 keeps per-process BN under shuffling BN,
and that the trainer converts before building the optimiser (and refuses multi-process CPU runs).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from core.errors import ConfigError
from pretrain import distributed, trainer
from pretrain.backbones import build_backbone
from pretrain.methods import SSLMethod, build_method
from pretrain.methods.byol import BYOL
from pretrain.methods.moco import MoCoV2
from pretrain.recipes import resolve_recipe
from pretrain.trainer import apply_sync_bn
from tests.pretrain.test_methods import COMMON, TINY
from tests.pretrain.test_trainer import make_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

CUDA = torch.device("cuda", 0)  # only its type is read: the conversion itself moves nothing


def _method(name: str, *extra: str) -> SSLMethod:
    recipe = resolve_recipe(name, "smoke", [*TINY[name], *extra])
    return build_method(recipe.method, build_backbone(recipe.backbone.name))


def _kinds(m: nn.Module) -> tuple[int, int]:
    """(plain BatchNorm layers, SyncBatchNorm layers) in ``m``."""
    sync = sum(isinstance(x, nn.SyncBatchNorm) for x in m.modules())
    bn = sum(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.modules())
    return bn - sync, sync


@pytest.fixture
def two_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed, "world_size", lambda: 2)


def test_torch_syncbn_rejects_cpu_tensors_under_a_process_group(tmp_path: Path) -> None:
    """Why CPU multi-process runs cannot use sync_bn (torch 2.14): even a 1-process gloo group suffices."""
    layer = nn.SyncBatchNorm(4).train()
    x = torch.randn(3, 4)
    layer(x)  # no process group: plain batch norm
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="expected input tensor to be on GPU"):
            layer(x)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", ["simclr", "byol", "simsiam", "barlow"])
@pytest.mark.usefixtures("two_processes")
def test_every_batchnorm_is_converted_and_keeps_its_tensors(name: str) -> None:
    m = _method(name)
    plain, _ = _kinds(m)
    assert plain > 0
    params = [(n, id(p)) for n, p in m.named_parameters()]
    state = m.state_dict()
    assert apply_sync_bn(m, True, CUDA) == plain
    assert _kinds(m) == (0, plain)  # backbone, heads and (BYOL) the target network
    assert [(n, id(p)) for n, p in m.named_parameters()] == params  # same tensors, same names
    after = m.state_dict()
    assert list(after) == list(state) and all(
        after[k] is state[k] or torch.equal(after[k], state[k]) for k in state
    )
    if isinstance(m, BYOL):
        assert _kinds(m.target_backbone) == (0, _kinds(m.backbone)[1]) and _kinds(m.backbone)[1] > 0


@pytest.mark.usefixtures("two_processes")
def test_moco_keeps_per_process_bn_under_shuffling_bn() -> None:
    m = _method("moco")
    plain = _kinds(m)[0]
    assert plain > 0 and apply_sync_bn(m, True, CUDA) == 0 and _kinds(m) == (plain, 0)
    m = _method("moco", "method.shuffle_bn=false")
    assert isinstance(m, MoCoV2) and apply_sync_bn(m, True, CUDA) == plain
    assert _kinds(m.key_backbone)[0] == 0 and _kinds(m.backbone)[0] == 0


def test_no_conversion_on_one_process_or_when_off(monkeypatch: pytest.MonkeyPatch) -> None:
    m = _method("simclr")
    plain = _kinds(m)[0]
    assert apply_sync_bn(m, True, CUDA) == 0 and _kinds(m) == (plain, 0)  # world size 1
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert apply_sync_bn(m, False, CUDA) == 0 and _kinds(m) == (plain, 0)


def test_profiles_and_trainer_on_one_process(tmp_path: Path) -> None:
    assert resolve_recipe("simclr", "paper").train.sync_bn
    assert not resolve_recipe("simclr", "smoke").train.sync_bn
    recipe = resolve_recipe("simclr", "smoke", [*COMMON, *TINY["simclr"], "train.sync_bn=true"])
    t = make_trainer(recipe, tmp_path)
    assert t.sync_bn_layers == 0 and _kinds(t.method)[1] == 0


@pytest.mark.usefixtures("two_processes")
def test_trainer_refuses_sync_bn_for_multi_process_cpu_runs(tmp_path: Path) -> None:
    recipe = resolve_recipe("barlow", "smoke", [*COMMON, *TINY["barlow"], "train.sync_bn=true"])
    with pytest.raises(ConfigError, match="train.sync_bn=false"):
        make_trainer(recipe, tmp_path)
    plain = resolve_recipe("barlow", "smoke", [*COMMON, *TINY["barlow"]])  # the smoke profile: sync_bn off
    assert make_trainer(plain, tmp_path / "b").sync_bn_layers == 0


@pytest.mark.usefixtures("two_processes")
def test_trainer_converts_before_the_optimiser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the device check bypassed, the trainer converts, the optimiser holds the converted layers'
    parameters, and training + export work (without a process group SyncBatchNorm computes plain BN)."""
    monkeypatch.setattr(trainer, "sync_bn_device_ok", lambda device: True)
    recipe = resolve_recipe(
        "byol", "smoke", [*COMMON, *TINY["byol"], "train.sync_bn=true", "optim.name=lars"]
    )
    t = make_trainer(recipe, tmp_path)
    assert t.sync_bn_layers > 0 and _kinds(t.method)[0] == 0
    optimised = {id(p) for g in t.optimizer.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in t.method.parameters() if p.requires_grad}
    sync = [x for x in t.method.backbone.modules() if isinstance(x, nn.SyncBatchNorm)]
    assert sync and all(id(x.weight) in optimised for x in sync)
    summary = t.fit()
    assert summary.steps == 3 and math.isfinite(summary.final_loss)
    assert (tmp_path / trainer.BACKBONE_NAME).is_file()
