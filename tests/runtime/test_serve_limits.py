"""``auditor-rt serve`` at its edges, started for real: request-line and header limits with raw sockets, image
types sniffed from their bytes, a busy port and a missing uvicorn."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

pytest.importorskip("uvicorn", reason="serve needs the serve extra: pip install '.[serve]'")

from serve_process import png_bytes, request, running  # noqa: E402
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
