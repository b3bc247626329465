"""The progress line: count/total, rate and ETA; redrawn in place on a terminal, throttled lines in a log."""

from __future__ import annotations

import io

from auditor_rt.cli.progress_line import ProgressLine, format_seconds


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_log_lines_are_throttled_and_the_last_one_always_comes():
    stream, clock = io.StringIO(), Clock()
    bar = ProgressLine(8, stream, label="auditing", interval=5.0, clock=clock)
    for _ in range(8):
        clock.now += 2.0  # 0.5 img/s
        bar.update(1)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "auditing 1/8 (12%)  0.50 img/s  ETA 14 s"
    assert len(lines) == 4  # at 2 s, then 8 s, 14 s (5 s apart at least), and the end
    assert lines[-1] == "auditing 8/8 (100%)  0.50 img/s  took 16 s"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_line_redrawn():
    stream, clock = Terminal(), Clock()
    bar = ProgressLine(3, stream, clock=clock)
    for _ in range(3):
        clock.now += 1.0
        bar.update(1, "writer queue 1")
    bar.close()
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "auditing 2/3 (66%)  1.00 img/s  ETA 1 s  writer queue 1" in text


def test_format_seconds():
    assert format_seconds(59.4) == "59 s" and format_seconds(96) == "1m36s" and format_seconds(7300) == "2h01m"
