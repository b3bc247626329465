"""The eager side of ``attribution.py``: pytorch-grad-cam and Captum on the same risk model, map comparisons, and the
peak-memory probe that runs one contender in a fresh process.

Top-level imports are numpy and the standard library only: the probe of an ORT contender must not import torch
(the runtime never does), so torch, captum and pytorch-grad-cam load inside the eager functions.

    python benchmarks/_attribution_refs.py --probe ort:ig --batch 1 --folder DIR   # prints one JSON line
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

METHODS = ("gradcam", "saliency", "ig", "smoothgrad")
EAGER_TOOL = {"gradcam": "pytorch-grad-cam GradCAM", "saliency": "Captum Saliency",
              "ig": "Captum IntegratedGradients", "smoothgrad": "Captum NoiseTunnel(Saliency)"}
HEAD_ONLY = "torch, head-only grad (ref)"
SAMPLE_CHUNK = 16  # images per eager chunk for the sampled methods (one image's SmoothGrad samples)


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark: VmHWM from /proc/self/status, in MiB.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries the parent's high-water mark across fork + exec into
    the child's ru_maxrss, so a probe started from the benchmark (1.7 GB at that point) would never read less.
    VmHWM belongs to the address space that exec made fresh. ru_maxrss is the fallback off Linux.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_images(batch: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, *size, 3), dtype=np.uint8)


def smoothgrad_noise(batch: int, samples: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Unit-normal noise [N, S, 3, H, W] equal to what Captum's NoiseTunnel draws after ``torch.manual_seed(seed)``
    (it draws ``torch.normal(0, stdev)`` for the inputs repeated-interleaved, i.e. image-major), so that ORT and
    Captum see the same noisy copies and their maps can be compared exactly."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch * samples, 3, *size, generator=generator).reshape(batch, samples, 3, *size).numpy()


# ---- ORT contenders ---------------------------------------------------------------------------------------------

def ort_feed(method: str, images: np.ndarray, noise: np.ndarray | None) -> dict[str, np.ndarray]:
    return {"image": images, **({"noise": noise} if method == "smoothgrad" else {})}


def ort_attribution_runner(session, method: str, images: np.ndarray, noise: np.ndarray | None,
                           per_image: bool) -> Callable[[], object]:
    """One ``session.run`` on the batch, or (``per_image``) one run per image: the path methods' graphs put every
    image's path points or noisy copies into one inner batch, whose activations must all live at once."""
    if not per_image:
        feed = ort_feed(method, images, noise)
        return lambda: session.run(None, feed)
    feeds = [ort_feed(method, images[i:i + 1], None if noise is None else noise[i:i + 1]) for i in range(len(images))]
    return lambda: [session.run(None, feed) for feed in feeds]


def ort_session_for(path: Path, threads: int, mem_pattern: bool = True):
    """The product's CPU session options: full optimisation, intra-op threads that sleep instead of spinning."""
    import onnxruntime as ort

    from auditor_rt.runtime.runners.onnxruntime import session_options

    opts = session_options(threads)
    opts.enable_mem_pattern = mem_pattern
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


# ---- eager contenders -------------------------------------------------------------------------------------------

def logit_model(audit):
    """Normalised float NCHW -> risk logit [N, 1], so Captum's target=0 and ClassifierOutputTarget(0) pick it.

    Parameters require grad, as in any model a user loads (PyTorch's default). Captum's ``autograd.grad`` w.r.t.
    the input computes no weight gradients either way; pytorch-grad-cam's ``loss.backward()`` does, and it needs
    them: with frozen weights and an input that needs no grad, ``layer4``'s output has no gradient to record.
    """
    from torch import nn

    class LogitModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.features, self.head = audit.features, audit.head

        def forward(self, x):
            return self.head(self.features(x)).logit[:, None]

    return LogitModel().eval().requires_grad_(True)


def normalized_input(audit, images: np.ndarray):
    import torch

    with torch.no_grad():
        return audit.normalize(torch.from_numpy(images)).contiguous()


def black_baseline(audit, x):
    import torch

    with torch.no_grad():
        return audit.normalize(torch.zeros(1, 1, 1, 3, dtype=torch.uint8)).expand_as(x).contiguous()


