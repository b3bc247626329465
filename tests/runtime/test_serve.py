"""``auditor-rt serve``, started for real as a subprocess on a free loopback port: parity with the local Auditor,
the exact queue bound, deadlines, limits, auth, the SIGTERM drain, startup failures and ``infer --server``."""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("uvicorn", reason="serve needs the serve extra: pip install '.[serve]'")

from auditor_rt.runtime.auditor import Auditor  # noqa: E402
from auditor_rt.runtime.serve.client import AuditClient  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, python: str, artifact: Path, *options: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([python, "-c", "from auditor_rt.cli.main import cli; cli()", "serve",
                                         str(artifact), "--port", str(self.port), *options],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited: {self.process.communicate()}")
            with contextlib.suppress(OSError):
                if request(self.url, "GET", "/readyz")[0] == 200:
                    return
            time.sleep(0.1)
        raise AssertionError("the server did not become ready")

    def stop(self) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            _, err = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return self.process.returncode, err


@contextlib.contextmanager
def running(python, artifact, *options):
    server = Server(python, artifact, *options)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def request(url: str, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
            headers: dict | None = None, timeout: float = 60) -> tuple[int, bytes, dict]:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        all_headers = {**({"Content-Type": content_type} if content_type else {}), **(headers or {})}
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def png_bytes(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


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
                 "--simulate-model-ms", "1500") as server:
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
            if "auditor_in_flight 1" in metrics and "auditor_queue_depth 0" in metrics:
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
    with running(python_exe, artifact_dir, "--max-batch", "1", "--simulate-model-ms", "1200",
                 "--timeout-ms", "400") as server:
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
    server = Server(python_exe, artifact_dir, "--max-batch", "1", "--simulate-model-ms", "700")
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
    with running(python_exe, artifact_dir, "--max-batch", "1", "--simulate-model-ms", "500",
                 "--max-wait-ms", "700") as server:
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
def test_a_classifier_artifact_is_refused_with_one_line(tmp_path):
    from click.testing import CliRunner

    from auditor_rt.cli.main import cli
    from auditor_rt.export.classifier_export import export_classifier_artifact

    folder = export_classifier_artifact("test_resnet", tmp_path / "clf", weights="random", num_classes=3,
                                        input_size=64, check=False).folder
    result = CliRunner().invoke(cli, ["serve", str(folder), "--port", str(free_port())])
    assert result.exit_code == 2 and "not supported yet: serve runs risk-head artifacts" in result.output
    assert "Traceback" not in result.output


# --- request line and header limits, with real sockets ------------------------------------------------------------

def raw_exchange(port: int, head: bytes, body: bytes = b"", timeout: float = 30) -> list[tuple[int, bytes]]:
    """Send bytes as they are (no client library trims or refuses them) and read every response until the server
    closes or goes quiet: [(status, body), ...]. The sending runs on its own thread, so that a server which answers
    and closes early is seen answering, not as a client stuck in sendall."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def send():
        with contextlib.suppress(OSError):
            sock.sendall(head + body)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received = b""
    with contextlib.suppress(socket.timeout, ConnectionResetError):
        sock.settimeout(timeout)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
            sock.settimeout(5)  # after the first bytes, a pause means the server has said all it will
    sock.close()
    return _responses(received)


def _framed(data: bytes):
    while data.startswith(b"HTTP/1.1 "):
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(next((line.split(b":")[1] for line in head.lower().split(b"\r\n")
                           if line.startswith(b"content-length:")), b"0"))
        yield length, rest[:length]
        data = rest[length:]


def _responses(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    for chunk_body in _framed(data):
        status = int(data[9:12])
        out.append((status, chunk_body[1]))
        head_len = data.index(b"\r\n\r\n") + 4
        data = data[head_len + chunk_body[0]:]
    return out


def get(path: str, headers: list[tuple[str, str]] = (), close: bool = True) -> bytes:
    """A GET request as bytes; ``close`` asks the server to close after answering, which ends ``raw_exchange``."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers]
    lines += ["Connection: close"] if close else []
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def test_oversized_urls_and_headers_are_refused_and_normal_ones_pass(artifact_dir, python_exe):
    with running(python_exe, artifact_dir) as server:
        port = server.port
        cases = {
            "url 500 KB": (get("/healthz?x=" + "a" * 500_000), 414),
            "url 9 KB": (get("/healthz?x=" + "a" * 9000), 414),
            "url 8 KB - 100": (get("/healthz?x=" + "a" * 8000), 200),
            "header 1 MB": (get("/healthz", [("X-Big", "v" * 1_000_000)]), 431),
            "header 33 KB": (get("/healthz", [("X-Big", "v" * 33_000)]), 431),
            "header 31 KB": (get("/healthz", [("X-Big", "v" * 31_000)]), 200),
            "3000 header lines": (get("/healthz", [(f"X-{i}", "v") for i in range(3000)]), 431),
            "101 header lines": (get("/healthz", [(f"X-{i}", "v") for i in range(99)]), 431),  # + Host, Connection
            "100 header lines": (get("/healthz", [(f"X-{i}", "v") for i in range(98)]), 200),
            "3 x 30 KB headers": (get("/healthz", [(f"X-{i}", "v" * 30_000) for i in range(3)]), 431),
            "2 x 30 KB headers": (get("/healthz", [(f"X-{i}", "v" * 30_000) for i in range(2)]), 200),
        }
        outcomes = {}
        for name, (head, expected) in cases.items():
            began = time.monotonic()
            responses = raw_exchange(port, head)
            outcomes[name] = (responses[0][0] if responses else None, expected, time.monotonic() - began)
        metrics = request(server.url, "GET", "/metrics")[1].decode()
        assert request(server.url, "GET", "/readyz")[0] == 200  # still serving after all that
    wrong = {name: got for name, (got, expected, _) in outcomes.items() if got != expected}
    assert not wrong, wrong
    assert all(seconds < 10 for _, _, seconds in outcomes.values()), outcomes
    assert 'auditor_rejections_total{reason="url_too_long"} 2' in metrics
    assert 'auditor_rejections_total{reason="headers_too_large"} 5' in metrics, [l for l in metrics.splitlines() if "reject" in l]


def test_a_large_body_is_not_counted_as_header_and_pipelining_still_works(artifact_dir, python_exe):
    """The head is read in budgeted slices; a 300 kB image that arrives with the head must not trip the limits,
    and two pipelined requests in one send get two answers in order."""
    image = png_bytes(np.random.default_rng(1).integers(0, 256, (320, 320, 3), dtype=np.uint8))
    assert len(image) > 200_000
    head = (f"POST /v1/audit?heatmap=none HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(image)}\r\n\r\n").encode()
    with running(python_exe, artifact_dir) as server:
        after_body = raw_exchange(server.port, head, image + get("/healthz"))
        three = raw_exchange(server.port, get("/healthz", close=False) + get("/readyz", close=False)
                             + get("/healthz"))
    [(status, payload), (second, _)] = after_body
    assert status == 200 and json.loads(payload)["results"][0]["index"] == 0 and second == 200
    assert [code for code, _ in three] == [200, 200, 200] and json.loads(three[1][1])["status"] == "ready"


# --- Content-Type sniffing -------------------------------------------------------------------------------------

def test_images_without_a_usable_content_type_are_sniffed(artifact_dir, python_exe):
    """curl --data-binary sends application/x-www-form-urlencoded; other clients send octet-stream or nothing."""
    from PIL import Image
    import io

    pixels = np.full((40, 50, 3), 120, np.uint8)
    gif = io.BytesIO()
    Image.fromarray(pixels).save(gif, "GIF")
    with running(python_exe, artifact_dir) as server:
        def post(body, kind):
            status, payload, _ = request(server.url, "POST", "/v1/audit?heatmap=none", body, kind)
            return status, json.loads(payload)

        for kind in (None, "application/octet-stream", "application/x-www-form-urlencoded"):
            status, payload = post(png_bytes(pixels), kind)
            assert status == 200 and payload["results"][0]["heatmap"] is None, (kind, payload)
        assert post(gif.getvalue(), None)[0] == 200
        assert post(gif.getvalue(), "image/gif")[0] == 200  # any image/* type goes to the decoder
        status, payload = post(b"name=value&other=1", "application/x-www-form-urlencoded")
        assert status == 415 and "not an image" in payload["error"] and "form-urlencoded" in payload["error"]
        status, payload = post(b"hello", None)
        assert status == 415 and "not an image" in payload["error"]
        status, payload = post(b"\x89PNG\r\n\x1a\n truncated", "application/octet-stream")
        assert status == 400 and "PNG" in payload["error"]  # an image by its bytes, but unreadable: 400 says so
        status, payload = post(b"hello", "text/plain")
        assert status == 415 and "text/plain" in payload["error"]


# --- startup: busy port, missing uvicorn ---------------------------------------------------------------------------

def test_a_busy_port_is_one_line_and_exit_2_before_serving(artifact_dir, python_exe):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        began = time.monotonic()
        process = subprocess.run([python_exe, "-c", "from auditor_rt.cli.main import cli; cli()", "serve",
                                  str(artifact_dir), "--port", str(port)], capture_output=True, text=True, timeout=60)
    lines = process.stderr.strip().splitlines()
    assert process.returncode == 2, process.stderr
    assert len(lines) == 1 and f"port {port} on 127.0.0.1 is in use" in lines[0], lines
    assert "serving" not in process.stderr and "Traceback" not in process.stderr
    print(f"\nbusy port refused in {time.monotonic() - began:.2f} s: {lines[0]}")


def test_missing_uvicorn_is_said_before_the_model_is_loaded(tmp_path, python_exe):
    """A nonexistent artifact: if the model were loaded first, the error would be about the folder."""
    script = ("import sys; sys.modules['uvicorn'] = None\n"
              "from auditor_rt.cli.main import cli; cli()\n")
    process = subprocess.run([python_exe, "-c", script, "serve", str(tmp_path / "no-such-artifact")],
                             capture_output=True, text=True, timeout=60)
    assert process.returncode == 2, process.stderr
    assert "uvicorn" in process.stderr and "pip install -e '.[serve]'" in process.stderr
    assert "auditor-rt[serve]" not in process.stderr and "no such artifact" not in process.stderr
    assert len(process.stderr.strip().splitlines()) == 1


class _Transport:
    """Just enough of an asyncio transport for uvicorn's protocol: what was written, and whether it was closed."""

    def __init__(self):
        self.written, self.closed = b"", False

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data):
        self.written += data

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


