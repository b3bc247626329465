"""The native TensorRT runner against a small fake ``tensorrt`` and fake ``cuda.bindings`` (put in sys.modules): it
records what the runner asks for, and its "device memory" is host memory, so copies and results are real. The last
test runs the real TensorRT and skips, saying why, where there is none or no GPU."""

from __future__ import annotations

import ctypes
import enum
import hashlib
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from auditor_rt.runtime.artifact import Artifact
from auditor_rt.runtime.errors import (ArtifactError, BackendUnavailableError, DigestMismatchError,
                                       InputValidationError)
from auditor_rt.runtime.manifest import Manifest
from auditor_rt.runtime.runners import create_runner
from auditor_rt.runtime.runners.tensorrt import version_runs

PLAN = b"FAKE-PLAN audit"


class CudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorNoDevice = 100


class MemcpyKind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class FakeCudart:
    """cuda.bindings.runtime's calls as the runner uses them: (error, value) tuples; "device" memory on the host."""

    cudaError_t, cudaMemcpyKind = CudaError, MemcpyKind

    def __init__(self, gpu="NVIDIA H100 80GB HBM3", capability=(9, 0)):
        self.gpu, self.capability = gpu, capability
        self.live: dict[int, np.ndarray] = {}
        self.calls: list[tuple] = []

    def _alloc(self, kind, size):
        array = np.zeros(size, np.uint8)
        self.live[array.ctypes.data] = array
        self.calls.append((kind, size))
        return CudaError.cudaSuccess, array.ctypes.data

    def cudaGetDevice(self):
        return CudaError.cudaSuccess, 0

    def cudaGetDeviceProperties(self, device):
        major, minor = self.capability
        return CudaError.cudaSuccess, types.SimpleNamespace(name=self.gpu.encode() + b"\x00", major=major, minor=minor)

    def cudaMallocHost(self, size):
        return self._alloc("cudaMallocHost", size)

    def cudaMalloc(self, size):
        return self._alloc("cudaMalloc", size)

    def cudaFree(self, pointer):
        self.live.pop(pointer)
        return (CudaError.cudaSuccess,)

    cudaFreeHost = cudaFree

    def cudaStreamCreate(self):
        self.calls.append(("cudaStreamCreate",))
        return CudaError.cudaSuccess, 7

    def cudaStreamSynchronize(self, stream):
        return (CudaError.cudaSuccess,)

    def cudaStreamDestroy(self, stream):
        self.calls.append(("cudaStreamDestroy", stream))
        return (CudaError.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        assert stream == 7
        ctypes.memmove(dst, src, count)
        self.calls.append(("cudaMemcpyAsync", MemcpyKind(kind).name, count))
        return (CudaError.cudaSuccess,)


def view(pointer: int, dtype, shape) -> np.ndarray:
    count = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_uint8 * count).from_address(pointer), np.uint8).view(dtype).reshape(shape)


class FakeEngine:
    """An engine of the manifest graph's tensors: batch dims are -1, the profile is batch 1..max_batch. Running it
    writes image[b].mean() + k into every element of sample b of output k."""

    def __init__(self, graph, max_batch):
        self.io = [(s, True) for s in graph.inputs] + [(s, False) for s in graph.outputs]
        self.max_batch = max_batch

    @property
    def num_io_tensors(self):
        return len(self.io)

    def get_tensor_name(self, index):
        return self.io[index][0].name

    def _spec(self, name):
        return next(pair for pair in self.io if pair[0].name == name)

    def get_tensor_mode(self, name):
        return FakeTensorRT.TensorIOMode.INPUT if self._spec(name)[1] else FakeTensorRT.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return np.dtype(self._spec(name)[0].dtype)

    def shape(self, name, batch):
        return tuple(batch if isinstance(d, str) else d for d in self._spec(name)[0].shape)

    def get_tensor_profile_shape(self, name, profile):
        assert profile == 0
        return [self.shape(name, 1), self.shape(name, 1), self.shape(name, self.max_batch)]

    def create_execution_context(self):
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine):
        self.engine, self.batch, self.addresses, self.runs = engine, None, {}, 0

    def set_input_shape(self, name, shape):
        self.batch = shape[0]
        return 1 <= shape[0] <= self.engine.max_batch

    def get_tensor_shape(self, name):
        return self.engine.shape(name, self.batch)

    def set_tensor_address(self, name, pointer):
        self.addresses[name] = pointer

    def execute_async_v3(self, stream_handle):
        assert stream_handle == 7
        self.runs += 1
        spec = next(s for s, is_input in self.engine.io if is_input)
        image = view(self.addresses[spec.name], spec.dtype, self.engine.shape(spec.name, self.batch))
        means = image.reshape(self.batch, -1).mean(axis=1)
        outputs = [s for s, is_input in self.engine.io if not is_input]
        for k, out in enumerate(outputs):
            target = view(self.addresses[out.name], out.dtype, self.engine.shape(out.name, self.batch))
            target[...] = (means + k).reshape((-1,) + (1,) * (target.ndim - 1)).astype(out.dtype)
        return True


