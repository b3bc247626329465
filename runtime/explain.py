"""Attribution maps from an artifact's attribution graphs: ``Auditor.explain(images, method="ig")``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor_rt.runtime.errors import ConfigError
from auditor_rt.runtime.imageio import resize_map


@dataclass
class Explanation:
    """One image's attribution map, at the original image size. ``signed`` maps keep their sign (positive is
    evidence for risk); unsigned ones are in [0, 1]. ``extras`` holds scalar outputs such as IG's ``delta``."""

    method: str
    map: np.ndarray
    signed: bool
    logit: float
    extras: dict

    def to_dict(self) -> dict:
        return {"method": self.method, "signed": self.signed, "logit": round(self.logit, 6),
                **{k: round(float(v), 6) for k, v in self.extras.items()}}


def expansion(entry) -> int:
    """How many images the graph runs per input image: IG's path points, SmoothGrad's noisy copies. Batches are cut
    so that the graph's internal batch stays near the auditor's batch size (IG at batch 8 x 34 points would need
    about 25 GB for a resnet50)."""
    params = entry.extra.get("params", {})
    if entry.extra.get("method") == "ig":
        return int(params.get("steps", 32)) + 2
    if entry.extra.get("method") == "smoothgrad":
        return int(params.get("samples", 16)) + 1
    return 1


def attribution_methods(artifact) -> list[str]:
    return [key for key, g in artifact.manifest.graphs.items() if g.kind == "attribution"]


def extra_feed(entry, batch: np.ndarray, noise_seed: int, baselines: np.ndarray | None,
               targets=None) -> dict[str, np.ndarray]:
    """The inputs a method takes beside the images: SmoothGrad's noise (seeded, so runs repeat), IG's baseline, a
    classifier's target classes (-1: the predicted class)."""
    feed = {}
    names = [spec.name for spec in entry.inputs]
    if "target" in names:
        feed["target"] = (np.full(len(batch), -1, dtype=np.int64) if targets is None
                          else np.asarray(targets, dtype=np.int64).reshape(len(batch)))
        classes = entry.extra.get("num_classes")
        if classes is not None and ((feed["target"] < -1) | (feed["target"] >= classes)).any():
            raise ConfigError(f"target classes {feed['target'].tolist()} outside 0..{classes - 1} (-1: predicted)")
    elif targets is not None:
        raise ConfigError("targets are for classifier artifacts; a risk head explains its risk logit")
    if "noise" in names:
        samples = int(entry.extra.get("params", {}).get("samples", 16))
        rng = np.random.default_rng(noise_seed)
        feed["noise"] = rng.standard_normal((len(batch), samples, 3, *batch.shape[1:3])).astype(np.float32)
    if "baseline" in names:
        if baselines is None:
            raise ConfigError("this integrated-gradients graph takes a baseline image per input: pass baselines=")
        feed["baseline"] = baselines
    return feed


def to_explanations(method: str, entry, outputs: dict, sizes: list[tuple[int, int]],
                    output: str | None = None) -> list[Explanation]:
    map_name = output or entry.extra.get("map_output")
    signed = bool(entry.extra.get("signed"))
    scalars = [s.name for s in entry.outputs if len(s.shape) == 1 and s.name != "logit"]
    explanations = []
    for i, size in enumerate(sizes):
        explanations.append(Explanation(method, resize_map(outputs[map_name][i], size), signed, float(outputs["logit"][i]),
                                        {name: float(outputs[name][i]) for name in scalars}))
    return explanations
