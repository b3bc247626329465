"""Keep the image codecs' own chatter off the user's terminal while OpenCV decodes.

A folder of real-world files makes libpng, libjpeg and libtiff print lines such as ``libpng warning: iCCP: known
incorrect sRGB profile`` or ``Corrupt JPEG data: premature end of data segment``: about 15 per run. The record's
reason already says what matters (an unreadable file becomes an error record), so the lines are noise. They come
from two places, and each needs its own switch:

* OpenCV's logger (libtiff and OpenJPEG are routed through it): its level is set to silent while a decode runs.
* libpng and libjpeg write straight to C's ``stderr`` stream with ``fprintf``. No OpenCV setting reaches them, so
  C's ``stderr`` variable (which glibc documents as assignable) points at /dev/null while a decode runs. Python's
  own ``sys.stderr`` writes to file descriptor 2 directly, so progress bars, warnings and logs of other threads are
  not touched; only C-level stdio output made during a decode is lost.

The switches are reference-counted, so overlapping decodes on several threads share one quiet window. Where C's
``stderr`` cannot be reassigned (not glibc), only OpenCV's logger is silenced. ``OPENCV_LOG_LEVEL`` set by the user
(for debugging) turns all of this off.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import threading
from typing import Iterator

_lock = threading.Lock()
_depth = 0
_saved_level: int | None = None
_saved_stderr: int | None = None
_c_stderr = None      # ctypes view of libc's `stderr` variable, once found
_null_stream = None   # a FILE* on /dev/null
_c_stdio_ready = False


def _find_c_stderr() -> None:
    """Locate glibc's ``stderr`` variable and open /dev/null once; leave both None where that is not possible."""
    global _c_stderr, _null_stream, _c_stdio_ready
    _c_stdio_ready = True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return  # musl declares `FILE *const stderr`: writing it would fault
    try:
        libc = ctypes.CDLL(None)
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        stream = libc.fopen(os.devnull.encode(), b"w")
        variable = ctypes.c_void_p.in_dll(libc, "stderr")
    except (OSError, ValueError, AttributeError):
        return
    if stream:
        _c_stderr, _null_stream = variable, stream


def _enter() -> None:
    global _saved_level, _saved_stderr
    import cv2

    _saved_level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    if not _c_stdio_ready:
        _find_c_stderr()
    if _c_stderr is not None:
        _saved_stderr = _c_stderr.value
        _c_stderr.value = _null_stream


def _leave() -> None:
    global _saved_level, _saved_stderr
    import cv2

    if _c_stderr is not None and _saved_stderr is not None:
        _c_stderr.value = _saved_stderr
        _saved_stderr = None
    if _saved_level is not None:
        cv2.utils.logging.setLogLevel(_saved_level)
        _saved_level = None


@contextlib.contextmanager
def quiet_decoders() -> Iterator[None]:
    """Run the block with the codecs' native warnings silenced (see the module docstring)."""
    global _depth
    if os.environ.get("OPENCV_LOG_LEVEL"):
        yield
        return
    with _lock:
        if _depth == 0:
            _enter()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _leave()
