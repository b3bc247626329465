"""The first-hour papercuts of the CLI (issue 12, section 6): "did you mean", install hints that work, no folders
left by failed commands, and the supported torch range checked in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from auditor_rt.cli.main import cli
from auditor_rt.cli.outputs import output_folder
from auditor_rt.export import versions

REPO = Path(__file__).resolve().parents[2]
WORKING_INSTALL = "pip install -c constraints.txt -e '.[export]'"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_line(result) -> str:
    """The one ``Error:`` line of a clean failure (no traceback, no exception escaping click)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    return lines[0]


# --- did you mean -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("typed, meant", [("expor", "export"), ("trian", "train"), ("infr", "infer"),
                                          ("Serve", "serve"), ("verfy", "verify")])
def test_a_mistyped_command_gets_did_you_mean(typed, meant):
    result = invoke(typed)
    assert result.exit_code == 2
    assert error_line(result) == f"Error: No such command '{typed}'. Did you mean '{meant}'?"


def test_an_unknown_command_with_no_near_miss_lists_the_commands():
    line = error_line(invoke("frobnicate"))
    assert "No such command 'frobnicate'" in line and "Did you mean" not in line
    for name in ("demo", "train", "export", "infer", "info", "verify", "serve"):
        assert name in line


# --- install hints ----------------------------------------------------------------------------------------------

def test_the_install_hint_names_files_and_an_extra_that_exist():
    assert versions.EXPORT_INSTALL == WORKING_INSTALL
    assert (REPO / "constraints.txt").is_file()
    assert "[project.optional-dependencies]" in (REPO / "pyproject.toml").read_text()
    assert "export" in dict(_pyproject_extras())


def test_a_missing_export_module_names_a_command_that_works():
    from auditor_rt.cli.errors import CliError, handle_errors

    with pytest.raises(CliError) as caught:
        with handle_errors():
            raise ModuleNotFoundError("No module named 'timm'", name="timm")
    message = caught.value.message
    assert "timm" in message and WORKING_INSTALL in message and "from the auditor-rt checkout" in message
    assert "auditor-rt[export]" not in message  # no package index has auditor-rt


def test_the_demo_data_hint_names_a_command_that_works(monkeypatch, tmp_path):
    from auditor_rt.export.training.data import demo
    from auditor_rt.export.errors import DataError

    demo._load_backgrounds.cache_clear()
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage now fails as in a runtime-only install
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    try:
        with pytest.raises(DataError) as caught:
            demo.demo_backgrounds()
    finally:
        demo._load_backgrounds.cache_clear()
    assert "scikit-image" in str(caught.value) and WORKING_INSTALL in str(caught.value)


# --- no half-made folders ---------------------------------------------------------------------------------------

def test_output_folder_removes_what_it_created_and_only_that(tmp_path):
    with pytest.raises(RuntimeError):
        with output_folder(tmp_path / "a" / "b" / "c") as folder:
            folder.mkdir(parents=True)
            (folder / "half.onnx").write_bytes(b"x")
            raise RuntimeError("failed")
    assert os.listdir(tmp_path) == []  # "a" and "b" were made on the way: gone too

    existing = tmp_path / "engines"
    (existing / "old").mkdir(parents=True)
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(KeyboardInterrupt):
        with output_folder(existing):
            (existing / "new.onnx").write_bytes(b"x")
            (existing / "new_dir").mkdir()
            (existing / "keep.txt").write_text("overwritten")
            raise KeyboardInterrupt
    assert sorted(os.listdir(existing)) == ["keep.txt", "old"]
    assert (existing / "keep.txt").read_text() == "overwritten"  # overwritten in place: cannot be undone, kept


def test_output_folder_keeps_results_on_success_and_on_a_deliberate_exit(tmp_path):
    with output_folder(tmp_path / "ok") as folder:
        folder.mkdir()
        (folder / "result").write_text("1")
    assert (tmp_path / "ok" / "result").is_file()
    for deliberate in (SystemExit(1), click.exceptions.Exit(1)):
        target = tmp_path / type(deliberate).__name__
        with pytest.raises(type(deliberate)):
            with output_folder(target):
                target.mkdir()
                raise deliberate
        assert target.is_dir()


