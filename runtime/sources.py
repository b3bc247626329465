"""Expand what a user typed (files, folders, globs) into image items, keeping every unusable argument as an error
record so that the records of a run always equal its inputs."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from auditor_rt.runtime.imageio import is_image_path


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


def _folder_images(folder: Path, recursive: bool) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and is_image_path(p))


def expand_sources(arguments: Iterable[str], recursive: bool = False) -> list[Item]:
    items: list[Item] = []
    for argument in arguments:
        argument = os.path.expanduser(argument)
        path = Path(argument)
        if path.is_dir():
            found = _folder_images(path, recursive)
            items.extend(Item(str(p)) for p in found)
            if not found:
                hint = "" if recursive else " (use --recursive to look in subfolders)"
                items.append(Item(argument, f"folder has no images{hint}"))
        elif path.is_file():
            items.append(Item(argument))
        elif glob.has_magic(argument):
            matches = sorted(p for p in glob.glob(argument, recursive=True)
                             if os.path.isfile(p) and is_image_path(p))
            items.extend(Item(p) for p in matches)
            if not matches:
                items.append(Item(argument, "glob matched no image files"))
        else:
            items.append(Item(argument, "no such file or folder"))
    return items
