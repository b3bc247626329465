"""``infer`` on image items as overlapped stages: a pool of decode threads works ahead of the model (a bounded
window of items), batching and inference run on the calling thread, and a writer thread draws the overlays and
writes the records behind a bounded queue, so that neither decoding nor a slow disk stalls the model.

Every item gives exactly one JSONL record, ``ok`` or ``error``, in the order of the inputs. Ctrl-C or SIGTERM stops
the decoders; what was decoded is still scored and written, so the JSONL stays valid line by line, and
``--resume`` picks up the rest.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from auditor_rt.runtime.auditor import AuditResult, Auditor
from auditor_rt.runtime.errors import ConfigError, ImageDecodeError
from auditor_rt.runtime.explain import Explanation, attribution_methods
from auditor_rt.runtime.imageio import decode_image
from auditor_rt.runtime.runfolder import RecordWriter
from auditor_rt.runtime.signals import stop_on_interrupt
from auditor_rt.runtime.sources import Item
from auditor_rt.runtime.visualize import contact_sheet, draw_caption, draw_regions, letterbox, overlay, write_rgb

SHEET_LIMIT = 64
WRITE_QUEUE = 8  # batches waiting for the writer
MAX_DECODE_WORKERS = 4


@dataclass
class InferSummary:
    folder: Path
    ok: int = 0
    errors: int = 0
    positives: int = 0
    seconds: float = 0.0
    stopped_by: str = ""  # "" or "interrupt"
    records: list[dict] = field(default_factory=list)
    heatmaps: dict[int, np.ndarray] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"run_folder": str(self.folder), "ok": self.ok, "errors": self.errors, "positives": self.positives,
                "seconds": round(self.seconds, 3), "stopped_by": self.stopped_by,
                "results": str(self.folder / "results.jsonl")}


def render_overlay(image: np.ndarray, result: AuditResult) -> np.ndarray:
    """Heatmap blended over the image, with region boxes when the label is risk."""
    picture = overlay(image, result.heatmap)
    return draw_regions(picture, result.regions) if result.label else picture


def caption_of(result: AuditResult, digits: int = 3) -> str:
    return f"{'RISK' if result.label else 'ok'} {result.score:.{digits}f}"


@dataclass
class _Decoded:
    """One item after the decode stage: its image, or the error that names it."""

    index: int
    item: Item
    image: np.ndarray | None
    error: str | None
    decode_ms: float


def _decode(index: int, item: Item) -> _Decoded:
    began = time.perf_counter()
    image = error = None
    if item.error:
        error = f"{item.source}: {item.error}"
    else:
        try:
            image = decode_image(item.source)
        except ImageDecodeError as exc:
            error = str(exc)
    return _Decoded(index, item, image, error, (time.perf_counter() - began) * 1000)


def _decoded_batches(pool: ThreadPoolExecutor, items: Sequence[Item], start_index: int, size: int,
                     stop: threading.Event) -> Iterator[list[_Decoded]]:
    """Batches of decoded items in input order. The pool decodes up to two batches ahead, no more, so that memory
    stays bounded however many items there are; after ``stop`` nothing new is started."""
    pending: collections.deque[Future] = collections.deque()
    upcoming = iter(enumerate(items, start=start_index))
    window = 2 * size
    while True:
        while len(pending) < window and not stop.is_set():
            entry = next(upcoming, None)
            if entry is None:
                break
            pending.append(pool.submit(_decode, *entry))
        if not pending:
            return
        batch = []
        while pending and len(batch) < size:
            if stop.is_set() and not pending[0].running() and not pending[0].done():
                pending.popleft().cancel()  # not started: left for --resume
                continue
            batch.append(pending.popleft().result())
        if batch:
            yield batch


@dataclass
class _Scored:
    """A batch for the writer: the decoded items with their results (``None`` for the ones that failed)."""

    decoded: list[_Decoded]
    results: list
    explanations: list
    infer_ms: float


class _ImageWriter(RecordWriter):
    """Draws overlays and explanation maps, writes records in input order and keeps the contact sheet's
    thumbnails, off the path from decoding to inference (see ``RecordWriter``). The counts of the summary are its
    own until joined."""

    def __init__(self, folder: Path, summary: InferSummary, classifier: bool, save_overlays: bool,
                 keep_heatmaps: bool, append: bool, only_positive: bool = False):
        super().__init__(folder, append, WRITE_QUEUE)
        self.summary, self.classifier = summary, classifier
        self.save_overlays, self.keep_heatmaps, self.only_positive = save_overlays, keep_heatmaps, only_positive
        self.thumbs: list[np.ndarray] = []
        self.captions: list[str] = []

    def handle_job(self, batch: _Scored) -> None:
        results = iter(batch.results)
        explanations = iter(batch.explanations)
        for decoded in batch.decoded:
            if decoded.image is None:
                record = {"index": decoded.index, "source": decoded.item.source, "status": "error",
                          "error": decoded.error}
            else:
                record = self._record(decoded, next(results), next(explanations, None), batch.infer_ms)
            self.write_record(record)
            self.summary.records.append(record)
            self.summary.ok += record["status"] == "ok"
            self.summary.errors += record["status"] != "ok"

    def _record(self, decoded: _Decoded, result, explanation: Explanation | None, infer_ms: float) -> dict:
        began = time.perf_counter()
        index, item, image = decoded.index, decoded.item, decoded.image
        record = {"index": index, "source": item.source, "status": "ok", **result.to_dict()}
        if explanation is not None:
            record["explain"] = write_explanation(self.folder, index, item, image, explanation, self.save_overlays)
        if not self.classifier:
            if self.save_overlays and (result.label or not self.only_positive):
                picture = render_overlay(image, result)
                name = self.folder / "overlays" / f"{index:05d}_{Path(item.source).stem}.jpg"
                write_rgb(name, draw_caption(picture, caption_of(result)))
                record["overlay"] = str(name)
                if len(self.thumbs) < SHEET_LIMIT:
                    self.thumbs.append(letterbox(picture, 192))  # keep thumbnails, not full images
                    self.captions.append(caption_of(result, 2))
            self.summary.positives += bool(result.label)
            if self.keep_heatmaps:
                self.summary.heatmaps[index] = result.heatmap
        record["timings"] = {"decode_ms": round(decoded.decode_ms, 2), "infer_ms": round(infer_ms, 2),
                             "draw_ms": round((time.perf_counter() - began) * 1000, 2)}
        return record


def run_inference(auditor: Auditor, items: Sequence[Item], folder: Path, save_overlays: bool = True,
                  progress: Callable[[int, int], None] | None = None, keep_heatmaps: bool = False,
                  explain: str | None = None, append: bool = False, start_index: int = 0,
                  decode_workers: int | None = None, summary_name: str | None = "summary.json",
                  only_positive: bool = False) -> InferSummary:
    """Audit ``items`` in batches of ``auditor.batch_size``. Every item yields exactly one JSONL record, ``ok`` or
    ``error``, unless the run is interrupted (then the items not yet decoded have none, and ``--resume`` does them).
    ``keep_heatmaps`` also keeps each heatmap in ``summary.heatmaps`` (by input index), for scoring.
    ``explain`` names an attribution graph whose maps are added to the records and drawn as overlays.
    ``append`` adds to an existing ``results.jsonl`` (``--resume``), numbering inputs from ``start_index``.
    ``progress(done, depth)`` is called after each batch: the items it took, and the batches waiting for the writer.
    ``only_positive`` saves overlays of the images labelled risk only (every image still gets its record).
    The summary goes to ``summary_name`` in the folder (``None``: not written)."""
    if explain and explain not in attribution_methods(auditor.artifact):
        available = ", ".join(attribution_methods(auditor.artifact)) or "none"
        raise ConfigError(f"--explain {explain}: the artifact has no such attribution graph (it has: {available}); "
                          f"re-export with --attribution {explain}")
    summary = InferSummary(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if save_overlays and not auditor.is_classifier:
        (folder / "overlays").mkdir(exist_ok=True)
    writer = _ImageWriter(folder, summary, auditor.is_classifier, save_overlays, keep_heatmaps, append, only_positive)
    workers = decode_workers or min(MAX_DECODE_WORKERS, os.cpu_count() or 1)
    stop = threading.Event()
    start = time.perf_counter()
    writer.start()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="decode")

    def interrupted():
        summary.stopped_by = summary.stopped_by or "interrupt"

    try:
        with stop_on_interrupt(stop, interrupted):
            for batch in _decoded_batches(pool, items, start_index, auditor.batch_size, stop):
                writer.jobs.put(_score_batch(auditor, batch, explain, noise_seed=batch[0].index - start_index))
                if progress is not None:
                    progress(len(batch), writer.jobs.qsize())
                if writer.failure is not None:
                    stop.set()
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        writer.jobs.put(None)
        writer.join()
    summary.seconds = time.perf_counter() - start
    if writer.failure is not None:
        raise writer.failure
    if writer.thumbs:
        write_rgb(folder / "contact_sheet.png", contact_sheet(writer.thumbs, writer.captions))
    if summary_name:
        (folder / summary_name).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def _score_batch(auditor: Auditor, batch: list[_Decoded], explain: str | None, noise_seed: int) -> _Scored:
    """Inference for the items of a batch that decoded; a plain classifier gives its classes (maps only with
    ``explain``)."""
    arrays = [decoded.image for decoded in batch if decoded.image is not None]
    if not arrays:
        return _Scored(batch, [], [], 0.0)
    began = time.perf_counter()
    results = auditor.classify_arrays(arrays) if auditor.is_classifier else auditor.audit_arrays(arrays)
    explanations = auditor.explain_arrays(arrays, explain, noise_seed=noise_seed) if explain else []
    return _Scored(batch, results, explanations, (time.perf_counter() - began) * 1000 / len(arrays))


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
