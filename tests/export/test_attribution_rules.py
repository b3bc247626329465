"""Each VJP rule alone against ATen's own backward kernel on random shapes, and the compiler's refusal of a
backward op that has no rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from auditor_rt.export.attribution.compiler import compile_gradient
from auditor_rt.export.attribution.rules import (adaptive_avg_pool2d_backward, avg_pool2d_backward,
                                                 convolution_backward, max_pool2d_backward)
from auditor_rt.export.errors import ExportError
from auditor_rt.runtime.errors import NotSupportedError

aten = torch.ops.aten


def close(actual, expected, tol=1e-5):
    scale = max(1.0, float(expected.abs().max()))
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= tol * scale


@pytest.mark.parametrize("in_ch, out_ch, kernel, stride, padding, dilation, groups, size", [
    (3, 8, 3, 1, 1, 1, 1, 17),     # plain 3x3 (stride-1 path: flipped conv)
    (4, 6, 7, 2, 3, 1, 1, 32),     # stem-like 7x7 stride 2 (sub-pixel path: few input channels)
    (8, 8, 3, 1, 1, 1, 8, 15),     # depthwise
    (6, 12, 3, 2, 1, 1, 3, 16),    # grouped, stride 2, even input (output padding needed)
    (6, 12, 3, 2, 1, 1, 3, 17),    # grouped, stride 2, odd input
    (5, 7, 3, 1, 2, 2, 1, 13),     # dilated
    (4, 4, 1, 2, 0, 1, 1, 9),      # 1x1 stride 2 (shortcut), input larger than the conv can reach
    (3, 5, 4, 4, 0, 1, 1, 18),     # patchify with a remainder
    (4, 6, 3, 4, 1, 1, 2, 19),     # stride above the kernel: phases no tap reaches are zeros
    (6, 6, 5, 2, 2, 1, 6, 20),     # depthwise 5x5 stride 2 (EfficientNet)
    (4, 6, 3, 2, 1, 2, 1, 21),     # dilated and strided (transposed-conv path)
    (24, 8, 3, 2, 1, 1, 1, 16),    # wide strided layer (transposed-conv path: faster there in ORT)
])
def test_convolution_rule_matches_aten(in_ch, out_ch, kernel, stride, padding, dilation, groups, size):
    generator = torch.Generator().manual_seed(in_ch * 100 + size)
    x = torch.randn(2, in_ch, size, size + 1, generator=generator)
    weight = torch.randn(out_ch, in_ch // groups, kernel, kernel, generator=generator)
    out = F.conv2d(x, weight, None, stride, padding, dilation, groups)
    grad_out = torch.randn(out.shape, generator=generator)
    args = (grad_out, x, weight, [out_ch], [stride] * 2, [padding] * 2, [dilation] * 2, False, [0, 0], groups)
    expected_input, _, expected_bias = aten.convolution_backward(*args, [True, False, True])
    actual_input, _, actual_bias = convolution_backward(*args, [True, False, True])
    close(actual_input, expected_input)
    close(actual_bias, expected_bias)


def test_convolution_rule_refuses_weight_gradients():
    x, weight = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    grad_out = torch.randn(1, 3, 3, 3)
    with pytest.raises(NotSupportedError, match="weight gradients"):
        convolution_backward(grad_out, x, weight, [3], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, True, False])


@pytest.mark.parametrize("kernel, stride, padding, ceil_mode, include_pad, override, size", [
    (2, 2, 0, False, True, None, 8),
    (3, 2, 1, False, True, None, 9),
    (3, 2, 1, False, False, None, 10),   # border cells divide by fewer elements
    (3, 2, 1, True, False, None, 10),    # ceil mode: a partial last window
    (3, 1, 1, False, True, 4, 7),        # divisor override
    (2, 2, 0, True, True, None, 7),      # ceil mode with an odd input
])
def test_avg_pool_rule_matches_aten(kernel, stride, padding, ceil_mode, include_pad, override, size):
    generator = torch.Generator().manual_seed(size * 7 + kernel)
    x = torch.randn(2, 3, size, size + 2, generator=generator)
    out = F.avg_pool2d(x, kernel, stride, padding, ceil_mode, include_pad, override)
    grad_out = torch.randn(out.shape, generator=generator)
    args = (grad_out, x, [kernel] * 2, [stride] * 2, [padding] * 2, ceil_mode, include_pad, override)
    close(avg_pool2d_backward(*args), aten.avg_pool2d_backward(*args))


@pytest.mark.parametrize("size_in, size_out", [((7, 7), (1, 1)), ((7, 9), (3, 4)), ((5, 5), (5, 5)), ((6, 4), (4, 3))])
def test_adaptive_avg_pool_rule_matches_aten(size_in, size_out):
    generator = torch.Generator().manual_seed(sum(size_in) + sum(size_out))
    x = torch.randn(2, 3, *size_in, generator=generator)
    grad_out = torch.randn(2, 3, *size_out, generator=generator)
    close(adaptive_avg_pool2d_backward(grad_out, x), aten._adaptive_avg_pool2d_backward(grad_out, x))


def _pool_input(kind: str, size: int, generator) -> torch.Tensor:
    x = torch.randn(2, 3, size, size + 1, generator=generator, dtype=torch.float64)
    if kind == "flat":  # every window is one tie
        return torch.zeros_like(x)
    if kind == "plateaus":  # ties of 2 to 9 cells in most windows, at several levels
        return torch.round(x)
    return x


@pytest.mark.parametrize("kind", ["random", "flat", "plateaus"])
@pytest.mark.parametrize("kernel, stride, padding, dilation, ceil_mode, size", [
    (3, 2, 1, 1, False, 16),   # resnet's stem pool
    (3, 2, 1, 1, False, 17),   # odd size: the last window reaches the padding
    (2, 2, 0, 1, False, 9),    # floor mode leaves the last row and column unreached
    (3, 2, 1, 1, True, 16),    # ceil mode: a last window past the padded input
    (2, 2, 0, 1, True, 9),
    (3, 1, 1, 1, False, 8),    # stride 1: overlapping windows share maxima
    (3, 2, 1, 2, False, 15),   # dilated
    (3, 3, 1, 1, True, 11),
])
def test_max_pool_rule_matches_aten_ties_included(kernel, stride, padding, dilation, ceil_mode, size, kind):
    """ATen's gradient, ties included: the first maximum of a window in row-major order takes it all. (Not bit for
    bit: where overlapping windows share a maximum, the transposed convolution adds their gradients in another
    order, about 1e-16 apart in FP64; a tie sent to the wrong cell would be off by a whole gradient.)"""
    x = _pool_input(kind, size, torch.Generator().manual_seed(size))
    args = ([kernel] * 2, [stride] * 2, [padding] * 2, [dilation] * 2, ceil_mode)
    out, indices = aten.max_pool2d_with_indices(x, *args)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    expected = aten.max_pool2d_with_indices_backward(grad_out, x, *args, indices)
    actual = max_pool2d_backward(grad_out, x, *args, torch.empty(0))  # the indices are not read
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-12)


def test_max_pool_rule_answers_a_changed_input():
    """The routing follows the input of each call (recomputed in the graph), not one frozen at export."""
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    grad_out = torch.ones(1, 1, 2, 2)
    args = ([2, 2], [2, 2], [0, 0], [1, 1], False)
    first = max_pool2d_backward(grad_out, x, *args, None)
    second = max_pool2d_backward(grad_out, x.flip(-1), *args, None)
    assert first[0, 0, 1, 1] == 1 and second[0, 0, 1, 0] == 1 and not torch.equal(first, second)


def test_compiled_gradient_equals_autograd_on_new_inputs():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, 2, 1), torch.nn.BatchNorm2d(4), torch.nn.GELU(),
                              torch.nn.AvgPool2d(2), torch.nn.Conv2d(4, 2, 1), torch.nn.AdaptiveAvgPool2d(1)).eval()

    def gradient(x):
        return torch.func.grad(lambda v: net(v).sum())(x)

    compiled = compile_gradient(gradient, torch.randn(2, 3, 16, 16))
    for seed in (1, 2):  # inputs never seen while tracing, at another batch size
        x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)
        expected, = torch.autograd.grad(net(x).sum(), x)
        close(compiled(x.detach()), expected)
    ops = {str(n.target) for n in compiled.graph.nodes if n.op == "call_function"}
    assert not any("backward" in op for op in ops)


def test_backward_op_without_a_rule_fails_and_names_it():
    def gradient(x):
        return torch.func.grad(lambda v: F.avg_pool3d(v, 2).sum())(x)

    with pytest.raises(ExportError, match="avg_pool3d_backward"):
        compile_gradient(gradient, torch.randn(2, 1, 4, 4, 4))


def test_attention_rule_matches_aten():
    from auditor_rt.export.attribution.rules import flash_attention_backward

    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=generator) for _ in range(3))
    out, logsumexp = aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)
    grad_out = torch.randn(out.shape, generator=generator)
    expected = aten._scaled_dot_product_flash_attention_for_cpu_backward(grad_out, q, k, v, out, logsumexp, 0.0, False)
    actual = flash_attention_backward(grad_out, q, k, v, out, logsumexp, 0.0, False)
    for a, e in zip(actual, expected):
        close(a, e)


def test_linear_on_tokens_keeps_the_batch_free():
    """F.linear on [N, T, C] under torch.func.grad pins N while tracing unless the compiler folds the leading dims."""
    torch.manual_seed(0)
    embed, mix = torch.nn.Linear(6, 8), torch.nn.Linear(8, 3)

    def score(tokens):
        hidden = F.gelu(embed(tokens))
        attended = F.scaled_dot_product_attention(hidden[:, None], hidden[:, None], hidden[:, None])[:, 0]
        return mix(attended).sum()

    compiled = compile_gradient(lambda x: torch.func.grad(score)(x), torch.randn(2, 5, 6))
    for batch in (1, 3, 4):
        x = torch.randn(batch, 5, 6, generator=torch.Generator().manual_seed(batch)).requires_grad_(True)
        expected, = torch.autograd.grad(score(x), x)
        close(compiled(x.detach()), expected)


@pytest.mark.parametrize("threshold", [0.0, 0.5, -1.0])
def test_threshold_rule_matches_aten(threshold):
    from auditor_rt.export.attribution.rules import threshold_backward

    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 9, 9, generator=generator)
    x[0, 0, :3] = threshold  # exactly at the threshold: no gradient, as in ATen
    grad = torch.randn(x.shape, generator=generator)
    close(threshold_backward(grad, x, threshold), aten.threshold_backward(grad, x, threshold), tol=0)


def test_a_rule_that_lacks_a_case_refuses_the_export_in_one_line():
    weight = torch.randn(3, 2, 3, 3)

    def score(x):
        return F.conv_transpose2d(x, weight).sum()

    with pytest.raises(ExportError, match="transposed convolution has no rule"):
        compile_gradient(lambda x: torch.func.grad(score)(x), torch.randn(2, 3, 8, 8))
