"""Backends behind one interface, chosen by ``create_runner``. Heavy backends are imported only when chosen."""

from __future__ import annotations

from auditor_rt.runtime.artifact import Artifact
from auditor_rt.runtime.errors import BackendUnavailableError, ConfigError
from auditor_rt.runtime.runners.base import Runner

BACKENDS = ("auto", "onnxruntime")


def create_runner(artifact: Artifact, graph: str = "audit", backend: str = "auto", providers=None,
                  threads: int | None = None, io_binding: bool | None = None) -> Runner:
    """Open ``graph`` of ``artifact`` on a backend. ``auto`` is ONNX Runtime with its best available provider."""
    if backend not in BACKENDS + ("tensorrt",):
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS + ('tensorrt',))}")
    entry = artifact.graph(graph)
    path = artifact.graph_path(graph)  # checks the digest first
    if backend in ("auto", "onnxruntime"):
        from auditor_rt.runtime.runners.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, entry.inputs, entry.outputs, providers=providers or "auto", threads=threads,
                                 cache_dir=artifact.folder / "trt_cache" / entry.sha256[:16],
                                 io_binding=io_binding)  # a re-exported graph never reuses a stale engine
    raise BackendUnavailableError(  # backend == "tensorrt"
        "native TensorRT engines are not built by this version of auditor-rt; use --backend onnxruntime "
        "--providers tensorrt to run the graph through ONNX Runtime's TensorRT execution provider"
    )


__all__ = ["BACKENDS", "Runner", "create_runner"]
