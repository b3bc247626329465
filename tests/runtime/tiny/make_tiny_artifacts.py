"""Writes the tiny artifacts that the runtime tests load: ONNX graphs built with ``onnx.helper``, no torch.

Run by hand after changing a graph (dev only; needs ``onnx`` and ``numpy``), then commit the folders:

    .venv/bin/python tests/runtime/tiny/make_tiny_artifacts.py

The runtime tests themselves need neither ``onnx`` nor torch: they read these checked-in files.

The models are closed-form, so that tests can assert what they do:

* ``risk/`` and ``risk_explain/``: a risk head that finds red. The image (uint8 NHWC, 64 x 64) is normalised in
  the graph to x = image / 127.5 - 1. A 16 x 16 stride-16 convolution (its kernel is the one tensor in
  ``weights.bin``) gives the patch mean of the redness r = x_R - 0.5 x_G - 0.25 x_B on a 4 x 4 grid: the
  activation A. ``risk_map = 2 A - 1`` (a pure red patch 2.5, a grey one -1), ``logit`` is its log-sum-exp mean
  at temperature 0.1 (a soft maximum), ``score = sigmoid(logit)``, ``heatmap`` the risk map upsampled bilinearly
  and min-max normalised per image. A grey image scores 0.27, one red cell on grey 0.90, a red image 0.92; the
  threshold is 0.5.
* The attribution graphs of ``risk_explain/`` use the exact gradient: d logit / dA is 2 x softmax(risk_map / 0.1)
  over the cells, and d logit / dx is that spread back over each cell by the transposed convolution (so the
  saliency of a pixel is the softmax weight of its cell / 128, and largest over the reddest cell). IG (black
  baseline, 4 Gauss-Legendre steps), SmoothGrad (noise an input, 3 samples), Grad-CAM and Grad-CAM++ on A follow
  the formulas of ``export/attribution`` (paths.py, methods.py, cam.py), outputs named and shaped as the exporter
  writes them.
* ``runner/`` (for ``test_artifact_runner.py``): 8 x 8 graphs with inline weights. ``audit``: image -> score (the
  mean pixel / 255) and heatmap (each pixel's channel mean / 255); ``explain``: image and target -> score (the mean
  pixel + target), two inputs that share the batch axis.
* ``classifier/``: a plain classifier of 3 classes (red, green, blue) at 32 x 32: class c's logit is the
  log-sum-exp mean (temperature 0.1) of 2 x the patch means of channel c on a 4 x 4 grid. Its attribution graphs
  (saliency, IG from a ``baseline`` input, Grad-CAM) take a ``target`` class per image, -1 meaning the predicted
  one.

The manifests follow the exporter's format (schema_version 1) with real SHA-256 digests; the graphs carry the
same ``auditor_rt.*`` metadata as exported ones. The output is deterministic: running this again without changes
rewrites the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
OPSET = 17
IR_VERSION = 8  # old enough for any onnxruntime the project supports (>= 1.17)
CREATED = "2026-01-01T00:00:00+00:00"
WEIGHTS_FILE = "weights.bin"

MEAN = STD = (0.5, 0.5, 0.5)
GRID = 4
GAIN, BIAS, TEMPERATURE = 2.0, -1.0, 0.1  # a low temperature: sharp enough that 4 IG steps leave a gap
REDNESS = (1.0, -0.5, -0.25)
RISK_SIZE, CLASSIFIER_SIZE, CLASSES = 64, 32, 3
THRESHOLD = 0.5
IG_STEPS, SMOOTHGRAD_SAMPLES, NOISE_LEVEL = 4, 3, 0.15
CLASSIFIER_IG_STEPS = 2


class Builder:
    """Nodes and initialisers of one graph; every helper returns its output name."""

    def __init__(self):
        self.nodes, self.initializers, self.count = [], [], 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, value, hint: str = "c", dtype=np.float32) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, kind: str, inputs: list[str], hint: str | None = None, out: str | None = None, **attrs) -> str:
        out = out or self.name(hint or kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def ints(self, values, hint: str = "shape") -> str:
        return self.const(values, hint, np.int64)


# --- the shared pieces: normalisation, the forward pass and its exact gradient --------------------------------

def normalize(b: Builder, image: str) -> str:
    """uint8 NHWC -> normalised float NCHW."""
    x = b.op("Transpose", [b.op("Cast", [image], to=TensorProto.FLOAT)], perm=[0, 3, 1, 2])
    scale = b.const((1 / (255 * np.array(STD))).reshape(1, 3, 1, 1), "scale")
    shift = b.const((np.array(MEAN) / np.array(STD)).reshape(1, 3, 1, 1), "shift")
    return b.op("Sub", [b.op("Mul", [x, scale]), shift], "x")


def forward(b: Builder, x: str, kernel: str, channels: int, patch: int, bias: float) -> dict:
    """Normalised NCHW -> A (patch means, [M, K, g, g]), risk map m = GAIN A + bias, per-channel logits [M, K]
    (log-sum-exp mean of m at TEMPERATURE) and the softmax of m / TEMPERATURE over the cells ([M, K, g*g])."""
    activation = b.op("Conv", [x, kernel], "activation", kernel_shape=[patch, patch], strides=[patch, patch])
    m = b.op("Add", [b.op("Mul", [activation, b.const(GAIN, "gain")]), b.const(bias, "bias")], "m")
    scaled = b.op("Div", [b.op("Reshape", [m, b.ints([0, channels, GRID * GRID])]), b.const(TEMPERATURE, "t")])
    lse = b.op("ReduceLogSumExp", [scaled], axes=[2], keepdims=0)
    logits = b.op("Mul", [b.op("Sub", [lse, b.const(np.log(GRID * GRID), "log_cells")]), b.const(TEMPERATURE, "t")],
                  "logits")
    weights = b.op("Softmax", [scaled], "cell_weights", axis=2)
    return {"activation": activation, "m": m, "logits": logits, "weights": weights}


def activation_gradient(b: Builder, out: dict, channels: int, onehot: str | None) -> str:
    """d logit / dA, [M, K, g, g]: GAIN x the softmax weights (of the target's channel only, for a classifier)."""
    grad = b.op("Mul", [out["weights"], b.const(GAIN, "gain")])
    if onehot is not None:
        grad = b.op("Mul", [grad, b.op("Unsqueeze", [onehot, b.ints([2], "axes")])])
    return b.op("Reshape", [grad, b.ints([0, channels, GRID, GRID])], "grad_activation")


def input_gradient(b: Builder, grad_activation: str, kernel: str, patch: int) -> str:
    """d logit / dx, [M, 3, H, W]: the transposed convolution of d logit / dA (the convolution is linear)."""
    return b.op("ConvTranspose", [grad_activation, kernel], "grad_x", kernel_shape=[patch, patch],
                strides=[patch, patch])


def selected_logit(b: Builder, logits: str, onehot: str | None) -> str:
    """[M]: the risk logit, or the logit of each sample's target class."""
    if onehot is None:
        return b.op("Squeeze", [logits, b.ints([1], "axes")])
    return b.op("ReduceSum", [b.op("Mul", [logits, onehot]), b.ints([1], "axes")], keepdims=0)


def minmax(b: Builder, maps: str, axes: list[int]) -> str:
    """Min-max to [0, 1] per image over ``axes`` (clamped as ``normalize_per_image`` is)."""
    low = b.op("ReduceMin", [maps], axes=axes, keepdims=1)
    high = b.op("ReduceMax", [maps], axes=axes, keepdims=1)
    span = b.op("Max", [b.op("Sub", [high, low]), b.const(1e-12, "eps")])
    return b.op("Div", [b.op("Sub", [maps, low]), span])


def upsample(b: Builder, maps: str, patch: int) -> str:
    """Bilinear [M, 1, g, g] -> [M, 1, H, W] (PyTorch's align_corners=False)."""
    return b.op("Resize", [maps, "", b.const([1, 1, patch, patch], "scales")], mode="linear",
                coordinate_transformation_mode="pytorch_half_pixel")


def target_onehot(b: Builder, image_logits: str, target: str) -> str:
    """[N, K] one-hot of each image's target class; -1 is the predicted class (fixed before any path or noise)."""
    predicted = b.op("ArgMax", [image_logits], axis=1, keepdims=0)
    chosen = b.op("Where", [b.op("Less", [target, b.const(0, "zero", np.int64)]), predicted, target])
    return b.op("OneHot", [chosen, b.const(CLASSES, "depth", np.int64), b.const([0, 1], "values")], "onehot",
                axis=-1)


def repeat_each(b: Builder, onehot: str | None, points: int | str) -> str | None:
    """[N, K] -> [N * points, K], each row ``points`` times. ``points``: a number or a 1-element int64 tensor."""
    if onehot is None:
        return None
    shape = (b.ints([1, points, 1]) if isinstance(points, int)
             else b.op("Concat", [b.ints([1]), points, b.ints([1])], axis=0))
    expanded = b.op("Expand", [b.op("Unsqueeze", [onehot, b.ints([1], "axes")]), shape])
    return b.op("Reshape", [expanded, b.ints([-1, CLASSES])])


# --- the graphs ------------------------------------------------------------------------------------------------

class Spec:
    """One model: its size, patch, channels and kernel; ``classifier`` graphs take a target."""

    def __init__(self, size: int, channels: int, projection: np.ndarray, bias: float, classifier: bool):
        self.size, self.channels, self.bias, self.classifier = size, channels, bias, classifier
        self.patch = size // GRID
        # Conv weight [K, 3, P, P]: the patch mean of projection[:, k] . x
        self.kernel = np.repeat(np.repeat(projection.T[:, :, None, None], self.patch, 2), self.patch, 3)
        self.kernel = (self.kernel / self.patch ** 2).astype(np.float32)

    def image_info(self, name: str = "image"):
        return helper.make_tensor_value_info(name, TensorProto.UINT8, ["batch", self.size, self.size, 3])


def start(spec: Spec, extra_inputs=(), target: bool = True) -> tuple[Builder, str, str, dict, str | None, list]:
    """A builder with the image normalised, the forward pass at the image and (a classifier's attribution graphs)
    the target's one-hot."""
    b = Builder()
    kernel = b.const(spec.kernel, "kernel")
    x = normalize(b, "image")
    at_image = forward(b, x, kernel, spec.channels, spec.patch, spec.bias)
    inputs = [spec.image_info(), *extra_inputs]
    onehot = None
    if spec.classifier and target:
        inputs.append(helper.make_tensor_value_info("target", TensorProto.INT64, ["batch"]))
        onehot = target_onehot(b, at_image["logits"], "target")
    return b, kernel, x, at_image, onehot, inputs


def out_info(name: str, *shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, ["batch", *shape])


def audit_graph(spec: Spec):
    b, kernel, x, out, _, inputs = start(spec)
    logit = selected_logit(b, out["logits"], None)
    b.op("Identity", [logit], out="logit")
    b.op("Sigmoid", [logit], out="score")
    b.op("Squeeze", [out["m"], b.ints([1], "axes")], out="risk_map")
    b.op("Squeeze", [minmax(b, upsample(b, out["m"], spec.patch), [1, 2, 3]), b.ints([1], "axes")], out="heatmap")
    outputs = [out_info("logit"), out_info("score"), out_info("risk_map", GRID, GRID),
               out_info("heatmap", spec.size, spec.size)]
    return b, inputs, outputs


def classify_graph(spec: Spec):
    b, kernel, x, out, _, inputs = start(spec, target=False)
    b.op("Identity", [out["logits"]], out="logits")
    b.op("Softmax", [out["logits"]], out="probs", axis=1)
    b.op("ArgMax", [out["logits"]], out="top_class", axis=1, keepdims=0)
    outputs = [out_info("logits", CLASSES), out_info("probs", CLASSES),
               out_info("top_class", dtype=TensorProto.INT64)]
    return b, inputs, outputs


def saliency_graph(spec: Spec):
    b, kernel, x, out, onehot, inputs = start(spec)
    grad = input_gradient(b, activation_gradient(b, out, spec.channels, onehot), kernel, spec.patch)
    b.op("Identity", [selected_logit(b, out["logits"], onehot)], out="logit")
    b.op("ReduceMax", [b.op("Abs", [grad])], out="saliency", axes=[1], keepdims=0)
    b.op("ReduceSum", [grad, b.ints([1], "axes")], out="gradient", keepdims=0)
    return b, inputs, [out_info("logit"), out_info("saliency", spec.size, spec.size),
                       out_info("gradient", spec.size, spec.size)]


def ig_graph(spec: Spec, steps: int, baseline_input: bool):
    b, kernel, x, out, onehot, inputs = start(spec, [spec.image_info("baseline")] if baseline_input else [])
    if baseline_input:
        reference = normalize(b, "baseline")
    else:  # black, normalised
        reference = b.const((-np.array(MEAN) / np.array(STD)).reshape(1, 3, 1, 1), "black")
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas = np.concatenate([(nodes + 1) / 2, [1.0, 0.0]])  # the quadrature points, then image and baseline
    points, size = len(alphas), spec.size
    difference = b.op("Sub", [x, reference], "difference")
    path = b.op("Add", [b.op("Unsqueeze", [reference, b.ints([1], "axes")]),
                        b.op("Mul", [b.const(alphas.reshape(1, -1, 1, 1, 1), "alphas"),
                                     b.op("Unsqueeze", [difference, b.ints([1], "axes")])])])
    path = b.op("Reshape", [path, b.ints([-1, 3, size, size])], "path")
    at_path = forward(b, path, kernel, spec.channels, spec.patch, spec.bias)
    path_onehot = repeat_each(b, onehot, points)
    grads = input_gradient(b, activation_gradient(b, at_path, spec.channels, path_onehot), kernel, spec.patch)
    grads = b.op("Reshape", [grads, b.ints([-1, points, 3, size, size])])
    grads = b.op("Slice", [grads, b.ints([0]), b.ints([steps]), b.ints([1])])
    averaged = b.op("ReduceSum", [b.op("Mul", [grads, b.const((weights / 2).reshape(1, -1, 1, 1, 1), "weights")]),
                                  b.ints([1], "axes")], keepdims=0)
    ig = b.op("ReduceSum", [b.op("Mul", [averaged, difference]), b.ints([1], "axes")], out="ig", keepdims=0)
    logits = b.op("Reshape", [selected_logit(b, at_path["logits"], path_onehot), b.ints([-1, points])])
    at_image = b.op("Gather", [logits, b.const(points - 2, "index", np.int64)], axis=1)
    at_baseline = b.op("Gather", [logits, b.const(points - 1, "index", np.int64)], axis=1)
    total = b.op("ReduceSum", [b.op("ReduceSum", [ig, b.ints([2], "axes")], keepdims=0), b.ints([1], "axes")],
                 keepdims=0)
    b.op("Sub", [total, b.op("Sub", [at_image, at_baseline])], out="delta")
    b.op("Identity", [at_image], out="logit")
    return b, inputs, [out_info("logit"), out_info("ig", size, size), out_info("delta")]


def smoothgrad_graph(spec: Spec):
    size = spec.size
    noise = helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["batch", "samples", 3, size, size])
    b, kernel, x, out, onehot, inputs = start(spec, [noise])
    spread = b.op("Sub", [b.op("ReduceMax", [x], axes=[1, 2, 3], keepdims=1),
                          b.op("ReduceMin", [x], axes=[1, 2, 3], keepdims=1)])
    spread = b.op("Unsqueeze", [b.op("Mul", [spread, b.const(NOISE_LEVEL, "level")]), b.ints([1], "axes")])
    image = b.op("Unsqueeze", [x, b.ints([1], "axes")])
    noisy = b.op("Concat", [image, b.op("Add", [image, b.op("Mul", [spread, "noise"])])], axis=1)
    batch = b.op("Slice", [b.op("Shape", [x]), b.ints([0]), b.ints([1]), b.ints([0])], "batch")
    copies = b.op("Slice", [b.op("Shape", [noisy]), b.ints([1]), b.ints([2]), b.ints([0])], "copies")
    at_noisy = forward(b, b.op("Reshape", [noisy, b.ints([-1, 3, size, size])]), kernel, spec.channels, spec.patch,
                       spec.bias)
    noisy_onehot = repeat_each(b, onehot, copies)
    grads = input_gradient(b, activation_gradient(b, at_noisy, spec.channels, noisy_onehot), kernel, spec.patch)
    grads = b.op("Reshape", [grads, b.op("Concat", [batch, b.ints([-1, 3, size, size])], axis=0)])
    grads = b.op("Slice", [grads, b.ints([1]), b.ints([np.iinfo(np.int64).max]), b.ints([1])])
    mean = b.op("ReduceMean", [b.op("Abs", [grads])], axes=[1], keepdims=0)
    b.op("ReduceMax", [mean], out="smoothgrad", axes=[1], keepdims=0)
    logits = b.op("Reshape", [selected_logit(b, at_noisy["logits"], noisy_onehot),
                              b.op("Concat", [batch, b.ints([-1])], axis=0)])
    b.op("Squeeze", [b.op("Slice", [logits, b.ints([0]), b.ints([1]), b.ints([1])]), b.ints([1], "axes")],
         out="logit")
    return b, inputs, [out_info("logit"), out_info("smoothgrad", size, size)]


