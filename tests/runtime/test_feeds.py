"""One feed builder for every graph, from the manifest entry: roles (recorded, or read from the name in older
artifacts), seeded noise of the declared sample count, baselines and targets."""

from __future__ import annotations

import numpy as np
import pytest

from auditor_rt.runtime.errors import ArtifactError, ConfigError
from auditor_rt.runtime.feeds import make_feed
from auditor_rt.runtime.manifest import GraphEntry
from auditor_rt.runtime.methods import images_per_input


def entry(inputs, method=None, params=None, **extra) -> GraphEntry:
    return GraphEntry.from_dict({"file": "g.onnx", "sha256": "0" * 64, "kind": "attribution", "opset": 18,
                                 "inputs": inputs, "outputs": [], "method": method, "params": params or {}, **extra})


IMAGE = {"name": "image", "dtype": "uint8", "shape": ["batch", 8, 8, 3]}
IMAGES = np.zeros((2, 8, 8, 3), np.uint8)


def test_noise_is_seeded_and_has_the_graph_samples():
    graph = entry([IMAGE, {"name": "noise", "dtype": "float32", "shape": ["batch", "samples", 3, 8, 8]}],
                  "smoothgrad", {"samples": 5})
    first, again, other = (make_feed(graph, IMAGES, seed) for seed in (3, 3, 4))
    assert first["noise"].shape == (2, 5, 3, 8, 8) and first["image"] is IMAGES
    np.testing.assert_array_equal(first["noise"], again["noise"])
    assert not np.array_equal(first["noise"], other["noise"])
    assert make_feed(graph, IMAGES, 3, samples=2)["noise"].shape == (2, 2, 3, 8, 8)
    assert make_feed(entry(graph.to_dict()["inputs"], "smoothgrad"), IMAGES, 0)["noise"].shape[1] == 16  # default


def test_baselines_targets_and_roles():
    baseline = {"name": "baseline", "dtype": "uint8", "shape": ["batch", 8, 8, 3], "role": "baseline"}
    graph = entry([IMAGE, baseline], "ig", {"steps": 4})
    with pytest.raises(ConfigError, match="baseline"):
        make_feed(graph, IMAGES, 0)
    assert make_feed(graph, IMAGES, 0, baselines="random")["baseline"].dtype == np.uint8
    with pytest.raises(ConfigError, match="classifier"):
        make_feed(graph, IMAGES, 0, baselines=IMAGES, targets=[0, 1])
    classifier = entry([IMAGE, {"name": "target", "dtype": "int64", "shape": ["batch"]}], "saliency", num_classes=3)
    assert make_feed(classifier, IMAGES, 0)["target"].tolist() == [-1, -1]
    with pytest.raises(ConfigError, match="outside 0..2"):
        make_feed(classifier, IMAGES, 0, targets=[0, 3])
    with pytest.raises(ArtifactError, match="role 'mask'"):
        make_feed(entry([IMAGE, {"name": "m", "dtype": "uint8", "shape": [1], "role": "mask"}]), IMAGES, 0)


def test_images_per_input_recorded_or_derived():
    assert images_per_input(entry([IMAGE], "ig", {"steps": 6})) == 8  # an artifact from before it was recorded
    assert images_per_input(entry([IMAGE], "ig", {"steps": 6}, images_per_input=9)) == 9
    assert images_per_input(entry([IMAGE], "smoothgrad")) == 17 and images_per_input(entry([IMAGE], "gradcam")) == 1
