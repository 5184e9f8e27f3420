"""Load a catalog (a YAML file or a directory of them) and report every problem with its place.

``load_catalog(paths)`` returns a :class:`Catalog` or raises :class:`CatalogInvalid` whose
``problems`` each name the file, line, column, field path and what was expected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from geofences.catalog import Campaign, Defaults, GeofenceSpec, Store
from geofences.shapes import Fence, FenceError, fence_from_spec
from geofences.yaml_source import Document, PathKey, Position, YamlSyntaxError, parse_file

TOP_LEVEL = ("stores", "campaigns", "defaults")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the catalog, and exactly where."""

    position: Position
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.position}: {where}{self.message}"


class CatalogInvalid(ValueError):
    """The catalog has problems; all of them are in ``problems``, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.position.file, p.position.line, p.position.column))
        super().__init__(f"{len(self.problems)} problem(s) in the catalog:\n" + "\n".join(map(str, self.problems)))


@dataclass(frozen=True)
class Catalog:
    """A validated catalog: stores with their fences, campaigns, defaults, and a content hash."""

    stores: tuple[Store, ...]
    fences: tuple[Fence, ...]  # fences[i] belongs to stores[i]
    campaigns: tuple[Campaign, ...]
    defaults: Defaults
    version: str  # sha256 of the source files' bytes, first 16 hex digits
    sources: tuple[str, ...] = field(default=())

    def store(self, store_id: str) -> Store:
        return self._stores_by_id()[store_id]

    def _stores_by_id(self) -> dict[str, Store]:
        cache: dict[str, Store] | None = self.__dict__.get("_by_id")
        if cache is None:
            cache = {s.id: s for s in self.stores}
            object.__setattr__(self, "_by_id", cache)
        return cache

    def campaign_stores(self, campaign: Campaign) -> list[str]:
        """Ids of the stores a campaign selects (by id or by any of its tags)."""
        ids = set(campaign.stores.ids)
        tags = set(campaign.stores.tags)
        return [s.id for s in self.stores if s.id in ids or tags.intersection(s.tags)]


def path_text(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def catalog_files(paths: Iterable[Path]) -> list[Path]:
    """The YAML files a catalog is made of: files as given, directories' *.yaml/*.yml sorted."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted([*p.glob("*.yaml"), *p.glob("*.yml")]))
        else:
            files.append(p)
    return files


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, doc: Document, path: PathKey, message: str) -> None:
        self.problems.append(Problem(doc.position(path), path_text(path), message))

    def validate(self, doc: Document, model: type[BaseModel], data: Any, path: PathKey) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            errors = [(tuple(p for p in e["loc"] if not _is_type_tag(p)), e) for e in exc.errors()]
            for loc, err in errors:
                if err["type"] == "literal_error" and any(
                    len(other) > len(loc) and other[: len(loc)] == loc for other, _ in errors
                ):
                    continue  # the other member of a union explains it better
                self.add(doc, (*path, *loc), _message(err))
            return None


def _is_type_tag(part: object) -> bool:
    """pydantic puts union member names (``list[...]``, ``function-before[...]``) into locations."""
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _message(err: Any) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = msg.removeprefix("Value error, ")
    inp = err.get("input")
    if kind not in ("value_error", "assertion_error") and not isinstance(inp, dict | list):
        msg += f" (got {inp!r})"
    return msg


