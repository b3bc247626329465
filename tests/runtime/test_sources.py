"""Expanding user arguments into items (an error item for each unusable one), and auto-numbered run folders."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from auditor_rt.runtime.errors import ImageDecodeError
from auditor_rt.runtime.imageio import decode_image
from auditor_rt.runtime.runfolder import next_run_folder
from auditor_rt.runtime.sources import Item, expand_sources, is_skipped


TINY = {".jpg": ".jpg", ".jpeg": ".jpg", ".png": ".png", ".webp": ".webp", ".gif": None}


def write_image(path: Path) -> Path:
    """A real 4x4 image in the format its suffix names (GIF through PIL: OpenCV only reads it)."""
    pixels = np.full((4, 4, 3), 120, np.uint8)
    if path.suffix.lower() == ".gif":
        Image.fromarray(pixels).save(path, "GIF")
    else:
        path.write_bytes(cv2.imencode(TINY[path.suffix.lower()], pixels)[1].tobytes())
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    """root/ a.jpg b.PNG notes.txt  sub/ c.jpeg  sub/deeper/ d.webp  empty/  texts/ x.txt"""
    root = tmp_path / "root"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "texts").mkdir()
    for name in ("a.jpg", "b.PNG", "sub/c.jpeg", "sub/deeper/d.webp"):
        write_image(root / name)
    for name in ("notes.txt", "texts/x.txt"):
        (root / name).write_text("not an image\n")
    return root


def sources(items):
    return [Path(item.source).name for item in items]


def errors(items):
    return {Path(item.source).name: item.error for item in items if item.error}


def test_single_file_is_one_item(tree):
    assert expand_sources([str(tree / "a.jpg")]) == [Item(str(tree / "a.jpg"))]


def test_a_named_file_is_kept_even_without_an_image_extension(tree):
    """The user asked for it: the decoder, not the expander, says whether it is an image."""
    assert expand_sources([str(tree / "notes.txt")]) == [Item(str(tree / "notes.txt"))]


def test_folder_lists_every_file_sorted_and_non_images_become_error_items(tree):
    items = expand_sources([str(tree)])
    assert sources(items) == ["a.jpg", "b.PNG", "notes.txt"]
    assert errors(items) == {"notes.txt": errors(items)["notes.txt"]}
    assert errors(items)["notes.txt"].startswith("unsupported format (.txt)")


def test_recursive_folder_reaches_subfolders(tree):
    items = expand_sources([str(tree)], recursive=True)
    assert sorted(sources(items)) == ["a.jpg", "b.PNG", "c.jpeg", "d.webp", "notes.txt", "x.txt"]
    assert sorted(errors(items)) == ["notes.txt", "x.txt"]


def test_folder_without_files_is_one_error_item_with_a_hint(tree):
    [item] = expand_sources([str(tree / "empty")])
    assert item.source == str(tree / "empty") and "no files" in item.error and "--recursive" in item.error
    [item] = expand_sources([str(tree / "empty")], recursive=True)
    assert "no files" in item.error and "--recursive" not in item.error


def test_folder_whose_images_are_only_in_subfolders_needs_recursive(tree):
    nested = tree / "nested"
    (nested / "inner").mkdir(parents=True)
    write_image(nested / "inner" / "e.jpg")
    [item] = expand_sources([str(nested)])
    assert item.source == str(nested) and "--recursive" in item.error
    assert expand_sources([str(nested)], recursive=True) == [Item(str(nested / "inner" / "e.jpg"))]
    assert sources(expand_sources([str(tree / "sub")], recursive=True)) == ["c.jpeg", "d.webp"]


def test_glob_lists_every_file_sorted(tree):
    items = expand_sources([str(tree / "*")])
    assert sources(items) == ["a.jpg", "b.PNG", "notes.txt"]  # the folders are not files
    assert list(errors(items)) == ["notes.txt"]
    items = expand_sources([str(tree / "**" / "*.jp*g")])
    assert sources(items) == ["a.jpg", "c.jpeg"]  # ** recurses


def test_empty_glob_is_one_error_item(tree):
    pattern = str(tree / "*.tiff")
    assert expand_sources([pattern]) == [Item(pattern, "glob matched no files")]


def test_missing_path_is_one_error_item(tree):
    missing = str(tree / "gone.jpg")
    assert expand_sources([missing]) == [Item(missing, "no such file or folder")]


def test_every_argument_is_accounted_for_in_order(tree):
    arguments = [str(tree / "a.jpg"), str(tree / "missing.png"), str(tree / "empty"), str(tree / "nope*.jpg"),
                 str(tree / "sub")]
    items = expand_sources(arguments)
    assert [item.source for item in items] == [
        str(tree / "a.jpg"), str(tree / "missing.png"), str(tree / "empty"), str(tree / "nope*.jpg"),
        str(tree / "sub" / "c.jpeg"),
    ]
    assert [item.error is None for item in items] == [True, False, False, False, True]


def test_a_file_with_glob_characters_in_its_name_is_taken_literally(tree):
    odd = tree / "scan[1].jpg"
    odd.write_bytes(b"x")
    assert expand_sources([str(odd)]) == [Item(str(odd))]


def test_no_arguments_give_no_items():
    assert expand_sources([]) == []


# --- nothing lost: every listed file gets an item ---------------------------------------------------------------

@pytest.fixture
def mixed(tmp_path) -> Path:
    """Every kind of file a real folder holds: formats OpenCV decodes (by content, whatever the name), files it
    does not, an empty one, a video, and the hidden and system files that are skipped on purpose."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    pixels = np.full((6, 5, 3), 90, np.uint8)
    for name, fmt in (("a.gif", "GIF"), ("b.tif", "TIFF"), ("c.bmp", "BMP"), ("d.ppm", "PPM"),
                      ("e.jp2", "JPEG2000"), ("f.webp", "WEBP"), ("g.png", "PNG"), ("h.jpg", "JPEG"),
                      ("misnamed.dat", "PNG")):
        Image.fromarray(pixels).save(folder / name, fmt)
    Image.fromarray(pixels).save(folder / "i.ico", "ICO")  # a real image format OpenCV has no decoder for
    (folder / "notes.xyz").write_text("text")
    (folder / "empty.png").write_bytes(b"")
    (folder / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 32)
    (folder / "noext").write_bytes(b"\x01\x02\x03")
    for junk in (".DS_Store", "._a.gif", "Thumbs.db", "desktop.ini"):
        (folder / junk).write_bytes(b"junk")
    (folder / ".cache").mkdir()
    Image.fromarray(pixels).save(folder / ".cache" / "thumb.png", "PNG")
    return folder


