"""auditor-rt export: everything that needs torch and timm, one subpackage per job, each layer importing only the
ones before it: ``models`` (backbone, risk head, checkpoint, classifiers), ``conversion`` (torch to ONNX),
``attribution`` (the gradient compiler and the methods), ``verification`` (parity, verify, IG convergence),
``graphs`` (artifact export and its manifest) and ``training``. ``errors``, ``versions`` and ``progress`` serve
them all."""
