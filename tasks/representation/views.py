"""Anchors, augmented views and their embeddings for the invariance / diversity task.

Procedure for one batch of ``B`` anchor images (:func:`measure_invariance`):

1. **Sources.**  ``uint8 [B, 3, H, W]``: anchor images loaded with the policy recipe's pretraining
   preprocessing (resize the shorter side to ``data.image_size``, centre-crop ``data.image_size``), i.e.
   exactly what the policy receives during pretraining.
2. **Clean anchor.**  :func:`clean_anchor`: the whole source image resampled to the view size ``S`` of
   view ``VIEW`` by the view pipeline's own crop op (:func:`pretrain.augment.ops.resized_crop` with the
   full-image box, bilinear, no flip), with no colour op.  This is bit-for-bit the view a policy produces
   when every random operation is disabled (crop scale ``(1, 1)``, all probabilities 0), so the identity
   policy has invariance exactly 1.
3. **Views.**  ``K`` independent calls of the policy on the batch (``policy(sources, labels=-1,
   generator)``; each call draws fresh per-sample parameters from one generator), keeping view
   ``VIEW = 0`` of each call.  View 0 is the view every stage touches by default: masking stages act
   on views ``(0, 1)`` and mixing stages on view ``(0,)`` (``docs/augmentations.md``); the second view
   of each call is discarded.  Mixing partners are drawn by the mixing stage within the anchor batch,
   so a mixed view contains another anchor's content, as in pretraining.
4. **Embeddings.**  The anchor and each view pass through the embedder (the frozen backbone, or the
   backbone followed by the method's projection head, :func:`load_projector`) in eval mode, float32,
   under ``torch.inference_mode``; embeddings are accumulated by
   :class:`~tasks.representation.invariance.InvarianceDiversity` (cosine similarities in float64).

Memory: one batch of sources, one policy call's two view batches at a time (each view is embedded
before the next call) and ``[B, K, D]`` float32 embeddings; nothing grows with the number of anchors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import BenchError, CheckpointError
from pretrain.augment import ops
from pretrain.augment.policy import AugmentPolicy
from pretrain.backbones import build_backbone
from pretrain.checkpoint import load_state
from pretrain.config import AugmentConfig, RecipeConfig
from pretrain.methods import SSLMethod, build_method
from pretrain.trainer import CHECKPOINT_NAME
from tasks.features import state_dict_digest
from tasks.representation.invariance import EPS, InvarianceDiversity

__all__ = [
    "VIEW",
    "clean_anchor",
    "load_projector",
    "measure_invariance",
    "policy_view",
    "projection_head",
    "stages_on_view",
]

VIEW = 0
"""Index of the view kept from each policy call (the one every stage touches by default)."""

Embed = Callable[[Tensor], Tensor]
"""Float images ``[B, 3, S, S]`` in ``[0, 1]`` -> embeddings ``[B, D]``."""


def clean_anchor(sources: Tensor, size: int) -> Tensor:
    """The un-augmented anchor: every source image, whole, resampled to ``size x size`` (module step 2).

    Args:
        sources: ``uint8 [B, 3, H, W]``.
        size: the view size ``S``.

    Returns:
        float32 ``[B, 3, S, S]`` in ``[0, 1]`` on ``sources.device``.
    """
    b, _, h, w = sources.shape
    box = torch.tensor([0.0, 0.0, float(h), float(w)], device=sources.device)
    return ops.resized_crop(sources.float().div_(255.0), box.expand(b, 4), size)


def policy_view(policy: AugmentPolicy, sources: Tensor, generator: torch.Generator) -> Tensor:
    """View :data:`VIEW` of one policy call on ``sources`` (module step 3; the other view is dropped)."""
    labels = torch.full((sources.shape[0],), -1, dtype=torch.long, device=sources.device)
    return policy(sources, labels, generator).views[VIEW]


def stages_on_view(cfg: AugmentConfig, view: int = VIEW) -> list[str]:
    """Kinds of the policy's batch-level stages that act on ``view`` (in order)."""
    return [s.kind for s in cfg.stages if view in s.views]


def measure_invariance(
    embed: Embed,
    batches: Iterable[Tensor],
    policy: AugmentPolicy,
    k: int,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[InvarianceDiversity, float | None]:
    """Accumulate invariance and diversity over batches of ``uint8 [B, 3, H, W]`` source images.

    ``embed`` must already be in eval mode; the view size is that of the policy's view :data:`VIEW`.
    Also returns the *anchor pair cosine*: the mean cosine between the clean anchors of two different
    images of the same batch (over all such pairs; ``None`` if no batch has two images), the level at
    which an embedding no longer tells images apart.  It is context for reading invariance and
    ``1 - diversity`` (pooled post-ReLU features are non-negative, so even unrelated images have
    clearly positive cosines), not a metric.
    """
    size = policy.cfg.views[VIEW].size
    acc = InvarianceDiversity()
    pair_sum, pairs = 0.0, 0

    def run(x: Tensor) -> Tensor:
        return embed(x.contiguous(memory_format=torch.channels_last)).float()

    with torch.inference_mode():
        for images in batches:
            sources = images.to(device)
            anchors = run(clean_anchor(sources, size))
            views = torch.stack([run(policy_view(policy, sources, generator)) for _ in range(k)], dim=1)
            acc.update(anchors, views)
            unit = F.normalize(anchors.double(), dim=1, eps=EPS)
            total = unit.sum(dim=0)
            pair_sum += float((total @ total - (unit * unit).sum()) / 2)
            pairs += unit.shape[0] * (unit.shape[0] - 1) // 2
    return acc, (pair_sum / pairs if pairs else None)


def projection_head(method: SSLMethod) -> nn.Module:
    """The method's projection head: ``head`` (MoCo v2's query head) or ``projector`` (the others)."""
    for attr in ("projector", "head"):
        head = getattr(method, attr, None)
        if isinstance(head, nn.Module):
            return head
    raise BenchError(f"method {type(method).__name__} has no projection head (no `projector` or `head`)")


def load_projector(
    recipe: RecipeConfig | None, run_dir: Path | None, weights_digest: str, device: torch.device
) -> tuple[nn.Module, dict[str, str]]:
    """``backbone -> projection head`` of a recipe run, from its full training state.

    The method is built from ``recipe`` and loaded from ``<run_dir>/checkpoints/last.pt``
    (``weights_only``); its backbone must hash to ``weights_digest`` (the evaluated backbone), so the
    head belongs to the weights being measured.  Returns the model (eval mode, on ``device``) and
    provenance (checkpoint path, head attribute).

    Raises:
        BenchError: no recipe run (an external checkpoint holds only a backbone), a checkpoint that does
            not fit the recipe's method, or one whose backbone is not the evaluated one.
    """
    if recipe is None or run_dir is None:
        raise BenchError(
            "layer 'projector' needs a recipe run's training state (checkpoints/last.pt); an external "
            "checkpoint has only a backbone, use layer 'backbone'"
        )
    path = run_dir / CHECKPOINT_NAME
    state = load_state(path)
    method = build_method(recipe.method, build_backbone(recipe.backbone.name))
    try:
        method.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} does not fit recipe {recipe.name!r}: {first}") from None
    if state_dict_digest(method.backbone.net) != weights_digest:
        raise CheckpointError(f"{path} does not hold the evaluated backbone (its weights differ)")
    head = projection_head(method)
    attr = "projector" if head is getattr(method, "projector", None) else "head"
    model = nn.Sequential(method.backbone, head).to(device).eval()
    return model, {"checkpoint": str(path), "head": f"{type(method).__name__}.{attr}"}
