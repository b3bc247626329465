"""Compare an exported graph, run in ONNX Runtime on the CPU, with the torch module it came from, on new inputs
at a batch size the export never saw."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch

from auditor_rt.export.errors import ExportError
from auditor_rt.export.verification.compare import is_local_switch
from auditor_rt.export.verification.reference import fp64_twin
from auditor_rt.runtime.feeds import input_role, make_feed
from auditor_rt.runtime.runners import open_graph

ABSOLUTE = ("logit", "score")  # judged in absolute terms; maps relative to their own max magnitude
TOLERANCE = 1e-4


PARITY_SAMPLES = 4  # SmoothGrad's noisy copies in the parity check: the count is the noise input's shape


def random_feed(inputs, input_size: tuple[int, int], batch: int, seed: int) -> dict[str, np.ndarray]:
    """Random uint8 images (and baselines), seeded noise, and explicit, different target classes: -1 (the
    predicted class) would compare argmaxes of near-tied logits of a random-weight model, where a 1e-7 difference
    can pick another class. Every classifier has classes 0 and 1."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, *input_size, 3), dtype=np.uint8)
    entry = SimpleNamespace(inputs=inputs, method=None, params=None, num_classes=None)  # a GraphEntry's fields
    targets = np.arange(batch, dtype=np.int64) % 2 if "target" in {input_role(spec) for spec in inputs} else None
    return make_feed(entry, images, seed + 1, baselines="random", targets=targets, samples=PARITY_SAMPLES)


class ParityErrors(dict):
    """Max error per output; ``floors`` holds PyTorch FP32's own error for the outputs judged against FP64."""

    def __init__(self, errors: dict[str, float], actual: dict[str, np.ndarray] | None = None,
                 feed: dict[str, np.ndarray] | None = None):
        super().__init__(errors)
        self.floors: dict[str, float] = {}
        self.actual = actual or {}  # ONNX Runtime's outputs on ``feed``: IG's convergence is read from them
        self.feed = feed or {}


def check_parity(module: torch.nn.Module, path: Path, inputs, outputs, input_size, batch: int = 3,
                 seed: int = 1, reference_images: int | None = None) -> dict[str, float]:
    """Max error of each output (maps: relative to their scale; IG's delta: relative to the logits' scale) against
    PyTorch FP32. Past 1e-4, the output is judged as DESIGN.md says, against an FP64 autograd reference: ONNX
    Runtime's error there must stay within 1e-4 or twice PyTorch FP32's own (through a deep trained network, FP32
    flips a few ReLU masks near zero, and a gradient can move by percents; seen with resnet18d). Raises ExportError
    past that.

    ``reference_images``: PyTorch (FP32 and FP64) runs only the first images of the batch, one at a time, and
    those rows are judged; ONNX Runtime still runs the whole batch, so that a graph mixing up images across the
    batch still fails on the first one. For IG, whose every image is steps + 2 forward and backward passes."""
    feed = random_feed(inputs, input_size, batch, seed)
    count = min(batch, reference_images or batch)
    head = {name: value[:count] for name, value in feed.items()}
    expected = torch_outputs(module, head, 1 if count < batch else batch, torch.float32)
    with open_graph(path, inputs, outputs, "onnxruntime", providers="cpu") as runner:
        full = runner.infer(feed)
    actual = {name: value[:count] for name, value in full.items()}
    errors = ParityErrors(_errors(actual, expected), full, feed)
    if all(error <= TOLERANCE for error in errors.values()):
        return errors
    feed = head
    exact = torch_outputs(fp64_twin(module, tuple(input_size)), feed, 1, torch.float64)
    ours, floor = _errors(actual, exact), _errors(expected, exact)
    failed = {}
    for key, error in errors.items():
        if error > TOLERANCE:
            errors[key], errors.floors[key] = ours[key], floor[key]
            if ours[key] > max(TOLERANCE, 2.0 * floor[key]) and not _local_switch(key, actual, exact):
                failed[key] = f"{ours[key]:.2e} against FP64, where PyTorch FP32's own error is {floor[key]:.2e}"
    if failed:
        raise ExportError(f"{path.name} differs from PyTorch past {TOLERANCE}: {failed}; no manifest was written, "
                          "so the folder is not a usable artifact")
    return errors


def _local_switch(key: str, actual: dict[str, np.ndarray], exact: dict[str, np.ndarray]) -> bool:
    """A map that misses the floor rule only by a ReLU switched on rounding noise (``is_local_switch`` in
    export/verification/compare.py). IG's ``delta`` (sum of the map minus the change of the logit) passes when the map's own
    error accounts for it."""
    if key == "delta" and "ig" in actual:
        explained = np.abs(actual["ig"].astype(np.float64) - exact["ig"]).reshape(len(exact["ig"]), -1).sum(axis=1)
        return bool(np.all(np.abs(actual["delta"] - exact["delta"]) <= 1.01 * explained + 1e-6)
                    and _local_switch("ig", actual, exact))
    return exact[key].ndim >= 3 and is_local_switch(actual[key], exact[key], TOLERANCE)


def run_in_chunks(call: Callable[[dict], dict], feed: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """``call`` on consecutive chunks of ``batch`` images of every input, its outputs concatenated."""
    parts: dict[str, list[np.ndarray]] = {}
    total = len(next(iter(feed.values())))
    for start in range(0, total, batch):
        for name, value in call({name: value[start:start + batch] for name, value in feed.items()}).items():
            parts.setdefault(name, []).append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}


def torch_outputs(module: torch.nn.Module, feed: dict[str, np.ndarray], batch: int,
                  dtype: torch.dtype) -> dict[str, np.ndarray]:
    """The module's outputs for the feed in chunks of ``batch``, float inputs cast to ``dtype`` (an FP64 IG
    reference on resnet50 holds every path point's activations in doubles: batch 3 x 18 points ran out of 24 GB,
    so references run a few images at a time)."""
    def call(chunk: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = {}
        for name, value in chunk.items():
            tensor = torch.from_numpy(np.ascontiguousarray(value))
            tensors[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
        with torch.no_grad():
            return {key: value.detach().numpy() for key, value in module(**tensors)._asdict().items()}

    return run_in_chunks(call, feed, batch)


def _errors(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> dict[str, float]:
    logit_scale = float(np.abs(expected["logit"]).max()) if "logit" in expected else 1.0
    errors = {}
    for key, reference in expected.items():
        if key in ABSOLUTE or not np.issubdtype(reference.dtype, np.floating):
            scale = 1.0
        elif key == "delta":
            scale = max(logit_scale, 1e-12)
        else:
            scale = max(float(np.abs(reference).max()), 1e-12)
        errors[key] = float(np.abs(actual[key].astype(np.float64) - reference).max() / scale)
    return errors
