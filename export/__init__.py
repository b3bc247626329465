"""auditor-rt export: everything that needs torch and timm (data, the risk head, training, ONNX export)."""
