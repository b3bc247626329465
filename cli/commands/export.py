import click

from auditor_rt.cli.options import method_options


@click.command("export")
@click.argument("checkpoint", type=click.Path(exists=True), required=False)
@click.option("-o", "--out", type=click.Path(file_okay=False), required=True, help="Artifact folder, e.g. engines/NAME.")
@click.option("--name", default=None, help="Artifact name (default: the folder name).")
@click.option("--opset", type=click.IntRange(min=17), default=18, show_default=True)
@click.option("--check/--no-check", default=True, show_default=True,
              help="Compare every exported graph with PyTorch in ONNX Runtime.")
@click.option("--attribution", "attributions", default="", metavar="METHODS",
              help="Comma-separated attribution graphs to add: saliency, gradxinput, ig, smoothgrad, gradcam, "
                   "gradcam++, and rollout (ViT attention rollout, no gradient). Gradients are computed inside the "
                   "graph, for every input.")
@click.option("--classifier", default=None, metavar="TIMM_NAME",
              help="Instead of a CHECKPOINT: audit a plain timm classifier with its own head. The class to explain "
                   "is an input (default: the predicted class).")
@click.option("--weights", default="auto", show_default=True,
              help="With --classifier: its weights file, 'auto' (Hugging Face cache) or 'random'.")
@click.option("--num-classes", type=click.IntRange(min=2), default=None,
              help="With --classifier: the head size of a fine-tuned model (default: the model's own).")
@click.option("--input-size", type=click.IntRange(min=32), default=None,
              help="With --classifier: the square input size (default: the model's pretrained size).")
@click.option("--target", type=click.Choice(["onnxruntime", "tensorrt"]), default="onnxruntime", show_default=True,
              help="Where the graphs will run. Every graph is checked against TensorRT's ONNX parser: what it would "
                   "refuse is a warning for onnxruntime, an error for tensorrt (and recorded in the manifest).")
@method_options
def command(checkpoint, out, name, opset, check, attributions, classifier, weights, num_classes, input_size, target,
            method_params):
    """Export a trained CHECKPOINT folder (or, with --classifier, a plain timm classifier) to an artifact: the
    audit (or classify) graph, attribution graphs, weights.bin and manifest.json."""
    from auditor_rt.export.versions import require_export_versions

    require_export_versions()  # before torch is imported: an unsupported one fails in one line, not in a traceback
    from auditor_rt.cli.outputs import output_folder
    from auditor_rt.cli.reporting import print_export
    from auditor_rt.export.models.checkpoint import load_checkpoint
    from auditor_rt.export.graphs.risk_head_export import export_artifact

    methods = [m.strip() for m in attributions.split(",") if m.strip()]
    params = {method: values for method, values in method_params.items() if values}
    if (checkpoint is None) == (classifier is None):
        raise click.UsageError("give a trained CHECKPOINT folder, or --classifier TIMM_NAME, but not both")
    with output_folder(out):  # a failed export leaves no half-made artifact folder
        if classifier:
            from auditor_rt.export.graphs.classifier_export import export_classifier_artifact

            result = export_classifier_artifact(classifier, out, weights, num_classes, input_size, methods, params,
                                                opset=opset, check=check, target=target)
        else:
            result = export_artifact(load_checkpoint(checkpoint), out, name=name, opset=opset, check=check,
                                     attributions=methods, attribution_params=params, target=target)
    print_export(result)
