"""Running the audit app on uvicorn, with the shutdown that the service promises: SIGTERM (or Ctrl-C) flips
``/readyz`` to 503 at once, the requests in flight finish within ``grace_s``, and the process exits 0."""

from __future__ import annotations

import errno
import signal
import socket
import time
from typing import TYPE_CHECKING

from auditor_rt.runtime.errors import ConfigError
from auditor_rt.runtime.serve.limits import limited_httptools_protocol

if TYPE_CHECKING:  # the app imports the serve extra's packages; require_uvicorn names them first
    from auditor_rt.runtime.serve.app import AuditApp

SERVE_INSTALL_HINT = "from the auditor-rt checkout: pip install -e '.[serve]'"


def require_uvicorn():
    """uvicorn, or a one-line error that says how to install the serve extra (uvicorn, httptools, whose protocol
    enforces the request limits, and prometheus-client). ``serve`` calls this before it loads a model."""
    missing = [name for name in ("uvicorn", "httptools", "prometheus_client") if not _has(name)]
    if missing:
        raise ConfigError(f"serve needs {', '.join(missing)}, which this install lacks; {SERVE_INSTALL_HINT}")
    import uvicorn

    return uvicorn


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is loaded or printed, so that a busy port is one clear error
    (exit 2) instead of uvicorn's log lines after "serving ... on ..."."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: not an address this machine can bind ({exc.strerror})") from None
    sock = socket.socket(family, kind, protocol)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: no wait after a restart
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use by another process; stop it, or choose another "
                              "port with --port") from None
        if exc.errno == errno.EACCES:
            raise ConfigError(f"port {port} on {host}: permission denied (ports below 1024 need privileges); "
                              "choose another with --port") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def run_server(app: "AuditApp", sock: socket.socket, log=print) -> None:
    uvicorn = require_uvicorn()

    class DrainingServer(uvicorn.Server):
        """uvicorn's server, but a signal starts a drain instead of an immediate stop, and is not re-raised at
        exit (so the process exits 0)."""

        drain_until: float | None = None

        def handle_exit(self, sig, frame) -> None:
            if self.drain_until is not None:  # a second signal: stop now
                self.should_exit = True
                return
            app.start_draining()
            self.drain_until = time.monotonic() + app.settings.grace_s
            log(f"{signal.Signals(sig).name}: draining ({app.metrics.in_flight} request(s) in flight, grace "
                f"{app.settings.grace_s:g} s)")

        async def on_tick(self, counter: int) -> bool:
            if self.drain_until is not None:
                done = app.metrics.in_flight == 0 and app.metrics.queue_depth == 0
                if done or time.monotonic() >= self.drain_until:
                    return True
            return await super().on_tick(counter)

    loop = "uvloop" if _has("uvloop") else "asyncio"
    # httptools has no limits on the request head: ours are enforced where the bytes arrive (serve/limits.py)
    http = limited_httptools_protocol(app.request_limits, app.metrics.reject)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, loop=loop, http=http, lifespan="on", access_log=False,
                            log_level="warning", timeout_graceful_shutdown=app.settings.grace_s)
    DrainingServer(config).run(sockets=[sock])  # bound by bind_socket: a busy port was refused before loading


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
