"""YAML documents with positions: every value remembers its file, line and column.

The catalog's validation names the exact place of each problem, so loading keeps a map from a
value's path (``("stores", 3, "geofence", "circle", "lat")``) to where it was written.
Duplicate keys inside one mapping are problems too (plain YAML silently keeps the last).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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
class Document:
    """One parsed YAML file: its data, positions of every node and problems found while reading."""

    file: str
    data: Any
    positions: dict[PathKey, Position] = field(default_factory=dict)
    key_positions: dict[PathKey, Position] = field(default_factory=dict)
    duplicate_keys: list[tuple[PathKey, Position]] = field(default_factory=list)

    def position(self, path: PathKey) -> Position:
        """The position of ``path``, or of its nearest written ancestor."""
        for cut in range(len(path), -1, -1):
            prefix = path[:cut]
            if prefix in self.positions:
                # an unknown key is best pointed at by the key itself
                if cut == len(path) and prefix in self.key_positions:
                    return self.key_positions[prefix]
                return self.positions[prefix]
        return Position(self.file, 1, 1)


class YamlSyntaxError(ValueError):
    """The file is not valid YAML; carries the position of the error."""

    def __init__(self, position: Position, message: str) -> None:
        super().__init__(f"{position}: {message}")
        self.position = position
        self.message = message


def _pos(file: str, node: yaml.Node) -> Position:
    return Position(file, node.start_mark.line + 1, node.start_mark.column + 1)


# libyaml's parser (C) when PyYAML was built with it: ~10x faster on 100k-store catalogs; its
# nodes carry the same marks
Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _build(node: yaml.Node, path: PathKey, doc: Document, loader: Any) -> Any:
    doc.positions[path] = _pos(doc.file, node)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | bool | float) or key is None:
                key = str(key)
            child: PathKey = (*path, str(key))
            if key in out:
                doc.duplicate_keys.append((child, _pos(doc.file, key_node)))
            doc.key_positions[child] = _pos(doc.file, key_node)
            out[key] = _build(value_node, child, doc, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), doc, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def parse_text(text: str, file: str) -> Document:
    """Parse one YAML text; raise YamlSyntaxError with the position of a syntax error."""
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(file, None)
        doc = Document(file, None)
        doc.data = _build(node, (), doc, loader)
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlSyntaxError(Position(file, line, col), str(exc.problem or exc)) from None
    finally:
        loader.dispose()


def parse_file(path: Path) -> Document:
    return parse_text(path.read_text(encoding="utf-8"), str(path))
