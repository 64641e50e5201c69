"""YAML text -> positioned nodes -> plain values, safely.

libyaml's C parser composes the node tree (every node keeps its marks); a small converter then builds plain
Python values from it, refusing duplicate keys, unknown tags and alias bombs. The node tree is kept beside the
values so that any later stage can map a path back to a span, and nothing pays for spans it never asks for.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from .diagnostics import Diagnostics, Label
from .span import Span

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - libyaml is present on every supported platform wheel
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

_RESOLVED: dict[tuple[bool, bool], dict[str, str]] = {}
"""Each scalar's tag by its `implicit` flags, then by its text: two lookups, and no key tuple made per node."""
_RESOLVED_LIMIT = 100_000


class _Loader(_BaseLoader):
    """The safe loader with scalar tag resolution memoised: workspaces repeat the same keys and values, and
    PyYAML's regex resolver was a sixth of the time of a large check."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.plain = not self.yaml_path_resolvers
        """No path resolvers (none are registered): a collection's tag is the default one."""
        if self.plain:
            # The composer calls these around every node, to match path resolvers; there are none, so builtins
            # that accept the same arguments and do nothing stand in for PyYAML's Python methods (9% of a parse).
            self.descend_resolver = {}.get  # type: ignore[method-assign,assignment]
            self.ascend_resolver = [].clear  # type: ignore[method-assign]

    def resolve(self, kind: type, value: str, implicit: tuple[bool, bool]) -> str:
        if kind is not yaml.ScalarNode:
            if self.plain:  # what PyYAML's resolver answers, without its Python call (a tenth of the calls)
                return _SEQUENCE if kind is yaml.SequenceNode else _MAPPING
            return str(super().resolve(kind, value, implicit))  # type: ignore[no-untyped-call]
        table = _RESOLVED.get(implicit)
        if table is None:
            table = _RESOLVED[implicit] = {}
        tag = table.get(value)
        if tag is None:
            tag = str(super().resolve(kind, value, implicit))  # type: ignore[no-untyped-call]
            if len(table) < _RESOLVED_LIMIT:
                table[value] = tag
        return tag

ALIAS_EXPANSION_LIMIT = 100_000
"""How many nodes aliases may expand to in one document before it is refused as an alias bomb."""
MAX_DEPTH = 200
"""How deeply collections may nest; far beyond any real document, well within Python's recursion limit."""

_TAG = "tag:yaml.org,2002:"
_STR, _MERGE = _TAG + "str", _TAG + "merge"
_SEQUENCE, _MAPPING = _TAG + "seq", _TAG + "map"
_KEEP_AS_TEXT = {_TAG + "timestamp", _TAG + "binary", _TAG + "value"}
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_SCALARS = {
    _TAG + name: getattr(_CONSTRUCTOR, f"construct_yaml_{name}") for name in ("null", "bool", "int", "float")
}
_KINDS = {_TAG + "int": "an integer (of at most 4,300 digits)", _TAG + "float": "a number", _TAG + "bool": "a boolean"}


