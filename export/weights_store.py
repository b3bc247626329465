"""One weights file for all the graphs of an artifact: identical initializers are stored once.

Each exported graph carries its own copy of the backbone. Moving initializers into a shared ``weights.bin``,
deduplicated by content, stores the backbone once however many attribution graphs there are (ONNX external data;
ONNX Runtime and TensorRT read it from beside the .onnx files).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHTS_FILE = "weights.bin"
INLINE_BELOW = 1024  # bytes: small constants stay inside their graph
ALIGN = 4096


def share_initializers(folder: Path, graph_files: list[str], data_file: str = WEIGHTS_FILE) -> dict:
    """Rewrite ``graph_files`` (in ``folder``) to read their large initializers from one shared file.
    Returns {"file", "bytes", "tensors", "saved_bytes"}."""
    import onnx
    from onnx import numpy_helper
    from onnx.external_data_helper import set_external_data

    stored: dict[str, tuple[int, int]] = {}
    saved = 0
    with open(folder / data_file, "wb") as handle:
        for name in graph_files:
            model = onnx.load(str(folder / name))
            for tensor in model.graph.initializer:
                raw = numpy_helper.to_array(tensor).tobytes()
                if len(raw) < INLINE_BELOW:
                    continue
                key = hashlib.sha256(raw).hexdigest() + str(tensor.data_type) + str(list(tensor.dims))
                if key in stored:
                    saved += len(raw)
                else:
                    handle.write(b"\0" * (-handle.tell() % ALIGN))  # aligned, so ORT can map it
                    stored[key] = (handle.tell(), len(raw))
                    handle.write(raw)
                offset, length = stored[key]
                for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                    tensor.ClearField(field)
                tensor.raw_data = raw  # set_external_data wants raw bytes present; they are dropped below
                set_external_data(tensor, location=data_file, offset=offset, length=length)
                tensor.data_location = onnx.TensorProto.EXTERNAL
                tensor.ClearField("raw_data")
            onnx.save(model, str(folder / name))
        size = handle.tell()
    return {"file": data_file, "bytes": size, "tensors": len(stored), "saved_bytes": saved}
