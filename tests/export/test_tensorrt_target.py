"""Every export checks each graph against TensorRT's ONNX parser: recorded in the manifest, a warning by default,
an error that leaves nothing behind with ``--target tensorrt``."""

from __future__ import annotations

import pytest

from auditor_rt.export.errors import ExportError
from auditor_rt.export.graphs import tensorrt_target
from auditor_rt.export.graphs.risk_head_export import export_artifact
from auditor_rt.export.models.checkpoint import load_checkpoint
from auditor_rt.export.tensorrt_compat import Finding
from auditor_rt.runtime.manifest import Manifest


METHODS = ["saliency", "ig", "smoothgrad", "gradcam", "gradcam++"]
QUICK = {"ig": {"steps": 2}, "smoothgrad": {"samples": 2}}


def test_for_onnxruntime_only_the_max_pool_backward_is_refused(explain_artifact_dir):
    """The default export keeps ONNX Runtime's faster max-pool backward (through MaxPool's indices and an add
    scatter) in the gradient graphs of the tiny resnet-family model, and says so; nothing else is refused."""
    graphs = Manifest.read(explain_artifact_dir / "manifest.json").graphs
    assert graphs["audit"].tensorrt == {"target": "onnxruntime", "parser": tensorrt_target.PARSER, "findings": [],
                                        "count": 0}
    for key in ("saliency", "ig", "smoothgrad"):
        findings = graphs[key].tensorrt["findings"]
        assert findings and all(line.startswith(("MaxPool", "ScatterElements")) for line in findings), findings


def test_target_tensorrt_builds_every_graph_without_a_finding(checkpoint_dir, tmp_path, recwarn):
    """The same model and methods for TensorRT: the max pool's backward recomputes the window's first maximum."""
    result = export_artifact(load_checkpoint(checkpoint_dir), tmp_path / "trt", attributions=METHODS,
                             attribution_params=QUICK, target="tensorrt")
    for key, entry in result.manifest.graphs.items():
        assert entry.tensorrt == {"target": "tensorrt", "parser": tensorrt_target.PARSER, "findings": [],
                                  "count": 0}, key
    assert not [w for w in recwarn if "TensorRT" in str(w.message)]


@pytest.fixture
def a_refused_node(monkeypatch):
    refused = Finding("node_max_pool", "MaxPool", "TensorRT does not support the indices output in MaxPool")
    monkeypatch.setattr(tensorrt_target, "tensorrt_findings", lambda path: [refused])


def test_target_tensorrt_refuses_the_export_and_leaves_no_folder(checkpoint_dir, tmp_path, a_refused_node):
    out = tmp_path / "engines" / "trt"
    with pytest.raises(ExportError, match="graph audit: TensorRT's ONNX parser would refuse 1 node.*indices output"):
        export_artifact(load_checkpoint(checkpoint_dir), out, check=False, target="tensorrt")
    assert not out.exists()


def test_by_default_a_refused_node_is_a_warning_and_is_recorded(checkpoint_dir, tmp_path, a_refused_node):
    with pytest.warns(UserWarning, match="graph audit is made for ONNX Runtime, not TensorRT"):
        result = export_artifact(load_checkpoint(checkpoint_dir), tmp_path / "ort", check=False)
    fact = result.manifest.graphs["audit"].tensorrt
    assert fact["target"] == "onnxruntime" and fact["count"] == 1 and fact["findings"] == ["MaxPool node_max_pool: TensorRT does not support the "
                                                       "indices output in MaxPool"]
    assert Manifest.read(tmp_path / "ort" / "manifest.json").graphs["audit"].tensorrt == fact  # written as read
