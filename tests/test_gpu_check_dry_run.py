"""benchmarks/gpu_check.py, the script that validates a GPU box, checked without a GPU: its ``--dry-run`` runs every
step on the CPU with a tiny model, and every row that needs CUDA or TensorRT must say that it was skipped, and why.
The fast tests below check the skip rules and the verify summary on made-up inputs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_skip_with_the_reason_for_what_is_missing():
    gpu_check = load_gpu_check()
    cpu_only = {"onnxruntime": {"providers": ["CPUExecutionProvider"]}, "tensorrt": {"error": "ImportError: x"},
                "cuda_python": {"error": "ImportError: y"}}
    skips = gpu_check.backend_skips(cpu_only, dry=False, env_ok=True)
    assert skips["ort-cuda"] == skips["ort-cuda-fp32"] == "skipped: no CUDA provider"
    assert skips["ort-trt"] == skips["trt"] == "skipped: tensorrt not installed"

    gpu_box = {"onnxruntime": {"providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                             "CPUExecutionProvider"]},
               "tensorrt": {"version": "11.4.0"}, "cuda_python": {"version": "13.0"}}
    assert all(gpu_check.backend_skips(gpu_box, dry=False, env_ok=True)[key] is None
               for key in ("ort-cuda", "ort-cuda-fp32", "ort-trt", "trt"))
    dry = gpu_check.backend_skips(gpu_box, dry=True, env_ok=True)
    assert dry["ort-cpu"] is None and dry["trt"] == "skipped: --dry-run runs on the CPU"
    no_trt_ep = {**gpu_box, "onnxruntime": {"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}}
    assert gpu_check.backend_skips(no_trt_ep, dry=False, env_ok=True)["ort-trt"].startswith(
        "skipped: no TensorRT provider")
    assert gpu_check.backend_skips({}, dry=False, env_ok=False)["trt"].startswith("skipped: the environment probe")


def test_verify_summary_keeps_the_gate_figures_and_the_failures():
    gpu_check = load_gpu_check()
    report = {"passed": False, "comparisons": [
        {"graph": "saliency", "output": "saliency", "passed": False, "reasons": ["error 0.26 of scale"],
         "scaled_error": 0.26, "allowed": 1e-4, "cosine": 0.998, "spearman": 0.99, "iou": 0.8, "spread": 1e-6},
        {"graph": "saliency", "output": "logit", "passed": True, "scaled_error": 1e-6, "allowed": 1e-4},
        {"graph": "audit", "output": "decision", "passed": True},
        {"graph": "audit", "output": "heatmap", "passed": True, "scaled_error": 1e-5, "allowed": 2e-4,
         "cosine": 1.0, "spearman": 0.9999, "iou": 1.0, "spread": 0.0}]}
    summary = gpu_check.summarize_verify(report)["per_graph"]
    assert summary["saliency"]["passed"] is False and summary["saliency"]["worst"]["output"] == "saliency"
    assert summary["saliency"]["failed"] == ["saliency: error 0.26 of scale"]
    assert summary["saliency"]["cosine"] == 0.998 and summary["saliency"]["outputs"] == 2
    assert summary["audit"]["passed"] and summary["audit"]["decision"] == "same labels"


def test_fp16_rows_say_this_version_exports_no_fp16_graphs(tmp_path):
    gpu_check = load_gpu_check()
    (tmp_path / "manifest.json").write_text(json.dumps({"graphs": {"audit": {"file": "audit.onnx"}}}))
    assert gpu_check.fp16_reason(tmp_path) == "skipped: FP16 graphs not exported by this version"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dry_run_writes_the_table_and_json_and_skips_gpu_rows(tmp_path):
    """The whole script on the CPU (resnet18 at 64 px, batches 1 and 2): about a minute on 2 idle cores."""
    out = tmp_path / "gpu_check"
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), "--dry-run"], capture_output=True, text=True,
                          timeout=840)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = (out / "gpu_check.txt").read_text()
    report = json.loads((out / "gpu_check.json").read_text())
    assert text in done.stdout  # the printed table is the saved one

    steps = {step["step"]: step for step in report["steps"]}
    for name in ("env", "export", "time audit", "time saliency", "time ig", "time gradcam", "verify ort-cpu"):
        assert steps[name]["status"] == "ok", steps[name]
    assert (out / "artifact" / "manifest.json").is_file() and (out / "verify" / "ort-cpu" / "report.json").is_file()
    assert all((out / "logs" / f"{name.replace(' ', '_')}.log").is_file() for name in steps)

    # the CPU rows ran, and passed verify
    for graph in ("audit", "saliency", "ig", "gradcam"):
        timings = report["timings"][graph]["contenders"]["ort-cpu"]["timings"]
        assert set(timings) == {"1", "2"} and all(t["median_ms"] > 0 for t in timings.values())
        assert report["verify"]["ort-cpu"]["per_graph"][graph]["passed"]
    anchor = report["timings"]["audit"]["contenders"]["anchor"]["timings"]  # PyTorch eager: always there
    assert anchor["1"]["median_ms"] > 0
    for graph in ("saliency", "ig", "gradcam"):  # Captum and pytorch-grad-cam: timed, or skipped saying why
        timing = report["timings"][graph]
        assert "anchor" in timing["contenders"] or timing["anchor_skipped"].endswith("not installed")

    # every GPU row is skipped, with a reason, in the JSON and in the table
    for key in ("ort-cuda", "ort-cuda-fp32", "ort-trt", "trt"):
        reason = report["skips"][key]
        assert reason.startswith("skipped: ") and len(reason) > len("skipped: ")
        assert reason in text
    assert "skipped: FP16 graphs not exported by this version" in text
    assert "TensorRT (native engine)" in text and "ORT CUDA EP" in text
