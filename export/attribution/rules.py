"""Vector-Jacobian rules: each aten backward op as forward ops that ONNX has, keyed by op.

torch._decomp already decomposes most backward ops (batch/layer/group norm, ReLU's threshold, GELU, SiLU, sigmoid,
hard-swish, max-pool, softmax); the ones it lacks are written here. Each rule is tested alone against autograd.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch._decomp import decomposition_table

from auditor_rt.runtime.errors import NotSupportedError

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


SUBPIXEL_MAX_CHANNELS = 16


def _subpixel_input_gradient(grad_output, input_shape, weight, stride: int, padding, groups: int):
    """Input gradient of a 2-D convolution with one stride s > 1 on both axes, as a stride-1 convolution followed by
    a pixel shuffle (no transposed convolution).

    With i' = i + padding: grad_x[i' = q*s + r] = sum_m grad_out[q - m] * W[r + m*s]. Each phase r is a stride-1
    correlation of grad_out with the sub-kernel W[r::s] flipped; all s*s phases run as one convolution with
    s*s times the output channels, and ``pixel_shuffle`` interleaves them. Phases that no kernel tap reaches (a
    1x1 kernel at stride 2) are zeros and are not computed.
    """
    out_channels, in_per_group, kh, kw = weight.shape
    taps = -(-max(kh, kw) // stride)  # M: kernel taps per phase and axis
    padded = F.pad(weight, (0, taps * stride - kw, 0, taps * stride - kh))
    # [Cout, Cin/g, M, s, M, s] with tap index t = m*s + r, flipped in m -> [g, Cin/g, s, s, Cout/g, M, M]
    phased = padded.reshape(out_channels, in_per_group, taps, stride, taps, stride).flip(2, 4)
    phased = phased.reshape(groups, out_channels // groups, in_per_group, taps, stride, taps, stride)
    phased = phased.permute(0, 2, 4, 6, 1, 3, 5)
    live = [(rh, rw) for rh in range(stride) for rw in range(stride) if rh < kh and rw < kw]
    kernels = torch.stack([phased[:, :, rh, rw] for rh, rw in live], dim=2)  # [g, Cin/g, P, Cout/g, M, M]
    kernels = kernels.reshape(groups * in_per_group * len(live), out_channels // groups, taps, taps)
    size_in = [int(n) for n in input_shape[2:]]
    size_out = [int(n) for n in grad_output.shape[2:]]
    cells = [(padding[i] + size_in[i] - 1) // stride + 1 for i in range(2)]  # q = 0 .. cells-1 per axis
    right = [max(0, cells[i] - size_out[i]) for i in range(2)]
    grad = F.pad(grad_output, (taps - 1, right[1], taps - 1, right[0]))
    phases = F.conv2d(grad, kernels, None, 1, 0, 1, groups)[:, :, :cells[0], :cells[1]]
    batch, channels = phases.shape[0], groups * in_per_group
    if len(live) < stride * stride:
        computed = phases.reshape(batch, channels, len(live), cells[0], cells[1])
        zeros = torch.zeros_like(computed[:, :, :1])
        order = {phase: k for k, phase in enumerate(live)}
        phases = torch.cat([computed[:, :, order[(rh, rw)]:order[(rh, rw)] + 1] if (rh, rw) in order else zeros
                            for rh in range(stride) for rw in range(stride)], dim=2)
        phases = phases.reshape(batch, channels * stride * stride, cells[0], cells[1])
    full = F.pixel_shuffle(phases, stride)
    return full[:, :, padding[0]:padding[0] + size_in[0], padding[1]:padding[1] + size_in[1]]


@register_vjp(aten.convolution_backward.default)
def convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
                         output_padding, groups, output_mask):
    """Input gradient of a convolution, in the form ONNX Runtime's CPU provider runs fastest (measured on resnet50's
    layers at batch 8):
    - stride 1: a plain convolution with the flipped, channel-swapped weight;
    - strided with at most ``SUBPIXEL_MAX_CHANNELS`` input channels (the stem's gradient to the image): s*s phase
      convolutions in one, then a pixel shuffle (11.4 ms against 15.4 ms for ConvTranspose on the 7x7 stem);
    - otherwise a transposed convolution: for wide strided layers the phase convolution plus its pixel shuffle was
      slower (14.6 against 10.9 ms for a 3x3 stride-2 layer with 128 channels; 1x1 stride-2 shortcuts lost too)."""
    if transposed:
        raise NotSupportedError("the gradient through a transposed convolution has no rule yet")
    if output_mask[1]:
        raise NotSupportedError("weight gradients are not needed for attribution and have no rule")
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
        elif (dims == 2 and stride[0] == stride[1] > 1 and all(d == 1 for d in dilation)
              and weight.shape[1] * groups <= SUBPIXEL_MAX_CHANNELS):
            grad_input = _subpixel_input_gradient(grad_output, input.shape, weight, stride[0], padding, groups)
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


@register_vjp(aten._scaled_dot_product_flash_attention_for_cpu_backward.default)
def flash_attention_backward(grad_out, query, key, value, out, logsumexp, dropout_p, is_causal, attn_mask=None,
                             scale=None):
    """Attention's backward from its definition, recomputing the probabilities P = softmax(Q K^T s):
    dV = P^T dO, dS = P * (dO V^T - rowsum(dO V^T * P)), dQ = dS K s, dK = dS^T Q s."""
    if dropout_p or is_causal or attn_mask is not None:
        raise NotSupportedError("attention backward with dropout, a causal flag or a mask has no rule yet")
    scale = scale if scale is not None else query.shape[-1] ** -0.5
    probs = torch.softmax(query @ key.transpose(-2, -1) * scale, dim=-1)
    grad_value = probs.transpose(-2, -1) @ grad_out
    grad_probs = grad_out @ value.transpose(-2, -1)
    grad_scores = probs * (grad_probs - (grad_probs * probs).sum(dim=-1, keepdim=True))
    return grad_scores @ key * scale, grad_scores.transpose(-2, -1) @ query * scale, grad_value


@register_vjp(aten.max_pool2d_with_indices_backward.default)
def max_pool2d_backward(grad_output, input, kernel_size, stride, padding, dilation, ceil_mode, indices):
    """Each output cell's gradient to the first maximum of its window, recomputed from the input instead of read
    from the pool's indices: TensorRT's parser refuses MaxPool's indices output (onnx-tensorrt's op checker,
    "TensorRT does not support the indices output in MaxPool!"), and ScatterElements with an add reduction needs a
    plugin there. The window's k*k values are strided slices of the -inf-padded input; ``argmax`` over them picks
    the first maximum in row-major window order, PyTorch's tie rule (ONNX ArgMax with select_last_index=0); a
    one-hot of that choice routes the gradient, and a depthwise transposed convolution with a one-hot kernel per
    window position scatters it back. Ties (flat images, plateaus) therefore send the whole gradient to one cell,
    as ATen does."""
    kernel = _per_dim(kernel_size, 2)
    stride = _per_dim(stride, 2) if len(stride) else kernel
    padding, dilation = _per_dim(padding, 2), _per_dim(dilation, 2)
    channels, size_in, size_out = int(input.shape[1]), [int(n) for n in input.shape[2:]], \
        [int(n) for n in grad_output.shape[2:]]
    reach = [(size_out[i] - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1 for i in range(2)]  # padded extent
    beyond = [max(0, reach[i] - size_in[i] - 2 * padding[i]) for i in range(2)]  # ceil mode's last windows
    padded = F.pad(input, (padding[1], padding[1] + beyond[1], padding[0], padding[0] + beyond[0]),
                   value=float("-inf"))
    positions = [(kh, kw) for kh in range(kernel[0]) for kw in range(kernel[1])]
    windows = torch.stack([padded[:, :, kh * dilation[0]:kh * dilation[0] + reach[0] - dilation[0] * (kernel[0] - 1):stride[0],
                                  kw * dilation[1]:kw * dilation[1] + reach[1] - dilation[1] * (kernel[1] - 1):stride[1]]
                           for kh, kw in positions], dim=2)  # [N, C, k*k, Ho, Wo]
    first_max = windows.argmax(dim=2, keepdim=True)
    slots = torch.arange(len(positions)).reshape(1, 1, -1, 1, 1)
    routed = (first_max == slots).to(grad_output.dtype) * grad_output.unsqueeze(2)
    scatter = torch.zeros(channels * len(positions), 1, *kernel, dtype=grad_output.dtype)
    for slot, (kh, kw) in enumerate(positions):
        scatter[slot::len(positions), 0, kh, kw] = 1.0
    grad = aten.convolution(routed.flatten(1, 2), scatter, None, stride, [0, 0], dilation, True, [0, 0], channels)
    short = [max(0, padding[i] + size_in[i] - reach[i]) for i in range(2)]  # floor mode's unreached edge
    if any(short):
        grad = F.pad(grad, (0, short[1], 0, short[0]))
    return grad[:, :, padding[0]:padding[0] + size_in[0], padding[1]:padding[1] + size_in[1]]


@register_vjp(aten.threshold_backward.default)
def threshold_backward(grad_output, self, threshold):
    """ReLU's backward: the gradient where the activation passed the threshold. As a product with a float mask,
    not torch's ``where``: ONNX Runtime's Where took 9.9 ms on a [8, 256, 56, 56] tensor, Greater + Cast + Mul
    3.8 ms, and resnet50 has about fifty of these."""
    return grad_output * (self > threshold).to(grad_output.dtype)


def _is_whole_reshape(numel, size, stride, offset) -> bool:
    """True when as_strided(size, stride, offset) reads every element once in row-major order: a reshape.
    Strides of size-1 dims do not matter (autograd of a flatten after global pooling gives such strides)."""
    expected, contiguous = 1, []
    for dim in reversed(list(size)):
        contiguous.append(expected)
        expected = expected * dim
    contiguous.reverse()
    whole = all(dim == 1 or st == cs for dim, st, cs in zip(size, stride, contiguous))
    return whole and not offset and numel == expected


@register_vjp(aten.as_strided_copy.default)
def as_strided_copy(x, size, stride, storage_offset=None):
    if not _is_whole_reshape(x.numel(), size, stride, storage_offset):
        raise NotSupportedError(f"as_strided with size {list(size)}, stride {list(stride)} is not a reshape")
    return x.reshape(size).clone(memory_format=torch.contiguous_format)


@register_vjp(aten.as_strided_scatter.default)
def as_strided_scatter(base, src, size, stride, storage_offset=None):
    if not _is_whole_reshape(base.numel(), size, stride, storage_offset):
        raise NotSupportedError(f"as_strided_scatter with size {list(size)}, stride {list(stride)} is not a reshape")
    return src.reshape(base.shape).clone(memory_format=torch.contiguous_format)


def _copy_of(view_op):
    """functionalize() emits X_copy ops that torch.onnx lacks; a view plus a contiguous clone means the same."""
    return lambda *args, **kwargs: view_op(*args, **kwargs).clone(memory_format=torch.contiguous_format)


# Backward ops whose TensorRT-buildable rule is slower in ONNX Runtime on CPU than torch's own decomposition, which
# TensorRT's parser refuses. For ``target`` "onnxruntime" torch's form is kept. benchmarks/max_pool_backward.py,
# resnet50 at 224 on 2 AMD EPYC cores: the stem pool's backward 4.85 -> 5.22 ms at batch 1, 21.3 -> 44.4 ms at 8;
# the whole saliency graph 44.0 -> 45.6 ms and 338 -> 368 ms.
ONNXRUNTIME_FORMS = (aten.max_pool2d_with_indices_backward.default,)
TARGETS = ("onnxruntime", "tensorrt")


def gradient_decompositions(target: str = "onnxruntime") -> dict:
    """The table for make_fx: torch's own decompositions of backward ops, then ours (which win), except where
    ``target`` is onnxruntime and torch's form runs faster there (``ONNXRUNTIME_FORMS``)."""
    if target not in TARGETS:
        raise ValueError(f"target {target!r}: choose {' or '.join(TARGETS)}")
    table = {op: fn for op, fn in decomposition_table.items() if "backward" in op.name()}
    # The fused attention kernel as math, so that its forward exports and pairs with the backward rule above.
    fused = aten._scaled_dot_product_flash_attention_for_cpu.default
    if fused in decomposition_table:
        table[fused] = decomposition_table[fused]
    table.update({op: rule for op, rule in VJP_RULES.items()
                  if target == "tensorrt" or op not in ONNXRUNTIME_FORMS})
    # functionalize() turns views into X_copy ops; the ONNX exporter lowers several of them through
    # as_strided_scatter, which ONNX cannot express. A view plus a contiguous clone means the same and exports.
    for copy_op, view_op in ((aten.slice_copy.Tensor, aten.slice.Tensor), (aten.select_copy.int, aten.select.int),
                             (aten.view_copy.default, aten.view.default),
                             (aten.unsqueeze_copy.default, aten.unsqueeze.default),
                             (aten.squeeze_copy.dims, aten.squeeze.dims), (aten.squeeze_copy.dim, aten.squeeze.dim),
                             (aten.expand_copy.default, aten.expand.default),
                             (aten.permute_copy.default, aten.permute.default),
                             (aten.transpose_copy.int, aten.transpose.int), (aten.t_copy.default, aten.t.default)):
        table[copy_op] = _copy_of(view_op)
    return table
