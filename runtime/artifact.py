"""An exported artifact folder: its manifest, and graph files checked against their digests before use."""

from __future__ import annotations

import hashlib
from pathlib import Path

from auditor_rt.runtime.errors import ArtifactError, DigestMismatchError
from auditor_rt.runtime.manifest import MANIFEST_NAME, GraphEntry, Manifest
from auditor_rt.runtime.onnx_external import check_external_data


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
        """The graph's file, after its digest and those of the shared data files it reads have matched, and after
        every external-data location inside it has been checked to be a file in this folder (``onnx_external``):
        all before any session opens it, whichever ONNX Runtime version would open it."""
        entry = self.graph(name)
        path = self._inside(entry.file, f"graph {name!r}")
        for data_file, digest in self.manifest.data_files.items():
            if data_file not in self._verified:
                self._check_digest(self._inside(data_file, "data file"), digest)
                self._verified.add(data_file)
        if name not in self._verified:
            self._check_digest(path, entry.sha256)
            check_external_data(path, self.folder)
            self._verified.add(name)
        return path

    def verify(self) -> dict[str, str]:
        """Check every graph file; returns {graph: "ok"} or raises on the first mismatch."""
        for name in self.manifest.graphs:
            self.graph_path(name)
        return {name: "ok" for name in self.manifest.graphs}

    def _inside(self, name: str, what: str) -> Path:
        """A file the manifest names, refused when the name leaves the folder (absolute, '..', a symlink out)."""
        path = self.folder / name
        if Path(name).is_absolute() or not path.resolve().is_relative_to(self.folder.resolve()):
            raise ArtifactError(f"{self.folder}: the manifest's {what} {name!r} is outside the artifact folder; "
                                "an artifact may only name files inside it. Re-export it")
        return path

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
