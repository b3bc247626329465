"""`auditor-rt build` where it cannot build: no TensorRT, FP16 without an FP16 graph, a bad profile. One line on
stderr, exit code 2, no traceback, nothing written. (The builder itself: tests/export/test_tensorrt_build.py.)"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditor_rt.cli.main import cli

TINY = Path(__file__).resolve().parents[1] / "runtime" / "tiny"


@pytest.fixture
def risk(tmp_path) -> Path:
    return Path(shutil.copytree(TINY / "risk", tmp_path / "risk"))


def build(*args):
    return CliRunner().invoke(cli, ["build", *map(str, args)])


def error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_without_tensorrt_build_exits_2_with_one_line(risk, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on a machine without it, whatever is installed here
    before = sorted(p.name for p in risk.iterdir())
    line = error_line(build(risk, "--graphs", "audit"))
    assert "TensorRT" in line and "pip install 'auditor-rt[gpu]'" in line
    assert sorted(p.name for p in risk.iterdir()) == before


def test_fp16_without_an_fp16_graph_exits_2_with_one_line(risk, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    line = error_line(build(risk, "--precision", "fp16"))
    assert "no FP16 ONNX graph" in line and not (risk / "engines").exists()


def test_a_bad_profile_exits_2_with_one_line(risk):
    line = error_line(build(risk, "--min-batch", "4", "--max-batch", "2"))
    assert "--min-batch <= --opt-batch <= --max-batch" in line


def test_build_is_listed_with_its_options():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and "build" in result.output
    result = CliRunner().invoke(cli, ["build", "--help"])
    for option in ("--graphs", "--precision", "--min-batch", "--opt-batch", "--max-batch", "--workspace-mb",
                   "--hardware-compat", "--version-compatible", "--tf32"):
        assert option in result.output
