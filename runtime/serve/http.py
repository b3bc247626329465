"""Small HTTP helpers for the ASGI app: reading a body under a size limit, multipart/form-data, query strings and
responses. Hand-written because the service needs only these, and every dependency ships to edge boxes."""

from __future__ import annotations

import json
import urllib.parse
from typing import Awaitable, Callable

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/tiff", "image/bmp")  # named in messages
# What clients send when they do not say: curl --data-binary sends form-urlencoded, many libraries octet-stream.
# For these (and form fields, text/plain) the bytes decide, as for every image: ``image_formats.check_accepted``.
SNIFFED_TYPES = ("", "application/octet-stream", "application/x-www-form-urlencoded")


def is_image_type(kind: str) -> bool:
    """Any image/* type: the decoder, not a list here, decides what it reads (400 naming the cause if not)."""
    return kind.startswith("image/")


class HttpError(Exception):
    """Answered with ``status`` and a JSON body ``{"error": message}``; ``reason`` labels the rejection metric."""

    def __init__(self, status: int, message: str, reason: str = "", headers: tuple = ()):
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers


def header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def query(scope: dict) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1")))


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """'multipart/form-data; boundary=x' -> ('multipart/form-data', {'boundary': 'x'})."""
    if not content_type:
        return "", {}
    kind, *params = content_type.split(";")
    values = {}
    for param in params:
        key, _, value = param.strip().partition("=")
        values[key.lower()] = value.strip().strip('"')
    return kind.strip().lower(), values


def check_declared_length(scope: dict, limit: int) -> None:
    """413 from the Content-Length header, before anything is read."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"the body is {int(declared)} bytes, over the limit of {limit} (--max-body-mb)",
                        "body_too_large")


async def read_body(scope: dict, receive: Callable[[], Awaitable[dict]], limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to pass ``limit`` bytes: from Content-Length
    before anything is read, else while it streams in (chunked uploads)."""
    check_declared_length(scope, limit)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(499, "the client went away", "disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"the body is over the limit of {limit} bytes (--max-body-mb)", "body_too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def multipart_images(body: bytes, boundary: str) -> list[tuple[bytes, str]]:
    """(bytes, a name for messages) of the image parts of a multipart/form-data body, in order. A part that
    declares a non-image type is a 415."""
    if not boundary:
        raise HttpError(400, "multipart/form-data without a boundary", "bad_request")
    delimiter = b"--" + boundary.encode("latin-1")
    images = []
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, separator, content = part.partition(b"\r\n\r\n")
        if not separator:
            raise HttpError(400, "a multipart part has no header/body separator", "bad_request")
        headers = {}
        for line in head.decode("latin-1").strip().split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        part_type = media_type(headers.get("content-type"))[0]
        content = content[:-2] if content.endswith(b"\r\n") else content
        if part_type in SNIFFED_TYPES or part_type == "text/plain":  # form fields default to text/plain
            images.append((content, f"multipart part {len(images)} ({part_type or 'no Content-Type'})"))
        elif is_image_type(part_type):
            images.append((content, f"image {len(images)}"))
        else:
            raise HttpError(415, f"a multipart part is {part_type}; send {', '.join(IMAGE_TYPES)}", "unsupported_type")
    if not images:
        raise HttpError(400, "the multipart body has no parts", "bad_request")
    return images


async def respond(send, status: int, body: bytes, content_type: str = "application/json",
                  headers: tuple = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
                            *((k.encode(), v.encode()) for k, v in headers)]})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send, status: int, document, headers: tuple = ()) -> None:
    await respond(send, status, json.dumps(document).encode(), "application/json", headers)
