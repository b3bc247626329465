"""One ONNX graph to one serialized TensorRT engine, with the builder of TensorRT 11 (and 10.x).

The API choices and the pages they rest on (``PY`` = https://docs.nvidia.com/deeplearning/tensorrt/11.4.0/
_static/python-api/infer/):

- Strongly typed networks only. TensorRT 11 removed BuilderFlag.FP16/INT8/BF16 and the precision constraints:
  precision comes from the ONNX graph's types (11.4 "Removed Python APIs and Replacements",
  .../tensorrt/11.4.0/api/migration/tensorrt-10x-to-11x-python-api-reference.html). In 11.x every network is
  strongly typed and NetworkDefinitionCreationFlag.STRONGLY_TYPED is deprecated and ignored (PY Core/Builder.html,
  11.0.0); on 10.x the same behaviour needs that flag at create_network, so it is set there, and a 10.x without it
  is refused rather than built weakly typed (a weakly typed build may pick FP32 kernels for an "fp16" engine, or
  FP16 ones for an "fp32" one).
- OnnxParser.parse_from_file: the parser reads external data (weights.bin) beside the graph file; its errors come
  from num_errors / get_error(i) (PY parsers/Onnx/pyOnnx.html).
- One optimization profile (IOptimizationProfile.set_shape, PY Core/OptimizationProfile.html).
- IBuilderConfig (PY Core/BuilderConfig.html): set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes);
  hardware_compatibility_level = HardwareCompatibilityLevel.AMPERE_PLUS or SAME_COMPUTE_CAPABILITY;
  set_flag(BuilderFlag.VERSION_COMPATIBLE) (such a plan embeds a lean runtime and deserializes only with
  ``runtime.engine_host_code_allowed = True``: 11.1 "Engine Compatibility",
  .../tensorrt/11.1.0/inference-library/engine-compatibility.html); clear_flag(BuilderFlag.TF32) unless asked: TF32
  is on by default and changes gradients (issue 15 measured saliency 0.26 of its scale off on ORT CUDA);
  create_timing_cache(bytes) / set_timing_cache(cache, ignore_mismatch) / ITimingCache.serialize()
  (PY Core/TimingCache.html); progress_monitor = an IProgressMonitor (PY Core/ProgressMonitor.html).
- Builder.build_serialized_network returns the plan, or None on failure (PY Core/Builder.html).
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from auditor_rt.runtime.errors import ArtifactError, BackendUnavailableError, ConfigError, NotSupportedError

# report(graph, phase, done, total, top_level): the builder's progress, from its threads
Report = Callable[[str, str, int, int, bool], None]


@dataclass(frozen=True)
class NetworkOptions:
    workspace_mb: int | None = None
    hardware_compat: str = "none"
    version_compatible: bool = False
    tf32: bool = False


def _major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def _capturing_logger(trt):
    """An ILogger that keeps TensorRT's errors for the one-line message and drops the rest."""

    class Capture(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg))

    return Capture()


def _progress_monitor(trt, graph: str, report: Report | None):
    if report is None or not hasattr(trt, "IProgressMonitor"):
        return None

    class Monitor(trt.IProgressMonitor):
        """TensorRT calls it from several threads: it must be thread-safe (PY Core/ProgressMonitor.html)."""

        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._phases: dict[str, tuple[int, bool]] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            with self._lock:
                self._phases[phase_name] = (int(num_steps), parent_phase is None)
                report(graph, phase_name, 0, int(num_steps), parent_phase is None)

        def step_complete(self, phase_name, step):
            with self._lock:
                total, top = self._phases.get(phase_name, (0, False))
                report(graph, phase_name, int(step) + 1, total, top)
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            with self._lock:
                self._phases.pop(phase_name, None)

    return Monitor()


def _create_network(trt, builder):
    if _major(trt) >= 11:
        return builder.create_network(0)  # always strongly typed
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise BackendUnavailableError(f"TensorRT {trt.__version__} cannot build strongly typed networks, which "
                                      "auditor-rt needs for its precision to be the graph's; install tensorrt>=10")
    return builder.create_network(1 << int(flag))


def _parser_error(error) -> str:
    text = str(error.desc()) if hasattr(error, "desc") else str(error)
    node = error.node_name() if hasattr(error, "node_name") else ""
    operator = error.node_operator() if hasattr(error, "node_operator") else ""
    return f"{text} (node {node!r}, {operator})" if node else text


def _parse(trt, network, logger, graph: str, path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)] or logger.errors
        shown = "; ".join(errors[:3]) + (f"; and {len(errors) - 3} more" if len(errors) > 3 else "")
        raise NotSupportedError(f"graph {graph!r}: TensorRT {trt.__version__}'s ONNX parser refused {path.name}: "
                                f"{shown or 'no reason given'}; `auditor-rt export --target tensorrt` checks a graph "
                                "against the parser at export")


def _configure(trt, builder, options: NetworkOptions, timing_cache: bytes):
    config = builder.create_builder_config()
    if options.workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mb) << 20)
    if not options.tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if options.hardware_compat != "none":
        name = {"ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}[options.hardware_compat]
        level = getattr(trt.HardwareCompatibilityLevel, name, None)
        if level is None:
            raise ConfigError(f"TensorRT {trt.__version__} has no HardwareCompatibilityLevel.{name}; build with "
                              "--hardware-compat none, or a newer TensorRT")
        config.hardware_compatibility_level = level
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    cache = config.create_timing_cache(timing_cache)
    if not config.set_timing_cache(cache, False):  # a cache from another TensorRT or GPU: start a new one
        warnings.warn("the artifact's TensorRT timing cache was made by another TensorRT version or GPU; starting "
                      "a new one (engines/timing.cache is replaced when the build succeeds)", stacklevel=3)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return config, cache


def build_plan(trt, graph: str, onnx_path: Path, shapes: dict, options: NetworkOptions, timing_cache: bytes,
               report: Report | None = None) -> tuple[bytes, bytes]:
    """(serialized engine, serialized timing cache) for ``onnx_path``. ``shapes``: {input: (min, opt, max)}."""
    logger = _capturing_logger(trt)
    builder = trt.Builder(logger)
    network = _create_network(trt, builder)
    _parse(trt, network, logger, graph, onnx_path)
    inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    if inputs != set(shapes):
        raise ArtifactError(f"graph {graph!r}: the ONNX graph's inputs {sorted(inputs)} are not the manifest's "
                            f"{sorted(shapes)}; re-export the artifact")
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    config, cache = _configure(trt, builder, options, timing_cache)
    config.add_optimization_profile(profile)
    monitor = _progress_monitor(trt, graph, report)  # referenced until the build returns (it must outlive it)
    if monitor is not None:
        config.progress_monitor = monitor
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        reason = "; ".join(logger.errors[-3:]) or "no reason logged"
        raise BackendUnavailableError(f"graph {graph!r}: TensorRT {trt.__version__} could not build an engine: "
                                      f"{reason}; a larger --workspace-mb or a smaller --max-batch may help")
    return bytes(plan), bytes(cache.serialize())
