import click

from auditor_rt.cli.errors import CliError
from auditor_rt.cli.infer_options import save_options, video_options, view_options
from auditor_rt.cli.infer_setup import check_sources_exist, named_folder, run_folder
from auditor_rt.cli.options import runner_options

STRICT_EXIT = 3  # distinct from 1 (nothing audited) and 2 (usage or artifact errors)


@click.command("infer")
@click.argument("artifact", type=click.Path())
@click.argument("sources", nargs=-1)
@click.option("-o", "--out", type=click.Path(file_okay=False), default="runs/infer", show_default=True,
              help="Parent folder of the auto-numbered run folder.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--recursive", is_flag=True, help="Look for images in subfolders of folder sources.")
@click.option("--region-threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Heat level that outlines a region.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (records are in results.jsonl).")
@click.option("--explain", default=None, metavar="METHOD",
              help="Also run this attribution graph of the artifact (e.g. gradcam, ig), save its maps as PNG "
                   "overlays (red: evidence for risk, blue: against; a sequential colormap for unsigned maps) and "
                   "pair them with the heatmaps on the contact sheet.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Decision threshold on the score (default: the artifact's, chosen on validation data); recorded "
                   "in summary.json.")
@click.option("--name", default=None, help="Name the run folder OUT/NAME instead of auto-numbering it; an existing "
              "non-empty one is refused (continue it with --resume).")
@click.option("--resume", "resume_folder", type=click.Path(file_okay=False), default=None, metavar="RUN_FOLDER",
              help="Continue an interrupted run in its own folder: skip the inputs (and video frames) it already "
                   "recorded, and append to its results.jsonl.")
@click.option("--strict", is_flag=True,
              help=f"Exit with code {STRICT_EXIT} when any input gave an error record (default: 0 when any input "
                   "was audited).")
@click.option("--server", default=None, metavar="URL",
              help="Send the images to a running `auditor-rt serve` at URL instead of loading a model here; then "
                   "every argument is a source (no ARTIFACT).")
@click.option("--token", envvar="AUDITOR_RT_TOKEN", default=None, help="With --server: its bearer token.")
@click.option("--decode-timeout", type=click.FloatRange(min=0.1), default=20.0, show_default=True, metavar="SECONDS",
              help="Images are decoded in separate processes; one that takes longer than this is stopped and "
                   "gets an error record ('too costly to decode').")
@video_options
@save_options
@view_options
@runner_options
def command(artifact, sources, out, batch, recursive, region_threshold, as_json, explain, threshold, name,
            resume_folder, strict, server, token, decode_timeout, video, save, view, runner):
    """Audit images with an exported ARTIFACT. SOURCES are image files, folders, globs and text files listing
    sources (one per line); or video files, webcam indexes (0) and stream URLs (rtsp://, http:// MJPEG or video),
    each tagged by its source."""
    from auditor_rt.cli.infer_setup import check_display, map_display
    from auditor_rt.cli.infer_report import RunProgress, report
    from auditor_rt.runtime.pipeline import run_pipeline
    from auditor_rt.runtime.resume import load_resume_state
    from auditor_rt.runtime.sources import expand_list_files
    from auditor_rt.runtime.streams import is_video_source

    if server:
        sources = (artifact, *sources)  # no artifact here: the server has it
    elif not sources:
        raise click.UsageError("give the ARTIFACT and at least one SOURCE (or --server URL and sources)")
    else:
        from auditor_rt.runtime.artifact import Artifact

        Artifact.load(artifact)  # a wrong ARTIFACT is named first, before the sources (reads the manifest only)
    check_sources_exist(sources)
    named = named_folder(out, name, resume_folder)
    sources = expand_list_files(sources)
    if not sources:
        raise CliError("the source lists name no sources")
    resume = load_resume_state(resume_folder) if resume_folder else None
    if resume is not None and resume.cut_bytes:
        click.secho(f"note: cut a partial last line ({resume.cut_bytes} bytes) from {resume_folder}/results.jsonl",
                    fg="yellow", err=True)
    videos = [source for source in sources if is_video_source(source)]
    images = [source for source in sources if not is_video_source(source)]
    if server and explain:
        raise CliError("--explain runs attribution graphs locally; with --server, ask the server (?explain=METHOD)")
    if videos and explain:
        raise CliError("--explain is for images; video sources are scored with the audit graph only")
    if videos and save.show:
        check_display()  # before a run folder is made
    with _decoder_pool(images, decode_timeout) as decoder, \
            _open_model(artifact, server, token, batch, region_threshold, runner) as model:
        if threshold is not None:
            model.set_threshold(threshold)
        source = _source(images, videos, recursive, resume, decoder, video)
        if source is None:
            click.echo("nothing left to do: every input is already recorded")
            return
        settings = {"threshold_source": "--threshold" if threshold is not None else "artifact"}
        with run_folder(out, resume, named) as folder, RunProgress(source.total, explain) as progress:
            summary = run_pipeline(model, source, folder, save, explain, map_display(model, **view), progress,
                                   append=resume is not None, settings=settings)
    report(summary, as_json)
    nothing_left = resume is not None and not summary.errors  # a resumed run may find nothing left to do
    if not summary.ok and not summary.stopped_by and not nothing_left:
        what = "image" if not videos else "frame" if not images else "input"
        raise CliError(f"no {what} could be audited ({summary.errors} errors, listed in "
                       f"{folder / 'results.jsonl'})", 1)
    if strict and summary.errors:
        raise CliError(f"--strict: {summary.errors} input(s) gave error records", STRICT_EXIT)


def _decoder_pool(images, decode_timeout):
    """The decoder processes for the image sources, started before the model loads so that their start-up (about
    0.15 s) overlaps it; nothing when there are only videos."""
    import contextlib

    if not images:
        return contextlib.nullcontext()
    from auditor_rt.runtime.decoder_pool import DecoderPool

    return DecoderPool(deadline_s=decode_timeout)


def _open_model(artifact, server, token, batch, region_threshold, runner):
    """The local model, or a running server that answers for it."""
    if server:
        from auditor_rt.runtime.serve.client import AuditClient, RemoteAuditor

        return RemoteAuditor(AuditClient(server, token), batch_size=batch)
    from auditor_rt.runtime.auditor import Auditor

    return Auditor.load(artifact, batch_size=batch, region_threshold=region_threshold, **runner)


def _source(images, videos, recursive, resume, decoder, video):
    """The run's source: the image files (those an earlier run recorded left out), then the videos (each going on
    after the last frame recorded; those read to their end left out). None when nothing is left."""
    from auditor_rt.runtime.frames import ChainedSource
    from auditor_rt.runtime.image_file_source import ImageFileSource
    from auditor_rt.runtime.sources import expand_sources
    from auditor_rt.runtime.video_source import VideoSource

    parts = []
    if images:
        items = expand_sources(images, recursive=recursive)
        if resume is not None:
            left = [item for item in items if item.source not in resume.sources]
            click.echo(f"resuming {resume.folder}: {len(items) - len(left)} input(s) already recorded, {len(left)} "
                       "to go", err=True)
            items = left
        if items:
            parts.append(ImageFileSource(items, resume.next_index if resume else 0, decoder))
    if videos:
        if resume is not None:
            videos = [source for source in videos if source not in resume.ended]
        if videos:
            parts.append(VideoSource(videos, skip_through=resume.last_frame if resume else None, **video))
    return None if not parts else parts[0] if len(parts) == 1 else ChainedSource(parts)
