"""Train the risk head on cached features of a frozen backbone.

The backbone runs once over the data set (the cache pass); every epoch after that costs only the head, which is
what makes CPU training of a resnet50-sized backbone take seconds per epoch instead of minutes.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from auditor_rt.export.training import metrics
from auditor_rt.export.models.backbone import FeatureExtractor, Normalize, create_backbone, preprocessing_of
from auditor_rt.export.models.checkpoint import save_checkpoint
from auditor_rt.export.training.data import load_samples, make_loader, split_samples
from auditor_rt.export.models.head import RiskHead
from auditor_rt.export.training.losses import LossWeights, risk_loss
from auditor_rt.export.errors import DataError
from auditor_rt.runtime.errors import ConfigError
from auditor_rt.runtime.imageio import decode_image


@dataclass
class TrainConfig:
    data: str
    positive_class: str = "positive"
    backbone: str = "resnet50_clip.openai"
    weights: str = "auto"
    input_size: int = 224
    pooling: str = "topk"
    topk_fraction: float = 0.1
    hidden: int = 16
    epochs: int = 40
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    loss: LossWeights = field(default_factory=LossWeights)
    val_fraction: float = 0.25
    seed: int = 0
    workers: int = 2

    def __post_init__(self):
        checks = [(self.input_size >= 32, "input_size must be at least 32"),
                  (0.0 < self.topk_fraction <= 1.0, "topk_fraction must be in (0, 1]"),
                  (self.epochs >= 1, "epochs must be at least 1"), (self.batch_size >= 2, "batch_size must be >= 2"),
                  (0.0 < self.val_fraction < 1.0, "val_fraction must be in (0, 1)"), (self.lr > 0, "lr must be > 0"),
                  (self.workers >= 0, "workers must be >= 0"), (self.pooling in ("topk", "avg"), "pooling: topk|avg")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"training config: {message}")


@dataclass
class CachedSplit:
    features: torch.Tensor  # [N, C, h, w] float16
    labels: torch.Tensor    # [N]
    samples: list           # the Sample records that decoded


@dataclass
class TrainResult:
    folder: Path
    config: dict
    history: list[dict]
    skipped: list[tuple[str, str]]


def extract_features(extractor, normalize, samples, cfg: TrainConfig, progress=None) -> tuple[CachedSplit, list]:
    """Run the frozen backbone once over ``samples``; returns the cache and the (path, reason) of skipped files."""
    loader = make_loader(samples, (cfg.input_size, cfg.input_size), batch_size=cfg.batch_size, workers=cfg.workers)
    features, labels, kept, skipped = [], [], [], []
    with torch.inference_mode():
        for batch in loader:
            skipped.extend(batch.failures)
            if len(batch.indices):
                features.append(extractor(normalize(batch.images)).half())
                labels.append(batch.labels)
                kept.extend(samples[i] for i in batch.indices.tolist())
            if progress is not None:
                progress(len(batch.indices) + len(batch.failures))
    if not features:
        shown = "; ".join(f"{path}: {reason}" for path, reason in skipped[:3])
        raise DataError(f"none of {len(samples)} images could be decoded (first: {shown})")
    return CachedSplit(torch.cat(features), torch.cat(labels), kept), skipped


def require_both_classes(split: CachedSplit, name: str, skipped: list) -> None:
    """Ranking metrics and the threshold need positives and negatives; skipped files can empty a class."""
    present = set(split.labels.long().tolist())
    if present != {0, 1}:
        missing = "positive" if 1 not in present else "negative"
        raise DataError(f"the {name} split has no {missing} image that could be decoded ({len(skipped)} files "
                        "skipped); add data or change --val-fraction / --seed")


def evaluate(head: RiskHead, split: CachedSplit, cfg: TrainConfig) -> dict:
    with torch.no_grad():
        out = head(split.features)
        total, parts = risk_loss(out.logit, out.risk_map, split.labels, cfg.loss, cfg.topk_fraction)
    logits, labels = out.logit.numpy(), split.labels.numpy()
    scores = torch.sigmoid(out.logit).numpy()
    return {
        "val_loss": float(total),
        "gap": float(logits[labels > 0.5].mean() - logits[labels <= 0.5].mean()),
        "auroc": metrics.auroc(scores, labels),
        "ap": metrics.average_precision(scores, labels),
        "scores": scores,
    }


def pointing_game(head: RiskHead, split: CachedSplit, input_size: int) -> float | None:
    """Share of positive images with a box whose upsampled risk-map peak lies inside the box."""
    chosen = [i for i, s in enumerate(split.samples) if s.label == 1 and s.box is not None]
    if not chosen:
        return None
    with torch.no_grad():
        maps = head(split.features[chosen]).risk_map[:, None]
        heat = F.interpolate(maps, size=(input_size, input_size), mode="bilinear", align_corners=False)[:, 0]
    boxes = []
    for i in chosen:
        height, width = decode_image(split.samples[i].path).shape[:2]
        x0, y0, x1, y1 = split.samples[i].box
        sx, sy = input_size / width, input_size / height
        boxes.append((x0 * sx, y0 * sy, x1 * sx, y1 * sy))
    return metrics.pointing_game(heat.numpy(), np.array(boxes))


HEATMAP_PERCENTILE = 99.0


def heatmap_scale(head: RiskHead, split: CachedSplit, percentile: float = HEATMAP_PERCENTILE) -> dict:
    """The absolute heatmap scale: the risk-map value drawn as full heat, fixed once on the validation images so
    that heatmaps compare across images. It is a high percentile of the positive part of every validation risk-map
    cell, so the few cells where positives hold their hazard saturate and a confident negative stays cool (the
    graph's own heatmap is min-max normalised per image: every image gets a hot spot). ``risk_map_max`` is None
    when no validation cell is positive (there is then nothing to scale by)."""
    with torch.no_grad():
        maps = head(split.features).risk_map.float().numpy()
    positive = np.maximum(maps, 0.0)
    value = float(np.percentile(positive, percentile)) or float(positive.max())
    return {"risk_map_max": value if value > 0 else None, "chosen_on": "validation", "percentile": percentile,
            "images": int(len(maps))}


@dataclass
class Setup:
    """What every training mode starts from: the split data and the backbone with its preprocessing."""

    train_samples: list
    val_samples: list
    model: torch.nn.Module
    weights: object
    extractor: FeatureExtractor
    normalize: Normalize
    mean: tuple
    std: tuple


def prepare(cfg: TrainConfig, out_dir, log=print) -> Setup:
    """Split the data and build the backbone. The output folder is made first, so that a bad ``-o`` fails before
    any work is done rather than after it."""
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the checkpoint folder {out_dir}: {exc.strerror}") from None
    torch.manual_seed(cfg.seed)
    samples = load_samples(cfg.data, cfg.positive_class)
    train_samples, val_samples = split_samples(samples, cfg.val_fraction, cfg.seed)
    model, weights = create_backbone(cfg.backbone, cfg.weights)
    extractor = FeatureExtractor(model, (cfg.input_size, cfg.input_size))
    mean, std = preprocessing_of(model)
    log(f"data: {len(train_samples)} train / {len(val_samples)} val images from {cfg.data}; "
        f"backbone {cfg.backbone} ({weights.source}), features {extractor.channels}x{extractor.grid}")
    return Setup(train_samples, val_samples, model, weights, extractor, Normalize(mean, std), mean, std)


class BestKeeper:
    """Keeps the head (and optionally backbone) state of the epoch with the best validation ranking."""

    def __init__(self):
        self.key, self.epoch, self.states, self.scores = None, None, None, None

    def offer(self, epoch: int, row: dict, scores, *modules) -> None:
        key = (row["auroc"], row["ap"], -row["val_loss"])
        if self.key is None or key > self.key:
            self.key, self.epoch, self.scores = key, epoch, scores
            self.states = [copy.deepcopy(m.state_dict()) for m in modules]

    def restore(self, *modules) -> None:
        for module, state in zip(modules, self.states):
            module.load_state_dict(state)


def history_row(epoch: int, sums: dict, batches: int, val: dict) -> dict:
    return {"epoch": epoch, **{k: v / max(batches, 1) for k, v in sums.items()},
            **{k: v for k, v in val.items() if k != "scores"}}


def format_row(row: dict) -> str:
    """One log line per epoch: the three losses, the logit gap and the validation ranking metrics."""
    return (f"epoch {row['epoch']:3d}  loss {row['loss']:.4f}  bce {row['bce']:.4f}  pair {row['pair']:.4f}  "
            f"patch {row['patch']:.4f}  | val gap {row['gap']:+.3f}  AUROC {row['auroc']:.3f}  AP {row['ap']:.3f}")


def add_losses(sums: dict, total, parts: dict) -> None:
    sums["loss"] = sums.get("loss", 0.0) + float(total.detach())
    for key, value in parts.items():
        sums[key] = sums.get(key, 0.0) + float(value.detach())


def finish(cfg: TrainConfig, setup: Setup, out_dir, head: RiskHead, history: list, best: BestKeeper,
           val_split: CachedSplit, timing: dict, skipped: list, save_backbone: bool | None = None) -> TrainResult:
    """Choose the threshold, score localisation, and write the checkpoint, history and curves."""
    threshold = metrics.choose_threshold(best.scores, val_split.labels.numpy())
    final = dict(history[best.epoch - 1])
    final["pointing_game"] = pointing_game(head, val_split, cfg.input_size)
    config = {
        **asdict(cfg), "loss": asdict(cfg.loss), "input_size": [cfg.input_size, cfg.input_size],
        "mean": list(setup.mean), "std": list(setup.std), "threshold": threshold, "best_epoch": best.epoch,
        "metrics": final, "timing": timing, "heatmap_scale": heatmap_scale(head, val_split),
        "data_counts": {"train": len(setup.train_samples), "val": len(setup.val_samples), "skipped": len(skipped)},
    }
    folder = Path(out_dir)
    config = save_checkpoint(folder, config, head, setup.model, setup.weights, save_backbone)
    _write_history(folder, history)
    return TrainResult(folder, config, history, skipped)


def train(cfg: TrainConfig, out_dir: str | Path, log=print) -> TrainResult:
    """Frozen backbone: cache its features once, then train only the head for ``cfg.epochs``."""
    from tqdm import tqdm

    setup = prepare(cfg, out_dir, log)
    start = time.perf_counter()
    total = len(setup.train_samples) + len(setup.val_samples)
    with tqdm(total=total, desc="caching features", unit="img", leave=False) as bar:
        train_split, skipped = extract_features(setup.extractor, setup.normalize, setup.train_samples, cfg, bar.update)
        val_split, val_skipped = extract_features(setup.extractor, setup.normalize, setup.val_samples, cfg,
                                                  bar.update)
    extract_s = time.perf_counter() - start
    skipped += val_skipped
    require_both_classes(train_split, "training", skipped)
    require_both_classes(val_split, "validation", skipped)

    head = RiskHead(setup.extractor.channels, cfg.pooling, cfg.topk_fraction, cfg.hidden)
    head.set_feature_stats(train_split.features)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    history, best, epoch_times = [], BestKeeper(), []
    bar = tqdm(range(1, cfg.epochs + 1), desc="training head", unit="epoch", leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        sums: dict = {}
        batches = torch.randperm(len(train_split.labels), generator=generator).split(cfg.batch_size)
        head.train()
        for idx in batches:
            out = head(train_split.features[idx])
            loss, parts = risk_loss(out.logit, out.risk_map, train_split.labels[idx], cfg.loss, cfg.topk_fraction)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            add_losses(sums, loss, parts)
        head.eval()
        val = evaluate(head, val_split, cfg)
        epoch_times.append(time.perf_counter() - t0)  # training and validation: what an epoch really costs
        row = history_row(epoch, sums, len(batches), val)
        history.append(row)
        bar.write(format_row(row))
        bar.set_postfix(loss=f"{row['loss']:.3f}", gap=f"{row['gap']:.2f}", auroc=f"{row['auroc']:.3f}")
        best.offer(epoch, row, val["scores"], head)
    bar.close()
    best.restore(head)
    head_epoch_s = float(np.median(epoch_times))
    timing = {"feature_cache_s": round(extract_s, 3), "head_epoch_s": round(head_epoch_s, 4),
              "cache_speedup": round((extract_s + head_epoch_s) / max(head_epoch_s, 1e-9), 1)}
    return finish(cfg, setup, out_dir, head, history, best, val_split, timing, skipped)


def _write_history(folder: Path, history: list[dict]) -> None:
    import json

    from auditor_rt.export.training.plots import plot_curves

    with open(folder / "history.jsonl", "w") as handle:
        for row in history:
            handle.write(json.dumps(row) + "\n")
    plot_curves(history, folder / "curves.png")