class FakeTensorRT(types.ModuleType):
    """The part of ``tensorrt`` the runner uses. ``deserialized`` lists every plan handed to TensorRT."""

    class TensorIOMode(enum.Enum):
        INPUT = 0
        OUTPUT = 1

    class Logger:
        WARNING = 2

        def __init__(self, severity=None):
            self.severity = severity

    def __init__(self, version="11.4.0", engine=None):
        super().__init__("tensorrt")
        self.__version__, self.engine, self.deserialized, self.runtimes = version, engine, [], []
        fake = self

        class Runtime:
            def __init__(self, logger):
                self.engine_host_code_allowed = False
                fake.runtimes.append(self)

            def deserialize_cuda_engine(self, data):
                fake.deserialized.append(bytes(data))
                return fake.engine

        self.Runtime = Runtime

    @staticmethod
    def nptype(dtype):
        return dtype


def add_engine(folder: Path, plan: bytes = PLAN, **overrides) -> dict:
    """Writes engines/audit.fp32.plan and its manifest entry, as `auditor-rt build` would."""
    (folder / "engines").mkdir(exist_ok=True)
    (folder / "engines" / "audit.fp32.plan").write_bytes(plan)
    manifest = Manifest.read(folder / "manifest.json")
    entry = {"graph": "audit", "precision": "fp32", "file": "engines/audit.fp32.plan",
             "sha256": hashlib.sha256(plan).hexdigest(), "source_graph": "audit",
             "graph_sha256": manifest.graphs["audit"].sha256, "tensorrt": "11.4.0", "gpu": "NVIDIA H100 80GB HBM3",
             "compute_capability": "9.0", "profile": {"min_batch": 1, "opt_batch": 2, "max_batch": 4},
             "hardware_compat": "none", "version_compatible": False, "tf32": False, **overrides}
    manifest.document["engines"] = {"audit.fp32": entry}
    manifest.write(folder)
    return entry


@pytest.fixture
def folder(artifact_dir, tmp_path):
    copy = tmp_path / "risk"
    shutil.copytree(artifact_dir, copy)
    return copy


@pytest.fixture
def fakes(monkeypatch, folder):
    """Installs the fake tensorrt and cuda.bindings; returns (trt, cudart)."""
    cudart = FakeCudart()
    trt = FakeTensorRT(engine=FakeEngine(Manifest.read(folder / "manifest.json").graphs["audit"], max_batch=4))
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.utils", None)  # the stream handle is then int(stream)
    return trt, cudart


def images(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, 64, 64, 3), dtype=np.uint8)


