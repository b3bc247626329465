"""``auditor-rt build``'s engine builder against a small fake ``tensorrt`` builder (in sys.modules) that records
every call and returns fake plans: the files, the timing cache, the manifest entries, the profiles, the flags, and
that a failed build leaves nothing. On the tiny checked-in artifacts (tests/runtime/tiny), copied first."""

from __future__ import annotations

import enum
import hashlib
import shutil
import sys
import types
from pathlib import Path

import onnx
import pytest

from auditor_rt.export.engines import BuildOptions, build_engines
from auditor_rt.export.engines.profiles import input_profiles
from auditor_rt.runtime.errors import BackendUnavailableError, ConfigError, NotSupportedError
from auditor_rt.runtime.manifest import Manifest
from auditor_rt.runtime.runners.tensorrt import engine_entries

TINY = Path(__file__).resolve().parents[1] / "runtime" / "tiny"


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2


class FakeBuilderTRT(types.ModuleType):
    """The builder side of ``tensorrt``. ``log`` records the calls; ``fail_on`` names a graph file whose build
    returns None (TensorRT's failure), ``parser_errors`` makes the parser refuse every graph."""

    class ILogger:
        Severity = Severity

        def __init__(self):
            pass

    class IProgressMonitor:
        def __init__(self):
            pass

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        STRONGLY_TYPED = 0

    class MemoryPoolType(enum.Enum):
        WORKSPACE = 0

    class BuilderFlag(enum.Enum):
        TF32 = 6
        VERSION_COMPATIBLE = 12

    class HardwareCompatibilityLevel(enum.Enum):
        NONE = 0
        AMPERE_PLUS = 1
        SAME_COMPUTE_CAPABILITY = 2

    def __init__(self, version="11.4.0"):
        super().__init__("tensorrt")
        self.__version__, self.log, self.fail_on, self.parser_errors = version, [], None, []
        fake = self

        class Network:
            def __init__(self):
                self.inputs = []

            @property
            def num_inputs(self):
                return len(self.inputs)

            def get_input(self, index):
                return types.SimpleNamespace(name=self.inputs[index])

        class OnnxParser:
            def __init__(self, network, logger):
                self.network = network

            def parse_from_file(self, path):
                fake.log.append(("parse_from_file", Path(path).name))
                graph = onnx.load(path, load_external_data=False).graph
                self.network.inputs = [value.name for value in graph.input]
                self.network.file = Path(path).name
                return not fake.parser_errors

            @property
            def num_errors(self):
                return len(fake.parser_errors)

            def get_error(self, index):
                return types.SimpleNamespace(desc=lambda: fake.parser_errors[index], node_name=lambda: "n7",
                                             node_operator=lambda: "MaxPool")

        class Cache:
            def __init__(self, data):
                self.data = bytes(data)

            def serialize(self):
                return self.data + b"+timings"

        class Config:
            def __init__(self):
                self.progress_monitor, self.hardware_compatibility_level = None, None

            def set_memory_pool_limit(self, pool, size):
                fake.log.append(("set_memory_pool_limit", pool.name, size))

            def clear_flag(self, flag):
                fake.log.append(("clear_flag", flag.name))

            def set_flag(self, flag):
                fake.log.append(("set_flag", flag.name))

            def create_timing_cache(self, data):
                fake.log.append(("create_timing_cache", bytes(data)))
                return Cache(data)

            def set_timing_cache(self, cache, ignore_mismatch):
                return True

            def add_optimization_profile(self, profile):
                fake.log.append(("profile", profile.shapes))

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, low, opt, high):
                self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

        class Builder:
            def __init__(self, logger):
                self.logger = logger

            def create_network(self, flags):
                fake.log.append(("create_network", flags))
                return Network()

            def create_optimization_profile(self):
                return Profile()

            def create_builder_config(self):
                return Config()

            def build_serialized_network(self, network, config):
                level = config.hardware_compatibility_level
                fake.log.append(("hardware_compatibility_level", level and level.name))
                monitor = config.progress_monitor
                if monitor is not None:
                    monitor.phase_start("Building engine", None, 2)
                    monitor.step_complete("Building engine", 0)
                    monitor.step_complete("Building engine", 1)
                    monitor.phase_finish("Building engine")
                if network.file == fake.fail_on:
                    self.logger.log(Severity.ERROR, "out of workspace for tactic 12")
                    return None
                return b"PLAN:" + network.file.encode()

        self.OnnxParser, self.Builder = OnnxParser, Builder

    def calls(self, name):
        return [entry[1:] for entry in self.log if entry[0] == name]


