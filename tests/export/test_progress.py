"""Progress lines: position, item and stage names, stage times and a time-left estimate."""

from __future__ import annotations

import io
import re

import pytest

from auditor_rt.export import progress as progress_module
from auditor_rt.export.progress import Progress, format_duration


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(progress_module.time, "perf_counter", fake)
    return fake


def test_lines_name_the_item_its_stages_and_the_time_left(clock):
    stream = io.StringIO()
    progress = Progress(["audit", "ig"], weights={"audit": 1.0, "ig": 3.0}, title="export", stream=stream)
    with progress.item("audit"):
        with progress.stage("ONNX conversion"):
            clock.now += 8.0
        with progress.stage("parity"):
            clock.now += 2.0
    with progress.item("ig"):
        with progress.stage("tracing"):
            clock.now += 5.0
    lines = stream.getvalue().splitlines()
    assert lines[0] == "export: [1/2] audit: ONNX conversion..."  # no estimate before an item has finished
    assert lines[2] == "export: [1/2] audit: 10 s (ONNX conversion 8.0 s, parity 2.0 s); about 30 s left"
    assert lines[3] == "export: [2/2] ig: tracing...; about 30 s left"  # 10 s per unit of weight, ig weighs 3
    assert re.match(r"export: \[2/2\] ig: 5\.0 s \(tracing 5\.0 s\); about 0\.0 s left", lines[4])
    assert progress.seconds == {"audit": {"ONNX conversion": 8.0, "parity": 2.0}, "ig": {"tracing": 5.0}}
    assert progress.total("parity") == 2.0 and progress.total() == 15.0


def test_time_left_counts_the_current_item_less_its_time_so_far(clock):
    progress = Progress(["a", "b", "c"], stream=io.StringIO())
    with progress.item("a"):
        clock.now += 20.0
    with progress.item("b"):
        clock.now += 5.0
        assert progress.eta() == pytest.approx(20.0 * 2 - 5.0)


def test_silent_progress_keeps_times_and_prints_nothing(clock, capsys):
    progress = Progress.silent(["a"])
    with progress.item("a"), progress.stage("s"):
        clock.now += 1.0
    progress.note("not shown")
    assert capsys.readouterr().err == ""
    assert progress.seconds["a"]["s"] == 1.0


def test_a_terminal_gets_stage_lines_rewritten_in_place(clock):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = Progress(["a"], stream=stream)
    with progress.item("a"), progress.stage("tracing"):
        clock.now += 1.0
    text = stream.getvalue()
    assert text.startswith("\r\033[K[1/1] a: tracing...") and "\n" not in text.split("\r\033[K")[1]
    assert text.endswith("\r\033[K[1/1] a: 1.0 s (tracing 1.0 s); about 0.0 s left\n")


def test_an_item_that_fails_still_ends_its_line(clock):
    stream = io.StringIO()
    progress = Progress(["a"], stream=stream)
    with pytest.raises(RuntimeError):
        with progress.item("a"), progress.stage("parity"):
            raise RuntimeError("boom")
    assert "[1/1] a:" in stream.getvalue().splitlines()[-1]


@pytest.mark.parametrize("seconds, text", [(3.21, "3.2 s"), (42.4, "42 s"), (185, "3 min 05 s"),
                                           (3725, "1 h 02 min")])
def test_durations_read_at_a_glance(seconds, text):
    assert format_duration(seconds) == text
