"""Compare an exported graph, run in ONNX Runtime on the CPU, with the torch module it came from, on new inputs
at a batch size the export never saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from auditor_rt.runtime.errors import ExportError

ABSOLUTE = ("logit", "score")  # judged in absolute terms; maps relative to their own max magnitude
TOLERANCE = 1e-4


def random_feed(inputs, input_size: tuple[int, int], batch: int, seed: int) -> dict[str, np.ndarray]:
    """uint8 images for image inputs, unit normal values for float inputs (noise), at ``batch``."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in inputs:
        if spec.name == "target":
            # Explicit, different classes: -1 (the predicted class) would compare argmaxes of near-tied logits
            # of a random-weight model, where a 1e-7 difference can pick another class.
            feed[spec.name] = np.arange(batch, dtype=np.int64) % 2  # every classifier has classes 0 and 1
        elif spec.dtype == "uint8":
            feed[spec.name] = rng.integers(0, 256, (batch, *input_size, 3), dtype=np.uint8)
        else:
            shape = [batch] + [d if isinstance(d, int) else 4 for d in spec.shape[1:]]
            feed[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def check_parity(module: torch.nn.Module, path: Path, inputs, outputs, input_size, batch: int = 3,
                 seed: int = 1) -> dict[str, float]:
    """Max error of each output (maps: relative to their scale; IG's delta: relative to the logits' scale).
    Raises ExportError past 1e-4."""
    from auditor_rt.runtime.runners.onnxruntime import OnnxRuntimeRunner

    feed = random_feed(inputs, input_size, batch, seed)
    with torch.no_grad():
        expected = module(**{spec.name: torch.from_numpy(feed[spec.name]) for spec in inputs})._asdict()
    with OnnxRuntimeRunner(path, inputs, outputs, providers="cpu") as runner:
        actual = runner.infer(feed)
    logit_scale = float(np.abs(expected["logit"].numpy()).max()) if "logit" in expected else 1.0
    errors = {}
    for key, reference in expected.items():
        reference = reference.numpy()
        if key in ABSOLUTE:
            scale = 1.0
        elif key == "delta":
            scale = max(logit_scale, 1e-12)
        else:
            scale = max(float(np.abs(reference).max()), 1e-12)
        errors[key] = float(np.abs(actual[key] - reference).max() / scale)
    failed = {k: v for k, v in errors.items() if v > TOLERANCE}
    if failed:
        raise ExportError(f"{path.name} differs from PyTorch past {TOLERANCE}: {failed}; no manifest was written, "
                          "so the folder is not a usable artifact")
    return errors
