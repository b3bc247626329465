"""The audit service as a plain ASGI app (no framework: a handful of routes, and the least work per request).

Routes: ``POST /v1/audit`` (raw image bytes or multipart with several images), ``GET /v1/heatmaps/{id}``,
``GET /v1/info``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``. Decoding, resizing and encoding run on a
thread pool, the model on the batcher's one thread, and the event loop only moves bytes.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hmac
import io
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from auditor_rt.runtime.auditor import RiskAuditor
from auditor_rt.runtime.decoder_pool import DecoderPool
from auditor_rt.runtime.errors import (DecodeTooCostlyError, DecoderCrashError, FormatNotAcceptedError,
                                       ImageDecodeError, ImageTooLargeError, NotSupportedError)
from auditor_rt.runtime.explain import attribution_methods
from auditor_rt.runtime.image_formats import SERVE_DEFAULT, check_accepted
from auditor_rt.runtime.imageio import resize_map
from auditor_rt.runtime.serve.batcher import DeadlineExceeded, DynamicBatcher, Overloaded
from auditor_rt.runtime.serve.http import (IMAGE_TYPES, SNIFFED_TYPES, HttpError, check_declared_length, header,
                                           is_image_type, media_type, multipart_images, query, read_body, respond,
                                           respond_json)
from auditor_rt.runtime.serve.limits import RequestLimits
from auditor_rt.runtime.serve.metrics import CONTENT_TYPE as METRICS_TYPE, Metrics

HEATMAP_FORMATS = ("png", "npy", "none", "ref")
ROUTES = ("/v1/audit", "/v1/info", "/healthz", "/readyz", "/metrics")  # metric labels: these, heatmaps, "other"
STORED_HEATMAPS = 512  # PNGs kept for GET /v1/heatmaps/{id}, oldest dropped first


@dataclass
class ServeSettings:
    max_batch: int = 8
    max_delay_ms: float = 5.0
    max_queue: int = 64
    timeout_ms: float = 10_000.0
    max_body_mb: float = 20.0
    max_pixels: int = 40_000_000
    token: str | None = None
    grace_s: float = 30.0
    decode_workers: int = 4
    decode_timeout_ms: float = 5_000.0  # a decode past this is killed: 413 "too costly to decode"
    formats: tuple = SERVE_DEFAULT  # accepted image formats, told by their bytes (image_formats.FORMATS)
    max_wait_ms: float | None = None  # refuse (503) a request expected to wait longer than this for the model

    def limits(self) -> dict:
        shown = asdict(self)
        shown.pop("token")
        return {**shown, "auth": bool(self.token)}


class AuditApp:
    def __init__(self, auditor: RiskAuditor, settings: ServeSettings):
        if not isinstance(auditor, RiskAuditor):
            raise NotSupportedError("serve runs risk-head artifacts; serving a plain classifier (classes instead "
                                    "of a risk score) is not supported by this version")
        self.auditor, self.settings = auditor, settings
        self.metrics = Metrics()
        self.pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="decode")
        # Decoding happens in processes of their own: a file that crashes or hangs a codec costs one 422 or 413,
        # not the server. They return the image at the model's size only, and the original size.
        self.decoder = DecoderPool(settings.decode_workers, max_pixels=settings.max_pixels,
                                   deadline_s=settings.decode_timeout_ms / 1000, full_images=False,
                                   resize=tuple(auditor.input_size))
        self.batcher = DynamicBatcher(auditor.run_batch, self._explain, settings.max_batch,
                                      settings.max_delay_ms / 1000, settings.max_queue, self.metrics,
                                      None if settings.max_wait_ms is None else settings.max_wait_ms / 1000)
        self.methods = attribution_methods(auditor.artifact)
        self.heatmaps: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self.request_limits = RequestLimits()
        self.ready = False
        self.draining = False

    # ---- lifecycle ---------------------------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """One full batch through the model before /readyz says ready (ORT allocates and tunes on first runs), and
        every decoder process started and answering."""
        size = self.auditor.input_size
        self.auditor.run_batch(np.zeros((self.settings.max_batch, *size, 3), np.uint8))
        self.auditor.run_batch(np.zeros((1, *size, 3), np.uint8))
        self.decoder.warm_up()
        self.ready = True

    def start_draining(self) -> None:
        """SIGTERM: not ready from now on, and new audits are refused; the ones in flight finish."""
        self.draining = True

    def close(self) -> None:
        self.batcher.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.decoder.close()

    def _explain(self, images: np.ndarray, method: str) -> list:
        return self.auditor.explain_arrays(list(images), method)

    # ---- ASGI --------------------------------------------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        began = time.perf_counter()
        try:
            if path == "/v1/audit":
                self._allow(method, "POST")
                self._authorize(scope)
                status = await self._audit(scope, receive, send, began)
            elif path.startswith("/v1/heatmaps/"):
                self._allow(method, "GET")
                self._authorize(scope)
                status = await self._heatmap(path.rsplit("/", 1)[-1], send)
            elif path == "/v1/info":
                self._allow(method, "GET")
                self._authorize(scope)
                status = 200
                await respond_json(send, 200, self.info())
            elif path == "/healthz":
                status = 200
                await respond_json(send, 200, {"status": "live"})
            elif path == "/readyz":
                status = 200 if self.ready and not self.draining else 503
                state = "draining" if self.draining else ("ready" if self.ready else "warming up")
                await respond_json(send, status, {"status": state})
            elif path == "/metrics":
                status = 200
                await respond(send, 200, self.metrics.render(), METRICS_TYPE)
            else:
                raise HttpError(404, f"no route {path}; see GET /v1/info", "not_found")
        except HttpError as exc:
            status = exc.status
            if exc.reason:
                self.metrics.reject(exc.reason)
            await respond_json(send, exc.status, {"error": exc.message}, exc.headers)
        self.metrics.request(path if path in ROUTES else "/v1/heatmaps" if path.startswith("/v1/heatmaps/")
                             else "other", status)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method != allowed:
            raise HttpError(405, f"use {allowed}", "method", (("allow", allowed),))

    def _authorize(self, scope) -> None:
        if not self.settings.token:
            return
        given = header(scope, b"authorization") or ""
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.settings.token.encode()):
            raise HttpError(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)", "unauthorized",
                            (("www-authenticate", "Bearer"),))

    # ---- POST /v1/audit ----------------------------------------------------------------------------------------------

    async def _audit(self, scope, receive, send, began: float) -> int:
        if self.draining:
            raise HttpError(503, "the server is shutting down", "draining", (("retry-after", "1"),))
        options = self._options(query(scope))
        kind, params = media_type(header(scope, b"content-type"))
        if not (is_image_type(kind) or kind in SNIFFED_TYPES or kind == "multipart/form-data"):
            raise HttpError(415, f"Content-Type {kind}: send {', '.join(IMAGE_TYPES)} or "
                                 "multipart/form-data with image parts", "unsupported_type")
        limit = int(self.settings.max_body_mb * 1024 * 1024)
        check_declared_length(scope, limit)
        deadline = time.monotonic() + self.settings.timeout_ms / 1000
        try:
            self.batcher.reserve()  # before decoding anything: an overloaded server refuses cheaply
        except Overloaded:
            await read_body(scope, receive, limit)  # read, not decoded: the client's connection stays usable
            raise HttpError(503, f"overloaded: {self.settings.max_queue} requests are waiting, or the wait would "
                                 "pass --max-wait-ms; retry shortly", "queue_full", (("retry-after", "1"),)) from None
        self.metrics.in_flight += 1
        submitted = False
        try:
            body = await read_body(scope, receive, limit)
            if kind == "multipart/form-data":
                blobs = multipart_images(body, params.get("boundary", ""))
            else:  # with no usable Content-Type (curl --data-binary), as always, the bytes say what it is
                blobs = [(body, "image 0" if is_image_type(kind) else f"the body ({kind or 'no Content-Type'})")]
            loop = asyncio.get_running_loop()
            decode_began = time.perf_counter()
            decoded = await loop.run_in_executor(self.pool, self._decode, blobs)
            decode_s = time.perf_counter() - decode_began
            job = self.batcher.submit(np.stack([model for model, _ in decoded]), deadline, options["explain"])
            submitted = True
            result = await self._wait(job, deadline)
            encode_began = time.perf_counter()
            results = await loop.run_in_executor(self.pool, self._results, decoded, result, options)
            timings = {"decode_ms": decode_s * 1000, "queue_ms": result.queue_s * 1000,
                       "infer_ms": result.model_s * 1000, "encode_ms": (time.perf_counter() - encode_began) * 1000}
            for item in results:
                item["timings"] = {**{k: round(v, 2) for k, v in timings.items()},
                                   "total_ms": round((time.perf_counter() - began) * 1000, 2)}
            await respond_json(send, 200, {"results": results, "batch_size": result.batch_size,
                                           "artifact": self.auditor.artifact.name})
            self.metrics.observe_latency(time.perf_counter() - began)
            return 200
        finally:
            if not submitted:
                self.batcher.release()
            self.metrics.in_flight -= 1

    async def _wait(self, job, deadline: float):
        """The job's result. Past the deadline, a job still queued is dropped (504); one the model has taken runs
        to the end and is answered."""
        expired = HttpError(504, f"not run: waited past the deadline ({self.settings.timeout_ms:g} ms)", "deadline")
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), max(0.0, deadline - time.monotonic()))
        except DeadlineExceeded:
            raise expired from None
        except asyncio.TimeoutError:
            if self.batcher.expire(job):
                raise expired from None
        try:
            return await job.future
        except DeadlineExceeded:
            raise expired from None

    def _options(self, params: dict[str, str]) -> dict:
        heatmap = params.get("heatmap", "png")
        if heatmap not in HEATMAP_FORMATS:
            raise HttpError(400, f"heatmap={heatmap}: choose {', '.join(HEATMAP_FORMATS)}", "bad_request")
        size = None
        if params.get("size"):
            width, _, height = params["size"].lower().partition("x")
            if not (width.isdigit() and height.isdigit() and 0 < int(width) <= 8192 and 0 < int(height) <= 8192):
                raise HttpError(400, f"size={params['size']}: write WIDTHxHEIGHT, e.g. 224x224", "bad_request")
            size = (int(height), int(width))
        explain = params.get("explain") or None
        if explain and explain not in self.methods:
            raise HttpError(400, f"explain={explain}: this artifact's attribution graphs are "
                                 f"{', '.join(self.methods) or 'none'}", "bad_request")
        return {"heatmap": heatmap, "size": size, "explain": explain}

    def _decode(self, blobs: list[tuple[bytes, str]]) -> list[tuple[np.ndarray, tuple[int, int]]]:
        """(the image at the model's size, its original (height, width)) for each blob, decoded in the decoder
        pool. The refusals name the image: 415 for a format outside --formats, 413 past --max-pixels or too
        costly to decode (memory or deadline), 422 when the file crashed a decoder, 400 when it is unreadable."""
        out = []
        for blob, what in blobs:
            try:
                check_accepted(blob, self.settings.formats, what)
                decoded = self.decoder.decode(blob, name=what)
            except FormatNotAcceptedError as exc:
                raise HttpError(415, str(exc), "unsupported_type") from None
            except ImageTooLargeError as exc:
                raise HttpError(413, f"{exc} (--max-pixels)", "too_many_pixels") from None
            except DecodeTooCostlyError as exc:
                raise HttpError(413, str(exc), "too_costly") from None
            except DecoderCrashError as exc:
                raise HttpError(422, str(exc), "decoder_crash") from None
            except ImageDecodeError as exc:
                raise HttpError(400, str(exc), "bad_image") from None
            out.append((decoded.resized, decoded.size))
        return out

    def _results(self, decoded, result, options) -> list[dict]:
        items = []
        for index, (_, image_size) in enumerate(decoded):
            audit = self.auditor.postprocess(result.outputs, index, image_size)
            item = {"index": index, **audit.to_record(), "risk_map": audit.risk_map.tolist()}
            size = options["size"] or image_size
            heatmap = audit.heatmap if size == image_size else resize_map(result.outputs["heatmap"][index], size)
            item["heatmap"] = self._encode(heatmap, options["heatmap"], signed=False)
            if result.explanations is not None:
                explanation = result.explanations[index]
                values = resize_map(explanation.map, size)  # explained at the model's size: back to the answer's
                item["explain"] = {**explanation.to_dict(),
                                   "map": self._encode(values, options["heatmap"], explanation.signed)}
            items.append(item)
        return items

    def _encode(self, values: np.ndarray, form: str, signed: bool) -> dict | None:
        """npy: exact float32; png: 8 bits (unsigned maps in [0, 1]; signed ones mapped from [-m, m], m given);
        ref: the PNG kept for GET /v1/heatmaps/{id}."""
        if form == "none":
            return None
        height, width = values.shape
        if form == "npy":
            buffer = io.BytesIO()
            np.save(buffer, values.astype(np.float32))
            return {"format": "npy", "size": [width, height], "data": base64.b64encode(buffer.getvalue()).decode()}
        scale = float(np.abs(values).max()) if signed else 1.0
        levels = (values / scale + 1) / 2 if signed and scale > 0 else values
        png = cv2.imencode(".png", np.clip(np.rint(levels * 255), 0, 255).astype(np.uint8))[1].tobytes()
        document = {"format": "png", "size": [width, height], **({"scale": scale} if signed else {})}
        if form == "png":
            return {**document, "data": base64.b64encode(png).decode()}
        key = uuid.uuid4().hex
        self.heatmaps[key] = png
        while len(self.heatmaps) > STORED_HEATMAPS:
            self.heatmaps.popitem(last=False)
        return {**document, "id": key, "url": f"/v1/heatmaps/{key}"}

    async def _heatmap(self, key: str, send) -> int:
        png = self.heatmaps.get(key)
        if png is None:
            raise HttpError(404, f"no heatmap {key}: ids live for the last {STORED_HEATMAPS} maps", "not_found")
        await respond(send, 200, png, "image/png")
        return 200

    # ---- GET /v1/info ------------------------------------------------------------------------------------------------

    def info(self) -> dict:
        """The manifest without file paths, what runs it, and the limits."""
        manifest = self.auditor.artifact.manifest
        model = {key: value for key, value in manifest.model.to_dict().items() if key != "weights"}
        model["weights_sha256"] = manifest.model.weights.sha256
        graphs = {name: {"kind": entry.kind, "inputs": [spec.to_dict() for spec in entry.inputs],
                         "outputs": [spec.to_dict() for spec in entry.outputs],
                         **({"method": entry.method, "params": entry.params} if entry.kind == "attribution" else {})}
                  for name, entry in manifest.graphs.items()}
        runner = self.auditor.runner
        return {"name": self.auditor.artifact.name, "model": model, "head": manifest.head,
                "preprocess": manifest.preprocess.to_dict(), "decision": manifest.decision.to_dict(manifest.threshold),
                "metrics": manifest.training.metrics if manifest.training else None, "versions": manifest.versions,
                "graphs": graphs, "attribution_methods": self.methods,
                "backend": getattr(runner, "name", type(runner).__name__),
                "providers": getattr(runner, "active_providers", []), "limits": self.settings.limits()}
