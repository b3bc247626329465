"""``train --unfreeze``: train backbone and head end to end, so that a small backbone learns real features offline.

Its saved backbone (``backbone.safetensors``) is then the ``--weights`` of an ordinary frozen-backbone run. This is
how the demo gets features that localise without downloading pretrained weights.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from auditor_rt.export.training.data import make_loader
from auditor_rt.export.models.head import RiskHead
from auditor_rt.export.training.losses import risk_loss
from auditor_rt.export.training.train import (BestKeeper, TrainConfig, TrainResult, add_losses, evaluate, extract_features,
                                     finish, format_row, history_row, prepare, require_both_classes)


def finetune(cfg: TrainConfig, out_dir: str | Path, log=print, backbone_lr: float | None = None) -> TrainResult:
    from tqdm import tqdm

    setup = prepare(cfg, out_dir, log)
    model, extractor, normalize = setup.model, setup.extractor, setup.normalize
    model.requires_grad_(True)
    head = RiskHead(extractor.channels, cfg.pooling, cfg.topk_fraction, cfg.hidden)
    size = (cfg.input_size, cfg.input_size)
    loader = make_loader(setup.train_samples, size, batch_size=cfg.batch_size, workers=cfg.workers, shuffle=True,
                         seed=cfg.seed)
    # The head's feature standardisation stays the identity here: the features change as the backbone learns,
    # and stats fixed on the untrained backbone blow the risk maps up.
    optimizer = torch.optim.AdamW([
        {"params": model.parameters(), "lr": backbone_lr or cfg.lr / 3},  # gentler: the backbone has far more weights
        {"params": head.parameters(), "lr": cfg.lr},
    ], weight_decay=cfg.weight_decay)
    history, best, skipped, epoch_times = [], BestKeeper(), [], []
    val_split = None
    bar = tqdm(range(1, cfg.epochs + 1), desc="training backbone+head", unit="epoch", leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train(), head.train()
        sums, batches = {}, 0
        for batch in loader:
            if epoch == 1:
                skipped.extend(batch.failures)
            if not len(batch.indices):
                continue
            images = batch.images
            flip = torch.rand(len(images)) < 0.5  # horizontal flips: the hazard can face either way
            images = torch.where(flip[:, None, None, None], images.flip(2), images)
            out = head(extractor(normalize(images)))
            loss, parts = risk_loss(out.logit, out.risk_map, batch.labels, cfg.loss, cfg.topk_fraction)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            add_losses(sums, loss, parts)
            batches += 1
        model.eval(), head.eval()
        epoch_times.append(time.perf_counter() - t0)
        val_split, val_skipped = extract_features(extractor, normalize, setup.val_samples, cfg)
        if epoch == 1:  # decoding is deterministic (no augmentation at decode time): one epoch lists every skip
            skipped.extend(val_skipped)
            require_both_classes(val_split, "validation", skipped)
        val = evaluate(head, val_split, cfg)
        row = history_row(epoch, sums, batches, val)
        history.append(row)
        bar.write(format_row(row))
        bar.set_postfix(loss=f"{row['loss']:.3f}", auroc=f"{row['auroc']:.3f}")
        best.offer(epoch, row, val["scores"], head, model)
    bar.close()
    best.restore(head, model)
    model.requires_grad_(False)
    val_split, _ = extract_features(extractor, normalize, setup.val_samples, cfg)
    timing = {"epoch_s": round(float(np.median(epoch_times)), 2), "feature_cache_s": None, "head_epoch_s": None,
              "cache_speedup": None}
    return finish(cfg, setup, out_dir, head, history, best, val_split, timing, skipped, save_backbone=True)
