"""Batches of uint8 images for training and evaluation, decoded in worker processes.

Images are decoded with the runtime's own ``load_for_model`` so that training sees the pixels the exported graph will
see. An unreadable image becomes a failure record in its batch instead of an exception: one bad file in ten thousand
should be reported, not end a training run, and a batch may hold no good images at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Union

import cv2
import torch
from torch.utils.data import DataLoader, Dataset

from auditor_rt.export.training.data.records import Sample
from auditor_rt.export.errors import DataError
from auditor_rt.runtime.errors import ConfigError, ImageDecodeError
from auditor_rt.runtime.imageio import load_for_model

Size = Union[int, tuple[int, int]]


@dataclass
class LoadedItem:
    """One decoded sample: ``image`` is uint8 HxWx3 RGB at the model's input size."""

    image: torch.Tensor
    label: float
    index: int


@dataclass
class FailedItem:
    """A sample whose file could not be read or decoded, and why."""

    path: str
    reason: str
    index: int


@dataclass
class Batch:
    """Good images stacked as uint8 NHWC (the exported graph's input layout), plus the files that failed."""

    images: torch.Tensor  # uint8 [N, H, W, 3]
    labels: torch.Tensor  # float32 [N]
    indices: torch.Tensor  # int64 [N], positions in the sample list
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device, non_blocking: bool = False) -> "Batch":
        move = partial(torch.Tensor.to, device=device, non_blocking=non_blocking)
        return Batch(move(self.images), move(self.labels), move(self.indices), list(self.failures))

    def pin_memory(self) -> "Batch":
        """Called by ``DataLoader(pin_memory=True)`` for custom batch types."""
        return Batch(self.images.pin_memory(), self.labels.pin_memory(), self.indices.pin_memory(), self.failures)


class SampleDataset(Dataset):
    """Decodes and resizes each sample on access; a decode failure is returned, not raised."""

    def __init__(self, samples: list[Sample], size: Size):
        self.samples = list(samples)
        self.size = _as_hw(size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Union[LoadedItem, FailedItem]:
        sample = self.samples[index]
        try:
            image = load_for_model(sample.path, self.size)
        except (ImageDecodeError, OSError) as exc:
            return FailedItem(sample.path, _reason(sample.path, exc), index)
        return LoadedItem(torch.from_numpy(image), float(sample.label), index)


def collate_samples(items: list[Union[LoadedItem, FailedItem]], size: Size) -> Batch:
    """Stack the good items; ``size`` gives the empty batch its [0, H, W, 3] shape when every item failed."""
    height, width = _as_hw(size)
    good = [item for item in items if isinstance(item, LoadedItem)]
    failures = [(item.path, item.reason) for item in items if isinstance(item, FailedItem)]
    if good:
        images = torch.stack([item.image for item in good])
    else:
        images = torch.empty((0, height, width, 3), dtype=torch.uint8)
    labels = torch.tensor([item.label for item in good], dtype=torch.float32)
    indices = torch.tensor([item.index for item in good], dtype=torch.int64)
    return Batch(images, labels, indices, failures)


def make_loader(
    samples: list[Sample],
    size: Size,
    batch_size: int = 32,
    workers: int = 2,
    shuffle: bool = False,
    seed: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader of ``Batch``; with ``shuffle`` the order comes from a generator seeded with ``seed``, so a run
    can be repeated. Workers are not persistent: a loader is built per pass and should not hold processes after."""
    if not samples:
        raise DataError("no samples to load; check the data set path")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if workers < 0:
        raise ConfigError(f"workers must be 0 (load in this process) or more, got {workers}")
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        SampleDataset(samples, size),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=partial(collate_samples, size=size),
        generator=generator,
        persistent_workers=False,
        pin_memory=pin_memory,
        worker_init_fn=_init_worker if workers > 0 else None,
        # Fresh interpreters, not forks: a fork taken after torch's or OpenCV's thread pools have run can
        # deadlock the child on a lock held by a thread that no longer exists (seen here: the demo hung).
        multiprocessing_context="spawn" if workers > 0 else None,
    )


def _init_worker(worker_id: int) -> None:
    """One OpenCV thread per worker: the workers are the parallelism, and N workers x N cores threads thrash."""
    cv2.setNumThreads(1)


def _as_hw(size: Size) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise ConfigError(f"image size must be positive, got {size}")
    return int(height), int(width)


def _reason(path: str, exc: Exception) -> str:
    """The cause without the path that ``decode_image`` puts first, since the failure record already holds it."""
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else (text or type(exc).__name__)

