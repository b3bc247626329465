"""Batch inference over image items with per-item error records, overlays, JSONL and a contact sheet."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from auditor_rt.runtime.auditor import AuditResult, Auditor
from auditor_rt.runtime.errors import ConfigError, ImageDecodeError
from auditor_rt.runtime.explain import Explanation, attribution_methods
from auditor_rt.runtime.imageio import decode_image
from auditor_rt.runtime.sources import Item
from auditor_rt.runtime.visualize import contact_sheet, draw_caption, draw_regions, letterbox, overlay, write_rgb

SHEET_LIMIT = 64


@dataclass
class InferSummary:
    folder: Path
    ok: int = 0
    errors: int = 0
    positives: int = 0
    seconds: float = 0.0
    records: list[dict] = field(default_factory=list)
    heatmaps: dict[int, np.ndarray] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"run_folder": str(self.folder), "ok": self.ok, "errors": self.errors, "positives": self.positives,
                "seconds": round(self.seconds, 3), "results": str(self.folder / "results.jsonl")}


def render_overlay(image: np.ndarray, result: AuditResult) -> np.ndarray:
    """Heatmap blended over the image, with region boxes when the label is risk."""
    picture = overlay(image, result.heatmap)
    return draw_regions(picture, result.regions) if result.label else picture


def caption_of(result: AuditResult, digits: int = 3) -> str:
    return f"{'RISK' if result.label else 'ok'} {result.score:.{digits}f}"


def run_inference(auditor: Auditor, items: Sequence[Item], folder: Path, save_overlays: bool = True,
                  progress: Callable[[int], None] | None = None, keep_heatmaps: bool = False,
                  explain: str | None = None, append: bool = False, start_index: int = 0) -> InferSummary:
    """Audit ``items`` in batches. Every item yields exactly one JSONL record, ``ok`` or ``error``.
    ``keep_heatmaps`` also keeps each heatmap in ``summary.heatmaps`` (by input index), for scoring.
    ``explain`` names an attribution graph whose maps are added to the records and drawn as overlays.
    ``append`` adds to an existing ``results.jsonl`` (``--resume``), numbering inputs from ``start_index``."""
    if explain and explain not in attribution_methods(auditor.artifact):
        available = ", ".join(attribution_methods(auditor.artifact)) or "none"
        raise ConfigError(f"--explain {explain}: the artifact has no such attribution graph (it has: {available}); "
                          f"re-export with --attribution {explain}")
    summary = InferSummary(folder)
    overlay_dir = folder / "overlays"
    if save_overlays:
        overlay_dir.mkdir(parents=True, exist_ok=True)
    thumbs, captions = [], []
    start = time.perf_counter()
    with open(folder / "results.jsonl", "a" if append else "w") as jsonl:
        for offset in range(0, len(items), auditor.batch_size):
            chunk = list(enumerate(items[offset:offset + auditor.batch_size], start=start_index + offset))
            chunk_records, decoded = {}, []
            for index, item in chunk:
                error = f"{item.source}: {item.error}" if item.error else None
                if error is None:
                    try:
                        decoded.append((index, item, decode_image(item.source)))
                    except ImageDecodeError as exc:
                        error = str(exc)
                if error is not None:
                    chunk_records[index] = {"index": index, "source": item.source, "status": "error", "error": error}
            arrays = [image for _, _, image in decoded]
            if auditor.is_classifier:  # a plain classifier: its classes, and maps only with --explain
                results = auditor.classify_arrays(arrays) if decoded else []
            else:
                results = auditor.audit_arrays(arrays) if decoded else []
            explanations = auditor.explain_arrays(arrays, explain, noise_seed=offset) if explain and decoded else []
            for position, ((index, item, image), result) in enumerate(zip(decoded, results)):
                record = {"index": index, "source": item.source, "status": "ok", **result.to_dict()}
                if explanations:
                    record["explain"] = write_explanation(folder, index, item, image, explanations[position],
                                                          save_overlays)
                if auditor.is_classifier:
                    chunk_records[index] = record
                    continue
                if save_overlays:
                    picture = render_overlay(image, result)
                    name = overlay_dir / f"{index:05d}_{Path(item.source).stem}.jpg"
                    write_rgb(name, draw_caption(picture, caption_of(result)))
                    record["overlay"] = str(name)
                    if len(thumbs) < SHEET_LIMIT:
                        thumbs.append(letterbox(picture, 192))  # keep thumbnails, not full images
                        captions.append(caption_of(result, 2))
                chunk_records[index] = record
                summary.positives += bool(result.label)
                if keep_heatmaps:
                    summary.heatmaps[index] = result.heatmap
            for index in sorted(chunk_records):  # records keep the order of the inputs
                _write(jsonl, summary, chunk_records[index])
            if progress is not None:
                progress(len(chunk))
    summary.seconds = time.perf_counter() - start
    if thumbs:
        write_rgb(folder / "contact_sheet.png", contact_sheet(thumbs, captions))
    (folder / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def write_explanation(folder: Path, index: int, item: Item, image: np.ndarray, explanation: Explanation,
                      save_overlay: bool) -> dict:
    """The map as an overlay (red/blue for signed maps, TURBO for unsigned ones) and its record."""
    record = explanation.to_dict()
    if save_overlay:
        folder = folder / f"explain_{explanation.method}"
        folder.mkdir(exist_ok=True)
        name = folder / f"{index:05d}_{Path(item.source).stem}.jpg"
        values = explanation.map
        if not explanation.signed:
            low, high = float(values.min()), float(values.max())
            values = (values - low) / max(high - low, 1e-12)
        picture = overlay(image, values, alpha=0.85 if explanation.signed else 0.55, signed=explanation.signed)
        write_rgb(name, draw_caption(picture, explanation.method))
        record["overlay"] = str(name)
    return record


def _write(handle, summary: InferSummary, record: dict) -> None:
    handle.write(json.dumps(record) + "\n")
    handle.flush()
    summary.records.append(record)
    if record["status"] == "ok":
        summary.ok += 1
    else:
        summary.errors += 1
