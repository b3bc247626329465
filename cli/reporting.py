"""Human-readable summaries printed by several commands."""

from __future__ import annotations

import click


def print_skipped(skipped) -> None:
    for path, reason in skipped:
        click.secho(f"skipped {path}: {reason}", fg="yellow", err=True)
    click.echo(f"skipped files: {len(skipped)}")


def print_training(result) -> None:
    cfg = result.config
    m, t = cfg["metrics"], cfg["timing"]
    print_skipped(result.skipped)
    pointing = "n/a (no boxes)" if m["pointing_game"] is None else f"{m['pointing_game']:.3f}"
    click.echo(f"best epoch {cfg['best_epoch']}: val AUROC {m['auroc']:.3f}  AP {m['ap']:.3f}  gap {m['gap']:.2f}  "
               f"pointing game {pointing}  threshold {cfg['threshold']:.3f}")
    if t.get("cache_speedup"):
        click.echo(f"feature cache: backbone pass {t['feature_cache_s']:.1f} s once, then {t['head_epoch_s'] * 1000:.0f} "
                   f"ms per head epoch ({t['cache_speedup']:.0f}x faster than running the backbone every epoch)")
    else:
        click.echo(f"backbone and head trained end to end: {t['epoch_s']:.1f} s per epoch")
    click.echo(f"checkpoint: {result.folder}  (curves: {result.folder / 'curves.png'})")


def parity_text(errors: dict[str, float]) -> str:
    floors = getattr(errors, "floors", {})
    return ", ".join(f"{k} {v:.1e}" + (f" (against FP64; PyTorch FP32 {floors[k]:.1e})" if k in floors else "")
                     for k, v in errors.items())


def print_export(result) -> None:
    graphs = result.manifest.graphs
    click.echo(f"exported {len(graphs)} graph(s) in {result.export_s:.1f} s: {', '.join(g.file for g in graphs.values())}")
    for key, errors in result.parity.items():
        click.echo(f"parity with PyTorch, {key} (max abs; maps relative to their scale): {parity_text(errors)}")
    if result.weights:
        w = result.weights
        click.echo(f"weights: {w['file']} {w['bytes'] / 1e6:.1f} MB shared by all graphs "
                   f"({w['saved_bytes'] / 1e6:.1f} MB of duplicates not stored)")
    click.echo(f"artifact: {result.folder}")
