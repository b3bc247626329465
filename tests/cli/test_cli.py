"""The CLI through click's CliRunner: the happy paths and the user mistakes (one line, non-zero, no traceback)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from auditor_rt.cli.main import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_clean_error(result, *fragments):
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1, result.output
    for fragment in fragments:
        assert fragment in error_lines[0], result.output


@pytest.fixture
def image_folder(tmp_path, demo_data):
    folder = tmp_path / "images"
    folder.mkdir()
    tests = sorted((Path(demo_data.root) / "images" / "test").glob("*.jpg"))[:3]
    for path in tests:
        shutil.copy(path, folder / path.name)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (folder / "empty.png").write_bytes(b"")
    return folder


def records(run_folder: Path) -> list[dict]:
    return [json.loads(line) for line in (run_folder / "results.jsonl").read_text().splitlines()]


def test_infer_writes_one_record_per_input(artifact_dir, image_folder, tmp_path):
    out = tmp_path / "runs"
    missing = tmp_path / "missing.jpg"
    result = invoke("infer", artifact_dir, image_folder, str(image_folder / "*.jpg"), missing, "-o", out,
                    "--batch", 2)
    assert result.exit_code == 0, result.output
    run = out / "run-001"
    rows = records(run)
    # folder: 3 good + corrupt + empty; glob: 3 good + corrupt; missing file: 1
    assert len(rows) == 5 + 4 + 1
    assert [r["index"] for r in rows] == sorted(r["index"] for r in rows)
    ok = [r for r in rows if r["status"] == "ok"]
    errors = [r for r in rows if r["status"] == "error"]
    assert len(ok) == 6 and len(errors) == 4
    assert any("empty" in r["error"] and "empty.png" in r["error"] for r in errors)
    assert any("corrupt.jpg" in r["error"] for r in errors)
    assert any("no such file" in r["error"] for r in errors)
    for row in ok:
        assert 0.0 <= row["score"] <= 1.0 and row["label"] in ("risk", "no_risk")
        assert Path(row["overlay"]).is_file()
    sheet = cv2.imread(str(run / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 0
    assert "6 ok, 4 errors" in result.output
    assert invoke("infer", artifact_dir, image_folder, "-o", out).exit_code == 0
    assert (out / "run-002" / "results.jsonl").is_file()  # a second run never overwrites the first


def test_infer_reads_a_list_file_and_strict_sets_a_distinct_exit_code(artifact_dir, image_folder, tmp_path):
    good = sorted(image_folder.glob("*.jpg"))[0]
    listing = tmp_path / "sources.txt"
    listing.write_text(f"# inputs of this audit\n{good}\n\nimages/{good.name}\nmissing.png\n")
    (tmp_path / "images").mkdir(exist_ok=True)
    out = tmp_path / "runs"
    relaxed = invoke("infer", artifact_dir, listing, "-o", out, "--no-save-overlays")
    assert relaxed.exit_code == 0, relaxed.output
    rows = records(out / "run-001")
    assert [r["status"] for r in rows] == ["ok", "ok", "error"]  # the relative line is read from the list's folder
    assert rows[2]["source"] == str(tmp_path / "missing.png")
    strict = invoke("infer", artifact_dir, listing, "-o", out, "--no-save-overlays", "--strict")
    assert strict.exit_code == 3 and "--strict: 1 input(s) gave error records" in strict.output
    assert_clean_error(strict, "--strict")
    assert invoke("infer", artifact_dir, good, "-o", out, "--strict", "--no-save-overlays").exit_code == 0


def test_resume_skips_recorded_images(artifact_dir, image_folder, tmp_path):
    out = tmp_path / "runs"
    assert invoke("infer", artifact_dir, image_folder, "-o", out, "--no-save-overlays").exit_code == 0
    run = out / "run-001"
    lines = (run / "results.jsonl").read_text().splitlines()
    (run / "results.jsonl").write_text("\n".join(lines[:2]) + "\n")  # as if interrupted after two inputs
    resumed = invoke("infer", artifact_dir, image_folder, "-o", out, "--no-save-overlays", "--resume", run)
    assert resumed.exit_code == 0, resumed.output
    rows = records(run)
    assert [r["index"] for r in rows] == list(range(len(lines)))
    assert sorted(r["source"] for r in rows) == sorted(json.loads(line)["source"] for line in lines)
    assert not (out / "run-002").exists()
    done = invoke("infer", artifact_dir, image_folder, "--resume", run)
    assert done.exit_code == 0 and "nothing left to do" in done.output
    assert_clean_error(invoke("infer", artifact_dir, image_folder, "--resume", tmp_path / "nowhere"), "--resume")


def test_infer_json_output(artifact_dir, image_folder, tmp_path):
    result = invoke("infer", artifact_dir, image_folder, "-o", tmp_path, "--json", "--no-save-overlays")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["ok"] == 3 and summary["errors"] == 2
    assert not (Path(summary["run_folder"]) / "overlays").exists()


def test_info_prints_the_artifact(artifact_dir):
    result = invoke("info", artifact_dir)
    assert result.exit_code == 0, result.output
    assert "test_resnet" in result.output and "audit.onnx" in result.output and "RANDOM" in result.output
    as_json = json.loads(invoke("info", artifact_dir, "--json").output)
    assert as_json["digests"] == {"audit": "ok"}


def test_train_and_export_commands(demo_data, tmp_path):
    ckpt = tmp_path / "ckpt"
    result = invoke("train", demo_data.train_manifest, "-o", ckpt, "--backbone", "test_resnet", "--weights",
                    "random", "--input-size", 64, "--epochs", 2, "--batch-size", 8, "--workers", 0)
    assert result.exit_code == 0, result.output
    assert "pointing game" in result.output and "skipped files: 0" in result.output
    engines = tmp_path / "engines" / "mini"
    result = invoke("export", ckpt, "-o", engines)
    assert result.exit_code == 0, result.output
    assert "parity with PyTorch" in result.output
    assert (engines / "manifest.json").is_file() and (engines / "audit.onnx").is_file()


def test_train_reports_and_skips_corrupt_images(demo_data, tmp_path):
    manifest = tmp_path / "data.csv"
    lines = Path(demo_data.train_manifest).read_text().splitlines()
    root = Path(demo_data.train_manifest).parent
    rows = [lines[0]] + [f"{root / l.split(',', 1)[0]},{l.split(',', 1)[1]}" for l in lines[1:]]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    rows.append(f"{bad},1,,,,")
    manifest.write_text("\n".join(rows) + "\n")
    result = invoke("train", manifest, "-o", tmp_path / "ckpt", "--backbone", "test_resnet", "--weights", "random",
                    "--input-size", 64, "--epochs", 1, "--batch-size", 8, "--workers", 0)
    assert result.exit_code == 0, result.output
    assert "broken.jpg" in result.output and "skipped files: 1" in result.output


@pytest.mark.parametrize("args, fragments", [
    (["info", "/no/such/artifact"], ["no such artifact folder"]),
    (["infer", "/no/such/artifact", "x.jpg"], ["no such artifact folder"]),
    (["export", "/tmp", "-o", "/tmp/never-written"], ["not a checkpoint folder"]),
])
def test_user_mistakes_are_one_line_errors(args, fragments):
    assert_clean_error(invoke(*args), *fragments)


def test_unknown_backbone_is_one_line_error(demo_data, tmp_path):
    result = invoke("train", demo_data.train_manifest, "-o", tmp_path / "c", "--backbone", "no_such_model_xyz")
    assert_clean_error(result, "unknown timm backbone", "no_such_model_xyz")


def test_damaged_weights_file_is_one_line_error(demo_data, tmp_path):
    damaged = tmp_path / "weights.pth"
    damaged.write_bytes(b"not a pickle at all")
    result = invoke("train", demo_data.train_manifest, "-o", tmp_path / "c", "--backbone", "test_resnet",
                    "--weights", damaged, "--workers", 0)
    assert_clean_error(result, "weights.pth", "not a readable weights file")


def test_output_under_a_file_fails_before_training(demo_data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = invoke("train", demo_data.train_manifest, "-o", blocker / "ckpt", "--backbone", "test_resnet",
                    "--weights", "random", "--workers", 0)
    assert_clean_error(result, "checkpoint folder")
    assert "caching" not in result.output  # nothing was computed before the failure


def test_validation_split_without_a_class_is_a_data_error(demo_data, tmp_path):
    root = Path(demo_data.train_manifest).parent
    rows = [line.split(",", 1) for line in Path(demo_data.train_manifest).read_text().splitlines()[1:]]
    negatives = [f"{root / p},{rest}" for p, rest in rows if rest.startswith("0")][:6]
    positive = next(f"{root / p},{rest}" for p, rest in rows if rest.startswith("1"))
    manifest = tmp_path / "data.csv"
    missing = [f"{tmp_path / f'gone{i}.jpg'},1,,,," for i in range(3)]
    manifest.write_text("\n".join(negatives + [positive] + missing) + "\n")
    result = invoke("train", manifest, "-o", tmp_path / "c", "--backbone", "test_resnet", "--weights", "random",
                    "--input-size", 64, "--workers", 0, "--val-fraction", 0.5, "--seed", 1)
    assert_clean_error(result, "split has no positive image")


def test_infer_with_nothing_to_audit_exits_non_zero(artifact_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("infer", artifact_dir, empty, "-o", tmp_path / "runs")
    assert result.exit_code == 1
    assert "no image could be audited" in result.output
    assert len(records(tmp_path / "runs" / "run-001")) == 1  # the record of the empty folder is still written


def test_random_weights_warn_even_when_asked_for(demo_data, tmp_path):
    result = invoke("train", demo_data.train_manifest, "-o", tmp_path / "c", "--backbone", "test_resnet",
                    "--weights", "random", "--input-size", 64, "--epochs", 1, "--workers", 0)
    assert result.exit_code == 0, result.output
    assert "RANDOM weights" in result.output


def test_unsupported_opset_is_one_line_error(checkpoint_dir, tmp_path):
    result = invoke("export", checkpoint_dir, "-o", tmp_path / "art", "--opset", 30)
    assert_clean_error(result, "opset 30")
    assert not (tmp_path / "art" / "manifest.json").exists()


def test_wrong_weights_file_is_one_line_error(demo_data, tmp_path):
    result = invoke("train", demo_data.train_manifest, "-o", tmp_path / "c", "--backbone", "test_resnet",
                    "--weights", tmp_path / "missing.pth")
    assert_clean_error(result, "missing.pth", "no such file")


def test_changed_artifact_is_refused_by_infer(artifact_dir, image_folder, tmp_path):
    copy = tmp_path / "art"
    shutil.copytree(artifact_dir, copy)
    with open(copy / "audit.onnx", "ab") as handle:
        handle.write(b"\0")
    result = invoke("infer", copy, image_folder, "-o", tmp_path / "runs")
    assert_clean_error(result, "SHA-256")
    assert result.exit_code == 2


def test_demo_runs_end_to_end(tmp_path):
    result = invoke("demo", "-o", tmp_path / "runs", "--artifact", tmp_path / "engines" / "demo", "--backbone",
                    "test_resnet", "--weights", "random", "--n-train", 24, "--n-test", 8, "--epochs", 2,
                    "--pretrain-epochs", 1, "--input-size", 64, "--workers", 0)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "runs" / "run-001" / "summary.json").read_text())
    assert summary["test"]["images"] == 8
    assert 0.0 <= summary["test"]["pointing_game"] <= 1.0
    assert "pointing game" in result.output
    assert (tmp_path / "engines" / "demo" / "audit.onnx").is_file()


@pytest.mark.slow
def test_full_size_demo_localises(tmp_path):
    """The README's demo as shipped (resnet50_clip, 480 + 96 images): it must localise the hazards."""
    result = invoke("demo", "-o", tmp_path / "runs", "--artifact", tmp_path / "engines" / "demo")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "runs" / "run-001" / "summary.json").read_text())
    assert summary["test"]["auroc"] > 0.7
    assert summary["test"]["pointing_game"] > 0.35  # chance (a random peak inside the box) is about 0.04


