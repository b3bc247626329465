"""What a model gives for one image, and what the pipeline asks of it: ``to_record()`` for the JSONL line,
``flagged`` for the summary and ``--only-positive``, ``caption()`` and ``overlay()`` for the pictures. A risk head
gives an ``AuditResult``; a plain classifier a ``ClassResult`` (``runtime/classify.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from auditor_rt.runtime.regions import Region


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

    @property
    def flagged(self) -> bool:
        """Labelled risk (a classifier's results flag nothing: None)."""
        return self.label

    def to_record(self) -> dict:
        """JSON-ready summary (maps omitted: they go to files)."""
        return {
            "score": round(self.score, 6),
            "logit": round(self.logit, 6),
            "label": "risk" if self.label else "no_risk",
            "threshold": self.threshold,
            "regions": [r.to_dict() for r in self.regions],
            "image_size": list(self.image_size),
        }

    def caption(self, digits: int = 3) -> str:
        return f"{'RISK' if self.label else 'ok'} {self.score:.{digits}f}"

    def overlay(self, image: np.ndarray, display) -> np.ndarray:
        """The heatmap blended over the image (on ``display``'s scale), with region boxes when labelled risk."""
        from auditor_rt.runtime.pictures import render_overlay

        return render_overlay(image, self, display)

    def maps(self) -> dict[str, np.ndarray]:
        """The raw maps ``--save-maps`` writes."""
        return {"risk_map": self.risk_map, "heatmap": self.heatmap}
