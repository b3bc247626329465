"""What ``infer`` settles before it audits anything: that the sources exist, the run folder (auto-numbered,
``--name`` or ``--resume``; removed again when the run fails before its first record), how maps are drawn and
whether ``--show`` can show them. A failed command leaves no half-made folder behind."""

from __future__ import annotations

import contextlib

import click

from auditor_rt.cli.errors import CliError


def check_sources_exist(sources) -> None:
    """When not one SOURCE names anything that exists, it is a typo, not a run: a usage error before any folder
    is made. A run with some good sources keeps an error record for each missing one (records equal inputs)."""
    import glob
    import os

    from auditor_rt.runtime.streams import is_live_source

    if not any(is_live_source(s) or glob.has_magic(s) or os.path.exists(os.path.expanduser(s)) for s in sources):
        shown = ", ".join(sources[:3]) + (f" and {len(sources) - 3} more" if len(sources) > 3 else "")
        raise click.UsageError(f"no such file or folder: {shown}")


def named_folder(out, name, resume_folder):
    """OUT/NAME for --name: refused when it holds anything already, unless --resume continues that very folder."""
    from pathlib import Path

    if name is None:
        return None
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise click.UsageError(f"--name {name!r}: give a plain folder name (no path separators)")
    folder = Path(out) / name
    if resume_folder is not None:
        if Path(resume_folder).resolve() != folder.resolve():
            raise click.UsageError(f"--name {name} names {folder}, but --resume continues {resume_folder}")
        return folder
    if folder.is_file() or (folder.is_dir() and any(folder.iterdir())):
        raise CliError(f"run folder {folder} already exists and is not empty: choose another --name, or continue "
                       f"it with --resume {folder}")
    return folder


def map_display(model, smooth, heatmap_scale):
    """How maps are drawn; says once when the artifact has no absolute heatmap scale to use."""
    view = model.map_display(smooth=smooth, heatmap_scale=heatmap_scale)
    if heatmap_scale == "absolute" and view.heatmap_mode != "absolute" and model.heatmaps:
        click.secho("note: this model has no absolute heatmap scale (an artifact exported before it was recorded, "
                    "or a server), so heatmaps use the per-image scale: every image shows a hot spot. Re-train and "
                    "re-export to get one.", fg="yellow", err=True)
    return view


def check_display() -> None:
    """``--show`` needs OpenCV built with a GUI (opencv-python, not the headless wheel) and, on Linux, a display."""
    import os
    import sys

    import cv2

    gui = cv2.getBuildInformation().split("GUI:", 1)[-1].split("\n", 1)[0].strip()
    if gui.upper().startswith("NONE"):
        raise CliError("--show needs OpenCV with a GUI: this is opencv-python-headless; install opencv-python in "
                       "its place, or leave --show out and look at the overlays or --save-video")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise CliError("--show needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set")


@contextlib.contextmanager
def run_folder(out, resume, named=None):
    """The run folder: --resume's, --name's, or the next auto-numbered one. A folder this command made is removed
    again when the run fails before its first record, so a failed command leaves nothing behind."""
    import shutil

    from auditor_rt.runtime.runfolder import next_run_folder

    if resume:
        yield resume.folder
        return
    if named is not None:
        made = not named.exists()
        named.mkdir(parents=True, exist_ok=True)
        folder = named
    else:
        folder, made = next_run_folder(out), True
    try:
        yield folder
    except BaseException:
        results = folder / "results.jsonl"
        if made and not (results.is_file() and results.stat().st_size):
            shutil.rmtree(folder, ignore_errors=True)
        raise
