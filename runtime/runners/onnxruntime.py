"""ONNX Runtime backend: TensorRT EP > CUDA EP > CPU EP unless the caller names providers."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from auditor_rt.runtime.errors import BackendUnavailableError
from auditor_rt.runtime.manifest import TensorSpec
from auditor_rt.runtime.runners.base import Runner

PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
ALIASES = {"tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider",
           "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def _import_ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(
            f"onnxruntime is not installed ({exc}); `pip install onnxruntime` (CPU) or `pip install .[gpu]`"
        ) from None
    _warn_if_both_wheels()
    return onnxruntime


def _warn_if_both_wheels() -> None:
    """onnxruntime and onnxruntime-gpu install the same module; with both, whichever came last silently wins."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("onnxruntime"), version("onnxruntime-gpu")
    except PackageNotFoundError:
        return
    warnings.warn("both onnxruntime and onnxruntime-gpu are installed and overwrite each other; keep one: "
                  "`pip uninstall -y onnxruntime && pip install --force-reinstall --no-deps onnxruntime-gpu`",
                  stacklevel=3)


def resolve_providers(requested: Sequence[str] | str | None, available: Sequence[str]) -> list[str]:
    """Map 'auto', aliases ('cuda', 'trt', 'cpu') or full names to the providers ORT should try, in order."""
    if requested in (None, "auto"):
        return [p for p in PREFERENCE if p in available]
    names = [requested] if isinstance(requested, str) else list(requested)
    resolved = [ALIASES.get(n.lower(), n) for n in names]
    missing = [n for n in resolved if n not in available]
    if missing:
        raise BackendUnavailableError(
            f"execution provider(s) {missing} not available in this onnxruntime build (available: "
            f"{list(available)}); install onnxruntime-gpu for CUDA/TensorRT, or use --providers cpu"
        )
    return resolved


def session_options(threads: int | None = None):
    """The session options every auditor-rt session uses (the benchmarks too)."""
    ort = _import_ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its optimiser's notes (unused initialisers) are not the user's
    # Idle worker threads sleep instead of spinning: same speed on a quiet machine, and far steadier latency
    # when decode or other threads share the cores (benchmarks/forward.py measured 17-68% at batch 8).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # The default order let a gradient graph run a forward activation's backward mask late, so the residual
    # convolutions could not add into that activation's buffer in place and copied it first: resnet50 saliency
    # at batch 8 took 555 ms against 504 ms (ORT profiles, same graph). Forward graphs ran the same.
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    if threads:
        options.intra_op_num_threads = threads
    return options


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self, model_path: str | Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                 providers: Sequence[str] | str | None = "auto", threads: int | None = None,
                 cache_dir: str | Path | None = None, io_binding: bool | None = None, trt_fp16: bool = False):
        super().__init__(inputs, outputs)
        ort = _import_ort()
        self.providers = resolve_providers(providers, ort.get_available_providers())
        options = session_options(threads)
        provider_args = [(p, self._provider_options(p, cache_dir, trt_fp16)) for p in self.providers]
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=provider_args)
        except Exception as exc:  # ORT raises its own exception types for load failures
            raise BackendUnavailableError(f"{model_path}: ONNX Runtime could not load the graph: {exc}") from None
        self.active_providers = self.session.get_providers()
        on_gpu = self.active_providers[0] != "CPUExecutionProvider"
        self.io_binding = on_gpu if io_binding is None else io_binding
        self._output_names = [o.name for o in self.session.get_outputs()]

    @staticmethod
    def available_providers() -> list[str]:
        return list(_import_ort().get_available_providers())

    @staticmethod
    def _provider_options(provider: str, cache_dir: str | Path | None, trt_fp16: bool = False) -> dict:
        if provider != "TensorrtExecutionProvider":
            return {}
        options = {"trt_fp16_enable": True} if trt_fp16 else {}
        if cache_dir is not None:
            os.makedirs(cache_dir, exist_ok=True)
            # Engines build once per GPU, shape profile and precision, then load from the cache.
            options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir),
                           trt_timing_cache_enable=True, trt_timing_cache_path=str(cache_dir))
        return options

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.io_binding:
            values = self.session.run(self._output_names, feed)
            return dict(zip(self._output_names, values))
        # On a GPU, binding lets ORT copy inputs once and skip per-call output allocation negotiation.
        binding = self.session.io_binding()
        for name, value in feed.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in self._output_names:
            binding.bind_output(name)
        self.session.run_with_iobinding(binding)
        return dict(zip(self._output_names, binding.copy_outputs_to_cpu()))

    def close(self) -> None:
        self.__dict__.pop("session", None)
