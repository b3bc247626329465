"""Attention rollout (Abnar & Zuidema, 2020) for ViT-style backbones: how much each input patch flows, through every
attention layer and its residual path, into the tokens that the output reads.

Each layer's attention probabilities (heads fused by mean or max) get the identity added for the residual path and
are renormalised per row; their product over layers is the rollout R, where R[i, j] is the share of input token j
in output token i. The map weighs the rows by what the output reads:
- a class-token classifier reads the class token: its row;
- an average-pooling classifier reads every patch token equally;
- the risk head reads the patch grid through its risk map: rows weighted by the positive risk (uniform where
  the map has none), so the map shows where the evidence for risk came from.

Rollout needs no gradient; it is here because it answers the same question and runs from the same graphs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from auditor_rt.export.attribution.methods import Attribution, register_attribution
from auditor_rt.export.models.audit_module import AuditModule, normalize_per_image
from auditor_rt.runtime.errors import ConfigError

HEAD_FUSIONS = ("mean", "max")


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """timm's self-attention modules in forward order; their unfused path passes the probabilities through
    ``attn_drop``, where a hook can read them."""
    found = [m for m in model.modules() if hasattr(m, "qkv") and hasattr(m, "fused_attn") and hasattr(m, "attn_drop")]
    if not found:
        raise ConfigError(f"attention rollout needs a ViT-style backbone with self-attention blocks; "
                          f"{type(model).__name__} has none (use gradcam or saliency)")
    return found


class RolloutOutputs(NamedTuple):
    logit: torch.Tensor        # [N] the risk logit, or the logit of the target class
    rollout: torch.Tensor      # [N, H, W] in [0, 1] per image, at the input size
    rollout_raw: torch.Tensor  # [N, h, w] each patch's share; the rest comes from the prefix tokens


@register_attribution("rollout")
class AttentionRollout(Attribution):
    map_output = "rollout"
    raw_output = "rollout_raw"

    def __init__(self, audit: AuditModule, example: torch.Tensor, head_fusion: str = "mean", eager: bool = False,
                 target: str = "onnxruntime"):
        torch.nn.Module.__init__(self)
        if head_fusion not in HEAD_FUSIONS:
            raise ConfigError(f"unknown rollout head fusion {head_fusion!r}; choose from {', '.join(HEAD_FUSIONS)}")
        self.setup(audit, eager, target)  # no gradient inside: eager or not, the same module
        self.head_fusion = head_fusion
        self.prefix_tokens = audit.features.num_prefix_tokens
        model = audit.features.model
        self.attentions = attention_modules(model)
        self.reads = "risk" if not self.takes_target else getattr(model, "global_pool", "")
        if self.reads not in ("risk", "token", "avg"):
            raise ConfigError(f"attention rollout: the classifier pools its tokens with {self.reads!r}; rollout is "
                              "defined here for class-token ('token') and average ('avg') pooling")
        if self.reads == "token" and not self.prefix_tokens:
            raise ConfigError("attention rollout: the classifier pools a class token but the model has none")

    def params(self) -> dict:
        return {"head_fusion": self.head_fusion}

    def probabilities(self, x: torch.Tensor, run) -> tuple[object, list[torch.Tensor]]:
        """Run ``run(x)`` with the attention modules on their unfused path, recording each layer's probabilities."""
        captured: list[torch.Tensor] = []
        handles = [m.attn_drop.register_forward_hook(lambda module, inputs, output: captured.append(output))
                   for m in self.attentions]
        fused = [m.fused_attn for m in self.attentions]
        try:
            for m in self.attentions:
                m.fused_attn = False
            result = run(x)
        finally:
            for m, flag in zip(self.attentions, fused):
                m.fused_attn = flag
            for handle in handles:
                handle.remove()
        return result, captured

    def rollout(self, layers: list[torch.Tensor]) -> torch.Tensor:
        """[N, T, T] product of the residual-corrected, row-normalised attention of every layer."""
        result = None
        for probs in layers:
            fused = probs.mean(dim=1) if self.head_fusion == "mean" else probs.amax(dim=1)
            fused = fused + torch.eye(fused.shape[-1], dtype=fused.dtype)
            fused = fused / fused.sum(dim=-1, keepdim=True)
            result = fused if result is None else fused @ result
        return result

    def explain(self, x, target=None, noise=None, baseline=None):
        if self.takes_target:
            logits, layers = self.probabilities(x, self.model.logits)
            logit = (logits * F.one_hot(target, logits.shape[1]).to(logits.dtype)).sum(dim=1)
        else:
            out, layers = self.probabilities(x, lambda v: self.model.head(self.model.features(v)))
            logit = out.logit
        flow = self.rollout(layers)[:, :, self.prefix_tokens:]  # [N, T, P]: into each output token from each patch
        if self.reads == "token":
            share = flow[:, 0]
        elif self.reads == "avg":
            share = flow[:, self.prefix_tokens:].mean(dim=1)
        else:
            positive = F.relu(out.risk_map.flatten(1))
            total = positive.sum(dim=1, keepdim=True)
            weights = torch.where(total > 0, positive / total.clamp_min(1e-12),
                                  torch.full_like(positive, 1.0 / positive.shape[1]))
            share = (weights[:, :, None] * flow[:, self.prefix_tokens:]).sum(dim=1)
        side = int(round(share.shape[1] ** 0.5))
        raw = share.reshape(share.shape[0], side, side)
        heat = F.interpolate(raw[:, None], size=self.input_size, mode="bilinear", align_corners=False)[:, 0]
        return RolloutOutputs(logit, normalize_per_image(heat), raw)
