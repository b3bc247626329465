"""Attribution latency and peak memory on CPU: the exported ORT graphs against the eager tools people use.

On one random-weight backbone (resnet50 at 224 by default), at batch 1 and 8, with the risk logit as the target:
- Grad-CAM at the last feature stage (``layer4``): ORT ``gradcam`` graph vs pytorch-grad-cam ``GradCAM``, plus a
  hand-written eager Grad-CAM with the gradient taken through the head only (the graph's own algorithm), which
  separates what ORT buys from what the algorithm buys;
- input-gradient saliency: ORT ``saliency`` vs Captum ``Saliency``;
- integrated gradients, 32 Gauss-Legendre steps, black baseline: ORT ``ig`` vs Captum ``IntegratedGradients``
  (``internal_batch_size`` = steps);
- SmoothGrad, 16 samples, noise sd = 0.15 x (max - min) of the normalised image: ORT ``smoothgrad`` vs Captum
  ``NoiseTunnel(Saliency)``, both fed the same noise.

It prints each method's median and p90 latency and the eager/ORT ratio against the targets, how closely the maps
agree (from the timed calls at the first batch), the peak RSS of each contender measured in a fresh process, and
the size of each graph and of the shared ``weights.bin``. Timing follows ``forward.py``: shuffled interleaved rounds
with a pause between calls, and a report of the CPU that other processes used meanwhile.

    python benchmarks/attribution.py [--batches 1 8] [--json out.json] [--graphs DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _attribution_refs import (EAGER_TOOL, HEAD_ONLY, METHODS, comparable_maps, eager_runners,  # noqa: E402
                               logit_model, normalized_input, ort_attribution_runner, ort_session_for,
                               smoothgrad_noise, test_images)

ORT = "ORT graph"
TARGETS = {"gradcam": 5.0, "saliency": 1.5, "ig": 1.5}  # eager / ORT median latency, from the issue
HEAVY = ("ig", "smoothgrad")  # a forward+backward per path point or noisy copy: tens of images per input image


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet50", help="timm model name (random weights)")
    parser.add_argument("--size", type=int, default=224, help="square input size")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--steps", type=int, default=32, help="IG steps")
    parser.add_argument("--samples", type=int, default=16, help="SmoothGrad samples")
    parser.add_argument("--noise-level", type=float, default=0.15, help="SmoothGrad sd / (max - min)")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds, Grad-CAM and saliency, batch 1")
    parser.add_argument("--repeats-large", type=int, default=6, help="timed rounds, Grad-CAM and saliency, batch > 1")
    parser.add_argument("--repeats-heavy", type=int, default=3, help="timed rounds, IG and SmoothGrad, batch 1")
    parser.add_argument("--repeats-heavy-large", type=int, default=1,
                        help="timed rounds, IG and SmoothGrad, batch > 1 (no warm-up: see --per-image)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (1 for IG and SmoothGrad)")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between calls, for spinning pools to stop")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ORT intra-op threads")
    parser.add_argument("--torch-threads", type=int, help="torch.set_num_threads for eager (default: torch's own)")
    parser.add_argument("--omp-wait-policy", choices=["passive", "torch"], default="passive",
                        help="passive: eager's OpenMP threads sleep when idle, as ORT's do with allow_spinning=0; "
                             "torch: as torch ships (spinning; collapses when another process holds a core)")
    parser.add_argument("--no-per-image", dest="per_image", action="store_false",
                        help="run IG and SmoothGrad at batch > 1 as one ORT call: IG at batch 8 then holds 272 "
                             "images' activations (about 12 GB on the first call and 25 GB from the second, "
                             "extrapolated from batches 1 and 2)")
    parser.add_argument("--no-mem-pattern", action="store_true",
                        help="ORT sessions with enable_mem_pattern=False (the product keeps the default, True)")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-RSS probes")
    parser.add_argument("--memory-batches", type=int, nargs="+", default=[1, 8],
                        help="batches for the peak-RSS probes (IG and SmoothGrad: batch 1 only, see README)")
    parser.add_argument("--graphs", type=Path, help="export into (or reuse from) this folder instead of a temp one")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    return parser.parse_args(argv)


def export_params(args) -> dict[str, dict]:
    return {"gradcam": {}, "saliency": {}, "ig": {"steps": args.steps},
            "smoothgrad": {"samples": args.samples, "noise_level": args.noise_level}}


def export_graphs(audit, folder: Path, args) -> dict:
    """One graph per method through ``create_attribution`` and ``export_graph`` (as ``export_artifact`` does), then
    the initializers moved into one shared ``weights.bin``. Reuses ``folder`` when its stamp matches the settings."""
    import torch

    from auditor_rt.export.attribution import create_attribution
    from auditor_rt.export.conversion.torch_to_onnx import export_graph
    from auditor_rt.export.conversion.weights_store import share_initializers

    stamp = {"backbone": args.backbone, "size": args.size, "methods": sorted(args.methods),
             "params": export_params(args)}
    stamp_file = folder / "bench_stamp.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()).get("stamp") == stamp:
        print(f"reusing the graphs in {folder}")
        return json.loads(stamp_file.read_text())["info"]
    size = (args.size, args.size)
    example = torch.randint(0, 256, (2, *size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    info = {"export_s": {}, "standalone_mb": {}, "params": {}}
    for method in args.methods:
        start = time.perf_counter()
        module = create_attribution(method, audit, example, **export_params(args)[method])
        names = ("image", *module.extra_inputs)
        examples = tuple(example if n != "noise" else torch.randn(2, 2, 3, *size) for n in names)
        export_graph(module, folder / f"{method}.onnx", examples, input_names=names, dynamic={"noise": {1: "samples"}})
        info["export_s"][method] = time.perf_counter() - start
        info["standalone_mb"][method] = (folder / f"{method}.onnx").stat().st_size / 2**20
        info["params"][method] = module.params()
        del module
    info["weights"] = share_initializers(folder, [f"{m}.onnx" for m in args.methods])
    stamp_file.write_text(json.dumps({"stamp": stamp, "info": info}))
    return info


def recording(runner, store: dict, name: str):
    """The runner, keeping its latest output (the inputs never change, so every call's output is the same)."""
    def run():
        store[name] = runner()
        return store[name]

    return run


def time_method(method: str, audit, model, folder: Path, args, time_interleaved) -> tuple[dict, dict]:
    """Time ``method`` at every batch; returns {batch: {contender: Timing}} and the map agreement at the first."""
    session = ort_session_for(folder / f"{method}.onnx", args.threads, not args.no_mem_pattern)
    size = (args.size, args.size)
    results, parity = {}, {}
    for index, batch in enumerate(args.batches):
        images = test_images(batch, size)
        noise = smoothgrad_noise(batch, args.samples, size) if method == "smoothgrad" else None
        per_image = args.per_image and method in HEAVY and batch > 1
        x = normalized_input(audit, images)
        runners, tool = eager_runners(method, audit, model, x, args.steps, args.samples, args.noise_level)
        runners = {ORT: ort_attribution_runner(session, method, images, noise, per_image), **runners}
        outputs: dict = {}
        if index == 0:
            runners = {name: recording(run, outputs, name) for name, run in runners.items()}
        if method in HEAVY:
            warm = per_image and 1 in args.batches[:index]  # the per-image calls have batch 1's shapes: warm
            warmup, repeats = (0 if warm else 1), (args.repeats_heavy if batch == 1 else args.repeats_heavy_large)
        else:
            warmup, repeats = args.warmup, (args.repeats if batch == 1 else args.repeats_large)
        start = time.perf_counter()
        results[batch] = time_interleaved(runners, batch, repeats, warmup, args.pause)
        print(f"  {method} batch {batch}: {time.perf_counter() - start:.0f} s"
              + (" (ORT one call per image)" if per_image else ""), flush=True)
        if index == 0:
            parity = {"batch": batch, **comparable_maps(method, outputs[ORT], outputs[EAGER_TOOL[method]], tool,
                                                        outputs.get(HEAD_ONLY))}
        if hasattr(tool, "activations_and_grads"):
            tool.activations_and_grads.release()  # pytorch-grad-cam's hooks on layer4 would outlive this method
        del runners, outputs, tool
    return results, parity


def measure_memory(folder: Path, args) -> list[dict]:
    """Peak RSS of each contender, each in a fresh process (``_attribution_refs.py --probe``): setup, then two calls."""
    script = Path(__file__).resolve().parent / "_attribution_refs.py"
    common = ["--folder", str(folder), "--backbone", args.backbone, "--size", str(args.size),
              "--threads", str(args.threads), "--steps", str(args.steps), "--samples", str(args.samples),
              "--noise-level", str(args.noise_level)]
    common += (["--torch-threads", str(args.torch_threads)] if args.torch_threads else [])
    common += (["--per-image"] if args.per_image else []) + (["--no-mem-pattern"] if args.no_mem_pattern else [])
    rows = []
    for method in args.methods:
        for batch in args.memory_batches:
            if method in HEAVY and batch > 1:
                continue  # per-image calls: the same shapes, so the same peak, as batch 1
            for kind, name in (("ort", ORT), ("eager", EAGER_TOOL[method])):
                done = subprocess.run([sys.executable, str(script), "--probe", f"{kind}:{method}", "--batch",
                                       str(batch), *common], capture_output=True, text=True)
                if done.returncode != 0:
                    tail = (done.stderr.strip().splitlines() or ["?"])[-1]
                    rows.append({"method": method, "batch": batch, "contender": name, "error": tail})
                    continue
                rows.append({"method": method, "batch": batch, "contender": name,
                             **json.loads(done.stdout.strip().splitlines()[-1])})
    return rows


def print_timings(timings: dict) -> dict:
    print(f"\n{'method':<11}{'batch':>5}  {'contender':<30}{'median ms':>10}{'p90 ms':>9}{'min ms':>9}{'runs':>5}"
          f"{'eager/ORT':>11}")
    ratios = {}
    for method, per_batch in timings.items():
        for batch, t in per_batch.items():
            ort_ms = t[ORT].median_ms
            for name, timing in t.items():
                ratio = "" if name == ORT else f"{timing.median_ms / ort_ms:>10.2f}x"
                print(f"{method:<11}{batch:>5}  {name:<30}{timing.median_ms:>10.1f}{timing.p90_ms:>9.1f}"
                      f"{timing.min_ms:>9.1f}{len(timing.seconds):>5}{ratio:>11}")
            ratios.setdefault(method, {})[batch] = {name: timing.median_ms / ort_ms for name, timing in t.items()
                                                    if name != ORT}
    return ratios


def main(argv=None) -> dict:
    args = parse_args(argv)
    wall = time.perf_counter()
    if args.omp_wait_policy == "passive":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when libgomp loads: before torch is imported
    import warnings

    import onnxruntime as ort
    import torch

    from _common import OutsideLoad, build_modules, time_interleaved

    warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="captum")  # "input did not require grad"
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    import captum
    from importlib.metadata import version

    size = (args.size, args.size)
    print(f"{args.backbone} (random weights), {args.size}x{args.size} uint8 NHWC, {os.cpu_count()} CPU cores; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}), onnxruntime {ort.__version__} ({args.threads} intra-op "
          f"threads, ORT_ENABLE_ALL, allow_spinning=0{', mem pattern off' if args.no_mem_pattern else ''}); "
          f"captum {captum.__version__}, grad-cam {version('grad-cam')}")
    audit = build_modules(args.backbone, size)["audit"]
    with tempfile.TemporaryDirectory(prefix="auditor_rt_attr_") as temp:
        folder = args.graphs or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        graphs = export_graphs(audit, folder, args)
        print(f"export (dynamo, opset 18) + share_initializers: {time.perf_counter() - start:.0f} s")
        for method in args.methods:
            shared_mb = (folder / f"{method}.onnx").stat().st_size / 2**20
            print(f"  {method:<11} {graphs['params'][method] or '(no parameters)'}: standalone "
                  f"{graphs['standalone_mb'][method]:.1f} MB, with shared weights {shared_mb:.2f} MB")
        weights = graphs["weights"]
        print(f"  {weights['file']}: {weights['bytes'] / 2**20:.1f} MB ({weights['tensors']} tensors; "
              f"{weights['saved_bytes'] / 2**20:.1f} MB of duplicates stored once)")

        print(f"\ntiming. Captum IG: n_steps={args.steps}, gausslegendre, internal_batch_size={args.steps}, black "
              f"baseline; NoiseTunnel: nt_samples={args.samples}, stdevs={args.noise_level} x (max - min) of the "
              f"normalised image, the same unit-normal draws as the ORT graph's noise input. IG and SmoothGrad at "
              f"batch > 1: " + ("ORT one call per image, Captum in chunks of the same size" if args.per_image
                                else "one ORT call"))
        model = logit_model(audit)
        timings, parity = {}, {}
        with OutsideLoad() as outside:
            for method in args.methods:
                timings[method], parity[method] = time_method(method, audit, model, folder, args, time_interleaved)
        memory = measure_memory(folder, args) if args.memory else []

    ratios = print_timings(timings)
    print("\nagreement of ORT maps with the eager tools (first batch, from the timed calls): "
          "max abs error / max |reference|, cosine")
    for method, checks in parity.items():
        for label, value in checks.items():
            if label != "batch":
                print(f"  {method:<11} {label:<58} {value['max_abs_over_scale']:.1e}  {value['cosine']:.6f}")
    if memory:
        print("\npeak RSS, each contender alone in a fresh process (VmHWM of /proc/self/status; setup = imports, "
              "model or session, inputs; then 2 calls)")
        print(f"  {'method':<11}{'batch':>5}  {'contender':<30}{'setup MB':>9}{'peak MB':>9}{'calls add':>10}")
        for row in memory:
            if "error" in row:
                print(f"  {row['method']:<11}{row['batch']:>5}  {row['contender']:<30} failed: {row['error']}")
            else:
                print(f"  {row['method']:<11}{row['batch']:>5}  {row['contender']:<30}{row['setup_mb']:>9.0f}"
                      f"{row['peak_mb']:>9.0f}{row['peak_mb'] - row['setup_mb']:>10.0f}")
    if outside.cores is not None:
        busy = outside.cores > 0.25
        print(f"\nother processes used {outside.cores:.2f} of {os.cpu_count()} cores during the timing"
              + ("  <- busy machine: trust the ratios more than the absolute times" if busy else ""))
    verdicts = []
    for method, per_batch in ratios.items():
        for batch, by_name in per_batch.items():
            ratio = by_name[EAGER_TOOL[method]]
            goal = TARGETS.get(method)
            verdicts.append(f"{method} b{batch} {ratio:.2f}x" + (
                f" ({'meets' if ratio >= goal else 'MISSES'} >= {goal:g}x)" if goal else " (no target)"))
    summary = "; ".join(verdicts)
    print(f"summary (eager tool / ORT median): {summary}")
    print(f"total {time.perf_counter() - wall:.0f} s")

    report = {
        "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "torch": torch.__version__, "onnxruntime": ort.__version__, "captum": captum.__version__,
                   "grad_cam": version("grad-cam"), "torch_threads_used": torch.get_num_threads(),
                   "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "cpu_count": os.cpu_count(),
                   "weights": "random", "ig_internal_batch_size": args.steps},
        "graphs": graphs, "parity": parity, "memory": memory, "outside_load_cores": outside.cores,
        "results": {m: {str(b): {n: t.to_dict() for n, t in per.items()} for b, per in pb.items()}
                    for m, pb in timings.items()},
        "eager_over_ort": {m: {str(b): v for b, v in pb.items()} for m, pb in ratios.items()},
        "targets": TARGETS, "summary": summary,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
