"""Labelled samples from an image folder or a manifest, and a reproducible train/validation split.

Reading only lists files and parses labels; it never decodes an image. A broken image is a per-item failure that the
loader reports, while a broken *listing* (no classes, a bad label) stops here with the file and line to fix. No torch,
so the CLI can validate a data set before anything heavy loads.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from auditor_rt.export.errors import DataError
from auditor_rt.runtime.errors import ConfigError
from auditor_rt.runtime.imageio import IMAGE_EXTENSIONS, is_image_path

PathLike = Union[str, os.PathLike]
Box = tuple[int, int, int, int]

_LABELS = {"0": 0, "1": 1, "false": 0, "true": 1, "neg": 0, "pos": 1, "negative": 0, "positive": 1}
_HEADER_NAMES = {"path", "image", "file", "filename", "image_path"}
MANIFEST_SUFFIXES = (".csv", ".jsonl")


@dataclass(frozen=True)
class Sample:
    """One labelled image. ``box`` is the hazard's box (x0, y0, x1, y1) in the original image's pixels, half-open
    like a slice (``image[y0:y1, x0:x1]``); it is only used to score localisation, never to train."""

    path: str
    label: int
    box: Optional[Box] = None


def load_samples(source: PathLike, positive_class: str = "positive") -> list[Sample]:
    """Read a data set from a class-per-folder tree or a ``.csv``/``.jsonl`` manifest, chosen by what ``source`` is."""
    path = Path(source)
    if path.is_dir():
        return read_image_folder(path, positive_class)
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return read_manifest(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; give a folder of class folders or a .csv/.jsonl manifest")
    raise DataError(f"{path}: not a folder or a .csv/.jsonl manifest; give root/<class>/<images> or a manifest")


def read_image_folder(root: PathLike, positive_class: str = "positive") -> list[Sample]:
    """``root/<class>/**/<image>``: the class named ``positive_class`` is label 1, every other class is label 0."""
    root = Path(root).absolute()
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"{root}: no class folders; put images in root/<class>/, e.g. {root}/{positive_class}/ and {root}/negative/"
        )
    names = [c.name for c in classes]
    if positive_class not in names:
        raise DataError(
            f"{root}: no folder for the positive class {positive_class!r}; found {', '.join(names)}. "
            "Rename the folder or pass the positive class name"
        )
    samples = []
    for folder in classes:
        images = sorted(p for p in folder.rglob("*") if _is_visible_image(p, folder))
        if not images:
            raise DataError(f"{folder}: class {folder.name!r} has no images (extensions: "
                            f"{', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)})")
        label = int(folder.name == positive_class)
        samples.extend(Sample(str(p), label) for p in images)
    return samples


def _is_visible_image(path: Path, top: Path) -> bool:
    """Skip hidden files and folders (``.DS_Store``, macOS ``._x.jpg`` forks) that share an image's extension."""
    hidden = any(part.startswith(".") for part in path.relative_to(top).parts)
    return not hidden and path.is_file() and is_image_path(path)


def read_manifest(path: PathLike) -> list[Sample]:
    """Read ``path,label[,x0,y0,x1,y1]`` CSV or ``{"path", "label", "box"}`` JSON lines; relative paths are taken
    from the manifest's folder so a data set can move as one folder."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such manifest file")
    suffix = path.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise DataError(f"{path}: a manifest must end in .csv or .jsonl")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        lines = handle.read().splitlines()
    parse = _parse_csv_row if suffix == ".csv" else _parse_json_line
    base = path.absolute().parent
    samples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            sample = parse(line, first=not samples)
        except DataError as exc:
            raise DataError(f"{path}, line {number}: {exc}") from None
        if sample is not None:
            full = Path(sample.path).expanduser()
            samples.append(Sample(str(full if full.is_absolute() else base / full), sample.label, sample.box))
    if not samples:
        raise DataError(f"{path}: the manifest lists no samples")
    return samples


def _parse_csv_row(line: str, first: bool) -> Optional[Sample]:
    row = [cell.strip() for cell in next(csv.reader([line]))]
    if first and (row[0].lower() in _HEADER_NAMES or (len(row) > 1 and row[1].lower() == "label")):
        return None  # the optional header row
    if len(row) not in (2, 6):
        raise DataError(f"expected 2 fields (path,label) or 6 (path,label,x0,y0,x1,y1), got {len(row)}: {line!r}")
    if not row[0]:
        raise DataError("the path field is empty")
    box_cells = row[2:]
    box = None if all(cell == "" for cell in box_cells) else _parse_box(box_cells)
    return Sample(row[0], _parse_label(row[1]), box)


def _parse_json_line(line: str, first: bool) -> Sample:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg}): {line!r}") from None
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object with path and label, got {line!r}")
    path = record.get("path")
    if not isinstance(path, str) or not path:
        raise DataError(f"'path' must be a non-empty string, got {path!r}")
    if "label" not in record:
        raise DataError(f"no 'label' in {line!r}")
    box = record.get("box")
    if box is not None and (not isinstance(box, list) or len(box) != 4):
        raise DataError(f"'box' must be [x0, y0, x1, y1] or null, got {box!r}")
    return Sample(path, _parse_label(record["label"]), None if box is None else _parse_box(box))


def _parse_label(value) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in _LABELS:
        return _LABELS[value.strip().lower()]
    raise DataError(f"bad label {value!r}; use 0/1, true/false, pos/neg or positive/negative")


def _parse_box(cells) -> Box:
    try:
        values = [float(cell) for cell in cells]
    except (TypeError, ValueError):
        raise DataError(f"bad box {list(cells)!r}; give four numbers x0,y0,x1,y1 or leave all four empty") from None
    if not all(math.isfinite(v) for v in values):
        raise DataError(f"bad box {list(cells)!r}; the coordinates must be finite")
    x0, y0, x1, y1 = (int(round(v)) for v in values)
    if x0 < 0 or y0 < 0 or x1 <= x0 or y1 <= y0:
        raise DataError(f"bad box {list(cells)!r}; need 0 <= x0 < x1 and 0 <= y0 < y1")
    return x0, y0, x1, y1


def split_samples(samples: list[Sample], val_fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """Split into (train, validation), stratified by label so both sides see both classes.

    The result depends only on the set of samples and the seed, not on their order, so re-listing a folder (or
    shuffling a manifest) gives the same validation set and metrics stay comparable between runs.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    train, val = [], []
    for label in (0, 1):
        group = sorted((s for s in samples if s.label == label), key=_sort_key)
        if len(group) < 2:
            kind = "positive" if label else "negative"
            raise DataError(f"need at least 2 positive and 2 negative samples to split, got {len(group)} {kind}")
        n_val = min(max(round(len(group) * val_fraction), 1), len(group) - 1)
        order = np.random.default_rng([seed, label]).permutation(len(group))
        val.extend(group[i] for i in order[:n_val])
        train.extend(group[i] for i in order[n_val:])
    return sorted(train, key=_sort_key), sorted(val, key=_sort_key)


def _sort_key(sample: Sample):
    return sample.path, sample.label, sample.box or ()
