"""serve against files that crash, flood or hang a decoder, and decoders killed on purpose: each costs one 4xx
(422 crash, 413 too costly, 415 format not accepted), the server stays up, and the requests beside it succeed."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("uvicorn", reason="serve needs the serve extra: pip install '.[serve]'")

from hostile_images import CRASHING_APNG, OS2_BMP, memory_hungry_png, slow_png  # noqa: E402
from serve_process import decoder_pids, png_bytes, request, running  # noqa: E402

GOOD = png_bytes(np.full((40, 40, 3), 120, np.uint8))


def post(server, body, kind="image/png"):
    status, payload, _ = request(server.url, "POST", "/v1/audit?heatmap=none", body, kind)
    return status, json.loads(payload)


def _cpu_s(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _crashed_or_hung(status: int, payload: dict) -> bool:
    """The mutated APNG sends OpenCV's PNG reader through a longjmp into a frame that has returned: what happens
    then depends on the stack's contents (the environment's size moves it). Seen here: SIGSEGV, SIGABRT, and a
    hang with no CPU use. A crash is a 422 naming it, and so is a hang (asleep with no CPU use while decoding);
    a slow hang that still uses CPU would stop at the deadline, a 413."""
    error = payload["error"]
    if status == 422:
        return ("decoder crashed" in error and "killed by SIG" in error) or "decoder hung" in error
    return status == 413 and "deadline" in error


def test_crash_memory_and_deadline_each_cost_one_answer(artifact_dir, python_exe):
    crash, slow = CRASHING_APNG.read_bytes(), slow_png(12000)  # 144 megapixels: about 1.5 s to decode
    with running(python_exe, artifact_dir, "--formats", "png,apng,jpeg", "--max-pixels", "200000000",
                 "--decode-timeout-ms", "400", "--decode-workers", "2") as server:
        assert post(server, GOOD)[0] == 200
        status, payload = post(server, crash)
        assert _crashed_or_hung(status, payload), payload
        assert post(server, GOOD)[0] == 200
        status, payload = post(server, memory_hungry_png())
        assert status == 413 and "too costly to decode" in payload["error"] and "memory" in payload["error"]
        status, payload = post(server, slow)
        assert status == 413 and "deadline of 0.4 s" in payload["error"]
        # crashes in flight beside good requests: only the crashing ones fail
        bodies = [crash if i % 4 == 0 else GOOD for i in range(16)]
        with ThreadPoolExecutor(8) as clients:
            statuses = list(clients.map(lambda body: post(server, body)[0], bodies))
        assert [status for i, status in enumerate(statuses) if i % 4] == [200] * 12
        assert all(status in (422, 413) for status in statuses[::4])
        metrics = request(server.url, "GET", "/metrics")[1].decode()
        assert server.process.poll() is None
    for reason in ("decoder_crash", "too_costly"):
        assert f'reason="{reason}"' in metrics


def test_default_formats_and_a_decoder_killed_mid_request(artifact_dir, python_exe):
    slow_body = slow_png(12000)  # 144 megapixels: about 1.5 s to decode, so the kill lands mid-decode
    with running(python_exe, artifact_dir, "--max-pixels", "200000000", "--decode-workers", "2") as server:
        status, payload = post(server, OS2_BMP.read_bytes(), "application/octet-stream")
        assert status == 200 and payload["results"][0]["image_size"] == [49, 2], payload
        status, payload = post(server, CRASHING_APNG.read_bytes())  # APNG is not in the default --formats
        assert status == 415 and "APNG" in payload["error"] and "--formats" in payload["error"]
        status, payload = post(server, b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(40), "image/jp2")
        assert status == 415 and "JPEG 2000" in payload["error"]
        answers = {}
        slow = threading.Thread(target=lambda: answers.update(slow=post(server, slow_body)))
        baseline = {pid: _cpu_s(pid) for pid in decoder_pids(server.process.pid)}
        slow.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until one decoder has spent 0.2 s on the 1.5 s decode: kill it
            busy = [pid for pid, spent in baseline.items() if _cpu_s(pid) - spent >= 0.2]
            if busy:
                os.kill(busy[0], signal.SIGKILL)
                break
            time.sleep(0.01)
        slow.join(30)
        status, payload = answers["slow"]
        assert status == 422 and "killed by SIGKILL" in payload["error"], payload
        assert [post(server, GOOD)[0] for _ in range(4)] == [200] * 4  # fresh decoders took their place
        assert len(decoder_pids(server.process.pid)) == 2
        assert server.process.poll() is None
