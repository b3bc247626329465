"""``auditor-rt verify``'s verdict table in the terminal: one line per output of every graph on every backend, the
integrity checks that failed or were noted, and why a failing output failed (with the tolerance that would pass
it). ``verify_report.py`` writes the same report as JSON and HTML."""

from __future__ import annotations


def table_lines(report) -> list[tuple[str, dict]]:
    """The table's lines, each with its ``click.style`` keywords (colour, bold)."""
    lines = []

    def echo(text, fg=None, bold=False):
        lines.append((text, {"fg": fg, "bold": bold}))

    def number(value):
        return "-" if value is None else f"{value:.1e}"

    echo(f"verify {report.artifact}: reference {report.reference}; {len(report.inputs)} inputs "
         f"({', '.join(report.inputs)})")
    bad_checks = [f for f in report.integrity if not f.ok]
    echo(f"integrity: {len(report.integrity) - len(bad_checks)} of {len(report.integrity)} checks ok")
    for finding in report.integrity:
        if not finding.ok or finding.detail.startswith("not checked") or finding.detail.startswith("skipped"):
            echo(f"  {'FAIL' if not finding.ok else 'note'} {finding.check}: {finding.detail}",
                 fg="red" if not finding.ok else "yellow")
    for backend, why in report.unavailable.items():
        echo(f"{backend}: {why}", fg="yellow")
    header = (f"{'':4s} {'backend':11s} {'output':24s} {'err/scale':>9s} {'allowed':>8s} {'floor':>8s} "
              f"{'max abs':>8s} {'max rel':>8s} {'q-err':>8s} {'cosine':>9s} {'spearman':>8s} {'iou':>5s} "
              f"{'dep':>6s}")
    echo(header)
    for c in report.comparisons:
        cosine = "-" if c.cosine is None else f"{c.cosine:.6f}"
        spearman = "-" if c.spearman is None else f"{c.spearman:.4f}"
        iou = "-" if c.iou is None else f"{c.iou:.2f}"
        dependence = "-" if c.dependence is None else f"{c.dependence:.4f}"
        line = (f"{'PASS' if c else 'FAIL':4s} {c.backend:11s} {c.graph + '/' + c.output:24s} "
                f"{number(c.scaled_error):>9s} {number(c.allowed):>8s} {number(c.floor):>8s} {number(c.max_abs):>8s} "
                f"{number(c.max_rel):>8s} {number(c.quantile_abs):>8s} {cosine:>9s} {spearman:>8s} {iou:>5s} "
                f"{dependence:>6s}")
        echo(line, fg=None if c else "red")
        if not c:
            rtol = f"rtol {c.min_rtol:.2e}" if c.min_rtol < 1e3 else "no rtol (the reference is ~0 where it is not)"
            echo(f"     {'; '.join(c.reasons)}; would pass with atol {c.min_atol:.2e} or {rtol}", fg="red")
        for note in c.notes:
            echo(f"     note: {note}", fg="yellow")
        if c.ill_conditioned:
            shown = "; ".join(f"{label} ({why})" for label, why in c.ill_conditioned.items())
            echo(f"     ill-conditioned, judged on their own floors: {shown}", fg="yellow")
    echo("err/scale, allowed, floor: the input farthest past its own allowance; max rel: over cells whose "
         "|reference| >= 1e-3 of the map's scale")
    verdict = "PASS" if report.passed else "FAIL"
    echo(f"{verdict}: {sum(map(bool, report.comparisons))} of {len(report.comparisons)} outputs passed in "
         f"{report.seconds:.1f} s", fg="green" if report.passed else "red", bold=True)
    return lines
