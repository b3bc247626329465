"""ONNX rewrites after export: same values, ORT-friendlier ops."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from auditor_rt.export.onnx_passes import step_masks_as_hard_sigmoid


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
