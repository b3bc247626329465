"""The errors of training and export: a data set that cannot be used, an export that failed or does not match
PyTorch. Both are ``AuditorError``s (one-line messages, exit code 2); the runtime never raises them."""

from auditor_rt.runtime.errors import AuditorError


class DataError(AuditorError):
    """A data set (folder, CSV or JSONL manifest) is malformed or empty."""


class ExportError(AuditorError):
    """Exporting a model to ONNX failed, or the export does not match PyTorch."""
