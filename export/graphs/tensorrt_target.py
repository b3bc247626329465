"""Whether each exported graph can go to TensorRT, checked on every export (``export/tensorrt_compat.py``).

``--target onnxruntime`` (the default) may use forms that run faster in ONNX Runtime but that TensorRT's ONNX parser
refuses (``attribution/rules.ONNXRUNTIME_FORMS``: the max pool's backward through MaxPool's indices): each refused
node is a warning, since ONNX Runtime's TensorRT execution provider would hand it to the next provider (a split
graph). ``--target tensorrt`` builds only TensorRT's forms, and any finding is an error: nothing is written. Either way the manifest records what was found, so
that the runtime can say so when the TensorRT provider is asked for."""

from __future__ import annotations

import warnings
from pathlib import Path

from auditor_rt.export.attribution.rules import TARGETS
from auditor_rt.export.errors import ExportError
from auditor_rt.export.tensorrt_compat import NOTE, tensorrt_findings

PARSER = "onnx-tensorrt 10.1"  # the parser whose rules tensorrt_compat encodes
RECORDED = 20  # findings kept in the manifest per graph


def check_for_tensorrt(key: str, path: Path, target: str) -> dict:
    """The manifest's ``tensorrt`` fact of graph ``key``: the parser checked against and its findings (notes such
    as DOUBLE cast down are left out). Raises ``ExportError`` for findings when ``target`` is tensorrt."""
    if target not in TARGETS:
        raise ExportError(f"--target {target!r}: choose {' or '.join(TARGETS)}")
    findings = [finding for finding in tensorrt_findings(path) if finding.severity != NOTE]
    lines = [f"{f.op_type} {f.node}: {f.reason}" for f in findings]
    if lines:
        shown = "; ".join(lines[:3]) + (f"; and {len(lines) - 3} more" if len(lines) > 3 else "")
        if target == "tensorrt":
            raise ExportError(f"graph {key}: TensorRT's ONNX parser would refuse {len(lines)} node(s): {shown}")
        warnings.warn(f"graph {key} is made for ONNX Runtime, not TensorRT ({shown}); TensorRT's provider would "
                      "split it: export with --target tensorrt for TensorRT", stacklevel=2)
    return {"target": target, "parser": PARSER, "findings": lines[:RECORDED], "count": len(lines)}