def test_runs_any_batch_within_the_profile_on_buffers_allocated_once(folder, fakes):
    trt, cudart = fakes
    add_engine(folder)
    with create_runner(Artifact(folder), "audit", backend="tensorrt") as runner:
        assert trt.deserialized == [PLAN] and trt.runtimes[0].engine_host_code_allowed is False
        allocations = [c for c in cudart.calls if c[0] in ("cudaMalloc", "cudaMallocHost")]
        assert len(allocations) == 2 * 5  # pinned + device buffer for image and the 4 outputs, at batch 4
        assert ("cudaMalloc", 4 * 64 * 64 * 4) in allocations  # heatmap [4, 64, 64] float32
        for batch in (1, 3, 4):
            feed = images(batch, seed=batch)
            out = runner.infer({"image": feed})
            means = feed.reshape(batch, -1).mean(axis=1).astype(np.float32)
            assert out["logit"].shape == (batch,) and out["heatmap"].shape == (batch, 64, 64)
            np.testing.assert_allclose(out["logit"], means, rtol=1e-6)
            np.testing.assert_allclose(out["heatmap"][:, 5, 7], means + 3, rtol=1e-6)
        assert [c for c in cudart.calls if c[0] in ("cudaMalloc", "cudaMallocHost")] == allocations
        copies = [c for c in cudart.calls if c[0] == "cudaMemcpyAsync"]
        assert copies[-5] == ("cudaMemcpyAsync", "cudaMemcpyHostToDevice", 4 * 64 * 64 * 3)
        assert copies[-1] == ("cudaMemcpyAsync", "cudaMemcpyDeviceToHost", 4 * 64 * 64 * 4)
        assert runner.last_latency_ms is not None
    assert cudart.live == {} and ("cudaStreamDestroy", 7) in cudart.calls  # closed: everything freed


def test_a_batch_outside_the_profile_is_an_input_error_naming_it(folder, fakes):
    add_engine(folder)
    with create_runner(Artifact(folder), "audit", backend="tensorrt") as runner:
        with pytest.raises(InputValidationError, match=r"optimization profile .*batch 1 to 4.*auditor-rt build"):
            runner.infer({"image": images(5)})


def test_a_changed_plan_is_refused_before_tensorrt_sees_it(folder, fakes):
    trt, _ = fakes
    add_engine(folder)
    (folder / "engines" / "audit.fp32.plan").write_bytes(PLAN + b" tampered")
    with pytest.raises(DigestMismatchError, match="Not deserializing"):
        create_runner(Artifact(folder), "audit", backend="tensorrt")
    assert trt.deserialized == [] and trt.runtimes == []


def test_an_engine_of_another_tensorrt_version_is_refused_naming_both(folder, fakes):
    trt, _ = fakes
    add_engine(folder, tensorrt="10.3.0")
    with pytest.raises(ArtifactError, match=r"TensorRT 10\.3\.0; this is TensorRT 11\.4\.0.*auditor-rt build "):
        create_runner(Artifact(folder), "audit", backend="tensorrt")
    assert trt.deserialized == []


def test_a_version_compatible_engine_loads_on_a_newer_runtime_with_host_code_allowed(folder, fakes):
    trt, _ = fakes
    add_engine(folder, tensorrt="11.1.0", version_compatible=True)
    with create_runner(Artifact(folder), "audit", backend="tensorrt"):
        assert trt.runtimes[0].engine_host_code_allowed is True
    trt.__version__ = "11.0.1"  # but not on an older one
    with pytest.raises(ArtifactError, match="version-compatible engine built with TensorRT 11.1.0"):
        create_runner(Artifact(folder), "audit", backend="tensorrt")


def test_version_rules():
    assert version_runs("11.4.0", "11.4.0", False) and not version_runs("11.3.0", "11.4.0", False)
    assert version_runs("11.3.0", "11.4.0", True) and version_runs("10.16.1", "11.4.0", True)
    assert not version_runs("11.4.0", "11.3.0", True) and not version_runs("8.6.1", "11.4.0", True)


@pytest.mark.parametrize("compat, capability, opens", [("none", "8.6", False), ("same-cc", "8.6", False),
                                                        ("ampere+", "8.6", True), ("same-cc", "9.0", True)])
def test_an_engine_for_another_gpu_is_refused_naming_both(folder, fakes, compat, capability, opens):
    trt, _ = fakes
    add_engine(folder, gpu="NVIDIA A10", compute_capability=capability, hardware_compat=compat)
    if opens:
        create_runner(Artifact(folder), "audit", backend="tensorrt").close()
        assert trt.deserialized == [PLAN]
        return
    with pytest.raises(ArtifactError, match=r"built on NVIDIA A10 \(compute capability 8\.6.*this GPU is NVIDIA H100 "
                                            r"80GB HBM3 \(compute capability 9\.0\).*auditor-rt build "):
        create_runner(Artifact(folder), "audit", backend="tensorrt")
    assert trt.deserialized == []


