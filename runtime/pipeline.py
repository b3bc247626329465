"""One loop for every run: source → batch → model → writer. A source (image files decoded ahead by decoder
processes, or video readers) fills batches of ``model.batch_size``; the model scores them on the calling thread;
a writer thread writes the records and draws behind a bounded queue. So neither decoding nor a slow disk stalls
the model, and memory stays bounded however long the run.

Every frame gives exactly one JSONL record (``docs/records.md``). Ctrl-C or SIGTERM stops the sources; what was
read is still scored and written, so the JSONL stays valid line by line, and ``--resume`` picks up the rest."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from auditor_rt.runtime.explain import check_method, steps_for_gap
from auditor_rt.runtime.frames import Frame, Source
from auditor_rt.runtime.pictures import MapDisplay
from auditor_rt.runtime.record_writer import RecordWriter, SaveRule, Scored
from auditor_rt.runtime.signals import stop_on_interrupt

ERRORS_KEPT = 20  # error messages the summary keeps for the CLI; all of them are in results.jsonl


@dataclass
class RunSummary:
    """The counts of a run, kept as it goes, in bounded memory (``heatmaps`` only when asked for)."""

    folder: Path
    ok: int = 0
    errors: int = 0
    events: int = 0
    positives: int | None = 0  # None when the model flags nothing (a classifier)
    dropped: int = 0
    decoded: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    stopped_by: str = ""  # "", "interrupt", "max-frames" or "duration"
    settings: dict = field(default_factory=dict)  # threshold, heatmap scale, explain method: what the run used
    error_messages: list[str] = field(default_factory=list)  # the first ERRORS_KEPT
    results: dict[int, object] | None = None  # image results by input index, when the caller keeps them (scoring)
    ig_checked: int = 0
    ig_missed: int = 0  # IG maps that missed completeness
    ig_worst_gap: float = 0.0
    ig_steps: int | None = None

    @property
    def fps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def count(self, frame: Frame, result=None, explanation=None) -> None:
        if result is not None:
            self.ok += 1
            if result.flagged is None:
                self.positives = None
            elif self.positives is not None:
                self.positives += result.flagged
            if self.results is not None and not frame.video:
                self.results[frame.index] = result
        elif frame.event == "error":
            self.errors += 1
            if len(self.error_messages) < ERRORS_KEPT:
                self.error_messages.append(frame.detail)
        else:
            self.events += 1
        if explanation is not None and "ig_converged" in explanation.completeness:
            self.ig_checked += 1
            if not explanation.completeness["ig_converged"]:
                self.ig_missed += 1
                self.ig_worst_gap = max(self.ig_worst_gap, explanation.completeness["ig_gap"])

    @property
    def ig(self) -> dict | None:
        """How many IG maps missed completeness, the worst gap, and the steps that would be needed."""
        if not self.ig_checked:
            return None
        return {"steps": self.ig_steps, "checked": self.ig_checked, "unconverged": self.ig_missed,
                "worst_gap": self.ig_worst_gap,
                "suggested_steps": steps_for_gap(self.ig_steps, self.ig_worst_gap) if self.ig_missed else None}

    def to_dict(self) -> dict:
        data = {"run_folder": str(self.folder), "ok": self.ok, "errors": self.errors, "events": self.events,
                "positives": self.positives, "dropped": self.dropped, "decoded": self.decoded,
                "seconds": round(self.seconds, 3), "fps": round(self.fps, 2), "stopped_by": self.stopped_by,
                "results": str(self.folder / "results.jsonl"), **self.settings}
        return {**data, "ig": self.ig} if self.ig is not None else data


Progress = Callable[[int, RunSummary, int], None]  # (frames just recorded, summary, batches waiting to be written)


def run_pipeline(model, source: Source, folder: Path, save: SaveRule | None = None, explain: str | None = None,
                 display: MapDisplay | None = None, progress: Progress | None = None, append: bool = False,
                 summary_name: str | None = "summary.json", settings: dict | None = None,
                 keep_results: bool = False) -> RunSummary:
    """Score every frame of ``source`` with ``model`` (``runtime/auditor.py``) into ``folder``. ``explain`` names an
    attribution graph whose maps are added to the records and drawn; ``display`` says how maps are drawn (default:
    the model's); ``append`` adds to an existing ``results.jsonl`` (``--resume``). ``progress`` is called after each
    batch, and after each explained chunk (IG runs an image at a time). ``settings`` are added to the summary as
    they are; it goes to ``summary_name`` in the folder (None: not written). ``keep_results`` keeps each image's
    result in ``summary.results`` by input index (memory grows with the run: for scoring small sets)."""
    if explain:
        check_method(model.artifact, explain)
    display = display or model.map_display()
    save = save or SaveRule()
    summary = RunSummary(folder, settings={**(settings or {}), **model.run_settings(display), "explain": explain},
                         results={} if keep_results else None)
    if explain == "ig":
        summary.ig_steps = int(model.artifact.graph("ig").params.get("steps", 32))
    folder.mkdir(parents=True, exist_ok=True)
    writer = RecordWriter(folder, save, display, append, fps_of=getattr(source, "fps", lambda _: 0.0))
    stop = threading.Event()

    def interrupted():
        summary.stopped_by = summary.stopped_by or "interrupt"

    start = time.perf_counter()
    writer.start()
    batches = source.batches(model.batch_size, stop)
    try:
        with stop_on_interrupt(stop, interrupted):
            for batch in batches:
                scored = _score(model, batch, explain, summary, writer, progress)
                writer.jobs.put(scored)
                if progress is not None and len(batch) > scored.reported:
                    progress(len(batch) - scored.reported, summary, writer.jobs.qsize())
                if writer.failure is not None:
                    break
    finally:
        batches.close()
        writer.jobs.put(None)
        writer.join()
    summary.seconds = time.perf_counter() - start
    summary.stopped_by = summary.stopped_by or source.stopped_by
    stats = source.stats()
    summary.dropped, summary.decoded = stats.get("dropped", 0), stats.get("decoded", {})
    if writer.failure is not None:
        raise writer.failure
    writer.write_sheet()
    if summary_name:
        (folder / summary_name).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def _score(model, batch: list[Frame], explain: str | None, summary: RunSummary, writer: RecordWriter,
           progress: Progress | None) -> Scored:
    """Inference for the frames of a batch that have an image; counts every frame into the summary. ``progress``
    hears of each explained chunk (``reported`` says how many frames it heard of)."""
    scored = [frame for frame in batch if frame.scored]
    images = [frame.image for frame in scored]
    began = time.perf_counter()
    results = model.predict(images) if images else []
    reported = 0

    def tick(count: int) -> None:
        nonlocal reported
        reported += count
        if progress is not None:
            progress(count, summary, writer.jobs.qsize())

    seed = max(0, batch[0].index)  # SmoothGrad's noise: fixed by the input's position
    explanations = model.explain_arrays(images, explain, noise_seed=seed, progress=tick) if explain and images else []
    infer_ms = (time.perf_counter() - began) * 1000 / max(1, len(images))
    outcomes = dict(zip(map(id, scored), zip(results, explanations or [None] * len(results))))
    for frame in batch:
        summary.count(frame, *outcomes.get(id(frame), (None, None)))
    return Scored(batch, results, explanations, infer_ms, began, reported)
