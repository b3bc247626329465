"""Shared pieces of the benchmarks: model building, export, ORT sessions and interleaved timing.

Timings on a small shared CPU are noisy: other processes come and go during a run. The timer therefore runs the
contenders in rounds (each round calls every contender once, in a fresh random order) instead of one after the
other, so that a burst of outside load lands on all of them alike and their ratios stay meaningful even when the
absolute numbers drift. A short pause between calls lets the previous contender's thread pool stop spinning: an
ORT session with default options burns about 20 ms of a core after each run (measured), which would otherwise be
charged to whoever runs next.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from auditor_rt.export.models.backbone import FeatureExtractor, Normalize, create_backbone, preprocessing_of
from auditor_rt.export.models.audit_module import AuditModule, ScoreModule
from auditor_rt.export.models.head import RiskHead
from auditor_rt.export.conversion.torch_to_onnx import export_graph

# The session options that the benchmark calls "tuned". Spinning intra-op threads busy-wait between ops; on a
# 2-core box shared with decode threads or other processes they steal the core that the work needs.
TUNED_CONFIG = {"session.intra_op.allow_spinning": "0"}


def build_modules(backbone: str, size: tuple[int, int], seed: int = 0) -> dict[str, torch.nn.Module]:
    """The audit and score modules over one random-weight backbone and one head, as the exporter builds them."""
    torch.manual_seed(seed)
    model, _ = create_backbone(backbone, "random")
    mean, std = preprocessing_of(model)
    features = FeatureExtractor(model, size)
    head = RiskHead(features.channels).eval()
    normalize = Normalize(mean, std)
    return {"audit": AuditModule(normalize, features, head, size).eval(),
            "score": ScoreModule(normalize, features, head, size).eval()}


def export_all(modules: dict[str, torch.nn.Module], folder: Path, size: tuple[int, int],
               opset: int = 18) -> tuple[dict[str, Path], dict[str, float]]:
    """Export each module to ``folder/<name>.onnx`` at batch 2 (dynamic batch); returns paths and seconds taken."""
    example = torch.randint(0, 256, (2, *size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    paths, seconds = {}, {}
    for name, module in modules.items():
        paths[name] = folder / f"{name}.onnx"
        start = time.perf_counter()
        export_graph(module, paths[name], example, opset)
        seconds[name] = time.perf_counter() - start
    return paths, seconds


def ort_session(path: Path, threads: int | None = None, config: dict[str, str] | None = None, **options):
    """A CPU session with full graph optimisation, ``threads`` intra-op threads and extra config entries."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    for key, value in options.items():
        setattr(opts, key, value)
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def ort_runner(session, images: np.ndarray) -> Callable[[], object]:
    feed = {session.get_inputs()[0].name: images}
    return lambda: session.run(None, feed)


def torch_runner(module: torch.nn.Module, images: np.ndarray) -> Callable[[], object]:
    batch = torch.from_numpy(images)

    def run():
        with torch.inference_mode():
            return module(batch)

    return run


def _spin_forever() -> None:
    while True:
        pass


@contextmanager
def busy_cores(count: int):
    """Keep ``count`` cores busy with spinning child processes: a stand-in for decode threads or a neighbour."""
    context = multiprocessing.get_context("fork")  # the child only spins: no torch or ORT threads are used in it
    children = [context.Process(target=_spin_forever, daemon=True) for _ in range(count)]
    for child in children:
        child.start()
    try:
        yield
    finally:
        for child in children:
            child.terminate()
            child.join()


class OutsideLoad:
    """CPU that other processes used during a block, in cores: busy time from /proc/stat minus this process's own.

    The load average cannot tell the benchmark's own threads from someone else's; this can. None off Linux.
    """

    def __enter__(self) -> "OutsideLoad":
        self.cores = None
        self._start = (self._busy_s(), self._own_s(), time.perf_counter())
        return self

    def __exit__(self, *exc) -> None:
        busy, own, wall = self._busy_s(), self._own_s(), time.perf_counter()
        self.seconds = wall - self._start[2]
        if busy is not None and self._start[0] is not None:
            self.cores = max(0.0, ((busy - self._start[0]) - (own - self._start[1])) / (wall - self._start[2]))

    @staticmethod
    def _own_s() -> float:
        times = os.times()
        return times.user + times.system

    @staticmethod
    def _busy_s() -> float | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user..steal; guest is inside user


@dataclass
class Timing:
    batch: int
    seconds: list[float]

    @property
    def median_ms(self) -> float:
        return float(np.median(self.seconds) * 1e3)

    @property
    def min_ms(self) -> float:
        """The least-disturbed run: on a noisy box the best estimate of the work itself."""
        return float(np.min(self.seconds) * 1e3)

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.seconds, 90) * 1e3)

    @property
    def images_per_s(self) -> float:
        return self.batch / float(np.median(self.seconds))

    def to_dict(self) -> dict:
        return {"batch": self.batch, "median_ms": round(self.median_ms, 3), "p90_ms": round(self.p90_ms, 3),
                "min_ms": round(self.min_ms, 3), "images_per_s": round(self.images_per_s, 3),
                "repeats": len(self.seconds), "all_ms": [round(v * 1e3, 3) for v in self.seconds]}


def time_interleaved(runners: dict[str, Callable[[], object]], batch: int, repeats: int, warmup: int = 2,
                     pause_s: float = 0.05, seed: int = 0) -> dict[str, Timing]:
    """Time every runner ``repeats`` times in shuffled rounds, after ``warmup`` untimed rounds."""
    names = list(runners)
    for _ in range(warmup):
        for name in names:
            runners[name]()
    order = np.random.default_rng(seed)
    seconds = {name: [] for name in names}
    for _ in range(repeats):
        for index in order.permutation(len(names)):
            time.sleep(pause_s)
            start = time.perf_counter()
            runners[names[index]]()
            seconds[names[index]].append(time.perf_counter() - start)
    return {name: Timing(batch, values) for name, values in seconds.items()}
