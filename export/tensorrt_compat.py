"""Which nodes of an ONNX graph TensorRT's ONNX parser would refuse, found statically (no TensorRT needed).

``tensorrt_findings(model)`` walks every node, in If/Loop/Scan bodies and model-local functions too, and returns a
``Finding`` per problem: ``error`` (the parser refuses the node), ``warning`` (it imports only through a plugin, or
the support matrix excludes what the importer accepts) or ``note`` (imported with a loss: DOUBLE is cast to FLOAT).
The model is read with ``load_external_data=False``: only small initializers and Constant nodes are read (axes, K,
training_mode); an input that is an initializer or a Constant counts as constant, as the parser's weights do.

Source: onnx-tensorrt 10.1 GA, commit 96e7811 ("ONNX-TensorRT 10.1 GA release (#975)"), the parser of TensorRT
10.x. The files are named beside each rule below: docs/operators.md (the support matrix: N ops, the Restrictions
column, the data types), onnxOpCheckers.cpp (the static STATIC_CHECKs), onnxOpImporters.cpp and importerUtils.cpp
(the importers' ASSERT_NODEs), ModelImporter.cpp (dispatch by op type, the output count, UINT8). Later 10.x and 11.x
parsers lifted restrictions before (TensorRT 8.x refused Conv weights that are not initializers, Einsum ellipsis and
a run-time TopK K; 10.1 accepts all three, so they are not rules here): re-check this table against the parser of
the TensorRT that will build the engine.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ERROR, WARNING, NOTE = "error", "warning", "note"

# docs/operators.md: the operators marked N (each also a STATIC_CHECK(false) in onnxOpCheckers.cpp)
UNSUPPORTED_OPS = frozenset("""
    AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor BlackmanWindow Col2Im CenterCropPad
    Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear HammingWindow HannWindow ImageDecoder
    MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional
    OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch STFT SequenceAt SequenceConstruct
    SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence
    StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique""".split())

# onnxOpImporters.cpp: every DEFINE_BUILTIN_OP_IMPORTER. ModelImporter.cpp dispatches on op_type alone (the domain is
# never looked at); an op type outside this set and UNSUPPORTED_OPS is tried as a model-local function, then as a
# TensorRT plugin of that name (FallbackPluginImporter), which fails unless such a plugin is registered.
BUILTIN_OPS = frozenset("""
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil Celu
    Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear
    Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
    GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU Hardmax
    HardSigmoid HardSwish Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
    LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization
    Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear
    RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
    ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
    ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign
    Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile
    TopK Transpose Trilu Unsqueeze Upsample Where Xor
    TRT_AveragePool TRT_Conv TRT_Deconv TRT_FloorDiv TRT_FP8DequantizeLinear TRT_FP8QuantizeLinear TRT_FullyConnected
    TRT_Gather TRT_INT4DequantizeLinear TRT_INT4QuantizeLinear TRT_MatMul TRT_MaxAverageBlendPool TRT_MaxPool
    TRT_PluginV2 TRT_RaggedSoftmax TRT_Resize TRT_RNNv2 TRT_Scale TRT_Shuffle TRT_Slice TRT_TopK_Min""".split())

# importerUtils.cpp convertDtype, the ONNX types the parser maps to TensorRT types; docs/operators.md's notes: DOUBLE
# is cast down to FLOAT, UINT8 is allowed only as a network input or output (ModelImporter.cpp refuses a node whose
# UINT8 output is not a graph output; WeightsContext.cpp turns UINT8 initializers into INT32).
TENSORRT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT32,
                            TensorProto.INT64, TensorProto.INT8, TensorProto.UINT8, TensorProto.BOOL,
                            TensorProto.FLOAT8E4M3FN, TensorProto.INT4, TensorProto.DOUBLE})
DEFAULT_DOMAINS = ("", "ai.onnx")
OPSETS = range(9, 21)  # docs/operators.md: "supports operators in the inclusive range of opset 9 to opset 20"
TOPK_MAX = 3840  # docs/operators.md, TopK: "`K` input must be less than 3840"


@dataclass(frozen=True)
class Finding:
    """One problem: the node (its name, or ``node_of_<first output>`` as the parser names it; a tensor's name for a
    graph input or initializer), its op type, a plain reason shared by all nodes with the same problem, the specific
    values in ``detail``, and ``graph``: "" for the main graph, else the path to the subgraph or local function."""

    node: str
    op_type: str
    reason: str
    severity: str = ERROR
    detail: str = ""
    graph: str = ""


class _Site:
    """A node with its attributes (strings decoded) and the constants visible from its graph."""

    def __init__(self, node: onnx.NodeProto, constants: dict):
        self.node, self.constants = node, constants
        self.attrs = {a.name: _decoded(helper.get_attribute_value(a)) for a in node.attribute}

    def input(self, index: int) -> str:
        return self.node.input[index] if index < len(self.node.input) else ""

    def value(self, index: int):
        """The input's value when it is a readable constant, else None."""
        return _constant_value(self.constants.get(self.input(index)))


