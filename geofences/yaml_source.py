"""YAML documents with positions: every value can say the file, line and column it came from.

The catalog's validation names the exact place of each problem, so a document can map a value's
path (``("stores", 3, "geofence", "circle", "lat")``) to where it was written. Duplicate keys
inside one mapping are problems too (plain YAML silently keeps the last).

Reading is two-speed: the data come from one pass over libyaml's events (no node tree, no
position per value: ~6x faster on a 100k-store catalog, 22 MB), and positions are worked out
from the text only when first asked — for a problem to report. Anything the fast pass does not
handle (anchors and aliases, explicit tags, merge keys, complex keys, duplicate keys, errors)
is read by the positioned parser, which has PyYAML's own semantics; the fast pass resolves
plain scalars with the same resolver table, so both give the same data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml import events

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class Position:
    """Where a value was written (1-based line and column)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass
class _Places:
    """Where every value and every mapping key of a document was written."""

    values: dict[PathKey, Position] = field(default_factory=dict)
    keys: dict[PathKey, Position] = field(default_factory=dict)


@dataclass
class Document:
    """One parsed YAML file: its data, its duplicate keys and (on demand) where each value was.

    ``text`` is kept to work positions out at the first :meth:`position` call."""

    file: str
    data: Any
    text: str = ""
    duplicate_keys: list[PathKey] = field(default_factory=list)
    places: _Places | None = None

    def position(self, path: PathKey) -> Position:
        """The position of ``path``, or of its nearest written ancestor."""
        if self.places is None:
            self.places = _positioned(self.text, self.file)[1]
        places = self.places
        for cut in range(len(path), -1, -1):
            prefix = path[:cut]
            if prefix in places.values:
                # an unknown key is best pointed at by the key itself
                if cut == len(path) and prefix in places.keys:
                    return places.keys[prefix]
                return places.values[prefix]
        return Position(self.file, 1, 1)


class YamlSyntaxError(ValueError):
    """The file is not valid YAML; carries the position of the error."""

    def __init__(self, position: Position, message: str, what: str = "syntax error") -> None:
        super().__init__(f"{position}: {message}")
        self.position = position
        self.message = message
        self.what = what  # "syntax error", or "bad value" for a scalar that is not what it looks like


# libyaml's parser (C) when PyYAML was built with it; its events and nodes carry the same marks
Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_text(text: str, file: str) -> Document:
    """Parse one YAML text; raise YamlSyntaxError with the position of a syntax error."""
    try:
        return Document(file, _fast_data(text), text)
    except _Unhandled:
        data, places, duplicates = _positioned(text, file)
        return Document(file, data, text, duplicates, places)


def parse_file(path: Path) -> Document:
    return parse_text(path.read_text(encoding="utf-8"), str(path))


# ------------------------------------------------------------------ the positioned parser
def _pos(file: str, node: yaml.Node) -> Position:
    return Position(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _key(value: Any) -> Any:
    """A mapping key as the catalog sees it: scalars as they are, anything else as text."""
    if not isinstance(value, str | int | bool | float) or value is None:
        return str(value)
    return value


def _build(node: yaml.Node, path: PathKey, file: str, places: _Places, duplicates: list[PathKey], loader: Any) -> Any:
    places.values[path] = _pos(file, node)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = _key(loader.construct_object(key_node, deep=True))
            child: PathKey = (*path, str(key))
            if key in out:
                duplicates.append(child)
            places.keys[child] = _pos(file, key_node)
            out[key] = _build(value_node, child, file, places, duplicates, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), file, places, duplicates, loader) for i, item in enumerate(node.value)]
    try:
        return loader.construct_object(node, deep=True)
    except ValueError as exc:  # e.g. a date that is not one: 2026-13-45
        what = _KINDS.get(node.tag.rsplit(":", 1)[-1], node.tag)
        raise YamlSyntaxError(_pos(file, node), f"{node.value!r} is not a valid {what}: {exc}", "bad value") from None


_KINDS = {"timestamp": "date", "int": "integer", "float": "number", "bool": "true/false"}  # in words


def _positioned(text: str, file: str) -> tuple[Any, _Places, list[PathKey]]:
    """(data, positions, duplicate keys) by PyYAML's composer: a node with marks per value."""
    loader = Loader(text)
    places = _Places()
    duplicates: list[PathKey] = []
    try:
        node = loader.get_single_node()
        if node is None:
            return None, places, duplicates
        return _build(node, (), file, places, duplicates, loader), places, duplicates
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlSyntaxError(Position(file, line, col), str(exc.problem or exc)) from None
    finally:
        loader.dispose()