def test_export_with_attributions_and_infer_with_explain(checkpoint_dir, image_folder, tmp_path):
    art = tmp_path / "art"
    result = invoke("export", checkpoint_dir, "-o", art, "--attribution", "gradcam,ig", "--ig-steps", 3)
    assert result.exit_code == 0, result.output
    assert "parity with PyTorch, ig" in result.output and "weights.bin" in result.output
    result = invoke("infer", art, image_folder, "-o", tmp_path / "runs", "--explain", "ig")
    assert result.exit_code == 0, result.output
    rows = [r for r in records(tmp_path / "runs" / "run-001") if r["status"] == "ok"]
    assert rows and all(r["explain"]["method"] == "ig" and "delta" in r["explain"] for r in rows)
    assert all(Path(r["explain"]["overlay"]).is_file() for r in rows)
    missing = invoke("infer", art, image_folder, "-o", tmp_path / "runs", "--explain", "smoothgrad")
    assert_clean_error(missing, "smoothgrad", "gradcam")


def test_export_rejects_an_unknown_method(checkpoint_dir, tmp_path):
    result = invoke("export", checkpoint_dir, "-o", tmp_path / "art", "--attribution", "lime")
    assert_clean_error(result, "unknown attribution method", "lime")


def test_export_classifier_and_infer(image_folder, tmp_path):
    art = tmp_path / "clf"
    result = invoke("export", "--classifier", "test_resnet", "--weights", "random", "--input-size", 64,
                    "--num-classes", 5, "-o", art, "--attribution", "gradcam")
    assert result.exit_code == 0, result.output
    assert "RANDOM weights" in result.output and "parity with PyTorch, classify" in result.output
    result = invoke("infer", art, image_folder, "-o", tmp_path / "runs", "--explain", "gradcam")
    assert result.exit_code == 0, result.output
    rows = [r for r in records(tmp_path / "runs" / "run-001") if r["status"] == "ok"]
    assert rows and all(0 <= r["top_class"] < 5 and len(r["classes"]) == 5 for r in rows)
    assert all(Path(r["explain"]["overlay"]).is_file() for r in rows)


