"""Convert a traced gradient to ONNX once, and splice it into every method's graph that uses it.

Saliency, gradient x input, IG and SmoothGrad call the same traced forward+backward graph (Grad-CAM and Grad-CAM++
another), only with different inputs around it. ``torch.onnx.export`` re-captures and re-decomposes that whole
graph for each method (resnet50 with six methods: 101 s of a 299 s export on 2 cores, about 14 s a graph). Here
each method's module is exported with its gradient replaced by one opaque custom op (``auditor_rt.Traced``, a few
ops around it), the gradient itself is exported once, and its nodes are then put in place of the custom node,
with its tensors renamed. The result is the same computation as a whole-module export; the parity check compares
it with PyTorch like any other graph.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Iterator

import torch
from torch import nn

DOMAIN, OP_TYPE = "auditor_rt", "Traced"
_DEFINED: set[str] = set()
_LIVE: dict[int, torch.fx.GraphModule] = {}  # key -> graph, while an export runs
_KEYS = itertools.count()


def spliceable(module: nn.Module) -> list[tuple[str, torch.fx.GraphModule]]:
    """The traced gradients that ``module`` calls (as direct children), with what splicing needs recorded."""
    return [(name, child) for name, child in module.named_children()
            if isinstance(child, torch.fx.GraphModule) and "auditor_rt_outputs" in child.meta]


def _op_name(inputs: int, outputs: int) -> str:
    """One custom op per arity, defined once per process (a schema is fixed; the graph is chosen by ``key``)."""
    name = f"traced_{inputs}_{outputs}"
    if name not in _DEFINED:
        arguments = ", ".join(f"Tensor x{i}" for i in range(inputs))
        torch.library.define(f"{DOMAIN}::{name}", f"({arguments}, int key) -> ({', '.join(['Tensor'] * outputs)})")

        def run(*args):
            *tensors, key = args
            return tuple(t.clone() for t in _LIVE[key](*tensors))

        def fake(*args):
            *tensors, key = args
            batch = tensors[0].shape[0]
            return tuple(tensors[0].new_empty((batch, *shape), dtype=dtype)
                         for shape, dtype in _LIVE[key].meta["auditor_rt_outputs"])

        torch.library.impl(f"{DOMAIN}::{name}", "CompositeExplicitAutograd", run)
        torch.library.register_fake(f"{DOMAIN}::{name}", fake)
        _DEFINED.add(name)
    return name


def translation_table(modules: list[tuple[int, torch.fx.GraphModule]]) -> dict:
    """The exporter's translation of each custom op to one ``auditor_rt.Traced`` node with a ``key``."""
    from onnx.defs import OpSchema
    from onnxscript.values import Op, Opset

    table = {}
    opset = Opset(DOMAIN, 1)
    types = ["tensor(float)", "tensor(double)", "tensor(int64)", "tensor(bool)"]
    for _, graph in modules:
        inputs, outputs = len(graph.meta["auditor_rt_example"]), len(graph.meta["auditor_rt_outputs"])
        overload = getattr(getattr(torch.ops, DOMAIN), _op_name(inputs, outputs)).default
        schema = OpSchema(OP_TYPE, DOMAIN, 1, inputs=[OpSchema.FormalParameter(f"x{i}", f"I{i}") for i in range(inputs)],
                          outputs=[OpSchema.FormalParameter(f"y{i}", f"O{i}") for i in range(outputs)],
                          type_constraints=[*((f"I{i}", types, "") for i in range(inputs)),
                                            *((f"O{i}", types, "") for i in range(outputs))],
                          attributes=[OpSchema.Attribute("key", OpSchema.AttrType.INT, "")])

        def translate(*args, _op=Op(opset, OP_TYPE, schema), _outputs=outputs):
            *tensors, key = args
            return _op(*tensors, key=key, _outputs=_outputs)

        table[overload] = translate
    return table


class _Opaque(nn.Module):
    """Stands in for a traced gradient during export: one custom op call."""

    def __init__(self, key: int, inputs: int, outputs: int):
        super().__init__()
        self.key, self.op = key, _op_name(inputs, outputs)

    def forward(self, *tensors):
        return getattr(getattr(torch.ops, DOMAIN), self.op)(*tensors, self.key)


class _GradientOnly(nn.Module):
    """The traced gradient alone, for its one export."""

    def __init__(self, graph: torch.fx.GraphModule):
        super().__init__()
        self.compiled = graph  # not "graph": an exported GraphModule's own .graph would shadow it

    def forward(self, **inputs):
        return tuple(self.compiled(*inputs.values()))


@contextlib.contextmanager
def opaque_gradients(module: nn.Module) -> Iterator[list[tuple[int, torch.fx.GraphModule]]]:
    """Inside, ``module``'s traced gradients are custom op calls; yields (key, graph) for each."""
    swapped = []
    try:
        for name, graph in spliceable(module):
            key = next(_KEYS)
            _LIVE[key] = graph
            setattr(module, name, _Opaque(key, len(graph.meta["auditor_rt_example"]),
                                          len(graph.meta["auditor_rt_outputs"])))
            swapped.append((name, key, graph))
        yield [(key, graph) for _, key, graph in swapped]
    finally:
        for name, key, graph in swapped:
            setattr(module, name, graph)
            _LIVE.pop(key, None)


def export_gradient(graph: torch.fx.GraphModule, opset: int):
    """The traced gradient as its own ONNX model (inputs x0.., outputs y0.., dynamic batch)."""
    from auditor_rt.export.conversion.torch_to_onnx import export_model

    example = graph.meta["auditor_rt_example"]
    names = tuple(f"x{i}" for i in range(len(example)))
    model, _ = export_model(_GradientOnly(graph), tuple(example), opset, names,
                            output_names=[f"y{i}" for i in range(len(graph.meta["auditor_rt_outputs"]))])
    return model


def splice(model, gradients: dict[int, object]) -> int:
    """Replace each ``auditor_rt.Traced`` node of ``model`` by the nodes of ``gradients[key]`` (in place); returns
    how many were replaced."""
    from onnx import helper

    nodes, replaced = [], 0
    for node in model.graph.node:
        if node.domain != DOMAIN or node.op_type != OP_TYPE:
            nodes.append(node)
            continue
        key = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "key")
        nodes.extend(_inline(model, gradients[key], list(node.input), list(node.output), f"traced{replaced}/"))
        replaced += 1
    if replaced:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        kept = [o for o in model.opset_import if o.domain != DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    return replaced


def _inline(model, gradient, inputs: list[str], outputs: list[str], prefix: str) -> list:
    """The gradient model's nodes, reading ``inputs`` and writing ``outputs``; its other tensors, its
    initializers, value infos and symbolic dims get ``prefix`` (its batch is not the outer graph's: IG runs
    N x points images through it)."""
    import copy

    graph = gradient.graph
    names = {value.name: outer for value, outer in zip(graph.input, inputs)}
    names.update({value.name: outer for value, outer in zip(graph.output, outputs)})

    def rename(name: str) -> str:
        return name if not name else names.setdefault(name, prefix + name)

    nodes = []
    for node in graph.node:
        node = copy.deepcopy(node)
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
        node.name = prefix + node.name
        nodes.append(node)
    for tensor in graph.initializer:
        tensor = copy.deepcopy(tensor)
        tensor.name = rename(tensor.name)
        model.graph.initializer.append(tensor)
    for value in graph.value_info:
        value = copy.deepcopy(value)
        value.name = rename(value.name)
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.dim_param = prefix + dim.dim_param
        model.graph.value_info.append(value)
    return nodes
