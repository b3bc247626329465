"""Comparing one output of a backend with its reference: error statistics, map agreement and a verdict.

Values only (numpy): ``verify`` fills these from PyTorch references, but nothing here needs torch. A comparison is a
value in Polygraphy's spirit: ``bool(comparison)`` is its verdict, and it carries every figure behind it, including
the smallest tolerance that would have passed.

Errors of maps are judged per image against that image's own scale (max |reference|), so a map with small values
cannot hide a large relative error behind another image's large ones.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from auditor_rt.runtime.map_agreement import (flat_per_image, cosine_per_image, pairwise_spread, spearman_per_image,
                                              top_region_iou)

# A gradient through ReLUs is discontinuous: a pre-activation within rounding noise of zero switches its unit on in
# one FP32 implementation and off in another, and moves the map locally (measured: one IG path point of a random
# resnet50_clip off by 1.1e-2 of its scale in ONNX Runtime, every other point within 7e-7, and PyTorch FP32 clean).
# A map whose values miss the noise-floor rule by less than this, while its cosine still meets the threshold, is
# taken as such a switch and passes with a note; a wrong rule moves maps by their whole scale.
LOCAL_DISCONTINUITY = 1e-2
# An input is ill-conditioned when PyTorch FP32, or its own FP64 reference under a jitter of this size (a share of
# the pixel range), points elsewhere: cosine below ILL_COSINE.
ILL_COSINE = 0.99
JITTER = 1e-6
# However noisy PyTorch FP32's own input dependence is, a backend's may never be off by more than this: a map frozen
# at export (dependence 0) always fails.
MAX_DEPENDENCE_ALLOWANCE = 0.5
# Relative errors mean something only where the reference is not near zero: max rel looks at the cells whose
# |reference| is at least this share of the image's scale.
SIGNIFICANT = 1e-3


@dataclass(frozen=True)
class Tolerance:
    """What an output must meet. ``atol``/``rtol`` set by the user are absolute, elementwise, as numpy's
    ``allclose``: |actual - reference| <= atol + rtol * |reference|. Without them, the error relative to the scale
    must stay within ``scaled`` or twice the noise floor (PyTorch FP32 against FP64), whichever is larger."""

    scaled: float = 1e-4
    atol: float | None = None
    rtol: float | None = None
    min_cosine: float = 0.9999
    min_spearman: float = 0.999
    min_iou: float = 0.9
    dependence: float = 0.02  # |sum of the backend's pairwise map distances / the reference's - 1|

    @property
    def user_set(self) -> bool:
        return self.atol is not None or self.rtol is not None


PRECISION_DEFAULTS = {
    "fp32": Tolerance(),
    # FP16 engines: loose on values, strict on what a person reads off a map and on decisions.
    "fp16": Tolerance(scaled=2e-2, min_cosine=0.99, min_spearman=0.99, min_iou=0.7, dependence=0.1),
}


@dataclass
class Comparison:
    backend: str
    graph: str
    output: str
    kind: str                    # "values" ([N] or [N, K]), "map" ([N, ...spatial]) or "index" (integers)
    passed: bool = True
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # passed, but worth knowing
    max_abs: float = 0.0
    max_rel: float = 0.0         # over the cells where |reference| >= SIGNIFICANT x the image's scale
    mean_abs: float = 0.0
    quantile_abs: float = 0.0    # the error at --error-quantile
    quantile: float = 0.99
    scaled_error: float = 0.0    # the worst input's max|a - r| / max|r| (worst: farthest past its own allowance)
    floor: float = 0.0           # that input's noise floor: PyTorch FP32's error against FP64, or the reference's
    #                              own move under a 1e-6 input jitter (maps), whichever is larger
    allowed: float = 0.0         # that input's allowance: max of the tolerance and twice its own floor
    nonfinite: int = 0           # NaN or Inf in the backend's output where the reference is finite
    cosine: float | None = None  # maps: the worst image's
    spearman: float | None = None
    iou: float | None = None
    dependence: float | None = None  # maps: backend's pairwise differences over the reference's (1 is exact)
    min_atol: float = 0.0        # the smallest atol (rtol 0) that would have passed the values
    min_rtol: float = 0.0        # the smallest rtol (atol 0) that would have passed the values
    worst_image: int = 0
    spread: float = 0.0          # two runs of the backend on the same inputs: max |a1 - a2| of the scale (0: same)
    ill_conditioned: dict[str, str] = field(default_factory=dict)  # input label -> why its reference is unreliable

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict:
        return {key: (None if isinstance(value, float) and not math.isfinite(value) else value)
                for key, value in asdict(self).items()}


def output_kind(values: np.ndarray) -> str:
    if not np.issubdtype(values.dtype, np.floating):
        return "index"
    return "map" if values.ndim >= 3 else "values"


def is_local_switch(actual: np.ndarray, reference: np.ndarray, allowed: float, min_cosine: float = 0.9999) -> bool:
    """Every image's cosine at least ``min_cosine``, its max error within ``LOCAL_DISCONTINUITY`` of its scale and
    its mean error within ``allowed``: a local move of the map, not an error spread over it."""
    a, r = flat_per_image(np.nan_to_num(actual.astype(np.float64))), flat_per_image(reference)
    scale = np.maximum(np.abs(r).max(axis=1), 1e-30)
    error = np.abs(a - r)
    return bool(np.all(error.max(axis=1) / scale <= LOCAL_DISCONTINUITY)
                and np.all(error.mean(axis=1) / scale <= allowed)
                and cosine_per_image(a, r).min() >= min_cosine)


def scaled_errors(actual: np.ndarray, reference: np.ndarray, kind: str) -> np.ndarray:
    """Per image: max |a - r| over the image's scale (maps), or over max(1, |r|) (values: logits and scores)."""
    a, r = flat_per_image(actual), flat_per_image(reference)
    error = np.abs(a - r).max(axis=1)
    if kind == "map":
        scale = np.abs(r).max(axis=1)
        return np.where(scale > 0, error / np.where(scale > 0, scale, 1.0), np.where(error > 0, np.inf, 0.0))
    return error / np.maximum(1.0, np.abs(r).max(axis=1))


