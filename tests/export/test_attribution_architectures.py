"""Every attribution method on the main timm families, built for TensorRT (``target="tensorrt"``): no node that
TensorRT's ONNX parser refuses (``export/tensorrt_compat.py``), and parity with autograd (slow: `pytest -m slow`).

Parity is judged as DESIGN.md says: against an FP64 autograd reference, the exported FP32 graph's error must be
within 1e-4 of the map's scale, or no larger than 2x PyTorch's own FP32 error (the noise floor measured in the same
test); and its cosine with the reference must be >= 0.9999. Inputs: real photographs and random images.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import onnxruntime as ort
import pytest
import torch

from auditor_rt.export.attribution import create_attribution
from auditor_rt.export.models.backbone import FeatureExtractor, Normalize, create_backbone, preprocessing_of
from auditor_rt.export.models.audit_module import AuditModule
from auditor_rt.export.models.head import RiskHead
from auditor_rt.export.conversion.torch_to_onnx import export_graph
from auditor_rt.export.tensorrt_compat import NOTE, format_findings, tensorrt_findings
from auditor_rt.runtime.imageio import resize_image

from autograd_reference import autograd_reference

ARCHITECTURES = {"resnet18": 160, "resnet50": 160, "efficientnet_b0": 160, "convnext_atto": 160,
                 "vit_tiny_patch16_224": 224}
METHODS = [("saliency", {}), ("ig", {"steps": 4}), ("smoothgrad", {"samples": 2}), ("gradcam", {}),
           ("gradcam++", {}), ("gradcam", {"stage": 1})]
pytestmark = pytest.mark.slow


def photographs(size: int) -> np.ndarray:
    from skimage import data

    return np.stack([resize_image(np.ascontiguousarray(image), (size, size))
                     for image in (data.astronaut(), data.coffee())])


def audit_module(name: str, size: int) -> AuditModule:
    torch.manual_seed(0)
    model, _ = create_backbone(name, "random")
    features = FeatureExtractor(model, (size, size))
    head = RiskHead(features.channels)
    torch.nn.init.normal_(head.conv.weight, std=0.05)
    return AuditModule(Normalize(*preprocessing_of(model)), features, head, (size, size)).eval()


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_method_matches_autograd(arch, tmp_path):
    size = ARCHITECTURES[arch]
    audit = audit_module(arch, size)
    audit64 = copy.deepcopy(audit).double()
    example = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
    rng = np.random.default_rng(1)
    batches = {"photos": photographs(size), "random": rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)}
    report = []
    for method, params in METHODS:
        module = create_attribution(method, audit, example, target="tensorrt", **params)
        path = tmp_path / f"{method}.onnx"
        start = time.perf_counter()
        inputs = ("image", *module.extra_inputs)
        examples = (example, torch.randn(2, 2, 3, size, size)) if method == "smoothgrad" else example
        export_graph(module, path, examples, input_names=inputs, dynamic={"noise": {1: "samples"}},
                     target="tensorrt")
        export_s = time.perf_counter() - start
        refused = [f for f in tensorrt_findings(path) if f.severity != NOTE]
        assert not refused, f"{arch} {method}: TensorRT's parser would refuse\n{format_findings(refused)}"
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        for label, images in batches.items():
            feed = {"image": images}
            noise = None
            if method == "smoothgrad":
                noise = torch.randn(2, 2, 3, size, size, generator=torch.Generator().manual_seed(5))
                feed["noise"] = noise.numpy()
            actual = dict(zip(names, session.run(None, feed)))
            x = audit.normalize(torch.from_numpy(images))
            ref32 = autograd_reference(method, module, audit, x, noise)
            ref64 = autograd_reference(method, module, audit64, x.double(), None if noise is None else noise.double())
            map_name = module.map_output if module.map_output in ref64 else next(k for k in ref64 if k != "logit")
            want = ref64[map_name].detach().numpy()
            scale = float(np.abs(want).max())
            ours = float(np.abs(actual[map_name] - want).max())
            floor = float(np.abs(ref32[map_name].detach().numpy() - want).max())
            cosine = float(actual[map_name].ravel() @ want.ravel()
                           / (np.linalg.norm(actual[map_name]) * np.linalg.norm(want) + 1e-30))
            report.append(f"{arch:22s} {method + str(params.get('stage', '')):11s} {label:6s} err/scale "
                          f"{ours / scale:.1e} torch32 {floor / scale:.1e} cos {cosine:.7f} export {export_s:.0f}s")
            assert ours <= max(1e-4 * scale, 2 * floor), report[-1]
            assert cosine >= 0.9999, report[-1]
    print("\n" + "\n".join(report))
