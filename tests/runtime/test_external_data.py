"""External data: every location a graph names is checked by the artifact loader before any session exists."""

from __future__ import annotations


import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from auditor_rt.runtime.artifact import Artifact, sha256_file  # noqa: E402
from auditor_rt.runtime.errors import ArtifactError  # noqa: E402
from auditor_rt.runtime.manifest import GraphEntry, Manifest, Preprocess, TensorSpec  # noqa: E402
from auditor_rt.runtime.runners import create_runner  # noqa: E402

SIZE = 8

WEIGHT = np.arange(SIZE, dtype=np.float32)
VECTOR = TensorSpec("x", "float32", ("batch", SIZE))


def _external_tensor(name: str, location: str) -> TensorProto:
    tensor = helper.make_tensor(name, TensorProto.FLOAT, [SIZE], WEIGHT.tobytes(), raw=True)
    onnx.external_data_helper.set_external_data(tensor, location=location, offset=0, length=WEIGHT.nbytes)
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    return tensor


def _add_model(location: str, in_subgraph: bool = False) -> onnx.ModelProto:
    """y = x + w, with w's bytes in an external file; ``in_subgraph`` hides w inside an If node's branch."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", SIZE])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", SIZE])
    if not in_subgraph:
        graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "add", [x], [y],
                                  initializer=[_external_tensor("w", location)])
    else:
        branch = helper.make_graph([helper.make_node("Constant", [], ["w_out"],
                                                     value=_external_tensor("w", location))],
                                   "branch", [], [helper.make_tensor_value_info("w_out", TensorProto.FLOAT, [SIZE])])
        nodes = [helper.make_node("Constant", [], ["yes"], value=helper.make_tensor("c", TensorProto.BOOL, [], [1])),
                 helper.make_node("If", ["yes"], ["w"], then_branch=branch, else_branch=branch),
                 helper.make_node("Add", ["x", "w"], ["y"])]
        graph = helper.make_graph(nodes, "add", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _artifact_of(folder, model: onnx.ModelProto):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "add.onnx"
    path.write_bytes(model.SerializeToString())
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
    """The wire-format reader against onnx's own parser, on a model with external tensors in several places."""
    from auditor_rt.runtime.onnx_external import external_locations

    model = _add_model("a.bin", in_subgraph=True)
    model.graph.initializer.extend([_external_tensor("u", "b.bin"), _external_tensor("v", "sub/c.bin")])
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
    path.write_bytes(_add_model("../x.bin").SerializeToString())
    script = ("import sys; sys.modules['onnx'] = None\n"
              "from auditor_rt.runtime.onnx_external import external_locations\n"
              f"print(external_locations(open({str(path)!r}, 'rb').read()))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "['../x.bin']"
