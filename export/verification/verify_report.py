"""``verify --report DIR``: ``report.json`` with every figure, and ``report.html``, one self-contained page (images
inline) with the verdict table, the integrity checks and, for the worst inputs of each map, the input, the
reference map, the backend's map and their error side by side."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import cv2
import numpy as np

from auditor_rt.export.verification.verify import VerifyReport
from auditor_rt.export.verification.compare import scaled_errors
from auditor_rt.runtime.visualize import colorize

WORST = 3  # inputs shown per map
TILE = 160


def write_report(report: VerifyReport, folder: str | Path) -> tuple[Path, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, html_path = folder / "report.json", folder / "report.html"
    json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    html_path.write_text(render_html(report))
    return json_path, html_path


def _png(image: np.ndarray) -> str:
    image = cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_NEAREST)
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode()


def _map_picture(values: np.ndarray, scale: float, signed: bool) -> np.ndarray:
    """A map in the colours of the product's overlays, on the reference's scale (so both maps read alike)."""
    values = values.reshape(values.shape[-2:]) if values.ndim > 2 else values
    if signed:
        return colorize(values, signed=True, scale=scale)
    return colorize(np.clip(values / scale, 0, 1) if scale > 0 else values)


def _figure(src: str, caption: str) -> str:
    return f'<figure><img src="{src}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def _worst_rows(report: VerifyReport) -> list[str]:
    sections = []
    for (backend, graph, output), maps in report.maps.items():
        reference, actual = maps["reference"], maps["actual"]
        errors = scaled_errors(actual, reference, "map")
        signed = bool((reference < 0).any())
        rows = []
        for row in np.argsort(-np.nan_to_num(errors, nan=np.inf))[:WORST]:
            ref, act, index = reference[row], actual[row], int(maps["inputs"][row])  # --quick runs IG on a subset
            scale = float(np.abs(ref).max()) or 1.0
            error = np.abs(np.nan_to_num(act, nan=0.0) - ref) / scale
            rows.append(
                '<div class="row">'
                + _figure(_png(report.images[index]), f"input {report.inputs[index]}")
                + _figure(_png(_map_picture(ref, scale, signed)), "PyTorch (FP64)")
                + _figure(_png(_map_picture(act, scale, signed)), backend)
                + _figure(_png(colorize(np.clip(error / max(float(error.max()), 1e-30), 0, 1))),
                          f"|error|, max {float(errors[row]):.1e} of scale")
                + "</div>")
        sections.append(f"<h3>{html.escape(graph)}/{html.escape(output)} on {html.escape(backend)}: worst "
                        f"{len(rows)} inputs</h3>" + "".join(rows))
    return sections


def _ill(comparison) -> list[str]:
    return [f"ill-conditioned input {label}: {why} (judged against its own floor only)"
            for label, why in comparison.ill_conditioned.items()]


def _number(value) -> str:
    if value is None:
        return "–"
    return f"{value:.2e}" if isinstance(value, float) and (abs(value) < 1e-3 or abs(value) >= 1e4) and value \
        else (f"{value:.6f}" if isinstance(value, float) else str(value))


def render_html(report: VerifyReport) -> str:
    verdict = "PASS" if report.passed else "FAIL"
    rows = []
    for c in report.comparisons:
        rows.append(
            f'<tr class="{"pass" if c else "fail"}"><td>{"PASS" if c else "FAIL"}</td><td>{html.escape(c.backend)}</td>'
            f"<td>{html.escape(c.graph)}/{html.escape(c.output)}</td><td>{c.kind}</td>"
            f"<td>{_number(c.scaled_error)}</td><td>{_number(c.allowed)}</td><td>{_number(c.floor)}</td>"
            f"<td>{_number(c.max_abs)}</td><td>{_number(c.max_rel)}</td><td>{_number(c.cosine)}</td>"
            f"<td>{_number(c.spearman)}</td><td>{_number(c.iou)}</td><td>{_number(c.dependence)}</td>"
            f"<td>{html.escape('; '.join(c.reasons + c.notes + _ill(c)))}</td></tr>")
    checks = "".join(f'<li class="{"pass" if f.ok else "fail"}">{"ok" if f.ok else "FAIL"} {html.escape(f.check)}'
                     f"{': ' + html.escape(f.detail) if f.detail else ''}</li>" for f in report.integrity)
    unavailable = "".join(f"<li>{html.escape(b)}: {html.escape(why)}</li>" for b, why in report.unavailable.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>auditor-rt verify: {verdict}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
h1 .verdict {{ padding: 2px 10px; border-radius: 4px; color: white; background: {'#2a7' if report.passed else '#c33'}; }}
table {{ border-collapse: collapse; font-size: 12px; }} td, th {{ border: 1px solid #ccc; padding: 3px 6px; }}
tr.fail td {{ background: #fdd; }} li.fail {{ color: #b00; }}
.row {{ display: flex; gap: 8px; margin-bottom: 8px; }} figure {{ margin: 0; text-align: center; font-size: 11px; }}
</style></head><body>
<h1>auditor-rt verify <span class="verdict">{verdict}</span></h1>
<p>Artifact <code>{html.escape(report.artifact)}</code>; reference: {html.escape(report.reference)};
{len(report.inputs)} inputs ({html.escape(', '.join(report.inputs))}); {report.seconds:.1f} s.</p>
<h2>Outputs</h2>
<p>Every figure is judged per input. Errors of maps are relative to that input's reference map's max |value|;
"floor" is PyTorch FP32's own error against the FP64 reference on that input, and the allowed error is the
tolerance or twice that floor; the row shows the input farthest past its allowance. An input whose FP64 reference is
ill-conditioned (PyTorch FP32 has cosine &lt; 0.99 against it, or it moves by more than the tolerance under a 1e-6
input jitter) is named in the last column and judged against its own floor only; input dependence is judged on the
other inputs. "max rel" looks only at cells whose |reference| is at least 1e-3 of the map's scale.</p>
<table id="verdicts"><tr><th>verdict</th><th>backend</th><th>output</th><th>kind</th><th>error / scale</th>
<th>allowed</th><th>floor</th><th>max abs</th><th>max rel</th><th>cosine</th><th>Spearman</th><th>top-10% IoU</th>
<th>input dependence</th><th>why</th></tr>
{''.join(rows)}</table>
<h2>Integrity</h2><ul id="integrity">{checks}</ul>
{f'<h2>Not run</h2><ul>{unavailable}</ul>' if unavailable else ''}
<h2>Worst inputs</h2>
{''.join(_worst_rows(report))}
</body></html>
"""
