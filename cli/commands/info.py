import click


@click.command("info")
@click.argument("artifact", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
def command(artifact, as_json):
    """Describe an artifact folder and check the digest of every graph in it."""
    import json

    from auditor_rt.runtime.artifact import Artifact

    art = Artifact.load(artifact)
    checks = art.verify()
    manifest = art.manifest
    if as_json:
        click.echo(json.dumps({**manifest.to_dict(), "digests": checks}, indent=2))
        return
    pre = manifest.preprocess
    weights = manifest.model.weights
    click.echo(f"artifact   {art.name}  ({art.folder})")
    click.echo(f"backbone   {manifest.model.backbone}  weights: {'RANDOM' if weights.random else weights.source}")
    click.echo(f"input      {pre.dtype} {pre.layout} {pre.color} {pre.input_size[0]}x{pre.input_size[1]}, "
               f"mean {tuple(round(v, 4) for v in pre.mean)}, std {tuple(round(v, 4) for v in pre.std)}")
    if manifest.threshold is not None:
        click.echo(f"threshold  {manifest.threshold:.4f}")
    else:
        click.echo(f"decision   {manifest.decision.rule or 'none recorded'}")
    metrics = manifest.training.metrics if manifest.training else {}
    if metrics:
        shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, (int, float))}
        click.echo(f"training   {shown}")
    for name, graph in manifest.graphs.items():
        outputs = ", ".join(f"{o.name}{list(o.shape)}" for o in graph.outputs)
        click.echo(f"graph      {name}: {graph.file} (opset {graph.opset}, sha256 {checks[name]}) -> {outputs}")
