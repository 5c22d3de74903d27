"""Representation metrics as tasks: invariance/diversity under a policy, CKA and OPD against a reference.

Closed-form facts on real (random-weight) backbones and the tiny synthetic ImageNet stand-in: the identity
policy has invariance 1 and diversity 0 (backbone and projector layers); a backbone compared with itself
has CKA 1 and OPD 0; plus name resolution and one-line errors.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from bench.harness import reference_resolver
from core.errors import BenchError, CheckpointError, ConfigError, UnknownNameError
from core.paths import DataRoot
from pretrain.augment.config import ErasingConfig, MixupConfig
from pretrain.augment.policy import AugmentPolicy
from pretrain.backbones import Backbone, build_backbone
from pretrain.checkpoint import export_backbone, save_state
from pretrain.config import RecipeConfig
from pretrain.methods import build_method
from pretrain.recipes import resolve_recipe
from pretrain.trainer import CHECKPOINT_NAME
from tasks.base import TaskContext
from tasks.features import state_dict_digest
from tasks.registry import resolve_tasks
from tasks.representation import tasks as rtasks
from tasks.representation.tasks import ComparisonTask, InvarianceTask, build_invariance_task
from tasks.representation.views import clean_anchor, measure_invariance

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _small_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    """48 anchors (two batches of 24), K = 4: enough for the closed-form checks, fast on one thread."""
    small = rtasks.InvarianceSettings(anchors=48, views=4, batch_size=24)
    monkeypatch.setitem(rtasks.INVARIANCE, "smoke", small)


def random_backbone(seed: int) -> Backbone:
    torch.manual_seed(seed)
    return build_backbone("narrow_resnet18").eval()


def make_ctx(root: Path, tmp_path: Path, backbone: Backbone, **kw: object) -> TaskContext:
    base = TaskContext(
        data_root=root,
        synthetic=True,
        profile="smoke",
        device=CPU,
        cache_dir=tmp_path / "cache",
        seed=0,
        weights_digest=state_dict_digest(backbone.net),
        progress=False,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def identity_recipe() -> RecipeConfig:
    """moco_mixup with every random operation disabled: the policy returns the clean anchor."""
    recipe = resolve_recipe("moco_mixup", "smoke")
    view = dataclasses.replace(
        recipe.augment.views[0], crop_scale=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0
    )
    stages = (ErasingConfig(p=0.0), MixupConfig(p=0.0))
    augment = dataclasses.replace(recipe.augment, views=(view, view), stages=stages)
    return dataclasses.replace(recipe, name="identity", augment=augment)


def test_identity_policy_has_invariance_one_and_diversity_zero(synth_root: Path, tmp_path: Path) -> None:
    backbone = random_backbone(0)
    ctx = make_ctx(synth_root, tmp_path, backbone, recipe=identity_recipe())
    out = build_invariance_task(None).run(backbone, ctx)
    assert out.metrics["invariance"] == pytest.approx(1.0, abs=1e-5)
    assert out.metrics["diversity"] == pytest.approx(0.0, abs=1e-5)
    d = out.details
    assert d["policy"] == "identity" and d["layer"] == "backbone" and d["anchors"] == 48
    assert d["views_per_anchor"] == 4 and d["stages_on_view"] == ["erasing", "mixup"]
    assert d["embedding_dim"] == backbone.feature_dim and -1.0 <= d["anchor_pair_cosine"] < 1.0
    json.dumps(d)


def test_identical_views_have_diversity_zero(synth_root: Path, tmp_path: Path) -> None:
    """Always-on grayscale is deterministic: every view equals every other (diversity 0), not the anchor."""
    recipe = identity_recipe()
    view = dataclasses.replace(recipe.augment.views[0], grayscale_p=1.0)
    recipe = dataclasses.replace(recipe, augment=dataclasses.replace(recipe.augment, views=(view, view)))
    backbone = random_backbone(0)
    out = build_invariance_task(None).run(backbone, make_ctx(synth_root, tmp_path, backbone, recipe=recipe))
    assert out.metrics["diversity"] == pytest.approx(0.0, abs=1e-5)
    assert out.metrics["invariance"] < 1.0 - 1e-4


def test_anchor_pair_cosine_matches_direct_computation() -> None:
    """With a flattening "embedding", the anchor pair cosine is the mean off-diagonal cosine per batch."""
    recipe = resolve_recipe("moco", "smoke")
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 256, (n, 3, 40, 40), dtype=torch.uint8, generator=g) for n in (5, 3)]
    policy = AugmentPolicy(recipe.augment)
    acc, got = measure_invariance(lambda x: x.flatten(1), batches, policy, 2, g, CPU)
    sums, pairs = 0.0, 0
    for b in batches:
        u = torch.nn.functional.normalize(clean_anchor(b, 32).flatten(1).double(), dim=1)
        cos = u @ u.T
        sums += float(cos.sum() - cos.diagonal().sum()) / 2
        pairs += len(b) * (len(b) - 1) // 2
    assert got == pytest.approx(sums / pairs, rel=1e-9) and acc.anchors == 8


def test_real_policy_is_deterministic_and_not_trivial(synth_root: Path, tmp_path: Path) -> None:
    """No recipe (external checkpoint): the default policy is moco's; a seed fixes the views."""
    backbone = random_backbone(0)
    ctx = make_ctx(synth_root, tmp_path, backbone)
    task = build_invariance_task(None)
    first, again = task.run(backbone, ctx), task.run(backbone, ctx)
    assert first.details["policy"] == "moco" and first.metrics == again.metrics
    assert 0.0 < first.metrics["invariance"] < 1.0 - 1e-4 and first.metrics["diversity"] > 1e-4
    other = task.run(backbone, dataclasses.replace(ctx, seed=1))
    assert other.metrics != first.metrics


