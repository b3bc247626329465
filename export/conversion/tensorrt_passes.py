"""Rewrites of exported ONNX graphs into forms that TensorRT's ONNX parser builds, with the same values. They run
for ``--target tensorrt`` in place of ``onnx_passes.optimize_for_onnxruntime``, whose forms are tuned for ONNX
Runtime's CPU provider (one of them, the ReLU mask as ``HardSigmoid`` with alpha 2**126, would overflow in FP16).

- ``drop_default_reductions``: the exporter writes ``reduction="none"`` on ScatterND; TensorRT's ScatterND importer
  refuses any ``reduction`` attribute (onnx-tensorrt 10.1, onnxOpImporters.cpp: "Attribute reduction is not
  supported"), and ScatterElements with one goes through a plugin. "none" is the default: dropping it changes
  nothing.
- ``layer_norm_statistics_recomputed``: torch's layer-norm backward reads the forward's saved mean and 1/std, which
  the exporter takes from LayerNormalization's Mean and InvStdDev outputs; TensorRT builds only its first output
  (docs/operators.md). The two are recomputed from the input as ReduceMean and 1/sqrt(var + epsilon), in FP32 like
  the operator's stash_type, and the LayerNormalization keeps its Y output alone.
"""

from __future__ import annotations

import numpy as np

from auditor_rt.export.conversion.onnx_passes import GraphIndex, _attribute, _replace_nodes, remove_unused


def drop_default_reductions(model) -> int:
    """Remove ``reduction="none"`` from ScatterND and ScatterElements nodes; returns how many."""
    dropped = 0
    for node in model.graph.node:
        if node.op_type in ("ScatterND", "ScatterElements") and _attribute(node, "reduction") in (b"none", "none"):
            kept = [attribute for attribute in node.attribute if attribute.name != "reduction"]
            del node.attribute[:]
            node.attribute.extend(kept)
            dropped += 1
    return dropped


def layer_norm_statistics_recomputed(model) -> int:
    """LayerNormalization nodes whose Mean or InvStdDev output is used get them from ordinary ops instead; returns
    how many. A node whose input rank is unknown is left as it is (the static check then reports it)."""
    from onnx import TensorProto, helper

    index = GraphIndex(model)
    nodes, rewritten = [], 0
    for node in index.nodes:
        nodes.append(node)
        if node.op_type != "LayerNormalization" or len(node.output) < 2:
            continue
        extra = [name for name in node.output[1:] if name and index.uses(name)]
        rank = len(index.dims.get(node.input[0]) or [])
        if not extra:  # declared but unused: the parser counts declared outputs
            del node.output[1:]
            rewritten += 1
            continue
        if not rank:
            continue
        axis = int(_attribute(node, "axis", -1)) % rank
        epsilon = float(_attribute(node, "epsilon", 1e-5))
        axes = index.add_initializer(np.arange(axis, rank, dtype=np.int64), f"{node.name}_stat_axes")
        eps = index.add_initializer(np.array(epsilon, np.float32), f"{node.name}_epsilon")
        name = {role: index.fresh(f"{node.name}_{role}") for role in
                ("x", "mean", "centered", "squared", "variance", "shifted", "std", "invstd")}
        mean_out = node.output[1] if len(node.output) > 1 and node.output[1] else name["mean"]
        invstd_out = node.output[2] if len(node.output) > 2 and node.output[2] else name["invstd"]
        nodes += [
            helper.make_node("Cast", [node.input[0]], [name["x"]], to=TensorProto.FLOAT, name=name["x"]),
            helper.make_node("ReduceMean", [name["x"], axes], [mean_out], keepdims=1, name=name["mean"]),
            helper.make_node("Sub", [name["x"], mean_out], [name["centered"]], name=name["centered"]),
            helper.make_node("Mul", [name["centered"], name["centered"]], [name["squared"]], name=name["squared"]),
            helper.make_node("ReduceMean", [name["squared"], axes], [name["variance"]], keepdims=1,
                             name=name["variance"]),
            helper.make_node("Add", [name["variance"], eps], [name["shifted"]], name=name["shifted"]),
            helper.make_node("Sqrt", [name["shifted"]], [name["std"]], name=name["std"]),
            helper.make_node("Reciprocal", [name["std"]], [invstd_out], name=name["invstd"]),
        ]
        del node.output[1:]
        rewritten += 1
    if rewritten:
        _replace_nodes(model, nodes)
    return rewritten


def optimize_for_tensorrt(model) -> dict[str, int]:
    """All of the above; returns how many places each rewrote."""
    counts = {"default_reductions": drop_default_reductions(model),
              "layer_norm_statistics": layer_norm_statistics_recomputed(model)}
    if any(counts.values()):
        remove_unused(model)
    return counts
