"""The torch modules that are audited and exported: the backbone, the risk head and its checkpoint, the audit module
over them, and plain timm classifiers."""
