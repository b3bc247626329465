"""External data: every location a graph names is checked by the artifact loader before any session exists.

The graphs are written here in protobuf's wire format (a few lines below), so that these tests run in a runtime-only
install, without the ``onnx`` package; ONNX Runtime loading and running the good one, and the ``onnx`` package
parsing them where it is installed, check the encoding."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from auditor_rt.runtime.artifact import Artifact, sha256_file
from auditor_rt.runtime.errors import ArtifactError
from auditor_rt.runtime.manifest import GraphEntry, Manifest, Preprocess, TensorSpec
from auditor_rt.runtime.runners import create_runner

SIZE = 8

WEIGHT = np.arange(SIZE, dtype=np.float32)
VECTOR = TensorSpec("x", "float32", ("batch", SIZE))
FLOAT, BOOL = 1, 9                    # TensorProto.DataType
EXTERNAL = 1                          # TensorProto.DataLocation
ATTRIBUTE_TENSOR, ATTRIBUTE_GRAPH = 4, 5  # AttributeProto.AttributeType


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value) -> bytes:
    """One field: an int as a varint, str or bytes (a string or an encoded message) length-delimited."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _message(*fields: bytes) -> bytes:
    return b"".join(fields)


def _external_tensor(name: str, location: str) -> bytes:
    """TensorProto: dims, data_type, name, external_data (location, offset, length), data_location."""
    entries = [("location", location), ("offset", "0"), ("length", str(WEIGHT.nbytes))]
    return _message(_field(1, SIZE), _field(2, FLOAT), _field(8, name),
                    *[_field(13, _message(_field(1, key), _field(2, value))) for key, value in entries],
                    _field(14, EXTERNAL))


def _value_info(name: str, *dims) -> bytes:
    """ValueInfoProto of a float tensor; a str dim is symbolic."""
    shape = _message(*[_field(1, _message(_field(2, d) if isinstance(d, str) else _field(1, d))) for d in dims])
    return _message(_field(1, name), _field(2, _message(_field(1, _message(_field(1, FLOAT), _field(2, shape))))))


def _node(op: str, inputs, outputs, *attributes: bytes) -> bytes:
    return _message(*[_field(1, i) for i in inputs], *[_field(2, o) for o in outputs], _field(4, op),
                    *[_field(5, a) for a in attributes])


def _graph(nodes, name: str, inputs=(), outputs=(), initializers=()) -> bytes:
    return _message(*[_field(1, n) for n in nodes], _field(2, name), *[_field(5, t) for t in initializers],
                    *[_field(11, v) for v in inputs], *[_field(12, v) for v in outputs])


def _add_model(location: str, in_subgraph: bool = False) -> bytes:
    """y = x + w, with w's bytes in an external file; ``in_subgraph`` hides w inside an If node's branch.
    A serialised ModelProto (IR 8, opset 17)."""
    x, y = _value_info("x", "batch", SIZE), _value_info("y", "batch", SIZE)
    if not in_subgraph:
        graph = _graph([_node("Add", ["x", "w"], ["y"])], "add", [x], [y], [_external_tensor("w", location)])
    else:
        constant = _message(_field(1, "value"), _field(5, _external_tensor("w", location)),
                            _field(20, ATTRIBUTE_TENSOR))
        branch = _graph([_node("Constant", [], ["w_out"], constant)], "branch", outputs=[_value_info("w_out", SIZE)])
        yes = _message(_field(1, "value"), _field(5, _message(_field(2, BOOL), _field(5, 1), _field(8, "c"))),
                       _field(20, ATTRIBUTE_TENSOR))
        branches = [_message(_field(1, key), _field(6, branch), _field(20, ATTRIBUTE_GRAPH))
                    for key in ("then_branch", "else_branch")]
        graph = _graph([_node("Constant", [], ["yes"], yes), _node("If", ["yes"], ["w"], *branches),
                        _node("Add", ["x", "w"], ["y"])], "add", [x], [y])
    return _message(_field(1, 8), _field(7, graph), _field(8, _message(_field(1, ""), _field(2, 17))))


def _artifact_of(folder, model: bytes):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "add.onnx"
    path.write_bytes(model)
    entry = GraphEntry(file=path.name, sha256=sha256_file(path), kind="audit", inputs=(VECTOR,),
                       outputs=(TensorSpec("y", "float32", ("batch", SIZE)),), opset=17)
    Manifest(name="ext", preprocess=Preprocess(input_size=(SIZE, SIZE), mean=(0, 0, 0), std=(1, 1, 1)),
             threshold=0.5, graphs={"add": entry}, document={}).write(folder)
    return Artifact(folder)


