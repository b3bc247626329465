"""The end-to-end demo: make data, train, export, audit held-out images, and score localisation on them."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from auditor_rt.export.training import metrics
from auditor_rt.export.models.checkpoint import BACKBONE_NAME, load_checkpoint
from auditor_rt.export.training.data import make_demo_dataset, read_manifest
from auditor_rt.export.training.finetune import finetune
from auditor_rt.export.graphs.risk_head_export import export_artifact
from auditor_rt.export.progress import Progress
from auditor_rt.export.training.train import TrainConfig, train
from auditor_rt.runtime.auditor import Auditor
from auditor_rt.runtime.image_file_source import ImageFileSource
from auditor_rt.runtime.pipeline import run_pipeline
from auditor_rt.runtime.sources import Item


@dataclass
class DemoResult:
    folder: Path
    artifact: Path
    summary: dict


def run_demo(folder: Path, artifact_dir: Path, cfg: TrainConfig, n_train: int, n_test: int,
             log: Callable[[str], None] = print, pretrain_epochs: int = 0) -> DemoResult:
    """``pretrain_epochs`` > 0 first trains the backbone end to end (``train --unfreeze``) and then uses it frozen.
    Each step announces itself on stderr with the time left (``Progress``, weighted by the README's 2-core run:
    training 119 s, export 8 s, audit 7 s); its result line follows on ``log``."""
    timings = {}
    steps = ["demo data", *(["pretraining"] if pretrain_epochs else []), "training", "export", "audit"]
    progress = Progress(steps, weights={"demo data": 5.0, "pretraining": 120.0 * pretrain_epochs / cfg.epochs,
                                        "training": 120.0, "export": 8.0, "audit": 7.0}, title="demo")
    start = time.perf_counter()
    with progress.item("demo data"):
        data = make_demo_dataset(folder / "data", n_train=n_train, n_test=n_test, size=cfg.input_size, seed=cfg.seed)
    timings["data_s"] = time.perf_counter() - start
    log(f"[1/4] demo data: {data.n_train} train+val and {data.n_test} held-out images in {data.root}")

    cfg = replace(cfg, data=str(data.train_manifest))
    if pretrain_epochs:
        start = time.perf_counter()
        with progress.item("pretraining"):
            pretrained = finetune(replace(cfg, epochs=pretrain_epochs), folder / "pretrain", log=log)
        timings["pretrain_s"] = time.perf_counter() - start
        cfg = replace(cfg, weights=str(pretrained.folder / BACKBONE_NAME))
        log(f"[2/4] pretrained {cfg.backbone} end to end in {timings['pretrain_s']:.0f} s "
            f"(val AUROC {pretrained.config['metrics']['auroc']:.3f}): {cfg.weights}")
    start = time.perf_counter()
    with progress.item("training"):
        trained = train(cfg, folder / "checkpoint", log=log)
    timings["train_s"] = time.perf_counter() - start
    log(f"[2/4] trained the head on the frozen backbone in {timings['train_s']:.0f} s: {trained.folder}")

    start = time.perf_counter()
    with progress.item("export"):
        exported = export_artifact(load_checkpoint(trained.folder), artifact_dir)
    timings["export_s"] = time.perf_counter() - start
    log(f"[3/4] exported in {timings['export_s']:.0f} s: {exported.folder} "
        f"(parity: {', '.join(f'{k} {v:.1e}' for k, v in exported.parity['audit'].items())})")

    start = time.perf_counter()
    test = read_manifest(data.test_manifest)
    with progress.item("audit"), Auditor.load(artifact_dir) as auditor:
        run = run_pipeline(auditor, ImageFileSource([Item(s.path) for s in test]), folder / "infer",
                           keep_results=True)
    boxed = [i for i, s in enumerate(test) if s.label == 1 and s.box is not None]
    timings["infer_s"] = time.perf_counter() - start
    boxes = np.array([test[i].box for i in boxed])
    scores = np.array([run.results[i].score for i in sorted(run.results)])
    labels = np.array([s.label for s in test])
    summary = {
        "backbone": cfg.backbone,
        "random_backbone": bool(trained.config["weights"]["random"]),
        "pretrained_on_demo_data": bool(pretrain_epochs),
        "val": {k: trained.config["metrics"][k] for k in ("auroc", "ap", "gap", "pointing_game")},
        "test": {
            "auroc": metrics.auroc(scores, labels),
            "ap": metrics.average_precision(scores, labels),
            "accuracy": float(np.mean((scores >= trained.config["threshold"]) == (labels == 1))),
            "pointing_game": metrics.pointing_game(np.stack([run.results[i].heatmap for i in boxed]), boxes),
            "images": int(len(labels)),
        },
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "checkpoint": str(trained.folder),
        "artifact": str(exported.folder),
        "infer_run": str(run.folder),
        "cache_speedup": trained.config["timing"]["cache_speedup"],
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"[4/4] audited {run.ok} held-out images in {timings['infer_s']:.1f} s: {run.folder}")
    return DemoResult(folder, exported.folder, summary)
