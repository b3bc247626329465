"""Artifacts (manifest + digests) and runners, on tiny 8 x 8 ONNX graphs checked in under ``tiny/runner`` (written
by ``tiny/make_tiny_artifacts.py`` with the ``onnx`` helper API; these tests need neither onnx nor torch)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from auditor_rt.runtime.artifact import Artifact, sha256_file
from auditor_rt.runtime.errors import (
    ArtifactError,
    BackendUnavailableError,
    ConfigError,
    DigestMismatchError,
    InputValidationError,
)
from auditor_rt.runtime.manifest import GraphEntry, Manifest, TensorSpec
from auditor_rt.runtime.runners import create_runner
from auditor_rt.runtime.runners.onnxruntime import OnnxRuntimeRunner, resolve_providers

RUNNER_ARTIFACT = Path(__file__).resolve().parent / "tiny" / "runner"
SIZE = 8
IMAGE = TensorSpec("image", "uint8", ("batch", SIZE, SIZE, 3))
TARGET = TensorSpec("target", "int64", ("batch",))


@pytest.fixture
def artifact_dir(tmp_path):
    """A fresh copy per test (tests here damage it). ``audit``: image -> score = mean pixel / 255, heatmap = each
    pixel's channel mean / 255. ``explain``: image, target -> score = mean pixel + target."""
    return Path(shutil.copytree(RUNNER_ARTIFACT, tmp_path / "tiny"))


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)


def expected_outputs(images):
    heatmap = images.astype(np.float32).mean(axis=3) / 255
    return heatmap.mean(axis=(1, 2)), heatmap


# --- manifest and artifact -------------------------------------------------------------------------------------

def test_manifest_round_trips_through_json(artifact_dir):
    manifest = Manifest.read(artifact_dir / "manifest.json")
    assert manifest.name == "tiny" and manifest.threshold == pytest.approx(0.4)
    assert manifest.preprocess.input_size == (SIZE, SIZE) and manifest.preprocess.dtype == "uint8"
    assert manifest.graphs["audit"].inputs == (IMAGE,)
    assert manifest.graphs["explain"].inputs == (IMAGE, TARGET)
    assert manifest.document["backbone"] == {"name": "none"}  # unknown facts are kept
    data = json.loads((artifact_dir / "manifest.json").read_text())
    assert data["schema_version"] == 1 and data["decision"]["threshold"] == pytest.approx(0.4)
    copy = artifact_dir.parent / "written"
    copy.mkdir()
    manifest.write(copy)
    again = Manifest.read(copy / "manifest.json")
    assert again.graphs == manifest.graphs and again.preprocess == manifest.preprocess
    assert again.threshold == manifest.threshold and again.document["backbone"] == {"name": "none"}


def test_digest_check_passes_on_untouched_files(artifact_dir):
    artifact = Artifact.load(artifact_dir)
    assert artifact.name == "tiny"
    assert artifact.verify() == {"audit": "ok", "explain": "ok"}
    assert artifact.graph_path("audit") == artifact_dir / "audit.onnx"


def test_modified_graph_raises_digest_mismatch(artifact_dir):
    path = artifact_dir / "audit.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    artifact = Artifact(artifact_dir)
    with pytest.raises(DigestMismatchError, match="audit.onnx") as info:
        artifact.graph_path("audit")
    assert "does not match" in str(info.value)
    with pytest.raises(DigestMismatchError):
        artifact.verify()
    with pytest.raises(DigestMismatchError):
        create_runner(artifact, "audit", backend="onnxruntime", providers="cpu")
    assert artifact.graph_path("explain").is_file()  # the other graph is still fine


