"""Native TensorRT engines (built by ``auditor-rt build``, see docs/tensorrt.md), run with ``tensorrt`` and
cuda-python's ``cuda.bindings``, never torch.

An engine lives in the artifact (``engines/<graph>.<precision>.plan``) with an entry in the manifest's
``engines`` section (``EngineEntry``): the TensorRT version, GPU and compute capability it was built for, its
optimization profile, its compatibility flags and the digests of the plan and of the ONNX graph it came from.

Security: a serialized engine is executable code. TensorRT's 11.4 Security Considerations page puts deserializing an
engine from an untrusted source on a par with running untrusted native code on the GPU and the host
(https://docs.nvidia.com/deeplearning/tensorrt/11.4.0/reference/security.html). So the plan's SHA-256 is checked
against the manifest before TensorRT sees a byte of it, and the bytes that were hashed are the bytes deserialized.
That only proves the plan is the one the manifest names: trust the artifact folder as you trust a program.

API pages (``PY`` = https://docs.nvidia.com/deeplearning/tensorrt/11.4.0/_static/python-api/infer/): Runtime and
``engine_host_code_allowed`` (PY Core/Runtime.html), ICudaEngine's named IO tensors and profile shapes (PY
Core/Engine.html), IExecutionContext's set_input_shape / set_tensor_address / execute_async_v3 (PY
Core/ExecutionContext.html). 10.x has the same calls (the name-based tensor API and enqueueV3 replaced bindings in
10.0: 11.4 "Python Migration Patterns for TensorRT 10.x"), so this runner serves both. CUDA: cuda-python's
runtime bindings (cudaMallocHost, cudaMalloc, cudaStreamCreate, cudaMemcpyAsync, cudaStreamSynchronize), each
returning (cudaError_t, value) (cuda.bindings' "runtime" API reference; the signatures used here were checked
against the docstrings of cuda-bindings 13.5, which accepts these argument types).
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from auditor_rt.runtime.errors import (ArtifactError, BackendUnavailableError, ConfigError, DigestMismatchError,
                                       InputValidationError)
from auditor_rt.runtime.manifest import Manifest, TensorSpec
from auditor_rt.runtime.manifest_sections import Section
from auditor_rt.runtime.runners.base import Runner

INSTALL_HINT = ("install TensorRT and cuda-python on a machine with an NVIDIA GPU and driver: "
                "`pip install 'auditor-rt[gpu]'` (tensorrt>=10, and cuda-python>=12.6.1, which provides cuda.bindings)")
PRECISIONS = ("fp32", "fp16")
HARDWARE_COMPAT = ("none", "ampere+", "same-cc")
ENGINES_KEY = "engines"  # the manifest's top-level section; older runtimes keep it untouched (Manifest.document)


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailableError(f"the tensorrt backend needs TensorRT's Python package, which is not "
                                      f"importable here ({exc}); {INSTALL_HINT}") from None
    return tensorrt


def import_cudart():
    """cuda-python's runtime bindings: ``cuda.bindings.runtime`` since cuda-python 12.6.1 (the old ``cuda.cudart``
    path is deprecated: https://nvidia.github.io/cuda-python/cuda-bindings/latest/release/12.6.1-notes.html)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as exc:
        raise BackendUnavailableError(f"the tensorrt backend needs cuda-python's cuda.bindings, which is not "
                                      f"importable here ({exc}); {INSTALL_HINT}") from None
    return cudart


def cuda_call(cudart, result, what: str):
    """cuda.bindings returns (cudaError_t, *values); an error is raised, the value returned."""
    error, *values = result
    if error != cudart.cudaError_t.cudaSuccess:
        raise BackendUnavailableError(f"CUDA {what} failed: {getattr(error, 'name', error)}; is an NVIDIA GPU and "
                                      "driver usable here?")
    return values[0] if len(values) == 1 else tuple(values)


def device_info(cudart) -> tuple[str, str]:
    """The current GPU's name and compute capability ("9.0")."""
    device = cuda_call(cudart, cudart.cudaGetDevice(), "cudaGetDevice")
    props = cuda_call(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.rstrip("\x00").strip(), f"{props.major}.{props.minor}"


def rebuild_command(folder, graph: str, precision: str) -> str:
    return f"auditor-rt build {folder} --graphs {graph}" + (" --precision fp16" if precision == "fp16" else "")


@dataclass(frozen=True)
class EngineEntry(Section):
    """One engine in the manifest's ``engines`` section, keyed ``<graph>.<precision>``. ``source_graph`` is the
    manifest graph it was built from (the graph itself, or its FP16 variant) and ``graph_sha256`` that graph's
    digest then. ``profile``: min/opt/max batch of its one optimization profile."""

    graph: str
    precision: str
    file: str
    sha256: str
    source_graph: str
    graph_sha256: str
    tensorrt: str
    gpu: str
    compute_capability: str
    profile: dict
    hardware_compat: str = "none"
    version_compatible: bool = False
    tf32: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.graph}.{self.precision}"

    @property
    def batch_range(self) -> tuple[int, int]:
        return int(self.profile["min_batch"]), int(self.profile["max_batch"])


