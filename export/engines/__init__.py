"""Native TensorRT engines for an artifact's graphs (``auditor-rt build``): ``profiles`` (the optimization profile
of each graph's inputs, from the manifest), ``network`` (one ONNX graph to one serialized engine with TensorRT's
builder) and ``build`` (which graphs, which ONNX file, the files and the manifest's ``engines`` section). No torch:
only TensorRT and cuda-python, imported when a build starts. The runtime side is ``runtime/runners/tensorrt.py``."""

from auditor_rt.export.engines.build import BuildOptions, build_engines

__all__ = ["BuildOptions", "build_engines"]
