import click

from auditor_rt.cli.errors import CliError
from auditor_rt.cli.infer_setup import apply_threshold, check_sources_exist, display, named_folder, run_folder
from auditor_rt.cli.options import backend_options

STRICT_EXIT = 3  # distinct from 1 (nothing audited) and 2 (usage or artifact errors)


@click.command("infer")
@click.argument("artifact", type=click.Path())
@click.argument("sources", nargs=-1)
@click.option("-o", "--out", type=click.Path(file_okay=False), default="runs/infer", show_default=True,
              help="Parent folder of the auto-numbered run folder.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--recursive", is_flag=True, help="Look for images in subfolders of folder sources.")
@click.option("--save-overlays/--no-save-overlays", default=True, show_default=True)
@click.option("--region-threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Heat level that outlines a region.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (records are in results.jsonl).")
@click.option("--explain", default=None, metavar="METHOD",
              help="Also run this attribution graph of the artifact (e.g. gradcam, ig), save its maps as PNG "
                   "overlays (red: evidence for risk, blue: against; a sequential colormap for unsigned maps) and "
                   "pair them with the heatmaps on the contact sheet.")
@click.option("--map-smooth", type=click.FloatRange(min=0), default=4.0, show_default=True, metavar="SIGMA",
              help="Display smoothing of --explain maps: a Gaussian sigma in model-input pixels (0: raw pixels). "
                   "Only the pictures; records and --save-maps keep the raw maps.")
@click.option("--heatmap-scale", type=click.Choice(["absolute", "image"]), default="absolute", show_default=True,
              help="'absolute': heat on the scale fixed on validation data at training time, so a confident "
                   "negative looks cool; 'image': min-max per image (every image gets a hot spot). Artifacts "
                   "without an absolute scale use 'image'.")
@click.option("--save-maps", is_flag=True,
              help="Also write the raw maps as float32 .npy files under maps/ (risk_map, heatmap and the --explain "
                   "map), named in each record.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Decision threshold on the score (default: the artifact's, chosen on validation data); recorded "
                   "in summary.json.")
@click.option("--name", default=None, help="Name the run folder OUT/NAME instead of auto-numbering it; an existing "
              "non-empty one is refused (continue it with --resume).")
@click.option("--vid-stride", type=click.IntRange(min=1), default=1, show_default=True,
              help="Video sources: score every Nth frame.")
@click.option("--stream-buffer", type=click.Choice(["all", "latest"]), default="all", show_default=True,
              help="Video sources: 'all' scores every frame; 'latest' keeps only the newest (low latency on live "
                   "streams; drops are counted).")
@click.option("--read-timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds before a blocked network read is cut.")
@click.option("--reconnect-attempts", type=click.IntRange(min=0), default=5, show_default=True,
              help="Live streams: reopen attempts after a drop (backoff doubles each time).")
