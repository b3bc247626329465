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


class WeightsStore:
    """``weights.bin`` written as graphs are exported: each graph's large initializers are appended once (by
    content) and the graph is saved reading them from there. Saving each graph whole first and rewriting it here
    afterwards wrote and parsed the backbone twice more per graph (about 100 MB each for resnet50)."""

    def __init__(self, folder: Path, data_file: str = WEIGHTS_FILE):
        self.folder, self.file = Path(folder), data_file
        self._handle = open(self.folder / data_file, "wb")
        self._stored: dict[str, tuple[int, int]] = {}
        self.saved = 0

    def externalize(self, model) -> None:
        """Point ``model``'s initializers of at least ``INLINE_BELOW`` bytes into the shared file (in place)."""
        import onnx
        from onnx import numpy_helper
        from onnx.external_data_helper import set_external_data

        handle = self._handle
        for tensor in model.graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                continue
            raw = tensor.raw_data if tensor.HasField("raw_data") else numpy_helper.to_array(tensor).tobytes()
            if len(raw) < INLINE_BELOW:
                continue
            key = hashlib.sha256(raw).hexdigest() + str(tensor.data_type) + str(list(tensor.dims))
            if key in self._stored:
                self.saved += len(raw)
            else:
                handle.write(b"\0" * (-handle.tell() % ALIGN))  # aligned, so ORT can map it
                self._stored[key] = (handle.tell(), len(raw))
                handle.write(raw)
            offset, length = self._stored[key]
            for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                tensor.ClearField(field)
            tensor.raw_data = raw  # set_external_data wants raw bytes present; they are dropped below
            set_external_data(tensor, location=self.file, offset=offset, length=length)
            tensor.data_location = onnx.TensorProto.EXTERNAL
            tensor.ClearField("raw_data")
        handle.flush()  # the graph is loaded by ONNX Runtime (parity) before the store closes

    def save(self, model, name: str) -> Path:
        import onnx

        self.externalize(model)
        path = self.folder / name
        onnx.save(model, str(path))
        return path

    def close(self) -> dict:
        """Returns {"file", "bytes", "tensors", "saved_bytes"}."""
        size = self._handle.tell()
        self._handle.close()
        return {"file": self.file, "bytes": size, "tensors": len(self._stored), "saved_bytes": self.saved}

    def __enter__(self) -> "WeightsStore":
        return self

    def __exit__(self, *exc) -> None:
        if not self._handle.closed:
            self._handle.close()


def share_initializers(folder: Path, graph_files: list[str], data_file: str = WEIGHTS_FILE) -> dict:
    """Rewrite ``graph_files`` (in ``folder``), already saved whole, to read their large initializers from one
    shared file. Returns {"file", "bytes", "tensors", "saved_bytes"}."""
    import onnx

    with WeightsStore(folder, data_file) as store:
        for name in graph_files:
            store.save(onnx.load(str(Path(folder) / name)), name)
        return store.close()