def test_projector_layer(synth_root: Path, tmp_path: Path) -> None:
    recipe = identity_recipe()
    torch.manual_seed(1)
    method = build_method(recipe.method, build_backbone(recipe.backbone.name))
    run_dir = tmp_path / "run"
    save_state(run_dir / CHECKPOINT_NAME, {"model": method.state_dict()})
    backbone = method.backbone.eval()
    ctx = make_ctx(synth_root, tmp_path, backbone, recipe=recipe, run_dir=run_dir)
    out = build_invariance_task(":projector").run(backbone, ctx)
    assert out.metrics["invariance"] == pytest.approx(1.0, abs=1e-5)
    assert out.metrics["diversity"] == pytest.approx(0.0, abs=1e-5)
    assert out.details["embedding_dim"] == recipe.method.dim and out.details["head"] == "MoCoV2.head"

    with pytest.raises(CheckpointError, match="does not hold the evaluated backbone"):
        build_invariance_task(":projector").run(backbone, dataclasses.replace(ctx, weights_digest="0" * 64))
    with pytest.raises(BenchError, match="external checkpoint has only a backbone"):
        build_invariance_task(":projector").run(backbone, dataclasses.replace(ctx, run_dir=None))


def comparison_ctx(root: Path, tmp_path: Path, backbone: Backbone) -> TaskContext:
    resolve = reference_resolver(
        "smoke", DataRoot(root, False), tmp_path / "runs", CPU, 0, "narrow_resnet18", progress=False
    )
    return make_ctx(root, tmp_path, backbone, reference=resolve)


def test_cka_and_opd_against_itself_and_another_backbone(synth_root: Path, tmp_path: Path) -> None:
    backbone, other = random_backbone(0), random_backbone(1)
    same, different = tmp_path / "same.safetensors", tmp_path / "other.safetensors"
    export_backbone(same, backbone.net, {})
    export_backbone(different, other.net, {})
    ctx = comparison_ctx(synth_root, tmp_path, backbone)
    cka_self, opd_self, cka_other, opd_other = resolve_tasks(
        f"cka:{same},opd:{same},cka:{different},opd:{different}"
    )
    assert isinstance(cka_self, ComparisonTask) and cka_self.name == f"cka:{same}"

    out = cka_self.run(backbone, ctx)
    assert out.metrics["cka"] == pytest.approx(1.0, abs=1e-9)
    assert out.metrics["cka_minibatch"] == pytest.approx(1.0, abs=1e-9)
    assert out.details["n_images"] == 100 and out.details["split"] == "val"
    assert out.details["reference"]["checkpoint"]["path"] == str(same)
    assert out.details["minibatch"] == {"batch_size": 100, "epochs": 10, "batches": 10}
    assert opd_self.run(backbone, ctx).metrics["opd"] == pytest.approx(0.0, abs=1e-9)
    # one cached test-split entry serves both sides when the weights are equal
    assert len(list((tmp_path / "cache" / "features").glob("*.f16"))) == 1

    cka = cka_other.run(backbone, ctx).metrics
    assert 0.0 < cka["cka"] < 1.0 and abs(cka["cka_minibatch"] - cka["cka"]) < 0.2
    assert 0.0 < opd_other.run(backbone, ctx).metrics["opd"] <= 2.0
    assert len(list((tmp_path / "cache" / "features").glob("*.f16"))) == 2
    json.dumps(out.details)


def test_names_resolve_to_what_was_typed(tmp_path: Path) -> None:
    ckpt = tmp_path / "to.safetensors"
    spec = f"invariance,invariance:moco_erasing,invariance:moco_cutout:projector,cka:{ckpt},opd:moco@cifar10"
    tasks = resolve_tasks(spec)
    assert [t.name for t in tasks] == spec.split(",")
    inv, _, cutout, cka, opd = tasks
    assert isinstance(inv, InvarianceTask) and inv.policy is None and inv.layer == "backbone"
    assert isinstance(cutout, InvarianceTask)
    assert (cutout.policy, cutout.layer) == ("moco_cutout", "projector")
    assert isinstance(cka, ComparisonTask) and (cka.reference, cka.dataset) == (str(ckpt), "imagenet")
    assert isinstance(opd, ComparisonTask) and (opd.reference, opd.dataset) == ("moco", "cifar10")
    assert [m.higher_is_better for m in opd.metrics] == [None] and opd.datasets == ("cifar10",)
    assert "invariance" in resolve_tasks("all")[0].name
    for task in tasks:
        json.dumps(task.protocol("smoke")), json.dumps(task.protocol("paper"))


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("invariance:moco_erasng", UnknownNameError, "did you mean 'moco_erasing'"),
        ("invariance:moco:proj", UnknownNameError, "invariance layer 'proj'; did you mean 'projector'"),
        ("invariance:projector", ConfigError, "write 'invariance::projector'"),
        ("invariance:moco:backbone:x", ConfigError, "too many ':' fields"),
        ("invariance:missing.yaml", ConfigError, "recipe file not found"),
        ("cka", ConfigError, "needs an argument"),
        ("opd:moco@cifar11", UnknownNameError, "did you mean 'cifar10'"),
        ("cka:@cifar10", ConfigError, "names no reference"),
    ],
)
def test_bad_names_fail_with_one_line(spec: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as info:
        resolve_tasks(spec)
    assert "\n" not in str(info.value)
