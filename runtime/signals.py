"""SIGTERM as a polite stop for long runs: it sets an event, like Ctrl-C does, so that what was read is still
scored and written. Only the main thread can set signal handlers; elsewhere this does nothing."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def stop_on_sigterm(stop: threading.Event, on_stop: Callable[[], None] = lambda: None) -> Iterator[None]:
    """While inside, SIGTERM calls ``on_stop`` and sets ``stop``; the previous handler is restored on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        on_stop()
        stop.set()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
