"""Validate a GPU box: export, verify and time auditor-rt's graphs on every GPU backend present, beside the eager tools.

On a machine with one NVIDIA GPU, and nothing prepared beyond these installs (from the repository root):

    pip install -c constraints.txt ".[export,gpu]" && pip uninstall -y onnxruntime && pip install --force-reinstall --no-deps onnxruntime-gpu
    pip install -c constraints.txt --no-deps grad-cam==1.5.7 && pip install -c constraints.txt ttach scikit-learn captum==0.9.0

run

    python benchmarks/gpu_check.py OUT_DIR [--backbone resnet50] [--size 224] [--batches 1 8] [--steps-timeout S]
    python benchmarks/gpu_check.py OUT_DIR --dry-run      # the same steps on the CPU, resnet18 at 64 px: no GPU needed

It
1. exports resnet50 (random weights, a random risk head) with its audit, saliency, ig (8 steps) and gradcam graphs for
   ``--target tensorrt``, FP32 (this version exports no FP16 graphs: the FP16 rows say so);
2. builds a native TensorRT engine per graph (``auditor-rt build``) and lets ORT's TensorRT provider build its
   engines (its first runs), where TensorRT is installed;
3. times every graph on every backend present (ORT CUDA EP with ORT's default TF32 math and with TF32 off, ORT
   TensorRT EP, native TensorRT) side by side with PyTorch CUDA eager (audit), pytorch-grad-cam GradCAM and Captum
   Saliency / IntegratedGradients on the same GPU: shuffled interleaved rounds, medians at each batch, and the
   ratio anchor / ours;
4. runs ``auditor-rt verify --quick`` on each backend and records pass/fail and the gate figures.

Every step runs in a process of its own with its own timeout (``--steps-timeout``, default 150 s; the export and
each verify, whose PyTorch work runs on the CPU, ``--export-timeout`` and ``--verify-timeout``, 300 s), so a
conversion that hangs is killed and the rest goes on. The whole run keeps to ``--budget`` seconds (480: aimed at
under 8 minutes on one H100-class GPU; TensorRT's engine builds must end within ``--prep-share`` of it). A row that
cannot run says why: "skipped: tensorrt not installed", "skipped: no CUDA provider", "skipped: FP16 graphs not
exported by this version", "skipped: captum not installed", a timeout, or the step's error.

Everything goes to OUT_DIR: ``gpu_check.txt`` (what is printed at the end), ``gpu_check.json`` (every number),
``artifact/`` (with its engines), ``checkpoint/``, ``verify/<backend>/report.{json,html}``, ``steps/*.json``,
``logs/*.log`` (each step's output) and ``nvidia-smi.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _gpu_check_steps import ANCHORS, BACKENDS, GRAPHS  # noqa: E402  (standard library only: no torch here)
from _machine import cpu_model, load_average  # noqa: E402

STEPS = HERE / "_gpu_check_steps.py"
CLI = "import sys; from auditor_rt.cli.main import cli; sys.exit(cli(prog_name='auditor-rt'))"
MARKER = ".gpu_check"  # marks OUT_DIR as ours, so that a rerun may clear what an earlier run wrote
OURS = ("artifact", "checkpoint", "verify", "steps", "logs", "gpu_check.json", "gpu_check.txt", "nvidia-smi.txt")
FP16_SKIP = "skipped: FP16 graphs not exported by this version"
TARGETS = {"gradcam": 20.0, "saliency": 5.0, "ig": 5.0}  # anchor / ours at batch 8, issue 15 (IG: at 32 steps)
MIN_STEP_S = 20  # a step that would get less than this is skipped as over budget
VERIFY_BATCH = 4  # verify's default --batch: the engines' profile must reach it
GPU_BACKENDS = ("ort-cuda", "ort-cuda-fp32", "ort-trt", "trt")
VERIFY_ORDER = ("ort-cpu", "ort-cuda", "ort-cuda-fp32", "trt", "ort-trt")
VERIFY_ARGS = {  # how verify runs each backend; ort-cuda-fp32 also gets NVIDIA_TF32_OVERRIDE=0 (see verify_rows)
    "ort-cpu": ["--backend", "onnxruntime", "--providers", "cpu"],
    "ort-cuda": ["--backend", "onnxruntime", "--providers", "cuda"],
    "ort-cuda-fp32": ["--backend", "onnxruntime", "--providers", "cuda"],
    "ort-trt": ["--backend", "ort-tensorrt"],
    "trt": ["--backend", "tensorrt"],
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, metavar="OUT_DIR", help="where everything is written (created)")
    parser.add_argument("--backbone", help="timm model, random weights (default resnet50; --dry-run resnet18)")
    parser.add_argument("--size", type=int, help="square input size (default 224; --dry-run 64)")
    parser.add_argument("--batches", type=int, nargs="+", help="batches to time (default 1 8; --dry-run 1 2)")
    parser.add_argument("--ig-steps", type=int, default=8, help="integrated gradients' steps in the graph")
    parser.add_argument("--repeats", type=int, help="timed rounds per batch (default 20; --dry-run 3)")
    parser.add_argument("--warmup", type=int, help="untimed rounds per batch (default 3; --dry-run 1)")
    parser.add_argument("--steps-timeout", type=float, default=150.0,
                        help="seconds each step may take: an engine build, a warm-up, a timing, a verify")
    parser.add_argument("--export-timeout", type=float, default=300.0, help="seconds the export may take")
    parser.add_argument("--verify-timeout", type=float, default=300.0,
                        help="seconds each verify may take (its PyTorch FP64 and FP32 references run on the CPU)")
    parser.add_argument("--budget", type=float, default=480.0,
                        help="seconds for the whole run (0: no limit); a step that would start with less than "
                             f"{MIN_STEP_S} s of it left is skipped, and each step's timeout is cut to what is left")
    parser.add_argument("--prep-share", type=float, default=0.55,
                        help="TensorRT's engine builds (native and ORT's provider) must end by this fraction of "
                             "the budget, leaving the rest to timing and verify")
    parser.add_argument("--verify-full", action="store_true", help="verify without --quick (more inputs, slower)")
    parser.add_argument("--artifact", type=Path,
                        help="instead of exporting, copy this artifact (exported with --target tensorrt, FP32, "
                             "e.g. on another machine) into OUT_DIR and check that")
    parser.add_argument("--dry-run", action="store_true",
                        help="every step on the CPU with a tiny model (resnet18 at 64 px, batches 1 and 2, 3 "
                             "rounds): checks this script without a GPU; GPU rows skip with their reasons")
    args = parser.parse_args(argv)
    dry = args.dry_run
    args.backbone = args.backbone or ("resnet18" if dry else "resnet50")
    args.size = args.size or (64 if dry else 224)
    args.batches = sorted(set(args.batches or ([1, 2] if dry else [1, 8])))
    args.repeats = args.repeats or (3 if dry else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if dry else 3)
    return args


# ---- running steps -----------------------------------------------------------------------------------------------

class Runner:
    """Runs each step in its own process group with a timeout cut to the budget left; records what happened."""

    def __init__(self, out: Path, budget: float, prep_share: float):
        self.out, self.start = out, time.monotonic()
        self.budget, self.prep_share = budget, prep_share
        self.steps: list[dict] = []
        (out / "logs").mkdir(parents=True, exist_ok=True)
        (out / "steps").mkdir(exist_ok=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def _left(self, phase: str) -> float | None:
        if not self.budget:
            return None
        share = self.prep_share if phase == "prep" else 1.0
        return self.budget * share - self.elapsed()

    def skip(self, name: str, reason: str) -> dict:
        record = {"step": name, "status": "skipped", "reason": reason}
        self.steps.append(record)
        print(f"  {name:<38} {reason}", flush=True)
        return record

    def run(self, name: str, argv: list[str], timeout: float, phase: str = "main", env: dict | None = None,
            result: Path | None = None) -> dict:
        left = self._left(phase)
        if left is not None and left < MIN_STEP_S:
            what = "TensorRT's share of the budget" if phase == "prep" else "the budget"
            return self.skip(name, f"skipped: {what} ({self.budget * (self.prep_share if phase == 'prep' else 1):.0f}"
                                   f" s) is spent; rerun with a larger --budget")
        limit = timeout if left is None else min(timeout, left)
        slug = name.replace(" ", "_").replace("/", "-")
        log = self.out / "logs" / f"{slug}.log"
        record = {"step": name, "command": argv, "timeout_s": round(limit, 1), "log": str(log.relative_to(self.out))}
        if env:
            record["env"] = env
        tty = sys.stdout.isatty()
        print(f"  {name:<38} running (timeout {limit:.0f} s) ...", end="" if tty else "\n", flush=True)
        started = time.monotonic()
        with open(log, "w") as stream:
            process = subprocess.Popen(argv, stdout=stream, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env={**os.environ, **(env or {})}, start_new_session=True)
            try:
                code = process.wait(timeout=limit)
                record["status"] = "ok" if code == 0 else "failed"
                record["returncode"] = code
            except subprocess.TimeoutExpired:
                stop_group(process)
                record["status"] = "timeout"
            except BaseException:  # Ctrl-C: take the step's whole process group down with us
                stop_group(process)
                raise
        record["seconds"] = round(time.monotonic() - started, 1)
        tail = last_lines(log)
        if record["status"] == "timeout":
            record["reason"] = f"timed out after {limit:.0f} s" + (f" (last: {tail[-1]})" if tail else "")
        elif record["status"] == "failed":
            record["reason"] = f"failed (exit {record['returncode']}): " + (error_line(tail) or "see the log")
        if result is not None and result.is_file():
            record["result"] = json.loads(result.read_text())
        self.steps.append(record)
        print(("\r" if tty else "") + f"  {name:<38} {record['status']} in {record['seconds']:.1f} s" +
              (f": {record['reason']}" if record.get("reason") else "") + " " * (10 if tty else 0), flush=True)
        return record


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the step's process group (it started its own session: only its processes), SIGKILL if needed."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def last_lines(path: Path, count: int = 30) -> list[str]:
    try:
        lines = path.read_text(errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        return []
    return [line.strip() for line in lines if line.strip()][-count:]


def error_line(lines: list[str]) -> str:
    """The most telling line of a failed step's output: click's 'Error: ...', a Python exception, else the last."""
    for line in reversed(lines):
        if line.startswith(("Error:", "verify FAILED")) or line.split(":")[0].endswith(("Error", "Exception")):
            return line[:300]
    return lines[-1][:300] if lines else ""


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", CLI, *args]


def steps_cmd(step: str, *args: str) -> list[str]:
    return [sys.executable, str(STEPS), step, *args]


# ---- the machine -------------------------------------------------------------------------------------------------

def nvidia_smi(out: Path) -> dict:
    """The GPU as nvidia-smi sees it (its model, driver, memory and load before we start; other processes on it),
    and its full report in nvidia-smi.txt. No CUDA is initialised in this process."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {"error": "nvidia-smi not found"}
    info: dict = {}
    queries = {"gpus": ["--query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu,temperature.gpu,"
                        "clocks.sm,clocks.max.sm,power.draw", "--format=csv,noheader"],
               "processes": ["--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader"],
               "full": []}
    for key, query in queries.items():
        try:
            done = subprocess.run([exe, *query], capture_output=True, text=True, timeout=30)
            text = done.stdout.strip() or done.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            text = f"error: {exc}"
        if key == "full":
            (out / "nvidia-smi.txt").write_text(text + "\n")
        else:
            info[key] = [line.strip() for line in text.splitlines() if line.strip()]
    return info


