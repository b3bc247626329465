"""Maps people can read: display smoothing, the magnitude blend, the absolute heatmap, legends, full-chroma JPEGs
and the contact sheet's tiles."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from auditor_rt.runtime.legend import legend_band, with_legend
from auditor_rt.runtime.mapview import (AGAINST_RISK, FOR_RISK, absolute_heatmap, attribution_view, display_scale,
                                        faded, smooth_map)
from auditor_rt.runtime.pictures import THUMB, MapDisplay, SheetTiles
from auditor_rt.runtime.visualize import colorize, write_rgb


def speckled_evidence(size: int = 96, seed: int = 0) -> np.ndarray:
    """What an IG map looks like: strong sign-alternating noise everywhere, and a weaker net positive bias inside
    a 24x24 box at rows/cols 20..43 (the hazard)."""
    rng = np.random.default_rng(seed)
    checker = np.indices((size, size)).sum(0) % 2 * 2.0 - 1.0
    values = checker * rng.uniform(0.5, 1.5, (size, size))
    values[20:44, 20:44] += 0.6
    return values.astype(np.float32)


def red_minus_blue(picture: np.ndarray, box=(slice(24, 40), slice(24, 40))) -> float:
    region = picture[box].astype(float)
    return float((region[..., 0] - region[..., 2]).mean())


def clearly_red_share(picture: np.ndarray, box=(slice(24, 40), slice(24, 40))) -> float:
    region = picture[box].astype(int)
    return float(((region[..., 0] - region[..., 2]) > 40).mean())


GREY_PHOTO = np.full((96, 96, 3), 128, np.uint8)


def test_smoothing_cancels_the_speckle_and_keeps_the_net_evidence():
    values = speckled_evidence()
    smooth = smooth_map(values, sigma=3)
    assert np.array_equal(smooth_map(values, 0), values)
    inside, outside = smooth[24:40, 24:40], smooth[60:90, 60:90]
    assert inside.min() > 0.3                     # the box's bias survives everywhere inside
    assert np.abs(outside).max() < 0.2            # the +-1 checkerboard cancels
    assert np.abs(values[60:90, 60:90]).mean() > 0.5  # it was strong before


def old_signed_overlay(image, values, alpha):
    """The display this module replaced: a blue-white-red lookup table, blended in proportion to magnitude."""
    scale = float(np.percentile(np.abs(values), 99.5)) or 1.0
    weight = (alpha * np.clip(np.abs(values) / scale, 0.0, 1.0))[..., None]
    blended = image * (1.0 - weight) + colorize(values, signed=True, scale=scale) * weight
    return np.clip(blended, 0, 255).astype(np.uint8)


def test_smoothed_view_shows_red_on_the_evidence_where_the_raw_speckle_is_grey_after_jpeg(tmp_path):
    values = speckled_evidence()
    old = old_signed_overlay(GREY_PHOTO, values, alpha=0.85)  # the display before: one-pixel speckle
    cv2.imwrite(str(tmp_path / "old.jpg"), cv2.cvtColor(old, cv2.COLOR_RGB2BGR))  # OpenCV's default 4:2:0
    old_back = cv2.cvtColor(cv2.imread(str(tmp_path / "old.jpg")), cv2.COLOR_BGR2RGB)
    view = attribution_view(GREY_PHOTO, values, signed=True, sigma=3)
    write_rgb(tmp_path / "new.jpg", view.picture)
    new_back = cv2.cvtColor(cv2.imread(str(tmp_path / "new.jpg")), cv2.COLOR_BGR2RGB)
    assert clearly_red_share(old_back) < 0.5         # the evidence box: a speckle, mostly grey and blue
    assert clearly_red_share(new_back) > 0.95        # the box reads as red
    assert red_minus_blue(new_back) > 3 * red_minus_blue(old_back)
    assert abs(red_minus_blue(new_back, (slice(60, 90), slice(60, 90)))) < 10  # silence stays photo-grey


def test_signed_view_opacity_follows_magnitude_with_pure_colours():
    image = np.full((1, 5, 3), 100, np.uint8)
    values = np.array([[2.0, 1.0, 0.0, -1.0, -4.0]], np.float32)
    view = attribution_view(image, values, signed=True, alpha=0.8, scale=2.0)
    assert view.scale == 2.0
    base = faded(image)[0, 0]
    expected = [base * (1 - w) + c * w for w, c in [(0.8, FOR_RISK), (0.4, FOR_RISK), (0.0, FOR_RISK),
                                                     (0.4, AGAINST_RISK), (0.8, AGAINST_RISK)]]
    np.testing.assert_allclose(view.picture[0].astype(float), np.array(expected), atol=0.51)


def test_unsigned_view_hides_weak_values_and_colours_strong_ones():
    image = np.full((4, 4, 3), 100, np.uint8)
    values = np.zeros((4, 4), np.float32)
    values[0, 0] = 1.0
    view = attribution_view(image, values, signed=False, scale=1.0)
    assert (view.picture[3, 3] == 100).all()                # zero: the (grey) photo
    assert not (view.picture[0, 0] == 100).all()


def test_display_scale_ignores_a_few_outliers():
    values = np.ones(10000, np.float32)
    values[:10] = 1000.0  # 0.1% of the pixels
    assert display_scale(values) == pytest.approx(1.0)
    assert display_scale(np.zeros(5)) == 1.0


def test_faded_background_keeps_grey_and_mutes_colour():
    yellow = np.full((2, 2, 3), (230, 200, 20), np.uint8)
    muted = faded(yellow)
    assert np.ptp(muted[0, 0]) < 0.5 * np.ptp(yellow[0, 0].astype(float))
    np.testing.assert_allclose(faded(GREY_PHOTO), 128.0)


def test_absolute_heatmap_is_the_positive_part_over_the_scale_clipped():
    risk = np.array([[-3.0, 0.0], [1.0, 8.0]], np.float32)
    heat = absolute_heatmap(risk, scale=2.0, size=(2, 2))
    np.testing.assert_allclose(heat, [[0.0, 0.0], [0.5, 1.0]])
    big = absolute_heatmap(risk, scale=2.0, size=(20, 30))
    reference = np.clip(cv2.resize(np.maximum(risk, 0) / 2.0, (30, 20), interpolation=cv2.INTER_LINEAR), 0, 1)
    np.testing.assert_allclose(big, reference, atol=1e-6)
    assert absolute_heatmap(-np.abs(risk), 2.0, (8, 8)).max() == 0.0  # a confident negative is cold everywhere


def test_display_falls_back_to_the_per_image_scale():
    assert MapDisplay(absolute=None).heatmap_mode == "image"
    assert MapDisplay(absolute=2.5, heatmap_scale="image").heatmap_mode == "image"
    shown = MapDisplay(absolute=2.5)
    assert shown.heatmap_mode == "absolute" and "2.5" in shown.heatmap_note
    assert MapDisplay(input_size=(100, 100), smooth=4).sigma_for((400, 300, 3)) == pytest.approx(12.0)
    with pytest.raises(ValueError):
        MapDisplay(heatmap_scale="log")


@pytest.mark.parametrize("kind, left, right", [
    ("signed", AGAINST_RISK, FOR_RISK),
    ("risk", np.array([48, 18, 59]), np.array([122, 4, 3])),  # TURBO's ends
])
def test_legend_bar_runs_between_the_map_colours(kind, left, right):
    band = legend_band(600, kind, note="scale")
    assert band.shape[1] == 600 and band.dtype == np.uint8
    bar_row = band[band.shape[0] // 4]
    coloured = np.flatnonzero(np.abs(bar_row.astype(int) - 24).sum(1) > 30)
    # the bar's ends (skip the anti-aliased label text: take the longest run of coloured pixels)
    runs = np.split(coloured, np.flatnonzero(np.diff(coloured) > 1) + 1)
    bar = max(runs, key=len)
    assert len(bar) > 200
    np.testing.assert_allclose(bar_row[bar[0]], left, atol=12)
    np.testing.assert_allclose(bar_row[bar[-1]], right, atol=12)


def test_legend_goes_under_the_picture_without_covering_it():
    picture = np.full((50, 120, 3), 77, np.uint8)
    out = with_legend(picture, "unsigned", "saliency")
    assert out.shape[1] == 120 and out.shape[0] > 50
    assert (out[:50] == 77).all()
    assert out[50:].max() > 200  # the labels are drawn
    with pytest.raises(ValueError):
        legend_band(100, "rainbow")


def test_jpeg_keeps_full_colour_resolution(tmp_path):
    stripes = np.zeros((32, 32, 3), np.uint8)
    stripes[:, 0::2] = (230, 20, 20)
    stripes[:, 1::2] = (20, 20, 230)
    write_rgb(tmp_path / "full.jpg", stripes)
    back = cv2.cvtColor(cv2.imread(str(tmp_path / "full.jpg")), cv2.COLOR_BGR2RGB).astype(int)
    assert (back[:, 0::2, 0] - back[:, 0::2, 2]).mean() > 120  # red columns stay red
    cv2.imwrite(str(tmp_path / "sub.jpg"), cv2.cvtColor(stripes, cv2.COLOR_RGB2BGR))
    sub = cv2.cvtColor(cv2.imread(str(tmp_path / "sub.jpg")), cv2.COLOR_BGR2RGB).astype(int)
    assert (sub[:, 0::2, 0] - sub[:, 0::2, 2]).mean() < 60  # what 4:2:0 did


def test_sheet_pairs_heatmap_and_attribution_tiles_and_adds_both_legends():
    tiles = SheetTiles(limit=3)
    photo = np.full((60, 90, 3), 90, np.uint8)
    legends = [("risk", "absolute"), ("signed", "ig")]
    for _ in range(5):
        tiles.add([(photo, "RISK 0.9"), (photo, "ig")], legends)
    assert len(tiles.tiles) == 3 and tiles.tiles[0].shape == (THUMB, 2 * THUMB, 3)
    sheet = tiles.sheet()
    plain_rows = 2 * THUMB  # 3 pair tiles: 2 per row, 2 rows
    assert sheet.shape[1] == 2 * 2 * THUMB
    assert sheet.shape[0] > plain_rows + 2 * 20  # two legend bands under the tiles
    assert SheetTiles().sheet() is None