DECODABLE = ["a.gif", "b.tif", "c.bmp", "d.ppm", "e.jp2", "f.webp", "g.png", "h.jpg", "misnamed.dat"]


def test_every_listed_file_gets_an_item_and_only_hidden_and_system_files_are_skipped(mixed):
    items = expand_sources([str(mixed)], recursive=True)
    expected = sorted(DECODABLE + ["i.ico", "notes.xyz", "empty.png", "clip.mp4", "noext"])
    assert sorted(sources(items)) == expected  # not the 4 junk files, nor .cache/thumb.png
    assert len(items) == 14 and is_skipped(mixed / ".cache" / "thumb.png", mixed)
    assert not any(name.startswith(".") or name in ("Thumbs.db", "desktop.ini") for name in sources(items))
    reasons = errors(items)
    assert reasons["notes.xyz"].startswith("unsupported format (.xyz)")
    assert reasons["i.ico"].startswith("unsupported format (.ico)")
    assert reasons["noext"].startswith("unsupported format (no extension)")
    assert reasons["empty.png"] == "the file is empty (0 bytes)"
    ok = [item.source for item in items if item.error is None]
    assert sorted(Path(p).name for p in ok if Path(p).name != "clip.mp4") == DECODABLE


def test_each_decodable_format_really_decodes(mixed):
    """The items the expander passes are ones the decoder reads: GIF, TIFF, PNM, JPEG 2000 included."""
    for name in DECODABLE:
        assert decode_image(mixed / name).shape == (6, 5, 3), name


def test_a_video_in_a_folder_gets_a_reason_that_says_what_to_do(mixed):
    [item] = [item for item in expand_sources([str(mixed)]) if item.source.endswith("clip.mp4")]
    reason = item.error
    if reason is None:  # OpenCV's AVIF decoder claims any ISO media file; then the decoder gives the reason
        with pytest.raises(ImageDecodeError) as caught:
            decode_image(item.source)
        reason = str(caught.value)
    assert "unsupported format (.mp4)" in reason and "source of its own" in reason


def test_a_gif_glob_matches_gifs(mixed):
    items = expand_sources([str(mixed / "*.gif")])
    assert items == [Item(str(mixed / "a.gif"))]


def test_infer_gives_one_record_per_listed_file(mixed, artifact_dir, tmp_path):
    """Through the real CLI: records == listed files, the decodable ones audited, the rest error records."""
    import json

    from click.testing import CliRunner

    from auditor_rt.cli.main import cli

    result = CliRunner().invoke(cli, ["infer", str(artifact_dir), str(mixed), "-o", str(tmp_path / "runs"),
                                      "--no-save-overlays"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "runs" / "run-001" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 14
    status = {Path(row["source"]).name: row["status"] for row in rows}
    assert sorted(name for name, value in status.items() if value == "ok") == DECODABLE
    assert all("OpenCV(" not in row.get("error", "") for row in rows)


# --- run folders -----------------------------------------------------------------------------------------------

def test_run_folders_number_upwards_and_are_created(tmp_path):
    parent = tmp_path / "runs" / "infer"  # does not exist yet
    first, second, third = (next_run_folder(parent) for _ in range(3))
    assert [p.name for p in (first, second, third)] == ["run-001", "run-002", "run-003"]
    assert all(p.is_dir() and p.parent == parent for p in (first, second, third))


def test_run_folders_continue_after_the_highest_and_ignore_other_names(tmp_path):
    for name in ("run-002", "run-007", "run-abc", "other", "run-7x", "train-100"):
        (tmp_path / name).mkdir()
    assert next_run_folder(tmp_path).name == "run-008"


def test_run_folder_numbers_past_999_and_a_file_in_the_way(tmp_path):
    (tmp_path / "run-999").mkdir()
    assert next_run_folder(tmp_path).name == "run-1000"
    (tmp_path / "run-1001").write_text("a file, not a folder")
    assert next_run_folder(tmp_path).name == "run-1002"


def test_run_folder_prefix(tmp_path):
    (tmp_path / "run-004").mkdir()
    assert next_run_folder(tmp_path, prefix="exp").name == "exp-001"
    assert next_run_folder(tmp_path, prefix="exp").name == "exp-002"