def cam_graph(spec: Spec, plus_plus: bool):
    b, kernel, x, out, onehot, inputs = start(spec)
    activation, grad = out["activation"], activation_gradient(b, out, spec.channels, onehot)
    if plus_plus:  # Chattopadhyay et al.'s closed-form alpha, as in export/attribution/cam.py
        squared = b.op("Mul", [grad, grad])
        cubed = b.op("Mul", [squared, grad])
        total = b.op("ReduceSum", [activation, b.ints([2, 3], "axes")], keepdims=1)
        nonzero = b.op("Not", [b.op("Equal", [grad, b.const(0.0, "zero")])])
        denominator = b.op("Add", [b.op("Mul", [squared, b.const(2.0, "two")]), b.op("Mul", [total, cubed])])
        alpha = b.op("Div", [squared, b.op("Where", [nonzero, denominator, b.const(1.0, "one")])])
        alpha = b.op("Where", [nonzero, alpha, b.const(0.0, "zero")])
        weights = b.op("ReduceSum", [b.op("Mul", [alpha, b.op("Relu", [grad])]), b.ints([2, 3], "axes")],
                       keepdims=1)
    else:
        weights = b.op("ReduceMean", [grad], axes=[2, 3], keepdims=1)
    raw = b.op("Relu", [b.op("ReduceSum", [b.op("Mul", [weights, activation]), b.ints([1], "axes")], keepdims=1)])
    b.op("Squeeze", [raw, b.ints([1], "axes")], out="cam_raw")
    b.op("Squeeze", [minmax(b, upsample(b, raw, spec.patch), [1, 2, 3]), b.ints([1], "axes")], out="cam")
    b.op("Identity", [selected_logit(b, out["logits"], onehot)], out="logit")
    size = spec.size
    return b, inputs, [out_info("logit"), out_info("cam", size, size), out_info("cam_raw", GRID, GRID)]


