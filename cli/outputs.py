"""Output folders that a failed command does not leave behind.

A command that fails (a bad option found late, an empty data set, a checkpoint that is not one, Ctrl-C) must not
leave a half-made checkpoint, artifact or run folder that later looks like a result, nor empty folders to clean up
by hand. Wrap the work that writes into a folder in ``output_folder(path)``:

- if ``path`` (or some parent of it) did not exist, the topmost folder that the command created is removed;
- if ``path`` existed, only the entries that the command added at its top level are removed. Entries that were
  there before stay, even if the command overwrote them: that cannot be undone, and deleting a user's files would
  be worse.

For an auto-numbered run folder, wrap its parent and make the run folder inside the block::

    with output_folder("runs/infer"):
        folder = next_run_folder("runs/infer")
        ...

On success nothing is touched, nor on a deliberate exit (``SystemExit``, click's ``ctx.exit``): a command that
ends that way chose to keep what it wrote (infer's records of a run where no image could be audited, say). Errors
propagate unchanged; a cleanup that fails itself only warns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from pathlib import Path

import click


def _topmost_missing(path: Path) -> Path | None:
    """The highest folder on the way to ``path`` (``path`` included) that does not exist yet, or None."""
    missing = None
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            break
        missing = candidate
    return missing


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


@contextlib.contextmanager
def output_folder(path: str | os.PathLike):
    """Yield ``path`` as a Path; on an error (KeyboardInterrupt included) remove what the block added."""
    given = Path(path)
    path = given.absolute()
    created = _topmost_missing(path)
    before = set(os.listdir(path)) if created is None and path.is_dir() and not path.is_symlink() else None
    try:
        yield given
    except (SystemExit, click.exceptions.Exit):
        raise
    except BaseException:
        try:
            if created is not None:
                _remove(created)
            elif before is not None and path.is_dir():
                for name in set(os.listdir(path)) - before:
                    _remove(path / name)
        except OSError as exc:
            warnings.warn(f"could not remove the partial output in {path}: {exc}", stacklevel=3)
        raise
