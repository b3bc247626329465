"""Attribution maps through the runtime: Auditor.explain on the tiny closed-form artifacts (``tiny/``), whose maps
are known: the risk head's logit is a soft maximum over a 4 x 4 grid of patch redness, so its gradient is largest
over the reddest patch. (That exported artifacts share one weights file and match PyTorch is tested in
tests/export.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from auditor_rt.runtime import Auditor
from auditor_rt.runtime.errors import ConfigError, DigestMismatchError

from tiny.drawing import red_square

METHODS = ("saliency", "ig", "smoothgrad", "gradcam", "gradcam++")


def photos(n: int = 2, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (120 + 10 * i, 90, 3), dtype=np.uint8) for i in range(n)]


def test_manifest_lists_attribution_graphs_sharing_one_weights_file(explain_artifact_dir):
    manifest = json.loads((explain_artifact_dir / "manifest.json").read_text())
    kinds = {key: g["kind"] for key, g in manifest["graphs"].items()}
    assert kinds == {"audit": "audit", "saliency": "attribution", "ig": "attribution", "smoothgrad": "attribution",
                     "gradcam": "attribution", "gradcam++": "attribution"}
    assert manifest["graphs"]["ig"]["params"]["steps"] == 4 and manifest["graphs"]["ig"]["signed"] is True
    assert list(manifest["data_files"]) == ["weights.bin"]
    for key in manifest["graphs"]:  # every graph reads its kernel from the one weights file
        assert b"weights.bin" in (explain_artifact_dir / manifest["graphs"][key]["file"]).read_bytes(), key


@pytest.mark.parametrize("method, signed", [("saliency", False), ("ig", True), ("smoothgrad", False),
                                            ("gradcam", False), ("gradcam++", False)])
def test_explain_gives_maps_at_the_original_size(explain_artifact_dir, method, signed):
    with Auditor.load(explain_artifact_dir) as auditor:
        explanations = auditor.explain(photos(), method=method)
        scores = auditor(photos())
    assert [e.map.shape for e in explanations] == [(120, 90), (130, 90)]
    assert all(e.signed is signed and e.method == method for e in explanations)
    assert all(np.isfinite(e.map).all() for e in explanations)
    for explanation, result in zip(explanations, scores):
        assert explanation.logit == pytest.approx(result.logit, abs=1e-4)
    if method == "ig":
        assert all("delta" in e.extras for e in explanations)


@pytest.mark.parametrize("method", METHODS)
def test_maps_point_at_the_red_patch_and_follow_it(explain_artifact_dir, method):
    """A red square in one corner of a grey image: every method's map is hottest there; moved to the opposite
    corner, the map moves with it."""
    size = (128, 128)
    top_left = red_square(size, (0, 0, 32, 32), seed=1)
    bottom_right = red_square(size, (96, 96, 128, 128), seed=1)
    with Auditor.load(explain_artifact_dir) as auditor:
        first, second = auditor.explain([top_left, bottom_right], method)
    for explanation, (inside, outside) in ((first, (np.s_[:32, :32], np.s_[64:, 64:])),
                                           (second, (np.s_[96:, 96:], np.s_[:64, :64]))):
        assert explanation.map[inside].mean() > 3 * np.abs(explanation.map[outside]).mean(), method
    assert np.abs(first.map - second.map).max() > 0.5 * np.abs(first.map).max()


def test_saliency_is_the_closed_form_gradient(explain_artifact_dir):
    """The risk logit is 0.1 * log(mean(exp(risk_map / 0.1))) with risk_map = 2 * patch redness - 1 on a 4 x 4 grid
    of 16 x 16 patches, redness = x_R - 0.5 x_G - 0.25 x_B of the normalised x: the largest channel gradient of a
    pixel is 2 * softmax(risk_map / 0.1)[its patch] / 256."""
    image = red_square((64, 64), (16, 0, 40, 20), seed=2)
    with Auditor.load(explain_artifact_dir) as auditor:
        result = auditor.predict([image])[0]
        saliency = auditor.explain([image], "saliency")[0]
    cells = result.risk_map.reshape(-1).astype(np.float64) / 0.1
    weights = np.exp(cells - cells.max()) / np.exp(cells - cells.max()).sum()
    expected = np.kron(weights.reshape(4, 4), np.ones((16, 16))) * 2 / 256
    np.testing.assert_allclose(saliency.raw, expected, rtol=1e-4, atol=1e-9)
    assert result.logit == pytest.approx(0.1 * (cells.max() + np.log(np.exp(cells - cells.max()).mean())), abs=1e-5)


def test_ig_attributions_add_up_to_the_logit_difference(explain_artifact_dir):
    """IG from black: the sum of the map is logit(image) - logit(black) up to its 4-step quadrature error,
    which the graph reports as delta."""
    images = [red_square((64, 64), (8, 8, 30, 30), seed=3), red_square((64, 64), seed=4)]
    with Auditor.load(explain_artifact_dir) as auditor:
        explanations = auditor.explain_arrays(images, "ig")
        logits = [r.logit for r in auditor.predict(images)]
        black = auditor.predict([np.zeros((64, 64, 3), np.uint8)])[0].logit
    for explanation, logit in zip(explanations, logits):
        total = float(explanation.raw.sum(dtype=np.float64))
        assert total - explanation.extras["delta"] == pytest.approx(logit - black, abs=1e-3)
        assert abs(explanation.extras["delta"]) < 0.05 * abs(logit - black)


def test_smoothgrad_repeats_with_a_seed_and_changes_without(explain_artifact_dir):
    with Auditor.load(explain_artifact_dir) as auditor:
        first = auditor.explain(photos(1), "smoothgrad", noise_seed=3)[0].map
        again = auditor.explain(photos(1), "smoothgrad", noise_seed=3)[0].map
        other = auditor.explain(photos(1), "smoothgrad", noise_seed=4)[0].map
    assert np.array_equal(first, again)
    assert np.abs(first - other).max() > 0


def test_unknown_method_names_what_the_artifact_has(explain_artifact_dir):
    with Auditor.load(explain_artifact_dir) as auditor, pytest.raises(ConfigError, match="gradcam"):
        auditor.explain(photos(1), "lime")


def test_changed_weights_file_is_refused(explain_artifact_dir, tmp_path):
    copy = tmp_path / "art"
    shutil.copytree(explain_artifact_dir, copy)
    with open(copy / "weights.bin", "r+b") as handle:
        handle.seek((copy / "weights.bin").stat().st_size // 2)
        handle.write(b"\x01\x02\x03\x04")
    with pytest.raises(DigestMismatchError, match="weights.bin"):
        Auditor.load(copy)


# --- a plain classifier ----------------------------------------------------------------------------------------

def solid(rgb, size=(40, 50)) -> np.ndarray:
    image = np.empty((*size, 3), np.uint8)
    image[:] = rgb
    return image


def test_classifier_names_the_colour(classifier_artifact_dir):
    with Auditor.load(classifier_artifact_dir) as model:
        results = model.classify([solid((220, 30, 30)), solid((30, 220, 30)), solid((30, 30, 220))], k=2)
    assert [r.top_class for r in results] == [0, 1, 2]
    assert all(r.probs[0] > 0.8 and len(r.classes) == 2 for r in results)


def test_classifier_explains_the_target_class(classifier_artifact_dir):
    """Red on the left, blue on the right: class 0's saliency is on the left, class 2's on the right; -1 (the
    default) explains the predicted class; a class out of range is refused."""
    image = solid((30, 30, 30), (32, 32))
    image[:, :12] = (255, 0, 0)
    image[:, 24:] = (0, 0, 200)
    with Auditor.load(classifier_artifact_dir) as model:
        predicted = model.classify([image], k=1)[0].top_class
        red, blue = model.explain([image, image], "saliency", targets=[0, 2])
        default = model.explain([image], "saliency")[0]
        with pytest.raises(ConfigError, match="outside"):
            model.explain([image], "saliency", targets=[3])
        with pytest.raises(ConfigError, match="baseline"):
            model.explain([image], "ig")
        ig = model.explain([image], "ig", baselines=[solid((30, 30, 30), (32, 32))], targets=[2])[0]
    assert red.map[:, :12].mean() > red.map[:, 24:].mean() and blue.map[:, 24:].mean() > blue.map[:, :12].mean()
    assert predicted == 0 and np.allclose(default.map, red.map) and red.logit > blue.logit
    assert ig.map[:, 24:].sum() > 0 and ig.completeness["ig_logit_difference"] > 0


NO_TORCH = """
import json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "timm", "onnx"):
            raise ImportError(name + " is blocked")
sys.meta_path.insert(0, Block())
import numpy as np
from auditor_rt.runtime import Auditor
with Auditor.load(sys.argv[1]) as auditor:
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    maps = {m: auditor.explain([image], m)[0].map.shape for m in ("saliency", "ig", "smoothgrad", "gradcam")}
print(json.dumps({"maps": {k: list(v) for k, v in maps.items()}, "torch": "torch" in sys.modules}))
"""


def test_explain_runs_without_torch(explain_artifact_dir):
    out = subprocess.run([sys.executable, "-c", NO_TORCH, str(explain_artifact_dir)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["torch"] is False
    assert all(shape == [64, 64] for shape in report["maps"].values())