def eager_runners(method: str, audit, model, x, steps: int, samples: int, noise_level: float):
    """{name: runner} for ``method``: the eager tool, plus (Grad-CAM only) a hand-written head-only reference that
    prices the algorithm apart from the tool. Returns the runners and the tool object (for its saved tensors)."""
    import torch

    n = x.shape[0]
    if method == "gradcam":
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = GradCAM(model, [audit.features.model.layer4])
        targets = [ClassifierOutputTarget(0)] * n
        return {EAGER_TOOL[method]: lambda: cam(x, targets), HEAD_ONLY: lambda: head_only_gradcam(audit, x)}, cam
    if method == "saliency":
        from captum.attr import Saliency

        tool = Saliency(model)
        return {EAGER_TOOL[method]: lambda: tool.attribute(x, target=0)}, tool
    if method == "ig":
        from captum.attr import IntegratedGradients

        tool, baseline = IntegratedGradients(model), black_baseline(audit, x)
        return {EAGER_TOOL[method]: lambda: tool.attribute(x, baselines=baseline, target=0, n_steps=steps,
                                                            method="gausslegendre", internal_batch_size=steps)}, tool
    if method == "smoothgrad":
        from captum.attr import NoiseTunnel, Saliency

        tool = NoiseTunnel(Saliency(model))
        stdev = float(noise_level * (x[0].max() - x[0].min()))  # ours: noise_level x (max - min) per image
        chunk = max(1, SAMPLE_CHUNK // n)  # samples per partition: about 16 images per forward+backward

        def run():
            torch.manual_seed(0)  # the same noise on every call, and the noise that smoothgrad_noise() returns
            return tool.attribute(x, nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=chunk,
                                  stdevs=stdev, target=0)

        return {EAGER_TOOL[method]: run}, tool
    raise ValueError(f"unknown method {method!r}")


def head_only_gradcam(audit, x):
    """Grad-CAM with the backbone run without autograd and the gradient taken only through the head: the same
    computation as the exported graph, in eager PyTorch."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        activation = audit.features(x)
    activation.requires_grad_(True)
    logit = audit.head(activation).logit
    (grad,) = torch.autograd.grad(logit.sum(), activation)
    with torch.no_grad():
        raw = F.relu((grad.mean(dim=(2, 3), keepdim=True) * activation).sum(dim=1))
        cam = F.interpolate(raw[:, None], size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)[:, 0]
        low, high = cam.amin(dim=(1, 2), keepdim=True), cam.amax(dim=(1, 2), keepdim=True)
        return (cam - low) / (high - low).clamp_min(1e-12)


# ---- comparisons ------------------------------------------------------------------------------------------------

def agreement(actual, expected) -> dict[str, float]:
    """Max abs error relative to the reference map's max magnitude, and the cosine of the flattened maps."""
    a = np.asarray(actual, dtype=np.float64).ravel()
    b = np.asarray(expected, dtype=np.float64).ravel()
    scale = float(np.abs(b).max()) or 1.0
    cosine = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))
    return {"max_abs_over_scale": float(np.abs(a - b).max()) / scale, "cosine": cosine}


def comparable_maps(method: str, ort_out: list, eager_out, tool, head_only_out=None) -> dict[str, dict]:
    """The quantity each tool and the graph both compute, as {label: agreement}."""
    if method == "gradcam":
        _, cam, cam_raw = ort_out
        activations = tool.activations_and_grads.activations[0].numpy()
        gradients = tool.activations_and_grads.gradients[0].numpy()
        raw = np.maximum(tool.get_cam_image(None, None, None, activations, gradients), 0)
        result = {"raw CAM at layer4's grid, before resize": agreement(cam_raw, raw),
                  "CAM at the input size, in [0, 1]": agreement(cam, eager_out)}
        if head_only_out is not None:
            result["the same vs the head-only eager ref"] = agreement(cam, head_only_out.numpy())
        return result
    expected = eager_out.detach().numpy()
    if method in ("saliency", "smoothgrad"):
        label = "max over channels of the mean |grad| over the noisy copies" if method == "smoothgrad" else \
            "max over channels of |grad|"
        return {label: agreement(ort_out[1], expected.max(axis=1))}
    return {"(x - baseline) * path-averaged grad, summed over channels": agreement(ort_out[1], expected.sum(axis=1))}


# ---- peak-memory probe (a fresh process per contender) ----------------------------------------------------------

def probe(kind: str, method: str, batch: int, folder: Path, args) -> dict:
    """Set the contender up, then call it twice; ru_maxrss after each phase. Two calls, because ORT allocates its
    memory pattern on the second run of a shape, on top of the arena that the first run grew."""
    size = (args.size, args.size)
    images = test_images(batch, size)
    per_image = args.per_image and method in ("ig", "smoothgrad") and batch > 1
    if kind == "ort":
        session = ort_session_for(folder / f"{method}.onnx", args.threads, not args.no_mem_pattern)
        noise = np.random.default_rng(1).standard_normal((batch, args.samples, 3, *size), dtype=np.float32)
        run = ort_attribution_runner(session, method, images, noise, per_image)
    else:
        import torch

        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _common import build_modules

        audit = build_modules(args.backbone, size)["audit"]
        x = normalized_input(audit, images)
        runners, _ = eager_runners(method, audit, logit_model(audit), x, args.steps, args.samples, args.noise_level)
        run = runners[EAGER_TOOL[method]]
    setup = peak_rss_mb()
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return {"setup_mb": setup, "peak_mb": peak_rss_mb(), "seconds": seconds}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="peak RSS of one attribution contender, in this process")
    parser.add_argument("--probe", required=True, help="ort:METHOD or eager:METHOD")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--folder", type=Path, required=True, help="the exported graphs (for ort:)")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--torch-threads", type=int)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--noise-level", type=float, default=0.15)
    parser.add_argument("--per-image", action="store_true")
    parser.add_argument("--no-mem-pattern", action="store_true")
    args = parser.parse_args(argv)
    kind, method = args.probe.split(":")
    import warnings

    warnings.simplefilter("ignore")  # random weights, captum warnings; the parent prints what matters
    print(json.dumps(probe(kind, method, args.batch, args.folder, args)))


if __name__ == "__main__":
    main()