def load_catalog(paths: Sequence[Path | str]) -> Catalog:
    """Read, validate and cross-check a catalog; raise CatalogInvalid with every problem."""
    files = catalog_files(Path(p) for p in paths)
    out = _Collector()
    if not files:
        raise CatalogInvalid([Problem(Position(str(paths[0]) if paths else "-", 1, 1), "", "no YAML files found")])
    hasher = hashlib.sha256()
    stores: list[tuple[Store, Fence, Document, PathKey]] = []
    campaigns: list[tuple[Campaign, Document, PathKey]] = []
    defaults: tuple[Defaults, Document] | None = None
    raw_refs: list[tuple[Any, Document, PathKey]] = []
    for f in files:
        try:
            raw = f.read_bytes()
            hasher.update(f.name.encode() + b"\0" + raw + b"\0")
            doc = parse_file(f)
        except FileNotFoundError:
            out.problems.append(Problem(Position(str(f), 1, 1), "", "file not found"))
            continue
        except YamlSyntaxError as exc:
            out.problems.append(Problem(exc.position, "", f"YAML {exc.what}: {exc.message}"))
            continue
        for path in doc.duplicate_keys:
            out.add(doc, path, "duplicate key (each key may appear once)")
        if doc.data is None:
            continue
        if not isinstance(doc.data, dict):
            out.add(doc, (), "a catalog file is a mapping with stores:, campaigns: and/or defaults:")
            continue
        for key, value in doc.data.items():
            if key not in TOP_LEVEL:
                out.add(doc, (str(key),), f"unknown key (expected {', '.join(TOP_LEVEL)})")
            elif key == "defaults":
                d = out.validate(doc, Defaults, value, ("defaults",))
                if d is not None:
                    if defaults is not None:
                        out.add(doc, ("defaults",), f"defaults are already set in {defaults[1].file}")
                    defaults = (d, doc)
            elif not isinstance(value, list):
                out.add(doc, (key,), f"{key} is a list")
            elif key == "stores":
                for i, item in enumerate(value):
                    store = out.validate(doc, Store, item, ("stores", i))
                    if store is None:
                        _check_geofence_alone(out, doc, item, ("stores", i))
                        continue
                    try:
                        fence = fence_from_spec(store.id, store.geofence)
                    except FenceError as exc:
                        out.add(doc, ("stores", i, "geofence", *exc.path), str(exc))
                        continue
                    stores.append((store, fence, doc, ("stores", i)))
            else:
                for i, item in enumerate(value):
                    campaign = out.validate(doc, Campaign, item, ("campaigns", i))
                    if campaign is not None:
                        campaigns.append((campaign, doc, ("campaigns", i)))
                    else:
                        raw_refs.append((item, doc, ("campaigns", i)))
    defaults_model = defaults[0] if defaults else Defaults()
    _cross_check(out, stores, campaigns)
    _check_raw_references(out, {s.id for s, _, _, _ in stores}, {t for s, _, _, _ in stores for t in s.tags}, raw_refs)
    if out.problems:
        raise CatalogInvalid(out.problems)
    return Catalog(
        stores=tuple(s for s, _, _, _ in stores),
        fences=tuple(f for _, f, _, _ in stores),
        campaigns=tuple(c for c, _, _ in campaigns),
        defaults=defaults_model,
        version=hasher.hexdigest()[:16],
        sources=tuple(str(f) for f in files),
    )


def _check_geofence_alone(out: _Collector, doc: Document, item: Any, path: PathKey) -> None:
    """A store with other problems still gets its geometry checked, so every problem shows."""
    if not isinstance(item, dict) or "geofence" not in item:
        return
    if any(p.path.startswith(path_text((*path, "geofence"))) for p in out.problems):
        return
    spec = out.validate(doc, GeofenceSpec, item["geofence"], (*path, "geofence"))
    if spec is None:
        return
    try:
        fence_from_spec(str(item.get("id", "?")), spec)
    except FenceError as exc:
        out.add(doc, (*path, "geofence", *exc.path), str(exc))


def _check_raw_references(
    out: _Collector, store_ids: set[str], tags: set[str], raw: list[tuple[Any, Document, PathKey]]
) -> None:
    """Unknown store ids and tags in campaigns that failed validation for other reasons."""
    for item, doc, path in raw:
        sel = item.get("stores") if isinstance(item, dict) else None
        if not isinstance(sel, dict):
            continue
        for key, known, what in (("ids", store_ids, "no store with id"), ("tags", tags, "no store has tag")):
            values = sel.get(key)
            if isinstance(values, list):
                for i, v in enumerate(values):
                    if isinstance(v, str) and v not in known:
                        out.add(doc, (*path, "stores", key, i), f"{what} {v!r}")


def _at(doc: Document, path: PathKey) -> Position:
    """Where an object's id was written (positions are worked out only for a problem)."""
    return doc.position((*path, "id"))


def _cross_check(
    out: _Collector,
    stores: list[tuple[Store, Fence, Document, PathKey]],
    campaigns: list[tuple[Campaign, Document, PathKey]],
) -> None:
    seen: dict[str, tuple[Document, PathKey]] = {}  # where each id was first defined
    for store, _, doc, path in stores:
        if store.id in seen:
            first = _at(*seen[store.id])
            out.add(doc, (*path, "id"), f"duplicate store id {store.id!r} (first defined at {first})")
        else:
            seen[store.id] = (doc, path)
    tags = {t for s, _, _, _ in stores for t in s.tags}
    seen_c: dict[str, tuple[Document, PathKey]] = {}
    for c, doc, path in campaigns:
        if c.id in seen_c:
            first = _at(*seen_c[c.id])
            out.add(doc, (*path, "id"), f"duplicate campaign id {c.id!r} (first defined at {first})")
        else:
            seen_c[c.id] = (doc, path)
        for i, sid in enumerate(c.stores.ids):
            if sid not in seen:
                out.add(doc, (*path, "stores", "ids", i), f"no store with id {sid!r}")
        for i, tag in enumerate(c.stores.tags):
            if tag not in tags:
                out.add(doc, (*path, "stores", "tags", i), f"no store has tag {tag!r}")
        if not any(s.id in c.stores.ids or set(c.stores.tags) & set(s.tags) for s, _, _, _ in stores):
            out.add(doc, (*path, "stores"), "the campaign selects no store")
