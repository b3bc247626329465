"""``auditor-rt verify``: a correct artifact passes; each kind of damage fails with the right output or file named;
the report is valid HTML; exit codes are 0 / 1 / 2."""

from __future__ import annotations

import html.parser
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from auditor_rt.cli.main import cli
from auditor_rt.export.verification.verify import VerifyOptions, verify_artifact
from damage import claim_bgr, freeze_map, reseal, scale_convolution
from damage import damaged_copy as copy_artifact

CHROMIUM = Path("/usr/bin/chromium")


def damaged_copy(artifact_dir: Path, tmp_path: Path) -> Path:
    return copy_artifact(artifact_dir, tmp_path / "artifact")


def perturb_initializer(path: Path, name: str, delta: float) -> None:
    model = onnx.load(str(path), load_external_data=False)
    tensor = next(t for t in model.graph.initializer if t.name == name)
    values = onnx.numpy_helper.to_array(tensor) + np.float32(delta)
    tensor.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), name))
    onnx.save(model, str(path))


def failed(report) -> set[str]:
    return {f"{c.graph}/{c.output}" for c in report.comparisons if not c}


def test_a_correct_artifact_passes_every_output(explain_artifact_dir, demo_data):
    images = Path(demo_data.root) / "images" / "test"
    report = verify_artifact(explain_artifact_dir, VerifyOptions(images=images, max_images=4))
    assert report.passed, [(c.graph, c.output, c.reasons) for c in report.comparisons if not c]
    outputs = {f"{c.graph}/{c.output}" for c in report.comparisons}
    assert {"audit/logit", "audit/score", "audit/risk_map", "audit/heatmap", "audit/decision", "saliency/saliency",
            "ig/ig", "ig/delta", "smoothgrad/smoothgrad", "gradcam/cam", "gradcam++/cam"} <= outputs
    assert {"black", "white", "saturated", "random-0"} <= set(report.inputs) and len(report.inputs) == 9
    maps = [c for c in report.comparisons if c.kind == "map"]
    assert all(c.cosine > 0.9999 and c.spearman > 0.999 and abs(c.dependence - 1) < 0.02 for c in maps)
    assert all(f.ok for f in report.integrity)


def test_a_head_weight_perturbed_by_1e3_fails_on_the_scores(artifact_dir, tmp_path):
    folder = damaged_copy(artifact_dir, tmp_path)
    perturb_initializer(folder / "audit.onnx", "head.conv.weight", 1e-3)
    reseal(folder)  # the digests match: only the numbers can tell
    report = verify_artifact(folder)
    assert not report.passed and all(f.ok for f in report.integrity)
    assert {"audit/logit", "audit/score", "audit/risk_map"} <= failed(report)


