"""Fixtures of the runtime tests, without torch: the artifacts are the tiny closed-form ONNX graphs checked in under
``tiny/`` (``tiny/make_tiny_artifacts.py`` says what they compute and writes them), the images are drawn with
numpy and OpenCV. These override the training-based fixtures of ``tests/conftest.py`` for this folder, so that
``pytest tests/runtime`` runs in a runtime-only install (``pip install .``).

Each session works on its own copies of the artifacts, so a test that damages one cannot change the checked-in
files (nor another session's)."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from tiny.drawing import red_square

TINY = Path(__file__).resolve().parent / "tiny"


def _copy(name: str, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("engines") / name
    shutil.copytree(TINY / name, folder)
    return folder


@pytest.fixture(scope="session")
def artifact_dir(tmp_path_factory) -> Path:
    """A risk-head artifact (the ``audit`` graph only): scores the red in an image."""
    return _copy("risk", tmp_path_factory)


@pytest.fixture(scope="session")
def explain_artifact_dir(tmp_path_factory) -> Path:
    """The same risk head with saliency, ig (4 steps), smoothgrad (3 samples), gradcam and gradcam++ graphs."""
    return _copy("risk_explain", tmp_path_factory)


@pytest.fixture(scope="session")
def classifier_artifact_dir(tmp_path_factory) -> Path:
    """A plain classifier of 3 classes (red, green, blue) with saliency, ig (a baseline input) and gradcam."""
    return _copy("classifier", tmp_path_factory)


@dataclass(frozen=True)
class DemoData:
    """The fields of ``export``'s DemoData: ``root/images/{train,test}/NNNN.jpg`` and ``root/{train,test}.csv``
    (path, label, x0, y0, x1, y1). Positives hold a red square, negatives are grey."""

    root: Path
    train_manifest: Path
    test_manifest: Path
    n_train: int
    n_test: int
    size: int


def make_demo_data(root: Path, n_train: int = 8, n_test: int = 8, size: int = 96, seed: int = 0) -> DemoData:
    manifests = {}
    for split_id, (split, count) in enumerate((("train", n_train), ("test", n_test))):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for index in range(count):
            rng = np.random.default_rng([seed, split_id, index])
            positive = index % 2 == 0
            box = None
            if positive:
                side = int(rng.integers(size // 4, size // 2))
                x0, y0 = (int(v) for v in rng.integers(0, size - side, 2))
                box = (x0, y0, x0 + side, y0 + side)
            image = red_square((size, size), box, seed=int(rng.integers(1 << 30)))
            relative = f"images/{split}/{index:04d}.jpg"
            cv2.imwrite(str(root / relative), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            rows.append([relative, int(positive), *(box or ("", "", "", ""))])
        manifests[split] = root / f"{split}.csv"
        with open(manifests[split], "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "x0", "y0", "x1", "y1"])
            writer.writerows(rows)
    return DemoData(root, manifests["train"], manifests["test"], n_train, n_test, size)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> DemoData:
    """JPEGs like the demo data set's, drawn for the tiny risk head: half hold a red square."""
    return make_demo_data(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def checkpoint_dir():
    pytest.fail("runtime tests do not train: use artifact_dir / explain_artifact_dir (tiny ONNX graphs); "
                "a test that needs a torch checkpoint belongs in tests/export")


@pytest.fixture(scope="session")
def tiny_config():
    pytest.fail("runtime tests do not train: a test that needs a training config belongs in tests/export")