@click.option("--reconnect-delay", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Live streams: seconds before the first reopen attempt.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Video sources: stop after N frames.")
@click.option("--duration", type=click.FloatRange(min=0.1), default=None, help="Video sources: stop after S seconds.")
@click.option("--save-video", is_flag=True,
              help="Video sources: also write an annotated video per source (videos/NAME.avi, every scored frame).")
@click.option("--show", is_flag=True,
              help="Video sources: show each scored frame in a window (needs a display and OpenCV with a GUI).")
@click.option("--only-positive", is_flag=True, help="Save overlays of risk images and frames only (every input "
              "still gets its record).")
@click.option("--every-n-seconds", type=click.FloatRange(min=0), default=0.0,
              help="Video sources: save at most one overlay per source every S seconds of video.")
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
@backend_options
def command(artifact, sources, out, batch, recursive, save_overlays, region_threshold, as_json, explain, map_smooth,
            heatmap_scale, save_maps, threshold, name, vid_stride, stream_buffer, read_timeout, reconnect_attempts,
            reconnect_delay, max_frames, duration, save_video, show, only_positive, every_n_seconds, resume_folder,
            strict, server, token, decode_timeout, backend, providers, threads):
    """Audit images with an exported ARTIFACT. SOURCES are image files, folders, globs and text files listing
    sources (one per line); or video files, webcam indexes (0) and stream URLs (rtsp://, http:// MJPEG or video),
    each tagged by its source_id."""
    from auditor_rt.cli.options import parse_providers
    from auditor_rt.runtime.resume import load_resume_state
    from auditor_rt.runtime.sources import expand_list_files
    from auditor_rt.runtime.streams import StreamOptions, is_video_source

    if server:
        sources = (artifact, *sources)  # no artifact here: the server has it
    elif not sources:
        raise click.UsageError("give the ARTIFACT and at least one SOURCE (or --server URL and sources)")
    else:
        from auditor_rt.runtime.artifact import Artifact

        Artifact.load(artifact)  # a wrong ARTIFACT is named first, before the sources (reads the manifest only)
    check_sources_exist(sources)
    if server and threshold is not None:
        raise CliError("--threshold sets a local model's decision; with --server the server's threshold decides")
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
    if videos and show:
        from auditor_rt.runtime.stream_infer import check_display

        check_display()  # before a run folder is made
    load = dict(backend=backend, providers=parse_providers(providers), threads=threads, batch_size=batch,
                region_threshold=region_threshold)
    parts = {}
    with _decoder_pool(images, decode_timeout) as decoder, \
            _open_auditor(artifact, server, token, batch, load) as auditor:
        apply_threshold(auditor, threshold)
        if explain:
            from auditor_rt.runtime.explain import check_method

            check_method(auditor.artifact, explain)  # before a run folder is made
        view = display(auditor, map_smooth, heatmap_scale) if images else None
        mixed = bool(images and videos)
        with run_folder(out, resume, named) as folder:
            if images:  # images first, then the videos into the same run folder
                parts["images"] = _images(auditor, images, folder, recursive, save_overlays, only_positive, explain,
                                          as_json, resume, mixed, view, save_maps,
                                          {"threshold_source": "--threshold" if threshold is not None else "artifact"},
                                          decoder)
            if videos:
                from auditor_rt.runtime.stream_infer import SaveRule

                options = StreamOptions(vid_stride=vid_stride, buffer=stream_buffer, read_timeout=read_timeout,
                                        reconnect_attempts=reconnect_attempts, reconnect_delay=reconnect_delay)
                save = SaveRule(enabled=save_overlays, only_positive=only_positive, every_n_seconds=every_n_seconds,
                                video=save_video, show=show)
                parts["videos"] = _videos(auditor, videos, folder, options, save, max_frames, duration, as_json,
                                          resume, mixed)
    errors = sum(part.errors for part in parts.values())
    audited = sum(part.ok for part in parts.values())
    if mixed:
        _write_mixed_summary(folder, parts)
        if not audited and (errors or resume is None):
            raise CliError(f"nothing could be audited ({errors} errors, listed in {folder / 'results.jsonl'})", 1)
    if strict and errors:
        raise CliError(f"--strict: {errors} input(s) gave error records", STRICT_EXIT)


def _decoder_pool(images, decode_timeout):
    """The decoder processes for the image sources, started before the model loads so that their start-up (about
    0.15 s) overlaps it; nothing when there are only videos."""
    import contextlib

    if not images:
        return contextlib.nullcontext()
    from auditor_rt.runtime.decoder_pool import DecoderPool
    from auditor_rt.runtime.infer import default_decode_workers

    return DecoderPool(default_decode_workers(), deadline_s=decode_timeout)


def _open_auditor(artifact, server, token, batch, load):
    """The local model, or a running server that answers for it."""
    if server:
        from auditor_rt.runtime.serve.client import AuditClient, RemoteAuditor

        return RemoteAuditor(AuditClient(server, token), batch_size=batch)
    from auditor_rt.runtime.auditor import Auditor

    return Auditor.load(artifact, **load)


def _write_mixed_summary(folder, parts: dict) -> None:
    """One summary.json for a run of images and videos: the totals, and each part's own summary."""
    import json

    totals = {key: sum(part.to_dict()[key] for part in parts.values()) for key in ("ok", "errors", "positives")}
    document = {"run_folder": str(folder), **totals, "results": str(folder / "results.jsonl"),
                **{name: part.to_dict() for name, part in parts.items()}}
    (folder / "summary.json").write_text(json.dumps(document, indent=2) + "\n")


def _images(auditor, sources, folder, recursive, save_overlays, only_positive, explain, as_json, resume,
            mixed=False, view=None, save_maps=False, settings=None, decoder=None):
    """Image files, folders and globs; returns the summary. ``mixed``: videos follow, so a run whose images all
    failed is not over yet, and the run's summary.json is written once both are done."""
    import json

    from auditor_rt.cli.progress_line import ProgressLine
    from auditor_rt.runtime.infer import InferSummary, run_inference
    from auditor_rt.runtime.sources import expand_sources

    items = expand_sources(sources, recursive=recursive)
    if resume is not None:
        skipped = sum(item.source in resume.sources for item in items)
        items = [item for item in items if item.source not in resume.sources]
        click.echo(f"resuming {resume.folder}: {skipped} input(s) already recorded, {len(items)} to go", err=True)
        if not items:
            click.echo("nothing left to do: every image is already recorded")
            return InferSummary(folder)
    bar = ProgressLine(len(items), click.get_text_stream("stderr"),
                       label=f"auditing (--explain {explain})" if explain else "auditing")

    def progress(count, depth):
        bar.update(count, f"writer queue {depth}" if depth else "")

    try:
        summary = run_inference(auditor, items, folder, save_overlays=save_overlays, progress=progress,
                                explain=explain, append=resume is not None,
                                start_index=resume.next_index if resume else 0,
                                summary_name=None if mixed else "summary.json", only_positive=only_positive,
                                display=view, save_raw_maps=save_maps, settings=settings, decoder=decoder)
    finally:
        bar.close()
    _warn_ig(summary)
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
    else:
        for record in summary.records:
            if record["status"] == "error":
                click.secho(f"error {record['error']}", fg="yellow", err=True)
        rate = summary.ok / summary.seconds if summary.seconds else 0.0
        flagged = "" if auditor.is_classifier else f", {summary.positives} flagged as risk"
        stopped = f", stopped by {summary.stopped_by} (--resume {folder} does the rest)" if summary.stopped_by else ""
        click.echo(f"{summary.ok} ok, {summary.errors} errors{flagged} in {summary.seconds:.1f} s ({rate:.1f} img/s)"
                   f"{stopped}")
        click.echo(f"results: {folder / 'results.jsonl'}")
        if summary.ok and save_overlays and not auditor.is_classifier:
            click.echo(f"overlays: {folder / 'overlays'}  contact sheet: {folder / 'contact_sheet.png'}")
        elif (folder / "contact_sheet.png").is_file():
            click.echo(f"contact sheet: {folder / 'contact_sheet.png'}")
    if not summary.ok and not mixed and not summary.stopped_by:
        raise CliError(f"no image could be audited ({summary.errors} errors, listed in {folder / 'results.jsonl'})", 1)
    return summary


def _warn_ig(summary) -> None:
    """Once per run: IG maps whose attributions do not add up to the logit difference (too few steps)."""
    ig = summary.ig
    if ig and ig["unconverged"]:
        click.secho(f"warning: integrated gradients did not converge on {ig['unconverged']} of {ig['checked']} "
                    f"image(s): |delta| reached {ig['worst_gap']:.0%} of |logit(image) - logit(baseline)| (allowed "
                    f"10%) at {ig['steps']} steps; re-export with --ig-steps {ig['suggested_steps']} (an estimate: "
                    "the gap is taken to shrink as 1/steps^2). Records say ig_converged: false.",
                    fg="yellow", err=True)


def _videos(auditor, sources, folder, options, save, max_frames, duration, as_json, resume, mixed=False):
    """Video files, webcams and streams; returns the summary. ``mixed``: the run folder already holds this run's
    image records; the videos' are appended, and the run's summary.json is written once both are done."""
    import json
    import time

    from auditor_rt.runtime.stream_infer import run_stream

    err = click.get_text_stream("stderr")
    began = time.perf_counter()

    def progress(summary, depth):
        fps = summary.ok / max(time.perf_counter() - began, 1e-9)
        err.write(f"\r{summary.ok} frames, {fps:.1f} fps, {summary.positives} risk, {summary.events} events, "
                  f"{summary.errors} errors, queue {depth}  ")
        err.flush()

    summary = run_stream(auditor, sources, folder, options, max_frames=max_frames, duration=duration, save=save,
                         progress=progress, resume=resume, append=mixed,
                         summary_name=None if mixed else "summary.json")
    err.write("\n")
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
    else:
        stopped = f", stopped by {summary.stopped_by}" if summary.stopped_by else ""
        click.echo(f"{summary.ok} frames ok, {summary.errors} errors, {summary.events} events, {summary.dropped} "
                   f"dropped in {summary.seconds:.1f} s ({summary.fps:.1f} fps){stopped}")
        click.echo(f"results: {folder / 'results.jsonl'}")
    nothing_left = resume is not None and not summary.errors  # a resumed run may find nothing left to do
    if not summary.ok and not nothing_left and not mixed:
        raise CliError(f"no frame could be audited ({summary.errors} errors, listed in {folder / 'results.jsonl'})", 1)
    return summary
