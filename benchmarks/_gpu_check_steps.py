"""The steps of ``gpu_check.py`` that run in a process of their own, so that the parent can give each one a timeout
(a TensorRT conversion that hangs is killed, and the rest of the check goes on). Each writes one JSON file.

    python benchmarks/_gpu_check_steps.py env --json OUT.json
    python benchmarks/_gpu_check_steps.py export --folder DIR --backbone resnet50 --size 224 --ig-steps 8 --json OUT
    python benchmarks/_gpu_check_steps.py warm --artifact DIR --graph G --batches 1 8 --json OUT
    python benchmarks/_gpu_check_steps.py time --artifact DIR --graph G --device cuda --contenders ort-cuda trt ...

Progress goes to stderr, one line per phase, so that the parent can say where a step was when it was killed.
Top-level imports are the standard library only: the parent imports the names below and must never load torch or
CUDA itself.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Our backends, in table order: key -> label. "ort-cuda" is ONNX Runtime's CUDA provider as the runtime opens it
# (its default math, which is TF32 on Ampere and newer); "ort-cuda-fp32" the same with TF32 off.
BACKENDS = {
    "ort-cpu": "ORT CPU EP",
    "ort-cuda": "ORT CUDA EP (TF32: ORT default)",
    "ort-cuda-fp32": "ORT CUDA EP (TF32 off)",
    "ort-trt": "ORT TensorRT EP",
    "trt": "TensorRT (native engine)",
}
# The eager tool each graph is measured against, by graph kind (audit) or attribution method.
ANCHORS = {"audit": "PyTorch eager", "gradcam": "pytorch-grad-cam GradCAM", "saliency": "Captum Saliency",
           "ig": "Captum IntegratedGradients"}
ANCHOR_PACKAGES = {"gradcam": ("pytorch_grad_cam", "grad-cam"), "saliency": ("captum", "captum"),
                   "ig": ("captum", "captum")}
GRAPHS = ("audit", "saliency", "ig", "gradcam")


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, default=str))


def short_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:400]}" if text else type(exc).__name__


# ---- env -------------------------------------------------------------------------------------------------------

def _version_of(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def tensorrt_lib_dirs() -> list[str]:
    """Folders of pip-installed TensorRT libraries (the ``tensorrt*libs`` packages that hold libnvinfer). ONNX
    Runtime's TensorRT provider finds libnvinfer only through the loader's path, so gpu_check puts these on
    LD_LIBRARY_PATH for the steps that use that provider."""
    import glob
    import site

    roots = [*site.getsitepackages(), site.getusersitepackages(), *sys.path]
    found = []
    for root in dict.fromkeys(r for r in roots if r and os.path.isdir(r)):
        for library in glob.glob(os.path.join(root, "tensorrt*libs*", "libnvinfer.so*")):
            folder = os.path.dirname(library)
            if folder not in found:
                found.append(folder)
    return found


def probe_env() -> dict:
    """What this machine offers: versions, ORT's providers, whether TensorRT, cuda-python and the eager tools
    import, and torch's view of the GPU. Each probe is independent: one failing is recorded, not raised."""
    sys.path.insert(0, str(HERE))
    from _machine import cpu_model, load_average

    env: dict = {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu_model(),
                 "cores": os.cpu_count(), "load_average": load_average()}
    try:
        import torch

        cuda = torch.cuda.is_available()
        env["torch"] = {"version": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": cuda,
                        "cudnn": torch.backends.cudnn.version() if cuda else None,
                        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
        if cuda:
            props = torch.cuda.get_device_properties(0)
            env["torch"].update(device=props.name, capability=f"{props.major}.{props.minor}",
                                memory_gib=round(props.total_memory / 2**30, 1),
                                device_count=torch.cuda.device_count())
    except Exception as exc:  # a broken CUDA install raises all sorts
        env["torch"] = {"error": short_error(exc)}
    try:
        import onnxruntime as ort

        env["onnxruntime"] = {"version": ort.__version__, "providers": list(ort.get_available_providers()),
                              "wheel": "onnxruntime-gpu" if _version_of("onnxruntime-gpu") else "onnxruntime",
                              "both_wheels": bool(_version_of("onnxruntime-gpu") and _version_of("onnxruntime"))}
    except Exception as exc:
        env["onnxruntime"] = {"error": short_error(exc), "providers": []}
    env["tensorrt_lib_dirs"] = tensorrt_lib_dirs()
    try:
        import tensorrt

        env["tensorrt"] = {"version": str(tensorrt.__version__)}
    except Exception as exc:  # the index's -libs stubs fail at import, not only with ImportError
        env["tensorrt"] = {"error": short_error(exc)}
    try:
        importlib.import_module("cuda.bindings.runtime")  # as the native runner imports it

        env["cuda_python"] = {"version": _version_of("cuda-python") or _version_of("cuda-bindings") or "?"}
    except Exception as exc:
        env["cuda_python"] = {"error": short_error(exc)}
    for module, distribution in (("captum", "captum"), ("pytorch_grad_cam", "grad-cam")):
        try:
            __import__(module)
            env[distribution] = {"version": _version_of(distribution) or "?"}
        except Exception as exc:
            env[distribution] = {"error": short_error(exc)}
    for distribution in ("timm", "onnx", "numpy", "auditor-rt"):
        env.setdefault("versions", {})[distribution] = _version_of(distribution)
    return env


# ---- export ------------------------------------------------------------------------------------------------------

def _bench_export_module():
    """benchmarks/export.py, loaded by path: its ``make_checkpoint`` writes a checkpoint as ``train`` does, with a
    random head (no training needed). By path, because a module named ``export`` may be shadowed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_export", HERE / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_export(args) -> dict:
    """A random-weight checkpoint, then ``auditor-rt export CHECKPOINT --attribution saliency,ig,gradcam
    --ig-steps N --target tensorrt`` as Python calls (the parity check on, as the command has it)."""
    import warnings

    folder = Path(args.folder)
    progress(f"checkpoint: {args.backbone} (random weights) with a random risk head, {args.size}x{args.size}")
    checkpoint = _bench_export_module().make_checkpoint(args.backbone, folder / "checkpoint", args.size)
    from auditor_rt.export.graphs.risk_head_export import export_artifact
    from auditor_rt.export.models.checkpoint import load_checkpoint

    start = time.perf_counter()
    methods = [g for g in args.graphs if g != "audit"]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
        result = export_artifact(load_checkpoint(checkpoint), folder / "artifact", attributions=methods,
                                 attribution_params={"ig": {"steps": args.ig_steps}}, target="tensorrt",
                                 check=not args.no_check)  # the exporter's progress lines go to stderr
    seconds = time.perf_counter() - start
    graphs = {name: {"tensorrt_findings": (entry.tensorrt or {}).get("count"), "params": entry.params,
                     "images_per_input": entry.images_per_input}
              for name, entry in result.manifest.graphs.items()}
    stages = getattr(getattr(result, "progress", None), "seconds", {}) or {}
    return {"artifact": str(result.folder), "checkpoint": str(checkpoint), "seconds": round(seconds, 1),
            "graphs": graphs, "parity": result.parity, "stages_s": stages,
            "weights_mb": round(result.weights["bytes"] / 2**20, 1) if result.weights else None}


# ---- runners -----------------------------------------------------------------------------------------------------

def ort_trt_cache(artifact, graph: str) -> Path:
    """The engine cache of ORT's TensorRT provider as ``verify --backend ort-tensorrt`` keys it, so that the warm-up
    step, the timing step and verify build each engine once (ORT rebuilds it when a batch leaves the range seen)."""
    entry = artifact.graph(graph)
    return artifact.folder / "trt_cache" / f"{entry.sha256[:16]}-fp32"


def no_tf32_runner_class():
    """The runtime's ONNX Runtime runner with the CUDA provider option ``use_tf32=0`` (ORT's default is TF32 on,
    which moved saliency's gradient by 0.26 of its scale on an H200, issue 15); everything else as the runtime's."""
    from auditor_rt.runtime.runners.onnxruntime import OnnxRuntimeRunner

    class NoTF32Runner(OnnxRuntimeRunner):
        @staticmethod
        def _provider_options(provider, cache_dir, trt_fp16=False):
            if provider == "CUDAExecutionProvider":
                return {"use_tf32": "0"}
            return OnnxRuntimeRunner._provider_options(provider, cache_dir, trt_fp16)

    return NoTF32Runner


def open_ours(key: str, artifact, graph: str):
    """A runtime runner of ``graph`` on backend ``key``: the same runner classes that infer, serve and verify use.
    Raises with a reason where the backend did not load as asked (ORT falls back to the CPU silently)."""
    from auditor_rt.runtime.runners import create_runner, open_graph

    entry = artifact.graph(graph)
    if key == "ort-cpu":
        return create_runner(artifact, graph, providers="cpu")
    if key == "ort-cuda":
        runner = create_runner(artifact, graph, providers="cuda")
    elif key == "ort-cuda-fp32":
        runner = no_tf32_runner_class()(artifact.graph_path(graph), entry.inputs, entry.outputs, providers="cuda")
    elif key == "ort-trt":
        runner = open_graph(artifact.graph_path(graph), entry.inputs, entry.outputs, "onnxruntime",
                            providers=["tensorrt", "cuda", "cpu"], cache_dir=ort_trt_cache(artifact, graph))
        if "TensorrtExecutionProvider" not in runner.active_providers:
            raise RuntimeError(f"ORT did not load its TensorRT provider (active: {runner.active_providers})")
        return runner
    elif key == "trt":
        return create_runner(artifact, graph, backend="tensorrt", precision="fp32")
    else:
        raise ValueError(f"unknown backend {key!r}")
    if runner.active_providers[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"ORT did not load its CUDA provider (active: {runner.active_providers}); are CUDA and "
                           "cuDNN libraries findable? (import torch first, or onnxruntime.preload_dlls())")
    return runner


def graph_feed(entry, images):
    from auditor_rt.runtime.feeds import make_feed

    return make_feed(entry, images, seed=1, baselines="random")


def cam_layer(audit, params: dict):
    """The module Grad-CAM reads: the graph's ``stage`` (a module name of the backbone, or a feature_info index)."""
    model = audit.features.model
    stage = str((params or {}).get("stage", "layer4"))
    if stage.lstrip("-").isdigit():
        stage = model.feature_info[int(stage)]["module"]
    return model.get_submodule(stage)


def anchor_runner(entry, audit, images, device: str):
    """The eager tool that ``entry``'s graph is measured against, on ``device``, as a zero-argument call that waits
    for the GPU. Inputs are prepared outside the call, on the device (the graphs take numpy uint8 and normalise
    inside, so they pay for the copies that the anchors are spared)."""
    import torch

    sys.path.insert(0, str(HERE))
    from _attribution_refs import logit_model

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    pixels = torch.from_numpy(images).to(device)
    if entry.kind == "audit":
        def run_audit():
            with torch.inference_mode():
                out = audit(pixels)
            sync()
            return out

        return run_audit
    with torch.no_grad():
        x = audit.normalize(pixels).contiguous()
        black = audit.normalize(torch.zeros(1, 1, 1, 3, dtype=torch.uint8, device=device)).expand_as(x).contiguous()
    model = logit_model(audit)
    method = entry.method
    if method == "gradcam":
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = GradCAM(model, [cam_layer(audit, entry.params)])
        targets = [ClassifierOutputTarget(0)] * len(images)
        return lambda: cam(x, targets)  # returns numpy: synchronised
    if method == "saliency":
        from captum.attr import Saliency

        tool = Saliency(model)

        def run_saliency():
            out = tool.attribute(x, target=0)
            sync()
            return out

        return run_saliency
    if method == "ig":
        from captum.attr import IntegratedGradients

        tool, steps = IntegratedGradients(model), int(entry.params["steps"])

        def run_ig():  # Captum's default internal batch: every path point of the batch at once
            out = tool.attribute(x, baselines=black, target=0, n_steps=steps, method="gausslegendre")
            sync()
            return out

        return run_ig
    raise ValueError(f"no anchor for method {method!r}")


def anchor_model(artifact, checkpoint: str | None):
    """The exported model in eager PyTorch: the checkpoint it came from, or (an artifact exported elsewhere) the
    same architecture with random weights, which times the same."""
    import warnings

    from auditor_rt.export.models.checkpoint import load_checkpoint
    from auditor_rt.export.graphs.risk_head_export import build_audit_module

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
        if checkpoint and Path(checkpoint).is_dir():
            return build_audit_module(load_checkpoint(checkpoint)), f"checkpoint {checkpoint}"
        sys.path.insert(0, str(HERE))
        from _common import build_modules

        manifest = artifact.manifest
        size = tuple(manifest.preprocess.input_size)
        return build_modules(manifest.model.backbone, size)["audit"], "random weights (no checkpoint here)"


# ---- warm --------------------------------------------------------------------------------------------------------

def run_warm(args) -> dict:
    """ORT's TensorRT provider builds an engine on a graph's first run and again whenever a batch leaves the range
    it has seen; the batches in ascending order leave one engine for the whole range in the cache."""
    import numpy as np

    importlib.import_module("torch")  # loads the CUDA libraries (its nvidia-* wheels) that ORT's providers look for

    from auditor_rt.runtime.artifact import Artifact

    artifact = Artifact.load(args.artifact)
    entry = artifact.graph(args.graph)
    size = tuple(artifact.manifest.preprocess.input_size)
    progress(f"opening {args.graph} on ORT's TensorRT provider (cache {ort_trt_cache(artifact, args.graph)})")
    runner = open_ours("ort-trt", artifact, args.graph)
    seconds = {}
    for batch in sorted(set(args.batches)):
        images = np.random.default_rng(0).integers(0, 256, (batch, *size, 3), dtype=np.uint8)
        progress(f"first run at batch {batch} (TensorRT builds the engine)")
        start = time.perf_counter()
        runner.infer(graph_feed(entry, images))
        seconds[str(batch)] = round(time.perf_counter() - start, 2)
        progress(f"batch {batch}: {seconds[str(batch)]} s")
    runner.close()
    return {"graph": args.graph, "first_run_s": seconds}


# ---- time --------------------------------------------------------------------------------------------------------

class Guarded:
    """A contender that stops counting after its first error: the error is kept, later calls return at once."""

    def __init__(self, call):
        self.call, self.error = call, None

    def __call__(self):
        if self.error is None:
            try:
                return self.call()
            except Exception as exc:
                self.error = short_error(exc)
        return None


def run_time(args) -> dict:
    """Every contender of one graph, in shuffled interleaved rounds (``_common.time_interleaved``), at each batch:
    our runners on each backend asked for, and the eager anchor on the same device."""
    if args.device == "cpu":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as attribution.py: eager threads sleep when idle
    import warnings

    import numpy as np
    import torch

    sys.path.insert(0, str(HERE))
    from _common import OutsideLoad, time_interleaved

    from auditor_rt.runtime.artifact import Artifact

    warnings.filterwarnings("ignore", category=UserWarning, module="captum")
    artifact = Artifact.load(args.artifact)
    entry = artifact.graph(args.graph)
    size = tuple(artifact.manifest.preprocess.input_size)
    result = {"graph": args.graph, "device": args.device, "batches": args.batches, "repeats": args.repeats,
              "warmup": args.warmup, "contenders": {}, "errors": {}}
    anchor_key = "audit" if entry.kind == "audit" else entry.method
    anchor_label = f"{ANCHORS[anchor_key]} ({args.device})"

    runners = {}
    for key in args.contenders:
        progress(f"opening {BACKENDS[key]}")
        try:
            runners[key] = open_ours(key, artifact, args.graph)
            result["contenders"][key] = {"label": BACKENDS[key], "kind": "ours", "timings": {},
                                         "providers": list(getattr(runners[key], "active_providers", []))}
        except Exception as exc:
            result["errors"][key] = f"could not open: {short_error(exc)}"
            progress(result["errors"][key])
    audit = None
    if not args.no_anchor:
        module, missing = ANCHOR_PACKAGES.get(anchor_key, (None, None)), None
        if module[0]:
            try:
                __import__(module[0])
            except ImportError:
                missing = module[1]
        if missing:
            result["anchor_skipped"] = f"skipped: {missing} not installed"
        else:
            progress(f"building the eager model for {anchor_label}")
            audit, source = anchor_model(artifact, args.checkpoint)
            audit = audit.to(args.device)
            result["anchor_model"] = source
            result["contenders"]["anchor"] = {"label": anchor_label, "kind": "anchor", "timings": {}}

    with OutsideLoad() as outside:
        for batch in args.batches:
            images = np.random.default_rng(batch).integers(0, 256, (batch, *size, 3), dtype=np.uint8)
            feed = graph_feed(entry, images)
            calls = {key: Guarded(lambda runner=runner: runner.infer(feed)) for key, runner in runners.items()}
            if audit is not None and "anchor" in result["contenders"]:
                try:
                    calls["anchor"] = Guarded(anchor_runner(entry, audit, images, args.device))
                except Exception as exc:
                    result["errors"]["anchor"] = f"could not set up: {short_error(exc)}"
            calls = {key: call for key, call in calls.items() if key not in result["errors"]}
            for key, call in calls.items():  # the first call alone: a contender that fails or builds shows here
                progress(f"batch {batch}: first call of {result['contenders'][key]['label']}")
                start = time.perf_counter()
                call()
                result["contenders"][key].setdefault("first_call_s", {})[str(batch)] = \
                    round(time.perf_counter() - start, 3)
                if call.error:
                    result["errors"][key] = f"batch {batch}: {call.error}"
                    progress(result["errors"][key])
            calls = {key: call for key, call in calls.items() if call.error is None}
            if not calls:
                continue
            progress(f"batch {batch}: {args.repeats} interleaved rounds of {len(calls)} contenders")
            timings = time_interleaved(calls, batch, args.repeats, args.warmup, args.pause)
            for key, timing in timings.items():
                if calls[key].error:
                    result["errors"][key] = f"batch {batch}: {calls[key].error}"
                else:
                    result["contenders"][key]["timings"][str(batch)] = timing.to_dict()
            if args.device == "cuda":
                torch.cuda.empty_cache()
    for runner in runners.values():
        runner.close()
    result["outside_load_cores"] = outside.cores
    if args.device == "cuda":
        result["torch_tf32"] = {"cudnn": torch.backends.cudnn.allow_tf32,
                                "matmul": torch.backends.cuda.matmul.allow_tf32}
        result["torch_max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


# ---- main --------------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    env = sub.add_parser("env")
    export = sub.add_parser("export")
    export.add_argument("--folder", required=True)
    export.add_argument("--backbone", required=True)
    export.add_argument("--size", type=int, required=True)
    export.add_argument("--ig-steps", type=int, required=True)
    export.add_argument("--graphs", nargs="+", default=list(GRAPHS))
    export.add_argument("--no-check", action="store_true")
    warm = sub.add_parser("warm")
    warm.add_argument("--artifact", required=True)
    warm.add_argument("--graph", required=True)
    warm.add_argument("--batches", type=int, nargs="+", required=True)
    timing = sub.add_parser("time")
    timing.add_argument("--artifact", required=True)
    timing.add_argument("--graph", required=True)
    timing.add_argument("--checkpoint")
    timing.add_argument("--device", choices=["cpu", "cuda"], required=True)
    timing.add_argument("--contenders", nargs="*", default=[], choices=list(BACKENDS))
    timing.add_argument("--no-anchor", action="store_true")
    timing.add_argument("--batches", type=int, nargs="+", required=True)
    timing.add_argument("--repeats", type=int, required=True)
    timing.add_argument("--warmup", type=int, required=True)
    timing.add_argument("--pause", type=float, default=0.01)
    for each in (env, export, warm, timing):
        each.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        result = {"env": lambda a: probe_env(), "export": run_export, "warm": run_warm, "time": run_time}[args.step](args)
    except Exception as exc:
        traceback.print_exc()
        write_json(args.json, {"error": short_error(exc), "seconds": round(time.perf_counter() - start, 1)})
        return 1
    result["step_seconds"] = round(time.perf_counter() - start, 1)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
