"""An image run with maps: raw .npy maps, PNG attribution overlays with legends, the paired contact sheet, the
absolute heatmap scale from the manifest, IG's completeness in records and summary, and per-image progress."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from auditor_rt.runtime.auditor import Auditor
from auditor_rt.runtime.image_file_source import ImageFileSource
from auditor_rt.runtime.manifest import Manifest
from auditor_rt.runtime.pictures import THUMB, MapDisplay, display_heatmap
from auditor_rt.runtime.pipeline import run_pipeline
from auditor_rt.runtime.record_writer import SaveRule
from auditor_rt.runtime.sources import Item


def write_images(folder: Path, count: int) -> list[Item]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    items = []
    for i in range(count):
        path = folder / f"img_{i}.png"
        image = rng.integers(0, 256, (70 + 10 * i, 60, 3), dtype=np.uint8)
        image[..., 2] = 255  # reddish all over (BGR), pure red in one corner: the tiny head sees risk
        image[:20, :20] = (0, 0, 255)
        cv2.imwrite(str(path), image)
        items.append(Item(str(path)))
    return items


def with_absolute_scale(artifact: Path, tmp_path: Path, scale) -> Path:
    """A copy of the artifact whose manifest carries the absolute heatmap scale, as the exporter writes it."""
    copy = tmp_path / "art"
    shutil.copytree(artifact, copy)
    document = json.loads((copy / "manifest.json").read_text())
    document["heatmap"] = {"absolute_scale": scale}
    (copy / "manifest.json").write_text(json.dumps(document))
    return copy


def test_manifest_exposes_the_absolute_scale(artifact_dir, tmp_path):
    scaled = with_absolute_scale(artifact_dir, tmp_path, {"risk_map_max": 2.5, "chosen_on": "validation",
                                                          "percentile": 99})
    assert Manifest.read(scaled / "manifest.json").heatmap_scale == 2.5
    document = json.loads((scaled / "manifest.json").read_text())
    document["heatmap"] = {"absolute_scale": 1.5}
    assert Manifest.from_dict(document).heatmap_scale == 1.5
    document.pop("heatmap")
    assert Manifest.from_dict(document).heatmap_scale is None
    document["heatmap"] = {"absolute_scale": -1}
    from auditor_rt.runtime.errors import ArtifactError

    with pytest.raises(ArtifactError, match="positive"):
        Manifest.from_dict(document).heatmap_scale


def test_run_with_ig_saves_raw_maps_png_overlays_and_a_paired_sheet(explain_artifact_dir, tmp_path):
    items = write_images(tmp_path / "in", 3)
    calls = []
    with Auditor.load(explain_artifact_dir, batch_size=4) as auditor:
        summary = run_pipeline(auditor, ImageFileSource(items), tmp_path / "run", SaveRule(raw_maps=True),
                               explain="ig", progress=lambda done, summary, depth: calls.append(done))
        results = auditor.audit_arrays([cv2.cvtColor(cv2.imread(i.source), cv2.COLOR_BGR2RGB) for i in items])
        size = tuple(auditor.input_size)
    # IG at batch 4 runs one image at a time (4 // (4 steps + 2) -> 1): one progress call per image
    assert calls == [1, 1, 1]
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    for row, result in zip(rows, results):
        maps = {name: np.load(path) for name, path in row["maps"].items()}
        assert set(maps) == {"risk_map", "heatmap", "ig"} and all(m.dtype == np.float32 for m in maps.values())
        np.testing.assert_allclose(maps["risk_map"], result.risk_map, atol=1e-5)
        assert maps["heatmap"].shape == tuple(row["image_size"]) and maps["ig"].shape == size
        explain = row["explain"]
        assert float(maps["ig"].sum(dtype=np.float64)) - explain["delta"] == pytest.approx(
            explain["ig_logit_difference"], abs=1e-4)
        overlay = cv2.imread(explain["overlay"])
        assert explain["overlay"].endswith(".png") and overlay.shape[0] > row["image_size"][0]  # legend below
    sheet = cv2.imread(str(tmp_path / "run" / "contact_sheet.png"))
    assert sheet.shape[1] % (2 * THUMB) == 0 and sheet.shape[0] > THUMB  # pairs: heatmap | IG, then legends
    stored = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert stored["explain"] == "ig" and stored["ig"]["checked"] == 3 and stored["ig"]["steps"] == 4
    unconverged = sum(not r["explain"]["ig_converged"] for r in rows)
    assert stored["ig"]["unconverged"] == unconverged == summary.ig["unconverged"]
    assert (stored["ig"]["suggested_steps"] is None) == (unconverged == 0)


def test_absolute_scale_colours_the_overlays_and_is_recorded(artifact_dir, tmp_path):
    items = write_images(tmp_path / "in", 2)
    with Auditor.load(artifact_dir) as auditor:
        result = auditor.audit_arrays([cv2.cvtColor(cv2.imread(items[0].source), cv2.COLOR_BGR2RGB)])[0]
    scale = float(np.maximum(result.risk_map, 0).max()) * 4 or 1.0  # the first image's peak at a quarter heat
    scaled = with_absolute_scale(artifact_dir, tmp_path, {"risk_map_max": scale})
    with Auditor.load(scaled) as auditor:
        summary = run_pipeline(auditor, ImageFileSource(items), tmp_path / "abs", summary_name="summary.json")
        image_run = run_pipeline(auditor, ImageFileSource(items), tmp_path / "img",
                                 display=MapDisplay(tuple(auditor.input_size), heatmap_scale="image",
                                                    absolute=scale))
    assert summary.settings["heatmap_scale"] == "absolute" and image_run.settings["heatmap_scale"] == "image"
    heat = display_heatmap(result, MapDisplay(absolute=scale))
    assert heat.max() == pytest.approx(0.25, abs=0.01)     # absolute: the peak is a quarter of the scale
    assert result.heatmap.max() == pytest.approx(1.0)      # per image: every image has a full-heat spot
    assert json.loads((tmp_path / "abs" / "summary.json").read_text())["heatmap_scale"] == "absolute"

    def warmth(run: str) -> float:
        picture = cv2.imread(str(tmp_path / run / "overlays" / "00000_img_0.jpg")).astype(float)
        body = picture[20:70]  # below the caption, above the legend
        return float((body[..., 2] - body[..., 0]).mean())  # red minus blue (BGR)

    assert warmth("img") > warmth("abs") + 20  # the same image looks cooler on the absolute scale
