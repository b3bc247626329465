"""Auto-numbered run folders (``runs/infer/run-001``, ``run-002``...) so that no run overwrites another."""

from __future__ import annotations

import re
from pathlib import Path


def next_run_folder(parent: str | Path, prefix: str = "run") -> Path:
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)$")
    numbers = [int(m.group(1)) for p in parent.iterdir() if (m := pattern.match(p.name))]
    number = max(numbers, default=0) + 1
    while True:  # mkdir without exist_ok: two runs started together cannot share a folder
        folder = parent / f"{prefix}-{number:03d}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            number += 1
