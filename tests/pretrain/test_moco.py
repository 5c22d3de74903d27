"""MoCo v2 against a direct transcription of the paper's equations (He et al. 2019, Eq. 1 / Alg. 1)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pretrain.backbones import build_backbone
from pretrain.config import MocoConfig
from pretrain.methods import ViewBatch, build_method
from pretrain.methods.moco import MoCoV2, info_nce


def reference_info_nce(q: np.ndarray, k: np.ndarray, queue: np.ndarray, t: float) -> float:
    """Eq. 1: L_q = -log exp(q.k+/t) / (exp(q.k+/t) + sum_i exp(q.k_i/t)), averaged over queries."""
    losses = []
    for i in range(q.shape[0]):
        pos = math.exp(float(q[i] @ k[i]) / t)
        neg = sum(math.exp(float(q[i] @ n) / t) for n in queue)
        losses.append(-math.log(pos / (pos + neg)))
    return float(np.mean(losses))


@pytest.mark.parametrize(("batch", "k", "t"), [(2, 3, 0.2), (8, 16, 0.07), (5, 1, 1.0)])
def test_info_nce_matches_paper_formula(batch: int, k: int, t: float) -> None:
    g = torch.Generator().manual_seed(batch * 31 + k)
    q = F.normalize(torch.randn(batch, 6, generator=g, dtype=torch.float64), dim=1)
    pos = F.normalize(torch.randn(batch, 6, generator=g, dtype=torch.float64), dim=1)
    queue = F.normalize(torch.randn(k, 6, generator=g, dtype=torch.float64), dim=1)
    got = info_nce(q, pos, queue, t).item()
    assert got == pytest.approx(reference_info_nce(q.numpy(), pos.numpy(), queue.numpy(), t), rel=1e-10)


def _moco(queue: int = 8, m: float = 0.9) -> MoCoV2:
    torch.manual_seed(0)
    cfg = MocoConfig(dim=8, hidden_dim=16, queue_size=queue, momentum=m, temperature=0.2)
    method = build_method(cfg, build_backbone("narrow_resnet18"))
    assert isinstance(method, MoCoV2)
    return method


def _batch(b: int = 4) -> ViewBatch:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(b, 3, 16, 16, generator=g)
    return ViewBatch(views=(x, x.flip(-1)), labels=torch.full((b,), -1))


def test_key_encoder_starts_equal_and_gets_no_gradient() -> None:
    m = _moco()
    for pk, pq in zip(m._key_params(), m._query_params(), strict=True):
        assert torch.equal(pk, pq) and not pk.requires_grad
    out = m(_batch())
    out.loss.backward()
    assert all(p.grad is None for p in m._key_params())
    assert all(p.grad is not None for p in m.head.parameters())


def test_momentum_update_formula() -> None:
    m = _moco(m=0.9)
    with torch.no_grad():
        for p in m._query_params():
            p.add_(1.0)
    before = [p.clone() for p in m._key_params()]
    query = [p.clone() for p in m._query_params()]
    m.on_step_end(1, 10)
    for pk, k0, q in zip(m._key_params(), before, query, strict=True):
        torch.testing.assert_close(pk, 0.9 * k0 + 0.1 * q)


def test_queue_is_fifo_and_wraps() -> None:
    m = _moco(queue=6)
    m.train()
    keys1 = F.normalize(torch.randn(4, 8), dim=1)
    keys2 = F.normalize(torch.randn(4, 8), dim=1)
    m._enqueue(keys1)
    assert int(m.queue_ptr) == 4
    torch.testing.assert_close(m.queue[:4], keys1)
    m._enqueue(keys2)
    assert int(m.queue_ptr) == 2  # 4 + 4 wraps around a queue of 6
    torch.testing.assert_close(m.queue[4:6], keys2[:2])
    torch.testing.assert_close(m.queue[0:2], keys2[2:])
    torch.testing.assert_close(m.queue[2:4], keys1[2:])


def test_forward_uses_queue_before_enqueueing() -> None:
    m = _moco(queue=8)
    m.train()
    queue_before = m.queue.clone()
    b = _batch(4)
    out = m(b)
    with torch.no_grad():
        q = F.normalize(m.head(m.backbone(b.views[0])).float(), dim=1)
    # key encoder == query encoder at init, but BN batch statistics differ per view: recompute keys
    k = m.queue[:4]
    expected = info_nce(q, k, queue_before, 0.2)
    torch.testing.assert_close(out.loss, expected, rtol=1e-4, atol=1e-4)
    assert not torch.equal(m.queue, queue_before)
    assert torch.isfinite(out.logs["pos_top1"])


def reference_supcon_rows(
    q: np.ndarray,
    k: np.ndarray,
    key_labels: np.ndarray,
    queue: np.ndarray,
    queue_labels: np.ndarray,
    t: float,
) -> np.ndarray:
    """SupCon "L_out" (arXiv 2004.11362 Eq. 2) over MoCo's candidates {k_i} + queue, with explicit loops."""
    out = []
    for i in range(q.shape[0]):
        cands = [k[i], *queue]
        logits = [float(q[i] @ c) / t for c in cands]
        log_z = math.log(sum(math.exp(v) for v in logits))
        positives = [0] + [
            1 + m for m in range(len(queue)) if key_labels[i] >= 0 and queue_labels[m] == key_labels[i]
        ]
        out.append(-sum(logits[p] - log_z for p in positives) / len(positives))
    return np.array(out)


def test_supervised_rows_match_supcon_reference() -> None:
    from pretrain.methods.moco import moco_rows

    g = torch.Generator().manual_seed(3)
    q = F.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=1)
    queue = F.normalize(torch.randn(10, 5, generator=g, dtype=torch.float64), dim=1)
    key_labels = torch.tensor([0, 1, -1, 2, 0, -1])
    queue_labels = torch.tensor([0, 0, 1, -1, 2, 2, 2, -1, 1, 3])
    got = moco_rows(q, k, key_labels, queue, queue_labels, 0.2)
    ref = reference_supcon_rows(
        q.numpy(), k.numpy(), key_labels.numpy(), queue.numpy(), queue_labels.numpy(), 0.2
    )
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)
    # unlabelled targets reduce to plain InfoNCE rows
    unl = torch.full((6,), -1)
    torch.testing.assert_close(
        moco_rows(q, k, unl, queue, queue_labels, 0.2), info_nce(q, k, queue, 0.2, reduction="none")
    )


def test_labels_are_queued_and_used_only_when_known() -> None:
    m = _moco(queue=8)
    m.train()
    b = _batch(4)
    m(b)
    assert (m.queue_labels == -1).all()  # self-supervised: nothing label-related is stored
    labelled = ViewBatch(views=b.views, labels=torch.tensor([1, 0, 1, -1]))
    m(labelled)
    assert m.queue_labels[4:8].tolist() == [1, 0, 1, -1]
    state = {k: v.clone() for k, v in m.state_dict().items()}
    sup = m(labelled).loss  # the queue now holds same-class keys: extra positives
    m.load_state_dict(state)
    hidden = m(ViewBatch(views=b.views, labels=torch.full((4,), -1))).loss
    assert not torch.allclose(sup, hidden)
