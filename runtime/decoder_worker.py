"""A decoder process: decodes the images a ``DecoderPool`` sends it, one at a time, under hard limits.

Run as ``python -m auditor_rt.runtime.decoder_worker --shm-fd N --capacity BYTES --memory BYTES``. It reads
requests on stdin and answers on stdout (``decoder_protocol``); decoded RGB pixels go into the shared memory the
pool passed as file descriptor N (a memfd, or a temporary file where there is none), or with the reply when they
do not fit.

Before the first request the process limits itself, so that a hostile file costs at most one restartable process:
- its address space to what it has after start-up plus ``--memory`` bytes (``RLIMIT_AS``): an allocation past the
  budget fails at once instead of filling the machine, and the codec's failure is reported as "too costly";
- no core files (a crash is expected, not a bug to dump), a few open files, no file writes;
- it ignores Ctrl-C (the pool decides when it stops) and dies with its parent (``PR_SET_PDEATHSIG``);
- OpenCV runs single-threaded: the pool's processes are the parallelism.
A crash or a hang inside a codec is the pool's to handle: it sees the pipe close or the deadline pass.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def _harden(memory: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    try:
        import resource
    except ImportError:  # not POSIX: only the deadline bounds a decode
        return
    for limit, value in ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_NOFILE, 64)):
        _lower(resource, limit, value)
    _lower(resource, resource.RLIMIT_AS, _address_space() + memory)


def _lower(resource, limit: int, value: int) -> None:
    """Set the soft and hard limit to ``value`` unless it is already lower (a hard limit can only go down)."""
    soft, hard = resource.getrlimit(limit)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    try:
        resource.setrlimit(limit, (value, value))
    except (ValueError, OSError):
        pass


def _address_space() -> int:
    """Bytes of address space mapped now (VmSize), 0 where /proc is not there."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


ERROR_KINDS = {"ImageTooLargeError": "too_large", "DecodeTooCostlyError": "too_costly"}


def handle(item: dict, data, shared: mmap.mmap, offset: int) -> tuple[dict, object, int]:
    """(the reply header, its payload, the next free offset) for one item: ``{"path": ...}`` or encoded bytes in
    ``data``, ``max_pixels``, ``full`` (the image at its own size) and ``resize`` ([height, width] of a resized
    copy). The outputs are RGB, one after the other, in the shared memory from ``offset`` on where they fit (the
    payload is then None), else in the payload."""
    import cv2
    import numpy as np

    from auditor_rt.runtime.decoder_protocol import mark_decoding
    from auditor_rt.runtime.imageio import decode_bgr, read_encoded, resize_image

    max_pixels = int(item["max_pixels"])
    if "path" in item:
        name, encoded = read_encoded(item["path"], max_pixels)
    else:
        name, encoded = item.get("name", "buffer"), np.frombuffer(data, dtype=np.uint8)
    mark_decoding(shared)
    bgr = decode_bgr(encoded, name, max_pixels)
    sources = [bgr] if item.get("full", True) else []
    if item.get("resize"):
        sources.append(resize_image(bgr, tuple(item["resize"])))
    needed = sum(source.size for source in sources)
    in_shared = offset + needed <= len(shared)
    out = np.frombuffer(shared, np.uint8, needed, offset) if in_shared else np.empty(needed, np.uint8)
    at = 0
    for source in sources:
        cv2.cvtColor(source, cv2.COLOR_BGR2RGB, dst=out[at:at + source.size].reshape(source.shape))
        at += source.size
    reply = {"ok": True, "size": list(bgr.shape[:2]), "shapes": [list(source.shape[:2]) for source in sources]}
    if in_shared:
        del out  # no view of the shared memory may outlive the request
        return {**reply, "offset": offset}, None, offset + needed
    return reply, out, offset


def _answer(item: dict, data, shared: mmap.mmap, offset: int) -> tuple[dict, object, int]:
    """``handle``, with every failure turned into an error reply: the image fails, the process goes on."""
    from auditor_rt.runtime.errors import ImageDecodeError

    try:
        return handle(item, data, shared, offset)
    except ImageDecodeError as exc:
        return {"ok": False, "kind": ERROR_KINDS.get(type(exc).__name__, "decode"), "message": str(exc)}, None, offset
    except MemoryError:
        return {"ok": False, "kind": "too_costly", "message": "ran out of the decoder's memory"}, None, offset
    except Exception as exc:  # a bug of ours on an odd file
        return {"ok": False, "kind": "internal", "message": f"{type(exc).__name__}: {exc}"}, None, offset


def serve(requests: int, replies: int, shared: mmap.mmap) -> None:
    """Answer requests on file descriptor ``requests`` on ``replies`` until the pool closes its end. A request
    holds a list of items (their encoded bytes, if any, one after the other in its payload) and gets one reply
    with an answer per item; before each item the process marks it as started in the shared memory, so that the
    pool can tell which item a crash or a hang belongs to."""
    from auditor_rt.runtime.decoder_protocol import CONTROL_BYTES, MessageReader, PeerGone, mark_started, write_message

    reader = MessageReader(requests)
    write_message(replies, {"ready": True, "pid": os.getpid()})
    while True:
        try:
            request, payload = reader.read()
        except PeerGone:
            return  # the pool closed the pipe: time to go
        answers, overflow, offset, position, at = [], [], CONTROL_BYTES, 0, 0
        for index, item in enumerate(request["items"]):
            size = int(item.get("bytes", 0))
            data = payload[position:position + size] if size else None
            position += size
            mark_started(shared, index + 1)
            reply, pixels, offset = _answer(item, data, shared, offset)
            if pixels is not None:  # past the shared memory's end: the pixels go with the reply
                reply["payload_at"] = at
                overflow.append(pixels)
                at += pixels.size
            answers.append(reply)
        try:
            write_message(replies, {"items": answers}, b"".join(overflow) if overflow else None)
        except PeerGone:
            return


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="a decoder process of auditor-rt's DecoderPool")
    parser.add_argument("--shm-fd", type=int, required=True, help="the shared memory the pool made (a memfd)")
    parser.add_argument("--capacity", type=int, required=True, help="its size in bytes")
    parser.add_argument("--memory", type=int, required=True, help="bytes of address space past start-up")
    args = parser.parse_args(argv)
    import cv2  # noqa: F401  (imported before the limit, so that its libraries are mapped within the baseline)
    import numpy  # noqa: F401

    import auditor_rt.runtime.imageio  # noqa: F401

    cv2.setNumThreads(1)
    shared = mmap.mmap(args.shm_fd, args.capacity)
    if not os.environ.get("OPENCV_LOG_LEVEL"):  # the codecs' chatter; set OPENCV_LOG_LEVEL to see it
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    _harden(args.memory)
    serve(0, 1, shared)
    return 0


if __name__ == "__main__":
    sys.exit(main())
