"""``auditor-rt verify``: every output of every graph of an artifact, heatmaps and attribution maps included, run on
each backend and compared with the PyTorch model rebuilt from the manifest.

The inputs are real images (a folder), seeded random ones, and edge cases (all black, all white, saturated colour
bars), interleaved so that every batch mixes them. Each output gets a ``Comparison`` (see ``export/verification/compare.py``),
each audit graph a decision check (the same label at the artifact's threshold on every input), and the artifact
itself an integrity check (digests, the ONNX checker, opsets and the metadata in each file against the manifest).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from auditor_rt.export.verification.compare import (JITTER, PRECISION_DEFAULTS, Comparison, Tolerance, compare_output,
                                                   scaled_errors)
from auditor_rt.export.verification.integrity import Finding, integrity_findings
from auditor_rt.export.verification.parity import torch_outputs
from auditor_rt.export.verification.reference import ReferenceModel, build_reference
from auditor_rt.runtime.artifact import Artifact
from auditor_rt.runtime.errors import BackendUnavailableError, ConfigError, ImageDecodeError
from auditor_rt.runtime.feeds import input_role, make_feed
from auditor_rt.runtime.imageio import decode_image, is_image_path, resize_image
from auditor_rt.runtime.methods import images_per_input
from auditor_rt.runtime.runners import available_providers, create_runner, open_graph

BACKENDS = ("onnxruntime", "ort-tensorrt", "tensorrt")  # ORT (CPU or CUDA), ORT's TensorRT provider, native engines
EDGE_INPUTS = ("black", "white", "saturated")
QUICK_IMAGES = 2  # real images in a --quick run
QUICK_EXPANDED = 3  # real or random inputs for IG and SmoothGrad in a --quick run (their steps are fixed in the
# graph), plus the white one
SATURATED = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255]], np.uint8)


@dataclass
class VerifyOptions:
    backends: tuple[str, ...] = ("onnxruntime",)
    images: Path | None = None
    random: int = 2
    max_images: int = 8
    batch: int = 4
    seed: int = 0
    atol: dict[str, float] = field(default_factory=dict)  # by output name, "graph/output" or "*"
    rtol: dict[str, float] = field(default_factory=dict)
    quantile: float = 0.99
    precision: str = "fp32"
    graphs: list[str] | None = None
    checkpoint: Path | None = None
    providers: object = "auto"
    threads: int | None = None
    quick: bool = False  # fewer inputs everywhere, and fewer still for the graphs that run many images per input

    def for_quick_run(self) -> "VerifyOptions":
        return replace(self, max_images=min(self.max_images, QUICK_IMAGES), random=min(self.random, 2))


@dataclass
class VerifyReport:
    artifact: str
    reference: str
    inputs: list[str]
    images: np.ndarray
    integrity: list[Finding] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # backend -> why it did not run
    maps: dict[tuple[str, str, str], dict[str, np.ndarray]] = field(default_factory=dict)  # for the HTML report
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(f.ok for f in self.integrity) and all(self.comparisons) and bool(self.comparisons)

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, "reference": self.reference, "passed": self.passed,
                "inputs": self.inputs, "seconds": round(self.seconds, 2),
                "integrity": [vars(f) for f in self.integrity],
                "comparisons": [c.to_dict() for c in self.comparisons], "unavailable": self.unavailable}


# ---- inputs --------------------------------------------------------------------------------------------------------

def verification_inputs(options: VerifyOptions, size: tuple[int, int]) -> tuple[np.ndarray, list[str], list[str]]:
    """Images [N, H, W, 3] uint8 at the artifact's size, their labels, and notes on files that could not be used."""
    kinds: list[list[tuple[str, np.ndarray]]] = []
    notes: list[str] = []
    if options.images is not None:
        folder = Path(options.images)
        if not folder.is_dir():
            raise ConfigError(f"--images {folder}: not a folder")
        found = []
        for path in sorted(p for p in folder.iterdir() if p.is_file() and is_image_path(p)):
            if len(found) == options.max_images:
                break
            try:
                found.append((path.name, resize_image(decode_image(path), size)))
            except ImageDecodeError as exc:
                notes.append(str(exc))
        if not found:
            raise ConfigError(f"--images {folder}: no image there could be decoded"
                              + (f" ({notes[0]})" if notes else ""))
        kinds.append(found)
    rng = np.random.default_rng(options.seed)
    kinds.append([(f"random-{i}", rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for i in range(options.random)])
    bars = np.repeat(SATURATED, -(-size[1] // len(SATURATED)), axis=0)[:size[1]]
    edges = {"black": np.zeros((*size, 3), np.uint8), "white": np.full((*size, 3), 255, np.uint8),
             "saturated": np.broadcast_to(bars[None], (size[0], size[1], 3)).copy()}
    kinds.append([(name, edges[name]) for name in EDGE_INPUTS])
    ordered = []  # round-robin over the kinds, so that every batch mixes them
    for position in range(max(len(kind) for kind in kinds)):
        ordered += [kind[position] for kind in kinds if position < len(kind)]
    return np.stack([image for _, image in ordered]), [label for label, _ in ordered], notes


def graph_feed(entry, images: np.ndarray, seed: int, targets: np.ndarray | None) -> dict[str, np.ndarray]:
    """The graph's inputs: the images, seeded noise (SmoothGrad), a seeded random baseline (IG with a given
    baseline) and the reference's own top classes as targets (a classifier's; -1 would let a near tie pick
    another class on another backend)."""
    takes_target = "target" in {input_role(spec) for spec in entry.inputs}
    return make_feed(entry, images, seed + 1, baselines="random", targets=targets if takes_target else None)


# ---- running ---------------------------------------------------------------------------------------------------------

def open_backend(backend: str, artifact: Artifact, name: str, options: VerifyOptions):
    """A runner for graph ``name``: an ORT session on the CPU or GPU providers for ``onnxruntime``; ORT's TensorRT
    execution provider (FP16 with ``precision='fp16'``) for ``ort-tensorrt``; the artifact's native engine of that
    precision (``auditor-rt build``) for ``tensorrt``. The ORT file is opened as it is on disk: a digest mismatch is
    reported by the integrity checks, and compared anyway. Raises BackendUnavailableError where it cannot run."""
    entry, path = artifact.graph(name), artifact.folder / artifact.graph(name).file
    if backend == "tensorrt":
        return create_runner(artifact, name, backend="tensorrt", precision=options.precision)
    if backend == "ort-tensorrt":
        available = available_providers("onnxruntime")
        if "TensorrtExecutionProvider" not in available:
            raise BackendUnavailableError("not available here: this onnxruntime build has no TensorRT execution "
                                          f"provider (it has {', '.join(available)}); on a GPU machine install "
                                          "the gpu extra (pip install .[gpu])")
        return open_graph(path, entry.inputs, entry.outputs, "onnxruntime", providers=["tensorrt", "cuda", "cpu"],
                          threads=options.threads,
                          cache_dir=path.parent / "trt_cache" / f"{entry.sha256[:16]}-{options.precision}",
                          trt_fp16=options.precision == "fp16")
    if options.precision == "fp16":
        raise ConfigError("--precision fp16 applies to the tensorrt and ort-tensorrt backends; ONNX Runtime runs "
                          "these graphs in FP32")
    return open_graph(path, entry.inputs, entry.outputs, "onnxruntime", providers=options.providers,
                      threads=options.threads)


def tolerance_for(graph: str, output: str, options: VerifyOptions) -> Tolerance:
    base = PRECISION_DEFAULTS[options.precision]

    def pick(table: dict[str, float]) -> float | None:
        for key in (f"{graph}/{output}", output, "*"):
            if key in table:
                return table[key]
        return None

    atol, rtol = pick(options.atol), pick(options.rtol)
    return replace(base, atol=atol, rtol=rtol) if atol is not None or rtol is not None else base


# ---- the whole check -------------------------------------------------------------------------------------------------

def verify_artifact(folder: str | Path, options: VerifyOptions | None = None, log=lambda message: None) -> VerifyReport:
    options = options or VerifyOptions()
    if options.quick:
        options = options.for_quick_run()
    if options.precision not in PRECISION_DEFAULTS:
        raise ConfigError(f"--precision {options.precision!r}: choose {' or '.join(PRECISION_DEFAULTS)}")
    start = time.perf_counter()
    artifact = Artifact.load(folder)
    graphs = options.graphs or list(artifact.manifest.graphs)
    for name in graphs:
        artifact.graph(name)  # an unknown graph name fails here, with the known ones listed
    _check_tolerance_names(options, artifact, graphs)
    integrity = integrity_findings(artifact, graphs)
    log(f"rebuilding the PyTorch reference of {len(graphs)} graph(s) from the manifest")
    reference = build_reference(artifact, options.checkpoint, graphs)
    integrity += [Finding("reference files", False, finding) for finding in reference.findings]
    integrity += [Finding("reference files", True, f"not checked: {note}") for note in reference.notes]
    images, labels, notes = verification_inputs(options, tuple(artifact.manifest.preprocess.input_size))
    report = VerifyReport(str(artifact.folder), reference.description, labels, images, integrity)
    report.integrity += [Finding("input image", True, f"skipped: {note}") for note in notes]
    targets = _reference_targets(artifact, reference, images, options)
    for number, name in enumerate(graphs, 1):
        _verify_graph(report, artifact, reference, name, images, targets, options,
                      lambda message: log(f"[{number}/{len(graphs)}] {name}: {message}"))
    report.seconds = time.perf_counter() - start
    return report


def _check_tolerance_names(options: VerifyOptions, artifact: Artifact, graphs: list[str]) -> None:
    known = {"*"}
    for graph in graphs:
        for spec in artifact.graph(graph).outputs:
            known |= {spec.name, f"{graph}/{spec.name}"}
    unknown = sorted(name for name in set(options.atol) | set(options.rtol) if name not in known)
    if unknown:
        raise ConfigError(f"--atol/--rtol name no output called {', '.join(unknown)}; outputs: "
                          f"{', '.join(sorted(known - {'*'}))}")


def _reference_targets(artifact, reference: ReferenceModel, images, options) -> np.ndarray | None:
    """A classifier's classes to explain: the FP64 reference's top class of each image."""
    if not any(entry.kind == "classify" for entry in artifact.manifest.graphs.values()):
        return None
    return torch_outputs(reference.base[1], {"image": images}, options.batch, torch.float64)["top_class"]


def _verify_graph(report: VerifyReport, artifact: Artifact, reference: ReferenceModel, name: str, images, targets,
                  options: VerifyOptions, log) -> None:
    entry = artifact.graph(name)
    labels, keep = report.inputs, list(range(len(report.inputs)))
    if options.quick and images_per_input(entry) > 1:
        keep = [i for i, label in enumerate(labels) if label not in EDGE_INPUTS][:QUICK_EXPANDED]
        keep += [i for i, label in enumerate(labels) if label == "white"]
        images, labels = images[keep], [labels[i] for i in keep]
        targets = None if targets is None else targets[keep]
    feed = graph_feed(entry, images, options.seed, targets)
    fp32, fp64 = reference.modules[name]
    step = max(1, options.batch // images_per_input(entry))  # IG and SmoothGrad run many images per input image
    expected = _timed_outputs(fp64, feed, step, torch.float64, "PyTorch FP64 reference", log)
    floor = _timed_outputs(fp32, feed, step, torch.float32, "PyTorch FP32 noise floor", log)
    jittered = None
    if entry.kind != "classify":  # maps: is each input's reference well-conditioned?
        jittered = _timed_outputs(fp64, jittered_feed(feed, options.seed), step, torch.float64,
                                  f"FP64 reference under a {JITTER:g} jitter", log)
    for backend in options.backends:
        if backend in report.unavailable:
            continue
        try:
            runner = open_backend(backend, artifact, name, options)
        except BackendUnavailableError as exc:
            if len(options.backends) == 1:
                raise
            report.unavailable[backend] = str(exc)
            continue
        with runner:
            what = f"{backend} ({', '.join(getattr(runner, 'active_providers', []))})"
            actual = _timed_outputs(runner.infer, feed, step, None, what, log)
            again = _timed_outputs(runner.infer, feed, step, None, f"{what} again, for determinism", log)
        for output in (spec.name for spec in entry.outputs):
            comparison = compare_output(backend, name, output, actual[output], expected[output], floor.get(output),
                                        tolerance_for(name, output, options), options.quantile,
                                        None if jittered is None else jittered.get(output), labels)
            judge_determinism(comparison, actual[output], again[output], expected[output], floor.get(output), labels)
            report.comparisons.append(comparison)
            if comparison.kind == "map" and output in _shown_maps(entry):
                report.maps[(backend, name, output)] = {"reference": expected[output], "actual": actual[output],
                                                        "inputs": np.asarray(keep)}
        if entry.kind == "audit" and artifact.manifest.threshold is not None:
            report.comparisons.append(decision_check(backend, name, actual["score"], expected["score"],
                                                     artifact.manifest.threshold, labels))


def judge_determinism(comparison, first: np.ndarray, second: np.ndarray, reference: np.ndarray,
                      reference32: np.ndarray | None, labels: list[str]) -> None:
    """Two runs of the backend on the same inputs should agree bit for bit. Where they do not (a reduction whose
    order follows thread timing, atomics on a GPU), the spread is recorded (``comparison.spread``, of each input's
    scale): a failure when it passes that input's noise floor (PyTorch FP32's own error), else a note."""
    if comparison.kind == "index" or first.shape != second.shape:
        if comparison.kind == "index" and not np.array_equal(first, second):
            comparison.passed = False
            comparison.reasons.append("non-deterministic: two runs on the same inputs give different values")
        return
    spreads = scaled_errors(first.astype(np.float64), second.astype(np.float64), comparison.kind)
    floors = scaled_errors(reference32, reference, comparison.kind) if reference32 is not None else 0 * spreads
    worst = int(np.argmax(spreads)) if len(spreads) else 0
    comparison.spread = float(spreads[worst]) if len(spreads) else 0.0
    if not comparison.spread:
        return
    text = (f"non-deterministic: two runs on the same inputs differ by {comparison.spread:.1e} of the scale on "
            f"{labels[worst]} (PyTorch FP32's own error there: {floors[worst]:.1e})")
    if (spreads > np.maximum(floors, 1e-12)).any():
        comparison.passed = False
        comparison.reasons.append(text)
    else:
        comparison.notes.append(text)


def jittered_feed(feed: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """The images moved by +-``JITTER`` of the pixel range (as floats: the reference casts them like uint8 ones),
    every other input as it was."""
    rng = np.random.default_rng(seed + 2)
    image = feed["image"]
    signs = rng.choice(np.array([-1.0, 1.0]), size=image.shape)
    return {**feed, "image": image.astype(np.float64) + signs * JITTER * 255.0}


def _timed_outputs(call, feed: dict[str, np.ndarray], step: int, dtype, what: str, log) -> dict[str, np.ndarray]:
    """Outputs in chunks of ``step`` inputs, with a progress line per chunk once a stage takes more than a moment:
    the inputs done, the time so far and the time left at the rate so far."""
    total = len(feed["image"])
    parts: list[dict[str, np.ndarray]] = []
    start = time.perf_counter()
    for begin in range(0, total, step):
        chunk = {key: value[begin:begin + step] for key, value in feed.items()}
        parts.append(torch_outputs(call, chunk, step, dtype) if dtype is not None else call(chunk))
        done, elapsed = min(total, begin + step), time.perf_counter() - start
        if done < total and elapsed > 2.0:
            log(f"{what}: {done}/{total} inputs, {elapsed:.0f} s, about {elapsed / done * (total - done):.0f} s left")
    log(f"{what}: {total} inputs in {time.perf_counter() - start:.1f} s")
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _shown_maps(entry) -> set[str]:
    """The maps a person looks at: the audit graph's heatmap, an attribution graph's map output."""
    return {"heatmap"} if entry.kind == "audit" else {entry.map_output or ""}


def decision_check(backend: str, graph: str, scores: np.ndarray, reference: np.ndarray, threshold: float,
                   labels: list[str]) -> Comparison:
    """The same label at the threshold on every input."""
    flips = [label for label, a, r in zip(labels, scores, reference) if (a >= threshold) != (r >= threshold)]
    result = Comparison(backend, graph, "decision", "decision", passed=not flips)
    result.max_abs = float(np.abs(scores.astype(np.float64) - reference).max(initial=0.0))
    if flips:
        result.reasons.append(f"label differs at threshold {threshold:.4f} on {', '.join(flips)}")
    return result
