"""``infer`` survives files that crash, flood or hang an image decoder: each costs its own error record, and every
other input of the run is still audited (the decoding runs in decoder processes, ``runtime/decoder_pool.py``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from hostile_images import CRASHING_APNG, OS2_BMP, memory_hungry_png, slow_png  # noqa: E402

from auditor_rt.runtime import image_file_source as source_module  # noqa: E402
from auditor_rt.runtime.auditor import Auditor  # noqa: E402
from auditor_rt.runtime.decoder_pool import DecoderPool  # noqa: E402
from auditor_rt.runtime.decoder_protocol import read_control  # noqa: E402
from auditor_rt.runtime.pipeline import run_pipeline  # noqa: E402
from auditor_rt.runtime.record_writer import SaveRule  # noqa: E402
from auditor_rt.runtime.sources import expand_sources  # noqa: E402


@pytest.fixture
def good_images(tmp_path, demo_data) -> list[Path]:
    folder = tmp_path / "images"
    folder.mkdir()
    for path in sorted((Path(demo_data.root) / "images" / "test").glob("*.jpg"))[:5]:
        shutil.copy(path, folder / path.name)
    return sorted(folder.iterdir())


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


def run_infer(python_exe, artifact_dir, tmp_path, *sources, options=()):
    out = tmp_path / "runs"
    process = subprocess.run([python_exe, "-c", "from auditor_rt.cli.main import cli; cli()", "infer",
                              str(artifact_dir), *map(str, sources), "-o", str(out), "--name", "run", *options],
                             capture_output=True, text=True, timeout=300)
    return process, out / "run"


def test_a_file_that_crashes_the_decoder_costs_one_record(python_exe, artifact_dir, tmp_path, good_images):
    crash = tmp_path / "images" / "c-crash.png"
    shutil.copy(CRASHING_APNG, crash)
    shutil.copy(OS2_BMP, tmp_path / "images" / "os2.bmp")  # valid: once refused by a misread header
    process, run = run_infer(python_exe, artifact_dir, tmp_path, good_images[0].parent,
                             options=("--decode-timeout", "3"))
    assert process.returncode == 0, process.stderr  # it was 139 (SIGSEGV) with 0 records
    found = {Path(r["source"]).name: r for r in records(run)}
    assert len(found) == 7 and sum(r["status"] == "ok" for r in found.values()) == 6
    assert found["os2.bmp"]["status"] == "ok" and found["os2.bmp"]["image_size"] == [49, 2]
    # a crash (SIGSEGV or SIGABRT) or a hang, by the stack's contents (undefined behaviour in the codec)
    error = found["c-crash.png"]["error"]
    assert ("decoder crashed" in error and "killed by SIG" in error) or "decoder hung" in error \
        or "deadline of 3 s" in error, error
    assert "Traceback" not in process.stderr


def test_memory_and_deadline_each_have_their_own_record(python_exe, artifact_dir, tmp_path, good_images):
    hungry, slow = tmp_path / "hungry.png", tmp_path / "slow.png"
    hungry.write_bytes(memory_hungry_png())
    slow.write_bytes(slow_png())
    process, run = run_infer(python_exe, artifact_dir, tmp_path, good_images[0], hungry, slow, good_images[1],
                             options=("--decode-timeout", "0.2"))
    assert process.returncode == 0, process.stderr
    found = records(run)
    assert [r["status"] for r in found] == ["ok", "error", "error", "ok"]
    assert "too costly to decode" in found[1]["error"] and "memory" in found[1]["error"]
    assert "too costly to decode" in found[2]["error"] and "deadline of 0.2 s" in found[2]["error"]


class KillingPool(DecoderPool):
    """Kills the decoder process with a real SIGKILL once it is decoding a file named kill-me* (its control block
    says so), whatever the machine's load."""

    def _run(self, process, items):
        names = [name for _, _, name in items]  # (request item, bytes, name)
        victim = next((position for position, name in enumerate(names) if "kill-me" in name), None)
        if victim is not None:
            threading.Thread(target=self._kill_when_decoding, args=(process, victim + 1), daemon=True).start()
        return super()._run(process, items)

    @staticmethod
    def _kill_when_decoding(process, count):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.shared is not None:
            started, _, decoding = read_control(process.shared)
            if started == count and decoding:
                time.sleep(0.05)
                os.kill(process.pid, signal.SIGKILL)
                return
            time.sleep(0.005)


def test_a_decoder_killed_by_a_signal_mid_run(artifact_dir, tmp_path, good_images, monkeypatch):
    victim = tmp_path / "kill-me.png"
    victim.write_bytes(slow_png())
    monkeypatch.setattr(source_module, "DecoderPool", KillingPool)
    items = expand_sources([str(good_images[0]), str(victim), *map(str, good_images[1:])])
    with Auditor.load(artifact_dir, batch_size=2) as auditor:
        summary = run_pipeline(auditor, source_module.ImageFileSource(items), tmp_path / "run",
                               SaveRule(overlays=False))
    assert (summary.ok, summary.errors) == (5, 1)
    assert "killed by SIGKILL" in summary.error_messages[0] and "kill-me.png" in summary.error_messages[0]
    assert [r["index"] for r in records(tmp_path / "run")] == list(range(6))
