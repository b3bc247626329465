"""ONNX rewrites after export: same values, ORT-friendlier ops."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from auditor_rt.export.conversion.onnx_passes import (blocked_layout_after_conv_transpose, fold_channel_scales,
                                           max_pool_offsets_from_range, remove_unused, step_masks_as_hard_sigmoid)


def mask_graph(threshold: float, extra_consumer: bool = False) -> onnx.ModelProto:
    nodes = [helper.make_node("Greater", ["y", "t"], ["above"]),
             helper.make_node("Cast", ["above"], ["mask"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["g", "mask"], ["out"])]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None])]
    if extra_consumer:
        nodes.append(helper.make_node("Not", ["above"], ["below"]))
        outputs.append(helper.make_tensor_value_info("below", TensorProto.BOOL, [None]))
    graph = helper.make_graph(nodes, "mask", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None])
                                              for n in ("y", "g")], outputs,
                              initializer=[numpy_helper.from_array(np.array(threshold, np.float32), "t")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def run(model: onnx.ModelProto, y: np.ndarray, g: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["out"], {"y": y, "g": g})[0]


def test_relu_mask_becomes_hard_sigmoid_with_the_same_values():
    tiny = np.finfo(np.float32).tiny  # the smallest normal float32, 2**-126
    y = np.array([0.0, -0.0, -1.0, -tiny, tiny, 2 * tiny, 1e-30, 0.5, 1.0, 3e38, np.inf, -np.inf], np.float32)
    g = np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
    model = mask_graph(0.0)
    before = run(model, y, g)
    assert step_masks_as_hard_sigmoid(model) == 1
    assert [n.op_type for n in model.graph.node] == ["HardSigmoid", "Mul"]
    onnx.checker.check_model(model)
    np.testing.assert_array_equal(run(model, y, g), before)


def test_other_thresholds_and_shared_comparisons_are_left_alone():
    for model in (mask_graph(0.5), mask_graph(0.0, extra_consumer=True)):
        ops = [n.op_type for n in model.graph.node]
        assert step_masks_as_hard_sigmoid(model) == 0
        assert [n.op_type for n in model.graph.node] == ops


# ---- per-channel scales -----------------------------------------------------------------------------------------

RNG = np.random.default_rng(7)
X = RNG.standard_normal((2, 16, 6, 6)).astype(np.float32)
SCALE = (RNG.uniform(0.5, 2.0, 16) * RNG.choice([-1, 1], 16)).astype(np.float32)


def scale_graph(op: str, consumer: str, channels: int = 16) -> onnx.ModelProto:
    """x -> op(x, s[1, C, 1, 1]) -> consumer, with shapes known (as the exporter writes them)."""
    weights = {"Conv": RNG.standard_normal((8, channels, 3, 3)),
               "ConvTranspose": RNG.standard_normal((channels, 8, 3, 3)),
               "Grouped": RNG.standard_normal((channels, 1, 3, 3))}
    nodes = [helper.make_node(op, ["x", "s"], ["scaled"])]
    initializers = [numpy_helper.from_array(SCALE[:channels].reshape(1, channels, 1, 1), "s")]
    if consumer in weights:
        initializers.append(numpy_helper.from_array(weights[consumer].astype(np.float32), "w"))
        kind = "Conv" if consumer == "Grouped" else consumer
        extra = {"group": channels} if consumer == "Grouped" else {}
        stride = 2 if consumer == "ConvTranspose" else 1
        nodes.append(helper.make_node(kind, ["scaled", "w"], ["out"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                      strides=[stride, stride], **extra))
    else:  # "Relu", or "shared": a Relu and the graph output itself
        nodes.append(helper.make_node("Relu", ["scaled"], ["out"]))
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None] * 4)]
    if consumer == "shared":
        outputs.append(helper.make_tensor_value_info("scaled", TensorProto.FLOAT, [2, channels, 6, 6]))
    shape = [2, channels, 6, 6]
    graph = helper.make_graph(nodes, "scale", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              outputs, initializer=initializers,
                              value_info=[helper.make_tensor_value_info("scaled", TensorProto.FLOAT, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def outputs_of(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


@pytest.mark.parametrize("op", ["Mul", "Div"])
@pytest.mark.parametrize("consumer", ["Conv", "ConvTranspose"])
def test_channel_scale_folds_into_the_convolution_it_feeds(op, consumer):
    model = scale_graph(op, consumer)
    before = outputs_of(model, X)
    assert fold_channel_scales(model) == (1, 0)
    onnx.checker.check_model(model)
    conv = next(n for n in model.graph.node if n.op_type == consumer)
    assert conv.input[0] == "x"  # the convolution reads the unscaled input; its weight carries the scale
    np.testing.assert_allclose(outputs_of(model, X)[0], before[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("consumer", ["Relu", "shared", "Grouped"])
def test_channel_scale_elsewhere_becomes_an_exact_batch_norm(consumer):
    model = scale_graph("Mul", consumer)
    before = outputs_of(model, X)
    assert fold_channel_scales(model) == (0, 1)
    onnx.checker.check_model(model)
    assert "Mul" not in [n.op_type for n in model.graph.node]
    for after, expected in zip(outputs_of(model, X), before):
        np.testing.assert_array_equal(after, expected)


def test_scales_that_are_not_per_channel_are_left_alone():
    for shape in [(1, 1, 1, 1), (1, 16, 6, 6), (16,)]:
        model = scale_graph("Mul", "Relu")
        model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones(shape, np.float32), "s"))
        assert fold_channel_scales(model) == (0, 0)
    model = scale_graph("Div", "Relu")
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.zeros((1, 16, 1, 1), np.float32), "s"))
    assert fold_channel_scales(model) == (0, 0)  # a division by zero stays what it was


# ---- max-pool indices -------------------------------------------------------------------------------------------

class PoolIndices(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.max_pool2d(x, 3, 2, 1, return_indices=True)


def test_max_pool_plane_offsets_come_from_a_range_not_a_second_pool(tmp_path):
    """On the exporter's own pattern: the same per-plane indices as PyTorch, without the 1x1 pool."""
    x = torch.relu(torch.randn(2, 16, 12, 12))
    x[1] = 1.0  # a uniform plane: every window ties, the first position wins
    path = tmp_path / "pool.onnx"
    torch.onnx.export(PoolIndices().eval(), (x,), str(path), dynamo=True, input_names=["x"], output_names=["y", "i"],
                      dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}}, verbose=False)
    model = onnx.load(str(path))
    assert sum(n.op_type == "MaxPool" for n in model.graph.node) == 2
    assert max_pool_offsets_from_range(model) == 1
    remove_unused(model)
    onnx.checker.check_model(model)
    assert sum(n.op_type == "MaxPool" for n in model.graph.node) == 1
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (x, torch.relu(torch.randn(3, 16, 12, 12))):
        values, indices = session.run(None, {"x": batch.numpy()})
        expected_values, expected_indices = PoolIndices()(batch)
        np.testing.assert_array_equal(indices, expected_indices.numpy())
        np.testing.assert_array_equal(values, expected_values.numpy())


