"""Write an artifact folder: ONNX graphs, their digests and facts in ``manifest.json`` and in ONNX metadata."""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from auditor_rt.export.backbone import Normalize
from auditor_rt.export.checkpoint import HEAD_NAME, Checkpoint
from auditor_rt.export.graphs import AuditModule
from auditor_rt.export.onnx_passes import optimize_for_onnxruntime
from auditor_rt.export.parity import check_parity
from auditor_rt.export.weights_store import share_initializers
from auditor_rt.runtime.artifact import sha256_file
from auditor_rt.runtime.errors import ExportError
from auditor_rt.runtime.manifest import MANIFEST_NAME, SCHEMA_VERSION, GraphEntry, Manifest, Preprocess, TensorSpec

DEFAULT_OPSET = 18
_TORCH_TO_ONNX_DTYPE = {torch.uint8: "uint8", torch.float32: "float32", torch.int64: "int64"}


def build_audit_module(checkpoint: Checkpoint) -> AuditModule:
    cfg = checkpoint.config
    normalize = Normalize(cfg["mean"], cfg["std"])
    return AuditModule(normalize, checkpoint.build_backbone(), checkpoint.head, checkpoint.input_size).eval()


def export_graph(module: torch.nn.Module, path: Path, example: torch.Tensor | tuple, opset: int = DEFAULT_OPSET,
                 input_names: tuple[str, ...] = ("image",), dynamic: dict[str, dict[int, str]] | None = None,
                 optimize: bool = True) -> list:
    """Export with a dynamic batch (dim 0 of every input, one shared symbol); returns the output names (the fields
    of the module's NamedTuple output). ``dynamic`` names further dynamic dims, e.g. {"noise": {1: "samples"}}."""
    import onnx

    examples = example if isinstance(example, tuple) else (example,)
    inputs = dict(zip(input_names, examples))  # passed by name: each graph takes only the inputs it names
    with torch.no_grad():
        output_names = list(module(**inputs)._fields)
    if opset > onnx.defs.onnx_opset_version():
        raise ExportError(f"opset {opset} is newer than this onnx package knows ({onnx.defs.onnx_opset_version()}); "
                          f"use {DEFAULT_OPSET}")
    symbols = {"batch": torch.export.Dim("batch", min=1, max=4096)}
    shapes = {}
    for name in input_names:
        dims = {0: "batch", **(dynamic or {}).get(name, {})}
        shapes[name] = {axis: symbols.setdefault(symbol, torch.export.Dim(symbol, min=1, max=4096))
                        for axis, symbol in dims.items()}
    with warnings.catch_warnings(), _quiet_loggers("onnxscript", "torch.onnx", "torch.export"), _raw_batch_norms():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (), str(path), kwargs=inputs, dynamo=True, input_names=list(input_names),
                              output_names=output_names, dynamic_shapes=shapes, opset_version=opset,
                              external_data=False, verbose=False, optimize=optimize)
        except Exception as exc:  # the exporter raises many types; the user needs the cause, not the stack
            raise ExportError(f"torch.onnx.export failed for {type(module).__name__}: {exc}") from exc
    if optimize:
        model = onnx.load(str(path))
        if any(optimize_for_onnxruntime(model).values()):
            onnx.save(model, str(path))
    return output_names


@contextlib.contextmanager
def _raw_batch_norms():
    """Keep BatchNormalization unfused in the exported file, so that every graph of an artifact stores the same
    raw convolution weights and ``weights.bin`` holds the backbone once (ONNX Runtime fuses Conv + BN when it loads
    a session, so run time is the same). The exporter's optimiser fuses BN into the convolutions of forward-only
    graphs, but not where the backward pass needs the raw weights too, which stored a second, fused copy (179 MB
    instead of 90 MB for resnet50). onnxscript offers no switch for one rule: its rule list is swapped for the
    export, and left as is if its layout ever changes (costing disk space only)."""
    try:
        from onnxscript import rewriter
        from onnxscript.rewriter import _fuse_batchnorm

        default = rewriter._DEFAULT_REWRITE_RULES
        fusing = set(_fuse_batchnorm.rules)
    except (ImportError, AttributeError, TypeError):
        yield
        return
    rewriter._DEFAULT_REWRITE_RULES = tuple(rule for rule in default if rule not in fusing)
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = default


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """The exporter logs recoverable failures with full tracebacks; the user gets our one-line errors instead."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def tensor_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Read names, dtypes and (symbolic) shapes back from the saved graph, so the manifest says what ORT sees."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def specs(values):
        out = []
        for value in values:
            t = value.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in t.shape.dim]
            out.append(TensorSpec(value.name, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, tuple(dims)))
        return out

    return specs(model.graph.input), specs(model.graph.output)


def write_metadata(path: Path, facts: dict[str, str]) -> None:
    """Store key facts in the ONNX file's metadata_props so a lone .onnx still describes itself."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in facts.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "auditor-rt"
    onnx.save(model, str(path))


def versions() -> dict[str, str]:
    import onnx
    import timm

    from importlib.metadata import PackageNotFoundError, version

    try:
        exporter = version("auditor-rt")
    except PackageNotFoundError:
        exporter = "unknown"
    return {"torch": torch.__version__, "timm": timm.__version__, "onnx": onnx.__version__, "auditor_rt": exporter}


@dataclass
class ExportResult:
    folder: Path
    manifest: Manifest
    parity: dict[str, dict[str, float]]
    export_s: float
    weights: dict | None = None


@dataclass
class GraphJob:
    """One graph to export: its key in the manifest, the module, and how its inputs look."""

    key: str
    module: torch.nn.Module
    kind: str
    input_names: tuple[str, ...] = ("image",)
    extra: dict | None = None

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