Check = Callable[[_Site], "tuple[str, str, str] | None"]  # (severity, reason, detail) or None


def _const_input(index: int, what: str) -> Check:
    def check(site):
        name = site.input(index)
        if name and name not in site.constants:
            return ERROR, f"{what} must be an initializer or Constant, not computed in the graph", f"{what}: {name}"
    return check


def _attr(name: str, default, allowed, reason: str, severity: str = ERROR) -> Check:
    def check(site):
        value = site.attrs.get(name, default)
        if value not in allowed:
            return severity, reason, f"{name}={value!r}"
    return check


def _max_outputs(count: int, reason: str) -> Check:
    def check(site):  # ModelImporter.cpp counts the declared outputs, empty names included
        if len(site.node.output) > count:
            return ERROR, reason, "outputs: " + ", ".join(o or "''" for o in site.node.output)
    return check


def _unit_dilations(site):
    if any(d != 1 for d in site.attrs.get("dilations", ())):
        return ERROR, "dilations other than 1 are not supported", f"dilations={site.attrs['dilations']}"


def _pool_rank(site):  # importerUtils.cpp poolingHelper: 1D (expanded to 2D), 2D or 3D
    kernel = site.attrs.get("kernel_shape", ())
    if len(kernel) > 3:
        return ERROR, "pooling over more than 3 spatial axes is not supported", f"kernel_shape={kernel}"


def _einsum_letters(site):
    if any(not ("a" <= c <= "z" or c in "->., ") for c in site.attrs.get("equation", "")):
        return ERROR, "Einsum equation may only use lowercase letters a-z", f"equation={site.attrs['equation']!r}"


def _topk_k(site):
    k = site.value(1) if site.input(1) else site.attrs.get("k")  # opset < 10: the k attribute
    if k is not None and int(np.asarray(k).reshape(-1)[0]) >= TOPK_MAX:
        return ERROR, f"K must be less than {TOPK_MAX}", f"K={int(np.asarray(k).reshape(-1)[0])}"


def _dropout_inference(site):  # onnxOpImporters.cpp Dropout: training_mode must be a false initializer
    value = site.value(2)
    if value is not None and bool(value.reshape(-1)[0]):
        return ERROR, "Dropout in training mode is not supported", f"training_mode: {site.input(2)}"


def _not_uint8_value(site):
    value = site.attrs.get("value")
    if isinstance(value, TensorProto) and value.data_type == TensorProto.UINT8:
        return ERROR, "a UINT8 value is not supported", "value: UINT8"


_DILATIONS_AND_RANK = (_unit_dilations, _pool_rank)
_REDUCE_OPS = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
               "ReduceProd", "ReduceSum", "ReduceSumSquare")
_RANDOM_DTYPE = _attr("dtype", TensorProto.FLOAT, {TensorProto.FLOAT, TensorProto.FLOAT16},
                      "only FLOAT and FLOAT16 outputs are supported")

