"""What ``infer`` settles before it audits anything: that the sources exist, the run folder (auto-numbered,
``--name`` or ``--resume``; removed again when the run fails before its first record), the decision threshold and
how maps are drawn. A failed command leaves no half-made folder behind."""

from __future__ import annotations

import contextlib

import click

from auditor_rt.cli.errors import CliError


def check_sources_exist(sources) -> None:
    """When not one SOURCE names anything that exists, it is a typo, not a run: a usage error before any folder
    is made. A run with some good sources keeps an error record for each missing one (records equal inputs)."""
    import glob
    import os

    from auditor_rt.runtime.streams import STREAM_SCHEMES

    def may_exist(source: str) -> bool:
        return (source.isdigit() or source.lower().startswith(STREAM_SCHEMES) or glob.has_magic(source)
                or os.path.exists(os.path.expanduser(source)))

    if not any(may_exist(source) for source in sources):
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


def apply_threshold(auditor, threshold) -> None:
    if threshold is None:
        return
    if auditor.is_classifier:
        raise CliError("--threshold is for risk-head artifacts; a classifier reports its top classes")
    auditor.threshold = threshold


def display(auditor, map_smooth, heatmap_scale):
    """How maps are drawn; says once when the artifact has no absolute heatmap scale to use."""
    from auditor_rt.runtime.infer import default_display

    view = default_display(auditor, smooth=map_smooth, heatmap_scale=heatmap_scale)
    if heatmap_scale == "absolute" and view.heatmap_mode != "absolute" and not auditor.is_classifier:
        click.secho("note: this artifact has no absolute heatmap scale (exported before it was recorded), so "
                    "heatmaps use the per-image scale: every image shows a hot spot. Re-train and re-export to get "
                    "one.", fg="yellow", err=True)
    return view


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
