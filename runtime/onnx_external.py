"""Where an ONNX graph's tensors keep their external data, read without the ``onnx`` package.

A graph may say that a tensor's bytes live in another file (``external_data`` with a ``location``), and ONNX Runtime
opens that file when the session is created. A graph that names ``../../etc/passwd``, an absolute path, a symlink
out of the artifact, or ORT's in-memory marker would make the runtime read what it was never given. Newer ORT
releases refuse some of these, older ones (``onnxruntime>=1.17`` is allowed) do not, so the artifact loader checks
every location itself before a session exists.

The runtime installs without ``onnx``, so this reads the protobuf wire format directly: the few message fields that
can hold a tensor (graph initialisers, node attributes, subgraphs, functions, training graphs) are walked, and
everything else, raw tensor bytes included, is skipped by its length without being copied.
"""

from __future__ import annotations

import mmap
from pathlib import Path

from auditor_rt.runtime.errors import ArtifactError

# message -> {field number: message it holds}; only the fields on a path to a TensorProto.
_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _TENSOR, _SPARSE, _FUNCTION, _TRAINING, _ENTRY = range(9)
_CHILDREN = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
    _FUNCTION: {7: _NODE, 11: _ATTRIBUTE},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTRIBUTE},
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    _TENSOR: {13: _ENTRY},
}
MAX_DEPTH = 64  # nested subgraphs deeper than this are refused rather than walked


class _Malformed(Exception):
    pass


def _varint(data, position: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= end or shift > 63:
            raise _Malformed("a varint runs past its message")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _fields(data, start: int, end: int):
    """(field number, start, end) of each length-delimited field in data[start:end]; other wire types skipped."""
    position = start
    while position < end:
        key, position = _varint(data, position, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed("field number 0")
        if wire == 0:
            _, position = _varint(data, position, end)
        elif wire == 1:
            position += 8
        elif wire == 5:
            position += 4
        elif wire == 2:
            length, position = _varint(data, position, end)
            if position + length > end:
                raise _Malformed("a field runs past its message")
            yield number, position, position + length
            position += length
        elif wire == 3:  # a (deprecated) group: protobuf accepts one as an unknown field, so it is skipped too
            position = _skip_group(data, position, end, number)
        else:
            raise _Malformed(f"wire type {wire}")
        if position > end:
            raise _Malformed("a field runs past its message")


def _skip_group(data, position: int, end: int, number: int) -> int:
    """The position after the end-group tag of group ``number``, skipping nested groups and fields."""
    depth = 1
    while depth:
        key, position = _varint(data, position, end)
        wire = key & 7
        if wire == 0:
            _, position = _varint(data, position, end)
        elif wire in (1, 5):
            position += 8 if wire == 1 else 4
        elif wire == 2:
            length, position = _varint(data, position, end)
            position += length
        elif wire in (3, 4):
            depth += 1 if wire == 3 else -1
        else:
            raise _Malformed(f"wire type {wire}")
        if position > end or depth > MAX_DEPTH:
            raise _Malformed("a group runs past its message")
    if key >> 3 != number:
        raise _Malformed("a group ends with another group's tag")
    return position


def external_locations(data) -> list[str]:
    """Every ``location`` value of every tensor's external data in a serialised ModelProto."""
    locations: list[str] = []
    stack = [(_MODEL, 0, len(data), 0)]
    while stack:
        kind, start, end, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _Malformed(f"subgraphs nested deeper than {MAX_DEPTH}")
        children = _CHILDREN.get(kind, {})
        for number, field_start, field_end in _fields(data, start, end):
            child = children.get(number)
            if child == _ENTRY:
                entry = {n: bytes(data[s:e]) for n, s, e in _fields(data, field_start, field_end)}
                if entry.get(1) == b"location":
                    locations.append(entry.get(2, b"").decode("utf-8", "replace"))
            elif child is not None:
                stack.append((child, field_start, field_end, depth + 1))
    return locations


def check_external_data(model_path: str | Path, folder: str | Path) -> list[Path]:
    """The external data files ``model_path`` reads, after checking that each is a file inside ``folder``; raises
    ``ArtifactError`` naming the graph and the location otherwise (absolute, escaping, a symlink out, missing)."""
    model_path, root = Path(model_path), Path(folder).resolve()
    try:
        with open(model_path, "rb") as handle:
            if handle.seek(0, 2) == 0:
                raise ArtifactError(f"{model_path}: the graph file is empty; re-export the artifact")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                locations = external_locations(data)
    except _Malformed as exc:
        raise ArtifactError(f"{model_path}: not a readable ONNX graph ({exc}); re-export the artifact") from None
    files = []
    for location in sorted(set(locations)):
        files.append(_checked(model_path, root, location))
    return files


def _checked(model_path: Path, root: Path, location: str) -> Path:
    refuse = f"{model_path}: refused before loading: a tensor's external data location {location!r}"
    if not location or "\0" in location:
        raise ArtifactError(f"{refuse} is not a file name")
    if Path(location).is_absolute() or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        raise ArtifactError(f"{refuse} is an absolute path; an artifact's graphs may only read files inside its "
                            "folder. Re-export it, or do not run a graph from an untrusted source")
    target = (model_path.parent / location).resolve()
    if not target.is_relative_to(root):
        raise ArtifactError(f"{refuse} points outside the artifact folder {root} (to {target}); an artifact's "
                            "graphs may only read files inside it. Re-export it, or do not run a graph from an "
                            "untrusted source")
    if not target.is_file():
        raise ArtifactError(f"{refuse} names no file in the artifact folder; re-export the artifact")
    return target
