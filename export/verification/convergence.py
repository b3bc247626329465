"""Does an exported IG graph have enough steps? Its completeness gap, checked at export.

Integrated gradients should sum to the change of the logit along the path, and the graph's ``delta`` output is by
how much the sum misses: ``sum(ig) - (logit(image) - logit(baseline))``. So the gap relative to that change is
``|delta| / |sum(ig) - delta|``, from the graph's own outputs on the parity images, at no extra cost. Past
``GAP_LIMIT`` on the typical (median) image the quadrature is too coarse for the map to be trusted as an
attribution, and the export says how many steps would do: it runs the same image at twice the steps (through the
exported gradient graph in ONNX Runtime, or eager PyTorch), and where that is still not enough, extrapolates from
the two gaps (a power law in the steps).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from auditor_rt.runtime.explain import IG_GAP_TOLERANCE, completeness_gaps

GAP_LIMIT = IG_GAP_TOLERANCE  # the same 10% that infer holds each image to
MAX_SUGGESTED_STEPS = 1024


class IGConvergenceWarning(UserWarning):
    """An IG graph's completeness gap exceeds ``GAP_LIMIT`` on the typical parity image."""


def reference_gap(module, feed: dict[str, np.ndarray], index: int, steps: int, chunk: int = 8,
                  gradient=None) -> float:
    """The completeness gap of image ``index`` at ``steps`` Gauss-Legendre points, the path run ``chunk`` points at
    a time (memory: resnet50 holds about 100 MB of activations per point). ``gradient(x, target) -> (d score / dx,
    score)`` on normalised NCHW float32 arrays computes the gradient, e.g. the exported gradient graph in ONNX
    Runtime (several times faster than PyTorch on a CPU); by default, eager PyTorch autograd in FP32."""
    model = module.model
    with torch.no_grad():
        x = module.normalize(torch.from_numpy(feed["image"][index:index + 1]))
        baseline = feed.get("baseline")
        reference = module.reference(x, None if baseline is None else torch.from_numpy(baseline[index:index + 1]))
    target = feed.get("target")
    target = None if target is None else target[index:index + 1]
    if gradient is None:
        gradient = _torch_gradient(model)
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas, weights = (nodes + 1) / 2, weights / 2
    x, reference = x.numpy().astype(np.float32), reference.numpy().astype(np.float32)
    total = np.zeros_like(x, dtype=np.float64)
    for start in range(0, steps, chunk):
        alpha = alphas[start:start + chunk].reshape(-1, 1, 1, 1).astype(np.float32)
        path = reference + alpha * (x - reference)
        grad, _ = gradient(path, None if target is None else np.repeat(target, len(path)))
        total += (grad.astype(np.float64) * weights[start:start + chunk].reshape(-1, 1, 1, 1)).sum(axis=0,
                                                                                                 keepdims=True)
    _, scores = gradient(np.concatenate([x, reference]), None if target is None else np.repeat(target, 2))
    change = float(scores[0]) - float(scores[1])
    delta = float((total * (x - reference)).sum()) - change
    return abs(delta) / max(abs(change), 1e-12)


def _torch_gradient(model):
    def gradient(points: np.ndarray, target: np.ndarray | None):
        path = torch.from_numpy(points).requires_grad_(True)
        with torch.enable_grad():
            score = model.score(path) if target is None else model.score(path, torch.from_numpy(target))
            (grad,) = torch.autograd.grad(score.sum(), path)
        return grad.numpy(), score.detach().numpy()

    return gradient


def onnx_gradient(model_proto):
    """``gradient`` for ``reference_gap`` from an exported gradient graph (inputs x0 [, x1 target], outputs grad
    and score first)."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [value.name for value in session.get_inputs()]

    def gradient(points: np.ndarray, target: np.ndarray | None):
        feed = {names[0]: points, **({names[1]: target} if target is not None and len(names) > 1 else {})}
        grad, score = session.run(None, feed)[:2]
        return grad, score

    return gradient


def suggested_steps(steps: int, gap: float, doubled_gap: float, limit: float = GAP_LIMIT) -> tuple[int, str]:
    """Steps to bring the gap under ``limit``: measured when twice the steps do, else extrapolated with the order
    seen between ``steps`` and ``2 * steps`` (gap ~ steps^-p, p kept within [0.5, 4])."""
    if doubled_gap <= limit:
        return 2 * steps, f"measured: {2 * steps} steps give {doubled_gap:.0%}"
    order = math.log2(gap / doubled_gap) if doubled_gap > 0 and gap > doubled_gap else 0.5
    order = min(max(order, 0.5), 4.0)
    needed = 2 * steps * (doubled_gap / limit) ** (1.0 / order)
    needed = int(min(MAX_SUGGESTED_STEPS, 8 * math.ceil(needed / 8)))
    return needed, (f"extrapolated: {2 * steps} steps still give {doubled_gap:.0%}, the gap falls as "
                    f"steps^-{order:.1f}")


def check_completeness(module, actual: dict[str, np.ndarray], feed: dict[str, np.ndarray], progress=None,
                       limit: float = GAP_LIMIT, gradient=None) -> dict:
    """The record for the manifest: the gap on each parity image and its median; past ``limit``, one line with the
    steps that would be needed (a progress line, or an ``IGConvergenceWarning`` where progress is silent)."""
    gaps = completeness_gaps(actual["ig"], actual["delta"])
    median = float(np.median(gaps))
    record = {"gap_median": round(median, 4), "gaps": [round(float(g), 4) for g in gaps], "limit": limit,
              "steps": module.steps, "images": f"{len(gaps)} random parity images",
              "definition": "|delta| / |logit(image) - logit(baseline)|"}
    if median <= limit:
        return record
    typical = int(np.argsort(gaps)[len(gaps) // 2])
    doubled = reference_gap(module, feed, typical, 2 * module.steps, gradient=gradient)
    needed, how = suggested_steps(module.steps, float(gaps[typical]), doubled, limit)
    record.update(steps_needed=needed, steps_needed_how=how)
    message = (f"ig: the completeness gap |delta| / |logit(image) - logit(baseline)| is {median:.0%} at "
               f"{module.steps} steps (median of {len(gaps)} random images), over {limit:.0%}; about {needed} steps "
               f"would bring it under ({how}): re-export with --ig-steps {needed} for maps whose sum matches the "
               "logit")
    if progress is not None and progress.enabled:
        progress.note(message)  # one line among the export's own, rather than a warning with a source line
    else:
        warnings.warn(message, IGConvergenceWarning, stacklevel=2)
    return record
