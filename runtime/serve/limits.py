"""Limits on the request line and headers: 414 for a URL past 8 KiB, 431 for a header past 32 KiB, headers past
64 KiB in all, or more than 100 header lines (nginx-like defaults).

httptools (llhttp) has no such limits: it buffers a header of any size, so a 1 MB header value, 3000 header lines or
a 500 KB URL were accepted. The limits are enforced where the bytes arrive, in a subclass of uvicorn's httptools
protocol: while a request's head is being read it is fed to the parser in slices that never take the head past its
budget, so a client cannot make the server buffer more than the limits allow, and the refusal goes out before the
app sees the request. serve therefore requires httptools (the ``serve`` extra), not uvicorn's h11 fallback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from auditor_rt.runtime.serve.http import HttpError

REASONS = {414: "URI Too Long", 431: "Request Header Fields Too Large"}


@dataclass(frozen=True)
class RequestLimits:
    url: int = 8 * 1024
    header: int = 32 * 1024          # one header line: name and value
    headers: int = 64 * 1024         # all header lines together
    header_count: int = 100

    @property
    def head(self) -> int:
        """Bytes of a request head (request line and headers) fed to the parser before it must have ended."""
        return self.url + self.headers + 1024

    def check_url(self, size: int) -> HttpError | None:
        if size > self.url:
            return HttpError(414, f"the URL is over {self.url} bytes; send parameters in the body", "url_too_long")
        return None

    def check_header(self, name: bytes, value_size: int, count: int, total: int) -> HttpError | None:
        """``count`` and ``total`` include this header."""
        size = len(name) + value_size
        if size > self.header:
            label = name[:64].decode("latin-1")
            return HttpError(431, f"header {label!r} is {size} bytes, over the limit of {self.header}",
                             "headers_too_large")
        if count > self.header_count:
            return HttpError(431, f"more than {self.header_count} header lines", "headers_too_large")
        if total > self.headers:
            return HttpError(431, f"the headers are over {self.headers} bytes in all", "headers_too_large")
        return None


def limited_httptools_protocol(limits: RequestLimits, on_refusal: Callable[[str], None]):
    """uvicorn's httptools protocol class with ``limits`` enforced; ``on_refusal(reason)`` counts each refusal."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._refusal: HttpError | None = None
            self._in_head, self._head_bytes = True, 0
            self._header_count = self._header_total = 0

        def data_received(self, data: bytes) -> None:
            while data and self._refusal is None:
                if self._in_head:  # never more than the head's budget before the head has ended
                    room = max(1, limits.head - self._head_bytes)
                    piece, data = data[:room], data[room:]
                    self._head_bytes += len(piece)
                else:
                    piece, data = data, b""
                super().data_received(piece)
                if self.transport.is_closing():
                    return
                if self._refusal is None and self._in_head and self._head_bytes >= limits.head:
                    self._refuse(HttpError(431, f"the request head is over {limits.head} bytes",
                                           "headers_too_large"))
            if self._refusal is not None and not self.transport.is_closing():
                self._send_refusal()

        def _refuse(self, error: HttpError | None) -> None:
            if error is not None and self._refusal is None:
                self._refusal = error

        def _send_refusal(self) -> None:
            error = self._refusal
            on_refusal(error.reason)
            if self.cycle is None or self.cycle.response_complete:  # else a response is under way: just close
                body = json.dumps({"error": error.message}).encode()
                self.transport.write(
                    f"HTTP/1.1 {error.status} {REASONS[error.status]}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
            self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_count = self._header_total = 0

        def on_url(self, url: bytes) -> None:
            if self._refusal is None:
                super().on_url(url)
                self._refuse(limits.check_url(len(self.url)))

        def on_header(self, name: bytes, value: bytes) -> None:
            if self._refusal is not None:
                return
            self._header_count += 1
            self._header_total += len(name) + len(value) + 4  # ": " and CRLF
            self._refuse(limits.check_header(name, len(value), self._header_count, self._header_total))
            if self._refusal is None:
                super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            if self._refusal is None:
                super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if self._refusal is None:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self._refusal is None:
                super().on_message_complete()
                self._in_head, self._head_bytes = True, 0

    return LimitedHttpToolsProtocol
