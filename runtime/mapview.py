"""How maps are shown to people, as opposed to what they are: display-only smoothing of pixel attributions, a blend
whose opacity follows magnitude, and the risk heatmap on an absolute scale.

Pixel attributions (integrated gradients, gradient x input, saliency) alternate sign from one pixel to the next.
Drawn as they are, they are a one-pixel red/blue speckle that averages to grey at any viewing distance, and JPEG
chroma subsampling greys it out completely. Smoothing for display shows the net evidence of each neighbourhood; the
raw map is never changed (``--save-maps`` writes it as it came from the graph).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from auditor_rt.runtime.imageio import resize_map
from auditor_rt.runtime.visualize import colorize

FOR_RISK = np.array([220, 20, 30], np.float32)       # red: evidence for risk
AGAINST_RISK = np.array([20, 90, 235], np.float32)   # blue: evidence against
DISPLAY_PERCENTILE = 99.5  # |value| drawn at full opacity: a few outliers must not wash out the rest
BACKGROUND_SATURATION = 0.35  # the photograph under a map keeps this much colour, so its own reds and yellows
                              # cannot pass for evidence


@dataclass(frozen=True)
class MapView:
    """A map as drawn: the picture and the magnitude that got full colour (for the legend)."""

    picture: np.ndarray
    scale: float


def smooth_map(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a 2-D map with ``sigma`` in the map's own pixels (0: unchanged). Signs cancel inside a
    neighbourhood, which is the point: what is left is the net evidence there."""
    values = np.asarray(values, np.float32)
    if sigma <= 0:
        return values
    return cv2.GaussianBlur(values, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REFLECT)


def display_scale(values: np.ndarray, percentile: float = DISPLAY_PERCENTILE) -> float:
    """The magnitude drawn at full opacity: a high percentile of |values|, or the max where that is 0."""
    magnitude = np.abs(np.asarray(values, np.float32))
    return float(np.percentile(magnitude, percentile)) or float(magnitude.max()) or 1.0


def faded(image: np.ndarray, saturation: float = BACKGROUND_SATURATION) -> np.ndarray:
    """The photograph with most of its colour taken out, as the ground under a map (Captum blends over grey too)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)[..., None]
    return grey + saturation * (image.astype(np.float32) - grey)


def attribution_view(image: np.ndarray, values: np.ndarray, signed: bool, sigma: float = 0.0,
                     alpha: float = 0.9, scale: float | None = None) -> MapView:
    """An attribution map over the faded photograph. Signed maps: red for, blue against, opacity
    ``alpha * min(|v| / scale, 1)``, so a pixel's strength is its opacity and a sign never fades to white. Unsigned
    maps: TURBO with the same magnitude-following opacity. ``sigma`` smooths for display, in the map's pixels; the
    map is resized to the image first."""
    values = smooth_map(resize_map(np.asarray(values, np.float32), image.shape[:2]), sigma)
    scale = scale or display_scale(values)
    strength = np.clip(np.abs(values) / scale, 0.0, 1.0)
    if signed:
        colour = np.where((values >= 0)[..., None], FOR_RISK, AGAINST_RISK)
    else:
        colour = colorize(strength).astype(np.float32)
    weight = (alpha * strength)[..., None]
    blended = faded(image) * (1.0 - weight) + colour * weight
    return MapView(np.clip(np.rint(blended), 0, 255).astype(np.uint8), scale)


def absolute_heatmap(risk_map: np.ndarray, scale: float, size: tuple[int, int]) -> np.ndarray:
    """The heatmap on the artifact's absolute scale: max(risk_map, 0) / scale, upsampled to ``size`` and clipped to
    [0, 1]. Unlike the graph's per-image heatmap, an image with no evidence for risk stays cool."""
    heat = np.maximum(np.asarray(risk_map, np.float32), 0.0) / scale
    return np.clip(resize_map(heat, size), 0.0, 1.0)
