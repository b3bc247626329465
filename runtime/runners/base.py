"""The runner interface: a public ``infer`` that validates and times around a backend's private ``_infer_impl``."""

from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np

from auditor_rt.runtime.errors import InputValidationError
from auditor_rt.runtime.manifest import TensorSpec

_NUMPY_DTYPES = {"uint8": np.uint8, "float32": np.float32, "float16": np.float16, "int64": np.int64,
                 "int32": np.int32, "bool": np.bool_}


def numpy_dtype(name: str) -> np.dtype:
    return np.dtype(_NUMPY_DTYPES[name])


class Runner:
    """Runs one graph. Use as a context manager; ``infer(feed)`` returns a dict of output name -> array."""

    name = "runner"

    def __init__(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]):
        self.input_specs = {spec.name: spec for spec in inputs}
        self.output_specs = {spec.name: spec for spec in outputs}
        self.last_latency_ms: float | None = None

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @staticmethod
    def available_providers() -> list[str]:
        """The execution providers or devices this backend can use here."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the backend's session or engine. Safe to call twice."""

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.validate(feed)
        start = time.perf_counter()
        outputs = self._infer_impl(dict(feed))
        self.last_latency_ms = (time.perf_counter() - start) * 1000.0
        return outputs

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} must implement _infer_impl")

    def validate(self, feed: Mapping[str, np.ndarray]) -> None:
        """Check names, dtypes and shapes against the specs; the message names the input, expected and received."""
        missing = sorted(set(self.input_specs) - set(feed))
        unknown = sorted(set(feed) - set(self.input_specs))
        if missing or unknown:
            raise InputValidationError(
                f"inputs do not match the graph: missing {missing or 'none'}, unexpected {unknown or 'none'}; "
                f"the graph takes {sorted(self.input_specs)}"
            )
        batch_sizes = set()
        for name, spec in self.input_specs.items():
            value = feed[name]
            if not isinstance(value, np.ndarray):
                raise InputValidationError(f"input {name!r}: expected a numpy array, got {type(value).__name__}")
            expected_dtype = numpy_dtype(spec.dtype)
            if value.dtype != expected_dtype:
                raise InputValidationError(
                    f"input {name!r}: expected dtype {spec.dtype}, got {value.dtype} "
                    f"(images go in as uint8 RGB; normalisation happens inside the graph)"
                )
            if value.ndim != len(spec.shape) or any(
                isinstance(want, int) and want != got for want, got in zip(spec.shape, value.shape)
            ):
                raise InputValidationError(
                    f"input {name!r}: expected shape {_shape_text(spec.shape)}, got {list(value.shape)}"
                )
            if value.ndim and isinstance(spec.shape[0], str):
                batch_sizes.add(value.shape[0])
        if len(batch_sizes) > 1:
            raise InputValidationError(f"inputs disagree on the batch size: {sorted(batch_sizes)}")
        if 0 in batch_sizes:
            raise InputValidationError("empty batch: give at least one image")


def _shape_text(shape: tuple) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
