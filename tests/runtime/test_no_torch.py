"""The runtime imports and runs an artifact in a process where `import torch` (and timm, and the export extra's
onnx) fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BLOCKED_RUN = """
import importlib, json, pkgutil, sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "timm", "torchvision", "onnx", "onnxscript"):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Block())
import auditor_rt.runtime as runtime
modules = [m.name for m in pkgutil.walk_packages(runtime.__path__, "auditor_rt.runtime.")]
for name in modules:
    importlib.import_module(name)
import numpy as np
from auditor_rt.runtime import Auditor
rng = np.random.default_rng(0)
with Auditor.load(sys.argv[1]) as auditor:
    results = auditor([rng.integers(0, 256, (120, 90, 3), dtype=np.uint8) for _ in range(3)])
print(json.dumps({"modules": modules, "scores": [r.score for r in results],
                  "heatmap": list(results[0].heatmap.shape), "torch": "torch" in sys.modules}))
"""


def test_runtime_runs_without_torch(artifact_dir):
    out = subprocess.run([sys.executable, "-c", BLOCKED_RUN, str(artifact_dir)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["torch"] is False
    assert "auditor_rt.runtime.auditor" in report["modules"]
    assert len(report["scores"]) == 3 and all(0.0 <= s <= 1.0 for s in report["scores"])
    assert len(set(report["scores"])) == 3  # three random images, three scores
    assert report["heatmap"] == [120, 90]


def test_runtime_sources_do_not_import_torch():
    root = Path(__file__).resolve().parents[2] / "runtime"
    for path in root.rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            assert not stripped.startswith(("import torch", "from torch", "import timm", "from timm")), path