# Per op type, the constraints the parser enforces beyond importing it at all.
CONSTRAINTS: dict[str, tuple[Check, ...]] = {
    # onnxOpCheckers.cpp checkMaxPool: "TensorRT does not support the indices output in MaxPool!";
    # poolingCheckHelper: dilations; docs/operators.md: 2D or 3D pooling
    "MaxPool": (_max_outputs(1, "the Indices output is not supported"), *_DILATIONS_AND_RANK),
    "AveragePool": _DILATIONS_AND_RANK,
    # onnxOpCheckers.cpp checkLpPool, checkLpNormalization: "Only L1 and L2 normalization are supported."
    "LpPool": (_attr("p", 2, {1, 2}, "only p=1 and p=2 are supported"), *_DILATIONS_AND_RANK),
    "LpNormalization": (_attr("p", 2, {1, 2}, "only p=1 and p=2 are supported"),),
    # onnxOpCheckers.cpp checkBatchNormalization
    "BatchNormalization": (_attr("training_mode", 0, {0}, "training_mode=1 is not supported"),),
    # onnxOpCheckers.cpp checkConstant
    "Constant": tuple(_attr(a, None, {None}, f"the {a} attribute is not supported")
                      for a in ("sparse_value", "value_string", "value_strings")),
    # onnxOpCheckers.cpp checkConstantOfShape: "Invalid input type for ConstantOfShape"
    "ConstantOfShape": (_not_uint8_value,),
    # onnxOpImporters.cpp CumSum: "Axis input for CumSum must be an initializer!"
    "CumSum": (_const_input(1, "axis"),),
    # onnxOpImporters.cpp Dropout: training_mode "only supported as an initializer", and false
    "Dropout": (_const_input(2, "training_mode"), _dropout_inference),
    # onnxOpCheckers.cpp checkEinsum: "Invalid character(s) in Einsum equation" (ellipsis is accepted in 10.1)
    "Einsum": (_einsum_letters,),
    # docs/operators.md: "Only the first output `Y` is supported."; the importer returns one output and
    # ModelImporter.cpp refuses a node with more ("Node has more output tensors than TRT expected")
    "LayerNormalization": (_max_outputs(1, "only the first output Y is supported (not Mean, InvStdDev)"),),
    # docs/operators.md LSTM: `input_forget` must be 0 (also onnxOpCheckers.cpp checkLSTM), `layout` must be 0
    "LSTM": (_attr("input_forget", 0, {0}, "input_forget must be 0"), _attr("layout", 0, {0}, "layout must be 0")),
    # onnxOpImporters.cpp Pad: "TensorRT does not support dynamic axes for pad!"
    "Pad": (_const_input(3, "axes"),),
    # onnxOpCheckers.cpp randomUniformCheckHelper, randomNormalCheckHelper
    **{op: (_RANDOM_DTYPE,) for op in ("RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike")},
    # importerUtils.cpp reduceTensor: "Axis input must be an initializer!"
    **{op: (_const_input(1, "axes"),) for op in _REDUCE_OPS},
    # docs/operators.md Resize: modes nearest and linear (onnxOpCheckers.cpp checkResize also lets cubic through and
    # the importer resizes the innermost two axes with it: a warning), the five transformation modes, round_prefer_floor
    # with tf_half_pixel_for_nn, no antialiasing, keep_aspect_ratio_policy stretch
    "Resize": (_attr("mode", "nearest", {"nearest", "linear", "cubic"}, "only nearest and linear modes are supported"),
               _attr("mode", "nearest", {"nearest", "linear"}, "cubic mode is not in the support matrix (nearest, "
                     "linear); the 10.1 importer maps it to cubic resizing of the innermost two axes", WARNING),
               _attr("coordinate_transformation_mode", "half_pixel",
                     {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"},
                     "this coordinate_transformation_mode is not supported"),
               _attr("antialias", 0, {0}, "antialiasing is not supported"),
               _attr("keep_aspect_ratio_policy", "stretch", {"stretch"}, "only keep_aspect_ratio_policy=stretch is "
                     "supported")),
    # onnxOpCheckers.cpp checkRoiAlign: "Mode must be avg or max!"
    "RoiAlign": (_attr("mode", "avg", {"avg", "max"}, "only avg and max modes are supported"),),
    # onnxOpImporters.cpp ScatterElements: a reduction goes to the "ScatterElements" plugin (scatterPluginHelper),
    # which needs TensorRT's plugin library at build and run time
    "ScatterElements": (_attr("reduction", "none", {"none"}, "a reduction is imported only as the TensorRT plugin "
                              "'ScatterElements' (needs libnvinfer_plugin)", WARNING),),
    # onnxOpImporters.cpp ScatterND: "Attribute reduction is not supported."
    "ScatterND": (_attr("reduction", None, {None}, "the reduction attribute is not supported"),),
    # onnxOpImporters.cpp Slice: "This version of TensorRT does not support dynamic axes."
    "Slice": (_const_input(3, "axes"),),
    # onnxOpImporters.cpp Squeeze: "Squeeze axes input must be an initializer!"; Unsqueeze: "Axes input for unsqueeze
    # operation should be a constant tensor."
    "Squeeze": (_const_input(1, "axes"),),
    "Unsqueeze": (_const_input(1, "axes"),),
    # docs/operators.md TopK: "`K` input must be less than 3840" (a K computed in the graph is accepted in 10.1)
    "TopK": (_topk_k,),
    # onnxOpCheckers.cpp checkUpsample
    "Upsample": (_attr("mode", "nearest", {"nearest", "linear", "bilinear"}, "only nearest and linear modes are "
                       "supported"),),
}


def tensorrt_findings(model: onnx.ModelProto | str | Path, plugins: Iterable[str] = ()) -> list[Finding]:
    """Every node TensorRT 10.x's ONNX parser would refuse (and ``warning``/``note`` findings, see the module).
    ``plugins``: op types the engine build registers TensorRT plugins for (accepted, not reported)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    model = _with_types(model)
    walk = _Walk(model, frozenset(plugins))
    opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), None)
    if opset is not None and opset not in OPSETS:
        walk.add("", "", "<model>", NOTE, f"opset outside the documented range {OPSETS.start}-{OPSETS.stop - 1}",
                 f"opset {opset}")
    walk.graph(model.graph, {}, "")
    return walk.findings


def summarize(findings: list[Finding]) -> dict[str, int]:
    """How many findings per (op type, reason), the most frequent first."""
    return dict(Counter(f"{f.severity} {f.op_type}: {f.reason}" for f in findings).most_common())


def format_findings(findings: list[Finding], summary: bool = True) -> str:
    """One line per finding, then the counts per reason."""
    lines = [f"{f.severity:<7} {f.graph + ': ' if f.graph else ''}{f.node} ({f.op_type}): {f.reason}"
             + (f" [{f.detail}]" if f.detail else "") for f in findings]
    if summary and findings:
        lines += ["", f"{len(findings)} finding(s):"]
        lines += [f"{count:>5}  {reason}" for reason, count in summarize(findings).items()]
    return "\n".join(lines)


class _Walk:
    def __init__(self, model: onnx.ModelProto, plugins: frozenset):
        self.findings: list[Finding] = []
        self.plugins = plugins
        self.functions = {f.name: f for f in model.functions}  # the parser keys local functions by name alone
        self.seen_functions: set[str] = set()
        self.graph_outputs = {o.name for o in model.graph.output}
        self.types = _types(model)

    def add(self, graph: str, node: str, op_type: str, severity: str, reason: str, detail: str = ""):
        self.findings.append(Finding(node, op_type, reason, severity, detail, graph))

    def graph(self, graph: onnx.GraphProto, outer: dict, label: str):
        constants = {**outer, **{t.name: t for t in graph.initializer}}
        constants.update({o: n for n in graph.node if n.op_type == "Constant" for o in n.output[:1]})
        initializers = {t.name for t in graph.initializer}
        for value in graph.input:
            if value.name not in initializers:
                self._dtype(label, value.name, "<graph input>", [value.name], uint8_ok=True)
        for tensor in graph.initializer:  # UINT8 initializers become INT32 (WeightsContext.cpp)
            self._dtype(label, tensor.name, "<initializer>", [tensor.name], uint8_ok=True)
        for node in graph.node:
            self.node(node, constants, label)

    def node(self, node: onnx.NodeProto, constants: dict, label: str):
        name, op = node.name or f"node_of_{node.output[0] if node.output else '?'}", node.op_type
        where = f"{label}/{name}" if label else name
        if op in BUILTIN_OPS:
            if node.domain not in DEFAULT_DOMAINS:
                self.add(label, name, op, WARNING, "the parser ignores the domain and imports the standard ONNX op "
                         "of this name", f"domain {node.domain!r}")
            site = _Site(node, constants)
            for check in CONSTRAINTS.get(op, ()):
                found = check(site)
                if found:
                    self.add(label, name, op, *found)
        elif op in UNSUPPORTED_OPS:
            self.add(label, name, op, ERROR, "operator not supported by TensorRT")
        elif op in self.functions:
            if op not in self.seen_functions:  # a function body is checked once, its inputs as run-time tensors
                self.seen_functions.add(op)
                self.graph(helper.make_graph(self.functions[op].node, op, [], []), {}, f"function {op}")
        elif op not in self.plugins:
            self.add(label, name, op, ERROR, "no importer for this op type: the parser would need a TensorRT plugin "
                     "of this name", f"domain {node.domain!r}" if node.domain not in DEFAULT_DOMAINS else "")
        self._dtype(label, name, op, [o for o in node.output if o], uint8_ok=op == "Constant")
        for attr in node.attribute:  # If branches, Loop and Scan bodies see the outer graph's constants
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                self.graph(sub, constants, f"{where}.{attr.name}")

    def _dtype(self, label, name, op, tensors, uint8_ok):
        types = {t: self.types[t] for t in tensors if t in self.types}
        bad = sorted({TensorProto.DataType.Name(t) for t in types.values() if t not in TENSORRT_TYPES})
        if bad:
            self.add(label, name, op, ERROR, "data type not supported by TensorRT", ", ".join(bad))
        if TensorProto.DOUBLE in types.values():
            self.add(label, name, op, NOTE, "DOUBLE is cast down to FLOAT (values clamped to +-FLT_MAX)")
        inner = [t for t, k in types.items() if k == TensorProto.UINT8 and t not in self.graph_outputs]
        if inner and not uint8_ok:
            self.add(label, name, op, ERROR, "UINT8 is supported only as a network input or output", ", ".join(inner))


def _with_types(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with inferred value_info (types of intermediate tensors), or as it is when inference fails."""
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=False)
    except Exception:  # a graph onnx cannot infer (unknown ops, bad shapes): the declared types are all there is
        return model


