"""Attention rollout: exported graphs equal a reference that recomputes each layer's attention from q and k."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import timm
import torch
import torch.nn.functional as F

from auditor_rt.export.attribution import create_attribution
from auditor_rt.export.models.backbone import FeatureExtractor, Normalize, preprocessing_of
from auditor_rt.export.graphs.classifier_export import export_classifier_artifact
from auditor_rt.export.models.audit_module import AuditModule, normalize_per_image
from auditor_rt.export.models.head import RiskHead
from auditor_rt.export.conversion.torch_to_onnx import export_graph
from auditor_rt.runtime import Auditor
from auditor_rt.runtime.errors import ConfigError

SIZE = 160  # test_vit: patch 16, so a 10x10 grid and one class token


def reference_rollout(model: torch.nn.Module, x: torch.Tensor, fusion: str = "mean") -> torch.Tensor:
    """[N, T, T] rollout from probabilities recomputed out of each attention module's input (fused path left on)."""
    layers = []

    def record(module, inputs):
        tokens = inputs[0]
        batch, count, _ = tokens.shape
        q, k, _ = module.qkv(tokens).reshape(batch, count, 3, module.num_heads, -1).permute(2, 0, 3, 1, 4)
        probs = ((module.q_norm(q) @ module.k_norm(k).transpose(-1, -2)) * module.scale).softmax(-1)
        layers.append(probs.mean(1) if fusion == "mean" else probs.amax(1))

    handles = [m.register_forward_pre_hook(record) for m in model.modules() if type(m).__name__ == "Attention"]
    try:
        with torch.no_grad():
            model.forward_features(x)
    finally:
        for handle in handles:
            handle.remove()
    result = torch.eye(layers[0].shape[-1]).expand_as(layers[0])
    for attention in layers:
        mixed = attention + torch.eye(attention.shape[-1])
        result = (mixed / mixed.sum(-1, keepdim=True)) @ result
    return result


def photos(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def risk_audit() -> AuditModule:
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False, num_classes=0).eval()
    features = FeatureExtractor(model, (SIZE, SIZE))
    head = RiskHead(features.channels)
    torch.nn.init.normal_(head.conv.weight, std=0.5)
    return AuditModule(Normalize(*preprocessing_of(model)), features, head, (SIZE, SIZE)).eval()


@pytest.mark.parametrize("fusion", ["mean", "max"])
def test_risk_head_rollout_matches_reference_in_onnx_runtime(tmp_path, fusion):
    audit = risk_audit()
    example = torch.from_numpy(photos(2, 0))
    module = create_attribution("rollout", audit, example, head_fusion=fusion)
    path = tmp_path / "rollout.onnx"
    names = export_graph(module, path, example)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = photos(3, 1)  # a new batch size and inputs not seen at export
    got = dict(zip(names, session.run(None, {"image": images})))

    x = audit.normalize(torch.from_numpy(images))
    flow = reference_rollout(audit.features.model, x, fusion)[:, 1:, 1:]  # patch rows, patch columns
    with torch.no_grad():
        out = audit.head(audit.features(x))
    weights = torch.relu(out.risk_map.flatten(1))
    weights = weights / weights.sum(1, keepdim=True)
    expected = (weights[:, :, None] * flow).sum(1).reshape(3, 10, 10)
    assert (out.risk_map > 0).any() and (out.risk_map < 0).any()
    np.testing.assert_allclose(got["rollout_raw"], expected.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["logit"], out.logit.numpy(), rtol=1e-4, atol=1e-5)
    assert (got["rollout_raw"].sum((1, 2)) < 1).all()  # the rest of the flow comes from the class token
    assert got["rollout"].shape == (3, SIZE, SIZE) and got["rollout"].min() == 0 and got["rollout"].max() == 1
    assert np.abs(got["rollout_raw"][0] - got["rollout_raw"][1]).max() > 1e-4  # the map follows the input


def test_classifier_rollout_reads_the_class_token_through_the_runtime(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False, num_classes=4).eval()
    weights = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    result = export_classifier_artifact("test_vit", tmp_path / "vit", str(weights), num_classes=4, input_size=SIZE,
                                        attributions=["rollout"])
    images = photos(2, 7)
    with Auditor.load(result.folder) as auditor:
        maps = auditor.explain(list(images), "rollout")
    x = Normalize(*preprocessing_of(model))(torch.from_numpy(images))
    share = reference_rollout(model, x)[:, 0, 1:].reshape(2, 1, 10, 10)  # the class token's row, patch columns
    expected = normalize_per_image(F.interpolate(share, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0])
    for explanation, want in zip(maps, expected):
        assert explanation.map.shape == (SIZE, SIZE) and not explanation.signed
        np.testing.assert_allclose(explanation.map, want.numpy(), atol=1e-4)


def test_rollout_refuses_a_backbone_without_attention():
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=0).eval()
    features = FeatureExtractor(model, (64, 64))
    audit = AuditModule(Normalize(*preprocessing_of(model)), features, RiskHead(features.channels), (64, 64)).eval()
    with pytest.raises(ConfigError, match="ViT-style"):
        create_attribution("rollout", audit, torch.zeros(2, 64, 64, 3, dtype=torch.uint8))
