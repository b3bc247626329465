"""Ctrl-C and SIGTERM as a polite stop for long runs: both set an event, so that what was read is still scored and
written. Only the main thread can set signal handlers; elsewhere SIGTERM keeps its default."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def stop_on_interrupt(stop: threading.Event, on_stop: Callable[[], None] = lambda: None) -> Iterator[None]:
    """While inside, SIGTERM calls ``on_stop`` and sets ``stop``; a Ctrl-C (``KeyboardInterrupt``) in the body does
    the same and ends the body. The previous SIGTERM handler is restored on the way out."""

    def handler(signum, frame):
        on_stop()
        stop.set()

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, handler) if main else None
    try:
        yield
    except KeyboardInterrupt:
        on_stop()
        stop.set()
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