def backend_skips(env: dict, dry: bool, env_ok: bool) -> dict[str, str | None]:
    """None for a backend that can run here, else the row's reason."""
    if not env_ok:
        why = "skipped: the environment probe failed (see logs/env.log)"
        return {"ort-cpu": None if dry else why, **{key: why for key in GPU_BACKENDS}}
    providers = (env.get("onnxruntime") or {}).get("providers") or []
    no_trt = "skipped: tensorrt not installed" if "error" in (env.get("tensorrt") or {"error": 1}) else None
    cuda = None if "CUDAExecutionProvider" in providers else "skipped: no CUDA provider"
    dry_why = "skipped: --dry-run runs on the CPU"
    skips = {"ort-cpu": None if dry else "not run: the CPU is for --dry-run",
             "ort-cuda": cuda or (dry_why if dry else None),
             "ort-cuda-fp32": cuda or (dry_why if dry else None)}
    trt_ep = None if "TensorrtExecutionProvider" in providers else "skipped: no TensorRT provider in this onnxruntime"
    skips["ort-trt"] = no_trt or trt_ep or cuda or (dry_why if dry else None)
    no_cudart = "skipped: cuda-python not installed" if "error" in (env.get("cuda_python") or {"error": 1}) else None
    skips["trt"] = no_trt or no_cudart or (dry_why if dry else None)
    return skips


