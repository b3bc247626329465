"""Convert a torch module to an ONNX model (``export_model``), and read back what the model says: its tensors
(``tensor_specs``), its opset; write its metadata (``set_metadata``)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import torch

from auditor_rt.export.conversion.onnx_passes import optimize_for_onnxruntime
from auditor_rt.export.conversion.tensorrt_passes import optimize_for_tensorrt
from auditor_rt.export.errors import ExportError
from auditor_rt.runtime.feeds import ROLES
from auditor_rt.runtime.manifest import TensorSpec

DEFAULT_OPSET = 18


def export_graph(module: torch.nn.Module, path: Path, example: torch.Tensor | tuple, opset: int = DEFAULT_OPSET,
                 input_names: tuple[str, ...] = ("image",), dynamic: dict[str, dict[int, str]] | None = None,
                 optimize: bool = True, target: str = "onnxruntime") -> list:
    """Export with a dynamic batch (dim 0 of every input, one shared symbol); returns the output names (the fields
    of the module's NamedTuple output). ``dynamic`` names further dynamic dims, e.g. {"noise": {1: "samples"}}.
    ``optimize`` rewrites the graph for ``target`` (``optimize_for``)."""
    import onnx

    model, output_names = export_model(module, example, opset, input_names, dynamic, optimize)
    if optimize:
        optimize_for(model, target)
    onnx.save(model, str(path))
    return output_names


def optimize_for(model, target: str) -> dict[str, int]:
    """The ONNX passes for where the graph will run: ONNX Runtime's CPU layouts, or TensorRT's parser."""
    return optimize_for_tensorrt(model) if target == "tensorrt" else optimize_for_onnxruntime(model)


def export_model(module: torch.nn.Module, example: torch.Tensor | tuple, opset: int = DEFAULT_OPSET,
                 input_names: tuple[str, ...] = ("image",), dynamic: dict[str, dict[int, str]] | None = None,
                 optimize: bool = True, output_names: list[str] | None = None, translations: dict | None = None):
    """``export_graph`` without the ONNX Runtime passes and without saving: (ModelProto, output names). The
    model stays in memory, so that the passes, the metadata and the shared weights file each need no load and
    save of their own (a load or save of resnet50's graph with its weights took seconds each). The output names
    are the fields of the module's NamedTuple output, read from the captured program rather than from a run of
    the module (for IG on resnet50 a run is 68 forward and backward passes). ``translations``: the exporter's
    ``custom_translation_table``."""
    import onnx

    examples = example if isinstance(example, tuple) else (example,)
    inputs = dict(zip(input_names, examples))  # passed by name: each graph takes only the inputs it names
    if opset > onnx.defs.onnx_opset_version():
        raise ExportError(f"opset {opset} is newer than this onnx package knows ({onnx.defs.onnx_opset_version()}); "
                          f"use {DEFAULT_OPSET}")
    symbols = {"batch": torch.export.Dim("batch", min=1, max=4096)}
    shapes, names = {}, {}  # Dims for capture; the same by name, for the ONNX file's symbolic dims
    for name in input_names:
        dims = {0: "batch", **(dynamic or {}).get(name, {})}
        shapes[name] = {axis: symbols.setdefault(symbol, torch.export.Dim(symbol, min=1, max=4096))
                        for axis, symbol in dims.items()}
        names[name] = dims
    with warnings.catch_warnings(), _quiet_loggers("onnxscript", "torch.onnx", "torch.export"), _raw_batch_norms():
        warnings.simplefilter("ignore")
        try:
            if output_names:  # the exporter's own capture (it tries several strategies)
                program, dynamic_shapes = module, shapes
            else:
                program = torch.export.export(module, (), kwargs=inputs, dynamic_shapes=shapes, strict=False)
                output_names, dynamic_shapes = _output_fields(program, module, inputs), names
            onnx_program = torch.onnx.export(program, (), None, kwargs=inputs, dynamo=True,
                                             input_names=list(input_names), output_names=output_names,
                                             opset_version=opset, verbose=False, optimize=optimize,
                                             custom_translation_table=translations, dynamic_shapes=dynamic_shapes)
            model = onnx_program.model_proto
        except Exception as exc:  # the exporter raises many types; the user needs the cause, not the stack
            raise ExportError(f"torch.onnx.export failed for {type(module).__name__}: {exc}") from exc
    return model, output_names


def _output_fields(program, module: torch.nn.Module, inputs: dict) -> list[str]:
    spec = program.call_spec.out_spec  # a NamedTuple output: its class is the spec's context
    fields = getattr(getattr(spec, "context", None), "_fields", None)
    if fields and len(fields) == spec.num_children and all(child.is_leaf() for child in spec.children()):
        return list(fields)
    with torch.no_grad():  # anything else: run it (for IG on resnet50, 68 forward and backward passes)
        return list(module(**inputs)._fields)


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


def tensor_specs(graph) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Read names, dtypes and (symbolic) shapes back from the graph (a path or a ModelProto), so the manifest says
    what ORT sees."""
    import onnx

    model = graph if isinstance(graph, onnx.ModelProto) else onnx.load(str(graph), load_external_data=False)

    def specs(values, inputs: bool):
        out = []
        for value in values:
            t = value.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in t.shape.dim]
            role = value.name if inputs and value.name in ROLES else None  # the exporter names inputs by role
            out.append(TensorSpec(value.name, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, tuple(dims),
                                  role))
        return out

    return specs(model.graph.input, True), specs(model.graph.output, False)


def set_metadata(model, facts: dict[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in facts.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "auditor-rt"


def graph_opset(graph) -> int:
    import onnx

    model = graph if isinstance(graph, onnx.ModelProto) else onnx.load(str(graph), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