def test_a_run_folder_made_inside_the_block_goes_with_a_failure(tmp_path):
    from auditor_rt.runtime.runfolder import next_run_folder

    parent = tmp_path / "runs" / "infer"
    next_run_folder(parent)  # run-001 from an earlier run stays
    with pytest.raises(ValueError):
        with output_folder(parent):
            (next_run_folder(parent) / "results.jsonl").write_text("")
            raise ValueError
    assert os.listdir(parent) == ["run-001"]


@pytest.mark.parametrize("options, fragment", [
    (["--attribution", "banana"], "banana"),
    (["--attribution", "gradcam", "--cam-stage", "no_such_stage"], "no_such_stage"),
])
def test_a_failed_export_leaves_no_folder(checkpoint_dir, tmp_path, options, fragment):
    out = tmp_path / "engines" / "tiny"
    result = invoke("export", checkpoint_dir, "-o", out, *options)
    assert result.exit_code == 2 and fragment in error_line(result)
    assert not (tmp_path / "engines").exists()


def test_exporting_a_folder_that_is_no_checkpoint_leaves_no_folder(tmp_path):
    not_a_checkpoint = tmp_path / "stuff"
    not_a_checkpoint.mkdir()
    (not_a_checkpoint / "notes.txt").write_text("hello")
    result = invoke("export", not_a_checkpoint, "-o", tmp_path / "art")
    assert result.exit_code == 2 and "not a checkpoint folder" in error_line(result)
    assert not (tmp_path / "art").exists()


