"""The typed manifest as the exporter writes it (``manifest_builder``) and as older artifacts wrote it."""

from __future__ import annotations

import json

from auditor_rt.export.graphs.manifest_builder import graph_metadata, new_manifest
from auditor_rt.runtime.manifest import GraphEntry, Manifest, Preprocess, TensorSpec
from auditor_rt.runtime.manifest_sections import CLASSIFIER, Decision, Heatmap, ModelInfo, Training, WeightsRecord

IMAGE = TensorSpec("image", "uint8", ("batch", 8, 8, 3), "image")
MAP = TensorSpec("ig", "float32", ("batch", 8, 8))


def _ig_entry(**facts) -> GraphEntry:
    return GraphEntry("ig.onnx", "0" * 64, "attribution", (IMAGE,), (MAP,), 18, method="ig", params={"steps": 4},
                      images_per_input=6, map_output="ig", raw_output="ig", signed=True, **facts)


def test_a_risk_head_manifest_round_trips_through_json_with_typed_facts():
    manifest = new_manifest("demo", Preprocess((8, 8), (0.5,) * 3, (0.25,) * 3),
                            ModelInfo("resnet18", WeightsRecord("random", "ab" * 32, True, "backbone.safetensors"),
                                      feature_channels=512, feature_grid=(1, 1)),
                            0.4, Decision(chosen_on="validation", criterion="max balanced accuracy"),
                            head={"channels": 512}, training=Training({"auc": 0.9}, "/ckpt", "cd" * 32),
                            heatmap=Heatmap(2.5, {"chosen_on": "validation", "percentile": 99.0}))
    manifest.graphs["ig"] = _ig_entry(completeness={"converged": True})
    manifest.data_files = {"weights.bin": "ef" * 32}
    again = Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())))
    assert again == manifest
    assert again.heatmap_scale == 2.5 and again.model.weights.file == "backbone.safetensors"
    assert again.graphs["ig"].images_per_input == 6 and again.graphs["ig"].extra == {}
    assert set(again.versions) == {"torch", "timm", "onnx", "auditor_rt"} and again.created


def test_a_classifier_manifest_records_its_kind_and_a_null_threshold():
    manifest = new_manifest("clf", Preprocess((8, 8), (0.5,) * 3, (0.25,) * 3),
                            ModelInfo("test_resnet", WeightsRecord("random", None, True), kind=CLASSIFIER,
                                      num_classes=3), None, Decision(rule="argmax over classes"))
    data = manifest.to_dict()
    assert data["decision"] == {"threshold": None, "rule": "argmax over classes"}
    assert data["model"]["weights"] == {"source": "random", "sha256": None, "random": True}
    assert Manifest.from_dict(data).model.kind == CLASSIFIER and "heatmap" not in data and "training" not in data


def test_a_manifest_from_before_the_typed_fields_loads_and_keeps_what_it_does_not_know():
    document = {"schema_version": 1, "name": "old", "preprocess": {"input_size": [8, 8], "mean": [0, 0, 0],
                                                                   "std": [1, 1, 1]},
                "decision": {"threshold": 0.5}, "future": {"x": 1},
                "model": {"backbone": "resnet18", "weights": {"source": "random"}, "flavour": "new"},
                "graphs": {"ig": {"file": "ig.onnx", "sha256": "0" * 64, "kind": "attribution",
                                  "inputs": [IMAGE.to_dict()], "outputs": [MAP.to_dict()], "opset": 17,
                                  "method": "ig", "someday": 3}}}
    manifest = Manifest.from_dict(document)
    entry = manifest.graphs["ig"]
    assert entry.method == "ig" and entry.params is None and entry.images_per_input is None
    assert entry.extra == {"someday": 3} and manifest.document == {"future": {"x": 1}}
    assert manifest.model.extra == {"flavour": "new"} and manifest.training is None and manifest.heatmap_scale is None
    written = manifest.to_dict()
    assert written["future"] == {"x": 1} and written["graphs"]["ig"]["someday"] == 3
    assert written["model"]["flavour"] == "new"


def test_graph_metadata_holds_the_manifest_but_digests_and_the_other_graphs():
    manifest = new_manifest("demo", Preprocess((8, 8), (0.5,) * 3, (0.25,) * 3),
                            ModelInfo("resnet18", WeightsRecord("random", "ab" * 32, True)), 0.4, Decision())
    manifest.graphs["audit"] = GraphEntry("audit.onnx", "1" * 64, "audit", (IMAGE,), (MAP,), 18)
    metadata = graph_metadata(manifest, "ig", _ig_entry())
    assert metadata["auditor_rt.backbone"] == "resnet18" and metadata["auditor_rt.threshold"] == "0.4"
    assert metadata["auditor_rt.weights_sha256"] == "ab" * 32
    inside = json.loads(metadata["auditor_rt.manifest"])
    assert "graphs" not in inside and inside["graph"]["key"] == "ig" and inside["graph"]["method"] == "ig"
    assert "sha256" not in inside["graph"] and "file" not in inside["graph"]
