"""Rewrites of exported ONNX graphs into forms that ONNX Runtime's CPU provider runs faster, with the same values.

ONNX Runtime runs convolutions, pooling, BatchNormalization, HardSigmoid and element-wise ops whose inputs all come
from such ops in a blocked channel layout (NCHWc). Any other op makes it convert its inputs back to NCHW and its
output forward again. In an exported backward pass that used to happen at every residual block: the gradient chain
left the blocked layout at a per-channel constant ``Mul`` (BatchNorm's backward scale) and never came back, since
the identity shortcuts carried the plain layout from block to block. The passes, in the order
``optimize_for_onnxruntime`` runs them:

- ``step_masks_as_hard_sigmoid``: the ReLU backward's mask ``Cast(Greater(y, 0), float)`` becomes
  ``HardSigmoid(y, alpha=2**126, beta=0)`` = ``clip(2**126 * y, 0, 1)``. For every float32 y that is not subnormal
  the two are equal: y <= 0 gives 0, and y >= 2**-126 gives at least 1 (scaling by a power of two is exact, an
  overflow to inf clips to 1). Only |y| < 1.2e-38 would give a fraction.
- ``fold_channel_scales``: ``x * s`` or ``x / s`` with a per-channel constant s ([1, C, 1, 1]) feeding only a
  convolution becomes that convolution with its weight scaled along the input channels (``conv(x * s, W) =
  conv(x, W * s)``; ONNX Runtime folds the weight product once when it loads the session). A scale that feeds
  anything else becomes ``BatchNormalization(x, s, 0, 0, 1, epsilon=0)``, which computes ``x * s`` exactly and
  runs in the blocked layout. A division becomes a product with the reciprocal: within one rounding.
- ``max_pool_offsets_from_range``: the exporter makes max-pool indices per plane by subtracting each plane's
  offset (ONNX indices count over N, C, H and W), and finds those offsets with a second, 1x1 max-pool with indices
  over the whole input. The offsets are ``Range(0, size, H * W)`` reshaped to [N, C, 1, 1]: the same values
  without the second pool.
- ``blocked_layout_after_conv_transpose``: ONNX Runtime has no blocked ``ConvTranspose``. An identity
  ``AveragePool`` (1x1 kernel, exact) after it brings its output back into the blocked layout, so that the sum and
  masks after it run blocked too instead of pulling the whole chain out again.

Measured on resnet50's saliency graph at batch 8 (2 threads, interleaved rounds, priority execution order): 8.5%
faster for the second and fourth passes together (reorders 34 -> 10 ms, Muls 34 -> 20 ms, the residual Adds fused
into the convolutions), 11% with the third (the 1x1 pool took 10 ms). The session's memory at load rose from 452 to
510 MB (the folded weights); its peak over two calls did not.
"""

from __future__ import annotations

import collections

import numpy as np

SMALLEST_NORMAL_SCALE = 2.0 ** 126
BLOCK_CHANNELS = 16  # ONNX Runtime's NCHWc block is 8 (AVX2) or 16 (AVX-512) channels: a multiple of 16 fits both


class GraphIndex:
    """Producers, consumers, constants and known shapes of one graph's tensors, for pattern matching."""

    def __init__(self, model):
        from onnx import TensorProto, numpy_helper

        self.model, self.graph = model, model.graph
        self.nodes = nodes = list(model.graph.node)  # iterate these: pattern matches compare node identities
        self.producer = {name: node for node in nodes for name in node.output}
        self.consumers: dict[str, list] = collections.defaultdict(list)
        for node in nodes:
            for name in node.input:
                self.consumers[name].append(node)
        self.graph_outputs = {value.name for value in model.graph.output}
        self.constants = {}
        for tensor in model.graph.initializer:
            if tensor.data_location != TensorProto.EXTERNAL:
                self.constants[tensor.name] = tensor
        for node in nodes:
            if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
                self.constants[node.output[0]] = node.attribute[0].t
        self._to_array = numpy_helper.to_array
        self.dims = {}
        for value in (*model.graph.input, *model.graph.value_info, *model.graph.output):
            shape = value.type.tensor_type.shape
            if value.type.tensor_type.HasField("shape"):
                self.dims[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]
        self.names = set(self.producer) | set(self.consumers) | {t.name for t in model.graph.initializer} \
            | {node.name for node in nodes}

    def constant(self, name: str) -> np.ndarray | None:
        tensor = self.constants.get(name)
        return None if tensor is None else self._to_array(tensor)

    def uses(self, name: str) -> int:
        return len(self.consumers.get(name, ())) + (name in self.graph_outputs)

    def sole_consumer(self, name: str):
        consumers = self.consumers.get(name, ())
        return consumers[0] if len(consumers) == 1 and name not in self.graph_outputs else None

    def fresh(self, hint: str) -> str:
        name, n = hint, 0
        while name in self.names:
            n += 1
            name = f"{hint}_{n}"
        self.names.add(name)
        return name

    def add_initializer(self, array: np.ndarray, hint: str) -> str:
        from onnx import numpy_helper

        name = self.fresh(hint)
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        return name


