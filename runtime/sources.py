"""Expand what a user typed (files, folders, globs) into image items, keeping every unusable argument as an error
record so that the records of a run always equal its inputs."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from auditor_rt.runtime.imageio import undecodable_reason


@dataclass(frozen=True)
class Item:
    """One input: an image path, or an argument that named nothing usable (``error`` says why)."""

    source: str
    error: str | None = None


LIST_SUFFIXES = (".txt", ".lst")


def expand_list_files(arguments: Iterable[str]) -> list[str]:
    """Replace each text file argument (.txt, .lst) by the sources it lists, one per line; blank lines and lines
    starting with # are skipped, and relative paths are taken from the list's own folder. An unreadable list stays
    as it is, so that it becomes an error record naming it."""
    expanded: list[str] = []
    for argument in arguments:
        path = Path(os.path.expanduser(argument))
        if path.suffix.lower() not in LIST_SUFFIXES or not path.is_file():
            expanded.append(argument)
            continue
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            expanded.append(argument)
            continue
        for line in (raw.strip() for raw in lines):
            if not line or line.startswith("#"):
                continue
            is_relative = "://" not in line and not line.isdigit() and not Path(line).is_absolute()
            expanded.append(str(path.parent / line) if is_relative else line)
    return expanded


# Skipped on purpose, and only these: hidden files and folders (names starting with "."), which are tool state (.git,
# .DS_Store, macOS's ._ resource forks, .ipynb_checkpoints) rather than data; and the thumbnail caches and folder
# settings that Windows and macOS drop into image folders. Everything else a folder or glob lists gets a record.
SYSTEM_JUNK = frozenset({"thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r", "__macosx"})


def is_skipped(path: Path, root: Path | None = None) -> bool:
    """A hidden file, a file inside a hidden folder below ``root``, or OS junk (see ``SYSTEM_JUNK``)."""
    parts = path.relative_to(root).parts if root is not None else (path.name,)
    return any(part.startswith(".") or part.lower() in SYSTEM_JUNK for part in parts)


def _item(path: str) -> Item:
    """An audit item for a file OpenCV can decode, else an error item saying why (unsupported format, empty)."""
    return Item(path, undecodable_reason(path))


def _folder_files(folder: Path, recursive: bool) -> tuple[list[Path], int]:
    """The files to audit, sorted, and how many were skipped on purpose."""
    pattern = "**/*" if recursive else "*"
    files = [p for p in folder.glob(pattern) if p.is_file()]
    kept = sorted(p for p in files if not is_skipped(p, folder))
    return kept, len(files) - len(kept)


def expand_sources(arguments: Iterable[str], recursive: bool = False) -> list[Item]:
    """One item per file that a folder or glob lists (an error item for each one that is not a decodable image,
    e.g. 'unsupported format (.xyz)'), one per named file (the decoder judges it), and one error item per argument
    that names nothing usable. Hidden files and OS junk are the only files skipped (``is_skipped``)."""
    items: list[Item] = []
    for argument in arguments:
        argument = os.path.expanduser(argument)
        path = Path(argument)
        if path.is_dir():
            found, skipped = _folder_files(path, recursive)
            items.extend(_item(str(p)) for p in found)
            if not found:
                notes = [f"{skipped} hidden or system file(s) skipped"] if skipped else []
                notes += [] if recursive else ["use --recursive to look in subfolders"]
                note = f" ({'; '.join(notes)})" if notes else ""
                items.append(Item(argument, f"folder has no files to audit{note}"))
        elif path.is_file():
            items.append(Item(argument))
        elif glob.has_magic(argument):
            matches = sorted(p for p in glob.glob(argument, recursive=True)
                             if os.path.isfile(p) and Path(p).name.lower() not in SYSTEM_JUNK)
            items.extend(_item(p) for p in matches)
            if not matches:
                items.append(Item(argument, "glob matched no files"))
        else:
            items.append(Item(argument, "no such file or folder"))
    return items
