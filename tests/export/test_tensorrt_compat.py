"""The TensorRT compatibility checker: one tiny onnx.helper graph per rule, clean graphs with no finding, and the
exported attribution graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from auditor_rt.export.tensorrt_compat import ERROR, NOTE, WARNING, format_findings, main, summarize, tensorrt_findings

F = TensorProto.FLOAT


def model(nodes, inputs, outputs, initializers=(), opset=18, **kwargs):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], **kwargs)


def tensor(name, dtype=F, shape=(1, 3, 8, 8)):
    return helper.make_tensor_value_info(name, dtype, None if shape is None else list(shape))


def ints(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def only(findings):
    assert len(findings) == 1, format_findings(findings)
    return findings[0]


def test_maxpool_with_indices_is_an_error():
    pool = helper.make_node("MaxPool", ["x"], ["y", "idx"], name="pool", kernel_shape=[2, 2])
    found = only(tensorrt_findings(model([pool], [tensor("x")], [tensor("y"), tensor("idx", TensorProto.INT64)])))
    assert (found.node, found.op_type, found.severity) == ("pool", "MaxPool", ERROR)
    assert "Indices" in found.reason


def test_maxpool_with_dilations_is_an_error():
    pool = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2])
    assert "dilations" in only(tensorrt_findings(model([pool], [tensor("x")], [tensor("y")]))).reason


def test_scatter_elements_with_add_needs_a_plugin():
    scatter = helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], name="scatter", axis=0, reduction="add")
    m = model([scatter], [tensor("x"), tensor("i", TensorProto.INT64), tensor("u")], [tensor("y")])
    found = only(tensorrt_findings(m))
    assert (found.op_type, found.severity) == ("ScatterElements", WARNING)
    assert "plugin" in found.reason and found.detail == "reduction='add'"


def test_reduce_sum_with_computed_axes_is_an_error():
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Slice", ["shape", "zero", "one"], ["axes"]),
             helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="sum")]
    m = model(nodes, [tensor("x")], [tensor("y", shape=())], [ints("zero", [2]), ints("one", [3])])
    found = only(tensorrt_findings(m))
    assert (found.node, found.op_type, found.severity) == ("sum", "ReduceSum", ERROR)
    assert "axes" in found.reason and found.detail == "axes: axes"


def test_an_unsupported_op_is_an_error():
    unique = helper.make_node("Unique", ["x"], ["y"], name="unique")
    found = only(tensorrt_findings(model([unique], [tensor("x", shape=(5,))], [tensor("y", shape=(None,))])))
    assert (found.node, found.op_type, found.severity) == ("unique", "Unique", ERROR)


def test_layer_norm_with_mean_and_inv_std_outputs_is_an_error():
    norm = helper.make_node("LayerNormalization", ["x", "scale"], ["y", "mean", "inv_std"], name="ln", axis=-1)
    m = model([norm], [tensor("x", shape=(2, 4))], [tensor("y", shape=(2, 4)), tensor("mean", shape=(2, 1)),
                                                     tensor("inv_std", shape=(2, 1))],
              [numpy_helper.from_array(np.ones(4, np.float32), "scale")])
    found = only(tensorrt_findings(m))
    assert (found.op_type, found.severity) == ("LayerNormalization", ERROR)
    assert "mean" in found.detail and "inv_std" in found.detail


def test_cubic_resize_is_outside_the_support_matrix():
    resize = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="cubic")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    found = only(tensorrt_findings(model([resize], [tensor("x")], [tensor("y", shape=(1, 3, 16, 16))], [scales])))
    assert (found.node, found.op_type, found.severity) == ("up", "Resize", WARNING)
    assert "cubic" in found.reason


def test_antialiased_resize_is_an_error():
    resize = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear", antialias=1)
    scales = numpy_helper.from_array(np.array([1, 1, 0.5, 0.5], np.float32), "scales")
    found = only(tensorrt_findings(model([resize], [tensor("x")], [tensor("y", shape=(1, 3, 4, 4))], [scales])))
    assert found.severity == ERROR and "antialias" in found.reason


def test_clean_graphs_have_no_finding():
    pool = helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2])
    conv = helper.make_node("Conv", ["p", "w", "b"], ["c"], pads=[1, 1, 1, 1])
    constant = helper.make_node("Constant", [], ["axes_c"], value=ints("v", [1]))
    sums = [helper.make_node("ReduceSum", ["c", "axes_i"], ["s1"], keepdims=1),  # axes from an initializer
            helper.make_node("ReduceSum", ["s1", "axes_c"], ["s2"], keepdims=1)]  # axes from a Constant node
    weights = [numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w"),
               numpy_helper.from_array(np.zeros(4, np.float32), "b"), ints("axes_i", [2, 3])]
    m = model([pool, conv, constant, *sums], [tensor("x")], [tensor("s2", shape=(1, 1, 1, 1))], weights)
    onnx.checker.check_model(m, full_check=True)
    assert tensorrt_findings(m) == []


def test_conv_with_run_time_weights_is_accepted_by_the_10x_parser():
    conv = helper.make_node("Conv", ["x", "w"], ["y"])
    assert tensorrt_findings(model([conv], [tensor("x"), tensor("w", shape=(4, 3, 1, 1))],
                                   [tensor("y", shape=(1, 4, 8, 8))])) == []


def test_ops_inside_an_if_branch_are_checked_with_the_outer_constants():
    reduce = helper.make_node("ReduceSum", ["x", "axes"], ["r"], name="inner_sum")  # axes: an outer initializer
    unique = helper.make_node("Unique", ["x"], ["u"], name="inner_unique")
    then = helper.make_graph([reduce], "then", [], [tensor("r", shape=None)])
    other = helper.make_graph([unique], "else", [], [tensor("u", shape=None)])
    branch = helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then, else_branch=other)
    m = model([branch], [tensor("x"), tensor("cond", TensorProto.BOOL, ())], [tensor("y", shape=None)],
              [ints("axes", [1])])
    found = only(tensorrt_findings(m))
    assert (found.node, found.op_type, found.graph) == ("inner_unique", "Unique", "branch.else_branch")


def test_a_model_local_function_body_is_checked():
    body = [helper.make_node("Unique", ["a"], ["b"], name="inside")]
    function = helper.make_function("local", "MyOp", ["a"], ["b"], body, [helper.make_opsetid("", 18)])
    call = helper.make_node("MyOp", ["x"], ["y"], domain="local")
    m = model([call], [tensor("x", shape=(4,))], [tensor("y", shape=None)], functions=[function])
    m.opset_import.append(helper.make_opsetid("local", 1))
    found = only(tensorrt_findings(m))
    assert (found.node, found.op_type, found.graph) == ("inside", "Unique", "function MyOp")


def test_a_custom_domain_op_without_importer_is_an_error_unless_a_plugin_is_declared():
    node = helper.make_node("FusedConv", ["x"], ["y"], name="fused", domain="com.microsoft")
    m = model([node], [tensor("x")], [tensor("y")])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    found = only(tensorrt_findings(m))
    assert (found.op_type, found.severity, found.detail) == ("FusedConv", ERROR, "domain 'com.microsoft'")
    assert tensorrt_findings(m, plugins=["FusedConv"]) == []


def test_a_standard_op_in_another_domain_is_imported_as_the_standard_op():
    node = helper.make_node("Relu", ["x"], ["y"], domain="com.example")
    m = model([node], [tensor("x")], [tensor("y")])
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    assert only(tensorrt_findings(m)).severity == WARNING


def test_double_is_a_note_and_an_inner_uint8_an_error():
    nodes = [helper.make_node("Cast", ["x"], ["d"], name="to_double", to=TensorProto.DOUBLE),
             helper.make_node("Cast", ["d"], ["b"], name="to_bytes", to=TensorProto.UINT8),
             helper.make_node("Cast", ["b"], ["y"], name="to_float", to=F)]
    findings = tensorrt_findings(model(nodes, [tensor("x")], [tensor("y")]))
    assert {(f.node, f.severity) for f in findings} == {("to_double", NOTE), ("to_bytes", ERROR)}


def test_uint8_graph_input_and_output_are_allowed():
    nodes = [helper.make_node("Cast", ["x"], ["f"], to=F), helper.make_node("Cast", ["f"], ["y"], to=TensorProto.UINT8)]
    assert tensorrt_findings(model(nodes, [tensor("x", TensorProto.UINT8)], [tensor("y", TensorProto.UINT8)])) == []


def test_einsum_with_uppercase_letters_and_topk_over_the_limit():
    einsum = helper.make_node("Einsum", ["a", "b"], ["e"], name="ein", equation="Ij,jk->Ik")
    topk = helper.make_node("TopK", ["v", "k"], ["vals", "idx"], name="top")
    m = model([einsum, topk], [tensor("a", shape=(2, 3)), tensor("b", shape=(3, 2)), tensor("v", shape=(5000,))],
              [tensor("e", shape=(2, 2)), tensor("vals", shape=(4000,)), tensor("idx", TensorProto.INT64, (4000,))],
              [ints("k", [4000])])
    assert {(f.node, f.severity) for f in tensorrt_findings(m)} == {("ein", ERROR), ("top", ERROR)}


def test_a_path_with_external_data_is_checked_without_reading_the_weights(tmp_path):
    pool = helper.make_node("MaxPool", ["c"], ["y", "idx"], kernel_shape=[2, 2])
    conv = helper.make_node("Conv", ["x", "w"], ["c"])
    m = model([conv, pool], [tensor("x")], [tensor("y", shape=None), tensor("idx", TensorProto.INT64, None)],
              [numpy_helper.from_array(np.zeros((3, 3, 3, 3), np.float32), "w")])
    onnx.save(m, tmp_path / "g.onnx", save_as_external_data=True, location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()  # the checker must not need the bytes
    assert [f.op_type for f in tensorrt_findings(tmp_path / "g.onnx")] == ["MaxPool"]


def test_summary_and_format_and_entry_point(tmp_path, capsys):
    pools = [helper.make_node("MaxPool", ["x"], [f"y{i}", f"i{i}"], name=f"pool{i}", kernel_shape=[2, 2])
             for i in range(2)]
    outputs = [tensor(f"{k}{i}", t, None) for i in range(2) for k, t in (("y", F), ("i", TensorProto.INT64))]
    m = model(pools, [tensor("x")], outputs)
    findings = tensorrt_findings(m)
    assert summarize(findings) == {"error MaxPool: the Indices output is not supported": 2}
    text = format_findings(findings)
    assert "pool0 (MaxPool)" in text and "2 finding(s)" in text
    onnx.save(m, tmp_path / "bad.onnx")
    onnx.save(model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x")], [tensor("y")]), tmp_path / "ok.onnx")
    assert main([str(tmp_path / "ok.onnx")]) == 0
    assert main([str(tmp_path / "ok.onnx"), str(tmp_path / "bad.onnx")]) == 1
    assert "pool1 (MaxPool)" in capsys.readouterr().out
    assert main([]) == 2


@pytest.mark.parametrize("method", ["saliency", "ig", "smoothgrad", "gradcam", "gradcam++"])
def test_the_checker_finds_exactly_the_max_pools_with_indices(explain_artifact_dir, method):
    """The tiny resnet exported for ONNX Runtime (the default): its input-gradient graphs route the max pool's
    gradient through MaxPool's Indices output, which TensorRT refuses; the checker reports exactly those nodes.
    (Exported with --target tensorrt they have none: tests/export/test_tensorrt_target.py.)"""
    from auditor_rt.runtime.artifact import Artifact

    path = explain_artifact_dir / Artifact(explain_artifact_dir).graph(method).file
    graph = onnx.load(str(path), load_external_data=False).graph
    with_indices = {n.name for n in graph.node if n.op_type == "MaxPool" and len(n.output) > 1}
    findings = [f for f in tensorrt_findings(path) if f.op_type == "MaxPool"]
    assert {f.node for f in findings} == with_indices
    assert bool(findings) == (method in ("saliency", "ig", "smoothgrad")), format_findings(findings)
