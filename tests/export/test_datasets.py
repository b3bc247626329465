"""Data sets: listing samples (folders, manifests), the split, the batch loader with its failure records, and the
offline demo set. Every image is made here, a few pixels large; nothing is downloaded."""

from __future__ import annotations

import json
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from auditor_rt.export.training.data import (
    Batch, Sample, demo_backgrounds, load_samples, make_demo_dataset, make_loader, read_image_folder, read_manifest,
    split_samples,
)
from auditor_rt.export.training.data.demo import render_demo_image
from auditor_rt.export.errors import DataError

SIZE = (8, 12)  # (height, width): not square, so a swapped order shows


def write_image(path: Path, value: int, shape=(16, 20)) -> Path:
    """A flat image of one grey level, so a decoded batch row tells which file it came from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix, np.full((*shape, 3), value, np.uint8))
    assert ok
    path.write_bytes(data.tobytes())
    return path


# --- read_image_folder ---------------------------------------------------------------------------------------------

def test_image_folder_labels_come_from_the_positive_class(tmp_path):
    write_image(tmp_path / "hazard" / "a.png", 10)
    write_image(tmp_path / "hazard" / "sub" / "b.jpg", 20)
    write_image(tmp_path / "clear" / "c.png", 30)
    write_image(tmp_path / "other" / "d.bmp", 40)
    (tmp_path / "clear" / "notes.txt").write_text("not an image")
    (tmp_path / "clear" / ".DS_Store.jpg").write_bytes(b"hidden")
    samples = read_image_folder(tmp_path, positive_class="hazard")
    labels = {Path(s.path).name: s.label for s in samples}
    assert labels == {"a.png": 1, "b.jpg": 1, "c.png": 0, "d.bmp": 0}
    assert all(Path(s.path).is_absolute() and s.box is None for s in samples)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no class folders"):
        read_image_folder(tmp_path)
    write_image(tmp_path / "cats" / "a.png", 1)
    write_image(tmp_path / "dogs" / "b.png", 2)
    with pytest.raises(DataError, match="'positive'.*found cats, dogs"):
        read_image_folder(tmp_path)
    (tmp_path / "positive").mkdir()
    (tmp_path / "positive" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="class 'positive' has no images"):
        read_image_folder(tmp_path)


# --- read_manifest -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("header", ["path,label,x0,y0,x1,y1\n", ""])
def test_csv_manifest_with_and_without_header(tmp_path, header):
    folder = tmp_path / "set"
    folder.mkdir()
    absolute = tmp_path / "elsewhere.jpg"
    (folder / "m.csv").write_text(
        header + f"img/a.jpg,1,1,2,10,12\n\n# a comment\nimg/b.jpg,0,,,,\n{absolute},positive\n"
    )
    samples = read_manifest(folder / "m.csv")
    assert samples == [
        Sample(str(folder / "img" / "a.jpg"), 1, (1, 2, 10, 12)),
        Sample(str(folder / "img" / "b.jpg"), 0, None),
        Sample(str(absolute), 1, None),
    ]


def test_jsonl_manifest(tmp_path):
    lines = [{"path": "a.png", "label": 1, "box": [0, 0, 4, 5]}, {"path": "b.png", "label": "neg", "box": None},
             {"path": "c.png", "label": False}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    samples = read_manifest(tmp_path / "m.jsonl")
    assert [(Path(s.path), s.label, s.box) for s in samples] == [
        (tmp_path / "a.png", 1, (0, 0, 4, 5)), (tmp_path / "b.png", 0, None), (tmp_path / "c.png", 0, None)
    ]


@pytest.mark.parametrize("spelling, label", [
    ("1", 1), ("0", 0), ("true", 1), ("False", 0), ("pos", 1), ("NEG", 0), ("positive", 1), (" negative ", 0),
])
def test_label_spellings(tmp_path, spelling, label):
    (tmp_path / "m.csv").write_text(f"a.jpg,{spelling}\n")
    assert read_manifest(tmp_path / "m.csv")[0].label == label


@pytest.mark.parametrize("name, text, bad_line", [
    ("m.csv", "path,label\na.jpg,1\nb.jpg,maybe\n", 3),
    ("m.csv", "a.jpg,1\n\nb.jpg,0,1,2,3\n", 3),          # a box with three numbers
    ("m.csv", "a.jpg,1,5,5,2,9\n", 1),                   # x1 <= x0
    ("m.jsonl", '{"path": "a.jpg", "label": 1}\n{"path": "b.jpg"\n', 2),
    ("m.jsonl", '{"path": "a.jpg", "label": 2}\n', 1),
])
def test_bad_manifest_line_names_file_and_line(tmp_path, name, text, bad_line):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError) as caught:
        read_manifest(tmp_path / name)
    assert f"{tmp_path / name}, line {bad_line}:" in str(caught.value)


# --- load_samples --------------------------------------------------------------------------------------------------

def test_load_samples_dispatches_and_rejects_other_paths(tmp_path):
    write_image(tmp_path / "tree" / "positive" / "a.png", 1)
    write_image(tmp_path / "tree" / "negative" / "b.png", 2)
    assert sorted(s.label for s in load_samples(tmp_path / "tree")) == [0, 1]
    (tmp_path / "m.jsonl").write_text('{"path": "x.png", "label": 1}\n')
    assert load_samples(tmp_path / "m.jsonl") == [Sample(str(tmp_path / "x.png"), 1)]
    (tmp_path / "list.txt").write_text("a.png\n")
    with pytest.raises(DataError, match="not a folder or a .csv/.jsonl manifest"):
        load_samples(tmp_path / "list.txt")
    with pytest.raises(DataError, match="no such"):
        load_samples(tmp_path / "missing")


# --- split_samples -------------------------------------------------------------------------------------------------

def make_samples(n_pos=10, n_neg=15):
    return [Sample(f"/d/{i:03d}.jpg", int(i < n_pos)) for i in range(n_pos + n_neg)]


def test_split_is_stratified_deterministic_and_order_free():
    samples = make_samples()
    train, val = split_samples(samples, val_fraction=0.2, seed=3)
    assert sorted(train + val, key=lambda s: s.path) == samples and not set(train) & set(val)
    assert sorted(s.label for s in val) == [0, 0, 0, 1, 1]
    assert {s.label for s in train} == {0, 1}
    assert split_samples(samples, 0.2, seed=3) == (train, val)
    shuffled = samples[:]
    random.Random(1).shuffle(shuffled)
    assert split_samples(shuffled, 0.2, seed=3) == (train, val)
    assert any(split_samples(samples, 0.2, seed=s)[1] != val for s in range(4, 8))  # the seed matters


def test_split_keeps_both_labels_when_tiny():
    train, val = split_samples(make_samples(2, 2), val_fraction=0.1)
    assert sorted(s.label for s in train) == [0, 1] and sorted(s.label for s in val) == [0, 1]


@pytest.mark.parametrize("n_pos, n_neg, kind", [(1, 5, "1 positive"), (5, 1, "1 negative"), (0, 4, "0 positive")])
def test_split_needs_two_of_each_label(n_pos, n_neg, kind):
    with pytest.raises(DataError, match=kind):
        split_samples(make_samples(n_pos, n_neg))


# --- make_loader and Batch -----------------------------------------------------------------------------------------

@pytest.fixture
def mixed_samples(tmp_path):
    """Seven good images of distinct grey levels (JPEG and PNG, two sizes) and three unreadable files among them."""
    good = [Sample(str(write_image(tmp_path / f"g{i}{'.png' if i % 2 else '.jpg'}", 30 * i + 20,
                                   shape=(16, 20) if i % 3 else (9, 7))), i % 2) for i in range(7)]
    ok, jpeg = cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(jpeg.tobytes()[:40])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("this is not a JPEG\n" * 5)
    bad = [Sample(str(p), 0) for p in (corrupt, empty, text)]
    return good[:2] + bad[:1] + good[2:5] + bad[1:] + good[5:], {s.path for s in bad}


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.timeout(120))])
def test_loader_delivers_good_images_once_and_reports_failures(mixed_samples, workers):
    samples, bad_paths = mixed_samples
    batches = list(make_loader(samples, SIZE, batch_size=4, workers=workers))
    assert all(isinstance(b, Batch) for b in batches) and len(batches) == 3
    indices = [int(i) for b in batches for i in b.indices]
    expected = [i for i, s in enumerate(samples) if s.path not in bad_paths]
    assert sorted(indices) == expected
    for batch in batches:
        assert batch.images.dtype == torch.uint8 and batch.images.shape[1:] == (*SIZE, 3)
        assert len(batch) == len(batch.labels) == len(batch.indices)
        for image, label, index in zip(batch.images, batch.labels, batch.indices):
            sample = samples[int(index)]
            assert float(label) == sample.label
            grey = int(Path(sample.path).stem[1:]) * 30 + 20
            assert np.abs(image.numpy().astype(int) - grey).max() <= 3
    failures = [f for b in batches for f in b.failures]
    assert sorted(path for path, _ in failures) == sorted(bad_paths)
    reasons = {Path(path).name: reason for path, reason in failures}
    assert "empty" in reasons["empty.jpg"] and "not a readable image" in reasons["corrupt.jpg"]
    assert all(reason and not reason.startswith("/") for reason in reasons.values())  # the path is not repeated


def test_a_batch_of_only_failures_is_well_formed(mixed_samples):
    samples, bad_paths = mixed_samples
    bad = [s for s in samples if s.path in bad_paths]
    (batch,) = list(make_loader(bad, SIZE, batch_size=8, workers=0))
    assert len(batch) == 0 and batch.images.shape == (0, *SIZE, 3)
    assert (batch.images.dtype, batch.labels.dtype, batch.indices.dtype) == (torch.uint8, torch.float32, torch.int64)
    assert batch.labels.shape == (0,) and batch.indices.shape == (0,)
    assert sorted(p for p, _ in batch.failures) == sorted(bad_paths)
    moved = batch.to("cpu")
    assert moved.images.shape == (0, *SIZE, 3) and moved.failures == batch.failures


# --- the demo data set ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), n_train=12, n_test=4, size=64, seed=0)


def test_demo_counts_labels_and_boxes(demo):
    for manifest, count in ((demo.train_manifest, 12), (demo.test_manifest, 4)):
        samples = read_manifest(manifest)
        assert len(samples) == count and sum(s.label for s in samples) == count // 2
        for sample in samples:
            image = cv2.imread(sample.path)
            assert image.shape == (64, 64, 3)
            if sample.label == 0:
                assert sample.box is None
                continue
            x0, y0, x1, y1 = sample.box
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            region = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)[y0:y1, x0:x1]
            # At 64 px a hazard is 7-13 px wide and JPEG's chroma subsampling blurs its yellow: ask for a few pixels.
            assert yellow(region).sum() >= 2 and (region.max(axis=2) < 70).sum() >= 3, sample


def yellow(region: np.ndarray) -> np.ndarray:
    r, g, b = (region[..., c].astype(int) for c in range(3))
    return (r > 140) & (g > 100) & (np.minimum(r, g) - b > 60)


def test_rendered_hazard_fills_its_box():
    """Before JPEG, the box holds a real share of the hazard's yellow and of its black stripes and rim."""
    backgrounds = demo_backgrounds()
    for seed in range(10):
        image, box = render_demo_image(np.random.default_rng(seed), backgrounds, 64, positive=True)
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        region = image[y0:y1, x0:x1]
        assert yellow(region).mean() > 0.05 and (region.max(axis=2) < 70).mean() > 0.1, (seed, box)
        assert render_demo_image(np.random.default_rng(seed), backgrounds, 64, positive=False)[1] is None


def test_demo_is_reproducible_per_seed(demo, tmp_path):
    again = make_demo_dataset(tmp_path / "again", n_train=12, n_test=4, size=64, seed=0)
    other = make_demo_dataset(tmp_path / "other", n_train=12, n_test=4, size=64, seed=1)

    def files(root):
        return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    first = files(demo.root)
    assert len(first) == 12 + 4 + 2
    assert files(again.root) == first
    different = files(other.root)
    assert different.keys() == first.keys()
    assert sum(different[k] != first[k] for k in first) >= 14


def test_demo_backgrounds_are_real_photographs():
    backgrounds = demo_backgrounds()
    assert len(backgrounds) >= 5 and len({name for name, _ in backgrounds}) == len(backgrounds)
    for name, image in backgrounds:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
        assert min(image.shape[:2]) >= 128, name
        assert image.std() > 10, name  # not a flat fill
    colourful = [name for name, image in backgrounds if np.abs(image[..., 0].astype(int) - image[..., 2]).mean() > 5]
    assert len(colourful) >= 3
