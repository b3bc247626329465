"""Training on a tiny backbone, the checkpoint, and the exported audit graph against PyTorch."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
import torch

from auditor_rt.export.models.checkpoint import load_checkpoint
from auditor_rt.export.graphs.risk_head_export import build_audit_module
from auditor_rt.runtime.artifact import Artifact
from auditor_rt.runtime.errors import ConfigError, DigestMismatchError
from auditor_rt.runtime.runners import create_runner


def test_training_writes_a_complete_checkpoint(checkpoint_dir):
    for name in ("config.json", "head.safetensors", "backbone.safetensors", "history.jsonl", "curves.png"):
        assert (checkpoint_dir / name).is_file(), name
    config = json.loads((checkpoint_dir / "config.json").read_text())
    assert config["weights"]["random"] is True and config["weights"]["file"] == "backbone.safetensors"
    history = [json.loads(line) for line in (checkpoint_dir / "history.jsonl").read_text().splitlines()]
    assert len(history) == 3
    for key in ("bce", "pair", "patch", "gap", "auroc", "ap"):
        assert all(np.isfinite(row[key]) for row in history), key
    assert 0.0 <= config["threshold"] <= 1.0
    assert config["metrics"]["pointing_game"] is not None
    assert config["timing"]["cache_speedup"] > 1.0


def test_head_training_reduces_the_loss(tiny_config, tmp_path):
    from dataclasses import replace

    from auditor_rt.export.training.train import train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(replace(tiny_config, epochs=25, lr=1e-2), tmp_path / "ckpt", log=lambda *_: None)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < 0.8 * losses[0]


def test_export_matches_pytorch_on_new_inputs(checkpoint_dir, artifact_dir):
    module = build_audit_module(load_checkpoint(checkpoint_dir))
    size = module.input_size
    images = np.random.default_rng(7).integers(0, 256, (5, *size, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = {k: v.numpy() for k, v in module(torch.from_numpy(images))._asdict().items()}
    with create_runner(Artifact(artifact_dir), "audit", providers="cpu") as runner:
        actual = runner.infer({"image": images})
    assert set(actual) == {"logit", "score", "risk_map", "heatmap"}
    assert np.abs(actual["logit"] - expected["logit"]).max() <= 1e-4
    assert np.abs(actual["score"] - expected["score"]).max() <= 1e-4
    for key in ("risk_map", "heatmap"):
        scale = np.abs(expected[key]).max()
        assert np.abs(actual[key] - expected[key]).max() <= 1e-4 * scale, key
    assert actual["heatmap"].shape == (5, *size)
    assert actual["heatmap"].min() >= 0.0 and actual["heatmap"].max() <= 1.0 + 1e-6


def test_heatmap_depends_on_the_input(artifact_dir):
    rng = np.random.default_rng(3)
    with create_runner(Artifact(artifact_dir), "audit", providers="cpu") as runner:
        size = runner.input_specs["image"].shape[1:3]
        first = runner.infer({"image": rng.integers(0, 256, (2, *size, 3), dtype=np.uint8)})
        second = runner.infer({"image": rng.integers(0, 256, (2, *size, 3), dtype=np.uint8)})
    assert np.abs(first["risk_map"] - second["risk_map"]).max() > 1e-3
    assert np.abs(first["heatmap"][0] - first["heatmap"][1]).max() > 1e-3


def test_manifest_and_onnx_metadata_describe_the_artifact(artifact_dir):
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    graph = manifest["graphs"]["audit"]
    assert graph["inputs"] == [{"name": "image", "dtype": "uint8", "shape": ["batch", 96, 96, 3], "role": "image"}]
    assert [o["name"] for o in graph["outputs"]] == ["logit", "score", "risk_map", "heatmap"]
    assert len(graph["sha256"]) == 64
    for key in ("torch", "timm", "onnx", "auditor_rt"):
        assert manifest["versions"][key]
    props = {p.key: p.value for p in onnx.load(str(artifact_dir / "audit.onnx")).metadata_props}
    assert props["auditor_rt.backbone"] == "test_resnet"
    assert json.loads(props["auditor_rt.preprocess"])["input_size"] == [96, 96]
    assert float(props["auditor_rt.threshold"]) == pytest.approx(manifest["decision"]["threshold"])


def tampered_copy(folder, destination, file_name):
    """A copy of ``folder`` with one byte appended to ``file_name``."""
    import shutil

    shutil.copytree(folder, destination)
    with open(destination / file_name, "ab") as handle:
        handle.write(b"\0")
    return destination


def test_changed_graph_file_is_refused(artifact_dir, tmp_path):
    copy = tampered_copy(artifact_dir, tmp_path / "copy", "audit.onnx")
    with pytest.raises(DigestMismatchError, match="audit.onnx"):
        create_runner(Artifact(copy), "audit")


def test_changed_backbone_weights_are_refused(checkpoint_dir, tmp_path):
    copy = tampered_copy(checkpoint_dir, tmp_path / "ckpt", "backbone.safetensors")
    with pytest.raises(ConfigError, match="SHA-256"):
        load_checkpoint(copy).build_backbone()


def test_unfrozen_backbone_becomes_weights_of_a_frozen_run(tiny_config, tmp_path):
    from dataclasses import replace

    from auditor_rt.export.training.finetune import finetune
    from auditor_rt.export.training.train import train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tuned = finetune(replace(tiny_config, epochs=2), tmp_path / "tuned", log=lambda *_: None)
        assert tuned.config["weights"]["random"] is False
        weights = tuned.folder / "backbone.safetensors"
        frozen = train(replace(tiny_config, epochs=2, weights=str(weights)), tmp_path / "frozen", log=lambda *_: None)
    assert frozen.config["weights"]["source"] == str(weights.resolve())
    assert not (frozen.folder / "backbone.safetensors").exists()  # the weights live in their own file
    assert load_checkpoint(frozen.folder).build_backbone().channels > 0


def test_missing_weights_file_is_a_config_error(tmp_path):
    from auditor_rt.export.models.backbone import create_backbone

    with pytest.raises(ConfigError, match="no such file"):
        create_backbone("test_resnet", str(tmp_path / "nope.pth"))


def test_unknown_backbone_is_a_config_error():
    from auditor_rt.export.models.backbone import create_backbone

    with pytest.raises(ConfigError, match="unknown timm backbone"):
        create_backbone("no_such_model_xyz", "random")


def test_weights_for_another_architecture_are_refused(tmp_path):
    import timm
    from safetensors.torch import save_file

    from auditor_rt.export.models.backbone import create_backbone

    other = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(ConfigError, match="missing"):
        create_backbone("test_resnet", str(path))


def test_the_heatmaps_absolute_scale_goes_from_the_checkpoint_into_the_manifest(checkpoint_dir, tmp_path):
    import shutil

    from auditor_rt.export.graphs.risk_head_export import export_artifact
    from auditor_rt.export.progress import Progress

    copy = tmp_path / "ckpt"
    shutil.copytree(checkpoint_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config.pop("heatmap_scale", None)
    scale = {"risk_map_max": 3.25, "chosen_on": "validation", "percentile": 99}
    for name, extra in (("without", {}), ("with", {"heatmap_scale": scale})):
        (copy / "config.json").write_text(json.dumps({**config, **extra}))
        folder = export_artifact(load_checkpoint(copy), tmp_path / name, check=False,
                                 progress=Progress.silent()).folder
        manifest = json.loads((folder / "manifest.json").read_text())
        props = {p.key: p.value for p in onnx.load(str(folder / "audit.onnx")).metadata_props}
        if extra:
            assert manifest["heatmap"] == {"absolute_scale": scale}
            assert json.loads(props["auditor_rt.heatmap"]) == {"absolute_scale": scale}
        else:
            assert "heatmap" not in manifest and "auditor_rt.heatmap" not in props


def test_a_failed_export_leaves_no_folder_it_created(checkpoint_dir, tmp_path):
    from auditor_rt.export.graphs.risk_head_export import export_artifact
    from auditor_rt.export.progress import Progress
    from auditor_rt.export.errors import ExportError

    with pytest.raises(ExportError, match="opset 99"):
        export_artifact(load_checkpoint(checkpoint_dir), tmp_path / "new" / "art", opset=99,
                        progress=Progress.silent())
    assert not (tmp_path / "new" / "art").exists()
    with pytest.raises(ConfigError, match="unknown attribution method 'banana'"):
        export_artifact(load_checkpoint(checkpoint_dir), tmp_path / "art2", attributions=["banana"])
    assert not (tmp_path / "art2").exists()