def fp16_reason(artifact: Path) -> str:
    try:
        graphs = json.loads((artifact / "manifest.json").read_text()).get("graphs", {})
    except (OSError, ValueError):
        return FP16_SKIP
    if any(entry.get("variant_of") and entry.get("precision") == "fp16" for entry in graphs.values()):
        return "skipped: this artifact has FP16 graph variants, which this gpu_check does not run yet"
    return FP16_SKIP


# ---- the run -----------------------------------------------------------------------------------------------------

def settings_from_artifact(args) -> None:
    """--artifact: the backbone, size and IG steps are the artifact's, whatever the command line said."""
    try:
        manifest = json.loads((args.artifact / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        sys.exit(f"--artifact {args.artifact}: no readable manifest.json ({exc})")
    args.backbone = manifest.get("model", {}).get("backbone", args.backbone)
    args.size = int(manifest.get("preprocess", {}).get("input_size", [args.size])[0])
    args.ig_steps = int(((manifest.get("graphs", {}).get("ig") or {}).get("params") or {}).get("steps", args.ig_steps))


def prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            sys.exit(f"{out} is not empty and not from an earlier gpu_check run; give a new or empty folder")
        for name in OURS:  # an earlier run's outputs, and nothing else
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by benchmarks/gpu_check.py\n")


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.artifact:
        settings_from_artifact(args)
    out = args.out.resolve()
    prepare_out(out)
    runner = Runner(out, args.budget, args.prep_share)
    report: dict = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_start": load_average()},
                    "steps": runner.steps, "verify": {}, "timings": {}, "skips": {}}
    report["machine"]["nvidia_smi"] = nvidia_smi(out)
    mode = "DRY RUN on the CPU" if args.dry_run else "GPU check"
    print(f"gpu_check ({mode}): {args.backbone} at {args.size}x{args.size}, batches {args.batches}, into {out}")
    print(f"steps (each in its own process; --steps-timeout {args.steps_timeout:.0f} s, export "
          f"{args.export_timeout:.0f} s, verify {args.verify_timeout:.0f} s, budget {args.budget:.0f} s):", flush=True)
    try:
        run_all(args, out, runner, report)
    finally:
        report["machine"]["load_average_end"] = load_average()
        report["seconds"] = round(runner.elapsed(), 1)
        text = render(report, args)
        (out / "gpu_check.txt").write_text(text)
        for step in runner.steps:
            step.pop("result", None)  # merged into the report's env, export and timings
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
        print("\n" + text)
        print(f"wrote {out / 'gpu_check.txt'} and {out / 'gpu_check.json'}")
    return report


def run_all(args, out: Path, runner: Runner, report: dict) -> None:
    steps = out / "steps"
    env_step = runner.run("env", steps_cmd("env", "--json", str(steps / "env.json")), 120,
                          result=steps / "env.json")
    env = env_step.get("result") or {}
    report["env"] = env
    env_ok = env_step["status"] == "ok"
    skips = backend_skips(env, args.dry_run, env_ok)
    report["skips"] = skips
    artifact, checkpoint = out / "artifact", out / "checkpoint"
    trt_env = None
    if env.get("tensorrt_lib_dirs") and skips["ort-trt"] is None:  # ORT's TensorRT provider dlopens libnvinfer
        trt_env = {"LD_LIBRARY_PATH": os.pathsep.join([*env["tensorrt_lib_dirs"],
                                                       *filter(None, [os.environ.get("LD_LIBRARY_PATH")])])}
        report["ort_trt_env"] = trt_env

    # 1. the artifact
    if args.artifact:
        shutil.copytree(args.artifact, artifact, ignore=shutil.ignore_patterns("engines", "trt_cache"))
        runner.steps.append({"step": "export", "status": "ok", "reason": f"copied from {args.artifact}",
                             "seconds": 0.0})
        checkpoint = None
        exported = True
    else:
        record = runner.run("export", steps_cmd("export", "--folder", str(out), "--backbone", args.backbone,
                                                "--size", str(args.size), "--ig-steps", str(args.ig_steps),
                                                "--json", str(steps / "export.json")),
                            args.export_timeout, result=steps / "export.json")
        exported = record["status"] == "ok" and (artifact / "manifest.json").is_file()
        report["export"] = record.get("result")
    if not exported:
        for key in skips:
            if skips[key] is None:
                skips[key] = "skipped: no artifact (the export did not finish)"
        return
    manifest = json.loads((artifact / "manifest.json").read_text())
    graphs = [g for g in GRAPHS if g in manifest["graphs"]]
    report["graphs"] = graphs
    report["fp16"] = fp16_reason(artifact)
    report["manifest_graphs"] = {g: {k: manifest["graphs"][g].get(k) for k in ("kind", "method", "params",
                                                                              "map_output", "tensorrt")}
                                 for g in graphs}
    top = max(max(args.batches), VERIFY_BATCH)

    # 2. TensorRT engines: native builds, then ORT's provider's first runs (its engines land in its cache)
    built, warm = {}, {}  # graph -> the step's record
    for graph in graphs:
        if skips["trt"]:
            continue
        built[graph] = runner.run(f"build {graph} (native TensorRT)",
                                  cli("build", str(artifact), "--graphs", graph, "--min-batch", "1",
                                      "--opt-batch", str(max(args.batches)), "--max-batch", str(top)),
                                  args.steps_timeout, phase="prep")
    for graph in graphs:
        if skips["ort-trt"]:
            continue
        warm_json = steps / f"warm_{graph}.json"
        warm[graph] = runner.run(f"warm {graph} (ORT TensorRT EP)",
                                 steps_cmd("warm", "--artifact", str(artifact), "--graph", graph, "--batches",
                                           *map(str, sorted({1, top})), "--json", str(warm_json)),
                                 args.steps_timeout, phase="prep", env=trt_env, result=warm_json)
    report["built"] = {g: r["status"] for g, r in built.items()}
    report["warm"] = {g: r["status"] for g, r in warm.items()}

    # 3. latency: every ready backend and the anchor, interleaved, one process per graph
    device = "cpu" if args.dry_run else "cuda"
    for graph in graphs:
        contenders, not_ready = [], {}
        for key in BACKENDS:
            if skips[key] is not None:
                continue
            prepared = {"trt": built, "ort-trt": warm}.get(key, {}).get(graph)
            if prepared is None or prepared["status"] == "ok":
                contenders.append(key)
            elif prepared["status"] == "skipped":
                not_ready[key] = prepared["reason"]
            else:
                what = "engine build" if key == "trt" else "engine warm-up (first runs)"
                not_ready[key] = f"skipped: the {what} {prepared['reason']}"
        if not contenders:
            report["timings"][graph] = {"reason": "skipped: no backend to time here", "not_ready": not_ready}
            continue
        command = steps_cmd("time", "--artifact", str(artifact), "--graph", graph, "--device", device,
                            "--contenders", *contenders, "--batches", *map(str, args.batches),
                            "--repeats", str(args.repeats), "--warmup", str(args.warmup),
                            "--json", str(steps / f"time_{graph}.json"))
        if checkpoint is not None:
            command += ["--checkpoint", str(checkpoint)]
        record = runner.run(f"time {graph}", command, args.steps_timeout, env=trt_env if "ort-trt" in contenders
                            else None, result=steps / f"time_{graph}.json")
        report["timings"][graph] = {"record_status": record["status"], "reason": record.get("reason"),
                                    "not_ready": not_ready, **(record.get("result") or {})}

    # 4. verify, one backend per step (ORT's TensorRT provider last: the least likely to be used)
    for key in VERIFY_ORDER:
        if skips[key] is not None:
            continue
        chosen = graphs if key != "trt" else [g for g in graphs if built.get(g, {}).get("status") == "ok"]
        if not chosen:
            report["verify"][key] = {"status": "skipped", "reason": "skipped: no engine was built"}
            continue
        folder = out / "verify" / key
        command = cli("verify", str(artifact), *VERIFY_ARGS[key], "--graphs", ",".join(chosen),
                      "--batch", str(VERIFY_BATCH), "--report", str(folder), *([] if args.verify_full else ["--quick"]))
        env = {"NVIDIA_TF32_OVERRIDE": "0"} if key == "ort-cuda-fp32" else (trt_env if key == "ort-trt" else None)
        record = runner.run(f"verify {key}", command, args.verify_timeout, env=env)
        summary = {"status": record["status"], "reason": record.get("reason"), "graphs": chosen}
        if (folder / "report.json").is_file():
            summary.update(summarize_verify(json.loads((folder / "report.json").read_text())))
        report["verify"][key] = summary


def summarize_verify(data: dict) -> dict:
    """Per graph: passed or not, the failing outputs' reasons, and the gate figures: the output tightest against
    its allowance (err/scale of allowed), the worst cosine, Spearman and top-10% IoU of the maps, the largest
    spread between two runs, and the decision check."""
    per_graph: dict[str, dict] = {}
    for c in data.get("comparisons", []):
        g = per_graph.setdefault(c["graph"], {"passed": True, "outputs": 0, "failed": [], "worst": None,
                                              "cosine": None, "spearman": None, "iou": None, "spread": 0.0})
        g["outputs"] += 1
        if not c["passed"]:
            g["passed"] = False
            g["failed"].append(f"{c['output']}: {'; '.join(c.get('reasons') or ['failed'])}"[:300])
        if c["output"] == "decision":
            g["decision"] = "same labels" if c["passed"] else "labels differ"
            continue
        ratio = (c.get("scaled_error") or 0.0) / c["allowed"] if c.get("allowed") else 0.0
        if g["worst"] is None or ratio > g["worst"]["of_allowed"]:
            g["worst"] = {"output": c["output"], "err_scale": c.get("scaled_error"), "allowed": c.get("allowed"),
                          "of_allowed": ratio}
        for key in ("cosine", "spearman", "iou"):
            if c.get(key) is not None:
                g[key] = c[key] if g[key] is None else min(g[key], c[key])
        g["spread"] = max(g["spread"], c.get("spread") or 0.0)
    return {"passed": data.get("passed"), "seconds": data.get("seconds"), "inputs": data.get("inputs"),
            "integrity_failures": [f for f in data.get("integrity", []) if not f.get("ok")],
            "unavailable": data.get("unavailable"), "per_graph": per_graph}


# ---- the printed report ------------------------------------------------------------------------------------------

def _ms(value) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def render(report: dict, args) -> str:
    lines: list[str] = []
    add = lines.append
    env, machine = report.get("env") or {}, report["machine"]
    mode = "DRY RUN on the CPU (tests the script; no GPU numbers)" if args.dry_run else "GPU check"
    add(f"auditor-rt gpu_check, {mode}: {args.backbone} (random weights, random risk head), {args.size}x{args.size}, "
        f"IG {args.ig_steps} steps, FP32 graphs for --target tensorrt; {report.get('seconds', 0):.0f} s in all")
    add(f"CPU: {machine['cpu']}, {machine['cores']} logical cores; load average {machine['load_average_start']} at "
        f"the start, {machine.get('load_average_end', '?')} at the end")
    smi = machine.get("nvidia_smi") or {}
    if smi.get("error"):
        add(f"GPU: {smi['error']}")
    else:
        for gpu in smi.get("gpus", []):
            add(f"GPU (nvidia-smi; name, driver, memory total/used, util, temp, SM clock/max, power): {gpu}")
        add(f"other processes on the GPU at the start: {'; '.join(smi.get('processes') or []) or 'none'}")
    torch_info = env.get("torch") or {}
    if torch_info.get("device"):
        add(f"torch sees {torch_info['device']} (sm {torch_info['capability']}, {torch_info['memory_gib']} GiB, "
            f"{torch_info['device_count']} device(s)); cuDNN {torch_info.get('cudnn')}; eager TF32: cuDNN "
            f"{torch_info.get('tf32_cudnn')}, matmul {torch_info.get('tf32_matmul')} (torch's defaults)")
    elif torch_info:
        add(f"torch: {torch_info.get('error') or 'no CUDA device (torch.cuda.is_available() is False)'}")
    versions = [f"python {env.get('python', '?')}"]
    if torch_info.get("version"):
        versions.append(f"torch {torch_info['version']} (CUDA {torch_info.get('cuda_build')})")
    ort = env.get("onnxruntime") or {}
    versions.append(f"{ort.get('wheel', 'onnxruntime')} {ort.get('version', ort.get('error', '?'))} "
                    f"[{', '.join(ort.get('providers', []))}]" + (" BOTH onnxruntime WHEELS" if ort.get("both_wheels")
                                                                  else ""))
    for name in ("tensorrt", "cuda_python", "captum", "grad-cam"):
        item = env.get(name) or {}
        versions.append(f"{name} {item['version']}" if "version" in item else f"{name}: not installed")
    add("versions: " + ", ".join(versions))

    add("")
    add("steps (each in its own process with its own timeout)")
    add(f"  {'step':<38}{'status':<9}{'seconds':>8}{'timeout':>9}  note")
    for step in report["steps"]:
        seconds = f"{step['seconds']:.1f}" if step.get("seconds") is not None else ""
        timeout = f"{step['timeout_s']:.0f}" if step.get("timeout_s") else ""
        add(f"  {step['step']:<38}{step['status']:<9}{seconds:>8}{timeout:>9}  {step.get('reason') or ''}")
    export = report.get("export") or {}
    if export.get("graphs"):
        findings = {g: v.get("tensorrt_findings") for g, v in export["graphs"].items()}
        add(f"  export: {export.get('seconds')} s, TensorRT parser findings per graph {findings}, weights.bin "
            f"{export.get('weights_mb')} MB")

    skips = report.get("skips") or {}
    keys = [k for k in BACKENDS if not (k == "ort-cpu" and not args.dry_run)]
    verify = report.get("verify") or {}
    graphs = report.get("graphs") or list(GRAPHS)
    fp16 = report.get("fp16", FP16_SKIP)
    add("")
    quick = "" if args.verify_full else " --quick"
    add(f"verify{quick} per backend (every output against PyTorch FP64; gates: error within max(1e-4 of the scale, "
        f"2x PyTorch FP32's own), maps' cosine / Spearman / top-10% IoU, the same decisions, two runs alike)")
    add(f"  {'backend':<40}{'graph':<10}{'result':<7}{'outputs':>8}  {'tightest output: err/scale (allowed)':<40}"
        f"{'cosine':>9}{'spearman':>9}{'iou':>6}{'spread':>9}")
    for key in keys:
        label = f"{BACKENDS[key]}, FP32"
        row = verify.get(key)
        reason = None if (row or {}).get("per_graph") else (skips.get(key) or (row or {}).get("reason"))
        if reason or not row:
            add(f"  {label:<40}{'-':<10}{reason or 'skipped: did not run'}")
            continue
        for graph in row.get("graphs", []):
            g = row["per_graph"].get(graph)
            if not g:
                add(f"  {label:<40}{graph:<10}{'-':<7}{'':>8}  not in the report: {row.get('reason') or '?'}")
                continue
            worst = g["worst"] or {}
            tight = (f"{worst.get('output')}: {worst.get('err_scale', 0):.1e} ({worst.get('allowed', 0):.1e})"
                     if worst else "-")
            fmt = (lambda v, f: "-" if v is None else format(v, f))
            add(f"  {label:<40}{graph:<10}{'PASS' if g['passed'] else 'FAIL':<7}{g['outputs']:>8}  {tight:<40}"
                f"{fmt(g['cosine'], '.6f'):>9}{fmt(g['spearman'], '.4f'):>9}{fmt(g['iou'], '.2f'):>6}"
                f"{g['spread']:>9.1e}" + (f"  {g['decision']}" if g.get("decision") else ""))
            for failure in g["failed"][:3]:
                add(f"  {'':<40}{'':<10}  - {failure}")
        if row.get("status") not in ("ok", "failed") and row.get("reason"):
            add(f"  {'':<40}{'':<10}  ({row['reason']})")
    for label in ("ORT CUDA EP, FP16", "ORT TensorRT EP, FP16", "TensorRT (native engine), FP16"):
        add(f"  {label:<40}{'-':<10}{fp16}")
    if report.get("ort_trt_env"):
        add(f"  (ORT TensorRT EP steps ran with LD_LIBRARY_PATH={report['ort_trt_env']['LD_LIBRARY_PATH']}: the "
            "pip wheels' TensorRT libraries, which ONNX Runtime loads by name)")
    if not args.dry_run:
        add("  (ORT CUDA EP TF32 off is verified with NVIDIA_TF32_OVERRIDE=0, timed with the provider option "
            "use_tf32=0)")

    batches = args.batches
    add("")
    add(f"latency, median ms of {args.repeats} interleaved rounds per batch (numpy in and out for ours; the anchors "
        f"get their input on the {'CPU' if args.dry_run else 'GPU'} and keep outputs there); anchor/ours = the "
        f"anchor's median over the row's")
    head = "".join(f"{'b' + str(b) + ' ms':>10}" for b in batches) + "".join(
        f"{'x b' + str(b):>9}" for b in batches)
    add(f"  {'graph':<10}{'backend / anchor':<42}{head}  verify")
    for graph in graphs:
        t = (report.get("timings") or {}).get(graph) or {}
        contenders = t.get("contenders") or {}
        errors = t.get("errors") or {}
        anchor = (contenders.get("anchor") or {}).get("timings") or {}
        for key in keys:
            label = BACKENDS[key]
            why = skips.get(key) or (t.get("not_ready") or {}).get(key)
            if not why and key not in contenders and key not in errors:
                why = t.get("reason") or t.get("error") or "skipped: timing did not run"
            if key in errors:
                why = f"error: {errors[key]}"
            timings = (contenders.get(key) or {}).get("timings") or {}
            result = (((verify.get(key) or {}).get("per_graph") or {}).get(graph) or {})
            verdict = "" if not result else ("PASS" if result["passed"] else "FAIL")
            if why and not timings:
                add(f"  {graph:<10}{label:<42}{why}")
                continue
            cells = "".join(f"{_ms((timings.get(str(b)) or {}).get('median_ms')):>10}" for b in batches)
            ratios = ""
            for b in batches:
                ours, theirs = (timings.get(str(b)) or {}).get("median_ms"), (anchor.get(str(b)) or {}).get("median_ms")
                ratios += f"{(f'{theirs / ours:.2f}x' if ours and theirs else '-'):>9}"
            add(f"  {graph:<10}{label:<42}{cells}{ratios}  {verdict}" + (f"  ({why})" if why else ""))
        add(f"  {graph:<10}{'(every backend), FP16':<42}{fp16}")
        anchor_name = ANCHORS.get(graph, graph) + f" ({'cpu' if args.dry_run else 'cuda'})"
        anchor_why = t.get("anchor_skipped") or (f"error: {errors['anchor']}" if "anchor" in errors else None)
        if anchor:
            cells = "".join(f"{_ms((anchor.get(str(b)) or {}).get('median_ms')):>10}" for b in batches)
            add(f"  {graph:<10}{'anchor: ' + anchor_name:<42}{cells}")
        else:
            add(f"  {graph:<10}{'anchor: ' + anchor_name:<42}{anchor_why or t.get('reason') or 'skipped'}")
        if t.get("outside_load_cores") is not None and t["outside_load_cores"] > 0.25:
            add(f"  {'':<10}(other processes used {t['outside_load_cores']:.2f} cores while this graph was timed)")

    if not args.dry_run and 8 in batches:
        add("")
        add("issue 15's targets at batch 8, anchor/ours, on the fastest backend whose verify passed:")
        for graph, goal in TARGETS.items():
            t = (report.get("timings") or {}).get(graph) or {}
            contenders = t.get("contenders") or {}
            theirs = (((contenders.get("anchor") or {}).get("timings") or {}).get("8") or {}).get("median_ms")
            best = None
            for key in keys:
                ours = ((((contenders.get(key) or {}).get("timings") or {}).get("8")) or {}).get("median_ms")
                passed = (((verify.get(key) or {}).get("per_graph") or {}).get(graph) or {}).get("passed")
                if ours and theirs and passed and (best is None or theirs / ours > best[1]):
                    best = (BACKENDS[key], theirs / ours)
            note = " (the issue's target is for IG at 32 steps)" if graph == "ig" and args.ig_steps != 32 else ""
            if best:
                add(f"  {graph:<10}{best[1]:.2f}x on {best[0]}: {'meets' if best[1] >= goal else 'MISSES'} "
                    f">= {goal:g}x{note}")
            else:
                add(f"  {graph:<10}no verified backend with a timing and an anchor{note}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
