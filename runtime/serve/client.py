"""A client of ``auditor-rt serve`` that gives the same ``AuditResult`` objects as a local ``Auditor`` (standard
library HTTP, no extra dependency). ``RemoteAuditor`` lets ``infer --server URL`` run its pipeline against it."""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Iterable, Sequence

import cv2
import numpy as np

from auditor_rt.runtime.errors import AuditorError, ConfigError
from auditor_rt.runtime.imageio import ImageSource, decode_all
from auditor_rt.runtime.pictures import MapDisplay
from auditor_rt.runtime.regions import Region
from auditor_rt.runtime.results import AuditResult


class ServerError(AuditorError):
    """The server refused a request or could not be reached; the message has its status and reason."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class AuditClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0, retries: int = 3):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--server {url}: give the service's URL, e.g. http://127.0.0.1:8000")
        self.url, self.token, self.timeout, self.retries = url.rstrip("/"), token, timeout, retries

    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> bytes:
        """One request; a 503 (queue full, draining) is retried after its Retry-After, up to ``retries`` times."""
        headers = {"Content-Type": content_type} if content_type else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return response.read()
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")
                try:
                    detail = json.loads(detail).get("error", detail)
                except json.JSONDecodeError:
                    pass
                if exc.code == 503 and attempt < self.retries:
                    time.sleep(float(exc.headers.get("Retry-After", "1") or 1))
                    continue
                raise ServerError(f"{self.url}{path}: {exc.code} {detail}", exc.code) from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ServerError(f"{self.url}: cannot reach the server ({reason}); is `auditor-rt serve` "
                                  "running there?") from None
        raise AssertionError("unreachable")

    def info(self) -> dict:
        return json.loads(self._request("GET", "/v1/info"))

    def audit(self, images: ImageSource | Sequence[ImageSource], explain: str | None = None) -> list[AuditResult]:
        """Audit paths, encoded buffers or RGB arrays; heatmaps come back exact (float32) at each image's size."""
        return self.audit_arrays(decode_all(images), explain)

    def audit_arrays(self, images: Iterable[np.ndarray], explain: str | None = None) -> list[AuditResult]:
        images = list(images)
        if not images:
            return []
        boundary = uuid.uuid4().hex
        parts = []
        for index, image in enumerate(images):
            png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()  # lossless
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{index}.png"\r\n'
                         f"Content-Type: image/png\r\n\r\n".encode() + png + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        params = {"heatmap": "npy", **({"explain": explain} if explain else {})}
        answer = json.loads(self._request("POST", "/v1/audit?" + urllib.parse.urlencode(params), body,
                                          f"multipart/form-data; boundary={boundary}"))
        return [to_result(item) for item in answer["results"]]


def decode_map(document: dict | None) -> np.ndarray | None:
    """A map as the server encoded it: npy exactly, png as 8-bit levels (signed ones back to [-scale, scale])."""
    if document is None:
        return None
    data = base64.b64decode(document["data"])
    if document["format"] == "npy":
        return np.load(io.BytesIO(data))
    levels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
    return (levels * 2 - 1) * document["scale"] if "scale" in document else levels


def to_result(item: dict) -> AuditResult:
    return AuditResult(score=item["score"], logit=item["logit"], label=item["label"] == "risk",
                       threshold=item["threshold"], risk_map=np.asarray(item["risk_map"], np.float32),
                       heatmap=decode_map(item.get("heatmap")),
                       regions=[Region(**region) for region in item.get("regions", [])],
                       image_size=tuple(item.get("image_size", (0, 0))))


class RemoteAuditor:
    """The model protocol of ``runtime/auditor.py`` (``predict``), served by a running ``auditor-rt serve``: lets
    ``infer --server URL`` run its pipeline against it."""

    heatmaps = True

    def __init__(self, client: AuditClient, batch_size: int = 8):
        self.client, self.batch_size = client, batch_size
        self.info = client.info()  # fails early, with a clear message, when the server is not there
        self.threshold = (self.info.get("decision") or {}).get("threshold")

    def predict(self, images) -> list[AuditResult]:
        return self.client.audit_arrays(images)

    def map_display(self, **options) -> MapDisplay:
        """The server's heatmaps, on the per-image scale: there is no local artifact to take a scale from."""
        return MapDisplay(**options)

    def run_settings(self, display: MapDisplay) -> dict:
        return {"threshold": self.threshold, "heatmap_scale": display.heatmap_mode}

    def set_threshold(self, threshold: float) -> None:
        raise ConfigError("--threshold sets a local model's decision; with --server the server's threshold decides")

    def __enter__(self) -> "RemoteAuditor":
        return self

    def __exit__(self, *exc_info) -> None:
        return None
