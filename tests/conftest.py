"""Shared fixtures: a tiny demo data set, a checkpoint trained on it and its exported artifact, built once per
session with timm's smallest test backbone so the whole chain runs in seconds on a CPU."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

TINY_BACKBONE = "test_resnet"
TINY_SIZE = 96


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    from auditor_rt.export.training.data import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo"), n_train=32, n_test=8, size=TINY_SIZE, seed=0)


@pytest.fixture(scope="session")
def tiny_config(demo_data):
    from auditor_rt.export.training.train import TrainConfig

    return TrainConfig(data=str(demo_data.train_manifest), backbone=TINY_BACKBONE, weights="random",
                       input_size=TINY_SIZE, epochs=3, batch_size=8, workers=0)


@pytest.fixture(scope="session")
def checkpoint_dir(tiny_config, tmp_path_factory):
    from auditor_rt.export.training.train import train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(tiny_config, tmp_path_factory.mktemp("ckpt") / "checkpoint", log=lambda *_: None)
    return result.folder


@pytest.fixture(scope="session")
def artifact_dir(checkpoint_dir, tmp_path_factory):
    from auditor_rt.export.models.checkpoint import load_checkpoint
    from auditor_rt.export.graphs.risk_head_export import export_artifact

    return export_artifact(load_checkpoint(checkpoint_dir), tmp_path_factory.mktemp("engines") / "tiny").folder


@pytest.fixture
def python_exe() -> str:
    return sys.executable


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture(scope="session")
def explain_artifact_dir(checkpoint_dir, tmp_path_factory):
    """The tiny checkpoint exported with attribution graphs (few IG steps, to stay quick)."""
    from auditor_rt.export.models.checkpoint import load_checkpoint
    from auditor_rt.export.graphs.risk_head_export import export_artifact

    result = export_artifact(load_checkpoint(checkpoint_dir), tmp_path_factory.mktemp("engines") / "explain",
                             attributions=["saliency", "ig", "smoothgrad", "gradcam", "gradcam++"],
                             attribution_params={"ig": {"steps": 4}, "smoothgrad": {"samples": 3}})
    return result.folder


@pytest.fixture(scope="session")
def bomb_png() -> bytes:
    """A decompression bomb: a PNG header declaring 20000 x 20000 RGB pixels (1.2 GB decoded), 4 kB of data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + chunk(b"IEND", b""))
