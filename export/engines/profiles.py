"""The one optimization profile of a graph: min/opt/max shapes of every input, from the manifest's TensorSpecs.

Every input's dim 0 is "batch" (min/opt/max from the build options); SmoothGrad's ``noise`` input has a second
symbolic dim "samples", fixed by the graph's ``params["samples"]``; every other dim is a number in the manifest.
TensorRT: IOptimizationProfile.set_shape(name, min, opt, max) (11.4 Python API, Core/OptimizationProfile.html)."""

from __future__ import annotations

from auditor_rt.runtime.errors import ArtifactError, ConfigError
from auditor_rt.runtime.manifest import GraphEntry

Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def check_batches(min_batch: int, opt_batch: int, max_batch: int) -> None:
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ConfigError(f"the batch profile needs 1 <= --min-batch <= --opt-batch <= --max-batch; got "
                          f"{min_batch}, {opt_batch}, {max_batch}")


def input_profiles(name: str, entry: GraphEntry, min_batch: int, opt_batch: int, max_batch: int) -> Shapes:
    """{input: (min, opt, max)} for graph ``name``."""
    check_batches(min_batch, opt_batch, max_batch)
    fixed = {"samples": (entry.params or {}).get("samples")}
    shapes: Shapes = {}
    for spec in entry.inputs:
        low, opt, high = [], [], []
        for axis, dim in enumerate(spec.shape):
            if axis == 0 and dim == "batch":
                values = (min_batch, opt_batch, max_batch)
            elif isinstance(dim, int):
                values = (dim, dim, dim)
            elif isinstance(fixed.get(dim), int):
                values = (fixed[dim],) * 3
            else:
                raise ArtifactError(f"graph {name!r}: input {spec.name!r} dim {axis} is {dim!r}, which `auditor-rt "
                                    "build` cannot size (it knows dim 0 'batch', and 'samples' from the graph's "
                                    "params); re-export the artifact with this version")
            for target, value in zip((low, opt, high), values):
                target.append(int(value))
        if not spec.shape or spec.shape[0] != "batch":
            raise ArtifactError(f"graph {name!r}: input {spec.name!r} has shape {list(spec.shape)}, without the "
                                "'batch' dim 0 that every exported input has; re-export the artifact")
        shapes[spec.name] = (tuple(low), tuple(opt), tuple(high))
    return shapes