class FakeCudart(types.ModuleType):
    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0

    def __init__(self, capability=(9, 0)):
        super().__init__("cuda.bindings.runtime")
        self.capability = capability

    def cudaGetDevice(self):
        return self.cudaError_t.cudaSuccess, 0

    def cudaGetDeviceProperties(self, device):
        return self.cudaError_t.cudaSuccess, types.SimpleNamespace(name=b"NVIDIA H200", major=self.capability[0],
                                                                   minor=self.capability[1])


@pytest.fixture
def fake(monkeypatch):
    trt, bindings = FakeBuilderTRT(), types.ModuleType("cuda.bindings")
    bindings.runtime = FakeCudart()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    return trt


@pytest.fixture
def explain(tmp_path) -> Path:
    """The tiny risk head with saliency, ig, smoothgrad (3 samples), gradcam and gradcam++ graphs."""
    return Path(shutil.copytree(TINY / "risk_explain", tmp_path / "risk_explain"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_build_writes_the_engines_the_timing_cache_and_the_manifest_entries(explain, fake):
    before = Manifest.read(explain / "manifest.json")
    seen = []
    entries = build_engines(explain, BuildOptions(graphs=("audit", "smoothgrad"), workspace_mb=512),
                            report=lambda *args: seen.append(args))
    assert [e.key for e in entries] == ["audit.fp32", "smoothgrad.fp32"]
    assert (explain / "engines" / "audit.fp32.plan").read_bytes() == b"PLAN:audit.onnx"
    assert (explain / "engines" / "timing.cache").read_bytes() == b"+timings+timings"
    assert not list(explain.rglob("*.part")) and not list(explain.glob(".build-*"))
    after = Manifest.read(explain / "manifest.json")
    assert {k: g.to_dict() for k, g in after.graphs.items()} == {k: g.to_dict() for k, g in before.graphs.items()}
    recorded = engine_entries(after)
    assert set(recorded) == {"audit.fp32", "smoothgrad.fp32"}
    audit = recorded["audit.fp32"].to_dict()
    assert audit["sha256"] == hashlib.sha256(b"PLAN:audit.onnx").hexdigest()
    assert audit["graph_sha256"] == before.graphs["audit"].sha256 and audit["source_graph"] == "audit"
    assert (audit["tensorrt"], audit["gpu"], audit["compute_capability"]) == ("11.4.0", "NVIDIA H200", "9.0")
    assert audit["profile"] == {"min_batch": 1, "opt_batch": 8, "max_batch": 32}
    assert (audit["precision"], audit["hardware_compat"], audit["version_compatible"], audit["tf32"]) == \
           ("fp32", "none", False, False)
    assert audit["workspace_mb"] == 512 and audit["built"]
    # TensorRT 11: strongly typed without a flag; TF32 off; the workspace limit; one profile per graph
    assert fake.calls("create_network") == [(0,), (0,)]
    assert fake.calls("clear_flag") == [("TF32",), ("TF32",)] and fake.calls("set_flag") == []
    assert fake.calls("set_memory_pool_limit") == [("WORKSPACE", 512 << 20)] * 2
    assert fake.calls("parse_from_file") == [("audit.onnx",), ("smoothgrad.onnx",)]
    profiles = [p for (p,) in fake.calls("profile")]
    assert profiles[0] == {"image": ((1, 64, 64, 3), (8, 64, 64, 3), (32, 64, 64, 3))}
    assert profiles[1]["noise"] == ((1, 3, 3, 64, 64), (8, 3, 3, 64, 64), (32, 3, 3, 64, 64))
    assert ("audit", "Building engine", 2, 2, True) in seen


def test_the_timing_cache_is_reused_by_the_next_build(explain, fake):
    build_engines(explain, BuildOptions(graphs=("audit",)))
    assert fake.calls("create_timing_cache") == [(b"",)]
    build_engines(explain, BuildOptions(graphs=("saliency",)))
    assert fake.calls("create_timing_cache")[-1] == (b"+timings",)
    assert set(engine_entries(Manifest.read(explain / "manifest.json"))) == {"audit.fp32", "saliency.fp32"}


def test_a_failed_build_leaves_no_engine_and_no_manifest_change(explain, fake):
    before = snapshot(explain)
    fake.fail_on = "smoothgrad.onnx"  # the second graph fails after the first has built
    with pytest.raises(BackendUnavailableError, match="out of workspace for tactic 12"):
        build_engines(explain, BuildOptions(graphs=("audit", "smoothgrad")))
    assert snapshot(explain) == before and not (explain / "engines").exists()
    build_engines(explain, BuildOptions(graphs=("audit",)))  # an engines folder that was there stays as it was
    before = snapshot(explain)
    with pytest.raises(BackendUnavailableError):
        build_engines(explain, BuildOptions(graphs=("audit", "smoothgrad"), max_batch=16))
    assert snapshot(explain) == before


def test_parser_errors_are_listed(explain, fake):
    before = snapshot(explain)
    fake.parser_errors = ["MaxPool with indices is unsupported", "second"]
    with pytest.raises(NotSupportedError, match=r"refused audit\.onnx: MaxPool with indices is unsupported "
                                                r"\(node 'n7', MaxPool\); second.*--target tensorrt"):
        build_engines(explain, BuildOptions(graphs=("audit",)))
    assert snapshot(explain) == before


def test_fp16_without_an_fp16_graph_is_refused_before_tensorrt(explain, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # never reached: not even imported
    with pytest.raises(NotSupportedError, match="no FP16 ONNX graph.*will not build an FP32 engine and call it FP16"):
        build_engines(explain, BuildOptions(graphs=("audit",), precision="fp16"))
    assert not (explain / "engines").exists()


def test_fp16_builds_from_the_fp16_graph_variant(explain, fake):
    manifest = Manifest.read(explain / "manifest.json")
    shutil.copy(explain / "audit.onnx", explain / "audit_fp16.onnx")
    variant = {**manifest.graphs["audit"].to_dict(), "file": "audit_fp16.onnx", "variant_of": "audit",
               "precision": "fp16"}
    manifest.graphs["audit.fp16"] = type(manifest.graphs["audit"]).from_dict(variant)
    manifest.write(explain)
    entries = build_engines(explain, BuildOptions(precision="fp16", graphs=("audit",)))
    assert fake.calls("parse_from_file") == [("audit_fp16.onnx",)]
    assert (entries[0].key, entries[0].source_graph, entries[0].file) == \
           ("audit.fp16", "audit.fp16", "engines/audit.fp16.plan")
    assert fake.calls("set_flag") == []  # no BuilderFlag.FP16 (gone in 11): the graph's types decide


def test_compatibility_flags(explain, fake):
    entries = build_engines(explain, BuildOptions(graphs=("audit",), hardware_compat="same-cc",
                                                  version_compatible=True, tf32=True))
    assert fake.calls("hardware_compatibility_level") == [("SAME_COMPUTE_CAPABILITY",)]
    assert fake.calls("set_flag") == [("VERSION_COMPATIBLE",)] and fake.calls("clear_flag") == []
    assert (entries[0].hardware_compat, entries[0].version_compatible, entries[0].tf32) == ("same-cc", True, True)
    build_engines(explain, BuildOptions(graphs=("audit",), hardware_compat="ampere+"))
    assert fake.calls("hardware_compatibility_level")[-1] == ("AMPERE_PLUS",)


def test_ampere_plus_is_refused_on_an_older_gpu(explain, fake):
    sys.modules["cuda.bindings"].runtime = FakeCudart(capability=(7, 5))
    with pytest.raises(ConfigError, match=r"Ampere or newer.*\(7\.5\)"):
        build_engines(explain, BuildOptions(graphs=("audit",), hardware_compat="ampere+"))
    assert not (explain / "engines").exists()


def test_tensorrt_10_networks_are_created_strongly_typed(explain, fake):
    fake.__version__ = "10.16.1"
    build_engines(explain, BuildOptions(graphs=("audit",)))
    assert fake.calls("create_network") == [(1 << 0,)]
    fake.NetworkDefinitionCreationFlag = types.SimpleNamespace()  # a 10.x without strong typing: refused
    with pytest.raises(BackendUnavailableError, match="strongly typed"):
        build_engines(explain, BuildOptions(graphs=("audit",)))


@pytest.mark.parametrize("options, message", [
    (BuildOptions(min_batch=4, opt_batch=2, max_batch=8), "--min-batch <= --opt-batch"),
    (BuildOptions(graphs=("nope",)), "no graph named 'nope'"),
    (BuildOptions(hardware_compat="turing+"), "hardware compatibility"),
])
def test_mistakes_are_refused_before_tensorrt(explain, monkeypatch, options, message):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(Exception, match=message):
        build_engines(explain, options)
    assert not (explain / "engines").exists()


def test_without_tensorrt_the_build_is_unavailable_with_the_install_hint(explain, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError, match=r"TensorRT.*pip install 'auditor-rt\[gpu\]'"):
        build_engines(explain, BuildOptions(graphs=("audit",)))
    assert not (explain / "engines").exists()


def test_profiles_of_every_tiny_graph():
    classifier = Manifest.read(TINY / "classifier" / "manifest.json")
    shapes = input_profiles("ig", classifier.graphs["ig"], 1, 2, 4)
    assert shapes == {"image": ((1, 32, 32, 3), (2, 32, 32, 3), (4, 32, 32, 3)),
                      "baseline": ((1, 32, 32, 3), (2, 32, 32, 3), (4, 32, 32, 3)),
                      "target": ((1,), (2,), (4,))}
