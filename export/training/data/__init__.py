"""Data sets for training and evaluation: labelled samples, batches of decoded images, and the offline demo set.

The names load lazily so that reading a manifest (``records``) never pulls in torch; only the loader needs it.
"""

from auditor_rt.runtime.lazy import lazy_getattr

_EXPORTS = {
    "Sample": "auditor_rt.export.training.data.records",
    "load_samples": "auditor_rt.export.training.data.records",
    "read_image_folder": "auditor_rt.export.training.data.records",
    "read_manifest": "auditor_rt.export.training.data.records",
    "split_samples": "auditor_rt.export.training.data.records",
    "Batch": "auditor_rt.export.training.data.loader",
    "SampleDataset": "auditor_rt.export.training.data.loader",
    "collate_samples": "auditor_rt.export.training.data.loader",
    "make_loader": "auditor_rt.export.training.data.loader",
    "DemoData": "auditor_rt.export.training.data.demo",
    "demo_backgrounds": "auditor_rt.export.training.data.demo",
    "make_demo_dataset": "auditor_rt.export.training.data.demo",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