# --- files -----------------------------------------------------------------------------------------------------

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tensor_specs(infos, roles: bool) -> list[dict]:
    dtypes = {TensorProto.UINT8: "uint8", TensorProto.FLOAT: "float32", TensorProto.INT64: "int64"}
    specs = []
    for info in infos:
        dims = [d.dim_param or d.dim_value for d in info.type.tensor_type.shape.dim]
        spec = {"name": info.name, "dtype": dtypes[info.type.tensor_type.elem_type], "shape": dims}
        if roles:
            spec["role"] = info.name
        specs.append(spec)
    return specs


def save_graph(folder: Path, key: str, file: str, built, kernel: np.ndarray, metadata: dict) -> dict:
    """Saves the graph with its kernel in ``weights.bin`` (external data at offset 0, as the exporter stores weights
    of 1 kB and more) and returns its manifest entry (without the method's facts)."""
    b, inputs, outputs = built
    graph = helper.make_graph(b.nodes, key, inputs, outputs, b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="auditor-rt",
                              producer_version="tiny")
    model.ir_version = IR_VERSION
    for name, value in {**metadata, "auditor_rt.graph": key}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = name, value
    onnx.checker.check_model(model)
    tensor = next(t for t in model.graph.initializer if t.name.startswith("kernel"))
    assert numpy_helper.to_array(tensor).tobytes() == kernel.tobytes()
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for name, value in (("location", WEIGHTS_FILE), ("offset", "0"), ("length", str(kernel.nbytes))):
        item = tensor.external_data.add()
        item.key, item.value = name, value
    path = folder / file
    path.write_bytes(model.SerializeToString())
    return {"file": file, "sha256": sha256(path), "kind": key if key in ("audit", "classify") else "attribution",
            "inputs": tensor_specs(inputs, roles=True), "outputs": tensor_specs(outputs, roles=False),
            "opset": OPSET}


