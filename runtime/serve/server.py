"""Running the audit app on uvicorn, with the shutdown that the service promises: SIGTERM (or Ctrl-C) flips
``/readyz`` to 503 at once, the requests in flight finish within ``grace_s``, and the process exits 0."""

from __future__ import annotations

import signal
import time

from auditor_rt.runtime.errors import ConfigError
from auditor_rt.runtime.serve.app import AuditApp


def _uvicorn():
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("serve needs uvicorn: pip install 'auditor-rt[serve]'") from None
    return uvicorn


def run_server(app: AuditApp, host: str, port: int, log=print) -> None:
    uvicorn = _uvicorn()

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
    http = "httptools" if _has("httptools") else "h11"
    config = uvicorn.Config(app, host=host, port=port, loop=loop, http=http, lifespan="on", access_log=False,
                            log_level="warning", timeout_graceful_shutdown=app.settings.grace_s)
    DrainingServer(config).run()  # a port it cannot bind ends the process (uvicorn exits 1 itself)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
