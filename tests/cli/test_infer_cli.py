"""``infer`` papercuts and options: no run folder after an early failure, nonexistent sources, --explain names,
--threshold, --name, --save-maps, the heatmap-scale note, IG's warning and the progress line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditor_rt.cli.main import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def images(tmp_path, demo_data) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for path in sorted((Path(demo_data.root) / "images" / "test").glob("*.jpg"))[:3]:
        shutil.copy(path, folder / path.name)
    return folder


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


def one_error_line(result) -> str:
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_a_nonexistent_source_is_a_usage_error_and_leaves_no_folder(artifact_dir, tmp_path):
    out = tmp_path / "runs"
    result = invoke("infer", artifact_dir, tmp_path / "typo.jpg", "-o", out)
    assert result.exit_code == 2
    assert "no such file or folder" in result.output and "typo.jpg" in result.output
    assert not out.exists() or not any(out.iterdir())


def test_a_bad_explain_lists_methods_and_leaves_no_folder(explain_artifact_dir, images, tmp_path):
    out = tmp_path / "runs"
    banana = invoke("infer", explain_artifact_dir, images, "-o", out, "--explain", "banana")
    line = one_error_line(banana)
    assert banana.exit_code == 2 and "unknown attribution method 'banana'" in line
    assert "gradxinput" in line and "this artifact has: saliency, ig" in line and "re-export" not in line
    assert not out.exists() or not any(out.iterdir())


def test_a_method_the_artifact_lacks_leaves_no_named_folder(artifact_dir, images, tmp_path):
    result = invoke("infer", artifact_dir, images, "-o", tmp_path / "runs", "--name", "x", "--explain", "ig")
    assert result.exit_code == 2 and "re-export with --attribution ig" in one_error_line(result)
    assert not (tmp_path / "runs" / "x").exists()


def test_threshold_overrides_the_decision_and_is_recorded(artifact_dir, images, tmp_path):
    out = tmp_path / "runs"
    for value, label in ((0.0, "risk"), (1.0, "no_risk")):
        result = invoke("infer", artifact_dir, images, "-o", out, "--name", f"t{value}", "--threshold", value)
        assert result.exit_code == 0, result.output
        rows = records(out / f"t{value}")
        assert all(r["label"] == label and r["threshold"] == value for r in rows if r["score"] < 1.0)
        summary = json.loads((out / f"t{value}" / "summary.json").read_text())
        assert summary["threshold"] == value and summary["threshold_source"] == "--threshold"
    default = invoke("infer", artifact_dir, images, "-o", out, "--name", "d", "--no-save-overlays")
    artifact_threshold = json.loads((artifact_dir / "manifest.json").read_text())["decision"]["threshold"]
    summary = json.loads((out / "d" / "summary.json").read_text())
    assert default.exit_code == 0 and summary["threshold"] == artifact_threshold
    assert summary["threshold_source"] == "artifact"


def test_name_refuses_an_existing_folder_unless_resumed(artifact_dir, images, tmp_path):
    out = tmp_path / "runs"
    first = invoke("infer", artifact_dir, images, "-o", out, "--name", "audit-a", "--no-save-overlays")
    assert first.exit_code == 0 and (out / "audit-a" / "results.jsonl").is_file()
    again = invoke("infer", artifact_dir, images, "-o", out, "--name", "audit-a")
    assert again.exit_code == 2 and "--resume" in one_error_line(again)
    assert len(records(out / "audit-a")) == 3  # untouched
    resumed = invoke("infer", artifact_dir, images, "-o", out, "--name", "audit-a", "--resume", out / "audit-a")
    assert resumed.exit_code == 0 and "nothing left to do" in resumed.output
    mismatch = invoke("infer", artifact_dir, images, "-o", out, "--name", "other", "--resume", out / "audit-a")
    assert mismatch.exit_code == 2
    assert invoke("infer", artifact_dir, images, "-o", out, "--name", "a/b").exit_code == 2
    (out / "empty").mkdir()
    assert invoke("infer", artifact_dir, images, "-o", out, "--name", "empty").exit_code == 0  # empty: used


def test_save_maps_and_the_per_image_scale_note(artifact_dir, images, tmp_path):
    result = invoke("infer", artifact_dir, images, "-o", tmp_path / "runs", "--save-maps")
    assert result.exit_code == 0, result.output
    has_scale = json.loads((artifact_dir / "manifest.json").read_text()).get("heatmap") is not None
    assert result.output.count("no absolute heatmap scale") == (0 if has_scale else 1)
    run = tmp_path / "runs" / "run-001"
    rows = records(run)
    assert all(Path(r["maps"]["risk_map"]).is_file() and Path(r["maps"]["heatmap"]).is_file() for r in rows)
    assert len(list((run / "maps").glob("*.npy"))) == 2 * len(rows)
    quiet = invoke("infer", artifact_dir, images, "-o", tmp_path / "runs", "--heatmap-scale", "image")
    assert "no absolute heatmap scale" not in quiet.output


def test_explain_run_shows_progress_and_warns_once_when_ig_misses_completeness(explain_artifact_dir, images,
                                                                                tmp_path):
    result = invoke("infer", explain_artifact_dir, images, "-o", tmp_path / "runs", "--explain", "ig",
                    "--map-smooth", 2)
    assert result.exit_code == 0, result.output
    assert "auditing (--explain ig) 3/3" in result.output and "img/s" in result.output
    rows = records(tmp_path / "runs" / "run-001")
    unconverged = sum(not r["explain"]["ig_converged"] for r in rows)
    assert result.output.count("integrated gradients did not converge") == (1 if unconverged else 0)
    if unconverged:
        summary = json.loads((tmp_path / "runs" / "run-001" / "summary.json").read_text())
        assert f"--ig-steps {summary['ig']['suggested_steps']}" in result.output
    assert all(r["explain"]["overlay"].endswith(".png") for r in rows)