def input_conditioning(reference: np.ndarray, reference32: np.ndarray | None,
                       jittered: np.ndarray | None, kind: str) -> tuple[list[str], np.ndarray]:
    """Per input, why its FP64 reference is ill-conditioned ("" where it is not), and how far it moves under a
    ``JITTER`` of the input (a share of its scale; 0 without a jittered reference).

    Ill-conditioned: PyTorch FP32 points elsewhere (cosine < ``ILL_COSINE``: max-pool ties on a uniform image send
    the two precisions' gradients to different pixels), or the jitter does (a tie or a ReLU sitting on the input).
    Such an input is judged against its own floor only and left out of input dependence, so it never widens
    another input's tolerance. A jitter that moves a map without turning it (IG through a ReLU network: measured
    1e-3 to 1e-2 of the scale at cosine 1.000000 on real photographs) is part of that input's noise floor instead:
    no FP32 backend can be asked to be closer than a 1e-6 move of the input takes the reference."""
    why = [""] * len(reference)
    moves = np.zeros(len(reference))
    if kind != "map":
        return why, moves
    if reference32 is not None:
        for i, value in enumerate(cosine_per_image(reference32, reference)):
            if value < ILL_COSINE:
                why[i] = f"PyTorch FP32 has cosine {value:.3f} against FP64"
    if jittered is not None:
        moves = scaled_errors(jittered, reference, kind)
        for i, value in enumerate(cosine_per_image(jittered, reference)):
            if value < ILL_COSINE and not why[i]:
                why[i] = f"a {JITTER:g} input jitter turns it (cosine {value:.3f}, moves {moves[i]:.1e} of its scale)"
    return why, moves


