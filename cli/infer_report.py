"""What ``infer`` tells the user while it runs (a progress line) and after (the summary, the first errors)."""

from __future__ import annotations

import json
import sys
import time

import click

from auditor_rt.cli.progress_line import ProgressLine


class RunProgress:
    """A progress line with count, rate and ETA when the source knows its total (image files); a running count of
    frames, fps, risks, events and errors when it does not (streams). A context manager: it ends its line."""

    def __init__(self, total: int | None, explain: str | None):
        self.err = sys.stderr
        label = f"auditing (--explain {explain})" if explain else "auditing"
        self.bar = ProgressLine(total, self.err, label=label) if total is not None else None
        self.began = time.perf_counter()

    def __call__(self, count: int, summary, depth: int) -> None:
        if self.bar is not None:
            self.bar.update(count, f"writer queue {depth}" if depth else "")
            return
        fps = summary.ok / max(time.perf_counter() - self.began, 1e-9)
        risk = "" if summary.positives is None else f", {summary.positives} risk"
        self.err.write(f"\r{summary.ok} frames, {fps:.1f} fps{risk}, {summary.events} events, {summary.errors} "
                       f"errors, queue {depth}  ")
        self.err.flush()

    def __enter__(self) -> "RunProgress":
        return self

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            self.err.write("\n")
            self.err.flush()  # before the summary goes to stdout


def report(summary, as_json: bool) -> None:
    """The summary as one JSON line, or as a few lines for people, with the first error messages."""
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
        return
    for message in summary.error_messages:
        click.secho(f"error {message}", fg="yellow", err=True)
    if summary.errors > len(summary.error_messages):
        more = summary.errors - len(summary.error_messages)
        click.secho(f"... and {more} more errors in {summary.folder / 'results.jsonl'}", fg="yellow", err=True)
    _warn_ig(summary.ig)
    flagged = "" if summary.positives is None else f", {summary.positives} flagged as risk"
    streams = f", {summary.events} events, {summary.dropped} dropped" if summary.decoded else ""
    stopped = f", stopped by {summary.stopped_by}" if summary.stopped_by else ""
    if summary.stopped_by == "interrupt":
        stopped += f" (--resume {summary.folder} does the rest)"
    click.echo(f"{summary.ok} ok, {summary.errors} errors{streams}{flagged} in {summary.seconds:.1f} s "
               f"({summary.fps:.1f}/s){stopped}")
    click.echo(f"results: {summary.folder / 'results.jsonl'}")
    overlays, sheet = summary.folder / "overlays", summary.folder / "contact_sheet.png"
    if overlays.is_dir():
        click.echo(f"overlays: {overlays}" + (f"  contact sheet: {sheet}" if sheet.is_file() else ""))
    elif sheet.is_file():
        click.echo(f"contact sheet: {sheet}")


def _warn_ig(ig: dict | None) -> None:
    """Once per run: IG maps whose attributions do not add up to the logit difference (too few steps)."""
    if ig and ig["unconverged"]:
        click.secho(f"warning: integrated gradients did not converge on {ig['unconverged']} of {ig['checked']} "
                    f"image(s): |delta| reached {ig['worst_gap']:.0%} of |logit(image) - logit(baseline)| (allowed "
                    f"10%) at {ig['steps']} steps; re-export with --ig-steps {ig['suggested_steps']} (an estimate: "
                    "the gap is taken to shrink as 1/steps^2). Records say ig_converged: false.",
                    fg="yellow", err=True)