def test_same_compute_capability_on_another_gpu_model_warns(folder, fakes):
    add_engine(folder, gpu="NVIDIA H100 PCIe")
    with pytest.warns(UserWarning, match="built on NVIDIA H100 PCIe and runs on NVIDIA H100 80GB HBM3"):
        create_runner(Artifact(folder), "audit", backend="tensorrt").close()


@pytest.mark.parametrize("module, name", [("tensorrt", "TensorRT"), ("cuda.bindings", "cuda.bindings")])
def test_missing_tensorrt_or_cuda_bindings_is_unavailable_with_the_install_hint(folder, fakes, monkeypatch, module,
                                                                                 name):
    add_engine(folder)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(BackendUnavailableError, match=rf"{name}.*pip install 'auditor-rt\[gpu\]'"):
        create_runner(Artifact(folder), "audit", backend="tensorrt")


def test_real_cuda_bindings_without_a_gpu_is_unavailable_in_one_line(folder, monkeypatch):
    """The real cuda.bindings where it is installed (torch brings it): no driver or GPU is a clean error."""
    cudart = pytest.importorskip("cuda.bindings.runtime")
    if cudart.cudaGetDevice()[0] == cudart.cudaError_t.cudaSuccess:
        pytest.skip("a CUDA GPU is usable here")
    add_engine(folder)
    trt = FakeTensorRT(engine=None)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    with pytest.raises(BackendUnavailableError, match="CUDA cudaGetDevice failed: cudaError"):
        create_runner(Artifact(folder), "audit", backend="tensorrt")
    assert trt.deserialized == []


def test_an_artifact_without_engines_names_the_build_command(folder):
    with pytest.raises(BackendUnavailableError, match=r"no TensorRT engine for graph 'audit'.*auditor-rt build .* "
                                                      r"--graphs audit"):
        create_runner(Artifact(folder), "audit", backend="tensorrt")


def test_an_engine_built_from_an_older_export_is_refused(folder, fakes):
    add_engine(folder, graph_sha256="0" * 64)
    with pytest.raises(ArtifactError, match="another export of graph 'audit'"):
        create_runner(Artifact(folder), "audit", backend="tensorrt")


def test_an_engine_file_outside_the_artifact_is_refused(folder, fakes):
    add_engine(folder, file="../elsewhere.plan")
    with pytest.raises(ArtifactError, match="outside the artifact"):
        create_runner(Artifact(folder), "audit", backend="tensorrt")


def test_onnxruntime_s_tensorrt_provider_stays_an_onnxruntime_option(folder):
    from auditor_rt.runtime.runners.onnxruntime import ALIASES

    assert ALIASES["tensorrt"] == "TensorrtExecutionProvider"
    with create_runner(Artifact(folder), "audit", backend="onnxruntime", providers="cpu") as runner:
        assert runner.name == "onnxruntime"


def _real_gpu_or_skip():
    try:
        import tensorrt
    except ImportError as exc:
        pytest.skip(f"tensorrt is not importable here ({exc}): the native path is checked against the fakes above")
    from auditor_rt.runtime.runners.tensorrt import device_info, import_cudart

    try:
        return tensorrt.__version__, *device_info(import_cudart())
    except BackendUnavailableError as exc:
        pytest.skip(f"TensorRT {tensorrt.__version__} is here, but no usable NVIDIA GPU: {exc}")


@pytest.mark.gpu
def test_real_tensorrt_engine_matches_onnxruntime(folder):
    _real_gpu_or_skip()
    from auditor_rt.export.engines import BuildOptions, build_engines

    (entry,) = build_engines(folder, BuildOptions(graphs=("audit",), min_batch=1, opt_batch=2, max_batch=4))
    assert (folder / entry.file).is_file() and (folder / "engines" / "timing.cache").is_file()
    feed = {"image": images(3)}
    with create_runner(Artifact(folder), "audit", backend="onnxruntime", providers="cpu") as ort:
        expected = ort.infer(feed)
    with create_runner(Artifact(folder), "audit", backend="tensorrt") as trt:
        actual = trt.infer(feed)
        with pytest.raises(InputValidationError, match="optimization profile"):
            trt.infer({"image": images(5)})
    for name, value in expected.items():
        scale = max(float(np.abs(value).max()), 1e-6)
        np.testing.assert_allclose(actual[name], value, atol=1e-3 * scale, err_msg=name)