def compare_output(backend: str, graph: str, output: str, actual: np.ndarray, reference: np.ndarray,
                   reference32: np.ndarray | None, tolerance: Tolerance, quantile: float = 0.99,
                   jittered: np.ndarray | None = None, labels: list[str] | None = None) -> Comparison:
    """``reference`` is the FP64 PyTorch output; ``reference32`` PyTorch's own FP32 output, which measures each
    input's noise floor that no FP32 backend can be asked to beat; ``jittered`` the FP64 output for the inputs
    moved by ``JITTER``. Every figure is judged per input, against that input's own floor."""
    kind = output_kind(reference)
    labels = list(labels) if labels is not None else [f"input {i}" for i in range(len(reference))]
    result = Comparison(backend, graph, output, kind, quantile=quantile)
    if actual.shape != reference.shape:
        result.passed = False
        result.reasons.append(f"shape {list(actual.shape)} but the reference has {list(reference.shape)}")
        return result
    if kind == "index":
        mismatches = int((actual != reference).sum())
        result.max_abs = float(np.abs(actual.astype(np.int64) - reference.astype(np.int64)).max(initial=0))
        if mismatches:
            result.passed = False
            result.reasons.append(f"{mismatches} of {actual.size} values differ")
        return result
    _error_statistics(result, actual, reference, quantile)
    why, moves = input_conditioning(reference, reference32, jittered, kind)
    result.ill_conditioned = {labels[i]: reason for i, reason in enumerate(why) if reason}
    errors = scaled_errors(actual, reference, kind)
    floors = scaled_errors(reference32, reference, kind) if reference32 is not None else np.zeros(len(errors))
    floors = np.maximum(floors, np.where(np.isfinite(moves), moves, 0.0))
    allowed = np.maximum(tolerance.scaled, 2.0 * floors)
    with np.errstate(divide="ignore", invalid="ignore"):
        worst = int(np.nanargmax(np.where(np.isnan(errors), np.inf, errors / allowed))) if len(errors) else 0
    result.worst_image = worst
    if len(errors):
        result.scaled_error, result.floor, result.allowed = (float(errors[worst]), float(floors[worst]),
                                                             float(allowed[worst]))
    if result.nonfinite:
        result.reasons.append(f"{result.nonfinite} NaN/Inf values where the reference is finite")
    if tolerance.user_set:
        atol, rtol = tolerance.atol or 0.0, tolerance.rtol or 0.0
        diff = np.abs(actual.astype(np.float64) - reference.astype(np.float64))
        if not np.all(np.where(np.isfinite(reference), diff, 0.0) <= atol + rtol * np.abs(reference)):
            result.reasons.append(f"values past atol {atol:g} + rtol {rtol:g} x |reference|")
    else:
        _judge_errors(result, actual, reference, errors, allowed, labels, tolerance)
    if kind == "map":
        _judge_map(result, actual, reference, reference32, tolerance, labels, [not reason for reason in why])
    result.passed = not result.reasons
    return result


def _error_statistics(result: Comparison, actual: np.ndarray, reference: np.ndarray, quantile: float) -> None:
    finite_ref = np.isfinite(reference)
    result.nonfinite = int((~np.isfinite(actual) & finite_ref).sum())
    diff = np.where(finite_ref, np.abs(actual.astype(np.float64) - reference.astype(np.float64)), 0.0)
    magnitude = np.abs(reference.astype(np.float64))
    result.max_abs = float(np.nanmax(diff, initial=0.0))
    result.mean_abs = float(np.nanmean(diff)) if diff.size else 0.0
    result.quantile_abs = float(np.nanquantile(diff, quantile)) if diff.size else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(magnitude > 0, diff / magnitude, np.where(diff > 0, np.inf, 0.0))
        scale = flat_per_image(magnitude).max(axis=1).reshape((-1,) + (1,) * (magnitude.ndim - 1))
        significant = magnitude >= SIGNIFICANT * scale if result.kind == "map" else np.ones_like(finite_ref)
    result.min_atol = result.max_abs
    result.min_rtol = float(np.nanmax(relative, initial=0.0))
    result.max_rel = float(np.nanmax(np.where(significant, relative, 0.0), initial=0.0))


