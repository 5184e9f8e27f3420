"""The compiled hot path: a few pure-Python modules, compiled with mypyc by `make native`.

The ping parser, gates, presence, device state, engine, caps, schedules and geodesy are plain
typed Python; mypyc turns the same source into C extensions beside it (about 1.3x faster per
ping). Python would load an extension even after its source changed, and compiled modules
call each other directly, so one stale module taints them all: when any is older than its
source (the build records a hash of each source it compiled), or some are missing, or
``GEOPUSH_PURE_PYTHON=1`` (profiling, debugging), every one of them loads from source instead.
No extension at all: plain Python, nothing to do.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

MODULES = (
    "decisions.pings",
    "decisions.presence",
    "decisions.state",
    "decisions.caps",
    "decisions.schedule",
    "decisions.decision_row",
    "decisions.notification_row",
    "decisions.engine",
    "geofences.geodesy",
)
GROUP = "geofences.native_core"  # the extensions' shared library: geofences/native_core__mypyc.*.so
PURE_ENV = "GEOPUSH_PURE_PYTHON"
ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "geofences/native_built.json"  # module -> sha256 of the source it was compiled from


def source_of(module: str, root: Path = ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def extension_of(module: str, root: Path = ROOT) -> Path | None:
    """The compiled extension of ``module`` beside its source, if built."""
    src = source_of(module, root)
    found = [p for p in src.parent.glob(f"{src.stem}.*") if p.suffix in (".so", ".pyd")]
    return found[0] if found else None


def pure_python(environ: Mapping[str, str]) -> bool:
    """Whether ``GEOPUSH_PURE_PYTHON`` asks for every compiled part to stay unused."""
    return environ.get(PURE_ENV, "").lower() in ("1", "true", "yes", "on")  # as the settings read it


def modules_from_source(environ: Mapping[str, str] | None = None, root: Path = ROOT) -> list[str]:
    """The compiled modules that must load from source: none, or all that are built."""
    env = os.environ if environ is None else environ
    built = {m: ext for m in MODULES if (ext := extension_of(m, root)) is not None}
    if not built:
        return []
    if pure_python(env):
        return sorted(built)
    stale = [m for m in built if built_from(root).get(m) != source_hash(m, root)]
    if stale or len(built) < len(MODULES):
        why = f"{', '.join(stale)} changed since compiled" if stale else "only some are compiled"
        warnings.warn(
            f"geopush: {why}; every compiled module loads from source (`make native` compiles again)",
            RuntimeWarning,
            stacklevel=2,
        )
        return sorted(built)
    return []


def source_hash(module: str, root: Path = ROOT) -> str:
    return hashlib.sha256(source_of(module, root).read_bytes()).hexdigest()


def built_from(root: Path = ROOT) -> dict[str, str]:
    """What the last build compiled: module -> source hash (empty if unknown)."""
    try:
        recorded: dict[str, str] = json.loads((root / MANIFEST).read_text())
        return recorded
    except (OSError, ValueError):
        return {}


def record_build(root: Path = ROOT) -> None:
    """After a build: remember which sources the extensions were compiled from."""
    (root / MANIFEST).write_text(json.dumps({m: source_hash(m, root) for m in MODULES}, indent=1) + "\n")


class SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the given modules' ``.py`` source ahead of their compiled extensions."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules = set(modules)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        return importlib.util.spec_from_file_location(fullname, source_of(fullname))


def use_fresh_modules() -> None:
    """Called by the ``geofences`` and ``decisions`` packages before any of their modules loads."""
    if any(isinstance(f, SourceFirst) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, SourceFirst(modules_from_source()))


def compiled() -> bool:
    """Whether the compiled modules are the ones in use."""
    import decisions.engine
    import geofences.geodesy

    return all(not str(m.__file__).endswith(".py") for m in (decisions.engine, geofences.geodesy))
