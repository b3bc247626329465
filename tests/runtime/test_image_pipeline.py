"""The pipeline on image files as overlapped stages: decode threads ahead of the model, a writer thread behind it, records
in input order, and an interruption that keeps what was done and leaves the rest to ``--resume``."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import auditor_rt.runtime.image_file_source as source_module
import auditor_rt.runtime.record_writer as writer_module
from auditor_rt.runtime.auditor import Auditor
from auditor_rt.runtime.image_file_source import ImageFileSource
from auditor_rt.runtime.pipeline import run_pipeline
from auditor_rt.runtime.record_writer import SaveRule
from auditor_rt.runtime.sources import Item


def write_images(folder: Path, count: int, size: int = 48) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:04d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_decode_and_writing_overlap_inference(artifact_dir, tmp_path, monkeypatch):
    """With a slow disk (each overlay takes 40 ms to write), the model does not wait for it: the second batch is
    scored while the first one's overlays are still being written. Decoding runs on the decode threads."""
    paths = write_images(tmp_path / "in", 12)
    events: list[tuple[str, float]] = []
    decode_threads: set[str] = set()
    real_write, real_decode = writer_module.write_rgb, source_module._decode_chunk

    def slow_write(path, picture):
        time.sleep(0.04)
        real_write(path, picture)
        if Path(path).parent.name == "overlays":  # not the contact sheet, written at the end
            events.append(("written", time.perf_counter()))

    def traced_decode(*args, **kwargs):
        decode_threads.add(threading.current_thread().name)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(writer_module, "write_rgb", slow_write)
    monkeypatch.setattr(source_module, "_decode_chunk", traced_decode)
    with Auditor.load(artifact_dir, batch_size=4) as auditor:
        real_predict = auditor.predict

        def traced_predict(arrays):
            events.append(("scored", time.perf_counter()))
            return real_predict(arrays)

        auditor.predict = traced_predict
        summary = run_pipeline(auditor, ImageFileSource([Item(str(p)) for p in paths]), tmp_path / "run")
    assert summary.ok == 12 and summary.errors == 0
    scored = [t for kind, t in events if kind == "scored"]
    written = [t for kind, t in events if kind == "written"]
    assert len(scored) == 3 and len(written) == 12
    assert scored[1] < written[3], "the second batch waited for the first batch's overlays"
    assert decode_threads and all(name.startswith("decode") for name in decode_threads), decode_threads
    print(f"\noverlap: batch 2 scored {1000 * (written[3] - scored[1]):.0f} ms before batch 1 was written")


def test_records_keep_input_order_whatever_order_decoding_ends(artifact_dir, tmp_path, monkeypatch):
    """Four decode threads finish their chunks in random order; the records still follow the inputs, one per input,
    with the timings of each stage."""
    paths = write_images(tmp_path / "in", 18)
    items = [Item(str(p)) for p in paths]
    items.insert(5, Item(str(tmp_path / "missing.png"), "no such file or folder"))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    items.insert(11, Item(str(tmp_path / "broken.png")))
    real_decode = source_module._decode_chunk
    jitter = random.Random(1)

    def jittery_decode(*args, **kwargs):
        time.sleep(jitter.uniform(0, 0.02))
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(source_module, "_decode_chunk", jittery_decode)
    with Auditor.load(artifact_dir, batch_size=4) as auditor:
        summary = run_pipeline(auditor, ImageFileSource(items, workers=4), tmp_path / "run", SaveRule(overlays=False))
    rows = records(tmp_path / "run")
    assert [r["index"] for r in rows] == list(range(20))
    assert [r["source"] for r in rows] == [item.source for item in items]
    assert [r["status"] for r in rows].count("error") == 2 and rows[5]["status"] == rows[11]["status"] == "error"
    assert "broken.png" in rows[11]["error"]
    assert all(set(r["timings"]) == {"decode_ms", "queue_ms", "infer_ms", "draw_ms"} for r in rows
               if r["status"] == "ok")
    assert (summary.ok, summary.errors) == (18, 2)


def test_an_interrupted_run_keeps_valid_records_and_resume_finishes_it(artifact_dir, tmp_path):
    """Ctrl-C after the first batch: what was decoded is scored and written, the rest has no record; the run
    folder says so, and a resumed run does exactly the rest."""
    paths = write_images(tmp_path / "in", 40)
    items = [Item(str(p)) for p in paths]
    calls = []

    def interrupt_once(count, summary, depth):
        calls.append(count)
        if len(calls) == 1:
            raise KeyboardInterrupt

    with Auditor.load(artifact_dir, batch_size=4) as auditor:
        first = run_pipeline(auditor, ImageFileSource(items), tmp_path / "run", SaveRule(overlays=False),
                             progress=interrupt_once)
        rows = records(tmp_path / "run")
        assert first.stopped_by == "interrupt" and 4 <= len(rows) < 40 and first.ok == len(rows)
        assert [r["index"] for r in rows] == list(range(len(rows)))
        done = {r["source"] for r in rows}
        rest = [item for item in items if item.source not in done]
        second = run_pipeline(auditor, ImageFileSource(rest, start_index=len(rows)), tmp_path / "run",
                              SaveRule(overlays=False), append=True)
    rows = records(tmp_path / "run")
    assert second.stopped_by == "" and [r["index"] for r in rows] == list(range(40))
    assert sorted(r["source"] for r in rows) == sorted(item.source for item in items)


@pytest.mark.timeout(180)
def test_sigterm_stops_an_image_run_and_resume_does_the_rest(artifact_dir, tmp_path, python_exe):
    """The real CLI in its own process: SIGTERM mid-run exits 0 with valid JSONL and a summary that says it was
    interrupted; ``--resume`` then records every remaining image once."""
    write_images(tmp_path / "in", 600, size=32)
    command = [python_exe, "-c", "from auditor_rt.cli.main import cli; cli()", "infer", str(artifact_dir),
               str(tmp_path / "in"), "-o", str(tmp_path / "runs"), "--json", "--no-save-overlays", "--batch", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = tmp_path / "runs" / "run-001" / "results.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not results.exists() or results.stat().st_size < 500):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    kept = records(tmp_path / "runs" / "run-001")
    assert summary["stopped_by"] == "interrupt", "the run ended before SIGTERM came; give it more images"
    assert summary["ok"] == len(kept) < 600
    resumed = subprocess.run(command + ["--resume", str(tmp_path / "runs" / "run-001")], capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    rows = records(tmp_path / "runs" / "run-001")
    assert len(rows) == 600 and len({r["source"] for r in rows}) == 600
    assert [r["index"] for r in rows] == list(range(600))
    print(f"\nsigterm on images: {len(kept)} kept, {600 - len(kept)} done by --resume")


def test_only_positive_saves_overlays_of_risk_images_only(artifact_dir, tmp_path):
    paths = write_images(tmp_path / "in", 10)
    with Auditor.load(artifact_dir, batch_size=4) as auditor:
        auditor.threshold = float(np.median([r.score for r in auditor.audit_arrays(
            [cv2.imread(str(p))[..., ::-1].copy() for p in paths])]))  # about half are risk
        summary = run_pipeline(auditor, ImageFileSource([Item(str(p)) for p in paths]), tmp_path / "run",
                               SaveRule(only_positive=True))
    rows = records(tmp_path / "run")
    assert summary.ok == 10 and 0 < summary.positives < 10
    assert all(("overlay" in r) == (r["label"] == "risk") for r in rows)
    assert len(list((tmp_path / "run" / "overlays").iterdir())) == summary.positives