def test_a_failed_export_into_an_existing_folder_removes_only_its_own_files(checkpoint_dir, tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = invoke("export", checkpoint_dir, "-o", out, "--attribution", "gradcam", "--cam-stage", "99")
    assert result.exit_code == 2 and "stage 99" in error_line(result)
    assert os.listdir(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


def _train(data, *extra):
    return invoke("train", data, "--backbone", "test_resnet", "--weights", "random", "--input-size", 64,
                  "--epochs", 1, "--workers", 0, *extra)


@pytest.mark.parametrize("content, fragment", [
    ("path,label\n", "lists no samples"),                      # an empty data set
    ("path,label\nimage.jpg,maybe\n", "bad label 'maybe'"),    # a manifest that cannot be read as one
])
def test_a_failed_train_leaves_no_checkpoint_folder(tmp_path, monkeypatch, content, fragment):
    manifest = tmp_path / "data.csv"
    manifest.write_text(content)
    result = _train(manifest, "-o", tmp_path / "ckpt" / "run")
    assert result.exit_code == 2 and fragment in error_line(result)
    assert not (tmp_path / "ckpt").exists()

    monkeypatch.chdir(tmp_path)  # the default, auto-numbered runs/train/run-NNN
    result = _train(manifest)
    assert result.exit_code == 2 and fragment in error_line(result)
    assert not (tmp_path / "runs").exists()


def test_a_binary_manifest_is_one_line_and_leaves_no_folder(tmp_path):
    manifest = tmp_path / "data.csv"
    manifest.write_bytes(b"\xff\xfe\x00\x81 not text\n")
    result = _train(manifest, "-o", tmp_path / "ckpt")
    assert result.exit_code == 2 and "not UTF-8 text" in error_line(result)
    assert not (tmp_path / "ckpt").exists()


def test_a_failed_train_keeps_earlier_runs(tmp_path, monkeypatch):
    (tmp_path / "runs" / "train" / "run-001").mkdir(parents=True)
    (tmp_path / "data.csv").write_text("path,label\n")
    monkeypatch.chdir(tmp_path)
    assert _train(tmp_path / "data.csv").exit_code == 2
    assert os.listdir(tmp_path / "runs" / "train") == ["run-001"]


def test_a_failed_demo_leaves_neither_its_run_nor_its_artifact(tmp_path):
    (tmp_path / "runs" / "run-001").mkdir(parents=True)  # an earlier demo's run stays
    result = invoke("demo", "-o", tmp_path / "runs", "--artifact", tmp_path / "engines" / "demo", "--backbone",
                    "no_such_model_xyz", "--weights", "random", "--n-train", 8, "--n-test", 4, "--input-size", 32,
                    "--workers", 0)
    assert result.exit_code == 2 and "no_such_model_xyz" in error_line(result)
    assert "[1/4] demo data" in result.output  # it failed after writing the data set: that is gone too
    assert os.listdir(tmp_path / "runs") == ["run-001"] and not (tmp_path / "engines").exists()


# --- the supported torch ----------------------------------------------------------------------------------------

def _pyproject_extras():
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"].items()


def test_the_checked_ranges_are_the_ones_pyproject_declares():
    """The check reads the installed metadata; a stale install (pyproject.toml edited since) would check old ranges."""
    from packaging.requirements import Requirement

    declared = dict(versions.declared_ranges())
    for text in dict(_pyproject_extras())["export"]:
        requirement = Requirement(text)
        assert declared.get(requirement.name) == str(requirement.specifier), (
            f"the installed metadata says {requirement.name}{declared.get(requirement.name)} but pyproject.toml "
            f"says {text}: reinstall (pip install -e .)")
    assert declared["torch"] == ">=2.14.1" and declared["torchvision"] == ">=0.29.1"


def test_the_installed_torch_is_supported():
    import torch

    assert versions.version_problems() == []
    versions.require_export_versions()
    from packaging.version import Version  # the wheel's metadata may omit the local tag (+cu130) that torch reports

    assert Version(versions.installed_version("torch")).public == Version(torch.__version__).public


def _pretend(monkeypatch, **fake):
    real = versions.installed_version
    monkeypatch.setattr(versions, "installed_version", lambda name: fake.get(name, real(name)))


@pytest.mark.parametrize("version, supported", [
    ("2.11.0", False), ("2.13.0", False), ("2.14.0", False), ("2.14.1rc1", False), ("2.6.0+cu124", False),
    ("2.14.1", True), ("2.14.1+cpu", True), ("2.15.0", True), ("2.16.0.dev20260101+cu130", True),
])
def test_the_torch_range(monkeypatch, version, supported):
    _pretend(monkeypatch, torch=version)
    problems = versions.version_problems()
    assert (problems == []) == supported, problems


@pytest.mark.parametrize("command", ["train", "export", "demo"])
def test_an_unsupported_torch_is_one_line_exit_2_before_any_work(command, monkeypatch, tmp_path, demo_data):
    _pretend(monkeypatch, torch="2.11.0")
    args = {"train": ["train", demo_data.train_manifest, "-o", tmp_path / "out"],
            "export": ["export", "--classifier", "test_resnet", "-o", tmp_path / "out"],
            "demo": ["demo", "-o", tmp_path / "out", "--artifact", tmp_path / "art"]}[command]
    result = invoke(*args)
    assert result.exit_code == 2
    line = error_line(result)
    assert "torch 2.11.0 is installed" in line and "torch>=2.14.1" in line and WORKING_INSTALL in line
    assert os.listdir(tmp_path) == []


def test_a_missing_package_of_the_extra_is_named(monkeypatch):
    _pretend(monkeypatch, torchvision=None)
    with pytest.raises(versions.UnsupportedVersionError) as caught:
        versions.require_export_versions()
    assert "torchvision is not installed" in str(caught.value) and WORKING_INSTALL in str(caught.value)


def test_rebuilding_a_model_checks_too(monkeypatch):
    """verify and export rebuild the backbone through create_backbone: the check is there as well."""
    from auditor_rt.export.models.backbone import create_backbone

    _pretend(monkeypatch, torch="2.11.0")
    with pytest.raises(versions.UnsupportedVersionError, match="torch 2.11.0"):
        create_backbone("test_resnet", "random")


PROBE = """
import json, sys, time
start = time.perf_counter()
from auditor_rt.export.versions import require_export_versions
require_export_versions()
seconds = time.perf_counter() - start
from click.testing import CliRunner
from auditor_rt.cli.main import cli
code = CliRunner().invoke(cli, ["expor"]).exit_code
heavy = sorted(m for m in ("torch", "timm", "onnxruntime", "onnx", "cv2") if m in sys.modules)
print(json.dumps({"seconds": seconds, "heavy": heavy, "code": code}))
"""


def test_the_check_and_did_you_mean_import_nothing_heavy():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd=REPO)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [] and report["code"] == 2
    assert report["seconds"] < 1.0, report  # about 0.03 s idle; importing torch alone takes seconds
