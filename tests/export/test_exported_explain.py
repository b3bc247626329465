"""What an exported artifact's attribution graphs owe the runtime, on the tiny checkpoint trained with torch: one
shared weights file, the runtime's method names, and a run where torch cannot be imported. (The runtime's own
explain tests use closed-form ONNX graphs: tests/runtime/test_explain.py.)"""

from __future__ import annotations

import json
import subprocess
import sys

from auditor_rt.runtime.explain import KNOWN_METHODS


def test_manifest_lists_attribution_graphs_sharing_one_weights_file(explain_artifact_dir, checkpoint_dir):
    manifest = json.loads((explain_artifact_dir / "manifest.json").read_text())
    kinds = {key: g["kind"] for key, g in manifest["graphs"].items()}
    assert kinds == {"audit": "audit", "saliency": "attribution", "ig": "attribution", "smoothgrad": "attribution",
                     "gradcam": "attribution", "gradcam++": "attribution"}
    assert manifest["graphs"]["ig"]["params"]["steps"] == 4 and manifest["graphs"]["ig"]["signed"] is True
    assert list(manifest["data_files"]) == ["weights.bin"]
    weights = (explain_artifact_dir / "weights.bin").stat().st_size
    graphs = sum((explain_artifact_dir / g["file"]).stat().st_size for g in manifest["graphs"].values())
    # six graphs, one copy of the backbone: every graph keeps the raw conv and BN weights (ORT fuses them at load)
    from auditor_rt.export.graphs.risk_head_export import build_audit_module
    from auditor_rt.export.models.checkpoint import load_checkpoint

    audit = build_audit_module(load_checkpoint(checkpoint_dir))
    single_copy = sum(t.numel() * t.element_size() for t in [*audit.parameters(), *audit.buffers()])
    assert weights < 1.15 * single_copy and graphs < weights


def test_known_methods_are_the_exporters_methods():
    from auditor_rt.export.attribution.methods import ATTRIBUTIONS

    assert set(KNOWN_METHODS) == set(ATTRIBUTIONS)


NO_TORCH = """
import json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "timm", "torchvision"):
            raise ImportError(name + " is blocked")
sys.meta_path.insert(0, Block())
import numpy as np
from auditor_rt.runtime import Auditor
image = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
with Auditor.load(sys.argv[1]) as auditor:
    result = auditor([image])[0]
with Auditor.load(sys.argv[2]) as auditor:
    maps = {m: auditor.explain([image], m)[0].map.shape for m in ("saliency", "ig", "smoothgrad", "gradcam")}
print(json.dumps({"score": result.score, "heatmap": list(result.heatmap.shape),
                  "maps": {k: list(v) for k, v in maps.items()}, "torch": "torch" in sys.modules}))
"""


def test_exported_artifacts_run_without_torch(artifact_dir, explain_artifact_dir):
    out = subprocess.run([sys.executable, "-c", NO_TORCH, str(artifact_dir), str(explain_artifact_dir)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["torch"] is False and 0.0 <= report["score"] <= 1.0 and report["heatmap"] == [64, 48]
    assert all(shape == [64, 48] for shape in report["maps"].values())