def engine_entries(manifest: Manifest) -> dict[str, EngineEntry]:
    """The manifest's engines, {"audit.fp32": EngineEntry}; an artifact without any gives {}."""
    section = manifest.document.get(ENGINES_KEY) or {}
    try:
        return {key: EngineEntry.from_dict(value) for key, value in section.items()}
    except (TypeError, KeyError, AttributeError) as exc:
        raise ArtifactError(f"the manifest's {ENGINES_KEY!r} section is malformed ({exc}); rebuild the engines "
                            "with `auditor-rt build`") from None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


def version_runs(built: str, running: str, version_compatible: bool) -> bool:
    """An engine runs only on the TensorRT that built it, unless built VERSION_COMPATIBLE: then on a newer 11.x
    runtime of the same major, or across 10 -> 11 (and 8 -> 10), never on an older one (11.4 support matrix,
    "Engine Portability": https://docs.nvidia.com/deeplearning/tensorrt/11.4.0/getting-started/support-matrix.html;
    11.1 "Engine Compatibility": .../tensorrt/11.1.0/inference-library/engine-compatibility.html)."""
    if _version(built) == _version(running):
        return True
    if not version_compatible or _version(running) < _version(built):
        return False
    majors = (_version(built)[0], _version(running)[0])
    return majors[0] == majors[1] or majors in {(8, 10), (10, 11)}


def hardware_runs(entry: EngineEntry, compute_capability: str) -> bool:
    """Without hardware compatibility an engine is tied to the GPU architecture it was built on; AMPERE_PLUS runs on
    compute capability 8.0 and newer, SAME_COMPUTE_CAPABILITY on the same compute capability (HardwareCompatibility-
    Level in the 11.4 Python API, IBuilderConfig page)."""
    if entry.hardware_compat == "ampere+":
        return _version(compute_capability)[:1] >= (8,)
    return _version(compute_capability) == _version(entry.compute_capability)


def check_engine(entry: EngineEntry, folder, tensorrt_version: str, gpu: str, compute_capability: str) -> None:
    """Refuse an engine this TensorRT or this GPU cannot run, naming both sides and the command that rebuilds it."""
    rebuild = f"rebuild it here with `{rebuild_command(folder, entry.graph, entry.precision)}`"
    if not version_runs(entry.tensorrt, tensorrt_version, entry.version_compatible):
        kind = "a version-compatible engine" if entry.version_compatible else "an engine (not version-compatible)"
        raise ArtifactError(f"engine {entry.key} is {kind} built with TensorRT {entry.tensorrt}; this is TensorRT "
                            f"{tensorrt_version}, which cannot run it; {rebuild}")
    if not hardware_runs(entry, compute_capability):
        raise ArtifactError(f"engine {entry.key} was built on {entry.gpu} (compute capability "
                            f"{entry.compute_capability}, hardware compatibility {entry.hardware_compat}); this GPU is "
                            f"{gpu} (compute capability {compute_capability}), which cannot run it; {rebuild}")
    if entry.hardware_compat == "none" and entry.gpu != gpu:
        warnings.warn(f"engine {entry.key} was built on {entry.gpu} and runs on {gpu} (same compute capability "
                      f"{compute_capability}); TensorRT tunes an engine to one GPU model: {rebuild}", stacklevel=3)


def _native_handle(stream) -> int:
    try:  # int(cuda object) is deprecated since cuda-bindings 12.9.1
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(stream)
    return get_cuda_native_handle(stream)


