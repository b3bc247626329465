"""The attribution compiler: reverse-mode gradients written as ordinary forward ops, so they export to ONNX.

PyTorch's autograd builds the joint forward+backward graph (``torch.func.grad`` traced by ``make_fx``); every aten
``*_backward`` op in it is then replaced by forward ops from a registry of vector-Jacobian rules (``rules.py``).
Methods register themselves by name; importing this package registers them all.
"""

from auditor_rt.export.attribution import cam, paths, rollout  # noqa: F401  (register gradcam(++), ig, smoothgrad, rollout)
from auditor_rt.export.attribution.methods import ATTRIBUTIONS, create_attribution, register_attribution

__all__ = ["ATTRIBUTIONS", "create_attribution", "register_attribution"]