def _shown(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceFile:
    """A file's display path and text, kept for rendering source lines under diagnostics."""

    path: str
    text: str

    def line(self, number: int) -> str:
        lines = self.text.splitlines()
        return lines[number - 1] if 0 < number <= len(lines) else ""


@dataclass(frozen=True, slots=True, kw_only=True)
class YamlDocument:
    """One document of a YAML stream: its plain value and the node tree it was built from."""

    file: str
    index: int
    value: Any
    root: yaml.Node


def node_span(file: str, node: yaml.Node) -> Span:
    start, end = node.start_mark, node.end_mark
    end_line, end_column = end.line + 1, end.column + 1
    if (end_line, end_column) <= (start.line + 1, start.column + 1):
        end_line, end_column = start.line + 1, start.column + 2
    return Span(file=file, line=start.line + 1, column=start.column + 1, end_line=end_line, end_column=end_column)


def decode(data: bytes, file: str, sink: Diagnostics) -> str | None:
    """UTF-8 text without a byte-order mark, or None after a diagnostic at the first bad byte."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        sink.emit(
            "invalid-encoding",
            f"file is not valid UTF-8: byte 0x{data[error.start]:02x} cannot start or continue a character",
            Span.point(file, line, column),
            label="invalid byte",
            help="save the file as UTF-8",
        )
        return None
    return text.removeprefix("\ufeff")


def load(text: str, file: str, sink: Diagnostics) -> list[YamlDocument]:
    """Every non-empty document of a YAML stream. Problems go to `sink`; a syntax error ends the stream."""
    documents: list[YamlDocument] = []
    # Without an anchor there is no alias: no node is reached twice, and the converter need not count them.
    aliased = "&" in text
    try:
        for index, root in enumerate(_compose_all(text)):
            if root is None or (type(root) is yaml.ScalarNode and root.tag == _TAG + "null" and root.value == ""):
                continue
            converter = _Converter(file, sink, aliased=aliased)
            try:
                value = converter.value(root)
            except _AliasBomb as bomb:
                sink.emit(
                    "alias-bomb",
                    bomb.message,
                    node_span(file, bomb.node),
                    label=bomb.label,
                    help="remove the nested aliases; Sleipnir refuses documents built to expand without bound",
                )
                continue
            documents.append(YamlDocument(file=file, index=index, value=value, root=root))
    except yaml.MarkedYAMLError as error:
        _syntax_error(error, text, file, sink)
    except yaml.YAMLError as error:  # errors without a mark, such as a reader error on control characters
        sink.emit("yaml-syntax", f"YAML error: {error}", Span.point(file, 1, 1))
    return documents


def _compose_all(text: str) -> Iterator[yaml.Node | None]:
    loader = _Loader(text)
    try:
        while loader.check_node():
            yield loader.get_node()
    finally:
        loader.dispose()


def _syntax_error(error: yaml.MarkedYAMLError, text: str, file: str, sink: Diagnostics) -> None:
    mark = error.problem_mark or error.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    source_line = text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else ""
    indent = source_line[: len(source_line) - len(source_line.lstrip(" \t"))]
    if "\t" in indent:
        sink.emit(
            "tab-indent",
            "tab character used for indentation",
            Span.point(file, line, indent.index("\t") + 1),
            label="tab here",
            help="indent with spaces; YAML does not allow tabs in indentation",
        )
        return
    problem = error.problem or "syntax error"
    secondary = []
    if error.context_mark and error.context and error.context_mark is not mark:
        context_span = Span.point(file, error.context_mark.line + 1, error.context_mark.column + 1)
        secondary.append(Label(span=context_span, text=error.context))
    sink.emit(
        "yaml-syntax",
        f"YAML syntax error: {problem}",
        Span.point(file, line, column),
        label=problem,
        secondary=secondary,
    )


class _AliasBomb(Exception):
    """Raised when aliases expand past the budget, refer to themselves, or nesting passes `MAX_DEPTH`."""

    def __init__(self, node: yaml.Node, message: str, label: str) -> None:
        self.node = node
        self.message = message
        self.label = label


class _Converter:
    """Builds plain values from one document's node tree."""

    __slots__ = ("active", "aliased", "budget", "file", "seen", "sink")

    def __init__(self, file: str, sink: Diagnostics, *, aliased: bool = True) -> None:
        self.file = file
        self.sink = sink
        self.aliased = aliased
        """Whether the text may hold aliases (it has an `&`): only then are nodes counted as they are reached."""
        self.seen: set[int] = set()
        self.active: list[int] = []
        """The collections being built, outermost first: re-entering one is a recursive alias."""
        self.budget = ALIAS_EXPANSION_LIMIT

    def value(self, node: yaml.Node) -> Any:
        # A node reached a second time is an alias being expanded: that is what the budget counts.
        key = id(node)
        aliased = self.aliased
        if aliased and key in self.seen:
            self.budget -= 1
            if self.budget < 0:
                raise _AliasBomb(
                    node,
                    f"aliases in this document expand to more than {ALIAS_EXPANSION_LIMIT:,} nodes",
                    "expansion passes the limit here",
                )
        elif aliased:
            self.seen.add(key)
        kind = type(node)
        if kind is yaml.ScalarNode:
            return self.scalar(node)
        if aliased and key in self.active:
            raise _AliasBomb(node, "an alias refers to a collection that contains it", "recursive alias")
        if len(self.active) >= MAX_DEPTH:
            raise _AliasBomb(node, f"collections nest more than {MAX_DEPTH} levels deep", "nested too deeply")
        self.active.append(key)
        try:
            if kind is yaml.MappingNode:
                return self.mapping(node)
            if node.tag != _SEQUENCE:
                self.unsupported_tag(node)
            return [self.value(item) for item in node.value]
        finally:
            self.active.pop()

    def scalar(self, node: yaml.Node) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        construct = _SCALARS.get(tag)
        if construct is not None:
            try:
                return construct(node)
            except (ValueError, KeyError, TypeError, OverflowError):
                # An explicit tag on text that is not of its type (`!!float x`, `!!bool maybe`), or an integer
                # past Python's digit limit.
                kind = _KINDS.get(tag, tag)
                self.sink.emit(
                    "invalid-value",
                    f"`{_shown(node.value)}` is not {kind}",
                    node_span(self.file, node),
                    label=f"read as {kind}",
                    help=f"write {kind} here; to keep the text, remove any `!!` tag and quote it",
                )
                return node.value
        if tag in _KEEP_AS_TEXT:
            return node.value
        self.unsupported_tag(node)
        return None

    def unsupported_tag(self, node: yaml.Node) -> None:
        self.sink.emit(
            "unsupported-tag",
            f"unsupported YAML tag `{node.tag}`",
            node_span(self.file, node),
            label="tag not allowed",
            help="remove the tag; Sleipnir documents use plain YAML values only",
        )

    def mapping(self, node: yaml.Node) -> dict[str, Any]:
        if node.tag != _MAPPING:
            self.unsupported_tag(node)
        # Without aliases, a text value is taken here: `value` would count nothing and return the same.
        text_at_once = not self.aliased
        result: dict[str, Any] = {}
        key_nodes: dict[str, yaml.Node] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merges.append(value_node)
                continue
            if type(key_node) is not yaml.ScalarNode:
                self.sink.emit(
                    "non-string-key",
                    "mapping key is not a string",
                    node_span(self.file, key_node),
                    label="a key must be a plain scalar",
                )
                continue
            key = key_node.value
            first = key_nodes.get(key)
            if first is not None:
                self.sink.emit(
                    "duplicate-key",
                    f"duplicate key `{key}`",
                    node_span(self.file, key_node),
                    label="second definition",
                    secondary=[Label(span=node_span(self.file, first), text="first defined here")],
                    help="remove one of them; YAML keeps only the last, which hides mistakes",
                )
                continue
            key_nodes[key] = key_node
            if text_at_once and value_node.tag == _STR and type(value_node) is yaml.ScalarNode:
                result[key] = value_node.value
            else:
                result[key] = self.value(value_node)
        for merge in merges:
            for source in merge.value if type(merge) is yaml.SequenceNode else [merge]:
                if type(source) is not yaml.MappingNode:
                    self.sink.emit(
                        "invalid-merge",
                        "a `<<` merge needs a mapping or a list of mappings",
                        node_span(self.file, source),
                    )
                    continue
                for key, value in self.value(source).items():
                    result.setdefault(key, value)
        return result


def child(node: yaml.Node, step: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    """The (key node, value node) at `step` of a mapping or sequence node, merges included; None if absent."""
    if type(node) is yaml.MappingNode:
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merges.append(value_node)
            elif type(key_node) is yaml.ScalarNode and key_node.value == step:
                return key_node, value_node
        for merge in merges:
            for source in merge.value if type(merge) is yaml.SequenceNode else [merge]:
                found = child(source, step)
                if found is not None:
                    return found
        return None
    if type(node) is yaml.SequenceNode and isinstance(step, int) and 0 <= step < len(node.value):
        item: yaml.Node = node.value[step]
        return item, item
    return None


def locate(root: yaml.Node, path: tuple[str | int, ...]) -> tuple[yaml.Node | None, yaml.Node]:
    """The deepest (key node, value node) along `path` that exists; the key node is None at the root."""
    key_node: yaml.Node | None = None
    node = root
    for step in path:
        found = child(node, step)
        if found is None:
            break
        key_node, node = found
    return key_node, node


Nodes = dict[tuple[str | int, ...], tuple[yaml.Node, yaml.Node]]


def node_map(document: Any) -> Nodes:
    """The (key node, value node) of every place under a document's body (the item twice for a list entry), in
    one walk of the node tree: cheaper than locating places one by one when most of them are wanted."""
    found: Nodes = {}
    _, body = locate(document.root, document.base)
    if body is not None:
        _nodes(body, (), found)
    return found


def _nodes(node: yaml.Node, place: tuple[str | int, ...], found: Nodes) -> None:
    if type(node) is yaml.MappingNode:
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merges.append(value_node)
            elif type(key_node) is yaml.ScalarNode:
                here = (*place, key_node.value)
                found[here] = (key_node, value_node)
                _nodes(value_node, here, found)
        for merge in merges:
            for source in merge.value if type(merge) is yaml.SequenceNode else [merge]:
                extra: Nodes = {}
                _nodes(source, place, extra)
                for key, nodes in extra.items():
                    found.setdefault(key, nodes)
    elif type(node) is yaml.SequenceNode:
        for index, item in enumerate(node.value):
            here = (*place, index)
            found[here] = (item, item)
            _nodes(item, here, found)