def test_missing_graph_file_is_an_artifact_error(artifact_dir):
    (artifact_dir / "explain.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        Artifact(artifact_dir).graph_path("explain")


def test_unknown_graph_name_lists_the_known_ones(artifact_dir):
    with pytest.raises(ArtifactError, match="'gradcam'.*audit, explain"):
        Artifact(artifact_dir).graph("gradcam")


def test_missing_folder_and_missing_manifest(tmp_path):
    with pytest.raises(ArtifactError, match="no such artifact folder"):
        Artifact(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="manifest.json"):
        Artifact(tmp_path / "empty")
    with pytest.raises(ArtifactError, match="not found"):
        Manifest.read(tmp_path / "empty" / "manifest.json")


def test_bad_manifests_are_artifact_errors(artifact_dir):
    path = artifact_dir / "manifest.json"
    data = json.loads(path.read_text())
    path.write_text("{ not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Artifact(artifact_dir)
    path.write_text(json.dumps({**data, "schema_version": 99}))
    with pytest.raises(ArtifactError, match="schema_version 99"):
        Artifact(artifact_dir)
    path.write_text(json.dumps({k: v for k, v in data.items() if k != "preprocess"}))
    with pytest.raises(ArtifactError, match="malformed.*preprocess"):
        Artifact(artifact_dir)


# --- runners: inference and validation -------------------------------------------------------------------------

@pytest.fixture
def runner(artifact_dir):
    with create_runner(Artifact(artifact_dir), "audit", backend="auto", providers="cpu") as runner:
        yield runner


def test_infer_gives_the_graph_outputs(runner, images):
    outputs = runner.infer({"image": images})
    score, heatmap = expected_outputs(images)
    assert set(outputs) == {"score", "heatmap"}
    assert outputs["score"].shape == (3,) and outputs["heatmap"].shape == (3, SIZE, SIZE)
    np.testing.assert_allclose(outputs["score"], score, rtol=1e-5)
    np.testing.assert_allclose(outputs["heatmap"], heatmap, rtol=1e-5)
    assert runner.last_latency_ms is not None and runner.last_latency_ms >= 0
    assert isinstance(runner, OnnxRuntimeRunner) and runner.active_providers == ["CPUExecutionProvider"]


def test_missing_and_extra_input_names(runner, images):
    with pytest.raises(InputValidationError, match=r"missing \['image'\].*unexpected \['images'\]"):
        runner.infer({"images": images})
    with pytest.raises(InputValidationError, match=r"missing none, unexpected \['noise'\]"):
        runner.infer({"image": images, "noise": images})


def test_wrong_dtype_names_the_input_and_both_dtypes(runner, images):
    with pytest.raises(InputValidationError) as info:
        runner.infer({"image": images.astype(np.float32)})
    message = str(info.value)
    assert "'image'" in message and "uint8" in message and "float32" in message


@pytest.mark.parametrize("shape, received", [
    ((2, SIZE - 1, SIZE, 3), "[2, 7, 8, 3]"),
    ((2, SIZE, SIZE, 4), "[2, 8, 8, 4]"),
    ((SIZE, SIZE, 3), "[8, 8, 3]"),  # a single image without its batch axis
])
def test_wrong_shape_names_expected_and_received(runner, shape, received):
    with pytest.raises(InputValidationError) as info:
        runner.infer({"image": np.zeros(shape, np.uint8)})
    message = str(info.value)
    assert "'image'" in message and "[batch, 8, 8, 3]" in message and received in message


def test_empty_batch_is_refused(runner):
    with pytest.raises(InputValidationError, match="empty batch"):
        runner.infer({"image": np.zeros((0, SIZE, SIZE, 3), np.uint8)})


def test_non_array_input_is_refused(runner, images):
    with pytest.raises(InputValidationError, match="numpy array"):
        runner.infer({"image": images.tolist()})


def test_two_inputs_must_agree_on_the_batch(artifact_dir, images):
    with create_runner(Artifact(artifact_dir), "explain", providers="cpu") as runner:
        outputs = runner.infer({"image": images, "target": np.array([0, 1, 2], np.int64)})
        np.testing.assert_allclose(outputs["score"], images.reshape(3, -1).mean(axis=1) + [0, 1, 2], rtol=1e-5)
        with pytest.raises(InputValidationError, match=r"batch size: \[2, 3\]"):
            runner.infer({"image": images, "target": np.array([0, 1], np.int64)})
        with pytest.raises(InputValidationError, match="'target'.*int64.*int32"):
            runner.infer({"image": images, "target": np.array([0, 1, 2], np.int32)})


def test_io_binding_on_cpu_matches_the_plain_path(artifact_dir, images):
    artifact = Artifact(artifact_dir)
    with create_runner(artifact, providers="cpu", io_binding=False) as plain, \
            create_runner(artifact, providers="cpu", io_binding=True) as bound:
        assert plain.io_binding is False and bound.io_binding is True
        first, second = plain.infer({"image": images}), bound.infer({"image": images})
        # a non-contiguous view goes through np.ascontiguousarray on the binding path
        reversed_batch = images[::-1]
        third = bound.infer({"image": reversed_batch})
    assert set(first) == set(second)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    np.testing.assert_allclose(third["score"], first["score"][::-1], rtol=1e-6)


def test_io_binding_defaults_to_off_on_cpu(runner):
    assert runner.io_binding is False


def test_close_is_safe_twice(artifact_dir):
    runner = create_runner(Artifact(artifact_dir), providers="cpu")
    runner.close()
    runner.close()


# --- providers and backends ------------------------------------------------------------------------------------

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize("requested, available, expected", [
    ("auto", ["CPUExecutionProvider", "CUDAExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    (None, ALL + ["AzureExecutionProvider"], ALL),
    ("cpu", ALL, ["CPUExecutionProvider"]),
    ("CUDA", ALL, ["CUDAExecutionProvider"]),
    ("trt", ALL, ["TensorrtExecutionProvider"]),
    (["tensorrt", "cuda", "cpu"], ALL, ALL),
    (["CPUExecutionProvider"], ["CPUExecutionProvider"], ["CPUExecutionProvider"]),
])
def test_resolve_providers(requested, available, expected):
    assert resolve_providers(requested, available) == expected


def test_unavailable_provider_names_it_and_the_available_ones():
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider.*available.*CPUExecutionProvider"):
        resolve_providers(["cuda", "cpu"], ["CPUExecutionProvider"])
    with pytest.raises(BackendUnavailableError, match="FancyExecutionProvider"):
        resolve_providers("FancyExecutionProvider", ALL)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here")
def test_create_runner_with_an_unavailable_provider(artifact_dir):
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        create_runner(Artifact(artifact_dir), providers="cuda")


def test_unknown_backend_is_a_config_error(artifact_dir):
    with pytest.raises(ConfigError, match="unknown backend 'openvino'"):
        create_runner(Artifact(artifact_dir), backend="openvino")


def test_native_tensorrt_backend_is_unavailable(artifact_dir):
    with pytest.raises(BackendUnavailableError, match="TensorRT"):
        create_runner(Artifact(artifact_dir), backend="tensorrt")


def test_unloadable_graph_is_a_backend_error(artifact_dir):
    """A graph whose digest matches but which ORT cannot load is reported, not raised as an ORT exception."""
    path = artifact_dir / "audit.onnx"
    data = path.read_bytes()
    assert data.count(b"Cast") == 1  # the first node's op_type
    path.write_bytes(data.replace(b"Cast", b"Nope"))  # well-formed protobuf, but no such operator
    manifest = Manifest.read(artifact_dir / "manifest.json")
    entry = manifest.graphs["audit"]
    manifest.graphs["audit"] = GraphEntry(entry.file, sha256_file(path), entry.kind, entry.inputs, entry.outputs,
                                          entry.opset)
    manifest.write(artifact_dir)
    with pytest.raises(BackendUnavailableError, match="could not load"):
        create_runner(Artifact(artifact_dir), providers="cpu")


def test_manifest_file_names_outside_the_folder_are_refused(artifact_dir, tmp_path):
    document = json.loads((artifact_dir / "manifest.json").read_text())
    document["graphs"]["audit"]["file"] = "../elsewhere/audit.onnx"
    (artifact_dir / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="outside the artifact folder"):
        Artifact(artifact_dir).graph_path("audit")


# --- the checked-in tiny artifacts -----------------------------------------------------------------------------

def test_checked_in_tiny_artifacts_are_what_the_script_writes(tmp_path):
    """``tiny/make_tiny_artifacts.py`` and the folders it wrote agree: the same manifests (digests aside, as
    serialisation may differ between onnx versions), the same weights, and graphs that compute the same outputs.
    Needs ``onnx`` (the export extra): a dev check that the script was run after it was changed."""
    pytest.importorskip("onnx")
    import importlib.util

    from auditor_rt.runtime.feeds import make_feed

    tiny = RUNNER_ARTIFACT.parent
    spec = importlib.util.spec_from_file_location("make_tiny_artifacts", tiny / "make_tiny_artifacts.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(tmp_path)

    def without_digests(folder: Path) -> dict:
        document = json.loads((folder / "manifest.json").read_text())
        for entry in document["graphs"].values():
            entry.pop("sha256")
        return document

    rerun = "; run tests/runtime/tiny/make_tiny_artifacts.py and commit its output"
    for name in ("risk", "risk_explain", "classifier", "runner"):
        checked_in, written = Artifact(tiny / name), Artifact(tmp_path / name)
        assert without_digests(tiny / name) == without_digests(tmp_path / name), name + rerun
        assert sorted(p.name for p in (tiny / name).iterdir()) == sorted(p.name for p in (tmp_path / name).iterdir())
        for data_file in checked_in.manifest.data_files:
            assert (tiny / name / data_file).read_bytes() == (tmp_path / name / data_file).read_bytes(), name + rerun
        size = checked_in.manifest.preprocess.input_size
        images = np.random.default_rng(0).integers(0, 256, (2, *size, 3), dtype=np.uint8)
        for key, entry in checked_in.manifest.graphs.items():
            feed = make_feed(entry, images, seed=0, baselines="random")
            if key == "explain":
                feed["target"] = np.array([0, 1], np.int64)
            with create_runner(checked_in, key, providers="cpu") as old, \
                    create_runner(written, key, providers="cpu") as new:
                expected, actual = old.infer(feed), new.infer(feed)
            for output in expected:
                np.testing.assert_allclose(actual[output], expected[output], rtol=1e-6, atol=1e-7,
                                           err_msg=f"{name}/{key}:{output}{rerun}")
