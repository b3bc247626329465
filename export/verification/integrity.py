"""Integrity of an artifact, as ``verify`` reports it: every file against its digest, every graph through the ONNX
checker, and the opset and metadata written into each graph against the manifest. Each check is a ``Finding``; a
problem is reported, never raised, so that one damaged file does not hide the state of the others."""

from __future__ import annotations

import json
from dataclasses import dataclass

from auditor_rt.runtime.artifact import Artifact
from auditor_rt.runtime.errors import ArtifactError
from auditor_rt.runtime.manifest import Preprocess


@dataclass
class Finding:
    """One check: ``ok`` or not, and what was found."""

    check: str
    ok: bool
    detail: str = ""


def integrity_findings(artifact: Artifact, graphs: list[str]) -> list[Finding]:
    findings = []
    for data_file, digest in artifact.manifest.data_files.items():
        findings.append(_digest(artifact, data_file, digest))
    for name in graphs:
        entry = artifact.graph(name)
        findings.append(_digest(artifact, entry.file, entry.sha256))
        path = artifact.folder / entry.file
        if not path.is_file():
            continue
        findings.append(_onnx_checker(path))
        findings += _opset_and_metadata(artifact, name, path)
    return findings


def _digest(artifact: Artifact, file: str, digest: str) -> Finding:
    try:
        artifact._check_digest(artifact.folder / file, digest)
    except ArtifactError as exc:
        return Finding(f"digest {file}", False, str(exc))
    return Finding(f"digest {file}", True, f"SHA-256 {digest[:16]}…")


def _onnx_checker(path) -> Finding:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=False)  # by path: external data (weights.bin) is read too
    except Exception as exc:  # onnx raises ValidationError, and others for unreadable files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Finding(f"onnx checker {path.name}", False, first)
    return Finding(f"onnx checker {path.name}", True)


def _opset_and_metadata(artifact: Artifact, name: str, path) -> list[Finding]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # a file the checker already failed on
        return [Finding(f"metadata {path.name}", False, f"unreadable: {type(exc).__name__}")]
    entry = artifact.graph(name)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    findings = [Finding(f"opset {path.name}", opset == entry.opset,
                        f"opset {opset}" if opset == entry.opset else
                        f"the file has opset {opset}, the manifest says {entry.opset}")]
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    manifest = artifact.manifest
    expected = {
        "auditor_rt.graph": name,
        "auditor_rt.backbone": str(manifest.model.backbone),
        "auditor_rt.weights_sha256": str(manifest.model.weights.sha256),
        "auditor_rt.preprocess": manifest.preprocess.to_dict(),
        "auditor_rt.threshold": manifest.threshold,
    }
    differences = []
    for key, want in expected.items():
        if key not in metadata:
            differences.append(f"{key} is missing")
            continue
        have = metadata[key]
        if key == "auditor_rt.preprocess":
            have = Preprocess.from_dict(json.loads(have)).to_dict()  # an older file may omit defaults
        elif key == "auditor_rt.threshold":
            have = None if have == "None" else float(have)
        if have != want:
            differences.append(f"{key.removeprefix('auditor_rt.')}: the file says {have}, the manifest {want}")
    findings.append(Finding(f"metadata {path.name}", not differences,
                            "; ".join(differences) if differences else "matches the manifest"))
    return findings
