import click

from auditor_rt.cli.errors import CliError
from auditor_rt.cli.options import backend_options


@click.command("infer")
@click.argument("artifact", type=click.Path())
@click.argument("sources", nargs=-1, required=True)
@click.option("-o", "--out", type=click.Path(file_okay=False), default="runs/infer", show_default=True,
              help="Parent folder of the auto-numbered run folder.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--recursive", is_flag=True, help="Look for images in subfolders of folder sources.")
@click.option("--save-overlays/--no-save-overlays", default=True, show_default=True)
@click.option("--region-threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Heat level that outlines a region.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (records are in results.jsonl).")
@click.option("--explain", default=None, metavar="METHOD",
              help="Also run this attribution graph of the artifact (e.g. gradcam, ig) and save its maps as "
                   "overlays: red/blue for signed maps, a sequential colormap for unsigned ones.")
@backend_options
def command(artifact, sources, out, batch, recursive, save_overlays, region_threshold, as_json, explain, backend,
            providers, threads):
    """Audit images with an exported ARTIFACT. SOURCES are image files, folders and globs."""
    import json

    from auditor_rt.cli.options import parse_providers
    from auditor_rt.runtime.auditor import Auditor
    from auditor_rt.runtime.infer import run_inference
    from auditor_rt.runtime.runfolder import next_run_folder
    from auditor_rt.runtime.sources import expand_sources

    items = expand_sources(sources, recursive=recursive)
    with Auditor.load(artifact, backend=backend, providers=parse_providers(providers), threads=threads,
                      batch_size=batch, region_threshold=region_threshold) as auditor:
        folder = next_run_folder(out)
        with click.progressbar(length=len(items), label="auditing", file=click.get_text_stream("stderr"),
                               show_pos=True) as bar:
            summary = run_inference(auditor, items, folder, save_overlays=save_overlays, progress=bar.update,
                                    explain=explain)
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
        if not summary.ok:
            raise CliError("no image could be audited", 1)
        return
    for record in summary.records:
        if record["status"] == "error":
            click.secho(f"error {record['error']}", fg="yellow", err=True)
    rate = summary.ok / summary.seconds if summary.seconds else 0.0
    flagged = "" if auditor.is_classifier else f", {summary.positives} flagged as risk"
    click.echo(f"{summary.ok} ok, {summary.errors} errors{flagged} in {summary.seconds:.1f} s ({rate:.1f} img/s)")
    click.echo(f"results: {folder / 'results.jsonl'}")
    if summary.ok and save_overlays:
        if not auditor.is_classifier:
            click.echo(f"overlays: {folder / 'overlays'}  contact sheet: {folder / 'contact_sheet.png'}")
    if not summary.ok:
        raise CliError(f"no image could be audited ({summary.errors} errors, listed in {folder / 'results.jsonl'})", 1)
