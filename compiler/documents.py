"""Positioned YAML documents -> classified Sleipnir documents (job, template, pipeline, stack, prompt, workspace)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from .diagnostics import Diagnostics
from .loader import YamlDocument, locate, node_span
from .span import Span

KINDS = ("job", "template", "pipeline", "stack", "prompt")
"""Document kinds, known by their single top-level key."""

WORKSPACE = "workspace"
"""The kind given to a workspace's `sleipnir.yaml`, which has no top-level kind key."""
MANIFEST_NAMES = ("sleipnir.yaml", "sleipnir.yml")

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Document:
    """One Sleipnir document with its plain value and its node tree for spans."""

    kind: str
    """One of `KINDS`, or `workspace` for a `sleipnir.yaml`."""
    file: str
    index: int
    """Position of the document in its file's YAML stream."""
    value: Any
    """The whole document: `{kind: body}` for a kind, the manifest mapping for a workspace."""
    root: yaml.Node

    @property
    def body(self) -> Any:
        """The value under the kind key (the whole manifest for a workspace)."""
        return self.value if self.kind == WORKSPACE else self.value.get(self.kind)

    @property
    def base(self) -> Path:
        """The path of the body inside the document."""
        return () if self.kind == WORKSPACE else (self.kind,)

    @property
    def name(self) -> str | None:
        body = self.body
        name = body.get("name") if isinstance(body, dict) else None
        return name if isinstance(name, str) else None

    @property
    def version(self) -> str | None:
        body = self.body
        version = body.get("version") if isinstance(body, dict) else None
        return str(version) if isinstance(version, str | int | float) and not isinstance(version, bool) else None

    @property
    def span(self) -> Span:
        """Where the document starts: its kind key."""
        return self.span_at(self.base, key=True)

    def span_at(self, path: Path, *, key: bool = False) -> Span:
        """The span of the value at `path` (or of its key); the nearest existing ancestor if it is absent."""
        key_node, value_node = locate(self.root, path)
        node = key_node if key and key_node is not None else value_node
        return node_span(self.file, node)

    def line_at(self, path: Path) -> int:
        """The 1-based line of the value at `path` (of its key, where it has one): `span_at` without a Span."""
        key_node, value_node = locate(self.root, path)
        return int((key_node or value_node).start_mark.line) + 1

    def source_text(self, path: Path) -> str:
        """The text of the scalar at `path` as written, such as `17:30` that YAML 1.1 reads as a number."""
        _, node = locate(self.root, path)
        return str(node.value) if isinstance(node, yaml.ScalarNode) else ""

    def label(self) -> str:
        """`job `name` 1.0.0` for messages."""
        version = f" {self.version}" if self.version else ""
        return f"{self.kind} `{self.name or '?'}`{version}"


def classify(documents: Iterable[YamlDocument], sink: Diagnostics) -> list[Document]:
    """Each YAML document as a Sleipnir document; a document of unknown kind gets a diagnostic and is dropped."""
    result = []
    for document in documents:
        is_manifest = document.file.replace("\\", "/").rsplit("/", 1)[-1] in MANIFEST_NAMES
        if is_manifest:
            result.append(_document(WORKSPACE, document))
            continue
        kind = _kind_of(document, sink)
        if kind:
            result.append(_document(kind, document))
    return result


def document_key(text: str, document: Document) -> str:
    """A digest of the whole lines `document` spans in its file's `text`, of where it starts and of its kind: a
    document whose key is unchanged after an edit elsewhere in the file is the same document, with the same
    verdicts (`index.FileIndex.keys`, `snapshot`)."""
    start, end = document.root.start_mark, document.root.end_mark
    first = text.rfind("\n", 0, start.index) + 1
    last = text.find("\n", end.index)
    lines = text[first : len(text) if last < 0 else last]
    return hashlib.sha1(f"{start.line}:{start.column}:{document.kind}\n{lines}".encode()).hexdigest()


def stream_shape(text: str, documents: Sequence[Document]) -> str | None:
    """A digest of what a file's `documents` are, the comments after each aside: each one's kind, place in the
    stream, start, and text from its first line to the end of its last value. Two texts of a file with the same
    shape hold the same documents, whose nodes start where they did (`snapshot` replays a check's answer across
    such an edit). None when a `%` directive could change what a tag means."""
    if text.startswith("%") or "\n%" in text:
        return None
    digest = hashlib.sha1()
    for document in documents:
        root = document.root
        start, end = root.start_mark, root.end_mark.index
        if text.find("&", start.index, end) < 0:  # without an anchor, no value is an earlier node's alias
            end = _last_value_end(root)
        first = text.rfind("\n", 0, start.index) + 1
        digest.update(f"{document.index}:{start.line}:{start.column}:{document.kind}:{end - first}\n".encode())
        digest.update(text[first:end].encode())
    return digest.hexdigest()


def _last_value_end(node: yaml.Node) -> int:
    """Where the last value below `node` ends. A block collection's own end is the next token's start, past the
    comments after it; its last value (an empty one: the next token's start too) ends where its text does."""
    while not getattr(node, "flow_style", True) and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(last, tuple) else last
    return int(node.end_mark.index)


def _document(kind: str, document: YamlDocument) -> Document:
    return Document(kind=kind, file=document.file, index=document.index, value=document.value, root=document.root)


def _kind_of(document: YamlDocument, sink: Diagnostics) -> str | None:
    value = document.value
    span = node_span(document.file, document.root)
    if not isinstance(value, dict) or not value:
        sink.emit(
            "unknown-document-kind",
            "document is not a mapping with a kind key",
            span,
            help=f"start the document with one of: {', '.join(KINDS)}",
        )
        return None
    kinds: list[str] = [str(key) for key in value if key in KINDS]
    if len(kinds) == 1:
        # The kind is clear; the stray keys are reported by schema validation as unknown keys.
        return kinds[0]
    if len(kinds) > 1:
        key_node, _ = locate(document.root, (kinds[1],))
        sink.emit(
            "unknown-document-kind",
            f"document has more than one kind key: {', '.join(kinds)}",
            node_span(document.file, key_node) if key_node else span,
            help="put each job, template, pipeline, stack or prompt in its own document (separate them with `---`)",
        )
        return None
    from .ir.common import suggestion_help  # only for this message: a replayed check never needs it

    first = next(iter(value))
    key_node, _ = locate(document.root, (first,))
    sink.emit(
        "unknown-document-kind",
        f"unknown document kind `{first}`",
        node_span(document.file, key_node) if key_node else span,
        label="not a document kind",
        notes=(f"the kinds are: {', '.join(KINDS)}",),
        help=suggestion_help(str(first), KINDS) or f"start the document with one of: {', '.join(KINDS)}",
    )
    return None
