"""Regions from a thresholded heatmap, and the pictures drawn from maps (colours, overlays, contact sheets)."""

from __future__ import annotations

import numpy as np
import pytest

from auditor_rt.runtime.regions import Region, find_regions
from auditor_rt.runtime.visualize import (
    DIVERGING_LUT,
    colorize,
    contact_sheet,
    draw_regions,
    letterbox,
    overlay,
)


@pytest.fixture
def two_blobs() -> np.ndarray:
    """A 40x60 heatmap: a hot 5x8 block at rows 4..8, cols 10..17 and a warmer 10x6 block at rows 20..29,
    cols 40..45, on a cold background."""
    heat = np.full((40, 60), 0.1, np.float32)
    heat[4:9, 10:18] = 0.9
    heat[6, 12] = 1.0
    heat[20:30, 40:46] = 0.7
    return heat


# --- regions ---------------------------------------------------------------------------------------------------

def test_two_blobs_give_two_regions_with_exclusive_boxes(two_blobs):
    regions = find_regions(two_blobs, threshold=0.5, min_area_fraction=0.0)
    assert len(regions) == 2
    first, second = regions  # sorted by peak, highest first
    assert (first.x0, first.y0, first.x1, first.y1) == (10, 4, 18, 9)
    assert first.area == 5 * 8
    assert first.peak == pytest.approx(1.0)
    assert first.mean == pytest.approx((0.9 * 39 + 1.0) / 40)
    assert (second.x0, second.y0, second.x1, second.y1) == (40, 20, 46, 30)
    assert second.area == 60 and second.peak == pytest.approx(0.7)


def test_threshold_is_inclusive_and_can_exclude_a_blob(two_blobs):
    assert len(find_regions(two_blobs, threshold=0.7, min_area_fraction=0.0)) == 2
    only_hot = find_regions(two_blobs, threshold=0.8, min_area_fraction=0.0)
    assert [(r.x0, r.y0) for r in only_hot] == [(10, 4)]


def test_min_area_filters_small_regions(two_blobs):
    # 2400 pixels: 0.02 -> min area 48, which drops the 40-pixel blob and keeps the 60-pixel one
    regions = find_regions(two_blobs, threshold=0.5, min_area_fraction=0.02)
    assert [(r.x0, r.y0, r.area) for r in regions] == [(40, 20, 60)]
    assert find_regions(two_blobs, threshold=0.5, min_area_fraction=0.03) == []


def test_single_pixel_survives_the_default_minimum_on_a_tiny_map():
    heat = np.zeros((8, 8), np.float32)
    heat[3, 5] = 1.0
    regions = find_regions(heat)  # 0.002 * 64 rounds down; the floor is one pixel
    assert regions == [Region(5, 3, 6, 4, 1, 1.0, 1.0)]


def test_diagonal_neighbours_join_one_region():
    heat = np.zeros((6, 6), np.float32)
    heat[1, 1] = heat[2, 2] = heat[3, 3] = 1.0
    regions = find_regions(heat, min_area_fraction=0.0)
    assert len(regions) == 1 and (regions[0].x0, regions[0].y0, regions[0].x1, regions[0].y1) == (1, 1, 4, 4)


def test_max_regions_keeps_the_highest_peaks():
    heat = np.zeros((10, 40), np.float32)
    for i, value in enumerate([0.6, 0.9, 0.7, 0.8]):
        heat[4, 2 + 10 * i] = value
    regions = find_regions(heat, threshold=0.5, min_area_fraction=0.0, max_regions=2)
    assert [r.peak for r in regions] == pytest.approx([0.9, 0.8])


def test_cold_map_has_no_regions():
    assert find_regions(np.zeros((16, 16), np.float32)) == []


def test_region_to_dict():
    region = Region(1, 2, 3, 4, 5, 0.9, 0.6)
    assert region.to_dict() == {"x0": 1, "y0": 2, "x1": 3, "y1": 4, "area": 5, "peak": 0.9, "mean": 0.6}


# --- colours ---------------------------------------------------------------------------------------------------

def test_signed_colours_red_for_positive_blue_for_negative_white_near_zero():
    values = np.array([[2.0, -2.0, 0.0, 1.0, -1.0]], np.float32)
    rgb = colorize(values, signed=True)
    assert rgb.shape == (1, 5, 3) and rgb.dtype == np.uint8
    most_for, most_against, zero, half_for, half_against = (tuple(int(v) for v in px) for px in rgb[0])
    assert most_for == (178, 24, 43)      # red end of the scale
    assert most_against == (33, 102, 172)  # blue end
    assert min(zero) > 235                  # near white
    assert half_for[0] > half_for[2] and half_against[2] > half_against[0]
    assert sum(half_for) > sum(most_for)   # lighter than the extreme: the scale is by max |v|


