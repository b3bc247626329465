"""Attribution maps from an artifact's attribution graphs: ``Auditor.explain(images, method="ig")``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from auditor_rt.runtime.errors import ConfigError
from auditor_rt.runtime.imageio import resize_map
from auditor_rt.runtime.methods import KNOWN_METHODS


@dataclass
class Explanation:
    """One image's attribution map, at the original image size. ``signed`` maps keep their sign (positive is
    evidence for risk); unsigned ones are in [0, 1]. ``extras`` holds scalar outputs such as IG's ``delta``;
    ``raw`` is the map as the graph gave it, at the model's input size (its sum is what IG's completeness is about);
    ``completeness`` is IG's check (see ``ig_completeness``)."""

    method: str
    map: np.ndarray
    signed: bool
    logit: float
    extras: dict
    raw: np.ndarray | None = None
    completeness: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"method": self.method, "signed": self.signed, "logit": round(self.logit, 6),
                **{k: round(float(v), 6) for k, v in self.extras.items()}, **self.completeness}


IG_GAP_TOLERANCE = 0.10  # |delta| allowed, as a share of |logit(image) - logit(baseline)|
IG_GAP_FLOOR = 1e-2      # ... or in logits: below this the gap means nothing whatever the share


def completeness_gaps(ig: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """|delta| / |logit(image) - logit(baseline)| per image, from an IG graph's ``ig`` [N, ...] and ``delta`` [N]:
    the graph's delta is sum(ig) - that difference, so the difference is sum(ig) - delta."""
    total = ig.reshape(len(ig), -1).astype(np.float64).sum(axis=1)
    change = total - delta.astype(np.float64)
    return np.abs(delta.astype(np.float64)) / np.maximum(np.abs(change), 1e-12)


def ig_completeness(raw: np.ndarray, delta: float) -> dict:
    """IG's completeness check. The attributions should sum to logit(image) - logit(baseline); the graph gives
    ``delta`` = sum - that difference, so the difference itself is sum - delta. The path integral is a quadrature,
    and too few steps leave a gap: converged means |delta| <= 10% of |difference| (or under 0.01 logits)."""
    difference = float(np.sum(raw, dtype=np.float64)) - delta
    gap = float(completeness_gaps(raw[None], np.array([delta]))[0])
    converged = abs(delta) <= max(IG_GAP_TOLERANCE * abs(difference), IG_GAP_FLOOR)
    return {"ig_converged": bool(converged), "ig_gap": round(min(gap, 1e6), 4),
            "ig_logit_difference": round(difference, 6)}


def steps_for_gap(steps: int, gap: float) -> int:
    """An estimate of the IG steps that would bring ``gap`` (|delta| / |difference| at ``steps``) to the tolerance,
    assuming the gap shrinks as 1/steps^2. Measured with PyTorch on a demo image (resnet50_clip, black baseline):
    gap 0.673, 0.190, 0.028 at 32, 64, 128 Gauss-Legendre steps, about that rate; this estimate says 84."""
    return max(steps + 1, math.ceil(steps * math.sqrt(gap / IG_GAP_TOLERANCE)))


def attribution_methods(artifact) -> list[str]:
    return [key for key, g in artifact.manifest.graphs.items() if g.kind == "attribution"]


def check_method(artifact, method: str) -> None:
    """Refuse a method the artifact has no graph for, naming what it has; and a name that is no method at all,
    naming the methods that exist (re-exporting would not help there)."""
    available = attribution_methods(artifact)
    if method in available:
        return
    has = f"this artifact has: {', '.join(available) or 'none'}"
    if method not in KNOWN_METHODS:
        raise ConfigError(f"unknown attribution method {method!r}: the methods are {', '.join(KNOWN_METHODS)} "
                          f"({has})")
    raise ConfigError(f"the artifact has no {method!r} attribution graph ({has}); "
                      f"re-export with --attribution {method} to add it")


def to_explanations(method: str, entry, outputs: dict, sizes: list[tuple[int, int]],
                    output: str | None = None) -> list[Explanation]:
    map_name = output or entry.map_output
    signed = bool(entry.signed)
    scalars = [s.name for s in entry.outputs if len(s.shape) == 1 and s.name != "logit"]
    explanations = []
    for i, size in enumerate(sizes):
        raw = np.array(outputs[map_name][i], dtype=np.float32)
        extras = {name: float(outputs[name][i]) for name in scalars}
        check = ig_completeness(raw, extras["delta"]) if method == "ig" and "delta" in extras else {}
        explanations.append(Explanation(method, resize_map(raw, size), signed, float(outputs["logit"][i]), extras,
                                        raw, check))
    return explanations
