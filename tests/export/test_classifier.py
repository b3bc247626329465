"""Auditing a plain timm classifier: the class to explain is an input; maps equal autograd for that class."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from auditor_rt.export.graphs.classifier_export import export_classifier_artifact
from auditor_rt.runtime import Auditor

SIZE = 64


@pytest.fixture(scope="module")
def classifier_weights(tmp_path_factory):
    """A test_resnet classifier with 10 classes and a spread-out head, so its predictions are not near-ties."""
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=10)
    torch.nn.init.normal_(model.get_classifier().weight, std=2.0)
    path = tmp_path_factory.mktemp("clf") / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model.eval()


@pytest.fixture(scope="module")
def classifier_artifact(classifier_weights, tmp_path_factory):
    path, _ = classifier_weights
    result = export_classifier_artifact("test_resnet", tmp_path_factory.mktemp("engines") / "clf", str(path),
                                        num_classes=10, input_size=SIZE,
                                        attributions=["saliency", "ig", "gradcam"], attribution_params={"ig": {"steps": 3}})
    return result.folder


def images(n=2, seed=0):
    return [np.random.default_rng(seed + i).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for i in range(n)]


def test_manifest_describes_a_classifier(classifier_artifact, classifier_weights):
    manifest = json.loads((classifier_artifact / "manifest.json").read_text())
    assert manifest["model"]["kind"] == "classifier" and manifest["model"]["num_classes"] == 10
    assert manifest["decision"]["threshold"] is None
    assert manifest["model"]["weights"]["random"] is False and len(manifest["model"]["weights"]["sha256"]) == 64
    assert [i["name"] for i in manifest["graphs"]["ig"]["inputs"]] == ["image", "target"]


def test_classes_match_the_torch_model(classifier_artifact, classifier_weights):
    _, model = classifier_weights
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    batch = np.stack(images(3))
    x = (torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) \
        / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model(x).argmax(1).tolist()
    with Auditor.load(classifier_artifact) as auditor:
        assert [r.top_class for r in auditor.classify(list(batch))] == expected


def test_saliency_for_a_chosen_class_equals_autograd(classifier_artifact, classifier_weights):
    _, model = classifier_weights
    batch = images(2)
    with Auditor.load(classifier_artifact) as auditor:
        maps = [e.map for e in auditor.explain(batch, "saliency", targets=[3, 7])]
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    x = (torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) \
        / torch.tensor(std).view(1, 3, 1, 1)
    x.requires_grad_(True)
    logits = model(x)
    grad, = torch.autograd.grad(logits[0, 3] + logits[1, 7], x)
    expected = grad.abs().amax(1).numpy()
    for actual, want in zip(maps, expected):
        assert np.abs(actual - want).max() <= 1e-4 * np.abs(want).max()


def test_default_target_is_the_predicted_class(classifier_artifact):
    batch = images(2, seed=5)
    with Auditor.load(classifier_artifact) as auditor:
        predicted = [r.top_class for r in auditor.classify(batch)]
        default = auditor.explain(batch, "ig")
        chosen = auditor.explain(batch, "ig", targets=predicted)
        other = auditor.explain(batch, "ig", targets=[(c + 1) % 10 for c in predicted])
    for d, c, o in zip(default, chosen, other):
        np.testing.assert_allclose(d.map, c.map, atol=1e-6)
        assert np.abs(d.map - o.map).max() > 1e-4 * np.abs(d.map).max()


def test_topk_maps_share_one_scale_and_contrast(classifier_artifact):
    with Auditor.load(classifier_artifact) as auditor:
        contrast = auditor.explain_topk(images(1), "gradcam", k=3)[0]
        predicted = auditor.classify(images(1), k=3)[0].classes
    assert contrast.classes == predicted and contrast.joint.shape == (3, SIZE, SIZE)
    assert np.abs(contrast.joint).max() == pytest.approx(1.0)
    np.testing.assert_allclose(contrast.x_not_y, np.maximum(contrast.joint[0] - contrast.joint[1], 0))
    np.testing.assert_allclose(contrast.y_not_x, np.maximum(contrast.joint[1] - contrast.joint[0], 0))


def test_a_classifier_artifact_loads_as_a_classifier_and_refuses_a_threshold(classifier_artifact):
    from auditor_rt.runtime.auditor import ClassifierAuditor, RiskAuditor
    from auditor_rt.runtime.classify import ClassResult
    from auditor_rt.runtime.errors import ConfigError

    with Auditor.load(classifier_artifact) as auditor:
        assert isinstance(auditor, ClassifierAuditor) and all(isinstance(r, ClassResult) for r in auditor(images(1)))
        with pytest.raises(ConfigError, match="classifier"):
            auditor.set_threshold(0.5)
    with pytest.raises(ConfigError, match="Auditor.load"):
        RiskAuditor.load(classifier_artifact)


def test_out_of_range_target_is_refused(classifier_artifact):
    from auditor_rt.runtime.errors import ConfigError

    with Auditor.load(classifier_artifact) as auditor, pytest.raises(ConfigError, match="outside 0..9"):
        auditor.explain(images(1), "saliency", targets=[10])


def test_vit_classifier_gradcam_defaults_to_a_stage_with_gradient():
    """A class-token ViT reads only the class token after its last block: Grad-CAM there would be blank, so the
    default stage is that block's norm1, and asking for the blank stage is refused."""
    import torch.nn.functional as F

    from auditor_rt.export.attribution import create_attribution
    from auditor_rt.export.models.backbone import Normalize, preprocessing_of
    from auditor_rt.export.models.classifier import ClassifierModule
    from auditor_rt.runtime.errors import ConfigError

    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False, num_classes=4).eval()
    audit = ClassifierModule(Normalize(*preprocessing_of(model)), model, (160, 160)).eval()
    example = torch.randint(0, 256, (2, 160, 160, 3), dtype=torch.uint8)
    cam = create_attribution("gradcam", audit, example)
    assert cam.stage.endswith(".norm1")
    with pytest.raises(ConfigError, match="zero on every cell"):
        create_attribution("gradcam", audit, example, stage=-1 + len(audit.features.model.feature_info))

    image = torch.randint(0, 256, (1, 160, 160, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    captured = {}
    handle = model.get_submodule(cam.stage).register_forward_hook(
        lambda module, inputs, output: captured.setdefault("act", output))
    x = audit.normalize(image)
    logits = model(x)
    handle.remove()
    activation = captured["act"]
    grad, = torch.autograd.grad(logits[0, 2], activation)
    side = 160 // 16
    as_grid = lambda t: t[:, 1:].permute(0, 2, 1).unflatten(2, (side, side))  # noqa: E731
    expected = F.relu((as_grid(grad).mean((2, 3), keepdim=True) * as_grid(activation)).sum(1))
    with torch.no_grad():
        actual = cam(image, target=torch.tensor([2])).cam_raw
    assert expected.abs().max() > 0
    torch.testing.assert_close(actual, expected.detach(), rtol=1e-4, atol=1e-5 * float(expected.detach().abs().max()))
