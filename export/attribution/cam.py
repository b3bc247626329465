"""Grad-CAM and Grad-CAM++ at any feature stage named by timm's ``feature_info`` (default: the last).

The gradient of the risk logit with respect to a stage's output is taken through a zero "probe" added to that
output by a forward hook: d logit / d probe at probe = 0 is d logit / d activation, and the later stages' backward
pass is compiled to forward ops like every other gradient here.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from auditor_rt.export.attribution.methods import Attribution, example_target, register_attribution
from auditor_rt.export.models.audit_module import AuditModule, normalize_per_image
from auditor_rt.runtime.errors import ConfigError


class _Probe:
    """Forward hook that records a stage's output and returns it plus ``self.value``."""

    def __init__(self):
        self.value = None
        self.activation = None

    def __call__(self, module, inputs, output):
        self.activation = output
        return output if self.value is None else output + self.value


def stage_names(audit: AuditModule) -> list[str]:
    return [info["module"] for info in audit.features.model.feature_info]


def _reads_class_token_only(audit: AuditModule) -> bool:
    """A classifier that pools the class token: after its last block, patch tokens no longer reach the logits."""
    model = audit.features.model
    return audit.takes_target and audit.features.num_prefix_tokens > 0 and getattr(model, "global_pool", "") == "token"


def _stage_module(audit: AuditModule, stage: str | int | None) -> tuple[str, torch.nn.Module]:
    """A stage by feature_info index or name, or any module by its dotted name. The default is the last stage, except
    for class-token classifiers (ViT), where it is the last block's first norm (the input of its attention): the
    last block's patch-token outputs have no gradient there."""
    model = audit.features.model
    names = stage_names(audit)
    if stage is None or stage == -1:
        name = names[-1]
        if _reads_class_token_only(audit) and isinstance(getattr(model.get_submodule(name), "norm1", None),
                                                         torch.nn.Module):
            name = f"{name}.norm1"
    elif isinstance(stage, int) or str(stage).lstrip("-").isdigit():
        index = int(stage)
        if not -len(names) <= index < len(names):
            raise ConfigError(f"stage {index} out of range: the backbone has stages 0..{len(names) - 1} ({names})")
        name = names[index]
    else:
        name = str(stage)
        try:
            model.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"unknown stage {stage!r}; the backbone's feature_info stages are {names} "
                              "(any module name of the model works too)") from None
    return name, model.get_submodule(name)


class CamOutputs(NamedTuple):
    logit: torch.Tensor  # [N]
    cam: torch.Tensor    # [N, H, W] in [0, 1] per image, at the input size
    cam_raw: torch.Tensor  # [N, h, w] before upsampling and normalisation


def _as_grid(tensor: torch.Tensor, prefix_tokens: int) -> torch.Tensor:
    """[N, C, h, w] stays; ViT tokens [N, T, C] drop their prefix tokens and become [N, C, s, s]."""
    if tensor.dim() == 4:
        return tensor
    tokens = tensor[:, prefix_tokens:]
    side = int(round(tokens.shape[1] ** 0.5))
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


@register_attribution("gradcam")
class GradCam(Attribution):
    """ReLU of the activation weighted by its spatially averaged gradient (Selvaraju et al.)."""

    map_output = "cam"
    raw_output = "cam_raw"

    def __init__(self, audit: AuditModule, example: torch.Tensor, stage: str | int | None = None, eager: bool = False,
                 target: str = "onnxruntime"):
        torch.nn.Module.__init__(self)
        self.setup(audit, eager, target)
        self.stage, module = _stage_module(audit, stage)
        self.prefix_tokens = audit.features.num_prefix_tokens
        probe = _Probe()
        handle = module.register_forward_hook(probe)
        try:
            with torch.no_grad():
                x = self.normalize(example)
                audit.features(x)
                shape = tuple(probe.activation.shape[1:])

            def gradient(x, target):
                def objective(value):
                    probe.value = value
                    score = audit.score(x, target)
                    probe.value = None
                    return score.sum(), (score, probe.activation)

                zeros = x.new_zeros((x.shape[0], *shape))
                grad, (score, activation) = torch.func.grad(objective, has_aux=True)(zeros)
                return grad, activation, score

            traced = gradient if self.takes_target else (lambda x: gradient(x, None))
            self.compiled = self.differentiate(traced, x, *example_target(audit, len(x)),
                                               share_key=("stage gradient", id(audit), self.stage))
        finally:
            if not eager:  # a compiled graph holds the probe; eager autograd needs the hook at every call
                handle.remove()
        target = example_target(audit, len(x))
        with torch.no_grad():
            grad = self.gradient(x, target[0] if target else None)[0]
        if not bool(_as_grid(grad, self.prefix_tokens).abs().amax()):
            raise ConfigError(f"Grad-CAM at stage {self.stage!r}: the output's gradient there is zero on every "
                              "cell, so every map would be blank; choose an earlier stage with --cam-stage")

    def params(self) -> dict:
        return {"stage": self.stage}

    def weights(self, activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad.mean(dim=(2, 3), keepdim=True)

    def explain(self, x, target=None, noise=None, baseline=None):
        grad, activation, logit = self.gradient(x, target)
        activation, grad = _as_grid(activation, self.prefix_tokens), _as_grid(grad, self.prefix_tokens)
        raw = F.relu((self.weights(activation, grad) * activation).sum(dim=1))
        cam = F.interpolate(raw[:, None], size=self.input_size, mode="bilinear", align_corners=False)[:, 0]
        return CamOutputs(logit, normalize_per_image(cam), raw)


@register_attribution("gradcam++")
class GradCamPlusPlus(GradCam):
    """Positive gradients weighted per cell by the closed-form alpha of Chattopadhyay et al. (with exp scores)."""

    def weights(self, activation, grad):
        squared, cubed = grad.pow(2), grad.pow(3)
        total = activation.sum(dim=(2, 3), keepdim=True)
        alpha = squared / (2 * squared + total * cubed).where(grad != 0, torch.ones_like(grad))
        alpha = alpha.where(grad != 0, torch.zeros_like(grad))
        return (alpha * F.relu(grad)).sum(dim=(2, 3), keepdim=True)
