"""``infer`` on image items as overlapped stages: a pool of decode threads works ahead of the model (a bounded
window of items), each thread handing its file to a decoder process (``DecoderPool``: a file that crashes, hangs
or floods a codec costs its own error record, never the run), batching and inference run on the calling thread, and a writer thread draws the overlays and
writes the records behind a bounded queue, so that neither decoding nor a slow disk stalls the model.

Every item gives exactly one JSONL record, ``ok`` or ``error``, in the order of the inputs. Ctrl-C or SIGTERM stops
the decoders; what was decoded is still scored and written, so the JSONL stays valid line by line, and
``--resume`` picks up the rest.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from auditor_rt.runtime.auditor import Auditor
from auditor_rt.runtime.decoder_pool import DEFAULT_DEADLINE_S, DecoderPool
from auditor_rt.runtime.errors import ImageDecodeError
from auditor_rt.runtime.explain import Explanation, check_method, steps_for_gap
from auditor_rt.runtime.legend import with_legend
from auditor_rt.runtime.pictures import (MapDisplay, SheetTiles, caption_of, explain_picture, file_stem,
                                         legend_kind, render_overlay, result_caption, save_maps)
from auditor_rt.runtime.runfolder import RecordWriter
from auditor_rt.runtime.signals import stop_on_interrupt
from auditor_rt.runtime.sources import Item
from auditor_rt.runtime.visualize import draw_caption, write_rgb

__all__ = ["InferSummary", "MapDisplay", "caption_of", "render_overlay", "run_inference"]

SHEET_LIMIT = 64
WRITE_QUEUE = 8  # batches waiting for the writer
MAX_DECODE_WORKERS = 4
MAX_DECODE_CHUNK = 8  # items per round trip to a decoder process (it costs ~60 us: a third of a 224 px decode)


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
    settings: dict = field(default_factory=dict)  # threshold, heatmap scale, explain method: what the run used
    ig: dict | None = None  # IG's completeness over the run (see ig_summary)

    def to_dict(self) -> dict:
        data = {"run_folder": str(self.folder), "ok": self.ok, "errors": self.errors, "positives": self.positives,
                "seconds": round(self.seconds, 3), "stopped_by": self.stopped_by,
                "results": str(self.folder / "results.jsonl"), **self.settings}
        if self.ig is not None:
            data["ig"] = self.ig
        return data


def ig_summary(records: list[dict], steps: int) -> dict | None:
    """How many IG maps of the run missed completeness, the worst gap, and the steps that would be needed."""
    checked = [r["explain"] for r in records if "ig_converged" in r.get("explain", {})]
    if not checked:
        return None
    missed = [e for e in checked if not e["ig_converged"]]
    worst = max((e["ig_gap"] for e in missed), default=0.0)
    return {"steps": steps, "checked": len(checked), "unconverged": len(missed), "worst_gap": worst,
            "suggested_steps": steps_for_gap(steps, worst) if missed else None}


@dataclass
class _Decoded:
    """One item after the decode stage: its image, or the error that names it."""

    index: int
    item: Item
    image: np.ndarray | None
    error: str | None
    decode_ms: float


def _decode_chunk(decoder: DecoderPool, entries: list[tuple[int, Item]]) -> list[_Decoded]:
    """Decode a few items with one round trip to a decoder process; each gets its image or its error."""
    began = time.perf_counter()
    readable = [(index, item) for index, item in entries if not item.error]
    outcomes = iter(decoder.decode_many([item.source for _, item in readable]) if readable else [])
    elapsed_ms = (time.perf_counter() - began) * 1000 / max(1, len(readable))
    decoded = []
    for index, item in entries:
        if item.error:
            decoded.append(_Decoded(index, item, None, f"{item.source}: {item.error}", 0.0))
            continue
        outcome = next(outcomes)
        if isinstance(outcome, ImageDecodeError):
            decoded.append(_Decoded(index, item, None, str(outcome), elapsed_ms))
        else:
            decoded.append(_Decoded(index, item, outcome.image, None, elapsed_ms))
    return decoded


def _decoded_batches(pool: ThreadPoolExecutor, decoder: DecoderPool, items: Sequence[Item], start_index: int,
                     size: int, stop: threading.Event) -> Iterator[list[_Decoded]]:
    """Batches of decoded items in input order. The threads decode up to two batches ahead, no more, so that
    memory stays bounded however many items there are, in chunks of ``chunk`` items per round trip to a decoder
    process; after ``stop`` nothing new is started."""
    chunk = max(1, min(MAX_DECODE_CHUNK, 2 * size // decoder.workers // 2 * 2))
    pending: collections.deque[Future] = collections.deque()
    ready: collections.deque[_Decoded] = collections.deque()
    upcoming = iter(enumerate(items, start=start_index))
    window = 2 * size
    while True:
        while (len(pending) * chunk + len(ready)) < window and not stop.is_set():
            entries = list(itertools.islice(upcoming, chunk))
            if not entries:
                break
            pending.append(pool.submit(_decode_chunk, decoder, entries))
        while pending and len(ready) < size:
            if stop.is_set() and not pending[0].running() and not pending[0].done():
                pending.popleft().cancel()  # not started: left for --resume
                continue
            ready.extend(pending.popleft().result())
        if not ready:
            return
        yield [ready.popleft() for _ in range(min(size, len(ready)))]


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
                 keep_heatmaps: bool, append: bool, only_positive: bool = False, display: MapDisplay | None = None,
                 save_raw_maps: bool = False):
        super().__init__(folder, append, WRITE_QUEUE)
        self.summary, self.classifier = summary, classifier
        self.save_overlays, self.keep_heatmaps, self.only_positive = save_overlays, keep_heatmaps, only_positive
        self.display, self.save_raw_maps = display or MapDisplay(), save_raw_maps
        self.sheet = SheetTiles(SHEET_LIMIT)

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
        stem = file_stem(index, item.source)
        record = {"index": index, "source": item.source, "status": "ok", **result.to_dict()}
        draw = self.save_overlays and (self.classifier or result.label or not self.only_positive)
        tile, legends = [], []
        if not self.classifier:
            if draw:
                picture = render_overlay(image, result, self.display)
                name = self.folder / "overlays" / f"{stem}.jpg"
                captioned = draw_caption(picture, caption_of(result))
                write_rgb(name, with_legend(captioned, "risk", self.display.heatmap_note))
                record["overlay"] = str(name)
                tile.append((picture, caption_of(result, 2)))
                legends.append(("risk", self.display.heatmap_note))
            self.summary.positives += bool(result.label)
            if self.keep_heatmaps:
                self.summary.heatmaps[index] = result.heatmap
        if explanation is not None:
            record["explain"] = explanation.to_dict()
            if draw:
                picture, note = explain_picture(image, explanation, self.display)
                folder = self.folder / f"explain_{explanation.method}"
                folder.mkdir(exist_ok=True)
                name = folder / f"{stem}.png"  # PNG: JPEG's chroma subsampling greys out thin red and blue
                caption = f"{explanation.method} | {result_caption(result)}"
                write_rgb(name, with_legend(draw_caption(picture, caption), legend_kind(explanation), note))
                record["explain"]["overlay"] = str(name)
                tile.append((picture, f"{explanation.method} {result_caption(result, 2)}"))
                legends.append((legend_kind(explanation), explanation.method))
        if self.save_raw_maps:
            record["maps"] = save_maps(self.folder / "maps", stem, result, explanation)
        self.sheet.add(tile, legends)
        record["timings"] = {"decode_ms": round(decoded.decode_ms, 2), "infer_ms": round(infer_ms, 2),
                             "draw_ms": round((time.perf_counter() - began) * 1000, 2)}
        return record


def default_decode_workers(requested: int | None = None) -> int:
    """Decode threads, and decoder processes: one per core, up to ``MAX_DECODE_WORKERS``."""
    return requested or min(MAX_DECODE_WORKERS, os.cpu_count() or 1)


def default_display(auditor, **options) -> MapDisplay:
    """The map display for this auditor: its artifact's absolute heatmap scale where it has one. A remote auditor
    (``--server``) has no local artifact, and its heatmaps keep the per-image scale."""
    artifact = getattr(auditor, "artifact", None)
    if artifact is None:
        return MapDisplay(**options)
    return MapDisplay(tuple(auditor.input_size), absolute=artifact.manifest.heatmap_scale, **options)


def run_inference(auditor: Auditor, items: Sequence[Item], folder: Path, save_overlays: bool = True,
                  progress: Callable[[int, int], None] | None = None, keep_heatmaps: bool = False,
                  explain: str | None = None, append: bool = False, start_index: int = 0,
                  decode_workers: int | None = None, summary_name: str | None = "summary.json",
                  only_positive: bool = False, display: MapDisplay | None = None, save_raw_maps: bool = False,
                  settings: dict | None = None, decode_deadline_s: float = DEFAULT_DEADLINE_S,
                  decoder: DecoderPool | None = None) -> InferSummary:
    """Audit ``items`` in batches of ``auditor.batch_size``. Every item yields exactly one JSONL record, ``ok`` or
    ``error``, unless the run is interrupted (then the items not yet decoded have none, and ``--resume`` does them).
    ``keep_heatmaps`` also keeps each heatmap in ``summary.heatmaps`` (by input index), for scoring.
    ``explain`` names an attribution graph whose maps are added to the records, drawn as overlays and paired with
    the heatmaps on the contact sheet. ``display`` says how maps are drawn (default: the artifact's absolute
    heatmap scale where it has one); ``save_raw_maps`` writes the raw maps as .npy files under ``maps/``.
    ``append`` adds to an existing ``results.jsonl`` (``--resume``), numbering inputs from ``start_index``.
    ``progress(done, depth)`` is called after each batch, and after each explained chunk (IG runs an image at a
    time): the items just done, and the batches waiting for the writer.
    ``only_positive`` saves overlays of the images labelled risk only (every image still gets its record).
    ``settings`` are added to the summary as they are. The summary goes to ``summary_name`` in the folder
    (``None``: not written). Each decode runs in a decoder process and is stopped after ``decode_deadline_s``;
    ``decoder`` is a ``DecoderPool`` to use (and leave open), e.g. one started while the model loaded, since its
    processes take about 0.15 s to start; by default the run starts its own (one process per decode thread)."""
    if explain:
        check_method(auditor.artifact, explain)
    if display is None:
        display = default_display(auditor)
    summary = InferSummary(folder, settings={**(settings or {}), "explain": explain})
    if not auditor.is_classifier:
        summary.settings.update(threshold=auditor.threshold, heatmap_scale=display.heatmap_mode)
    folder.mkdir(parents=True, exist_ok=True)
    if save_overlays and not auditor.is_classifier:
        (folder / "overlays").mkdir(exist_ok=True)
    writer = _ImageWriter(folder, summary, auditor.is_classifier, save_overlays, keep_heatmaps, append, only_positive,
                          display, save_raw_maps)
    workers = decoder.workers if decoder is not None else default_decode_workers(decode_workers)
    stop = threading.Event()
    start = time.perf_counter()
    own_decoder = decoder is None
    if own_decoder:
        decoder = DecoderPool(workers, deadline_s=decode_deadline_s)
    writer.start()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="decode")

    def interrupted():
        summary.stopped_by = summary.stopped_by or "interrupt"

    reported = 0

    def tick(count: int) -> None:
        nonlocal reported
        reported += count
        progress(count, writer.jobs.qsize())

    try:
        with stop_on_interrupt(stop, interrupted):
            for batch in _decoded_batches(pool, decoder, items, start_index, auditor.batch_size, stop):
                reported = 0
                writer.jobs.put(_score_batch(auditor, batch, explain, noise_seed=batch[0].index - start_index,
                                             tick=tick if progress is not None and explain else None))
                if progress is not None and (len(batch) > reported or not explain):
                    progress(len(batch) - reported, writer.jobs.qsize())
                if writer.failure is not None:
                    stop.set()
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        if own_decoder:
            decoder.close()
        writer.jobs.put(None)
        writer.join()
    summary.seconds = time.perf_counter() - start
    if writer.failure is not None:
        raise writer.failure
    sheet = writer.sheet.sheet()
    if sheet is not None:
        write_rgb(folder / "contact_sheet.png", sheet)
    if explain == "ig":
        steps = int(auditor.artifact.graph("ig").extra.get("params", {}).get("steps", 32))
        summary.ig = ig_summary(summary.records, steps)
    if summary_name:
        (folder / summary_name).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def _score_batch(auditor: Auditor, batch: list[_Decoded], explain: str | None, noise_seed: int,
                 tick: Callable[[int], None] | None = None) -> _Scored:
    """Inference for the items of a batch that decoded; a plain classifier gives its classes (maps only with
    ``explain``; ``tick(count)`` after each explained chunk)."""
    arrays = [decoded.image for decoded in batch if decoded.image is not None]
    if not arrays:
        return _Scored(batch, [], [], 0.0)
    began = time.perf_counter()
    results = auditor.classify_arrays(arrays) if auditor.is_classifier else auditor.audit_arrays(arrays)
    explanations = (auditor.explain_arrays(arrays, explain, noise_seed=noise_seed, progress=tick)
                    if explain else [])
    return _Scored(batch, results, explanations, (time.perf_counter() - began) * 1000 / len(arrays))