@pytest.mark.parametrize("name, head", [
    ("1 MB header", get("/healthz", [("X-Big", "v" * 1_000_000)])),
    ("500 KB URL", get("/healthz?x=" + "a" * 500_000)),
    ("3000 header lines", get("/healthz", [(f"X-{i}", "v") for i in range(3000)])),
])
def test_the_protocol_refuses_before_buffering_more_than_the_head_budget(name, head):
    """httptools would buffer all of it; the limited protocol feeds the parser at most the head's budget, then
    answers and closes without the app ever being called."""
    import asyncio

    import uvicorn
    from uvicorn.server import ServerState

    from auditor_rt.runtime.serve.limits import RequestLimits, limited_httptools_protocol

    called, refused = [], []

    async def app(scope, receive, send):
        called.append(scope)

    limits = RequestLimits()
    protocol_class = limited_httptools_protocol(limits, refused.append)
    loop = asyncio.new_event_loop()
    try:
        config = uvicorn.Config(app, http=protocol_class, lifespan="off", log_level="warning")
        protocol = protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop)
        transport = _Transport()
        protocol.connection_made(transport)
        fed = []
        parser = protocol.parser

        class Counting:
            def __getattr__(self, attribute):
                return getattr(parser, attribute)

            def feed_data(self, data):
                fed.append(len(data))
                return parser.feed_data(data)

        protocol.parser = Counting()
        for start in range(0, len(head), 65536):
            if transport.closed:
                break
            protocol.data_received(head[start:start + 65536])
    finally:
        loop.close()
    assert transport.closed and transport.written.split(b" ")[1] in (b"414", b"431"), transport.written[:80]
    assert sum(fed) <= limits.head, (name, sum(fed))
    assert called == [] and len(refused) == 1
