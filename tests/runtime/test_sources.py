"""Expanding user arguments into items (an error item for each unusable one), and auto-numbered run folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor_rt.runtime.runfolder import next_run_folder
from auditor_rt.runtime.sources import Item, expand_sources


@pytest.fixture
def tree(tmp_path) -> Path:
    """root/ a.jpg b.PNG notes.txt  sub/ c.jpeg  sub/deeper/ d.webp  empty/  texts/ x.txt"""
    root = tmp_path / "root"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "texts").mkdir()
    for name in ("a.jpg", "b.PNG", "notes.txt", "sub/c.jpeg", "sub/deeper/d.webp", "texts/x.txt"):
        (root / name).write_bytes(b"x")  # contents do not matter here: expansion never decodes
    return root


def sources(items):
    return [Path(item.source).name for item in items]


def test_single_file_is_one_item(tree):
    assert expand_sources([str(tree / "a.jpg")]) == [Item(str(tree / "a.jpg"))]


def test_a_named_file_is_kept_even_without_an_image_extension(tree):
    """The user asked for it: the decoder, not the expander, says whether it is an image."""
    assert expand_sources([str(tree / "notes.txt")]) == [Item(str(tree / "notes.txt"))]


def test_folder_lists_its_images_sorted_and_skips_other_files(tree):
    items = expand_sources([str(tree)])
    assert sources(items) == ["a.jpg", "b.PNG"]
    assert all(item.error is None for item in items)


def test_recursive_folder_reaches_subfolders(tree):
    items = expand_sources([str(tree)], recursive=True)
    assert sorted(sources(items)) == ["a.jpg", "b.PNG", "c.jpeg", "d.webp"]
    assert all(item.error is None for item in items)


def test_folder_without_images_is_one_error_item_with_a_hint(tree):
    [item] = expand_sources([str(tree / "empty")])
    assert item.source == str(tree / "empty") and "no images" in item.error and "--recursive" in item.error
    [item] = expand_sources([str(tree / "texts")], recursive=True)
    assert "no images" in item.error and "--recursive" not in item.error


def test_folder_whose_images_are_only_in_subfolders_needs_recursive(tree):
    nested = tree / "nested"
    (nested / "inner").mkdir(parents=True)
    (nested / "inner" / "e.jpg").write_bytes(b"x")
    [item] = expand_sources([str(nested)])
    assert item.source == str(nested) and "--recursive" in item.error
    assert expand_sources([str(nested)], recursive=True) == [Item(str(nested / "inner" / "e.jpg"))]
    assert sources(expand_sources([str(tree / "sub")], recursive=True)) == ["c.jpeg", "d.webp"]


def test_glob_matches_image_files_only_sorted(tree):
    items = expand_sources([str(tree / "*")])
    assert sources(items) == ["a.jpg", "b.PNG"]  # notes.txt and the folders are not images
    items = expand_sources([str(tree / "**" / "*.jp*g")])
    assert sources(items) == ["a.jpg", "c.jpeg"]  # ** recurses


def test_empty_glob_is_one_error_item(tree):
    pattern = str(tree / "*.tiff")
    assert expand_sources([pattern]) == [Item(pattern, "glob matched no image files")]


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