class TensorRTRunner(Runner):
    """Runs one engine: IO tensors by name, pinned host buffers and device buffers allocated once for the profile's
    largest shapes, one CUDA stream, async copies, any batch within the optimization profile.

    Opening an engine runs code from its file (see the module's security note): ``engine`` (its manifest entry) is
    required, and the plan's SHA-256 must match it before it is deserialized. Version-compatible engines carry a
    lean runtime and deserialize only with ``runtime.engine_host_code_allowed = True``, which is set for them alone.
    One call at a time: the buffers and the stream are shared (serve runs the model on its batcher's one thread).
    One GPU: the current CUDA device. Use ``from_artifact`` (``create_runner(artifact, graph, backend="tensorrt")``)."""

    name = "tensorrt"

    def __init__(self, path: str | Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                 engine: EngineEntry | None = None, folder: str | Path | None = None):
        super().__init__(inputs, outputs)
        self._buffers: list[tuple[int, int]] = []
        self._stream = None
        if engine is None:
            raise ConfigError("a TensorRT engine opens only with its manifest entry (digest, TensorRT version, GPU): "
                              "use create_runner(artifact, graph, backend='tensorrt')")
        self.entry, self.folder = engine, Path(folder) if folder else Path(path).parent.parent
        data = Path(path).read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != engine.sha256:  # before deserialization: a plan is code
            raise DigestMismatchError(f"{path}: SHA-256 {actual[:16]}… does not match the manifest's "
                                      f"{engine.sha256[:16]}…; the engine was changed or replaced after it was built. "
                                      f"Not deserializing it; rebuild it with "
                                      f"`{rebuild_command(self.folder, engine.graph, engine.precision)}`")
        self._trt, self._cudart = import_tensorrt(), import_cudart()
        gpu, capability = device_info(self._cudart)
        check_engine(engine, self.folder, self._trt.__version__, gpu, capability)
        self.active_providers = [f"TensorRT {self._trt.__version__} on {gpu}"]  # as serve's /health reports it
        try:
            self._open(data)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_artifact(cls, artifact, graph: str, precision: str | None = None) -> "TensorRTRunner":
        """The engine of ``graph`` in the artifact (``precision`` None: fp32 if built, else the only one)."""
        entries = [e for e in engine_entries(artifact.manifest).values() if e.graph == graph]
        chosen = [e for e in entries if e.precision == (precision or "fp32")] or ([] if precision else entries[:1])
        if not chosen:
            built = ", ".join(sorted(engine_entries(artifact.manifest))) or "none"
            raise BackendUnavailableError(
                f"{artifact.folder}: no TensorRT engine for graph {graph!r}{f' in {precision}' if precision else ''} "
                f"(engines built: {built}); build one on this GPU with "
                f"`{rebuild_command(artifact.folder, graph, precision or 'fp32')}`")
        entry, spec = chosen[0], artifact.graph(graph)
        source = artifact.graph(entry.source_graph)
        if source.sha256 != entry.graph_sha256:
            raise ArtifactError(f"engine {entry.key} was built from another export of graph {entry.source_graph!r} "
                                f"(SHA-256 {entry.graph_sha256[:16]}…, now {source.sha256[:16]}…); rebuild it with "
                                f"`{rebuild_command(artifact.folder, graph, entry.precision)}`")
        path = artifact.folder / entry.file
        if Path(entry.file).is_absolute() or not path.resolve().is_relative_to(artifact.folder.resolve()):
            raise ArtifactError(f"{artifact.folder}: engine {entry.key} names {entry.file!r}, outside the artifact "
                                "folder; an artifact may only name files inside it")
        if not path.is_file():
            raise ArtifactError(f"{path}: named in the manifest but missing; rebuild it with "
                                f"`{rebuild_command(artifact.folder, graph, entry.precision)}`")
        return cls(path, spec.inputs, spec.outputs, engine=entry, folder=artifact.folder)

    @staticmethod
    def available_providers() -> list[str]:
        try:
            trt, cudart = import_tensorrt(), import_cudart()
            gpu, capability = device_info(cudart)
        except BackendUnavailableError:
            return []
        return [f"TensorRT {trt.__version__} on {gpu} (compute capability {capability})"]

    def _open(self, data: bytes) -> None:
        trt, cudart = self._trt, self._cudart
        # PY Core/Runtime.html: deserialize_cuda_engine returns None when it cannot (its log says why)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if self.entry.version_compatible:
            # A version-compatible plan embeds a lean runtime (host code); TensorRT refuses it unless allowed.
            # 11.1 "Engine Compatibility" page; 10.16 "Version Compatibility" page.
            self._runtime.engine_host_code_allowed = True
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise ArtifactError(f"engine {self.entry.key}: TensorRT could not deserialize it (see its log above); "
                                f"rebuild it with `{rebuild_command(self.folder, self.entry.graph, self.entry.precision)}`")
        self._context = self._engine.create_execution_context()
        self._io = self._io_tensors()
        self._profile = {name: tuple(tuple(int(d) for d in dims) for dims in
                                     self._engine.get_tensor_profile_shape(name, 0)) for name in self.input_specs}
        # Device buffers once, for the profile's largest shapes: outputs' largest shapes follow from the inputs'.
        for name in self.input_specs:
            self._context.set_input_shape(name, self._profile[name][2])
        self._host, self._device = {}, {}
        for name, dtype in self._io.items():
            shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ArtifactError(f"engine {self.entry.key}: output {name!r} has a data-dependent shape "
                                    f"{list(shape)}, which this runner does not allocate")
            nbytes = max(1, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
            host = int(cuda_call(cudart, cudart.cudaMallocHost(nbytes), "cudaMallocHost"))  # pinned: async copies
            self._buffers.append((host, 0))
            device = int(cuda_call(cudart, cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self._buffers[-1] = (host, device)
            pinned = (ctypes.c_uint8 * nbytes).from_address(host)
            self._host[name] = np.frombuffer(pinned, dtype=np.uint8).view(dtype)
            self._device[name] = device
            self._context.set_tensor_address(name, device)  # fixed: the buffers never move
        self._stream = cuda_call(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")

    def _io_tensors(self) -> dict[str, np.dtype]:
        """The engine's IO tensors by name (num_io_tensors, get_tensor_name/mode/dtype: the TensorRT 10+ named-tensor
        API; 11.4 Python migration patterns), checked against the manifest's specs."""
        trt, engine = self._trt, self._engine
        found, modes = {}, {}
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            modes[name] = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            found[name] = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        wanted = {**{n: (True, s) for n, s in self.input_specs.items()},
                  **{n: (False, s) for n, s in self.output_specs.items()}}
        problems = [f"{name} ({'missing' if name not in found else 'input/output differs'})"
                    for name, (is_input, _) in wanted.items() if modes.get(name) is not is_input]
        problems += [f"{name} (dtype {found[name]}, manifest {spec.dtype})" for name, (_, spec) in wanted.items()
                     if name in found and found[name] != np.dtype(spec.dtype)]
        problems += [f"{name} (not in the manifest)" for name in found if name not in wanted]
        if problems:
            raise ArtifactError(f"engine {self.entry.key} does not match the manifest's graph: {', '.join(problems)}; "
                                f"rebuild it with `{rebuild_command(self.folder, self.entry.graph, self.entry.precision)}`")
        return {name: found[name] for name in wanted}

    def validate(self, feed) -> None:
        super().validate(feed)
        for name, value in feed.items():
            low, _, high = self._profile[name]
            if any(not lo <= d <= hi for d, lo, hi in zip(value.shape, low, high)):
                lo_batch, hi_batch = self.entry.batch_range
                raise InputValidationError(
                    f"input {name!r}: shape {list(value.shape)} is outside engine {self.entry.key}'s optimization "
                    f"profile (min {list(low)}, max {list(high)}; batch {lo_batch} to {hi_batch}); split the batch, "
                    f"or rebuild with `{rebuild_command(self.folder, self.entry.graph, self.entry.precision)} "
                    f"--max-batch N`")

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # PY Core/ExecutionContext.html: set_input_shape per call (dynamic batch), addresses set once at open,
        # execute_async_v3(stream handle) enqueues; cudaMemcpyAsync on the same stream, then one synchronize.
        cudart, stream = self._cudart, self._stream
        for name in self.input_specs:
            value = np.ascontiguousarray(feed[name])
            if not self._context.set_input_shape(name, value.shape):
                raise InputValidationError(f"input {name!r}: TensorRT refused shape {list(value.shape)}")
            np.copyto(self._host[name][:value.size], value.reshape(-1))
            cuda_call(cudart, cudart.cudaMemcpyAsync(self._device[name], self._host[name].ctypes.data, value.nbytes,
                                                     cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream),
                      "cudaMemcpyAsync (to the GPU)")
        if not self._context.execute_async_v3(_native_handle(stream)):
            raise BackendUnavailableError(f"engine {self.entry.key}: TensorRT could not enqueue the inference "
                                          "(see its log above)")
        shapes = {}
        for name in self.output_specs:
            shapes[name] = tuple(int(d) for d in self._context.get_tensor_shape(name))
            size = int(np.prod(shapes[name], dtype=np.int64))
            cuda_call(cudart, cudart.cudaMemcpyAsync(self._host[name].ctypes.data, self._device[name],
                                                     size * self._host[name].itemsize,
                                                     cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream),
                      "cudaMemcpyAsync (from the GPU)")
        cuda_call(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        # Copies: the pinned buffers are overwritten by the next call.
        return {name: self._host[name][:int(np.prod(shape, dtype=np.int64))].reshape(shape).copy()
                for name, shape in shapes.items()}

    def close(self) -> None:
        cudart = getattr(self, "_cudart", None)
        if cudart is not None and self._stream is not None:
            cudart.cudaStreamSynchronize(self._stream)
        for attribute in ("_context", "_engine", "_runtime", "_host"):
            self.__dict__.pop(attribute, None)  # the context goes before the engine, the engine before the runtime
        for host, device in self._buffers:
            if device:
                cudart.cudaFree(device)
            cudart.cudaFreeHost(host)
        self._buffers = []
        if cudart is not None and self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
        self._stream = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the bindings may be gone
            pass
