"""Max-pool backward in ONNX Runtime on CPU: the TensorRT-buildable form (``--target tensorrt``: the first maximum
recomputed from the input with ArgMax, scattered back with a one-hot transposed convolution) against the indexed
form (``--target onnxruntime``: MaxPool's indices output, as torch's own decomposition writes it), side by side in
one run. The faster one in ORT is the one ``--target onnxruntime`` keeps (``rules.ONNXRUNTIME_FORMS``).

Two measurements, each at batch 1 and 8, medians of shuffled rounds (``_common.time_interleaved``):
- the backward of one max pool alone (resnet's stem pool: 64 channels, 3x3, stride 2, at 112x112 for a 224 input);
- the whole saliency graph of a random-weight backbone (default resnet50 at 224).

    python benchmarks/max_pool_backward.py [--backbone resnet50] [--size 224] [--batches 1 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import TUNED_CONFIG, build_modules, ort_session, time_interleaved  # noqa: E402
from _machine import cpu_model, load_average  # noqa: E402

from auditor_rt.export.attribution import create_attribution  # noqa: E402
from auditor_rt.export.attribution.compiler import compile_gradient  # noqa: E402
from auditor_rt.export.conversion.torch_to_onnx import export_graph  # noqa: E402

FORMS = {"indexed (onnxruntime)": "onnxruntime", "ArgMax + ConvTranspose (tensorrt)": "tensorrt"}


class Gradient(NamedTuple):
    grad: torch.Tensor


class PoolBackward(torch.nn.Module):
    """The input gradient of a 3x3 stride-2 max pool for a given output gradient, compiled to forward ops."""

    def __init__(self, example: torch.Tensor, target: str):
        super().__init__()

        def gradient(x, g):
            _, vjp = torch.func.vjp(lambda v: torch.nn.functional.max_pool2d(v, 3, 2, 1), x)
            return vjp(g)[0]

        self.compiled = compile_gradient(gradient, example, torch.nn.functional.max_pool2d(example, 3, 2, 1),
                                         target=target)

    def forward(self, x, g) -> Gradient:
        return Gradient(self.compiled(x, g))


def export_both(name: str, build, example, folder: Path, input_names) -> dict[str, Path]:
    """The graph ``build(target)`` makes, exported for each target (so with each form of the max-pool backward)."""
    paths = {}
    for form, target in FORMS.items():
        paths[form] = folder / f"{name}_{target}.onnx"
        export_graph(build(target), paths[form], example, input_names=input_names)
    return paths


def time_pair(paths: dict[str, Path], feeds: dict[str, np.ndarray], batch: int, repeats: int) -> dict:
    runners = {}
    for form, path in paths.items():
        session = ort_session(path, config=TUNED_CONFIG)
        runners[form] = (lambda s: (lambda: s.run(None, feeds)))(session)
    return time_interleaved(runners, batch, repeats)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_model()}; load average before: {load_average()}")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stem = torch.randn(2, 64, args.size // 2, args.size // 2)
        pooled = torch.nn.functional.max_pool2d(stem, 3, 2, 1)
        pool_paths = export_both("pool", lambda target: PoolBackward(stem, target), (stem, torch.randn_like(pooled)), folder,
                                 ("x", "g"))
        audit = build_modules(args.backbone, (args.size, args.size))["audit"]
        example = torch.randint(0, 256, (2, args.size, args.size, 3), dtype=torch.uint8)
        saliency_paths = export_both("saliency", lambda target: create_attribution("saliency", audit, example,
                                                                             target=target), example,
                                     folder, ("image",))
        header = " ".join(f"{form + ' ms':>36s}" for form in FORMS)
        print(f"{'graph':28s} {'batch':>5s} {header}  tensorrt/onnxruntime")
        for batch in args.batches:
            x = rng.standard_normal((batch, 64, args.size // 2, args.size // 2)).astype(np.float32)
            g = rng.standard_normal((batch, 64, *pooled.shape[2:])).astype(np.float32)
            images = rng.integers(0, 256, (batch, args.size, args.size, 3), dtype=np.uint8)
            for label, paths, feeds in (("max-pool backward alone", pool_paths, {"x": x, "g": g}),
                                        (f"{args.backbone} saliency", saliency_paths, {"image": images})):
                timings = time_pair(paths, feeds, batch, args.repeats)
                old, new = (timings[form].median_ms for form in FORMS)
                print(f"{label:28s} {batch:5d} {old:36.2f} {new:36.2f}  {new / old:.3f}")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
