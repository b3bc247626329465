"""How long ``export`` takes, stage by stage: resnet50 (random weights) with a random risk head, the six gradient
methods (saliency, gradxinput, ig, smoothgrad, gradcam, gradcam++) and the parity check, as
``auditor-rt export CHECKPOINT --attribution ...`` runs it.

Stage times are the exporter's own (``ExportResult.progress``, summed over the graphs, and per graph). An exporter
from before ``export/progress.py`` (commit 3c0d7e2) is timed by wrapping the functions that do each job instead
(tracing, ONNX conversion, passes, parity, saving); "other" is the total minus the stages.

    .venv/bin/python benchmarks/export.py [--backbone resnet50] [--methods ...] [--repeats 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import functools
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model, load_average  # noqa: E402

DEFAULT_METHODS = "saliency,gradxinput,ig,smoothgrad,gradcam,gradcam++"

# (module, attribute, stage): the functions whose time is a stage, at their paths in exporters from before
# progress.py (commit 3c0d7e2), the only ones this wrapping is for. Missing ones are skipped.
WRAPPED = [
    ("auditor_rt.export.attribution.compiler", "make_fx", "tracing (make_fx)"),
    ("auditor_rt.export.attribution.compiler", "check_batch_is_free", "traced graph at batch+1"),
    ("torch.onnx", "export", "ONNX conversion (torch.onnx.export)"),
    ("auditor_rt.export.onnx_export", "optimize_for_onnxruntime", "ONNX passes"),
    ("auditor_rt.export.onnx_export", "write_metadata", "metadata (load + save)"),
    ("auditor_rt.export.onnx_export", "check_parity", "parity"),
    ("auditor_rt.export.parity", "_fp32_reference", "  parity: torch FP32 reference"),
    ("auditor_rt.export.parity", "_fp64_reference", "  parity: torch FP64 reference"),
    ("auditor_rt.export.parity", "_ort_outputs", "  parity: ONNX Runtime"),
    ("auditor_rt.export.onnx_export", "share_initializers", "weights.bin dedupe"),
    ("auditor_rt.export.onnx_export", "ig_completeness", "IG completeness check"),
]
OUTER = {"tracing (make_fx)", "traced graph at batch+1", "ONNX conversion (torch.onnx.export)", "ONNX passes",
         "metadata (load + save)", "parity", "weights.bin dedupe", "IG completeness check"}


def wrap_stages(seconds: dict[str, float]) -> None:
    for module_name, attribute, stage in WRAPPED:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        original = getattr(module, attribute, None)
        if original is None or getattr(original, "_timed", False):
            continue

        def timed(*args, _original=original, _stage=stage, **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                seconds[_stage] += time.perf_counter() - start

        timed = functools.wraps(original)(timed)
        timed._timed = True
        setattr(module, attribute, timed)


def make_checkpoint(backbone: str, folder: Path, size: int = 224) -> Path:
    """A checkpoint as ``train`` writes it, with a random head whose feature statistics come from a few images."""
    import torch

    from auditor_rt.export.models.backbone import FeatureExtractor, Normalize, create_backbone, preprocessing_of
    from auditor_rt.export.models.checkpoint import save_checkpoint
    from auditor_rt.export.models.head import RiskHead

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, info = create_backbone(backbone, "random")
    mean, std = preprocessing_of(model)
    features = FeatureExtractor(model, (size, size))
    head = RiskHead(features.channels).eval()
    images = torch.randint(0, 256, (4, size, size, 3), dtype=torch.uint8)
    with torch.no_grad():
        head.set_feature_stats(features(Normalize(mean, std)(images)))
    config = {"backbone": backbone, "input_size": [size, size], "mean": list(mean), "std": list(std),
              "threshold": 0.5}
    save_checkpoint(folder, config, head, model, info)
    return folder


def run_once(checkpoint: Path, methods: list[str], out: Path, ig_steps: int) -> tuple[float, dict[str, float]]:
    from auditor_rt.export.models.checkpoint import load_checkpoint
    from auditor_rt.export.graphs.artifact_writer import ExportResult
    from auditor_rt.export.graphs.risk_head_export import export_artifact

    seconds: dict[str, float] = collections.defaultdict(float)
    if not hasattr(ExportResult, "__dataclass_fields__") or "progress" not in ExportResult.__dataclass_fields__:
        wrap_stages(seconds)  # an exporter from before progress.py: time its functions from outside
    before = load_average()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = export_artifact(load_checkpoint(checkpoint), out, attributions=methods,
                                 attribution_params={"ig": {"steps": ig_steps}})
    total = time.perf_counter() - start
    progress = getattr(result, "progress", None)
    if progress is not None:  # the exporter's own stage times (every graph, summed per stage)
        seconds = collections.defaultdict(float)
        for stages in progress.seconds.values():
            for stage, value in stages.items():
                seconds[stage] += value
        for graph, stages in progress.seconds.items():
            print(f"  {graph:<12} {sum(stages.values()):6.1f} s  " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
        seconds["other"] = total - sum(seconds.values())
    else:
        seconds["other"] = total - sum(v for k, v in seconds.items() if k in OUTER)
    print(f"load average before {before}, after {load_average()}", flush=True)
    return total, dict(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--ig-steps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="each in a fresh process; the median is quoted")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--_child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    if args._child:  # one export in this process; results as JSON
        work = args._child
        total, seconds = run_once(work / "checkpoint", methods, work / f"artifact-{time.time_ns()}", args.ig_steps)
        (work / "result.json").write_text(json.dumps({"total_s": total, "stages_s": seconds}))
        return
    import subprocess

    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; load average {load_average()}")
    print(f"{args.backbone}, methods {', '.join(methods)}, IG {args.ig_steps} steps, parity check on")
    runs = []
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        work = Path(tmp)
        make_checkpoint(args.backbone, work / "checkpoint")
        for repeat in range(args.repeats):
            command = [sys.executable, __file__, "--backbone", args.backbone, "--methods", args.methods,
                       "--ig-steps", str(args.ig_steps), "--_child", str(work)]
            subprocess.run(command, check=True)
            runs.append(json.loads((work / "result.json").read_text()))
            print(f"run {repeat + 1}: {runs[-1]['total_s']:.1f} s", flush=True)
    order = [s for _, _, s in WRAPPED]
    stages = sorted({k for run in runs for k in run["stages_s"]}, key=lambda k: order.index(k) if k in order else 99)
    print(f"\n{'stage':<40} " + " ".join(f"{'run ' + str(i + 1):>8}" for i in range(len(runs))) + f" {'median':>8}")
    for stage in stages:
        values = [run["stages_s"].get(stage, 0.0) for run in runs]
        print(f"{stage:<40} " + " ".join(f"{v:8.1f}" for v in values) + f" {statistics.median(values):8.1f}")
    totals = [run["total_s"] for run in runs]
    print(f"{'total':<40} " + " ".join(f"{v:8.1f}" for v in totals) + f" {statistics.median(totals):8.1f}")
    print(f"load average at the end: {load_average()}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_model(), "runs": runs, "methods": methods,
                                         "backbone": args.backbone}, indent=2))


if __name__ == "__main__":
    main()
