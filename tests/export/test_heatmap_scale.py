"""The absolute heatmap scale that training fixes on validation data and keeps in the checkpoint config."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from auditor_rt.export.training.train import heatmap_scale


class FixedMaps(torch.nn.Module):
    """A stand-in head whose risk maps are given: the scale must come from them alone."""

    def __init__(self, maps: torch.Tensor):
        super().__init__()
        self.maps = maps

    def forward(self, features):
        return SimpleNamespace(risk_map=self.maps[: len(features)], logit=self.maps.amax(dim=(1, 2)))


def test_scale_is_the_percentile_of_the_positive_part_of_the_validation_maps():
    rng = np.random.default_rng(0)
    maps = rng.normal(-1.0, 1.0, (40, 7, 7)).astype(np.float32)
    maps[:5, 3, 3] = 6.0  # a few positives with a hot cell
    split = SimpleNamespace(features=torch.zeros(40, 4, 7, 7, dtype=torch.float16))
    scale = heatmap_scale(FixedMaps(torch.from_numpy(maps)), split, percentile=99.0)
    reference = np.percentile(np.maximum(maps, 0), 99.0)
    assert scale["risk_map_max"] == pytest.approx(float(reference), rel=1e-6)
    assert scale["chosen_on"] == "validation" and scale["percentile"] == 99.0 and scale["images"] == 40


def test_no_positive_cell_gives_no_scale():
    split = SimpleNamespace(features=torch.zeros(3, 4, 7, 7))
    assert heatmap_scale(FixedMaps(-torch.ones(3, 7, 7)), split)["risk_map_max"] is None


def test_training_writes_the_scale_into_the_checkpoint_config(checkpoint_dir):
    config = json.loads((checkpoint_dir / "config.json").read_text())
    scale = config["heatmap_scale"]
    assert scale["chosen_on"] == "validation" and scale["percentile"] == 99.0
    assert scale["risk_map_max"] is None or scale["risk_map_max"] > 0
    assert scale["images"] == config["data_counts"]["val"]  # every validation image of the demo data decodes