# ------------------------------------------------------------------ the fast pass
class _Unhandled(Exception):
    """Something the fast pass leaves to the positioned parser."""


_STR = "tag:yaml.org,2002:str"
_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_SPECIAL = {"tag:yaml.org,2002:merge", "tag:yaml.org,2002:value"}  # '<<' and '=': the composer's business
_PLAIN_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")  # what int() reads exactly as YAML 1.1 does
_PLAIN_FLOAT = re.compile(r"[-+]?[0-9]*\.[0-9]+")  # what float() reads exactly as YAML 1.1 does
_CACHED = 200_000  # plain scalars remembered per document (keys and tags repeat; numbers rarely)
_NO_KEY = object()  # a mapping waiting for its next key


class _Scalars:
    """Plain scalars to Python values with SafeLoader's implicit resolvers and constructors."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        table = loader.yaml_implicit_resolvers
        self.by_first: dict[str, list[tuple[str, Any]]] = table
        self.wildcard: list[tuple[str, Any]] = table.get(None, [])
        self.constructors: dict[str, Any] = loader.yaml_constructors
        self.seen: dict[str, Any] = {}

    def value(self, e: events.ScalarEvent) -> Any:
        if e.anchor is not None or (e.tag is not None and e.tag != "!"):
            raise _Unhandled
        v: str = e.value
        if not e.implicit[0]:
            return v  # quoted: a string
        seen = self.seen.get(v, _NO_KEY)
        if seen is not _NO_KEY:
            return seen
        tag = _STR
        for t, rx in self.by_first.get(v[0] if v else "", []) + self.wildcard:
            if rx.match(v):
                tag = t
                break
        if tag == _STR:
            out: Any = v
        elif tag == _INT_TAG and _PLAIN_INT.fullmatch(v):
            out = int(v)
        elif tag == _FLOAT_TAG and _PLAIN_FLOAT.fullmatch(v):
            out = float(v)
        elif tag in _SPECIAL or tag not in self.constructors:
            raise _Unhandled
        else:
            try:
                out = self.constructors[tag](self.loader, yaml.ScalarNode(tag, v))
            except (yaml.YAMLError, ValueError):
                raise _Unhandled from None  # the positioned parser says where
        if len(self.seen) < _CACHED:
            self.seen[v] = out
        return out


def _fast_data(text: str) -> Any:
    """The document's data from one pass over the parser's events (raises _Unhandled)."""
    loader = Loader(text)
    try:
        return _walk(loader, _Scalars(loader))
    except yaml.YAMLError:
        raise _Unhandled from None
    finally:
        loader.dispose()


def _walk(loader: Any, scalars: _Scalars) -> Any:
    get = loader.get_event
    get()  # stream start
    e = get()
    if isinstance(e, events.StreamEndEvent):
        return None
    e = get()  # past the document start
    stack: list[tuple[Any, Any]] = []  # (container, its pending key) of the enclosing levels
    container: Any = None
    key: Any = _NO_KEY
    while True:
        kind = type(e)
        if kind is events.ScalarEvent:
            value = scalars.value(e)
        elif kind is events.MappingStartEvent or kind is events.SequenceStartEvent:
            if e.anchor is not None or (e.tag is not None and not e.implicit):
                raise _Unhandled
            stack.append((container, key))
            container, key = ({} if kind is events.MappingStartEvent else []), _NO_KEY
            e = get()
            continue
        elif kind is events.MappingEndEvent or kind is events.SequenceEndEvent:
            value = container
            container, key = stack.pop()
        else:
            raise _Unhandled  # an alias
        if container is None:
            break
        if type(container) is list:
            container.append(value)
        elif key is _NO_KEY:
            if isinstance(value, dict | list):
                raise _Unhandled  # a complex key
            key = _key(value)
        else:
            if key in container:
                raise _Unhandled  # a duplicate key: reported with its position
            container[key] = value
            key = _NO_KEY
        e = get()
    if not isinstance(get(), events.DocumentEndEvent) or not isinstance(get(), events.StreamEndEvent):
        raise _Unhandled  # more than one document: the positioned parser says so
    return value
