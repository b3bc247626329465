"""One place that builds a graph's feed from its manifest entry: the images, and what each other input's role asks
for. explain (``Auditor.explain_arrays``), verify and export's parity check all call ``make_feed``.

Roles: ``image`` (uint8 NHWC), ``noise`` (SmoothGrad's standard normal noise, [N, samples, 3, H, W], seeded so that
runs repeat), ``baseline`` (IG's path start as an image, given or drawn at random) and ``target`` (a classifier's
class per image; -1 is the predicted class). An artifact records each input's role; older ones are read by name.
"""

from __future__ import annotations

import numpy as np

from auditor_rt.runtime.errors import ArtifactError, ConfigError
from auditor_rt.runtime.methods import graph_params

ROLES = ("image", "noise", "baseline", "target")


def input_role(spec) -> str:
    role = getattr(spec, "role", None) or spec.name
    if role not in ROLES:
        raise ArtifactError(f"graph input {spec.name!r} has role {role!r}, which this runtime does not know "
                            f"({', '.join(ROLES)}); update auditor-rt or re-export the artifact")
    return role


def make_feed(entry, images: np.ndarray, seed: int, baselines: np.ndarray | str | None = None,
              targets=None, samples: int | None = None) -> dict[str, np.ndarray]:
    """The feed of ``entry``'s graph for ``images`` (uint8 [N, H, W, 3]). ``seed`` draws the noise (and a random
    baseline). ``baselines``: the baseline images, or ``"random"`` for seeded random ones (verify and parity);
    an IG graph that takes a baseline needs one of them. ``targets``: class per image, None for -1 (predicted).
    ``samples``: SmoothGrad's noisy copies, if not the graph's own parameter (the count is the noise's shape).
    ``entry`` is a ``GraphEntry`` (its inputs, and for the noise and targets its method, params and
    num_classes)."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in entry.inputs:
        role = input_role(spec)
        if role == "image":
            feed[spec.name] = images
        elif role == "noise":
            count = samples or int(graph_params(entry).get("samples", 16))
            feed[spec.name] = rng.standard_normal((len(images), count, 3, *images.shape[1:3])).astype(np.float32)
        elif role == "baseline":
            if isinstance(baselines, str) and baselines == "random":
                feed[spec.name] = rng.integers(0, 256, images.shape, dtype=np.uint8)
            elif baselines is None:
                raise ConfigError("this integrated-gradients graph takes a baseline image per input: pass baselines=")
            else:
                feed[spec.name] = np.asarray(baselines)
        else:
            feed[spec.name] = _targets(entry, len(images), targets)
    if targets is not None and "target" not in {input_role(spec) for spec in entry.inputs}:
        raise ConfigError("targets are for classifier artifacts; a risk head explains its risk logit")
    return feed


def _targets(entry, count: int, targets) -> np.ndarray:
    chosen = (np.full(count, -1, dtype=np.int64) if targets is None
              else np.asarray(targets, dtype=np.int64).reshape(count))
    classes = entry.num_classes
    if classes is not None and ((chosen < -1) | (chosen >= classes)).any():
        raise ConfigError(f"target classes {chosen.tolist()} outside 0..{classes - 1} (-1: predicted)")
    return chosen
