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
    doc = art.manifest.document
    if as_json:
        click.echo(json.dumps({**art.manifest.to_dict(), "digests": checks}, indent=2))
        return
    pre = art.manifest.preprocess
    model = doc.get("model", {})
    weights = model.get("weights", {})
    click.echo(f"artifact   {art.name}  ({art.folder})")
    click.echo(f"backbone   {model.get('backbone')}  weights: {'RANDOM' if weights.get('random') else weights.get('source')}")
    click.echo(f"input      {pre.dtype} {pre.layout} {pre.color} {pre.input_size[0]}x{pre.input_size[1]}, "
               f"mean {tuple(round(v, 4) for v in pre.mean)}, std {tuple(round(v, 4) for v in pre.std)}")
    click.echo(f"threshold  {art.manifest.threshold:.4f}")
    metrics = doc.get("training", {}).get("metrics", {})
    if metrics:
        shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, (int, float))}
        click.echo(f"training   {shown}")
    for name, graph in art.manifest.graphs.items():
        outputs = ", ".join(f"{o.name}{list(o.shape)}" for o in graph.outputs)
        click.echo(f"graph      {name}: {graph.file} (opset {graph.opset}, sha256 {checks[name]}) -> {outputs}")
