"""The training losses: values checked by hand, and the direction of their gradients."""

from __future__ import annotations

import math

import pytest
import torch

from auditor_rt.export.training.losses import LossWeights, bce_loss, pairwise_ranking_loss, patch_topk_loss, risk_loss


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_bce_matches_hand_computation_and_accepts_integer_labels():
    logits = torch.tensor([0.0, 2.0, -1.0])
    labels = torch.tensor([1, 0, 0])  # ints: the loss casts them
    expected = (math.log(2.0) + softplus(2.0) + softplus(-1.0)) / 3
    assert bce_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_pairwise_ranking_two_positives_two_negatives_by_hand():
    logits = torch.tensor([2.0, 0.0, 1.0, -1.0])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    # pairs (pos, neg): (2, 0), (2, -1), (1, 0), (1, -1) -> margins 2, 3, 1, 2
    expected = (softplus(-2) + softplus(-3) + softplus(-1) + softplus(-2)) / 4
    assert pairwise_ranking_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_pairwise_ranking_sign_rewards_positives_scoring_higher():
    logits = torch.tensor([3.0, 2.5, -1.0, -2.0])
    labels = torch.tensor([1, 1, 0, 0])
    loss = pairwise_ranking_loss(logits, labels).item()
    pos, neg = logits[:2], logits[2:]
    # right: log(1 + exp(-(s_pos - s_neg))); wrong: the margin taken as s_neg - s_pos
    right_sign = torch.nn.functional.softplus(-(pos[:, None] - neg[None, :])).mean().item()
    wrong_sign = torch.nn.functional.softplus(-(neg[None, :] - pos[:, None])).mean().item()
    assert wrong_sign > 1.0 > 0.1 > right_sign  # well separated: the two conventions differ a lot
    assert loss == pytest.approx(right_sign, rel=1e-6)
    # Swapping the labels (negatives now score higher) must give the larger value.
    assert pairwise_ranking_loss(logits, 1 - labels).item() == pytest.approx(wrong_sign, rel=1e-6)


def test_pairwise_ranking_gradient_pushes_positives_up_and_negatives_down():
    logits = torch.tensor([0.5, 0.2, 0.1, 0.3], requires_grad=True)
    labels = torch.tensor([1, 0, 1, 0])
    pairwise_ranking_loss(logits, labels).backward()
    grad = logits.grad
    assert (grad[labels == 1] < 0).all() and (grad[labels == 0] > 0).all()


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0]], ids=["only-positives", "only-negatives"])
def test_pairwise_ranking_without_pairs_is_zero_and_keeps_the_graph(labels):
    logits = torch.tensor([0.3, -0.2, 1.5], requires_grad=True)
    loss = pairwise_ranking_loss(logits, torch.tensor(labels))
    assert loss.item() == 0.0
    assert loss.requires_grad and loss.dim() == 0
    loss.backward()  # must not raise "does not require grad"
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros(3))


def _maps_with_known_top_cells():
    """Two 4x4 maps with distinct values; with fraction 0.25 the top k = 4 cells are the four largest."""
    values = torch.randperm(32, generator=torch.Generator().manual_seed(0)).float().view(2, 4, 4) / 10 - 1.5
    return values.clone().requires_grad_(True)


def test_patch_topk_gradient_sign_on_top_cells_and_zero_elsewhere():
    maps = _maps_with_known_top_cells()
    labels = torch.tensor([1.0, 0.0])
    patch_topk_loss(maps, labels, fraction=0.25).backward()
    grad = maps.grad.flatten(1)
    flat = maps.detach().flatten(1)
    for i, label in enumerate(labels):
        top = flat[i].topk(4).indices
        mask = torch.zeros(16, dtype=torch.bool)
        mask[top] = True
        if label == 1:
            assert (grad[i, mask] < 0).all(), "positive image: top cells must be pushed up"
        else:
            assert (grad[i, mask] > 0).all(), "negative image: top cells must be pushed down"
        assert torch.equal(grad[i, ~mask], torch.zeros(12)), "cells outside the top k get no gradient"
        # each top cell shares equally: d/dm BCE = sigmoid(m) - y, divided by k and by N
        m = flat[i, top].mean()
        expected = (torch.sigmoid(m) - label) / 4 / 2
        assert torch.allclose(grad[i, mask], expected.expand(4), atol=1e-6)


def test_patch_topk_value_is_bce_of_the_top_mean():
    maps = torch.arange(16.0).view(1, 4, 4) / 8 - 1  # values -1 .. 0.875
    top_mean = (0.875 + 0.75 + 0.625 + 0.5) / 4
    assert patch_topk_loss(maps, torch.tensor([1]), fraction=0.25).item() == pytest.approx(softplus(-top_mean),
                                                                                           rel=1e-6)
    assert patch_topk_loss(maps, torch.tensor([0]), fraction=0.25).item() == pytest.approx(softplus(top_mean),
                                                                                           rel=1e-6)


def test_risk_loss_is_the_weighted_sum_of_its_parts():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(6, generator=generator)
    maps = torch.randn(6, 3, 3, generator=generator)
    labels = torch.tensor([1, 0, 1, 0, 0, 1])
    weights = LossWeights(bce=0.3, pair=2.0, patch=0.7)
    total, parts = risk_loss(logits, maps, labels, weights, topk_fraction=0.2)
    assert set(parts) == {"bce", "pair", "patch"}
    assert parts["bce"].item() == pytest.approx(bce_loss(logits, labels).item())
    assert parts["pair"].item() == pytest.approx(pairwise_ranking_loss(logits, labels).item())
    assert parts["patch"].item() == pytest.approx(patch_topk_loss(maps, labels, 0.2).item())
    assert parts["pair"].item() != pytest.approx(parts["bce"].item())  # parts are distinct, so weights matter
    expected = 0.3 * parts["bce"] + 2.0 * parts["pair"] + 0.7 * parts["patch"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    only_bce, _ = risk_loss(logits, maps, labels, LossWeights(bce=1.0, pair=0.0, patch=0.0))
    assert only_bce.item() == pytest.approx(parts["bce"].item(), rel=1e-6)


def test_risk_loss_topk_fraction_reaches_the_patch_loss():
    maps = torch.arange(16.0).view(1, 4, 4)
    labels = torch.tensor([1])
    logits = torch.zeros(1)
    _, narrow = risk_loss(logits, maps, labels, LossWeights(), topk_fraction=1 / 16)
    _, wide = risk_loss(logits, maps, labels, LossWeights(), topk_fraction=1.0)
    assert narrow["patch"].item() == pytest.approx(softplus(-15.0), abs=1e-6)
    assert wide["patch"].item() == pytest.approx(softplus(-7.5), rel=1e-6)
