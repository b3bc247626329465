"""Plain-classifier artifacts: top classes, and top-k joint and differential attribution maps ("why X, not Y")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ClassResult:
    """The top classes of one image, most probable first."""

    classes: list[int]
    probs: list[float]

    flagged = None  # classes, not a risk decision

    @property
    def top_class(self) -> int:
        return self.classes[0]

    def to_record(self) -> dict:
        return {"top_class": self.top_class, "classes": self.classes, "probs": [round(p, 6) for p in self.probs]}

    def caption(self, digits: int = 3) -> str:
        return f"class {self.top_class} {self.probs[0]:.{digits}f}"

    def overlay(self, image: np.ndarray, display) -> None:
        """A classifier has no heatmap of its own: its pictures are the ``--explain`` maps."""
        return None

    def maps(self) -> dict[str, np.ndarray]:
        return {}


def top_classes(probs: np.ndarray, k: int) -> list[ClassResult]:
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [ClassResult([int(c) for c in row], [float(probs[i, c]) for c in row]) for i, row in enumerate(order)]


@dataclass
class ContrastMaps:
    """Maps of the top-k classes of one image on one shared scale (so they can be compared), and the difference of
    the first two: evidence for class X that is not evidence for class Y, and the inverse."""

    classes: list[int]
    joint: np.ndarray      # [k, H, W], each map divided by the largest magnitude over all k
    x_not_y: np.ndarray    # [H, W] max(joint[0] - joint[1], 0)
    y_not_x: np.ndarray    # [H, W] max(joint[1] - joint[0], 0)


def contrast(classes: list[int], maps: list[np.ndarray]) -> ContrastMaps:
    stacked = np.stack(maps).astype(np.float32)
    scale = float(np.abs(stacked).max()) or 1.0
    joint = stacked / scale
    difference = joint[0] - joint[1] if len(joint) > 1 else joint[0]
    return ContrastMaps(classes, joint, np.maximum(difference, 0.0), np.maximum(-difference, 0.0))
