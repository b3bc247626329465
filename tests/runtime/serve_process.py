"""A real ``auditor-rt serve`` subprocess on a free loopback port, and a plain HTTP client, for the serve tests."""

from __future__ import annotations

import contextlib
import http.client
import signal
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import cv2
import numpy as np


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SLOW_SERVE = Path(__file__).with_name("slow_serve.py")


class Server:
    """``auditor-rt serve ARTIFACT *options``; with ``model_delay_ms``, its model is the slow fake one of
    ``slow_serve.py``."""

    def __init__(self, python: str, artifact: Path, *options: str, model_delay_ms: float | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        program = (["-c", "from auditor_rt.cli.main import cli; cli()"] if model_delay_ms is None
                   else [str(SLOW_SERVE), str(model_delay_ms)])
        self.process = subprocess.Popen([python, *program, "serve", str(artifact), "--port", str(self.port), *options],
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
def running(python, artifact, *options, model_delay_ms=None):
    server = Server(python, artifact, *options, model_delay_ms=model_delay_ms)
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


def decoder_pids(server_pid: int) -> list[int]:
    """The server's decoder processes (children running auditor_rt.runtime.decoder_worker), from /proc."""
    found = []
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"decoder_worker" in command:
                found.append(int(child))
    return found