def _types(model: onnx.ModelProto) -> dict[str, int]:
    types: dict[str, int] = {}

    def collect(graph):
        for value in [*graph.input, *graph.output, *graph.value_info]:
            if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
                types[value.name] = value.type.tensor_type.elem_type
        types.update({t.name: t.data_type for t in graph.initializer})
        for node in graph.node:
            attrs = {a.name: a for a in node.attribute}
            if node.op_type == "Cast" and "to" in attrs and node.output:
                types[node.output[0]] = attrs["to"].i
            if node.op_type == "Constant" and "value" in attrs and attrs["value"].type == onnx.AttributeProto.TENSOR:
                types[node.output[0]] = attrs["value"].t.data_type
            for attr in node.attribute:
                for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                    collect(sub)

    collect(model.graph)
    for function in model.functions:
        collect(helper.make_graph(function.node, function.name, [], []))
    return types


def _constant_value(source):
    """The value of an initializer or Constant node, or None when it is absent or its bytes are external."""
    if isinstance(source, onnx.NodeProto):
        attrs = {a.name: helper.get_attribute_value(a) for a in source.attribute}
        source = attrs.get("value", next(iter(attrs.values()), None))
    if isinstance(source, TensorProto):
        if source.data_location == TensorProto.EXTERNAL:
            return None
        return numpy_helper.to_array(source)
    if isinstance(source, (int, float, list)):
        return np.asarray(source)
    return None


def _decoded(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    """``python -m auditor_rt.export.tensorrt_compat MODEL.onnx [...]``: print the findings; exit 1 when any is an
    error or a warning (notes alone exit 0), 2 on a usage error."""
    paths = sys.argv[1:] if argv is None else argv
    if not paths or any(p.startswith("-") for p in paths):
        print("usage: python -m auditor_rt.export.tensorrt_compat MODEL.onnx [MODEL.onnx ...]", file=sys.stderr)
        return 2
    failed = False
    for path in paths:
        findings = tensorrt_findings(path)
        print(f"{path}: {len(findings)} finding(s) for TensorRT's ONNX parser")
        if findings:
            print(format_findings(findings))
        failed |= any(f.severity != NOTE for f in findings)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
