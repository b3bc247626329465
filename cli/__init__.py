"""The ``auditor-rt`` command-line interface."""
