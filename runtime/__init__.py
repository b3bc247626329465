"""auditor-rt runtime: runs exported artifacts with numpy, ONNX Runtime and OpenCV only (never torch or timm).

The public names load lazily, so ``import auditor_rt.runtime`` costs nothing until one is used.
"""

import os

from auditor_rt.runtime.imageio_limits import DEFAULT_MAX_PIXELS
from auditor_rt.runtime.lazy import lazy_getattr

# OpenCV checks this before it allocates a decoded image (decompression bombs); it reads it once, so set it before
# anything in the runtime imports cv2. A user's own setting wins.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(DEFAULT_MAX_PIXELS))

_EXPORTS = {
    "Artifact": "auditor_rt.runtime.artifact",
    "Manifest": "auditor_rt.runtime.manifest",
    "Auditor": "auditor_rt.runtime.auditor",
    "RiskAuditor": "auditor_rt.runtime.auditor",
    "ClassifierAuditor": "auditor_rt.runtime.auditor",
    "AuditResult": "auditor_rt.runtime.results",
    "ClassResult": "auditor_rt.runtime.classify",
    "run_pipeline": "auditor_rt.runtime.pipeline",
    "ImageFileSource": "auditor_rt.runtime.image_file_source",
    "VideoSource": "auditor_rt.runtime.video_source",
    "Region": "auditor_rt.runtime.regions",
    "create_runner": "auditor_rt.runtime.runners",
    "decode_image": "auditor_rt.runtime.imageio",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