def test_an_attribution_frozen_at_export_fails_on_input_dependence(explain_artifact_dir, tmp_path):
    """The classic failure of exporting a gradient: it becomes a constant. Here saliency.onnx is replaced by a graph
    whose maps were computed once, for the export's example, and are returned for every input."""
    from auditor_rt.export.models.checkpoint import load_checkpoint
    from auditor_rt.export.attribution.methods import SaliencyOutputs
    from auditor_rt.export.conversion.torch_to_onnx import export_graph
    from auditor_rt.export.graphs.risk_head_export import build_audit_module

    folder = damaged_copy(explain_artifact_dir, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    audit = build_audit_module(load_checkpoint(manifest["training"]["checkpoint"]))
    size = tuple(manifest["preprocess"]["input_size"])
    example = torch.randint(0, 256, (2, *size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    x = audit.normalize(example[:1]).requires_grad_(True)
    grad, = torch.autograd.grad(audit.score(x).sum(), x)
    frozen_map, frozen_grad = grad.abs().amax(1).detach(), grad.sum(1).detach()

    class Frozen(torch.nn.Module):
        def forward(self, image):
            logit = audit.score(audit.normalize(image))
            n = image.shape[0]
            return SaliencyOutputs(logit, frozen_map.expand(n, *size), frozen_grad.expand(n, *size))

    original = onnx.load(str(folder / "saliency.onnx"), load_external_data=False)
    export_graph(Frozen(), folder / "saliency.onnx", example)
    model = onnx.load(str(folder / "saliency.onnx"))
    model.metadata_props.extend(original.metadata_props)  # it describes itself as the real one did
    onnx.save(model, str(folder / "saliency.onnx"))
    reseal(folder)
    report = verify_artifact(folder, VerifyOptions(graphs=["saliency"]))
    saliency = next(c for c in report.comparisons if c.output == "saliency")
    assert not saliency and saliency.dependence is not None and saliency.dependence < 0.5
    assert any("input dependence" in reason for reason in saliency.reasons), saliency.reasons
    assert "saliency/logit" not in failed(report)  # the live part of the graph still matches


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_correct_artifact_passes_on_every_seed(explain_artifact_dir, seed):
    report = verify_artifact(explain_artifact_dir, VerifyOptions(graphs=["audit", "saliency", "ig", "gradcam"],
                                                                 seed=seed, random=3))
    assert report.passed, [(c.graph, c.output, c.reasons) for c in report.comparisons if not c]
    gradient = next(c for c in report.comparisons if c.output == "gradient")
    assert "white" in gradient.ill_conditioned  # max-pool ties: FP32 and FP64 gradients go to other pixels
    assert all(len(report.inputs) - len(c.ill_conditioned) >= 2 for c in report.comparisons)


@pytest.mark.parametrize("graph, output, seed", [("saliency", "saliency", 1), ("ig", "ig", 2), ("gradcam", "cam", 3)])
def test_a_map_output_made_constant_fails_on_input_dependence(explain_artifact_dir, tmp_path, graph, output, seed):
    folder = damaged_copy(explain_artifact_dir, tmp_path)
    freeze_map(folder, graph, output, seed)
    report = verify_artifact(folder, VerifyOptions(graphs=[graph], seed=seed))
    frozen = next(c for c in report.comparisons if c.output == output)
    assert not report.passed and all(f.ok for f in report.integrity)
    assert any("input dependence" in reason for reason in frozen.reasons), frozen.reasons


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_convolution_scaled_by_1_01_fails(explain_artifact_dir, tmp_path, seed):
    folder = damaged_copy(explain_artifact_dir, tmp_path)
    scale_convolution(folder, 1.01)
    report = verify_artifact(folder, VerifyOptions(graphs=["audit", "saliency"], seed=seed))
    assert not report.passed and all(f.ok for f in report.integrity)  # the digests match: only numbers can tell
    assert {"audit/logit", "audit/risk_map"} <= failed(report)


def test_a_manifest_that_claims_bgr_fails_and_names_the_colour_order(artifact_dir, tmp_path):
    folder = damaged_copy(artifact_dir, tmp_path)
    claim_bgr(folder)
    report = verify_artifact(folder)
    problems = [f.detail for f in report.integrity if not f.ok]
    assert not report.passed and any("colour order" in p and "BGR" in p and "RGB" in p for p in problems), problems


def test_a_changed_preprocessing_mean_fails(artifact_dir, tmp_path):
    folder = damaged_copy(artifact_dir, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["preprocess"]["mean"][0] += 0.05
    (folder / "manifest.json").write_text(json.dumps(manifest))
    report = verify_artifact(folder)
    assert not report.passed
    assert {"audit/logit", "audit/score"} <= failed(report)
    problems = {f.check: f.detail for f in report.integrity if not f.ok}
    assert "mean" in problems["metadata audit.onnx"] or "preprocess" in problems["metadata audit.onnx"]
    assert any("mean" in detail for check, detail in problems.items() if check == "reference files")


def test_a_graph_that_does_not_match_its_digest_fails(artifact_dir, tmp_path):
    folder = damaged_copy(artifact_dir, tmp_path)
    perturb_initializer(folder / "audit.onnx", "head.mlp.2.bias", 0.5)  # and the manifest is left as it was
    report = verify_artifact(folder)
    digest = next(f for f in report.integrity if f.check == "digest audit.onnx")
    assert not report.passed and not digest.ok and "does not match the manifest" in digest.detail
    assert "audit/logit" in failed(report)  # compared anyway: the numbers say what changed


def test_cli_exit_codes_table_and_report(artifact_dir, tmp_path):
    ok = CliRunner().invoke(cli, ["verify", str(artifact_dir), "--report", str(tmp_path / "report"),
                                  "--atol", "heatmap:1e-3", "--rtol", "audit/risk_map:1e-3"])
    assert ok.exit_code == 0, ok.output
    assert "PASS onnxruntime audit/heatmap" in ok.output and "PASS:" in ok.output
    page = (tmp_path / "report" / "report.html").read_text()
    parser = _ReportParser()
    parser.feed(page)
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert parser.rows == len(data["comparisons"]) and parser.verdicts == {"PASS"}
    assert parser.images >= 4 and parser.title.startswith("auditor-rt verify: PASS")
    folder = damaged_copy(artifact_dir, tmp_path)
    perturb_initializer(folder / "audit.onnx", "head.conv.weight", 1e-3)
    reseal(folder)
    bad = CliRunner().invoke(cli, ["verify", str(folder)])
    assert bad.exit_code == 1 and "FAIL onnxruntime audit/logit" in bad.output
    assert bad.output.strip().splitlines()[-1].startswith("Error: verify FAILED: audit/logit on onnxruntime")
    assert "would pass with atol" in bad.output


@pytest.mark.parametrize("args, fragment", [
    (["--atol", "heatmap"], "write NAME:VALUE"),
    (["--atol", "nosuch:1e-3"], "name no output called nosuch"),
    (["--graphs", "nosuch"], "no graph named 'nosuch'"),
    (["--backend", "ort-tensorrt"], "not available here"),
    (["--backend", "tensorrt"], "auditor-rt build"),
])
def test_cli_usage_and_artifact_errors_exit_2(artifact_dir, args, fragment):
    result = CliRunner().invoke(cli, ["verify", str(artifact_dir), *args])
    assert result.exit_code == 2 and fragment in result.output and "Traceback" not in result.output, result.output


def test_backend_all_runs_what_is_here_and_names_the_rest(artifact_dir):
    import onnxruntime as ort

    result = CliRunner().invoke(cli, ["verify", str(artifact_dir), "--backend", "all", "--graphs", "audit"])
    assert result.exit_code == 0, result.output
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        assert "ort-tensorrt: not available here" in result.output
    assert "tensorrt: " in result.output  # native engines: none built (or no TensorRT) here


def test_not_a_artifact_folder_is_exit_2(tmp_path):
    result = CliRunner().invoke(cli, ["verify", str(tmp_path)])
    assert result.exit_code == 2 and "manifest.json" in result.output


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_report_renders_in_headless_chromium(artifact_dir, tmp_path):
    from auditor_rt.export.verification.verify_report import write_report

    _, page = write_report(verify_artifact(artifact_dir), tmp_path / "report")
    picture = tmp_path / "report.png"
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600",
                    f"--screenshot={picture}", page.as_uri()], capture_output=True, timeout=120, check=True)
    import cv2

    shot = cv2.imread(str(picture))
    assert shot is not None and shot.shape[:2] == (1600, 1200)
    green = (shot[..., 1] > 150) & (shot[..., 2] < 100) & (shot[..., 0] < 150)
    assert green.sum() > 200, "the PASS badge is not on the page"  # the verdict badge, #2a7
    print(f"\nreport rendered to {picture}")


class _ReportParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.images, self.verdicts, self.title = 0, 0, set(), ""
        self._in_table = self._first_cell = self._in_title = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == "verdicts":
            self._in_table = True
        elif tag == "tr" and self._in_table and "class" in attrs:
            self.rows += 1
            self._first_cell = True
        elif tag == "img" and attrs.get("src", "").startswith("data:image/png;base64,"):
            self.images += 1
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._first_cell and data.strip():
            self.verdicts.add(data.strip())
            self._first_cell = False
        if self._in_title:
            self.title += data


def test_a_classifier_artifact_verifies_against_its_weights_file(tmp_path):
    """A user's own classifier: rebuilt from its weights file, the classes to explain are the reference's own top
    classes, and the classes must agree exactly."""
    import timm
    from safetensors.torch import save_file

    from auditor_rt.export.graphs.classifier_export import export_classifier_artifact

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=5)
    weights = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    folder = export_classifier_artifact("test_resnet", tmp_path / "clf", weights=str(weights), num_classes=5,
                                        input_size=64, attributions=["saliency"]).folder
    report = verify_artifact(folder)
    assert report.passed, [(c.graph, c.output, c.reasons) for c in report.comparisons if not c]
    assert {"classify/top_class", "classify/logits", "saliency/saliency"} <= {f"{c.graph}/{c.output}"
                                                                               for c in report.comparisons}
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")  # the file behind the manifest changed
    changed = verify_artifact(folder)
    assert any(not f.ok and "classifier weights" in f.detail for f in changed.integrity)
