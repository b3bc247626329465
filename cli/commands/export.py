import click


@click.command("export")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("-o", "--out", type=click.Path(file_okay=False), required=True, help="Artifact folder, e.g. engines/NAME.")
@click.option("--name", default=None, help="Artifact name (default: the folder name).")
@click.option("--opset", type=click.IntRange(min=17), default=18, show_default=True)
@click.option("--check/--no-check", default=True, show_default=True,
              help="Compare the exported graph with PyTorch in ONNX Runtime.")
def command(checkpoint, out, name, opset, check):
    """Export a trained CHECKPOINT folder to an artifact: audit.onnx and manifest.json."""
    from auditor_rt.cli.reporting import print_export
    from auditor_rt.export.checkpoint import load_checkpoint
    from auditor_rt.export.onnx_export import export_artifact

    print_export(export_artifact(load_checkpoint(checkpoint), out, name=name, opset=opset, check=check))
