"""The risk head: output shapes, the two poolings, ``topk_mean`` and feature standardisation."""

from __future__ import annotations

import pytest
import torch

from auditor_rt.export.models.head import HeadOutput, RiskHead, topk_mean
from auditor_rt.runtime.errors import ConfigError


def _features(n=2, c=3, h=5, w=4, seed=0):
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def _select_channel(head: RiskHead, channel: int) -> None:
    """Make the 1x1 conv copy one (standardised) channel, so the risk map is known."""
    with torch.no_grad():
        head.conv.weight.zero_()
        head.conv.weight[0, channel] = 1.0
        head.conv.bias.zero_()


def test_output_shapes_and_fields():
    head = RiskHead(channels=3)
    out = head(_features())
    assert isinstance(out, HeadOutput)
    assert out.logit.shape == (2,)
    assert out.risk_map.shape == (2, 5, 4)
    assert out.pooled.shape == (2,)
    assert out.logit.dtype == torch.float32


def test_config_round_trips():
    head = RiskHead(channels=7, pooling="avg", topk_fraction=0.25, hidden=8)
    assert head.config() == {"channels": 7, "pooling": "avg", "topk_fraction": 0.25, "hidden": 8}
    clone = RiskHead(**head.config())
    assert clone.config() == head.config()


def test_unknown_pooling_is_refused():
    with pytest.raises(ConfigError, match="pooling"):
        RiskHead(channels=3, pooling="max")


@pytest.mark.parametrize(
    "fraction, expected",
    [(0.2, (10 + 9) / 2), (0.0, 10.0), (1.0, 5.5), (0.3, (10 + 9 + 8) / 3), (0.01, 10.0)],
)
def test_topk_mean_values(fraction, expected):
    maps = torch.tensor([[3.0, 10.0, 1.0, 7.0, 2.0], [9.0, 4.0, 6.0, 8.0, 5.0]])[None]  # [1, 2, 5]
    assert topk_mean(maps, fraction).item() == pytest.approx(expected)


def test_topk_mean_is_per_image():
    maps = torch.stack([torch.full((2, 2), 1.0), torch.tensor([[0.0, 4.0], [2.0, -1.0]])])
    assert torch.allclose(topk_mean(maps, 0.5), torch.tensor([1.0, 3.0]))


def test_topk_mean_shares_its_gradient_evenly_among_tied_cells():
    """5 cells tie at the 2nd value and k = 3: the last two places are split over the five tied cells, whatever a
    top-k kernel would pick (PyTorch and ONNX Runtime pick differently)."""
    maps = torch.tensor([[9.0, 4.0, 4.0, 4.0, 4.0, 4.0, 1.0, 0.0, 0.0, 0.0]]).view(1, 2, 5).requires_grad_(True)
    value = topk_mean(maps, 0.3)
    assert value.item() == pytest.approx((9 + 4 + 4) / 3)
    grad, = torch.autograd.grad(value.sum(), maps)
    expected = torch.tensor([1 / 3] + [2 / 15] * 5 + [0.0] * 4).view(1, 2, 5)
    assert torch.allclose(grad, expected)
    rolled = torch.roll(maps.detach(), 2, dims=2).requires_grad_(True)  # the same ties at other places
    grad_rolled, = torch.autograd.grad(topk_mean(rolled, 0.3).sum(), rolled)
    assert torch.allclose(grad_rolled, torch.roll(expected, 2, dims=2))


def test_avg_and_topk_pooling_differ_as_defined():
    features = _features(seed=1)
    avg = RiskHead(channels=3, pooling="avg")
    topk = RiskHead(channels=3, pooling="topk", topk_fraction=0.1)
    topk.load_state_dict(avg.state_dict())
    _select_channel(avg, 1)
    _select_channel(topk, 1)
    out_avg, out_topk = avg(features), topk(features)
    assert torch.allclose(out_avg.risk_map, features[:, 1])
    assert torch.allclose(out_topk.risk_map, features[:, 1])
    assert torch.allclose(out_avg.pooled, features[:, 1].flatten(1).mean(dim=1))
    assert torch.allclose(out_topk.pooled, features[:, 1].flatten(1).topk(2, dim=1).values.mean(dim=1))  # 10% of 20
    assert (out_topk.pooled > out_avg.pooled).all()
    # the logit is the MLP of the pooled value
    assert torch.allclose(out_topk.logit, topk.mlp(out_topk.pooled[:, None])[:, 0])


def test_set_feature_stats_standardises_each_channel():
    generator = torch.Generator().manual_seed(2)
    means, scales = torch.tensor([5.0, -3.0, 100.0]), torch.tensor([1.0, 2.0, 40.0])
    features = torch.randn(8, 3, 6, 6, generator=generator) * scales.view(1, 3, 1, 1) + means.view(1, 3, 1, 1)
    head = RiskHead(channels=3)
    head.set_feature_stats(features)
    per_channel = features.transpose(0, 1).flatten(1)
    assert torch.allclose(head.feature_mean, per_channel.mean(dim=1))
    assert torch.allclose(head.feature_std, per_channel.std(dim=1))
    for channel in range(3):
        _select_channel(head, channel)
        risk_map = head(features).risk_map
        assert risk_map.mean().item() == pytest.approx(0.0, abs=1e-4)
        assert risk_map.std().item() == pytest.approx(1.0, abs=1e-4)


def test_near_constant_channels_get_a_std_floor():
    """Dividing by a ~0 std would amplify float noise (and break export parity); the floor is 1% of the mean std."""
    features = torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(3))
    features[:, 0] = 7.0 + 1e-7 * features[:, 0]
    head = RiskHead(channels=3)
    head.set_feature_stats(features)
    stds = features.transpose(0, 1).flatten(1).std(dim=1)
    floor = 0.01 * stds.mean() + 1e-6
    assert head.feature_std[0].item() == pytest.approx(floor.item(), rel=1e-5)
    assert torch.allclose(head.feature_std[1:], stds[1:])


def test_set_feature_stats_constant_channel_stays_finite():
    features = _features(n=4)
    features[:, 2] = 3.0
    head = RiskHead(channels=3)
    head.set_feature_stats(features)
    other = features[:, :2].transpose(0, 1).flatten(1).std(dim=1)
    assert head.feature_std[2].item() == pytest.approx(0.01 * other.sum().item() / 3 + 1e-6, rel=1e-5)
    _select_channel(head, 2)
    out = head(features)
    assert torch.isfinite(out.risk_map).all()
    assert torch.equal(out.risk_map, torch.zeros_like(out.risk_map))


def test_feature_stats_are_saved_in_the_state_dict():
    head = RiskHead(channels=3)
    head.set_feature_stats(_features() * 4 + 2)
    clone = RiskHead(channels=3)
    clone.load_state_dict(head.state_dict())
    assert torch.equal(clone.feature_mean, head.feature_mean)
    assert torch.equal(clone.feature_std, head.feature_std)
