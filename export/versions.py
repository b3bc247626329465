"""The versions of torch (and the rest of the ``export`` extra) that train, export, demo and verify can run with.

The supported ranges live in one place: ``pyproject.toml``'s ``export`` extra. They are read back here from the
*installed* package metadata (what pip resolved against), so the check and the install can never disagree. A torch
outside the range fails deep inside tracing with a traceback (torch 2.11: ``GuardOnDataDependentSymNode`` in the
attribution compiler); this check turns that into one line that names the fix, before any work is done.

Only the standard library is imported at module level (and ``packaging``, which the export extra always brings,
inside the check), so the CLI can import the install hint without loading torch.
"""

from __future__ import annotations

import importlib.metadata
from functools import lru_cache

from auditor_rt.runtime.errors import ConfigError

DISTRIBUTION = "auditor-rt"
EXTRA = "export"
# A package index has no auditor-rt, so `pip install 'auditor-rt[export]'` cannot work; this does.
EXPORT_INSTALL = "pip install -c constraints.txt -e '.[export]'"
INSTALL_HINT = f"from the auditor-rt checkout: {EXPORT_INSTALL}"
WHY = {"torch": "older ones fail to trace the gradient graphs (torch 2.11 does) or are untested",
       "torchvision": "it must match torch"}


class UnsupportedVersionError(ConfigError):
    """An installed package of the export extra is missing, or outside the range auditor-rt declares for it."""


def installed_version(name: str) -> str | None:
    """The installed version of a distribution, from its metadata (fast: torch itself is not imported)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=None)
def declared_ranges(extra: str = EXTRA) -> tuple[tuple[str, str], ...]:
    """(package, specifier) for every requirement of ``extra``, as the installed auditor-rt declares them; empty
    where auditor-rt has no metadata (not installed), since then nothing declares a range."""
    from packaging.requirements import Requirement

    found = list(importlib.metadata.distributions(name=DISTRIBUTION))
    if not found:
        return ()
    # An installer writes RECORD. A stale auditor_rt.egg-info left in a source checkout by an older build has none,
    # and would otherwise shadow the installed metadata whenever Python runs from the checkout (pytest does).
    installed = [dist for dist in found if dist.read_text("RECORD") is not None] or found
    requires = installed[0].requires or []
    ranges = []
    for text in requires:
        requirement = Requirement(text)
        marker = requirement.marker
        # Base dependencies have no marker; the extra's own carry `extra == "export"` (maybe with a platform test).
        if marker is not None and marker.evaluate({"extra": extra}) and not marker.evaluate({"extra": ""}):
            ranges.append((requirement.name, str(requirement.specifier)))
    return tuple(ranges)


def version_problems(extra: str = EXTRA) -> list[str]:
    """One phrase per package of ``extra`` that is missing or outside its declared range (about 20 ms: metadata
    only, nothing is imported)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    problems = []
    for name, specifier in declared_ranges(extra):
        version = installed_version(name)
        if version is None:
            problems.append(f"{name} is not installed (needs {name}{specifier})")
            continue
        try:
            supported = SpecifierSet(specifier).contains(Version(version), prereleases=True)
        except InvalidVersion:
            supported = False
        if not supported:
            why = f"; {WHY[name]}" if name in WHY else ""
            problems.append(f"{name} {version} is installed but auditor-rt supports {name}{specifier}{why}")
    return problems


def require_export_versions() -> None:
    """Raise one ``UnsupportedVersionError`` naming every package of the export extra that is missing or out of
    range. Call it where a command starts to build a PyTorch model (train, export, demo, verify)."""
    try:
        import packaging  # noqa: F401  (scikit-image and matplotlib need it: no packaging, no export extra)
    except ImportError:
        raise UnsupportedVersionError(f"this command needs the export extra (torch, timm, onnx...), which is not "
                                      f"installed; {INSTALL_HINT}") from None
    problems = version_problems()
    if problems:
        raise UnsupportedVersionError(f"{'; '.join(problems)}. Install the supported versions, {INSTALL_HINT}")


def exporter_versions() -> dict[str, str]:
    """The versions that wrote an artifact, for its manifest."""
    import onnx
    import timm
    import torch

    return {"torch": torch.__version__, "timm": timm.__version__, "onnx": onnx.__version__,
            "auditor_rt": installed_version(DISTRIBUTION) or "unknown"}
