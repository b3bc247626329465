"""An exported artifact folder: its manifest, and graph files checked against their digests before use."""

from __future__ import annotations

import hashlib
from pathlib import Path

from auditor_rt.runtime.errors import ArtifactError, DigestMismatchError
from auditor_rt.runtime.manifest import MANIFEST_NAME, GraphEntry, Manifest


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Artifact:
    """Loads ``<folder>/manifest.json``. ``graph_path(name)`` returns a file only after its SHA-256 matches."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ArtifactError(f"{self.folder}: no such artifact folder; create one with `auditor-rt export`")
        if not (self.folder / MANIFEST_NAME).is_file():
            raise ArtifactError(f"{self.folder}: no {MANIFEST_NAME} inside; is this an artifact folder?")
        self.manifest = Manifest.read(self.folder / MANIFEST_NAME)
        self._verified: set[str] = set()

    @classmethod
    def load(cls, folder: str | Path) -> "Artifact":
        return cls(folder)

    @property
    def name(self) -> str:
        return self.manifest.name

    def graph(self, name: str) -> GraphEntry:
        try:
            return self.manifest.graphs[name]
        except KeyError:
            known = ", ".join(sorted(self.manifest.graphs)) or "none"
            raise ArtifactError(f"{self.folder}: no graph named {name!r} (the artifact has: {known})") from None

    def graph_path(self, name: str) -> Path:
        """The graph's file, after its digest and those of the shared data files it reads have matched."""
        entry = self.graph(name)
        path = self.folder / entry.file
        for data_file, digest in self.manifest.document.get("data_files", {}).items():
            if data_file not in self._verified:
                self._check_digest(self.folder / data_file, digest)
                self._verified.add(data_file)
        if name not in self._verified:
            self._check_digest(path, entry.sha256)
            self._verified.add(name)
        return path

    def verify(self) -> dict[str, str]:
        """Check every graph file; returns {graph: "ok"} or raises on the first mismatch."""
        for name in self.manifest.graphs:
            self.graph_path(name)
        return {name: "ok" for name in self.manifest.graphs}

    @staticmethod
    def _check_digest(path: Path, expected: str) -> None:
        if not path.is_file():
            raise ArtifactError(f"{path}: named in the manifest but missing; re-export the artifact")
        actual = sha256_file(path)
        if actual != expected:
            raise DigestMismatchError(
                f"{path}: SHA-256 {actual[:16]}… does not match the manifest's {expected[:16]}…; the file was "
                "changed or replaced after export. Re-export, or restore the original file"
            )