# ---- ConvTranspose back into the blocked layout ------------------------------------------------------------------

@pytest.mark.parametrize("channels, added", [(16, 1), (12, 0)])
def test_conv_transpose_output_gets_an_identity_pool(channels, added):
    weight = RNG.standard_normal((8, channels, 3, 3)).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["out"], kernel_shape=[3, 3], strides=[2, 2],
                            pads=[1, 1, 1, 1], output_padding=[1, 1])
    graph = helper.make_graph([node], "ct", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 5, 5])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, channels, 10, 10])],
                              initializer=[numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    x = RNG.standard_normal((2, 8, 5, 5)).astype(np.float32)
    before = outputs_of(model, x)[0]
    assert blocked_layout_after_conv_transpose(model) == added
    onnx.checker.check_model(model)
    assert [o.name for o in model.graph.output] == ["out"]
    np.testing.assert_array_equal(outputs_of(model, x)[0], before)


def test_an_exported_saliency_graph_went_through_every_pass(explain_artifact_dir):
    """test_resnet's saliency graph has each pattern: BN's backward scales before convolutions, a strided
    convolution's ConvTranspose, the stem's max-pool (its values against autograd: test_attribution_methods.py)."""
    model = onnx.load(str(explain_artifact_dir / "saliency.onnx"), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MaxPool") == 1 and "Range" in ops  # the 1x1 offset pool is gone
    assert "HardSigmoid" in ops  # the ReLU masks
    transposed = [n.output[0] for n in model.graph.node if n.op_type == "ConvTranspose"]
    pooled = {n.input[0] for n in model.graph.node if n.op_type == "AveragePool"}
    assert transposed and set(transposed) <= pooled
    conv_data = {n.input[0] for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")}
    channel_constants = {t.name for t in model.graph.initializer
                         if len(t.dims) == 4 and t.dims[0] == 1 and t.dims[1] > 1 and list(t.dims[2:]) == [1, 1]}
    scaled_inputs = [n.output[0] for n in model.graph.node
                     if n.op_type in ("Mul", "Div") and channel_constants & set(n.input) and n.output[0] in conv_data]
    assert not scaled_inputs  # folded into the weights
    assert any(n.name.endswith("_into_weight") for n in model.graph.node)
