"""Write the graphs of an artifact one by one, each in stages (tracing, ONNX conversion, passes, saving, parity),
with progress lines; the manifest last.

Every graph goes from the exporter to disk once: the ONNX model stays in memory for the passes and the metadata,
and its large initializers go straight into the shared ``weights.bin``. Gradient graphs that differentiate the same
thing share one trace (``shared_traces``).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from auditor_rt.export.attribution import ATTRIBUTIONS, create_attribution, splice
from auditor_rt.export.attribution.compiler import shared_traces
from auditor_rt.export.conversion.torch_to_onnx import (export_model, graph_opset, optimize_for, set_metadata,
                                                        tensor_specs)
from auditor_rt.export.conversion.weights_store import WeightsStore
from auditor_rt.export.errors import ExportError
from auditor_rt.export.graphs.manifest_builder import graph_metadata
from auditor_rt.export.progress import Progress
from auditor_rt.export.graphs.tensorrt_target import check_for_tensorrt
from auditor_rt.export.verification.convergence import check_completeness, onnx_gradient
from auditor_rt.export.verification.parity import check_parity
from auditor_rt.runtime.artifact import sha256_file
from auditor_rt.runtime.errors import ConfigError
from auditor_rt.runtime.manifest import MANIFEST_NAME, GraphEntry, Manifest
from auditor_rt.runtime.methods import METHODS


@dataclass
class ExportResult:
    folder: Path
    manifest: Manifest
    parity: dict[str, dict[str, float]]
    export_s: float
    weights: dict | None = None
    progress: object | None = None  # the Progress that timed each graph's stages (``.seconds``)


def prepare_folder(out_dir: str | Path) -> tuple[Path, bool]:
    """The artifact folder, and whether this export created it (a failed export then removes it)."""
    folder = Path(out_dir)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the artifact folder {folder}: {exc.strerror}") from None
    (folder / MANIFEST_NAME).unlink(missing_ok=True)  # the old manifest must not describe the new graphs
    return folder, created


def example_images(input_size: tuple[int, int]) -> torch.Tensor:
    # Batch 2: tracing at batch 1 would specialise the batch dimension.
    return torch.randint(0, 256, (2, *input_size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@dataclass
class GraphJob:
    """One graph to export: its key in the manifest, the module (or how to build it, which traces it), how its
    inputs look, and the facts its manifest entry records (``GraphEntry``'s method, params, map_output ...)."""

    key: str
    module: torch.nn.Module | None
    kind: str
    input_names: tuple[str, ...] = ("image",)
    facts: dict = field(default_factory=dict)
    build: Callable[[], None] | None = None  # fills module, input_names and facts
    weight: float = 1.0  # how long it takes relative to a forward graph, for the time-left estimate

    @property
    def file(self) -> str:
        return self.key.replace("+", "_plus") + ".onnx"


def example_input(name: str, image: torch.Tensor) -> torch.Tensor:
    """A traced example for each graph input name."""
    batch, height, width = image.shape[:3]
    if name == "noise":
        return torch.randn(batch, 3, 3, height, width)  # 3 samples: a size equal to the batch could be unified with it
    if name == "target":
        return torch.zeros(batch, dtype=torch.int64)
    return image  # image and baseline


_SHARED_GRADIENT = {"saliency": "input", "gradxinput": "input", "ig": "input", "smoothgrad": "input",
                    "gradcam": "stage", "gradcam++": "stage"}


def _method_weight(method: str, params: dict, first_of_trace: bool) -> float:
    """Rough time against the forward graph's export, for the time-left estimate (resnet50, 2 cores: audit 7.3 s,
    saliency 25.6 s as the first of the input gradient, gradient x input 2.9 s, IG at 32 steps 23.4 s, SmoothGrad
    8.1 s, Grad-CAM 10.6 s as the first of its stage gradient, Grad-CAM++ 3.4 s)."""
    weight = 0.45
    if first_of_trace:
        weight += 3.0 if _SHARED_GRADIENT.get(method) == "input" else 1.0
    if method == "ig":
        weight += 0.08 * (int(params.get("steps", 32)) + 2)
    elif method == "smoothgrad":
        weight += 0.6
    return weight


def attribution_jobs(model, example: torch.Tensor, methods, params: dict, num_classes: int | None = None,
                     target: str = "onnxruntime") -> list[GraphJob]:
    """One job per method, built (and traced) when the writer reaches it; unknown names fail here, before any
    minute is spent. ``num_classes``: a classifier's, recorded so that the runtime checks targets against it."""
    unknown = [method for method in methods if method not in ATTRIBUTIONS]
    if unknown:
        raise ConfigError(f"unknown attribution method {', '.join(map(repr, unknown))}; choose from "
                          f"{', '.join(sorted(ATTRIBUTIONS))}")
    jobs, traced = [], set()
    for method in methods:
        first = _SHARED_GRADIENT.get(method, method) not in traced
        traced.add(_SHARED_GRADIENT.get(method, method))
        job = GraphJob(method, None, "attribution", weight=_method_weight(method, params.get(method, {}), first))

        def build(job=job, method=method):
            module = create_attribution(method, model, example, target=target, **params.get(method, {}))
            job.module, job.input_names = module, ("image", *module.extra_inputs)
            job.facts = {"method": method, "params": module.params(),
                         "images_per_input": METHODS[method].per_input(METHODS[method].resolved(module.params())),
                         "signed": module.signed,
                         "map_output": module.map_output, "raw_output": module.raw_output or module.map_output,
                         "num_classes": num_classes}

        job.build = build
        jobs.append(job)
    return jobs


def write_artifact(folder: Path, jobs: list[GraphJob], manifest: Manifest, example: torch.Tensor, opset: int,
                   check: bool, progress: Progress | None = None, created: bool = False,
                   target: str = "onnxruntime") -> ExportResult:
    """Export every job's graph; with ``check``, compare each with PyTorch. Large weights go to one shared
    ``weights.bin``. The manifest is written last, only after every graph passed its checks: a folder whose export
    failed never looks like a usable artifact, and one that this export ``created`` is removed. ``manifest``
    (``manifest_builder.new_manifest``) gets the graphs' entries and the data files. Each graph is checked against
    TensorRT's parser: a warning, or with ``target`` "tensorrt" an error (``tensorrt_target.py``)."""
    try:
        return _write(folder, jobs, manifest, example, opset, check, progress, target)
    except BaseException:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _write(folder, jobs, manifest: Manifest, example, opset, check, progress, target) -> ExportResult:
    if progress is None:
        progress = Progress([job.key for job in jobs], weights={job.key: job.weight for job in jobs}, title="export")
    start = time.perf_counter()
    entries, parity, gradients = {}, {}, {}
    with shared_traces(), WeightsStore(folder) as store:
        for job in jobs:
            with progress.item(job.key):
                if job.build is not None:
                    with progress.stage("tracing"):
                        job.build()
                examples = tuple(example_input(name, example) for name in job.input_names)
                model = _convert(job, examples, opset, progress, gradients)
                actual_opset = graph_opset(model)
                if actual_opset != opset:
                    raise ExportError(f"asked for opset {opset} but the exporter wrote opset {actual_opset}; "
                                      f"use an opset it supports (e.g. 18)")
                with progress.stage("passes"):
                    optimize_for(model, target)
                inputs, outputs = tensor_specs(model)
                with progress.stage("saving"):
                    set_metadata(model, graph_metadata(manifest, job.key, _entry(job, inputs, outputs, opset)))
                    path = store.save(model, job.file)
                with progress.stage("TensorRT check"):
                    job.facts["tensorrt"] = check_for_tensorrt(job.key, path, target)
                if check:
                    with progress.stage("parity"):
                        parity[job.key] = check_parity(job.module, path, inputs, outputs, tuple(example.shape[1:3]),
                                                       **_parity_options(job))
                    if job.facts.get("method") == "ig":
                        with progress.stage("IG convergence"):
                            job.facts["completeness"] = check_completeness(
                                job.module, parity[job.key].actual, parity[job.key].feed, progress,
                                gradient=_exported_gradient(job, gradients))
                        set_metadata(model, graph_metadata(manifest, job.key, _entry(job, inputs, outputs, opset)))
                        store.save(model, job.file)  # weights already in weights.bin: only the small graph
                entries[job.key] = (job, inputs, outputs)
        weights = store.close()
    export_s = time.perf_counter() - start
    manifest.data_files = {weights["file"]: sha256_file(folder / weights["file"])}
    manifest.graphs = {key: _entry(job, inputs, outputs, opset, sha256_file(folder / job.file))
                       for key, (job, inputs, outputs) in entries.items()}
    manifest.write(folder)
    return ExportResult(folder, manifest, parity, export_s, weights, progress)


def _entry(job: GraphJob, inputs, outputs, opset: int, sha256: str = "") -> GraphEntry:
    """The job's manifest entry; without ``sha256`` for the metadata inside the file (it cannot hold its own)."""
    return GraphEntry(file=job.file, sha256=sha256, kind=job.kind, inputs=tuple(inputs), outputs=tuple(outputs),
                      opset=opset, **job.facts)


def _convert(job: GraphJob, examples: tuple, opset: int, progress: Progress, gradients: dict):
    """The job's module as an ONNX model. A traced gradient inside is converted once per export (``gradients``
    keeps it by graph) and spliced in; the module around it is converted with the gradient as one opaque node.
    Where that fails (``gradients`` then holds None for the graph), the whole module is converted instead."""
    dynamic = {"noise": {1: "samples"}}
    graphs = splice.spliceable(job.module)
    if graphs and all(gradients.get(id(graph), True) is not None for _, graph in graphs):
        try:
            return _spliced(job, examples, opset, progress, gradients, dynamic)
        except ExportError:
            for _, graph in graphs:
                gradients[id(graph)] = None
    with progress.stage("ONNX conversion"):
        return export_model(job.module, examples, opset, job.input_names, dynamic=dynamic)[0]


def _spliced(job: GraphJob, examples: tuple, opset: int, progress: Progress, gradients: dict, dynamic: dict):
    with splice.opaque_gradients(job.module) as swapped:
        with progress.stage("ONNX conversion"):
            model, _ = export_model(job.module, examples, opset, job.input_names, dynamic=dynamic,
                                    translations=splice.translation_table(swapped))
    for _, graph in swapped:
        if id(graph) not in gradients:
            with progress.stage("ONNX conversion of the gradient (shared)"):
                gradients[id(graph)] = splice.export_gradient(graph, opset)
    splice.splice(model, {key: gradients[id(graph)] for key, graph in swapped})
    return model


def _parity_options(job: GraphJob) -> dict:
    """IG runs steps + 2 images per image: ONNX Runtime runs 2 images (enough to catch images mixed up across the
    batch), PyTorch the first (the gradient inside is the one that saliency's parity checks on 3 images)."""
    if job.facts.get("method") == "ig":
        return {"batch": 2, "reference_images": 1}
    return {}


def _exported_gradient(job: GraphJob, gradients: dict):
    """IG's gradient graph as exported, in ONNX Runtime, for the convergence check (None: PyTorch does it)."""
    protos = [gradients.get(id(graph)) for _, graph in splice.spliceable(job.module)]
    return onnx_gradient(protos[0]) if len(protos) == 1 and protos[0] is not None else None