def _attribute(node, name: str, default=None):
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _replace_nodes(model, nodes: list) -> None:
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def remove_unused(model) -> int:
    """Drop nodes none of whose outputs is used (repeatedly), then initializers nothing reads; returns how many
    nodes went."""
    removed = 0
    while True:
        index = GraphIndex(model)
        kept = [node for node in index.nodes if any(index.uses(name) for name in node.output if name)]
        if len(kept) == len(index.nodes):
            break
        removed += len(index.nodes) - len(kept)
        _replace_nodes(model, kept)
    read = {name for node in model.graph.node for name in node.input} | index.graph_outputs \
        | {value.name for value in model.graph.input}
    unused = [tensor for tensor in model.graph.initializer if tensor.name not in read]
    for tensor in unused:
        model.graph.initializer.remove(tensor)
    return removed


def step_masks_as_hard_sigmoid(model) -> int:
    """Rewrite ``Cast(Greater(y, 0), to=FLOAT)`` in place; returns how many were rewritten."""
    from onnx import TensorProto, helper

    index = GraphIndex(model)
    replaced: dict[int, object] = {}
    dropped: set[int] = set()
    for position, node in enumerate(index.nodes):
        if node.op_type != "Cast" or _attribute(node, "to") != TensorProto.FLOAT:
            continue
        greater = index.producer.get(node.input[0])
        if greater is None or greater.op_type != "Greater" or index.uses(greater.output[0]) != 1:
            continue
        threshold = index.constant(greater.input[1])
        if threshold is None or threshold.size != 1 or float(threshold.reshape(())) != 0.0:
            continue
        replaced[position] = helper.make_node("HardSigmoid", [greater.input[0]], [node.output[0]], name=node.name,
                                              alpha=SMALLEST_NORMAL_SCALE, beta=0.0)
        dropped.add(id(greater))
    if replaced:
        _replace_nodes(model, [replaced.get(i, node) for i, node in enumerate(index.nodes)
                               if id(node) not in dropped])
    return len(replaced)


def _channel_vector(value: np.ndarray | None, channels) -> np.ndarray | None:
    """The per-channel values of a constant shaped [1, C, 1, 1] or [C, 1, 1] that scales a [N, C, H, W] tensor."""
    if value is None or value.dtype != np.float32 or channels is None or channels < 2:
        return None
    if value.shape not in ((1, channels, 1, 1), (channels, 1, 1)):
        return None
    vector = value.reshape(channels)
    return vector if np.isfinite(vector).all() else None


def fold_channel_scales(model) -> tuple[int, int]:
    """Per-channel constant scales into the next convolution's weight, or else into BatchNormalization.
    Returns (folded, as_batch_norm)."""
    from onnx import helper

    index = GraphIndex(model)
    nodes, folded, normalised = [], 0, 0
    pending: dict[int, list] = collections.defaultdict(list)  # weight products to place before their convolution
    for node in index.nodes:
        nodes.append(node)
        if node.op_type not in ("Mul", "Div"):
            continue
        for data_at in ((0, 1) if node.op_type == "Mul" else (0,)):
            data, scale_name = node.input[data_at], node.input[1 - data_at]
            dims = index.dims.get(data)
            if dims is None or len(dims) != 4 or index.dims.get(node.output[0]) != dims:
                continue
            scale = _channel_vector(index.constant(scale_name), dims[1])
            if scale is None:
                continue
            if node.op_type == "Div":
                if (scale == 0).any():
                    break
                scale = (1.0 / scale.astype(np.float64)).astype(np.float32)
            conv = index.sole_consumer(node.output[0])
            foldable = (conv is not None and conv.op_type in ("Conv", "ConvTranspose") and len(conv.input) > 1
                        and conv.input[0] == node.output[0] and _attribute(conv, "group", 1) == 1)
            if foldable:
                # Conv weights are [C_out, C_in, k, k], ConvTranspose weights [C_in, C_out, k, k].
                shape = (1, -1, 1, 1) if conv.op_type == "Conv" else (-1, 1, 1, 1)
                factor = index.add_initializer(scale.reshape(shape), f"{node.output[0]}_folded_scale")
                weight = index.fresh(f"{conv.input[1]}_scaled")
                pending[id(conv)].append(helper.make_node("Mul", [conv.input[1], factor], [weight],
                                                          name=index.fresh(f"{node.name}_into_weight")))
                conv.input[0], conv.input[1] = data, weight
                nodes.pop()
                folded += 1
            else:
                channels = scale.shape[0]
                names = [index.add_initializer(array, f"{node.output[0]}_{role}") for role, array in (
                    ("scale", scale), ("bias", np.zeros(channels, np.float32)),
                    ("mean", np.zeros(channels, np.float32)), ("var", np.ones(channels, np.float32)))]
                nodes[-1] = helper.make_node("BatchNormalization", [data, *names], [node.output[0]], name=node.name,
                                             epsilon=0.0)
                normalised += 1
            break
    if folded or normalised:
        ordered = []
        for node in nodes:
            ordered.extend(pending.get(id(node), ()))
            ordered.append(node)
        _replace_nodes(model, ordered)
    return folded, normalised


