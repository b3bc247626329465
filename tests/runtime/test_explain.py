"""Attribution maps through the runtime: Auditor.explain, shared weights, and a run without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from auditor_rt.runtime import Auditor
from auditor_rt.runtime.errors import ConfigError


def photos(n: int = 2, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (120 + 10 * i, 90, 3), dtype=np.uint8) for i in range(n)]


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
    from auditor_rt.export.checkpoint import load_checkpoint
    from auditor_rt.export.onnx_export import build_audit_module

    audit = build_audit_module(load_checkpoint(checkpoint_dir))
    single_copy = sum(t.numel() * t.element_size() for t in [*audit.parameters(), *audit.buffers()])
    assert weights < 1.15 * single_copy and graphs < weights


@pytest.mark.parametrize("method, signed", [("saliency", False), ("ig", True), ("smoothgrad", False),
                                            ("gradcam", False), ("gradcam++", False)])
def test_explain_gives_maps_at_the_original_size(explain_artifact_dir, method, signed):
    with Auditor.load(explain_artifact_dir) as auditor:
        explanations = auditor.explain(photos(), method=method)
        scores = auditor(photos())
    assert [e.map.shape for e in explanations] == [(120, 90), (130, 90)]
    assert all(e.signed is signed and e.method == method for e in explanations)
    assert all(np.isfinite(e.map).all() for e in explanations)
    for explanation, result in zip(explanations, scores):
        assert explanation.logit == pytest.approx(result.logit, abs=1e-4)
    if method == "ig":
        assert all("delta" in e.extras for e in explanations)


def test_smoothgrad_repeats_with_a_seed_and_changes_without(explain_artifact_dir):
    with Auditor.load(explain_artifact_dir) as auditor:
        first = auditor.explain(photos(1), "smoothgrad", noise_seed=3)[0].map
        again = auditor.explain(photos(1), "smoothgrad", noise_seed=3)[0].map
        other = auditor.explain(photos(1), "smoothgrad", noise_seed=4)[0].map
    assert np.array_equal(first, again)
    assert np.abs(first - other).max() > 0


def test_unknown_method_names_what_the_artifact_has(explain_artifact_dir):
    with Auditor.load(explain_artifact_dir) as auditor, pytest.raises(ConfigError, match="gradcam"):
        auditor.explain(photos(1), "lime")


def test_changed_weights_file_is_refused(explain_artifact_dir, tmp_path):
    import shutil

    from auditor_rt.runtime.errors import DigestMismatchError

    copy = tmp_path / "art"
    shutil.copytree(explain_artifact_dir, copy)
    with open(copy / "weights.bin", "r+b") as handle:
        handle.seek(5000)
        handle.write(b"\x01\x02\x03\x04")
    with pytest.raises(DigestMismatchError, match="weights.bin"):
        Auditor.load(copy)


NO_TORCH = """
import json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "timm"):
            raise ImportError(name + " is blocked")
sys.meta_path.insert(0, Block())
import numpy as np
from auditor_rt.runtime import Auditor
with Auditor.load(sys.argv[1]) as auditor:
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    maps = {m: auditor.explain([image], m)[0].map.shape for m in ("saliency", "ig", "smoothgrad", "gradcam")}
print(json.dumps({"maps": {k: list(v) for k, v in maps.items()}, "torch": "torch" in sys.modules}))
"""


def test_explain_runs_without_torch(explain_artifact_dir):
    out = subprocess.run([sys.executable, "-c", NO_TORCH, str(explain_artifact_dir)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["torch"] is False
    assert all(shape == [64, 64] for shape in report["maps"].values())
