import click

FAIL_EXIT = 1  # 0: everything passed; 2: a usage or artifact error (nothing could be judged)


def _named_values(option: str, pairs) -> dict[str, float]:
    """--atol heatmap:1e-3 (or graph/output:value, or *:value) -> {"heatmap": 0.001}."""
    values = {}
    for pair in pairs:
        name, sep, text = pair.rpartition(":")
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not sep or not name or value < 0:
            raise click.BadParameter(f"{pair!r}: write NAME:VALUE, e.g. heatmap:1e-3", param_hint=option)
        values[name] = value
    return values


@click.command("verify")
@click.argument("artifact", type=click.Path())
@click.option("--backend", type=click.Choice(["onnxruntime", "ort-tensorrt", "tensorrt", "all"]),
              default="onnxruntime", show_default=True,
              help="What to compare with PyTorch: ONNX Runtime (CPU or CUDA), ONNX Runtime's TensorRT execution "
                   "provider (ort-tensorrt), or the artifact's native TensorRT engines (tensorrt: `auditor-rt "
                   "build`). 'all' runs every backend available here and lists the others as not available.")
@click.option("--images", type=click.Path(file_okay=False), default=None,
              help="A folder of real images to compare on (up to --max-images), beside the random and edge inputs.")
@click.option("--random", "random_count", type=click.IntRange(min=0), default=2, show_default=True,
              help="Seeded random images to add.")
@click.option("--max-images", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--atol", multiple=True, metavar="NAME:VALUE",
              help="Absolute tolerance for an output (name, graph/name or *), elementwise as numpy's allclose; "
                   "repeat for several. Default: an error within 1e-4 of the map's scale or twice PyTorch FP32's.")
@click.option("--rtol", multiple=True, metavar="NAME:VALUE", help="Relative tolerance for an output, as --atol.")
@click.option("--error-quantile", type=click.FloatRange(0, 1), default=0.99, show_default=True,
              help="Also report this quantile of each output's absolute error.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="fp16 checks the FP16 TensorRT engines (tensorrt) or runs ORT's TensorRT provider in FP16 "
                   "(ort-tensorrt), and judges them loosely on values, strictly on correlation (>= 0.99) and "
                   "decisions.")
@click.option("--graphs", default=None, metavar="NAMES", help="Comma-separated graphs to check (default: all).")
@click.option("--checkpoint", type=click.Path(file_okay=False), default=None,
              help="The head checkpoint folder, where it moved from the path the manifest records.")
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Write report.json and report.html (the worst inputs' maps side by side) into this folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of the table.")
@click.option("--providers", default="auto", show_default=True,
              help="ORT execution providers for the onnxruntime backend: auto, cuda, cpu.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads for ONNX Runtime.")
@click.option("--quick", is_flag=True,
              help="A first look in a fraction of the time: at most 2 real images and 1 random one, and IG and "
                   "SmoothGrad (whose steps are fixed in the graph) on 3 inputs only.")
def command(artifact, backend, images, random_count, max_images, atol, rtol, error_quantile, precision, graphs,
            checkpoint, batch, seed, report_dir, as_json, providers, threads, quick):
    """Check that ARTIFACT computes what its PyTorch model computes: every output of every graph (scores, risk
    maps, heatmaps, attribution maps) on real, random and edge-case images, against the model rebuilt from the
    manifest; plus digests, the ONNX checker, opsets and metadata. Exit 0: all pass; 1: a check failed; 2: a usage
    or artifact error."""
    import json
    import sys

    from auditor_rt.export.versions import require_export_versions

    require_export_versions()  # before torch is imported: an unsupported one fails in one line, not in a traceback
    from auditor_rt.cli.options import parse_providers
    from auditor_rt.export.verification.verify import BACKENDS, VerifyOptions, verify_artifact

    options = VerifyOptions(
        backends=BACKENDS if backend == "all" else (backend,), images=images, random=random_count,
        max_images=max_images, batch=batch, seed=seed, atol=_named_values("--atol", atol),
        rtol=_named_values("--rtol", rtol), quantile=error_quantile, precision=precision,
        graphs=[g.strip() for g in graphs.split(",") if g.strip()] if graphs else None, checkpoint=checkpoint,
        providers=parse_providers(providers), threads=threads, quick=quick)
    err = sys.stderr
    report = verify_artifact(artifact, options, log=lambda message: err.write(f"{message}\n"))
    if report_dir:
        from auditor_rt.export.verification.verify_report import write_report

        json_path, html_path = write_report(report, report_dir)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        from auditor_rt.export.verification.verify_table import table_lines

        for text, style in table_lines(report):
            click.secho(text, **style)
        if report_dir:
            click.echo(f"report: {html_path}  ({json_path.name} beside it)")
    if not report.passed:
        failed = [f"{c.graph}/{c.output} on {c.backend}" for c in report.comparisons if not c]
        failed += [f.check for f in report.integrity if not f.ok]
        raise _Failed(failed)


class _Failed(click.ClickException):
    exit_code = FAIL_EXIT

    def __init__(self, failed):
        shown = ", ".join(failed[:6]) + (f" and {len(failed) - 6} more" if len(failed) > 6 else "")
        super().__init__(f"verify FAILED: {shown}")
