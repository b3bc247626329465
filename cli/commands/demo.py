import click


@click.command("demo")
@click.option("-o", "--out", type=click.Path(file_okay=False), default="runs/demo", show_default=True,
              help="Parent of the auto-numbered demo folder (data, checkpoint, inference run).")
@click.option("--artifact", type=click.Path(file_okay=False), default="engines/demo", show_default=True,
              help="Where the exported artifact goes (replaced if present).")
@click.option("--backbone", default="resnet50_clip.openai", show_default=True, help="Any timm model name.")
@click.option("--weights", default="auto", show_default=True, help="Backbone weights file, 'auto' or 'random'.")
@click.option("--n-train", type=click.IntRange(min=8), default=480, show_default=True)
@click.option("--n-test", type=click.IntRange(min=4), default=96, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--input-size", type=click.IntRange(min=32), default=224, show_default=True)
@click.option("--pretrain-epochs", type=click.IntRange(min=0), default=0, show_default=True,
              help="First train the backbone end to end on the demo data (train --unfreeze), then freeze it. "
                   "0 keeps the --weights backbone as it is (random unless a file or cached weights are given).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True)
def command(out, artifact, backbone, weights, n_train, n_test, epochs, input_size, pretrain_epochs, seed, workers):
    """Run everything end to end on built-in demo data, offline: make a weakly labelled data set (real photographs
    with and without a hazard sign), train a risk head, export it to ONNX, audit held-out images and score how
    well the heatmaps point at the hazards."""
    from pathlib import Path

    from auditor_rt.export.versions import require_export_versions

    require_export_versions()  # before torch is imported: an unsupported one fails in one line, not in a traceback
    from auditor_rt.cli.outputs import output_folder
    from auditor_rt.export.demo_run import run_demo
    from auditor_rt.export.training.train import TrainConfig
    from auditor_rt.runtime.runfolder import next_run_folder

    cfg = TrainConfig(data="", backbone=backbone, weights=weights, epochs=epochs, input_size=input_size, seed=seed,
                      workers=workers)
    with output_folder(out), output_folder(artifact):  # a failed demo leaves neither its run nor its artifact
        folder = next_run_folder(out)
        result = run_demo(folder, Path(artifact), cfg, n_train, n_test, log=click.echo,
                          pretrain_epochs=pretrain_epochs)
    s = result.summary
    val, test = s["val"], s["test"]
    random_note = (" (RANDOM backbone weights)" if s["random_backbone"] else
                   " (pretrained end to end on the demo data, then frozen)" if s["pretrained_on_demo_data"] else "")
    click.echo(f"\nbackbone {s['backbone']}{random_note}")
    click.echo(f"validation: AUROC {val['auroc']:.3f}  AP {val['ap']:.3f}  pointing game {val['pointing_game']:.3f}")
    click.echo(f"held-out test ({test['images']} images, ONNX Runtime): AUROC {test['auroc']:.3f}  "
               f"AP {test['ap']:.3f}  accuracy {test['accuracy']:.3f}  pointing game {test['pointing_game']:.3f}")
    click.echo(f"feature cache made head epochs {s['cache_speedup']:.0f}x cheaper; timings {s['timings_s']}")
    click.echo(f"\ndemo folder: {result.folder}\n  checkpoint: {s['checkpoint']}\n  artifact:   {s['artifact']}\n"
               f"  overlays:   {s['infer_run']}/overlays\n  contact sheet: {s['infer_run']}/contact_sheet.png\n"
               f"  summary:    {result.folder / 'summary.json'}")
