"""Checks of an exported artifact against PyTorch: parity at export, ``auditor-rt verify`` (integrity, the
rebuilt reference, output comparison and its report), and IG convergence."""
