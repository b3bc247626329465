"""Attribution methods as exportable modules, one small class each over a shared base (``@register_attribution``,
``create_attribution(name, audit, example, **params)``).

Every method takes uint8 NHWC images (plus its own inputs, e.g. SmoothGrad's noise) and returns named maps. The
gradients inside are compiled to forward ops by ``compile_gradient`` when the module is built, so the exported
graph recomputes them for every input.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import nn

from auditor_rt.export.attribution.compiler import compile_gradient
from auditor_rt.export.models.classifier import resolve_target
from auditor_rt.export.models.audit_module import AuditModule
from auditor_rt.runtime.errors import ConfigError

ATTRIBUTIONS: dict[str, type] = {}


def register_attribution(name: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        cls.method = name
        ATTRIBUTIONS[name] = cls
        return cls

    return wrap


def create_attribution(name: str, audit: AuditModule, example: torch.Tensor, eager: bool = False,
                       target: str = "onnxruntime", **params) -> "Attribution":
    """The ``name`` method's module over ``audit``, its gradients compiled to forward ops so that it exports. With
    ``eager``, it takes them with PyTorch's own autograd at call time instead (and does not export): the reference
    that ``verify`` and the parity check compare exported graphs with, which so checks the compiler too.
    ``target``: where the graph will run, "onnxruntime" or "tensorrt" (``compiler.compile_gradient``)."""
    if name not in ATTRIBUTIONS:
        raise ConfigError(f"unknown attribution method {name!r}; choose from {', '.join(sorted(ATTRIBUTIONS))}")
    return ATTRIBUTIONS[name](audit, example, eager=eager, target=target, **params).eval()


def input_gradient_fn(model):
    """x (normalised NCHW) [, target] -> (d sum(score) / dx, score): each sample's own gradient, as samples are
    independent. ``score`` is the risk logit, or for a classifier the logit of each sample's target class."""
    if model.takes_target:
        def objective(x, target):
            score = model.score(x, target)
            return score.sum(), score

        return lambda x, target: torch.func.grad(objective, has_aux=True)(x, target)

    def objective(x):
        score = model.score(x)
        return score.sum(), score

    return lambda x: torch.func.grad(objective, has_aux=True)(x)


def example_target(model, batch: int) -> tuple:
    """The traced example of the target input, if the model takes one."""
    return (torch.zeros(batch, dtype=torch.int64),) if model.takes_target else ()


class Attribution(nn.Module):
    """Holds the preprocessing and the compiled input gradient; subclasses override ``explain``."""

    method = "base"
    signed = False
    map_output = ""  # the output that holds the map to show
    raw_output = ""  # the output to compare across classes (unnormalised); the map output unless it is normalised
    extra_inputs: tuple[str, ...] = ()

    def __init__(self, audit: AuditModule, example: torch.Tensor, eager: bool = False, target: str = "onnxruntime"):
        super().__init__()
        self.setup(audit, eager, target)
        with torch.no_grad():
            x = self.normalize(example)
        # Traced outside no_grad: under it, autograd of a Linear layer records an as_strided scatter (seen with
        # timm classifier heads) that ONNX cannot express.
        self.compiled = self.differentiate(input_gradient_fn(audit), x, *example_target(audit, len(x)),
                                           share_key=("input gradient", id(audit)))

    def setup(self, model, eager: bool, target: str = "onnxruntime") -> None:
        self.normalize, self.input_size, self.takes_target = model.normalize, model.input_size, model.takes_target
        self.model, self.eager, self.target = model, eager, target
        if self.takes_target:
            self.extra_inputs = (*self.extra_inputs, "target")

    def differentiate(self, fn, *example: torch.Tensor, share_key: tuple):
        """``fn`` (a ``torch.func`` gradient) compiled to forward ops, or ``fn`` itself in an eager module."""
        return fn if self.eager else compile_gradient(fn, *example, share_key=share_key, target=self.target)

    def gradient(self, x: torch.Tensor, target: torch.Tensor | None):
        return self.compiled(x, target) if self.takes_target else self.compiled(x)

    def forward(self, image: torch.Tensor, noise=None, baseline=None, target=None):
        """Inputs by name, so every graph takes ``image`` plus only the inputs its method needs."""
        x = self.normalize(image)
        if self.takes_target:
            with torch.no_grad():  # -1 is the predicted class, fixed before any path or noise is added
                target = resolve_target(self.model.logits(x), target)
        return self.explain(x, target=target, noise=noise, baseline=baseline)

    def explain(self, x: torch.Tensor, target=None, noise=None, baseline=None):
        raise NotImplementedError(f"{type(self).__name__} must implement explain()")

    def params(self) -> dict:
        return {}


class SaliencyOutputs(NamedTuple):
    logit: torch.Tensor     # [N]
    saliency: torch.Tensor  # [N, H, W] max over channels of |d logit / d x|
    gradient: torch.Tensor  # [N, H, W] sum over channels of d logit / d x (signed)


@register_attribution("saliency")
class Saliency(Attribution):
    map_output = "saliency"

    def explain(self, x, target=None, noise=None, baseline=None):
        grad, logit = self.gradient(x, target)
        return SaliencyOutputs(logit, grad.abs().amax(dim=1), grad.sum(dim=1))


class GradientInputOutputs(NamedTuple):
    logit: torch.Tensor
    grad_x_input: torch.Tensor  # [N, H, W] sum over channels of gradient * input (signed)


@register_attribution("gradxinput")
class GradientTimesInput(Attribution):
    signed = True
    map_output = "grad_x_input"

    def explain(self, x, target=None, noise=None, baseline=None):
        grad, logit = self.gradient(x, target)
        return GradientInputOutputs(logit, (grad * x).sum(dim=1))
