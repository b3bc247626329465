"""The public API and the model protocol: ``Auditor.load("engines/x")`` gives the model for an artifact, and
``model.predict(images) -> list[Result]`` scores decoded images (``model(images)`` decodes paths or buffers first).

``Auditor.load`` is the one place that tells the kinds apart: a ``RiskAuditor`` (risk head: scores, risk maps,
heatmaps) or a ``ClassifierAuditor`` (plain classifier: top classes). ``RemoteAuditor`` (``runtime/serve/client.py``)
is the same protocol for a running server. Decoding and resizing happen here with OpenCV; normalisation, the risk
map and the heatmap happen inside the graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from auditor_rt.runtime.artifact import Artifact
from auditor_rt.runtime.classify import ClassResult, ContrastMaps, contrast, top_classes
from auditor_rt.runtime.errors import ConfigError
from auditor_rt.runtime.explain import Explanation, check_method, to_explanations
from auditor_rt.runtime.feeds import make_feed
from auditor_rt.runtime.imageio import ImageSource, decode_all, decode_image, resize_image, resize_map
from auditor_rt.runtime.methods import images_per_input
from auditor_rt.runtime.pictures import MapDisplay
from auditor_rt.runtime.regions import find_regions
from auditor_rt.runtime.results import AuditResult
from auditor_rt.runtime.runners import create_runner

__all__ = ["AuditResult", "Auditor", "ClassifierAuditor", "RiskAuditor"]


class Auditor:
    """What every local model shares: its artifact, its runner, batching and attribution graphs."""

    GRAPH, KIND = "", "model"  # the artifact's main graph, and what it is called in messages
    heatmaps = False  # whether its results carry heatmaps of their own

    def __init__(self, artifact: Artifact, runner, batch_size: int = 8, region_threshold: float = 0.5,
                 runner_options: dict | None = None):
        self.artifact = artifact
        self.runner = runner
        self._runner_options = runner_options or {}  # attribution graphs open lazily with the same backend
        self._explainers: dict = {}
        self.batch_size = batch_size
        self.region_threshold = region_threshold
        self.input_size = artifact.manifest.preprocess.input_size

    @classmethod
    def load(cls, folder: str | Path, backend: str = "auto", providers=None, threads: int | None = None,
             batch_size: int = 8, region_threshold: float = 0.5) -> "Auditor":
        """The model for the artifact in ``folder``: a ``ClassifierAuditor`` or a ``RiskAuditor``."""
        artifact = Artifact.load(folder)
        model = ClassifierAuditor if "classify" in artifact.manifest.graphs else RiskAuditor
        if cls not in (Auditor, model):
            raise ConfigError(f"{folder}: this artifact is a {model.KIND}; load it with Auditor.load")
        options = {"backend": backend, "providers": providers, "threads": threads}
        runner = create_runner(artifact, model.GRAPH, **options)
        return model(artifact, runner, batch_size=batch_size, region_threshold=region_threshold,
                     runner_options=options)

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

    def __call__(self, images: ImageSource | Iterable[ImageSource]) -> list:
        """Score paths, encoded buffers or RGB arrays. Raises ImageDecodeError on the first unreadable one."""
        return self.predict(decode_all(images))

    def predict(self, images: Iterable[np.ndarray]) -> list:
        """Results for decoded RGB uint8 images of any size, in batches of ``batch_size``."""
        raise NotImplementedError(f"{type(self).__name__} must implement predict()")

    def map_display(self, **options) -> MapDisplay:
        """How this model's maps are drawn (``options``: smooth, heatmap_scale)."""
        return MapDisplay(tuple(self.input_size), **options)

    def run_settings(self, display: MapDisplay) -> dict:
        """What a run's summary records of this model's decision."""
        return {}

    def set_threshold(self, threshold: float) -> None:
        raise ConfigError(f"--threshold is for risk-head artifacts; a {self.KIND} reports its top classes")

    def explain(self, images, method: str, noise_seed: int = 0, baselines=None, targets=None) -> list[Explanation]:
        """Attribution maps of ``method`` (an attribution graph of this artifact) for paths, buffers or RGB arrays.
        SmoothGrad's noise comes from ``noise_seed``, so the same call gives the same maps. For a classifier,
        ``targets`` gives the class to explain per image (default: the predicted class)."""
        return self.explain_arrays(decode_all(images), method, noise_seed, baselines, targets)

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
        for start, chunk, batch in self._batches(list(images), step):
            base = None if baselines is None else np.stack(
                [resize_image(decode_image(b), self.input_size) for b in baselines[start:start + step]])
            chosen = None if targets is None else targets[start:start + step]
            feed = make_feed(entry, batch, noise_seed + start, base, chosen)
            outputs = runner.infer(feed)
            results.extend(to_explanations(method, entry, outputs, [im.shape[:2] for im in chunk], output))
            if progress is not None:
                progress(len(chunk))
        return results


class RiskAuditor(Auditor):
    """A risk head on a backbone: a score, a signed risk map and a heatmap per image."""

    GRAPH, KIND = "audit", "risk head"
    heatmaps = True

    def __init__(self, artifact: Artifact, runner, **options):
        super().__init__(artifact, runner, **options)
        self.threshold = artifact.manifest.threshold

    def predict(self, images: Iterable[np.ndarray]) -> list[AuditResult]:
        images = list(images)
        results: list[AuditResult] = []
        for _, chunk, batch in self._batches(images, self.batch_size):
            outputs = self.run_batch(batch)
            results.extend(self.postprocess(outputs, i, im.shape[:2]) for i, im in enumerate(chunk))
        return results

    audit_arrays = predict

    def map_display(self, **options) -> MapDisplay:
        """Heatmaps on the artifact's absolute scale where it has one."""
        return MapDisplay(tuple(self.input_size), absolute=self.artifact.manifest.heatmap_scale, **options)

    def run_settings(self, display: MapDisplay) -> dict:
        return {"threshold": self.threshold, "heatmap_scale": display.heatmap_mode}

    def set_threshold(self, threshold: float) -> None:
        self.threshold = threshold

    def run_batch(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run the graph on a uint8 NHWC batch already at the input size."""
        return self.runner.infer({"image": batch})

    def postprocess(self, outputs: dict[str, np.ndarray], index: int, image_size: tuple[int, int]) -> AuditResult:
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
            image_size=image_size,
        )


class ClassifierAuditor(Auditor):
    """A plain timm classifier: the top classes per image; maps come from its attribution graphs."""

    GRAPH, KIND = "classify", "plain classifier"

    def predict(self, images: Iterable[np.ndarray], k: int = 5) -> list[ClassResult]:
        results = []
        for _, _, batch in self._batches(list(images), self.batch_size):
            results.extend(top_classes(self.runner.infer({"image": batch})["probs"], k))
        return results

    def classify(self, images, k: int = 5) -> list[ClassResult]:
        """The top ``k`` classes of each image (paths, buffers or arrays)."""
        return self.predict(decode_all(images), k)

    def explain_topk(self, images, method: str, k: int = 2) -> list[ContrastMaps]:
        """The maps of each image's top ``k`` classes on one scale, and "why X, not Y" maps."""
        arrays = decode_all(images)
        check_method(self.artifact, method)
        raw = self.artifact.graph(method).raw_output
        out = []
        for image, result in zip(arrays, self.predict(arrays, k)):
            maps = [self.explain_arrays([image], method, targets=[c], output=raw)[0].map for c in result.classes]
            out.append(contrast(result.classes, maps))
        return out