def graph_opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def attribution_jobs(audit: AuditModule, example: torch.Tensor, methods, params: dict) -> list[GraphJob]:
    from auditor_rt.export.attribution import create_attribution

    jobs = []
    for method in methods:
        module = create_attribution(method, audit, example, **params.get(method, {}))
        jobs.append(GraphJob(method, module, "attribution", ("image", *module.extra_inputs),
                             {"method": method, "params": module.params(), "signed": module.signed,
                              "map_output": module.map_output,
                              "raw_output": module.raw_output or module.map_output}))
    return jobs


def prepare_folder(out_dir: str | Path) -> Path:
    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the artifact folder {folder}: {exc.strerror}") from None
    (folder / MANIFEST_NAME).unlink(missing_ok=True)  # the old manifest must not describe the new graphs
    return folder


def example_images(input_size: tuple[int, int]) -> torch.Tensor:
    # Batch 2: tracing at batch 1 would specialise the batch dimension.
    return torch.randint(0, 256, (2, *input_size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def export_artifact(checkpoint: Checkpoint, out_dir: str | Path, name: str | None = None,
                    opset: int = DEFAULT_OPSET, check: bool = True, attributions=(),
                    attribution_params: dict | None = None) -> ExportResult:
    """Export the audit graph (and one graph per attribution method) of a risk-head ``checkpoint``."""
    folder = prepare_folder(out_dir)
    audit = build_audit_module(checkpoint)
    example = example_images(checkpoint.input_size)
    jobs = [GraphJob("audit", audit, "audit")]
    jobs += attribution_jobs(audit, example, attributions, attribution_params or {})
    document = artifact_document(checkpoint, audit, name or folder.name)
    return write_artifact(folder, jobs, document, example, opset, check)


def write_artifact(folder: Path, jobs: list[GraphJob], document: dict, example: torch.Tensor, opset: int,
                   check: bool) -> ExportResult:
    """Export every job's graph; with ``check``, compare each with PyTorch. Large weights go to one shared
    ``weights.bin``. The manifest is written last, only after every graph passed its checks: a folder whose export
    failed never looks like a usable artifact."""
    start = time.perf_counter()
    entries, parity = {}, {}
    for job in jobs:
        path = folder / job.file
        examples = tuple(example_input(name, example) for name in job.input_names)
        export_graph(job.module, path, examples, opset, job.input_names, dynamic={"noise": {1: "samples"}})
        actual_opset = graph_opset(path)
        if actual_opset != opset:
            raise ExportError(f"asked for opset {opset} but the exporter wrote opset {actual_opset}; "
                              f"use an opset it supports (e.g. {DEFAULT_OPSET})")
        inputs, outputs = tensor_specs(path)
        write_metadata(path, graph_metadata(document, job, opset, inputs, outputs))
        if check:
            parity[job.key] = check_parity(job.module, path, inputs, outputs, tuple(example.shape[1:3]))
        entries[job.key] = (job, inputs, outputs)
    export_s = time.perf_counter() - start
    weights = share_initializers(folder, [job.file for job, _, _ in entries.values()])
    document["data_files"] = {weights["file"]: sha256_file(folder / weights["file"])}
    graphs = {key: GraphEntry(file=job.file, sha256=sha256_file(folder / job.file), kind=job.kind,
                              inputs=tuple(inputs), outputs=tuple(outputs), opset=opset, extra=job.extra or {})
              for key, (job, inputs, outputs) in entries.items()}
    threshold = document["decision"]["threshold"]
    manifest = Manifest(name=document["name"], preprocess=Preprocess.from_dict(document["preprocess"]),
                        threshold=None if threshold is None else float(threshold), graphs=graphs, document=document)
    manifest.write(folder)
    return ExportResult(folder, manifest, parity, export_s, weights)


def artifact_document(checkpoint: Checkpoint, audit: AuditModule, name: str) -> dict:
    """The manifest's facts about the model, its preprocessing, its decision and where it came from."""
    cfg = checkpoint.config
    preprocess = Preprocess(input_size=checkpoint.input_size, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"backbone": cfg["backbone"], "weights": cfg["weights"], "feature_channels": cfg["head"]["channels"],
                  "feature_grid": list(audit.features.grid)},
        "head": cfg["head"],
        "preprocess": preprocess.to_dict(),
        "decision": {"threshold": cfg["threshold"], "chosen_on": "validation", "criterion": "max balanced accuracy"},
        "training": {"metrics": cfg.get("metrics", {}), "checkpoint": str(checkpoint.folder.resolve()),
                     "head_sha256": sha256_file(checkpoint.folder / HEAD_NAME),
                     "data": cfg.get("data"), "counts": cfg.get("data_counts", {})},
        "versions": versions(),
    }


def graph_metadata(document: dict, job: GraphJob, opset: int, inputs, outputs) -> dict[str, str]:
    """Key facts as ONNX metadata_props, plus the whole manifest but digests (a file cannot hold its own)."""
    return {
        "auditor_rt.schema_version": str(SCHEMA_VERSION), "auditor_rt.graph": job.key,
        "auditor_rt.backbone": document["model"]["backbone"],
        "auditor_rt.weights_sha256": str(document["model"]["weights"].get("sha256")),
        "auditor_rt.preprocess": json.dumps(document["preprocess"]),
        "auditor_rt.threshold": str(document["decision"]["threshold"]),
        "auditor_rt.head": json.dumps(document.get("head")),
        "auditor_rt.manifest": json.dumps({**document, "graph": {
            "key": job.key, "kind": job.kind, "opset": opset, **(job.extra or {}),
            "inputs": [t.to_dict() for t in inputs], "outputs": [t.to_dict() for t in outputs]}}),
    }