def _judge_errors(result: Comparison, actual, reference, errors: np.ndarray, allowed: np.ndarray,
                  labels: list[str], tolerance: Tolerance) -> None:
    """Each input's error against its own allowance; a map that misses it only by a ReLU switched by rounding
    noise (a local move, cosine intact) passes with a note."""
    over = []
    for i in np.flatnonzero(~(errors <= allowed)):
        if result.kind == "map" and is_local_switch(actual[i:i + 1], reference[i:i + 1], float(allowed[i]),
                                                    tolerance.min_cosine):
            result.notes.append(f"{labels[i]}: max error {errors[i]:.1e} of the scale: a ReLU switched by rounding "
                                "noise moves the map locally")
        else:
            over.append(i)
    if over:
        worst = max(over, key=lambda i: errors[i] / allowed[i] if np.isfinite(errors[i]) else np.inf)
        more = f" (and {len(over) - 1} more inputs)" if len(over) > 1 else ""
        result.reasons.append(f"error {errors[worst]:.2e} of the scale on {labels[worst]}, allowed "
                              f"{allowed[worst]:.2e}{more}")


def _judge_map(result: Comparison, actual: np.ndarray, reference: np.ndarray, reference32: np.ndarray | None,
               tolerance: Tolerance, labels: list[str], conditioned: list[bool]) -> None:
    """Cosine, Spearman and top-region IoU of each input, held to the threshold or to twice PyTorch FP32's own
    shortfall on that input, whichever is looser; then input dependence on the well-conditioned inputs."""
    finite = np.nan_to_num(actual.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    metrics = (("cosine", cosine_per_image, tolerance.min_cosine, "{:.6f}"),
               ("spearman", spearman_per_image, tolerance.min_spearman, "{:.4f}"),
               ("iou", top_region_iou, tolerance.min_iou, "{:.3f}"))
    for name, metric, threshold, style in metrics:
        values = metric(finite, reference)
        thresholds = np.full(len(values), threshold)
        if reference32 is not None:
            thresholds = np.minimum(threshold, 1.0 - 2.0 * (1.0 - metric(reference32, reference)))
        worst = int(np.argmin(values - thresholds))
        setattr(result, name, float(values[worst]))
        if values[worst] < thresholds[worst]:
            label = {"cosine": "cosine", "spearman": "Spearman", "iou": "top-10% IoU"}[name]
            result.reasons.append(f"{label} {style.format(values[worst])} < {style.format(thresholds[worst])} on "
                                  f"{labels[worst]}")
    _judge_dependence(result, finite, reference, reference32, tolerance, conditioned)


def _judge_dependence(result: Comparison, actual: np.ndarray, reference: np.ndarray,
                      reference32: np.ndarray | None, tolerance: Tolerance, conditioned: list[bool]) -> None:
    """How much the maps change from input to input, against the reference's, over the well-conditioned inputs.
    The allowance is the tolerance or twice PyTorch FP32's own deviation, never more than
    ``MAX_DEPENDENCE_ALLOWANCE``: a gradient frozen into a constant at export scores 0 and always fails."""
    keep = np.flatnonzero(conditioned)
    if len(keep) < 2:
        if len(reference) > 1:  # nothing left to tell a live map from a frozen one: not a pass
            result.reasons.append(f"input dependence cannot be judged: {len(keep)} of {len(reference)} inputs are "
                                  "well-conditioned (add real images with --images, or --random N)")
        return
    spread = pairwise_spread(reference[keep])
    if spread <= 0:
        return
    result.dependence = pairwise_spread(actual[keep]) / spread
    allowed = tolerance.dependence
    if reference32 is not None:
        allowed = max(allowed, 2.0 * abs(pairwise_spread(reference32[keep]) / spread - 1.0))
    allowed = min(allowed, MAX_DEPENDENCE_ALLOWANCE)
    if abs(result.dependence - 1.0) > allowed:
        result.reasons.append(f"input dependence {result.dependence:.3f} of the reference's, allowed 1 ± "
                              f"{allowed:.3f} (maps {'frozen' if result.dependence < 0.5 else 'changed'} across "
                              "inputs)")
