"""``auditor-rt build``: a TensorRT engine per graph, into ``<artifact>/engines/<graph>.<precision>.plan``, with
an entry per engine in the manifest's ``engines`` section and a timing cache (``engines/timing.cache``) reused by
the next build. All or nothing: the plans, the cache and the manifest are written to temporary files and moved
into place only when every graph has built, so a failed build leaves no half-made engine and no manifest change.

FP16: TensorRT 11 builds FP16 kernels only where the ONNX graph is FP16 (strong typing), so ``--precision fp16``
needs an FP16 ONNX variant of the graph in the artifact: a graph entry whose facts say ``variant_of: <graph>`` and
``precision: fp16``. The export does not write those yet, so such a build is refused: auditor-rt never builds an
FP32 engine and calls it FP16 (the trap of rf-detr#1453: "fp16=True silently builds an FP32 engine on TensorRT 11").
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from auditor_rt.export.engines.network import NetworkOptions, Report, build_plan
from auditor_rt.export.engines.profiles import check_batches, input_profiles
from auditor_rt.runtime.artifact import Artifact
from auditor_rt.runtime.errors import ConfigError, NotSupportedError
from auditor_rt.runtime.manifest import Manifest
from auditor_rt.runtime.runners.tensorrt import (ENGINES_KEY, HARDWARE_COMPAT, PRECISIONS, EngineEntry, device_info,
                                                 import_cudart, import_tensorrt)

ENGINES_FOLDER = "engines"
TIMING_CACHE = "timing.cache"


@dataclass(frozen=True)
class BuildOptions:
    graphs: tuple[str, ...] | None = None  # None: every graph (not the FP16 variants themselves)
    precision: str = "fp32"
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    workspace_mb: int | None = None
    hardware_compat: str = "none"
    version_compatible: bool = False
    tf32: bool = False

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.hardware_compat not in HARDWARE_COMPAT:
            raise ConfigError(f"hardware compatibility {self.hardware_compat!r}: choose one of "
                              f"{', '.join(HARDWARE_COMPAT)}")
        check_batches(self.min_batch, self.opt_batch, self.max_batch)


def fp16_variant(manifest: Manifest, graph: str) -> str | None:
    """The manifest graph that is ``graph``'s FP16 ONNX variant, if the export wrote one."""
    for name, entry in manifest.graphs.items():
        if entry.extra.get("variant_of") == graph and entry.extra.get("precision") == "fp16":
            return name
    return None


def source_graph(manifest: Manifest, graph: str, precision: str) -> str:
    """The graph an engine of ``graph`` at ``precision`` is built from; refuses FP16 without an FP16 graph."""
    if precision == "fp32":
        return graph
    variant = fp16_variant(manifest, graph)
    if variant is None:
        raise NotSupportedError(
            f"graph {graph!r} has no FP16 ONNX graph in this artifact, and an FP16 TensorRT engine is built from one: "
            "TensorRT 11 takes precision from the graph's types (strongly typed networks; BuilderFlag.FP16 is gone). "
            "FP16 graphs come from `auditor-rt export`, which does not write them yet. auditor-rt will not build an "
            "FP32 engine and call it FP16; build --precision fp32")
    return variant


def _stage(folder: Path, data: bytes) -> Path:
    handle, name = tempfile.mkstemp(dir=folder, prefix=".", suffix=".part")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    return Path(name)


def build_engines(folder: str | Path, options: BuildOptions, report: Report | None = None) -> list[EngineEntry]:
    """Build the engines; returns their manifest entries. Everything a user can get wrong (graph names, FP16
    without an FP16 graph, the profile) is refused before TensorRT is imported."""
    options.check()
    artifact = Artifact(folder)
    manifest = artifact.manifest
    names = list(options.graphs or [n for n, g in manifest.graphs.items() if "variant_of" not in g.extra])
    for name in names:
        artifact.graph(name)  # an unknown name is refused with the artifact's list
    sources = {name: source_graph(manifest, name, options.precision) for name in names}
    shapes = {name: input_profiles(name, manifest.graphs[name], options.min_batch, options.opt_batch,
                                   options.max_batch) for name in names}
    trt, cudart = import_tensorrt(), import_cudart()
    gpu, capability = device_info(cudart)
    if options.hardware_compat == "ampere+" and int(capability.split(".")[0]) < 8:
        raise ConfigError(f"--hardware-compat ampere+ builds only on Ampere or newer GPUs (compute capability 8.0+); "
                          f"this is {gpu} ({capability})")
    network_options = NetworkOptions(options.workspace_mb, options.hardware_compat, options.version_compatible,
                                     options.tf32)
    engines = artifact.folder / ENGINES_FOLDER
    created = not engines.exists()
    engines.mkdir(exist_ok=True)
    cache_path = engines / TIMING_CACHE
    cache = cache_path.read_bytes() if cache_path.is_file() else b""
    staged: list[tuple[Path, Path]] = []
    entries: list[EngineEntry] = []
    scratch = Path(tempfile.mkdtemp(dir=artifact.folder, prefix=".build-"))
    try:
        for name in names:
            path = artifact.graph_path(sources[name])  # digests (graph and weights.bin) checked first
            plan, cache = build_plan(trt, name, path, shapes[name], network_options, cache, report)
            file = f"{ENGINES_FOLDER}/{name}.{options.precision}.plan"
            staged.append((_stage(engines, plan), artifact.folder / file))
            entries.append(EngineEntry(
                graph=name, precision=options.precision, file=file, sha256=hashlib.sha256(plan).hexdigest(),
                source_graph=sources[name], graph_sha256=manifest.graphs[sources[name]].sha256,
                tensorrt=str(trt.__version__), gpu=gpu, compute_capability=capability,
                profile={"min_batch": options.min_batch, "opt_batch": options.opt_batch,
                         "max_batch": options.max_batch},
                hardware_compat=options.hardware_compat, version_compatible=options.version_compatible,
                tf32=options.tf32,
                extra={"workspace_mb": options.workspace_mb,
                       "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}))
        staged.append((_stage(engines, cache), cache_path))
        section = dict(manifest.document.get(ENGINES_KEY) or {})
        section.update({entry.key: entry.to_dict() for entry in entries})
        manifest.document[ENGINES_KEY] = section
        staged.append((manifest.write(scratch), artifact.folder / "manifest.json"))  # the manifest last
    except BaseException:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
        if created:
            shutil.rmtree(engines, ignore_errors=True)
        raise
    for temporary, final in staged:
        os.replace(temporary, final)
    shutil.rmtree(scratch, ignore_errors=True)
    return entries