def test_signed_scale_is_symmetric_in_max_abs():
    # only negatives: the most negative is full blue, not re-centred
    rgb = colorize(np.array([[-4.0, -1.0]]), signed=True)
    assert tuple(int(v) for v in rgb[0, 0]) == (33, 102, 172)
    assert rgb[0, 1, 2] > rgb[0, 1, 0]


def test_signed_all_zero_map_is_white_not_nan():
    rgb = colorize(np.zeros((3, 3)), signed=True)
    assert rgb.min() > 235


def test_diverging_lut_ends():
    assert DIVERGING_LUT.shape == (256, 1, 3)
    assert tuple(DIVERGING_LUT[0, 0]) == (33, 102, 172) and tuple(DIVERGING_LUT[255, 0]) == (178, 24, 43)


def test_unsigned_colours_run_cold_to_hot_and_clip():
    values = np.array([[0.0, 1.0, -3.0, 7.0]], np.float32)
    rgb = colorize(values).astype(int)
    assert rgb.shape == (1, 4, 3)
    cold, hot, below, above = rgb[0]
    assert cold[2] > cold[0]   # TURBO starts dark blue/purple
    assert hot[0] > hot[2]     # and ends red
    np.testing.assert_array_equal(below, cold)
    np.testing.assert_array_equal(above, hot)


# --- overlays and sheets ---------------------------------------------------------------------------------------

def test_overlay_resizes_the_map_and_keeps_shape_and_dtype():
    image = np.full((30, 50, 3), 100, np.uint8)
    heat = np.linspace(0, 1, 12, dtype=np.float64).reshape(3, 4)
    out = overlay(image, heat)
    assert out.shape == (30, 50, 3) and out.dtype == np.uint8
    assert not np.array_equal(out, image)


def test_overlay_alpha_extremes():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    heat = rng.random((6, 7)).astype(np.float32) * 2 - 1
    np.testing.assert_array_equal(overlay(image, heat, alpha=0.0), image)
    np.testing.assert_array_equal(overlay(image, heat.clip(0, 1), alpha=1.0), colorize(heat.clip(0, 1)))


def test_draw_regions_draws_the_box_edges_only():
    image = np.zeros((20, 20, 3), np.uint8)
    out = draw_regions(image, [Region(5, 5, 15, 12, 70, 1.0, 1.0)], color=(0, 255, 0))
    assert image.max() == 0  # the input is not modified
    assert tuple(out[5, 10]) == (0, 255, 0) and tuple(out[11, 10]) == (0, 255, 0)  # top and bottom (y1 - 1)
    assert tuple(out[8, 5]) == (0, 255, 0) and tuple(out[8, 14]) == (0, 255, 0)    # left and right (x1 - 1)
    assert out[8, 10].max() == 0 and out[12, 10].max() == 0


def _solid(height, width, color):
    return np.full((height, width, 3), color, np.uint8)


def test_contact_sheet_layout_places_tiles_row_major():
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    images = [_solid(20, 20, c) for c in colors]
    sheet = contact_sheet(images, thumb=16)
    # five images: ceil(sqrt(7.5)) = 3 columns, 2 rows
    assert sheet.shape == (2 * 16, 3 * 16, 3) and sheet.dtype == np.uint8
    for i, color in enumerate(colors):
        r, c = divmod(i, 3)
        assert tuple(sheet[r * 16 + 8, c * 16 + 8]) == color
    assert tuple(sheet[16 + 8, 2 * 16 + 8]) == (32, 32, 32)  # the unused cell keeps the background


def test_contact_sheet_explicit_columns_and_single_image():
    images = [_solid(10, 10, (200, 0, 0))] * 4
    assert contact_sheet(images, thumb=8, columns=1).shape == (32, 8, 3)
    assert contact_sheet(images, thumb=8, columns=4).shape == (8, 32, 3)
    assert contact_sheet(images[:1], thumb=8).shape == (8, 8, 3)


def test_contact_sheet_captions_draw_on_the_tiles():
    images = [_solid(64, 64, (0, 0, 0)), _solid(64, 64, (0, 0, 0))]
    plain = contact_sheet(images, thumb=64)
    captioned = contact_sheet(images, captions=["0.91 risk", "0.12"], thumb=64)
    assert captioned.shape == plain.shape
    assert captioned[:20].max() > plain[:20].max()  # caption text is bright
    np.testing.assert_array_equal(captioned[40:], plain[40:])  # only the top band changes


def test_contact_sheet_needs_images():
    with pytest.raises(ValueError):
        contact_sheet([])


def test_letterbox_keeps_aspect_ratio():
    tile = letterbox(_solid(10, 40, (255, 255, 255)), 20)
    assert tile.shape == (20, 20, 3)
    # 40 wide -> 20 wide, 10 high -> 5 high, centred vertically with padding above and below
    assert tuple(tile[10, 10]) == (255, 255, 255)
    assert tuple(tile[2, 10]) == (32, 32, 32) and tuple(tile[18, 10]) == (32, 32, 32)
