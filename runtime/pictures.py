"""The pictures and raw map files of an image run: heatmap overlays (absolute or per-image scale), attribution
overlays (smoothed for display, PNG), their legends, the contact sheet's tiles, and ``--save-maps`` arrays."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from auditor_rt.runtime.explain import Explanation
from auditor_rt.runtime.legend import with_legend
from auditor_rt.runtime.mapview import absolute_heatmap, attribution_view
from auditor_rt.runtime.visualize import contact_sheet, draw_caption, draw_regions, letterbox, overlay

HEATMAP_SCALES = ("absolute", "image")
DEFAULT_SMOOTH = 4.0  # display sigma in model-input pixels: removes the one-pixel sign speckle, keeps object parts
THUMB = 192


@dataclass(frozen=True)
class MapDisplay:
    """How maps are drawn. ``smooth`` is the Gaussian sigma for attribution maps in model-input pixels (0: raw),
    scaled to each image's size. ``heatmap_scale`` "absolute" uses the artifact's ``absolute`` scale (risk-map value
    drawn as full heat) where it has one; "image" (or an artifact without one) min-max normalises each image."""

    input_size: tuple[int, int] = (224, 224)
    smooth: float = DEFAULT_SMOOTH
    heatmap_scale: str = "absolute"
    absolute: float | None = None

    def __post_init__(self):
        if self.heatmap_scale not in HEATMAP_SCALES:
            raise ValueError(f"heatmap scale {self.heatmap_scale!r}: choose {' or '.join(HEATMAP_SCALES)}")

    @property
    def heatmap_mode(self) -> str:
        """The scale really used: "absolute" needs the artifact's scale."""
        return "absolute" if self.heatmap_scale == "absolute" and self.absolute else "image"

    @property
    def heatmap_note(self) -> str:
        if self.heatmap_mode == "absolute":
            return f"absolute scale: full heat at risk_map {self.absolute:.3g}"
        return "per-image scale: every image has a hot spot"

    def sigma_for(self, image_shape) -> float:
        return self.smooth * min(image_shape[:2]) / min(self.input_size)


def display_heatmap(result, display: MapDisplay) -> np.ndarray:
    """The heatmap as drawn: on the absolute scale, or the graph's per-image one."""
    if display.heatmap_mode == "absolute":
        return absolute_heatmap(result.risk_map, display.absolute, result.heatmap.shape)
    return result.heatmap


def render_overlay(image: np.ndarray, result, display: MapDisplay | None = None) -> np.ndarray:
    """Heatmap blended over the image, with region boxes when the label is risk (no caption, no legend)."""
    picture = overlay(image, display_heatmap(result, display) if display else result.heatmap)
    return draw_regions(picture, result.regions) if result.label else picture


def explain_picture(image: np.ndarray, explanation: Explanation, display: MapDisplay) -> tuple[np.ndarray, str]:
    """The attribution overlay and its legend note (method, the magnitude at full colour, the smoothing)."""
    sigma = display.sigma_for(image.shape)
    view = attribution_view(image, explanation.map, explanation.signed, sigma=sigma)
    smoothing = f", smoothed {display.smooth:g} px" if display.smooth > 0 else ""
    unconverged = "" if explanation.completeness.get("ig_converged", True) else ", NOT CONVERGED"
    return view.picture, f"{explanation.method}: full colour at |v| >= {view.scale:.2g}{smoothing}{unconverged}"


def legend_kind(explanation: Explanation) -> str:
    return "signed" if explanation.signed else "unsigned"


def save_maps(folder: Path, stem: str, result, explanation: Explanation | None) -> dict:
    """Raw float32 maps for post-processing: the head's signed ``risk_map`` grid and the ``heatmap`` at the image's
    size for a risk head, and the attribution map as the graph gave it (at the model's input size). Returns
    {name: path} for the record."""
    folder.mkdir(exist_ok=True)
    arrays = dict(result.maps())
    if explanation is not None:
        arrays[explanation.method] = explanation.raw if explanation.raw is not None else explanation.map
    paths = {}
    for name, values in arrays.items():
        path = folder / f"{stem}.{name}.npy"
        np.save(path, np.asarray(values, dtype=np.float32))
        paths[name] = str(path)
    return paths


@dataclass
class SheetTiles:
    """Thumbnails for the contact sheet, kept small as the run goes: one tile per image, or a pair (heatmap,
    attribution) when the run explains."""

    limit: int = 64
    tiles: list[np.ndarray] = field(default_factory=list)
    legends: list[tuple[str, str]] = field(default_factory=list)  # (kind, note) of each column of a tile

    def add(self, pictures: list[tuple[np.ndarray, str]], legends: list[tuple[str, str]]) -> None:
        if len(self.tiles) >= self.limit or not pictures:
            return
        tiles = [draw_caption(letterbox(picture, THUMB), caption) for picture, caption in pictures]
        self.tiles.append(np.hstack(tiles))
        if not self.legends:
            self.legends = legends

    def sheet(self) -> np.ndarray | None:
        if not self.tiles:
            return None
        height, width = self.tiles[0].shape[:2]
        per_row = max(1, math.ceil(math.sqrt(len(self.tiles) * 1.5) * height / width))
        sheet = contact_sheet(self.tiles, thumb=(height, width), columns=min(per_row, len(self.tiles)))
        for kind, note in self.legends:
            sheet = with_legend(sheet, kind, note)
        return sheet
