"""Torch to ONNX: the conversion itself, the ONNX Runtime passes, and the shared weights file."""
