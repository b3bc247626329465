"""``infer --resume RUN_FOLDER``: what an earlier (interrupted) run already recorded, so that it is not done twice.

Records are written whole and flushed one by one, but a run killed with SIGKILL can still leave a partial last
line; it is cut off here, so that the file stays valid JSONL once the new records are appended.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from auditor_rt.runtime.errors import ConfigError

RESULTS = "results.jsonl"


@dataclass
class ResumeState:
    folder: Path
    sources: set[str] = field(default_factory=set)         # image inputs with any record (ok or error)
    next_index: int = 0                                     # the image index to continue from
    last_frame: dict[str, int] = field(default_factory=dict)  # video source -> last frame scored
    ended: set[str] = field(default_factory=set)           # video sources that were read to their end
    records: int = 0
    cut_bytes: int = 0                                      # bytes of a partial last line that were removed


def load_resume_state(folder: str | Path) -> ResumeState:
    folder = Path(folder)
    results = folder / RESULTS
    if not results.is_file():
        raise ConfigError(f"--resume {folder}: no {RESULTS} there; give the run folder of an earlier infer run")
    state = ResumeState(folder)
    data = results.read_bytes()
    keep = data if data.endswith(b"\n") or not data else data[:data.rfind(b"\n") + 1]
    for number, line in enumerate(keep.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigError(f"--resume {folder}: line {number} of {RESULTS} is not JSON; the file was not written "
                              "by infer, or was edited") from None
        state.records += 1
        source = record.get("source", record.get("source_id"))  # source_id: video records before one schema
        if "index" in record:  # an image input (docs/records.md)
            state.sources.add(source)
            state.next_index = max(state.next_index, int(record["index"]) + 1)
        elif "frame" in record:  # a scored video frame
            state.last_frame[source] = max(state.last_frame.get(source, -1), int(record["frame"]))
        elif record.get("event") == "end":
            state.ended.add(source)
    if len(keep) != len(data):
        state.cut_bytes = len(data) - len(keep)
        results.write_bytes(keep)
    return state
