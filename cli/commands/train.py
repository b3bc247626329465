import click


@click.command("train")
@click.argument("data", type=click.Path(exists=True))
@click.option("-o", "--out", type=click.Path(file_okay=False), default=None,
              help="Checkpoint folder (default: an auto-numbered runs/train/run-NNN).")
@click.option("--positive-class", default="positive", show_default=True, help="ImageFolder class that is label 1.")
@click.option("--backbone", default="resnet50_clip.openai", show_default=True, help="Any timm model name.")
@click.option("--weights", default="auto", show_default=True,
              help="Backbone weights: a local file (.safetensors/.pth), 'auto' (Hugging Face cache if present, else "
                   "random with a warning) or 'random'.")
@click.option("--input-size", type=click.IntRange(min=32), default=224, show_default=True)
@click.option("--pooling", type=click.Choice(["topk", "avg"]), default="topk", show_default=True)
@click.option("--topk-fraction", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.1, show_default=True,
              help="Share of risk-map cells used by top-k pooling and the patch loss.")
@click.option("--epochs", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True)
@click.option("--w-bce", type=float, default=1.0, show_default=True, help="Weight of the BCE loss.")
@click.option("--w-pair", type=float, default=0.5, show_default=True, help="Weight of the pairwise ranking loss.")
@click.option("--w-patch", type=float, default=0.5, show_default=True, help="Weight of the top-k patch loss.")
@click.option("--val-fraction", type=click.FloatRange(0.05, 0.9), default=0.25, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True, help="Image loading processes.")
@click.option("--unfreeze", is_flag=True,
              help="Train the backbone too (no feature cache). Its saved backbone.safetensors can then be the "
                   "--weights of a frozen run: a way to get real features offline.")
def command(data, out, positive_class, backbone, weights, input_size, pooling, topk_fraction, epochs, batch_size,
            lr, w_bce, w_pair, w_patch, val_fraction, seed, workers, unfreeze):
    """Train a risk head on a frozen backbone from weakly labelled images.

    DATA is an ImageFolder root (root/<class>/*.jpg) or a CSV/JSONL manifest (path,label[,x0,y0,x1,y1]).
    """
    from auditor_rt.export.versions import require_export_versions

    require_export_versions()  # before torch is imported: an unsupported one fails in one line, not in a traceback
    from auditor_rt.cli.outputs import output_folder
    from auditor_rt.cli.reporting import print_training
    from auditor_rt.export.training.losses import LossWeights
    from auditor_rt.export.training.train import TrainConfig, train
    from auditor_rt.runtime.runfolder import next_run_folder

    cfg = TrainConfig(data=data, positive_class=positive_class, backbone=backbone, weights=weights,
                      input_size=input_size, pooling=pooling, topk_fraction=topk_fraction, epochs=epochs,
                      batch_size=batch_size, lr=lr, loss=LossWeights(w_bce, w_pair, w_patch),
                      val_fraction=val_fraction, seed=seed, workers=workers)
    if unfreeze:
        from auditor_rt.export.training.finetune import finetune as train
    with output_folder(out or "runs/train"):  # a failed run leaves no checkpoint folder behind
        result = train(cfg, out or next_run_folder("runs/train"), log=click.echo)
    print_training(result)
