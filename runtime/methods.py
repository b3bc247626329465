"""The attribution methods and their parameters, declared once: names, defaults, what a CLI option says, and how
many images a graph runs per input image.

The exporter (``export/attribution``, which needs torch) builds its modules from these defaults, ``auditor-rt
export`` derives its method options from them, and the runtime reads a graph's parameters from its manifest entry,
falling back to these defaults for artifacts written before a parameter existed. A test keeps the exporter's
registry and this one equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    help: str
    option: str | None = None  # the `auditor-rt export` option that sets it; None: not a CLI option
    choices: tuple | None = None
    minimum: float | None = None


def _one(params: dict) -> int:
    return 1


@dataclass(frozen=True)
class Method:
    name: str
    params: tuple[Param, ...] = ()
    per_input: Callable[[dict], int] = _one  # images the graph runs per input image

    def defaults(self) -> dict:
        return {param.name: param.default for param in self.params}

    def resolved(self, given: dict | None) -> dict:
        """The defaults updated with ``given`` (None values keep the default)."""
        return {**self.defaults(), **{key: value for key, value in (given or {}).items() if value is not None}}


_STAGE = Param("stage", None, "Grad-CAM stage: a timm feature_info index or any module name (default: the last stage; "
                              "for a class-token ViT classifier, the last block's norm1).", option="--cam-stage")

METHODS: dict[str, Method] = {method.name: method for method in (
    Method("saliency"),
    Method("gradxinput"),
    Method("ig", (
        Param("steps", 32, "Integrated gradients: quadrature points, run as one batch.", "--ig-steps", minimum=1),
        Param("baseline", "black", "Integrated gradients: path start; 'input' adds a 'baseline' image input.",
              "--ig-baseline", choices=("black", "blur", "input")),
        Param("blur_sigma", 8.0, "Integrated gradients: the blur baseline's sigma, in input pixels."),
    ), per_input=lambda params: int(params["steps"]) + 2),  # the path points, the image and the baseline
    Method("smoothgrad", (
        Param("samples", 16, "SmoothGrad: noisy copies per image (the noise is a graph input, so its count can "
                             "also be chosen at run time)."),
        Param("noise_level", 0.15, "SmoothGrad: noise level as a fraction of each image's value range (the noise "
                                   "is an input).", "--smoothgrad-noise", minimum=0),
    ), per_input=lambda params: int(params["samples"]) + 1),
    Method("gradcam", (_STAGE,)),
    Method("gradcam++", (_STAGE,)),
    Method("rollout", (
        Param("head_fusion", "mean", "Attention rollout: how each layer's heads are fused.", "--rollout-heads",
              choices=("mean", "max")),
    )),
)}

KNOWN_METHODS = tuple(METHODS)


def graph_params(entry) -> dict:
    """An attribution graph's parameters: its manifest entry's, over the declared defaults."""
    method = METHODS.get(entry.method)
    given = entry.params or {}
    return method.resolved(given) if method is not None else dict(given)


def images_per_input(entry) -> int:
    """How many images a graph runs per input image (IG's path points, SmoothGrad's noisy copies): the manifest's
    ``images_per_input``, or from the method's parameters for artifacts written before it was recorded."""
    if entry.images_per_input is not None:
        return int(entry.images_per_input)
    method = METHODS.get(entry.method)
    return method.per_input(graph_params(entry)) if method is not None else 1
