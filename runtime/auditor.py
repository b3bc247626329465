"""The public API: ``Auditor.load("engines/x")(images) -> list[AuditResult]``.

Decoding and resizing happen here with OpenCV; normalisation, the risk map and the heatmap happen inside the graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from auditor_rt.runtime.artifact import Artifact
from auditor_rt.runtime.classify import ClassResult, ContrastMaps, contrast, top_classes
from auditor_rt.runtime.errors import ConfigError
from auditor_rt.runtime.explain import Explanation, check_method, to_explanations
from auditor_rt.runtime.feeds import make_feed
from auditor_rt.runtime.methods import images_per_input
from auditor_rt.runtime.imageio import ImageSource, decode_image, resize_image, resize_map
from auditor_rt.runtime.regions import Region, find_regions
from auditor_rt.runtime.runners import create_runner


@dataclass
class AuditResult:
    """One image's audit. ``heatmap`` is at the original image size, in [0, 1]; ``risk_map`` is the raw signed
    grid from the head (positive = evidence for risk)."""

    score: float
    logit: float
    label: bool
    threshold: float
    risk_map: np.ndarray
    heatmap: np.ndarray
    regions: list[Region] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)  # (height, width) of the original image

    def to_dict(self) -> dict:
        """JSON-ready summary (maps omitted: they go to files)."""
        return {
            "score": round(self.score, 6),
            "logit": round(self.logit, 6),
            "label": "risk" if self.label else "no_risk",
            "threshold": self.threshold,
            "regions": [r.to_dict() for r in self.regions],
            "image_size": list(self.image_size),
        }


def _decode_all(images) -> list[np.ndarray]:
    """One source or a sequence of them (paths, buffers, arrays; a 4-D array is a batch) -> RGB uint8 arrays."""
    if isinstance(images, (str, Path, bytes, bytearray, memoryview)) or (
            isinstance(images, np.ndarray) and images.ndim in (2, 3)):
        images = [images]
    return [decode_image(image) for image in images]


class Auditor:
    def __init__(self, artifact: Artifact, runner, batch_size: int = 8, region_threshold: float = 0.5,
                 runner_options: dict | None = None):
        self.artifact = artifact
        self.runner = runner
        self._runner_options = runner_options or {}  # attribution graphs open lazily with the same backend
        self._explainers: dict = {}
        self.batch_size = batch_size
        self.region_threshold = region_threshold
        self.input_size = artifact.manifest.preprocess.input_size
        self.threshold = artifact.manifest.threshold

    @classmethod
    def load(cls, folder: str | Path, backend: str = "auto", providers=None, threads: int | None = None,
             batch_size: int = 8, region_threshold: float = 0.5) -> "Auditor":
        artifact = Artifact.load(folder)
        options = {"backend": backend, "providers": providers, "threads": threads}
        main_graph = "classify" if "classify" in artifact.manifest.graphs else "audit"
        runner = create_runner(artifact, main_graph, **options)
        return cls(artifact, runner, batch_size=batch_size, region_threshold=region_threshold, runner_options=options)

    def __enter__(self) -> "Auditor":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self.runner.close()
        for runner in self._explainers.values():
            runner.close()

    def _batches(self, images: list[np.ndarray], step: int):
        """(start, chunk, uint8 NHWC batch at the input size) for consecutive chunks of ``step`` images."""
        for start in range(0, len(images), step):
            chunk = images[start:start + step]
            yield start, chunk, np.stack([resize_image(im, self.input_size) for im in chunk])

    @property
    def is_classifier(self) -> bool:
        """A plain classifier artifact (classes, no risk head) rather than a risk-head one."""
        return "classify" in self.artifact.manifest.graphs

    def __call__(self, images: ImageSource | Sequence[ImageSource]) -> list[AuditResult]:
        """Audit paths, encoded buffers or RGB arrays. Raises ImageDecodeError on the first unreadable one."""
        return self.audit_arrays(_decode_all(images))

    def classify(self, images, k: int = 5) -> list[ClassResult]:
        """The top ``k`` classes of each image, for a classifier artifact."""
        return self.classify_arrays(_decode_all(images), k)

    def classify_arrays(self, images, k: int = 5) -> list[ClassResult]:
        if not self.is_classifier:
            raise ConfigError("this artifact is a risk head, not a classifier: call the auditor (or audit_arrays)")
        results = []
        for _, _, batch in self._batches(images, self.batch_size):
            results.extend(top_classes(self.runner.infer({"image": batch})["probs"], k))
        return results

    def explain_topk(self, images, method: str, k: int = 2) -> list[ContrastMaps]:
        """For a classifier: the maps of each image's top ``k`` classes on one scale, and "why X, not Y" maps."""
        arrays = _decode_all(images)
        entry = self.artifact.manifest.graphs.get(method)  # a missing method is refused by explain_arrays
        raw = entry.extra.get("raw_output") if entry else None
        out = []
        for image, result in zip(arrays, self.classify_arrays(arrays, k)):
            maps = [self.explain_arrays([image], method, targets=[c], output=raw)[0].map for c in result.classes]
            out.append(contrast(result.classes, maps))
        return out

    def audit_arrays(self, images: Iterable[np.ndarray]) -> list[AuditResult]:
        """Audit decoded RGB uint8 images of any size, in batches of ``batch_size``."""
        if self.is_classifier:
            raise ConfigError("this artifact is a plain classifier, not a risk head: use classify() and explain()")
        images = list(images)
        results: list[AuditResult] = []
        for _, chunk, batch in self._batches(images, self.batch_size):
            outputs = self.run_batch(batch)
            results.extend(self.postprocess(outputs, i, im.shape[:2]) for i, im in enumerate(chunk))
        return results

    def explain(self, images, method: str, noise_seed: int = 0, baselines=None, targets=None) -> list[Explanation]:
        """Attribution maps of ``method`` (an attribution graph of this artifact) for paths, buffers or RGB arrays.
        SmoothGrad's noise comes from ``noise_seed``, so the same call gives the same maps. For a classifier,
        ``targets`` gives the class to explain per image (default: the predicted class)."""
        return self.explain_arrays(_decode_all(images), method, noise_seed, baselines, targets)

    def explain_arrays(self, images, method: str, noise_seed: int = 0, baselines=None, targets=None,
                       output: str | None = None, progress=None) -> list[Explanation]:
        """As ``explain``, for decoded arrays. ``progress(count)`` is called after each chunk (IG at batch 8 runs
        one image at a time: a chunk can take seconds)."""
        check_method(self.artifact, method)
        if method not in self._explainers:
            self._explainers[method] = create_runner(self.artifact, method, **self._runner_options)
        runner, entry = self._explainers[method], self.artifact.graph(method)
        step = max(1, self.batch_size // images_per_input(entry))
        results = []
        for start, chunk, batch in self._batches(images, step):
            base = None if baselines is None else np.stack(
                [resize_image(decode_image(b), self.input_size) for b in baselines[start:start + step]])
            chosen = None if targets is None else targets[start:start + step]
            feed = make_feed(entry, batch, noise_seed + start, base, chosen)
            outputs = runner.infer(feed)
            results.extend(to_explanations(method, entry, outputs, [im.shape[:2] for im in chunk], output))
            if progress is not None:
                progress(len(chunk))
        return results

    def run_batch(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run the graph on a uint8 NHWC batch already at the input size."""
        return self.runner.infer({"image": batch})

    def postprocess(self, outputs: dict[str, np.ndarray], index: int, image_size: tuple[int, int]) -> AuditResult:
        height, width = image_size
        heatmap = resize_map(outputs["heatmap"][index], image_size)
        score = float(outputs["score"][index])
        label = score >= self.threshold
        return AuditResult(
            score=score,
            logit=float(outputs["logit"][index]),
            label=label,
            threshold=self.threshold,
            risk_map=outputs["risk_map"][index],
            heatmap=heatmap,
            # The heatmap is normalised per image, so it always has a "hot" area; boxes mean something only
            # where the model says risk.
            regions=find_regions(heatmap, self.region_threshold) if label else [],
            image_size=(height, width),
        )
