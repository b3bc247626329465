"""A trained head on disk: ``head.safetensors`` plus ``config.json`` (everything needed to rebuild and export it).

A random-weight backbone is saved beside the head (``backbone.safetensors``): random init is not reproducible
across torch versions, and export must see the exact features that training saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from auditor_rt.export.models.backbone import FeatureExtractor, WeightsInfo, create_backbone
from auditor_rt.export.models.head import RiskHead
from auditor_rt.runtime.artifact import sha256_file
from auditor_rt.runtime.errors import ConfigError

CONFIG_NAME, HEAD_NAME, BACKBONE_NAME = "config.json", "head.safetensors", "backbone.safetensors"


@dataclass
class Checkpoint:
    folder: Path
    config: dict
    head: RiskHead

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.config["input_size"])

    def build_backbone(self) -> FeatureExtractor:
        """Recreate the frozen backbone with the weights recorded at training, checking their digest."""
        weights = self.config["weights"]
        source = weights["source"]
        if weights.get("file"):
            source = str(self.folder / weights["file"])
        if Path(source).is_file() and sha256_file(source) != weights["sha256"]:
            raise ConfigError(f"{source}: backbone weights differ from the ones used in training (SHA-256 mismatch)")
        if not Path(source).is_file():
            raise ConfigError(f"backbone weights {source} recorded in {self.folder / CONFIG_NAME} are missing; copy "
                              "them back to that path (checkpoints name external weights by absolute path)")
        model, _ = create_backbone(self.config["backbone"], source)
        return FeatureExtractor(model, self.input_size)


def save_checkpoint(folder: str | Path, config: dict, head: RiskHead, backbone: torch.nn.Module,
                    weights: WeightsInfo, save_backbone: bool | None = None) -> dict:
    """Write the head, the config (returned, as written) and the backbone itself when its weights exist nowhere
    else: random ones, or ones changed by ``train --unfreeze`` (``save_backbone=True``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(folder / HEAD_NAME))
    record = {"source": weights.source, "sha256": weights.sha256, "random": weights.is_random}
    if save_backbone or (save_backbone is None and weights.is_random):
        path = folder / BACKBONE_NAME
        save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(path))
        record.update(file=BACKBONE_NAME, sha256=sha256_file(path), random=weights.is_random and not save_backbone)
    config = {**config, "weights": record, "head": head.config()}
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return config


def load_checkpoint(folder: str | Path) -> Checkpoint:
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    config_path, head_path = folder / CONFIG_NAME, folder / HEAD_NAME
    if not config_path.is_file() or not head_path.is_file():
        raise ConfigError(f"{folder}: not a checkpoint folder (needs {CONFIG_NAME} and {HEAD_NAME}); "
                          "create one with `auditor-rt train`")
    try:
        config = json.loads(config_path.read_text())
        head_cfg = config["head"]
        head = RiskHead(head_cfg["channels"], head_cfg["pooling"], head_cfg["topk_fraction"], head_cfg["hidden"])
        head.load_state_dict(load_file(str(head_path)))
        for key in ("backbone", "weights", "input_size", "mean", "std", "threshold"):
            config[key]
    except Exception as exc:  # json, safetensors and torch raise many types for damaged files
        raise ConfigError(f"{folder}: damaged checkpoint ({type(exc).__name__}: {exc}); re-run `auditor-rt train`") from None
    return Checkpoint(folder, config, head.eval())
