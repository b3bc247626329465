"""Vector-Jacobian rules: each aten backward op as forward ops that ONNX has, keyed by op.

torch._decomp already decomposes most backward ops (batch/layer/group norm, ReLU's threshold, GELU, SiLU, sigmoid,
hard-swish, max-pool, softmax); the ones it lacks are written here. Each rule is tested alone against autograd.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch._decomp import decomposition_table

aten = torch.ops.aten
VJP_RULES: dict = {}


def register_vjp(op) -> Callable:
    def wrap(rule: Callable) -> Callable:
        VJP_RULES[op] = rule
        return rule

    return wrap


def _per_dim(values, dims: int) -> list[int]:
    values = list(values)
    return values * dims if len(values) == 1 else values


@register_vjp(aten.convolution_backward.default)
def convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
                         output_padding, groups, output_mask):
    """Input gradient of a convolution as a transposed convolution of ``grad_output`` with the same weight; at stride
    1 as a plain convolution with the flipped, channel-swapped weight (ORT runs Conv faster than ConvTranspose)."""
    if transposed:
        raise NotImplementedError("the gradient through a transposed convolution has no rule yet")
    if output_mask[1]:
        raise NotImplementedError("weight gradients are not needed for attribution and have no rule")
    dims = weight.dim() - 2
    stride, padding, dilation = (_per_dim(v, dims) for v in (stride, padding, dilation))
    kernel = list(weight.shape[2:])
    grad_input = grad_bias = None
    if output_mask[0]:
        full_padding = [d * (k - 1) - p for k, p, d in zip(kernel, padding, dilation)]
        if all(s == 1 for s in stride) and all(p >= 0 for p in full_padding):
            out_channels, in_per_group = weight.shape[0], weight.shape[1]
            swapped = (weight.reshape(groups, out_channels // groups, in_per_group, *kernel).transpose(1, 2)
                       .reshape(in_per_group * groups, out_channels // groups, *kernel))
            flipped = torch.flip(swapped, dims=list(range(2, 2 + dims)))
            grad_input = aten.convolution(grad_output, flipped, None, [1] * dims, full_padding, dilation, False,
                                          [0] * dims, groups)
        else:
            extra = []
            for i in range(dims):
                produced = ((grad_output.shape[2 + i] - 1) * stride[i] - 2 * padding[i]
                            + dilation[i] * (kernel[i] - 1) + 1)
                extra.append(input.shape[2 + i] - produced)
            grad_input = aten.convolution(grad_output, weight, None, stride, padding, dilation, True,
                                          [max(e, 0) for e in extra], groups)
            if any(e < 0 for e in extra):
                grad_input = grad_input[(slice(None), slice(None), *(slice(0, n) for n in input.shape[2:]))]
    if output_mask[2]:
        grad_bias = grad_output.sum([0, *range(2, grad_output.dim())])
    return grad_input, None, grad_bias


def _avg_pool_divisors(size_in, size_out, kernel, stride, pad, include_pad, override):
    """1/divisor for each output cell of a 2-D average pool, as ATen's CPU kernel counts it; a constant."""
    import numpy as np  # numpy, not torch: this must not be traced

    inverse = np.zeros(size_out, dtype=np.float64)
    for oh in range(size_out[0]):
        for ow in range(size_out[1]):
            counts = []
            for o, k, s, p, n in ((oh, kernel[0], stride[0], pad[0], size_in[0]),
                                  (ow, kernel[1], stride[1], pad[1], size_in[1])):
                start, end = o * s - p, min(o * s - p + k, n + p)
                padded = end - start
                counts.append(padded if include_pad else min(end, n) - max(start, 0))
            divisor = override or counts[0] * counts[1]
            inverse[oh, ow] = 1.0 / divisor if divisor > 0 else 0.0
    return inverse


@register_vjp(aten.avg_pool2d_backward.default)
def avg_pool2d_backward(grad_output, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override):
    """Spread each output cell's gradient over its window: a depthwise transposed convolution with a ones kernel
    after scaling by 1/divisor. The divisor map is built as a constant (ONNX's AveragePool has no override)."""
    kernel = _per_dim(kernel_size, 2)
    stride = _per_dim(stride, 2) if len(stride) else kernel
    padding = _per_dim(padding, 2)
    channels, size_in, size_out = input.shape[1], tuple(input.shape[2:]), tuple(grad_output.shape[2:])
    inverse = _avg_pool_divisors(size_in, size_out, kernel, stride, padding, count_include_pad, divisor_override)
    if (inverse == inverse.flat[0]).all():
        scaled = grad_output * float(inverse.flat[0])
    else:
        scaled = grad_output * torch.tensor(inverse, dtype=grad_output.dtype)
    ones = torch.ones(channels, 1, *kernel, dtype=grad_output.dtype)
    extra = [size_in[i] - ((size_out[i] - 1) * stride[i] - 2 * padding[i] + kernel[i]) for i in range(2)]
    grad = aten.convolution(scaled, ones, None, stride, padding, [1, 1], True, [max(e, 0) for e in extra], channels)
    if any(e < 0 for e in extra):
        grad = grad[:, :, :size_in[0], :size_in[1]]
    return grad


def _adaptive_pool_matrix(size_in: int, size_out: int, dtype) -> torch.Tensor:
    """[size_out, size_in] averaging matrix of adaptive pooling along one axis (PyTorch's start/end rule)."""
    matrix = torch.zeros(size_out, size_in, dtype=dtype)
    for o in range(size_out):
        start, end = (o * size_in) // size_out, -(-((o + 1) * size_in) // size_out)
        matrix[o, start:end] = 1.0 / (end - start)
    return matrix


@register_vjp(aten._adaptive_avg_pool2d_backward.default)
def adaptive_avg_pool2d_backward(grad_output, input):
    """Adaptive average pooling is linear and separable: its gradient is A_h^T G A_w with two constant matrices."""
    rows = _adaptive_pool_matrix(int(input.shape[-2]), int(grad_output.shape[-2]), grad_output.dtype)
    cols = _adaptive_pool_matrix(int(input.shape[-1]), int(grad_output.shape[-1]), grad_output.dtype)
    return rows.t() @ grad_output @ cols


def _copy_of(view_op):
    """functionalize() emits X_copy ops that torch.onnx lacks; a view plus a contiguous clone means the same."""
    return lambda *args, **kwargs: view_op(*args, **kwargs).clone(memory_format=torch.contiguous_format)


def gradient_decompositions() -> dict:
    """The table for make_fx: torch's own decompositions of backward ops, then ours (which win)."""
    table = {op: fn for op, fn in decomposition_table.items() if "backward" in op.name()}
    table.update(VJP_RULES)
    table[aten.slice_copy.Tensor] = _copy_of(aten.slice.Tensor)
    table[aten.select_copy.int] = _copy_of(aten.select.int)
    return table
