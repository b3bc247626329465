"""``verify`` cannot be fooled on real architectures (random weights, nothing downloaded): over three seeds, a
correct artifact passes, a map output made constant fails on input dependence, and one convolution scaled by 1.01
fails. resnet18d and resnet50_clip (the demo's backbone) carry a trained risk head, resnet50 is a plain classifier.

Slow (about 20 minutes on 2 cores): ``pytest -m slow tests/export/test_verify_architectures.py``. Set
``AUDITOR_RT_VERIFY_ARTIFACT=engines/demo`` to run the same checks on an artifact you exported."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

from auditor_rt.export.verification.verify import VerifyOptions, verify_artifact
from damage import damaged_copy, freeze_map, scale_convolution

pytestmark = pytest.mark.slow
SIZE = 160
SEEDS = (0, 1, 2)
METHODS = ["saliency", "ig", "gradcam"]
FROZEN = {"saliency": "saliency", "ig": "ig", "gradcam": "cam"}


def _risk_head_artifact(backbone: str, folder: Path, demo_data) -> Path:
    from auditor_rt.export.models.checkpoint import load_checkpoint
    from auditor_rt.export.graphs.risk_head_export import export_artifact
    from auditor_rt.export.training.train import TrainConfig, train

    config = TrainConfig(data=str(demo_data.train_manifest), backbone=backbone, weights="random", input_size=SIZE,
                         epochs=2, batch_size=8, workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checkpoint = train(config, folder / "checkpoint", log=lambda *_: None).folder
    return export_artifact(load_checkpoint(checkpoint), folder / "artifact", attributions=METHODS,
                           attribution_params={"ig": {"steps": 4}}).folder


def _classifier_artifact(name: str, folder: Path) -> Path:
    import timm
    from safetensors.torch import save_file

    from auditor_rt.export.graphs.classifier_export import export_classifier_artifact

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10)
    weights = folder / "weights.safetensors"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(weights))
    return export_classifier_artifact(name, folder / "artifact", weights=str(weights), num_classes=10,
                                      input_size=SIZE, attributions=METHODS,
                                      attribution_params={"ig": {"steps": 4}}).folder


@pytest.fixture(scope="module", params=["resnet18d", "resnet50", "resnet50_clip.openai", "given"])
def artifact(request, tmp_path_factory, demo_data):
    folder = tmp_path_factory.mktemp(request.param.replace(".", "_"))
    if request.param == "given":
        given = os.environ.get("AUDITOR_RT_VERIFY_ARTIFACT")
        if not given:
            pytest.skip("AUDITOR_RT_VERIFY_ARTIFACT is not set")
        return given
    if request.param == "resnet50":
        return _classifier_artifact(request.param, folder)
    return _risk_head_artifact(request.param, folder, demo_data)


def _graphs(folder: Path, *names: str) -> list[str]:
    from auditor_rt.runtime.artifact import Artifact

    present = list(Artifact.load(folder).manifest.graphs)
    return [name for name in present if name in names or (name in ("audit", "classify") and "base" in names)]


def _why(report) -> list:
    return [(c.graph, c.output, c.reasons) for c in report.comparisons if not c]


@pytest.mark.parametrize("seed", SEEDS)
def test_correct_passes_frozen_and_scaled_fail(artifact, tmp_path, seed):
    quick = str(artifact) == os.environ.get("AUDITOR_RT_VERIFY_ARTIFACT")  # a full-size artifact: --quick's inputs
    report = verify_artifact(artifact, VerifyOptions(seed=seed, random=3, quick=quick))
    assert report.passed, _why(report)
    method = [m for m in METHODS if m in _graphs(artifact, *METHODS)][seed % 3]
    frozen = damaged_copy(artifact, tmp_path / "frozen")
    freeze_map(frozen, method, FROZEN[method], seed)
    report = verify_artifact(frozen, VerifyOptions(seed=seed, random=3, graphs=[method], quick=quick))
    failed = next(c for c in report.comparisons if c.output == FROZEN[method])
    assert any("input dependence" in reason for reason in failed.reasons), _why(report)
    scaled = damaged_copy(artifact, tmp_path / "scaled")
    scale_convolution(scaled, 1.01, graph=_graphs(artifact, "base")[0])
    report = verify_artifact(scaled, VerifyOptions(seed=seed, random=3, graphs=_graphs(artifact, "base"), quick=quick))
    assert not report.passed and all(f.ok for f in report.integrity), _why(report)
