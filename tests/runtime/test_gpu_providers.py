"""The CUDA and TensorRT execution providers give the CPU's answers. Run wherever onnxruntime-gpu finds a GPU;
skipped cleanly elsewhere (CI has no GPU)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from auditor_rt.runtime.artifact import Artifact
from auditor_rt.runtime.runners import create_runner

AVAILABLE = ort.get_available_providers()
NAMES = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def provider_case(provider: str, atol: float):
    missing = NAMES[provider] not in AVAILABLE
    reason = f"{NAMES[provider]} not available in this onnxruntime build ({AVAILABLE})"
    return pytest.param(provider, atol, marks=pytest.mark.skipif(missing, reason=reason), id=provider)


@pytest.mark.gpu
@pytest.mark.parametrize("provider, atol", [provider_case("cuda", 1e-3), provider_case("tensorrt", 1e-2)])
def test_gpu_provider_matches_cpu(artifact_dir, provider, atol):
    name = NAMES[provider]
    artifact = Artifact(artifact_dir)
    images = np.random.default_rng(0).integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    with create_runner(artifact, "audit", providers="cpu") as cpu:
        expected = cpu.infer({"image": images})
    with create_runner(artifact, "audit", providers=[provider, "cpu"]) as gpu:
        assert gpu.active_providers[0] == name, gpu.active_providers
        assert gpu.io_binding, "GPU runs should use IO binding"
        actual = gpu.infer({"image": images})
    for key, value in expected.items():
        scale = max(1.0, float(np.abs(value).max()))
        assert np.abs(actual[key] - value).max() <= atol * scale, key
