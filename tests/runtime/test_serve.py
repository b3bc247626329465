"""``auditor-rt serve``, started for real as a subprocess on a free loopback port: parity with the local Auditor,
the exact queue bound, deadlines, limits, auth, the SIGTERM drain, startup failures and ``infer --server``."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("uvicorn", reason="serve needs the serve extra: pip install '.[serve]'")

from auditor_rt.runtime.auditor import Auditor  # noqa: E402
from auditor_rt.runtime.serve.client import AuditClient  # noqa: E402


from serve_process import Server, free_port, png_bytes, request, running  # noqa: E402


def test_served_scores_and_heatmaps_equal_the_local_auditor(artifact_dir, python_exe):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((96, 96), (120, 80), (64, 200))]
    with Auditor.load(artifact_dir, batch_size=4) as auditor:
        local = auditor.audit_arrays(images)
    with running(python_exe, artifact_dir, "--max-batch", "4") as server:
        served = AuditClient(server.url).audit(images)
        status, body, _ = request(server.url, "POST", "/v1/audit?heatmap=png&size=32x16", png_bytes(images[1]),
                                  "image/png")
    assert len(served) == 3
    for mine, theirs in zip(local, served):
        assert abs(mine.score - theirs.score) < 1e-6 and mine.label == theirs.label
        assert theirs.heatmap.shape == mine.heatmap.shape
        np.testing.assert_allclose(theirs.heatmap, mine.heatmap, atol=1e-5)
        np.testing.assert_allclose(theirs.risk_map, mine.risk_map, atol=1e-5)
        assert [r.to_dict() for r in theirs.regions] == [r.to_dict() for r in mine.regions]
    item = json.loads(body)["results"][0]
    assert status == 200 and item["heatmap"]["size"] == [32, 16] and item["heatmap"]["format"] == "png"
    assert set(item["timings"]) == {"decode_ms", "queue_ms", "infer_ms", "encode_ms", "total_ms"}


def test_the_queue_bound_is_exact(artifact_dir, python_exe):
    """The model is held busy by one request; with a queue of Q = 3, Q + 2 more requests give exactly 2 immediate
    503s with Retry-After, and the 3 queued ones are served."""
    queue = 3
    with running(python_exe, artifact_dir, "--max-batch", "1", "--max-queue", str(queue),
                 model_delay_ms=1500) as server:
        image = png_bytes(np.full((96, 96, 3), 90, np.uint8))
        results: list[tuple[int, dict]] = []

        def send():
            status, _, headers = request(server.url, "POST", "/v1/audit?heatmap=none", image, "image/png")
            results.append((status, headers))

        first = threading.Thread(target=send)
        first.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until the model has taken the first request
            metrics = request(server.url, "GET", "/metrics")[1].decode()
            if "auditor_model_images 1" in metrics:
                break
            time.sleep(0.02)
        others = [threading.Thread(target=send) for _ in range(queue + 2)]
        for thread in others:
            thread.start()
        for thread in [first, *others]:
            thread.join(60)
        metrics = request(server.url, "GET", "/metrics")[1].decode()
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * (queue + 1) + [503] * 2, statuses
    assert all(headers.get("retry-after") == "1" for status, headers in results if status == 503)
    assert 'auditor_rejections_total{reason="queue_full"} 2' in metrics
    print(f"\nqueue bound: {queue + 3} requests, {statuses.count(503)} rejected with 503")


def test_a_request_that_waits_past_its_deadline_gets_504_and_is_not_run(artifact_dir, python_exe):
    with running(python_exe, artifact_dir, "--max-batch", "1", "--timeout-ms", "400",
                 model_delay_ms=1200) as server:
        image = png_bytes(np.full((96, 96, 3), 10, np.uint8))
        statuses = []
        threads = [threading.Thread(target=lambda: statuses.append(
            request(server.url, "POST", "/v1/audit", image, "image/png")[0])) for _ in range(2)]
        for thread in threads:
            thread.start()
            time.sleep(0.1)
        for thread in threads:
            thread.join(30)
        time.sleep(1.5)  # the model thread reaches the expired job and drops it
        metrics = request(server.url, "GET", "/metrics")[1].decode()
    assert sorted(statuses) == [200, 504], statuses
    assert "auditor_batch_size_count 1" in metrics  # the expired request never reached the model


def test_limits_auth_and_errors_never_reach_the_model(artifact_dir, python_exe, bomb_png):
    auth = {"Authorization": "Bearer s3cret"}
    with running(python_exe, artifact_dir, "--max-body-mb", "0.05", "--max-pixels", "1000000",
                 "--token", "s3cret") as server:
        ok = png_bytes(np.full((40, 40, 3), 200, np.uint8))

        def post(body, kind, headers=auth, path="/v1/audit"):
            status, payload, headers_out = request(server.url, "POST", path, body, kind, headers)
            return status, json.loads(payload), headers_out

        assert post(ok, "image/png")[0] == 200
        status, payload, headers = post(ok, "image/png", headers={})
        assert status == 401 and headers.get("www-authenticate") == "Bearer"
        assert post(ok, "image/png", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert post(b"x" * 100_000, "image/png")[0] == 413  # 100 kB over the 50 kB limit
        status, payload, _ = post(b"hello", "text/plain")
        assert status == 415 and "text/plain" in payload["error"]
        status, payload, _ = post(b"\xff\xd8\xff\xe0 not a jpeg", "image/jpeg")
        assert status == 400 and "image 0" in payload["error"]
        status, payload, _ = post(bomb_png, "image/png")
        assert status == 413 and "pixels" in payload["error"]
        assert post(ok, "image/png", path="/v1/audit?heatmap=gif")[0] == 400
        assert request(server.url, "GET", "/v1/audit", headers=auth)[0] == 405
        assert request(server.url, "GET", "/nowhere")[0] == 404
        assert request(server.url, "GET", "/healthz")[0] == 200  # probes need no token
        metrics = request(server.url, "GET", "/metrics")[1].decode()
    assert "auditor_batch_size_count 1" in metrics  # only the one good request reached the model
    for reason in ("unauthorized", "body_too_large", "unsupported_type", "bad_image", "too_many_pixels"):
        assert f'reason="{reason}"' in metrics


def test_multipart_several_images_and_heatmap_by_reference(artifact_dir, python_exe):
    boundary = "b0undary"
    images = [png_bytes(np.full((50, 60, 3), v, np.uint8)) for v in (20, 200)]
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{i}.png\"\r\n"
                    f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n" for i, data in enumerate(images))
    body += f"--{boundary}--\r\n".encode()
    with running(python_exe, artifact_dir) as server:
        status, payload, _ = request(server.url, "POST", "/v1/audit?heatmap=ref", body,
                                     f"multipart/form-data; boundary={boundary}")
        results = json.loads(payload)["results"]
        status_png, png, headers = request(server.url, "GET", results[1]["heatmap"]["url"])
        info = json.loads(request(server.url, "GET", "/v1/info")[1])
    assert status == 200 and [r["index"] for r in results] == [0, 1]
    assert status_png == 200 and headers["content-type"] == "image/png"
    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED).shape == (50, 60)
    assert info["limits"]["max_batch"] == 8 and info["providers"] == ["CPUExecutionProvider"]
    assert str(artifact_dir) not in json.dumps(info) and "checkpoint" not in json.dumps(info)


def test_sigterm_drains_the_requests_in_flight_and_exits_0(artifact_dir, python_exe):
    server = Server(python_exe, artifact_dir, "--max-batch", "1", model_delay_ms=700)
    try:
        server.wait_ready()
        image = png_bytes(np.full((96, 96, 3), 128, np.uint8))
        statuses = []
        threads = [threading.Thread(target=lambda: statuses.append(
            request(server.url, "POST", "/v1/audit?heatmap=none", image, "image/png")[0])) for _ in range(3)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while "auditor_in_flight 3" not in request(server.url, "GET", "/metrics")[1].decode():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        ready = request(server.url, "GET", "/readyz")
        late = request(server.url, "POST", "/v1/audit", image, "image/png")[0]
        for thread in threads:
            thread.join(30)
        code, err = server.stop()
    finally:
        if server.process.poll() is None:
            server.process.kill()
    assert ready[0] == 503 and json.loads(ready[1])["status"] == "draining"
    assert late == 503
    assert statuses == [200, 200, 200], statuses  # nothing in flight was lost
    assert code == 0, err
    print(f"\nSIGTERM drain: 3 requests in flight finished, readiness 503 at once, exit {code}")


def test_startup_fails_cleanly_on_a_changed_graph(artifact_dir, tmp_path, python_exe):
    folder = tmp_path / "artifact"
    shutil.copytree(artifact_dir, folder)
    with open(folder / "audit.onnx", "ab") as handle:
        handle.write(b"\0")
    process = subprocess.run([python_exe, "-c", "from auditor_rt.cli.main import cli; cli()", "serve", str(folder),
                              "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert process.returncode == 2 and "SHA-256" in process.stderr and "Traceback" not in process.stderr


def test_infer_sends_frames_to_a_running_server(artifact_dir, python_exe, tmp_path):
    from click.testing import CliRunner

    from auditor_rt.cli.main import cli

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(5):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (70, 90, 3), dtype=np.uint8))
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    with Auditor.load(artifact_dir) as auditor:
        local = {p.name: auditor([str(p)])[0].score for p in sorted(folder.glob("[0-9].png"))}
    with running(python_exe, artifact_dir) as server:
        result = CliRunner().invoke(cli, ["infer", "--server", server.url, str(folder), "-o", str(tmp_path / "runs"),
                                          "--no-save-overlays"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "runs" / "run-001" / "results.jsonl").read_text().splitlines()]
    scores = {Path(r["source"]).name: r["score"] for r in rows if r["status"] == "ok"}
    assert scores.keys() == local.keys() and all(abs(scores[k] - local[k]) < 1e-5 for k in local)
    assert [r["status"] for r in rows].count("error") == 1


def test_explain_adds_the_attribution_map_of_the_local_auditor(explain_artifact_dir, python_exe):
    image = np.random.default_rng(5).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    with Auditor.load(explain_artifact_dir) as auditor:
        local = auditor.explain_arrays([image], "gradcam")[0]
    with running(python_exe, explain_artifact_dir) as server:
        status, payload, _ = request(server.url, "POST", "/v1/audit?explain=gradcam&heatmap=npy", png_bytes(image),
                                     "image/png")
        missing = request(server.url, "POST", "/v1/audit?explain=nosuch", png_bytes(image), "image/png")
    from auditor_rt.runtime.serve.client import decode_map

    explained = json.loads(payload)["results"][0]["explain"]
    assert status == 200 and explained["method"] == "gradcam"
    np.testing.assert_allclose(decode_map(explained["map"]), local.map, atol=1e-5)
    assert missing[0] == 400 and b"gradcam" in missing[1]


def test_max_wait_refuses_what_would_wait_too_long(artifact_dir, python_exe):
    """--max-wait-ms: with the model measured at 2 images/s (500 ms a call), a request that would wait behind a call
    under way (about 1 s to its answer) is refused at once; one that finds the model idle (0.5 s) is served."""
    with running(python_exe, artifact_dir, "--max-batch", "1", "--max-wait-ms", "700",
                 model_delay_ms=500) as server:
        image = png_bytes(np.full((96, 96, 3), 60, np.uint8))

        def post():
            return request(server.url, "POST", "/v1/audit?heatmap=none", image, "image/png")[0]

        assert post() == 200  # measures the throughput
        busy = threading.Thread(target=post)
        busy.start()
        deadline = time.monotonic() + 10
        while "auditor_in_flight 1" not in request(server.url, "GET", "/metrics")[1].decode():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.05)  # the model has taken it
        refused = post()
        busy.join(30)
        assert refused == 503
        assert post() == 200  # idle again


@pytest.mark.filterwarnings("ignore:classifier 'test_resnet' has RANDOM weights")
def test_a_classifier_artifact_is_refused_with_one_line(classifier_artifact_dir):
    from click.testing import CliRunner

    from auditor_rt.cli.main import cli

    folder = classifier_artifact_dir
    result = CliRunner().invoke(cli, ["serve", str(folder), "--port", str(free_port())])
    assert result.exit_code == 2 and "serve runs risk-head artifacts" in result.output
    assert "Traceback" not in result.output
