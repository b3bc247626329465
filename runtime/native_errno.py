"""C's ``errno`` of the calling thread, read and cleared through ctypes.

OpenCV's ``imdecode`` catches every exception a codec throws, ``std::bad_alloc`` included, and returns an empty
result, so Python cannot tell "out of memory" from "corrupt". The failed allocation leaves ``ENOMEM`` in ``errno``
(``malloc`` and ``mmap`` set it), which a decode that cleared ``errno`` first can read afterwards. Where the C
library's errno cannot be located (not glibc, musl or macOS), ``is_out_of_memory`` answers False.
"""

from __future__ import annotations

import ctypes
import errno

_location = None
_looked = False


def _errno_pointer():
    global _location, _looked
    if not _looked:
        _looked = True
        try:
            libc = ctypes.CDLL(None)
        except OSError:
            return None
        for symbol in ("__errno_location", "__error"):  # glibc and musl; macOS and the BSDs
            function = getattr(libc, symbol, None)
            if function is not None:
                function.restype = ctypes.POINTER(ctypes.c_int)
                _location = function
                break
    return _location() if _location is not None else None


def clear() -> None:
    pointer = _errno_pointer()
    if pointer is not None:
        pointer[0] = 0


def is_out_of_memory() -> bool:
    pointer = _errno_pointer()
    return pointer is not None and pointer[0] == errno.ENOMEM
