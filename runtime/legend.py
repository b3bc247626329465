"""Colour bars that say what the colours of a picture mean, drawn under overlays and contact sheets: a map without
its key is read as "red = bad" whatever it shows."""

from __future__ import annotations

import cv2
import numpy as np

from auditor_rt.runtime.mapview import AGAINST_RISK, FOR_RISK
from auditor_rt.runtime.visualize import colorize

FONT = cv2.FONT_HERSHEY_SIMPLEX
BAND = (24, 24, 24)
INK = (235, 235, 235)
NEUTRAL = np.array([128, 128, 128], np.float32)  # what a photograph looks like where a map is silent

# kind -> (left label, right label). The meaning goes in words, not only in colour.
KINDS = {
    "risk": ("low", "high risk"),
    "signed": ("blue: against risk", "red: for risk"),
    "unsigned": ("weak", "strong attribution"),
}


def _ramp(kind: str, width: int) -> np.ndarray:
    """One row of the bar's colours, left to right, as the overlays draw them."""
    t = np.linspace(0.0, 1.0, max(width, 2), dtype=np.float32)
    if kind == "risk":
        return colorize(t[None])[0].astype(np.float32)
    if kind == "signed":
        signed = 2 * t - 1
        colour = np.where((signed >= 0)[:, None], FOR_RISK, AGAINST_RISK)
        weight = np.abs(signed)[:, None]
    else:
        colour, weight = colorize(t[None])[0].astype(np.float32), t[:, None]
    return NEUTRAL * (1 - weight) + colour * weight


def _fit_scale(texts: list[str], width: int, start: float) -> float:
    """The largest font scale (from ``start`` down to 0.3) at which ``texts`` side by side take at most half of
    ``width``, so the bar keeps the other half."""
    scale = start
    while scale > 0.3 and sum(cv2.getTextSize(t, FONT, scale, 1)[0][0] + 8 for t in texts) > width / 2:
        scale -= 0.05
    return scale


def legend_band(width: int, kind: str, note: str = "") -> np.ndarray:
    """A band ``width`` pixels wide: left label, colour bar, right label, and an optional note line under them
    (the scale, the method)."""
    if kind not in KINDS:
        raise ValueError(f"unknown legend kind {kind!r}; known: {', '.join(KINDS)}")
    left, right = KINDS[kind]
    scale = _fit_scale([left, right], width, start=min(0.55, max(0.35, width / 900)))
    (_, text_h), base = cv2.getTextSize("Ag", FONT, scale, 1)
    row = text_h + base + 8
    note_scale = _fit_scale([note], 2 * width, scale) if note else scale
    band = np.full((row * (2 if note else 1), width, 3), BAND, np.uint8)
    left_w = cv2.getTextSize(left, FONT, scale, 1)[0][0]
    right_w = cv2.getTextSize(right, FONT, scale, 1)[0][0]
    cv2.putText(band, left, (4, text_h + 4), FONT, scale, INK, 1, cv2.LINE_AA)
    cv2.putText(band, right, (width - right_w - 4, text_h + 4), FONT, scale, INK, 1, cv2.LINE_AA)
    x0, x1 = left_w + 10, width - right_w - 10
    if x1 - x0 >= 8:
        band[4:row - 4, x0:x1] = np.clip(np.rint(_ramp(kind, x1 - x0)), 0, 255).astype(np.uint8)[None]
    if note:
        cv2.putText(band, note, (4, row + text_h + 3), FONT, note_scale, INK, 1, cv2.LINE_AA)
    return band


def with_legend(picture: np.ndarray, kind: str, note: str = "") -> np.ndarray:
    """``picture`` with its legend band underneath (the picture itself is not covered)."""
    return np.vstack([picture, legend_band(picture.shape[1], kind, note)])