def attribution_facts(method: str, params: dict, per_input: int, signed: bool, map_output: str, raw_output: str,
                      classes: int | None) -> dict:
    facts = {"method": method, "params": params, "images_per_input": per_input, "signed": signed,
             "map_output": map_output, "raw_output": raw_output}
    return {**facts, "num_classes": classes} if classes else facts


def write_artifact(folder: Path, spec: Spec, head: dict | None, graphs: list, model: dict, decision: dict,
                   extra: dict) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / WEIGHTS_FILE).write_bytes(spec.kernel.tobytes())
    preprocess = {"input_size": [spec.size, spec.size], "mean": list(MEAN), "std": list(STD), "color": "RGB",
                  "layout": "NHWC", "dtype": "uint8", "resize": "stretch"}
    manifest = {"schema_version": 1, "name": folder.name, "created": CREATED, "model": model,
                **({"head": head} if head else {}), "preprocess": preprocess, "decision": decision, **extra,
                "versions": {"onnx": "tiny graphs by tests/runtime/tiny/make_tiny_artifacts.py",
                             "auditor_rt": "0.1.0"},
                "data_files": {WEIGHTS_FILE: sha256(folder / WEIGHTS_FILE)}, "graphs": {}}
    metadata = {"auditor_rt.schema_version": "1", "auditor_rt.backbone": model["backbone"],
                "auditor_rt.preprocess": json.dumps(preprocess),
                "auditor_rt.threshold": json.dumps(decision["threshold"])}
    for key, file, built, facts in graphs:
        entry = save_graph(folder, key, file, built, spec.kernel, metadata)
        manifest["graphs"][key] = {**entry, **facts}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def runner_graphs(folder: Path) -> None:
    """The two 8 x 8 graphs of ``runner/``, and a manifest as ``Manifest.write`` writes it."""
    size = 8
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", size, size, 3])
    audit = helper.make_graph([
        helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["inv255"], value=helper.make_tensor("c", TensorProto.FLOAT, [], [1 / 255])),
        helper.make_node("Mul", ["image_f", "inv255"], ["scaled"]),
        helper.make_node("ReduceMean", ["scaled"], ["heatmap"], axes=[3], keepdims=0),
        helper.make_node("ReduceMean", ["heatmap"], ["score"], axes=[1, 2], keepdims=0),
    ], "audit", [image], [out_info("score"), out_info("heatmap", size, size)])
    explain = helper.make_graph([
        helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["image_f"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Cast", ["target"], ["target_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["mean", "target_f"], ["score"]),
    ], "explain", [image, helper.make_tensor_value_info("target", TensorProto.INT64, ["batch"])], [out_info("score")])
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    graphs = {}
    for key, graph in (("audit", audit), ("explain", explain)):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        path = folder / f"{key}.onnx"
        path.write_bytes(model.SerializeToString())
        graphs[key] = {"file": path.name, "sha256": sha256(path), "kind": key,
                       "inputs": tensor_specs(graph.input, roles=False),
                       "outputs": tensor_specs(graph.output, roles=False), "opset": OPSET}
    manifest = {"schema_version": 1, "name": "tiny",
                "preprocess": {"input_size": [size, size], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                               "color": "RGB", "layout": "NHWC", "dtype": "uint8", "resize": "stretch"},
                "decision": {"threshold": 0.4}, "graphs": graphs, "backbone": {"name": "none"}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def main(out: Path = HERE) -> None:
    """Writes the four artifact folders under ``out`` (this folder by default)."""
    risk = Spec(RISK_SIZE, 1, np.array(REDNESS).reshape(3, 1), BIAS, classifier=False)
    risk_model = {"backbone": "tiny_redness", "weights": {"source": "closed form", "sha256": None, "random": False},
                  "feature_channels": 1, "feature_grid": [GRID, GRID]}
    head = {"channels": 1, "pooling": "logsumexp", "temperature": TEMPERATURE, "gain": GAIN, "bias": BIAS}
    decision = {"threshold": THRESHOLD, "chosen_on": "fixed", "criterion": "tiny test model"}
    extra = {"training": {"metrics": {}, "checkpoint": None, "data": None},
             "heatmap": {"absolute_scale": {"risk_map_max": 2.5, "chosen_on": "fixed", "percentile": 100.0,
                                            "images": 0}}}
    audit = ("audit", "audit.onnx", audit_graph(risk), {})
    write_artifact(out / "risk", risk, head, [audit], risk_model, decision, extra)

    ig_params = {"steps": IG_STEPS, "baseline": "black", "blur_sigma": 8.0, "rule": "gauss-legendre"}
    sg_params = {"samples": SMOOTHGRAD_SAMPLES, "noise_level": NOISE_LEVEL, "noise": "unit normal, an input"}
    write_artifact(out / "risk_explain", risk, head, [
        audit,
        ("saliency", "saliency.onnx", saliency_graph(risk),
         attribution_facts("saliency", {}, 1, False, "saliency", "saliency", None)),
        ("ig", "ig.onnx", ig_graph(risk, IG_STEPS, baseline_input=False),
         attribution_facts("ig", ig_params, IG_STEPS + 2, True, "ig", "ig", None)),
        ("smoothgrad", "smoothgrad.onnx", smoothgrad_graph(risk),
         attribution_facts("smoothgrad", sg_params, SMOOTHGRAD_SAMPLES + 1, False, "smoothgrad", "smoothgrad", None)),
        ("gradcam", "gradcam.onnx", cam_graph(risk, plus_plus=False),
         attribution_facts("gradcam", {"stage": "patches"}, 1, False, "cam", "cam_raw", None)),
        ("gradcam++", "gradcam_plus_plus.onnx", cam_graph(risk, plus_plus=True),
         attribution_facts("gradcam++", {"stage": "patches"}, 1, False, "cam", "cam_raw", None)),
    ], risk_model, decision, extra)

    classifier = Spec(CLASSIFIER_SIZE, CLASSES, np.eye(3), 0.0, classifier=True)
    clf_model = {"kind": "classifier", "backbone": "tiny_rgb", "num_classes": CLASSES,
                 "weights": {"source": "closed form", "sha256": None, "random": False}}
    clf_ig = {"steps": CLASSIFIER_IG_STEPS, "baseline": "input", "blur_sigma": 8.0, "rule": "gauss-legendre"}
    write_artifact(out / "classifier", classifier, None, [
        ("classify", "classify.onnx", classify_graph(classifier), {}),
        ("saliency", "saliency.onnx", saliency_graph(classifier),
         attribution_facts("saliency", {}, 1, False, "saliency", "saliency", CLASSES)),
        ("ig", "ig.onnx", ig_graph(classifier, CLASSIFIER_IG_STEPS, baseline_input=True),
         attribution_facts("ig", clf_ig, CLASSIFIER_IG_STEPS + 2, True, "ig", "ig", CLASSES)),
        ("gradcam", "gradcam.onnx", cam_graph(classifier, plus_plus=False),
         attribution_facts("gradcam", {"stage": "patches"}, 1, False, "cam", "cam_raw", CLASSES)),
    ], clf_model, {"threshold": None, "rule": "argmax over classes"}, {})
    runner_graphs(out / "runner")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.parent != out)
    print(f"wrote risk, risk_explain, classifier and runner in {out}: {total} bytes")


if __name__ == "__main__":
    main()
