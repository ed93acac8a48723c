"""Every embedder loss keeps ``build_loss``'s contract: ``loss(embeddings, labels) -> (loss, sums)``
with its own sums, columns among ``LOSS_COLUMNS`` and progress figures (a new loss: one class,
and its name here passes)."""

from __future__ import annotations

import pytest
import torch

from trainers.embed_config import EmbedConfig
from trainers.metric_losses import LOSS_COLUMNS, LOSSES, MarginSoftmax, TripletLoss, build_loss, triplet_loss


@pytest.mark.parametrize("name", LOSSES)
def test_each_loss_gives_its_loss_its_sums_and_its_own_columns(name):
    cfg = EmbedConfig(data="d", out="o", loss=name, dim=4)
    torch.manual_seed(0)
    loss = build_loss(cfg, classes=3)
    embeddings = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    value, sums = loss(embeddings, labels)
    assert value.ndim == 0 and value.requires_grad and set(sums) == set(loss.sums)
    value.backward()
    assert embeddings.grad is not None and torch.isfinite(embeddings.grad).all()
    totals = {k: float(v) for k, v in sums.items()}
    columns = loss.columns(totals)
    assert columns and set(columns) <= set(LOSS_COLUMNS) and all(0 <= v <= 1 for v in columns.values())
    assert all(isinstance(v, str) for v in loss.postfix(totals).values())


def test_the_factory_gives_each_loss_its_settings():
    triplet = build_loss(EmbedConfig(data="d", out="o"), classes=5)
    assert isinstance(triplet, TripletLoss) and triplet.margin == 0.2 and not list(triplet.parameters())
    cosface = build_loss(EmbedConfig(data="d", out="o", loss="cosface", dim=8, scale=16.0), classes=5)
    assert isinstance(cosface, MarginSoftmax) and (cosface.kind, cosface.margin, cosface.scale) == ("cosface", 0.35, 16.0)
    assert cosface.weight.shape == (5, 8)


def test_the_triplet_module_is_the_function_on_unit_vectors():
    x, labels = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 5.0]]), torch.tensor([0, 1, 0, 1])
    value, sums = TripletLoss(0.5)(x, labels)
    terms = triplet_loss(torch.nn.functional.normalize(x, dim=1), labels, 0.5)
    assert value.item() == terms.loss.item() and (sums["active"], sums["pairs"]) == (terms.active, terms.pairs)
