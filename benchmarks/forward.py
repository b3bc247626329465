"""Forward-pass latency on CPU: PyTorch eager against the exported ONNX graphs in ONNX Runtime.

Answers two questions in one run, on the same random-weight backbone:
1. How much faster is the ORT ``audit`` graph than PyTorch eager (normalise + backbone + head + heatmap)?
2. What do the heatmap outputs cost? The ``audit`` graph against the logits-only ``score`` graph.

Both ORT session settings are timed: "default" (what ``OnnxRuntimeRunner`` does today: full optimisation, one
intra-op thread per core) and "tuned" (plus ``_common.TUNED_CONFIG``). Contenders run in shuffled rounds with a
short pause between calls, so that outside load hits them alike; see ``_common.time_interleaved``.

    python benchmarks/forward.py [--backbone resnet50] [--batches 1 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (TUNED_CONFIG, build_modules, export_all, ort_runner, ort_session,  # noqa: E402
                     time_interleaved, torch_runner)

EAGER, ORT_DEFAULT, ORT_TUNED, ORT_SCORE = "torch eager", "ORT default", "ORT tuned", "ORT tuned score"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet50", help="timm model name (random weights)")
    parser.add_argument("--size", type=int, default=224, help="square input size")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds at batch 1")
    parser.add_argument("--repeats-large", type=int, default=6, help="timed rounds at batch > 1")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between calls, for spinning pools to stop")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ORT intra-op threads")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    return parser.parse_args(argv)


def parity(modules: dict, sessions: dict, images: np.ndarray) -> dict[str, float]:
    """Max abs difference of ORT from eager on one batch: a benchmark of a wrong graph would mean nothing."""
    with torch.inference_mode():
        expected = modules["audit"](torch.from_numpy(images))._asdict()
    session = sessions[ORT_TUNED]
    actual = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": images})))
    return {name: float(np.abs(actual[name] - value.numpy()).max()) for name, value in expected.items()}


def main(argv=None) -> dict:
    args = parse_args(argv)
    size = (args.size, args.size)
    load_before = os.getloadavg()
    print(f"{args.backbone} (random weights), {args.size}x{args.size} uint8 NHWC, {os.cpu_count()} CPU cores; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), ", end="")
    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__} ({args.threads} intra-op threads)")
    print(f"tuned = default + {TUNED_CONFIG}")
    modules = build_modules(args.backbone, size)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="auditor_rt_bench_") as folder:
        paths, export_s = export_all(modules, Path(folder), size)
        sizes_mb = {name: path.stat().st_size / 2**20 for name, path in paths.items()}
        print("export (dynamo, opset 18): " + ", ".join(
            f"{name} {export_s[name]:.1f} s ({sizes_mb[name]:.0f} MB)" for name in paths))
        start = time.perf_counter()
        sessions = {ORT_DEFAULT: ort_session(paths["audit"], args.threads),
                    ORT_TUNED: ort_session(paths["audit"], args.threads, TUNED_CONFIG),
                    ORT_SCORE: ort_session(paths["score"], args.threads, TUNED_CONFIG)}
        print(f"ORT sessions created in {time.perf_counter() - start:.1f} s")
    errors = parity(modules, sessions, rng.integers(0, 256, (2, *size, 3), dtype=np.uint8))
    print("ORT vs eager, max abs diff: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))

    results = {}
    for batch in args.batches:
        images = rng.integers(0, 256, (batch, *size, 3), dtype=np.uint8)
        runners = {EAGER: torch_runner(modules["audit"], images)}
        runners.update({name: ort_runner(session, images) for name, session in sessions.items()})
        repeats = args.repeats if batch == 1 else args.repeats_large
        results[batch] = time_interleaved(runners, batch, repeats, args.warmup, args.pause)
    load_after = os.getloadavg()

    print(f"\n{'batch':>5}  {'runner':<16}{'median ms':>10}{'p90 ms':>9}{'img/s':>8}{'eager/this':>12}")
    for batch, timings in results.items():
        eager = timings[EAGER].median_ms
        for name, timing in timings.items():
            print(f"{batch:>5}  {name:<16}{timing.median_ms:>10.1f}{timing.p90_ms:>9.1f}{timing.images_per_s:>8.1f}"
                  f"{eager / timing.median_ms:>11.2f}x")
    print("\nheatmap cost (ORT tuned audit vs score graph):")
    heatmap = {}
    for batch, timings in results.items():
        audit, score = timings[ORT_TUNED].median_ms, timings[ORT_SCORE].median_ms
        heatmap[batch] = {"audit_over_score": audit / score, "extra_ms": audit - score}
        print(f"  batch {batch}: {audit:.1f} vs {score:.1f} ms -> {audit / score:.3f}x, {audit - score:+.1f} ms")
    print(f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}"
          + ("  <- the machine was busy: read ratios, not absolute times" if
             max(load_before[0], load_after[0]) > 0.5 * (os.cpu_count() or 1) else ""))
    summary = "; ".join(
        f"b{b}: ORT tuned {t[EAGER].median_ms / t[ORT_TUNED].median_ms:.2f}x eager "
        f"(default {t[EAGER].median_ms / t[ORT_DEFAULT].median_ms:.2f}x), heatmap {heatmap[b]['extra_ms']:+.1f} ms"
        for b, t in results.items())
    print(f"summary: {args.backbone} {summary}")

    report = {
        "config": {"backbone": args.backbone, "input_size": list(size), "threads": args.threads,
                   "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "tuned": TUNED_CONFIG,
                   "torch": torch.__version__, "onnxruntime": ort.__version__, "weights": "random"},
        "export_s": export_s, "onnx_mb": sizes_mb, "parity_max_abs": errors,
        "loadavg": {"before": load_before, "after": load_after},
        "results": {str(b): {name: t.to_dict() for name, t in timings.items()} for b, timings in results.items()},
        "eager_over_ort": {str(b): {name: t[EAGER].median_ms / t[name].median_ms for name in (ORT_DEFAULT, ORT_TUNED)}
                           for b, t in results.items()},
        "heatmap": {str(b): v for b, v in heatmap.items()},
        "summary": summary,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
