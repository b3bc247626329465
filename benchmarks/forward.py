"""Forward-pass latency on CPU: PyTorch eager against the exported ONNX graphs in ONNX Runtime.

Answers two questions in one run, on the same random-weight backbone:
1. How much faster is the ORT ``audit`` graph than PyTorch eager (normalise + backbone + head + heatmap)?
2. What do the heatmap outputs cost? The ``audit`` graph against the logits-only ``score`` graph.

Both ORT session settings are timed: "default" (full optimisation, one intra-op thread per core) and "tuned"
(plus ``_common.TUNED_CONFIG``: threads sleep instead of spinning), which is what ``OnnxRuntimeRunner`` uses. Contenders run in shuffled rounds with a
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
from _common import (TUNED_CONFIG, OutsideLoad, build_modules, busy_cores, export_all,  # noqa: E402
                     ort_runner, ort_session, time_interleaved, torch_runner)

EAGER, ORT_DEFAULT, ORT_TUNED, ORT_SCORE = "torch eager", "ORT default", "ORT tuned", "ORT tuned score"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet50", help="timm model name (random weights)")
    parser.add_argument("--size", type=int, default=224, help="square input size")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds at batch 1")
    parser.add_argument("--repeats-large", type=int, default=8, help="timed rounds at batch > 1")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between calls, for spinning pools to stop")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ORT intra-op threads")
    parser.add_argument("--torch-threads", type=int, help="torch.set_num_threads for eager (default: torch's own)")
    parser.add_argument("--contention", type=int, default=0,
                        help="cores to keep busy with spinning processes while timing (0: none)")
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
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    size = (args.size, args.size)
    print(f"{args.backbone} (random weights), {args.size}x{args.size} uint8 NHWC, {os.cpu_count()} CPU cores; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), ", end="")
    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__} ({args.threads} intra-op threads)")
    print(f"tuned = default + {TUNED_CONFIG}"
          + (f"; {args.contention} core(s) kept busy while timing" if args.contention else ""))
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
    with busy_cores(args.contention), OutsideLoad() as outside:
        for batch in args.batches:
            images = rng.integers(0, 256, (batch, *size, 3), dtype=np.uint8)
            runners = {EAGER: torch_runner(modules["audit"], images)}
            runners.update({name: ort_runner(session, images) for name, session in sessions.items()})
            repeats = args.repeats if batch == 1 else args.repeats_large
            results[batch] = time_interleaved(runners, batch, repeats, args.warmup, args.pause)

    print(f"\n{'batch':>5}  {'runner':<16}{'median ms':>10}{'p90 ms':>9}{'min ms':>9}{'img/s':>8}{'eager/this':>12}")
    for batch, timings in results.items():
        eager = timings[EAGER].median_ms
        for name, t in timings.items():
            print(f"{batch:>5}  {name:<16}{t.median_ms:>10.1f}{t.p90_ms:>9.1f}{t.min_ms:>9.1f}{t.images_per_s:>8.1f}"
                  f"{eager / t.median_ms:>11.2f}x")
    print("\nheatmap cost (ORT tuned audit vs score graph; a few % either way is run-to-run noise here):")
    heatmap = {}
    for batch, timings in results.items():
        audit, score = timings[ORT_TUNED], timings[ORT_SCORE]
        heatmap[batch] = {"audit_over_score": audit.median_ms / score.median_ms,
                          "extra_ms": audit.median_ms - score.median_ms, "extra_min_ms": audit.min_ms - score.min_ms}
        print(f"  batch {batch}: median {audit.median_ms:.1f} vs {score.median_ms:.1f} ms -> "
              f"{heatmap[batch]['audit_over_score']:.3f}x, {heatmap[batch]['extra_ms']:+.1f} ms; "
              f"min {heatmap[batch]['extra_min_ms']:+.1f} ms")
    if outside.cores is not None:
        busy = outside.cores > 0.25
        print(f"\nother processes used {outside.cores:.2f} of {os.cpu_count()} cores during the timing"
              + ("  <- busy machine: trust the ratios more than the absolute times" if busy else ""))
    summary = "; ".join(
        f"b{b}: ORT tuned {t[EAGER].median_ms / t[ORT_TUNED].median_ms:.2f}x eager "
        f"(default {t[EAGER].median_ms / t[ORT_DEFAULT].median_ms:.2f}x), heatmap {heatmap[b]['extra_ms']:+.1f} ms"
        for b, t in results.items())
    print(f"summary: {args.backbone} {summary}")

    report = {
        "config": {"backbone": args.backbone, "input_size": list(size), "threads": args.threads,
                   "contention_cores": args.contention,
                   "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "tuned": TUNED_CONFIG,
                   "torch": torch.__version__, "onnxruntime": ort.__version__, "weights": "random"},
        "export_s": export_s, "onnx_mb": sizes_mb, "parity_max_abs": errors,
        "outside_load_cores": outside.cores,
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
