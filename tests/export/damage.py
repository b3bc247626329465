"""Damage that an artifact's digests cannot see (each helper reseals the manifest afterwards): a map frozen into a
constant, one convolution's weights scaled, a colour order that the model never saw. ``verify`` must catch each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from auditor_rt.runtime.artifact import sha256_file


def damaged_copy(artifact_dir: Path, folder: Path) -> Path:
    shutil.copytree(artifact_dir, folder)
    return folder


def reseal(folder: Path) -> None:
    """Write the digests of the files as they now are into the manifest."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for graph in manifest["graphs"].values():
        graph["sha256"] = sha256_file(folder / graph["file"])
    manifest["data_files"] = {name: sha256_file(folder / name) for name in manifest.get("data_files", {})}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def freeze_map(folder: Path, graph: str, output: str, seed: int = 0) -> None:
    """The classic failure of exporting a gradient: the map becomes a constant. The graph still computes its live
    map, but returns the map it gave for one random image, broadcast to every input."""
    import onnxruntime as ort

    manifest = json.loads((folder / "manifest.json").read_text())
    entry = manifest["graphs"][graph]
    path = folder / entry["file"]
    height, width = manifest["preprocess"]["input_size"]
    image = np.random.default_rng(seed).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"image": image}
    for spec in session.get_inputs():
        if spec.name == "noise":
            feed["noise"] = np.zeros([1 if isinstance(d, str) else d for d in spec.shape], np.float32)
        elif spec.name == "baseline":
            feed["baseline"] = np.zeros_like(image)
        elif spec.name == "target":
            feed["target"] = np.full(1, -1, np.int64)
    frozen = session.run([output], feed)[0]
    del session
    model = onnx.load(str(path), load_external_data=False)
    live = f"{output}__live"
    for node in model.graph.node:  # the live map still feeds whatever used it (IG's delta sums it)
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == output:
                    names[i] = live
    model.graph.initializer.append(numpy_helper.from_array(frozen.astype(np.float32), f"{output}__frozen"))
    model.graph.node.extend([helper.make_node("Shape", [live], [f"{output}__shape"]),
                             helper.make_node("Expand", [f"{output}__frozen", f"{output}__shape"], [output])])
    onnx.save(model, str(path))
    reseal(folder)


def scale_convolution(folder: Path, factor: float = 1.01, graph: str = "audit") -> str:
    """One convolution's weights (the stem's: with random weights timm zeroes the last norm of each residual block,
    so a convolution inside a block may not reach the outputs at all) scaled by ``factor``, where they are stored:
    in the shared ``weights.bin`` or inside the graph. Returns the initializer's name."""
    manifest = json.loads((folder / "manifest.json").read_text())
    path = folder / manifest["graphs"][graph]["file"]
    model = onnx.load(str(path), load_external_data=False)
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    convolutions = [node for node in model.graph.node if node.op_type == "Conv" and node.input[1] in initializers]
    tensor = initializers[convolutions[0].input[1]]
    external = {entry.key: entry.value for entry in tensor.external_data}
    if external:
        store = folder / external["location"]
        offset, length = int(external.get("offset", 0)), int(external["length"])
        data = bytearray(store.read_bytes())
        values = np.frombuffer(bytes(data[offset:offset + length]), np.float32) * np.float32(factor)
        data[offset:offset + length] = values.astype(np.float32).tobytes()
        store.write_bytes(bytes(data))
    else:
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * np.float32(factor), tensor.name))
        onnx.save(model, str(path))
    reseal(folder)
    return tensor.name


def claim_bgr(folder: Path) -> None:
    """The manifest and every graph's own metadata say BGR, consistently: only the model knows it learned RGB."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["preprocess"]["color"] = "BGR"
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    for entry in manifest["graphs"].values():
        path = folder / entry["file"]
        model = onnx.load(str(path), load_external_data=False)
        for prop in model.metadata_props:
            try:
                document = json.loads(prop.value)
            except ValueError:
                continue
            if isinstance(document, dict) and isinstance(document.get("preprocess"), dict):
                document["preprocess"]["color"] = "BGR"
            elif isinstance(document, dict) and "color" in document:
                document["color"] = "BGR"
            else:
                continue
            prop.value = json.dumps(document)
        onnx.save(model, str(path))
    reseal(folder)
