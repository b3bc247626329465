"""The layout rules of DESIGN.md: one import name, every package folder listed and installed."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = {"export": "auditor_rt.export", "runtime": "auditor_rt.runtime", "cli": "auditor_rt.cli"}


def package_folders() -> dict[str, Path]:
    found = {}
    for folder, name in SOURCE_FOLDERS.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            relative = init.parent.relative_to(ROOT / folder)
            found[".".join([name, *relative.parts])] = init.parent
    return found


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    assert set(package_folders()) == listed


def test_every_package_is_installed_from_its_folder():
    for name, folder in package_folders().items():
        spec = importlib.util.find_spec(name)
        assert spec is not None, f"{name} is not importable: reinstall with `pip install -e .`"
        assert Path(spec.origin).resolve().parent == folder.resolve(), name


def test_no_auditor_rt_folder_at_the_root_hides_the_namespace():
    assert not (ROOT / "auditor_rt").exists()


def test_console_script_is_declared():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["project"]["scripts"]["auditor-rt"] == "auditor_rt.cli.main:cli"


def test_base_install_is_the_runtime_only():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    base = " ".join(config["project"]["dependencies"])
    assert "torch" not in base and "timm" not in base