@pytest.fixture
def no_sessions(monkeypatch):
    """Any ORT session that gets created is recorded: the refusals below must happen before one exists."""
    created = []
    real = ort.InferenceSession

    def recording(*args, **kwargs):
        created.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    return created


def test_external_data_inside_the_folder_loads_and_runs(tmp_path, no_sessions):
    folder = tmp_path / "ok"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(WEIGHT.tobytes())
    artifact = _artifact_of(folder, _add_model("weights.bin"))
    with create_runner(artifact, "add", providers="cpu") as runner:
        out = runner.infer({"x": np.ones((2, SIZE), np.float32)})["y"]
    np.testing.assert_array_equal(out, np.ones((2, SIZE), np.float32) + WEIGHT)
    assert len(no_sessions) == 1


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "subgraph", "ort_memory", "missing"])
def test_external_data_outside_the_folder_is_refused_before_any_session(tmp_path, no_sessions, kind):
    outside = tmp_path / "secret.bin"
    outside.write_bytes(WEIGHT.tobytes())  # a real file, so that only our check stands in the way
    folder = tmp_path / "deep" / "artifact"
    location = {"dotdot": "../../secret.bin", "absolute": str(outside), "symlink": "link.bin",
                "subgraph": "../../secret.bin", "ort_memory": "*/_ORT_MEM_ADDR_/*", "missing": "nope.bin"}[kind]
    artifact = _artifact_of(folder, _add_model(location, in_subgraph=kind == "subgraph"))
    if kind == "symlink":
        (folder / "link.bin").symlink_to(outside)
    expected = {"absolute": "absolute path", "ort_memory": "names no file", "missing": "names no file"}.get(
        kind, "outside the artifact folder")
    with pytest.raises(ArtifactError, match=expected) as caught:
        create_runner(artifact, "add", providers="cpu")
    assert repr(location) in str(caught.value) and "add.onnx" in str(caught.value)
    with pytest.raises(ArtifactError):
        artifact.verify()
    assert no_sessions == []


def test_locations_agree_with_the_onnx_package(tmp_path):
    """The wire-format reader against onnx's own parser, on a model with external tensors in several places (and
    the encoding above against it: onnx parses it back to the same graph). Needs ``onnx`` (the export extra)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from auditor_rt.runtime.onnx_external import external_locations

    model = onnx.load_from_string(_add_model("a.bin", in_subgraph=True))
    assert [n.op_type for n in model.graph.node] == ["Constant", "If", "Add"] and model.opset_import[0].version == 17
    model.graph.initializer.extend([onnx.load_from_string(_message(_field(7, _graph(
        [], "g", initializers=[_external_tensor(name, location)])))).graph.initializer[0]
        for name, location in (("u", "b.bin"), ("v", "sub/c.bin"))])
    model.graph.initializer.append(helper.make_tensor("inline", TensorProto.FLOAT, [2], [1.0, 2.0]))
    data = model.SerializeToString()
    reference = []
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        reference += [entry.value for entry in tensor.external_data if entry.key == "location"]
    assert sorted(external_locations(data)) == sorted(reference) == ["a.bin", "a.bin", "b.bin", "sub/c.bin"]


def test_a_garbled_graph_is_an_artifact_error_before_ort_sees_it(tmp_path, no_sessions):
    folder = tmp_path / "garbled"
    artifact = _artifact_of(folder, _add_model("w.bin"))
    path = folder / "add.onnx"
    path.write_bytes(b"not an onnx model")
    _artifact_of_digest(folder, path)
    with pytest.raises(ArtifactError, match="not a readable ONNX graph"):
        create_runner(Artifact(folder), "add", providers="cpu")
    assert no_sessions == [] and artifact.folder == folder


def _artifact_of_digest(folder, path) -> None:
    manifest = Manifest.read(folder / "manifest.json")
    entry = manifest.graphs["add"]
    manifest.graphs["add"] = GraphEntry(entry.file, sha256_file(path), entry.kind, entry.inputs, entry.outputs,
                                        entry.opset)
    manifest.write(folder)


def test_the_reader_needs_no_onnx_package(tmp_path):
    """A runtime-only install has no `onnx`: the check must work with it unimportable."""
    import subprocess
    import sys

    path = tmp_path / "m.onnx"
    path.write_bytes(_add_model("../x.bin"))
    script = ("import sys; sys.modules['onnx'] = None\n"
              "from auditor_rt.runtime.onnx_external import external_locations\n"
              f"print(external_locations(open({str(path)!r}, 'rb').read()))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "['../x.bin']"