def test_export_needs_exactly_one_model(checkpoint_dir, tmp_path):
    both = invoke("export", checkpoint_dir, "--classifier", "test_resnet", "-o", tmp_path / "x")
    neither = invoke("export", "-o", tmp_path / "y")
    for result in (both, neither):
        assert result.exit_code == 2 and "CHECKPOINT" in result.output and "Traceback" not in result.output


def test_infer_over_every_kind_of_file_fault(artifact_dir, tmp_path, bomb_png):
    """Every decodable variant is audited; every bad file gives one error record naming it; --strict exits 3."""
    import io

    from PIL import Image

    def encoded(image: Image.Image, fmt: str, **params) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **params)
        return buffer.getvalue()

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    folder = tmp_path / "faults"
    folder.mkdir()
    good = {
        "plain.jpg": encoded(Image.fromarray(pixels), "JPEG"),
        "cmyk.jpg": encoded(Image.fromarray(pixels).convert("CMYK"), "JPEG"),
        "gray16.png": encoded(Image.fromarray((pixels[..., 0].astype(np.uint16) * 257)), "PNG"),
        "gray.png": encoded(Image.fromarray(pixels[..., 0]), "PNG"),
        "rgba.png": encoded(Image.fromarray(np.dstack([pixels, pixels[..., :1]])), "PNG"),
        "palette.png": encoded(Image.fromarray(pixels).convert("P"), "PNG"),
        "exif_rotated.jpg": encoded(Image.fromarray(pixels), "JPEG", exif=exif.tobytes()),
    }
    plain = good["plain.jpg"]
    bad = {
        "corrupt.jpg": b"\x00" * 16 + plain[16:],
        "truncated.png": good["gray.png"][: len(good["gray.png"]) // 2],
        "empty.jpg": b"",
        "notes.jpg": b"these are not pixels\n" * 40,
        "bomb.png": bomb_png,
    }
    for name, data in {**good, **bad}.items():
        (folder / name).write_bytes(data)
    out = tmp_path / "runs"
    result = invoke("infer", artifact_dir, folder, "-o", out, "--no-save-overlays", "--batch", 3)
    assert result.exit_code == 0, result.output
    rows = records(out / "run-001")
    ok = {Path(r["source"]).name for r in rows if r["status"] == "ok"}
    errors = {Path(r["source"]).name: r["error"] for r in rows if r["status"] == "error"}
    assert ok == set(good) and set(errors) == set(bad) and len(rows) == len(good) + len(bad)
    for name, message in errors.items():
        assert name in message, message
    assert "over the limit" in errors["bomb.png"] or "pixel" in errors["bomb.png"].lower(), errors["bomb.png"]
    rotated = next(r for r in rows if r["source"].endswith("exif_rotated.jpg"))
    assert rotated["image_size"] == [64, 48]  # turned upright: 48 wide, 64 high (height first)
    strict = invoke("infer", artifact_dir, folder, "-o", out, "--no-save-overlays", "--strict")
    assert strict.exit_code == 3 and f"--strict: {len(bad)} input(s)" in strict.output
    print(f"\nfaults: {len(ok)} ok, {len(errors)} errors: " + "; ".join(sorted(errors.values())))