def _is_plane_offset(index: GraphIndex, name: str, pooled_input: str) -> bool:
    """True when ``name`` is ``indices[:, :, :1, :1]`` of a 1x1, stride-1 MaxPool of ``pooled_input``: each
    plane's first flat index, i.e. its offset."""
    offset = index.producer.get(name)
    if offset is None or offset.op_type != "Slice" or len(offset.input) < 4:
        return False
    pool = index.producer.get(offset.input[0])
    if (pool is None or pool.op_type != "MaxPool" or pool.input[0] != pooled_input or len(pool.output) < 2
            or pool.output[1] != offset.input[0]):
        return False
    identity = (all(k == 1 for k in _attribute(pool, "kernel_shape", []))
                and all(s == 1 for s in _attribute(pool, "strides", [])) and not any(_attribute(pool, "pads", [])))
    if not identity:
        return False
    starts, ends = index.constant(offset.input[1]), index.constant(offset.input[2])
    axes = index.constant(offset.input[3]) if len(offset.input) > 3 and offset.input[3] else None
    steps = index.constant(offset.input[4]) if len(offset.input) > 4 and offset.input[4] else None
    if starts is None or ends is None or axes is None:
        return False
    if steps is not None and (steps != 1).any():
        return False
    rank = len(index.dims.get(pooled_input) or [])
    axes = [int(a) % rank for a in axes.reshape(-1)] if rank else []
    return sorted(axes) == [2, 3] and (starts == 0).all() and (ends == 1).all()


def max_pool_offsets_from_range(model) -> int:
    """``indices - plane_offset`` of a max-pool, with the plane offsets from ``Range(0, size, H * W)`` instead of
    a second, 1x1 max-pool with indices over the whole input; returns how many were rewritten."""
    from onnx import helper

    index = GraphIndex(model)
    nodes, rewritten = [], 0
    for node in index.nodes:
        nodes.append(node)
        if node.op_type != "Sub":
            continue
        pool = index.producer.get(node.input[0])
        if pool is None or pool.op_type != "MaxPool" or len(pool.output) < 2 or pool.output[1] != node.input[0]:
            continue
        pooled = pool.input[0]
        dims = index.dims.get(pooled)
        if not dims or len(dims) != 4 or None in dims[1:] or not _is_plane_offset(index, node.input[1], pooled):
            continue
        names = {role: index.fresh(f"{node.input[1]}_{role}") for role in ("size", "flat", "offsets")}
        zero = index.add_initializer(np.array(0, np.int64), "zero")
        plane = index.add_initializer(np.array(dims[2] * dims[3], np.int64), "plane_size")
        shape = index.add_initializer(np.array([-1, dims[1], 1, 1], np.int64), "plane_offsets_shape")
        nodes[-1:] = [
            helper.make_node("Size", [pooled], [names["size"]], name=index.fresh(f"{node.name}_size")),
            helper.make_node("Range", [zero, names["size"], plane], [names["flat"]],
                             name=index.fresh(f"{node.name}_range")),
            helper.make_node("Reshape", [names["flat"], shape], [names["offsets"]],
                             name=index.fresh(f"{node.name}_offsets")),
            helper.make_node("Sub", [node.input[0], names["offsets"]], list(node.output), name=node.name),
        ]
        rewritten += 1
    if rewritten:
        _replace_nodes(model, nodes)
    return rewritten


def blocked_layout_after_conv_transpose(model) -> int:
    """An identity AveragePool after each ConvTranspose with a block-aligned channel count; returns how many."""
    from onnx import helper

    index = GraphIndex(model)
    nodes, added = [], 0
    for node in index.nodes:
        nodes.append(node)
        dims = index.dims.get(node.output[0]) if node.op_type == "ConvTranspose" else None
        if not dims or len(dims) != 4 or not dims[1] or dims[1] % BLOCK_CHANNELS:
            continue
        original = node.output[0]
        node.output[0] = index.fresh(f"{original}_unblocked")
        nodes.append(helper.make_node("AveragePool", [node.output[0]], [original], kernel_shape=[1, 1],
                                      name=index.fresh(f"{node.name}_to_blocked_layout")))
        added += 1
    if added:
        _replace_nodes(model, nodes)
    return added


def optimize_for_onnxruntime(model) -> dict[str, int]:
    """All of the above, in order; returns how many places each rewrote."""
    counts = {"hard_sigmoid_masks": step_masks_as_hard_sigmoid(model)}
    counts["folded_scales"], counts["batch_norm_scales"] = fold_channel_scales(model)
    counts["max_pool_offsets"] = max_pool_offsets_from_range(model)
    counts["blocked_after_conv_transpose"] = blocked_layout_after_conv_transpose(model)
    if any(counts.values()):
        remove_unused(model)
    return counts
