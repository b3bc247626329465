"""The ONNX passes for --target tensorrt keep every value and leave nothing TensorRT's parser refuses."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from auditor_rt.export.conversion.tensorrt_passes import optimize_for_tensorrt
from auditor_rt.export.tensorrt_compat import tensorrt_findings


def run(model, feed):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


def layer_norm_model(axis: int):
    """Y, Mean and InvStdDev of a LayerNormalization, each used downstream (as torch's backward uses them)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 6, 8])
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("y", "m2", "s2")]
    scale = numpy_helper.from_array(np.linspace(0.5, 1.5, 8 if axis == -1 else 6 * 8).reshape(
        [8] if axis == -1 else [6, 8]).astype(np.float32), "scale")
    nodes = [helper.make_node("LayerNormalization", ["x", "scale"], ["y", "mean", "invstd"], axis=axis,
                              epsilon=1e-3, name="ln"),
             helper.make_node("Mul", ["mean", "mean"], ["m2"]), helper.make_node("Mul", ["invstd", "invstd"], ["s2"])]
    graph = helper.make_graph(nodes, "ln", [x], outputs, [scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize("axis", [-1, 2])
def test_layer_norm_statistics_are_recomputed_with_the_same_values(axis):
    model = layer_norm_model(axis)
    feed = {"x": np.random.default_rng(axis + 5).standard_normal((2, 5, 6, 8)).astype(np.float32) * 3 + 1}
    before = run(model, feed)
    assert tensorrt_findings(model)  # the LayerNormalization's three outputs
    assert optimize_for_tensorrt(model)["layer_norm_statistics"] == 1
    after = run(model, feed)
    for name in ("y", "m2", "s2"):
        np.testing.assert_allclose(after[name], before[name], rtol=2e-6, atol=1e-6)
    assert [len(n.output) for n in model.graph.node if n.op_type == "LayerNormalization"] == [1]
    assert tensorrt_findings(model) == []


def test_a_default_scatter_reduction_is_dropped_with_the_same_values():
    data = helper.make_tensor_value_info("data", TensorProto.FLOAT, [4, 3])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, 3])
    indices = numpy_helper.from_array(np.array([[1], [3]], np.int64), "indices")
    updates = numpy_helper.from_array(np.ones((2, 3), np.float32) * 7, "updates")
    node = helper.make_node("ScatterND", ["data", "indices", "updates"], ["out"], reduction="none", name="scatter")
    model = helper.make_model(helper.make_graph([node], "s", [data], [out], [indices, updates]),
                              opset_imports=[helper.make_opsetid("", 18)])
    feed = {"data": np.arange(12, dtype=np.float32).reshape(4, 3)}
    before = run(model, feed)
    assert [f.op_type for f in tensorrt_findings(model)] == ["ScatterND"]
    assert optimize_for_tensorrt(model)["default_reductions"] == 1
    np.testing.assert_array_equal(run(model, feed)["out"], before["out"])
    assert tensorrt_findings(model) == []
