"""Trace a gradient-computing function into a forward-only aten graph that ``torch.onnx.export`` can translate."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx
from torch.overrides import TorchFunctionMode

from auditor_rt.export.attribution.rules import gradient_decompositions
from auditor_rt.export.errors import ExportError
from auditor_rt.runtime.errors import NotSupportedError


_SHARED = contextvars.ContextVar("shared_traces", default=None)


@contextlib.contextmanager
def shared_traces() -> Iterator[None]:
    """Inside, ``compile_gradient`` calls with the same ``share_key`` trace once and share the graph. Saliency,
    gradient x input, IG and SmoothGrad all differentiate the same score with respect to the same input (and
    Grad-CAM and Grad-CAM++ the same stage), so one export traces two graphs instead of six (resnet50's input
    gradient took 6.6 s to trace on 2 idle cores, 43 s on busy ones). Scoped to one export, so that a model changed between
    exports is traced again."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def backward_ops_left(graph_module: torch.fx.GraphModule) -> list[str]:
    """Backward ops that no rule decomposed: each would fail export, or worse, be skipped."""
    return sorted({str(node.target) for node in graph_module.graph.nodes
                   if node.op == "call_function" and "backward" in str(node.target)})


class _FlattenedLinear(TorchFunctionMode):
    """``F.linear`` on a [N, T, C] input, under ``torch.func.grad``, guards the traced batch size to a constant
    (its C++ kernel folds the leading dims with concrete ints), so a transformer's graph would only run at the
    traced batch. Folding the leading dims in Python first keeps them symbolic; the arithmetic is the same."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and args and isinstance(args[0], torch.Tensor) and args[0].dim() > 2:
            x = args[0]
            return func(x.flatten(0, -2), *args[1:], **kwargs).unflatten(0, x.shape[:-1])
        return func(*args, **kwargs)


def compile_gradient(fn: Callable, *example: torch.Tensor, share_key: tuple | None = None,
                     target: str = "onnxruntime") -> torch.fx.GraphModule:
    """``fn`` computes attributions with ``torch.func`` (grad/vjp); the result is the same computation with every
    backward op written as forward ops. Trace with a batch of at least 2: symbolic tracing specialises size-1 dims.
    (An attribution module built with ``eager=True`` does not call this: it keeps ``fn`` itself.)

    ``functionalize`` first removes in-place updates of views (timm's ConvNeXt does them), which would otherwise
    leave ``as_strided`` scatters that ONNX cannot express.

    ``target`` "tensorrt" uses only backward forms that TensorRT's ONNX parser builds; "onnxruntime" may use faster
    ones it refuses (``rules.ONNXRUNTIME_FORMS``).
    """
    shared = _SHARED.get()
    if shared is not None and share_key is not None:
        key = (*share_key, target, *((tuple(t.shape), t.dtype) for t in example))
        if key not in shared:
            shared[key] = compile_gradient(fn, *example, target=target)
        return shared[key]
    functional = torch.func.functionalize(fn, remove="mutations_and_views")
    try:
        with _FlattenedLinear():
            graph_module = make_fx(functional, decomposition_table=gradient_decompositions(target),
                                   tracing_mode="symbolic", _allow_non_fake_inputs=True)(*example)
    except NotSupportedError as exc:  # a rule that states what it lacks
        raise ExportError(f"cannot write the backward pass as forward ops: {exc}") from None
    except NotImplementedError as exc:  # torch's own, for an op its tracing cannot handle
        raise ExportError(f"cannot write the backward pass as forward ops: torch cannot trace it ({exc})") from None
    left = backward_ops_left(graph_module)
    if left:
        raise ExportError(f"no VJP rule for {', '.join(left)}: add one to auditor_rt.export.attribution.rules "
                          "(the export is refused rather than silently dropping that gradient)")
    outputs = check_batch_is_free(graph_module, example)
    batch = len(example[0]) + 1
    if isinstance(outputs, (tuple, list)) and all(isinstance(o, torch.Tensor) and o.dim() and len(o) == batch
                                                  for o in outputs):
        # What splice.py needs to export this graph once and stand in for it in each method's graph.
        graph_module.meta["auditor_rt_example"] = tuple(example)
        graph_module.meta["auditor_rt_outputs"] = [(tuple(o.shape[1:]), o.dtype) for o in outputs]
    return graph_module


def check_batch_is_free(graph_module: torch.fx.GraphModule, example):
    """Run the traced graph at another batch size (and return its outputs). Symbolic tracing can still pin the batch
    to the traced size (``F.linear`` on tokens did, before ``_FlattenedLinear``); such a graph would fail, or worse,
    at run time."""
    bigger = [torch.cat([value, value[:1]]) if isinstance(value, torch.Tensor) and value.dim() else value
              for value in example]
    try:
        with torch.no_grad():
            return graph_module(*bigger)
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[0]
        raise ExportError(f"the traced backward pass only works at the traced batch size ({detail}); this model's "
                          "ops pin the batch dimension during tracing, which auditor-rt cannot export yet") from None
