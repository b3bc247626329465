"""Backends behind one interface, from one registry (like the attribution methods). ``open_graph`` opens an ONNX
file on a named backend, ``create_runner`` an artifact's graph (digest checked first). A backend's module is
imported only when it is chosen, so ``auditor-rt --help`` and the edge install stay light."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Sequence

from auditor_rt.runtime.artifact import Artifact
from auditor_rt.runtime.errors import ConfigError
from auditor_rt.runtime.manifest import TensorSpec
from auditor_rt.runtime.runners.base import Runner

# name -> "module:class" of its Runner. "tensorrt" runs native engines built by `auditor-rt build` (one per graph,
# in the artifact); ONNX Runtime's TensorRT execution provider stays `--backend onnxruntime --providers tensorrt`.
REGISTRY: dict[str, str] = {"onnxruntime": "auditor_rt.runtime.runners.onnxruntime:OnnxRuntimeRunner",
                            "tensorrt": "auditor_rt.runtime.runners.tensorrt:TensorRTRunner"}
BACKENDS = ("auto", *REGISTRY)


def register_runner(name: str, target: str) -> None:
    """Add a backend: ``target`` is "module:class" of a ``Runner`` whose constructor takes (path, inputs,
    outputs, **options)."""
    REGISTRY[name] = target


def runner_class(backend: str) -> type[Runner]:
    name = "onnxruntime" if backend == "auto" else backend
    if name not in REGISTRY:
        known = ", ".join(["auto", *REGISTRY])
        raise ConfigError(f"unknown backend {backend!r}; choose one of {known}")
    module, _, attribute = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def open_graph(path: str | Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], backend: str = "auto",
               **options) -> Runner:
    """Open one ONNX file on ``backend`` ("auto": ONNX Runtime with its best available provider). ``options``
    go to the backend (ONNX Runtime: providers, threads, cache_dir, io_binding, trt_fp16; TensorRT: engine, the
    engine's manifest entry, without which it refuses to open a plan)."""
    return runner_class(backend)(path, inputs, outputs, **options)


def available_providers(backend: str = "auto") -> list[str]:
    """The execution providers (or devices) that ``backend`` can use on this machine."""
    return runner_class(backend).available_providers()


def create_runner(artifact: Artifact, graph: str = "audit", backend: str = "auto", providers=None,
                  threads: int | None = None, io_binding: bool | None = None, precision: str | None = None) -> Runner:
    """Open ``graph`` of ``artifact`` on a backend; a re-exported graph never reuses a stale TensorRT cache.
    ``backend="tensorrt"`` opens the graph's native engine from the artifact's engines section (``precision``:
    fp32 or fp16; None prefers fp32); ``providers``, ``threads`` and ``io_binding`` are ONNX Runtime's."""
    cls = runner_class(backend)  # an unknown backend is named before any file is read
    if backend == "tensorrt":
        return cls.from_artifact(artifact, graph, precision)
    entry = artifact.graph(graph)
    path = artifact.graph_path(graph)  # checks the digest first
    runner = cls(path, entry.inputs, entry.outputs, providers=providers or "auto", threads=threads,
                 cache_dir=artifact.folder / "trt_cache" / entry.sha256[:16], io_binding=io_binding)
    refused = (entry.tensorrt or {}).get("count", 0)
    if refused and "TensorrtExecutionProvider" in getattr(runner, "active_providers", ()):
        warnings.warn(f"graph {graph}: TensorRT's parser refuses {refused} of its nodes (found at export: "
                      f"{(entry.tensorrt.get('findings') or ['?'])[0]}), so ONNX Runtime's TensorRT provider runs it "
                      "split, the rest on the next provider; re-export with --target tensorrt to see why", stacklevel=2)
    return runner


__all__ = ["BACKENDS", "Runner", "available_providers", "create_runner", "open_graph", "register_runner"]
