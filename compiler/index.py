"""Source files -> the workspace index: per file, what its documents are called and what the file alone decides.

A `FileIndex` holds, for one file, its content digest, every document's kind, name, version, name span and
schema verdict, the diagnostics of reading and validating it, and (once checked) each document's `Record`: the
registry questions its semantic checks asked, the answers they got, and the diagnostics they gave. That is the
whole cache entry (`cache.py`); a warm check parses a file only when its text changed or an answer did.

The documents themselves are parsed on demand (`WorkspaceIndex.document`). They are not stored: unpickling a
node tree took 2.1 ms for a 13-job file that libyaml parses in 2.6 ms, at ten times the bytes, and JSON (which
the cache uses so that reading it can never run code) would be slower still.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import RACY_NS, Cache
from .codes import Severity
from .diagnostics import Diagnostic, Diagnostics, Label
from .documents import WORKSPACE, Document, classify, document_key, stream_shape
from .loader import SourceFile, decode, load
from .registry import Named, Registry
from .schemas import fast_validator
from .span import Span
from .validate import explain
from .workspace import Layout, Workspace, display_path

Query = tuple[str, ...]
"""A registry question a check asked: `("names", kind)`, `("versions", kind, name)` or `("get", kind, name,
version)` (an empty version for the newest)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Indexed:
    """One document as the index knows it, without its value or node tree."""

    kind: str
    file: str
    index: int
    name: str | None
    version: str | None
    name_span: Span | None
    """Where its `name:` value is, for duplicate-name diagnostics and go-to-definition."""
    valid: bool
    """Whether it satisfies its kind's schema."""


class Record:
    """What a document's semantic checks asked the registry, what they were told, and what they found.

    Read from the cache, it stays in its JSON form until a diagnostic is wanted: a warm check compares the
    answers of 2,000 records and converts only the few diagnostics there are."""

    __slots__ = ("_stages", "data", "queries")

    def __init__(
        self,
        queries: Sequence[tuple[Query, Any]] | Sequence[list[Any]],
        stages: tuple[tuple[Diagnostic, ...], ...] | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        self.queries = queries
        """(question, answer) pairs; from the cache, [question as a list, answer]."""
        self._stages = stages
        self.data = data

    @property
    def stages(self) -> tuple[tuple[Diagnostic, ...], ...]:
        """The diagnostics of each semantic check, in the order the checks run."""
        if self._stages is None:
            assert self.data is not None
            self._stages = tuple(tuple(_diagnostic(d) for d in stage) for stage in self.data["stages"])
        return self._stages


@dataclass(slots=True, kw_only=True)
class FileIndex:
    """One source file's index entry."""

    path: Path
    """Absolute."""
    shown: str
    """As diagnostics show it."""
    digest: str
    size: int
    mtime: int
    load: tuple[Diagnostic, ...]
    documents: tuple[Indexed, ...]
    schema: tuple[tuple[Diagnostic, ...], ...]
    """Each document's schema diagnostics (empty for a valid one)."""
    records: list[Record | None]
    keys: tuple[str, ...] = ()
    """Each document's text (its whole lines) and place, digested: an edit elsewhere in the file leaves a
    document's key, and so its record, as it was."""
    shape: str | None = None
    """`documents.stream_shape` of its text, when reading it found no problem (for `snapshot`)."""
    parsed: list[Document] | None = None
    text: str | None = None
    changed: bool = True
    """Whether the entry differs from what the cache holds."""
    scanned: bool = False
    """Whether `documents` are what `scan.scan` read from the text, not a parse: no load problems, verdicts or
    records yet, never written to the cache. Parsing it (`WorkspaceIndex.parsed`) makes it a parsed entry."""

    def entry(self) -> dict[str, Any]:
        return {
            "shown": self.shown,
            "digest": self.digest,
            "size": self.size,
            "mtime": self.mtime,
            "shape": self.shape,
            "written": time.time_ns(),
            "load": [_diagnostic_data(d) for d in self.load],
            "documents": [
                {
                    "kind": d.kind,
                    "index": d.index,
                    "name": d.name,
                    "version": d.version,
                    "name_span": _span_data(d.name_span),
                    "valid": d.valid,
                    "key": key,
                    "schema": [_diagnostic_data(x) for x in schema],
                    "record": None if record is None else _record_data(record),
                }
                for d, schema, record, key in zip(
                    self.documents, self.schema, self.records, self.keys or ("",) * len(self.documents), strict=True
                )
            ],
        }


def _from_entry(path: Path, shown: str, entry: Mapping[str, Any]) -> FileIndex:
    """The index of a file from its cache entry; any surprise in its shape raises, and the caller treats it as
    a miss."""
    documents = []
    schemas = []
    records: list[Record | None] = []
    for data in entry["documents"]:
        documents.append(
            Indexed(
                kind=str(data["kind"]),
                file=shown,
                index=int(data["index"]),
                name=_optional_text(data["name"]),
                version=_optional_text(data["version"]),
                name_span=_span(data["name_span"]),
                valid=bool(data["valid"]),
            )
        )
        schema = data["schema"]
        schemas.append(tuple(_diagnostic(x) for x in schema) if schema or not isinstance(schema, list) else ())
        records.append(None if data["record"] is None else _record(data["record"]))
    return FileIndex(
        path=path,
        shown=shown,
        digest=str(entry["digest"]),
        size=int(entry["size"]),
        mtime=int(entry["mtime"]),
        load=tuple(_diagnostic(x) for x in entry["load"]),
        documents=tuple(documents),
        schema=tuple(schemas),
        records=records,
        keys=tuple(str(data.get("key", "")) for data in entry["documents"]),
        shape=_optional_text(entry.get("shape")),
        changed=False,
    )


def indexed(document: Document, *, valid: bool = True) -> Indexed:
    """The index entry of a parsed document."""
    return Indexed(
        kind=document.kind,
        file=document.file,
        index=document.index,
        name=document.name,
        version=document.version,
        name_span=None if document.name is None else document.span_at((*document.base, "name")),
        valid=valid,
    )


def parse(
    path: Path, shown: str, data: bytes, stat: os.stat_result | None, previous: Mapping[str, Any] | None = None
) -> FileIndex:
    """Read one file's text into its index entry: load, classify, validate. A document whose text and place
    are those of a document in the `previous` entry of the file keeps that document's record: the edit was
    elsewhere (checks read nothing of a file outside the document's own lines but the registry's answers, which
    are compared before a record is used)."""
    sink = Diagnostics()
    text, documents = _documents(shown, data, sink)
    keys = tuple(document_key(text or "", document) for document in documents)
    kept = _kept_records(previous, shown, keys)
    entries = []
    schemas = []
    for document in documents:
        valid = fast_validator(document.kind).is_valid(document.value)
        problems = Diagnostics()
        if not valid:
            explain(document, problems)
        schemas.append(tuple(problems.items))
        entries.append(indexed(document, valid=valid))
    return _file_index(
        path,
        shown,
        data,
        stat,
        load=tuple(sink.items),
        documents=tuple(entries),
        schema=tuple(schemas),
        records=[kept.get(key) for key in keys],
        keys=keys,
        shape=None if sink.items or text is None else stream_shape(text, documents),
        parsed=documents,
        text=text,
    )


def _file_index(path: Path, shown: str, data: bytes, stat: os.stat_result | None, **fields: Any) -> FileIndex:
    """The entry of a file read as `data`, from what was made of it (`fields`)."""
    return FileIndex(
        path=path,
        shown=shown,
        digest=hashlib.sha1(data).hexdigest(),
        size=stat.st_size if stat else len(data),
        mtime=stat.st_mtime_ns if stat else 0,
        **fields,
    )


def _kept_records(previous: Mapping[str, Any] | None, shown: str, keys: Sequence[str]) -> dict[str, Record]:
    """The records of `previous` (the file's last entry) by document key, for the keys that are still there."""
    if previous is None or previous.get("shown") != shown:
        return {}
    wanted = set(keys)
    kept = {}
    try:
        for data in previous["documents"]:
            key = data.get("key")
            if key in wanted and data.get("record") is not None:
                kept[str(key)] = _record(data["record"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return {}
    return kept


def _documents(shown: str, data: bytes, sink: Diagnostics) -> tuple[str | None, list[Document]]:
    """A file's text and documents: decoded, loaded and classified, problems in `sink`."""
    text = decode(data, shown, sink)
    return text, classify(load(text, shown, sink), sink) if text is not None else []


def read(path: Path, cache: Cache | None, overlay: Mapping[Path, str], *, scan: bool = False) -> FileIndex:
    """The index of the file at `path` (absolute): from the cache when its size and time, or else its digest,
    match the entry; with `scan`, from `scan.scan` of its text when that is sure of it; parsed otherwise.
    Raises `OSError` when it cannot be read."""
    shown = display_path(path)
    text = overlay.get(path)
    stat = None if text is not None else os.stat(path)
    entry = cache.get(str(path)) if cache is not None else None
    if entry is not None and entry.get("shown") != shown:
        entry = None
    if (
        entry is not None
        and stat is not None
        and entry.get("size") == stat.st_size
        and entry.get("mtime") == stat.st_mtime_ns
        and isinstance(entry.get("written"), int)
        and stat.st_mtime_ns < entry["written"] - RACY_NS
    ):
        found = _trusted(path, shown, entry)
        if found is not None:
            return found
    data = text.encode("utf-8") if text is not None else path.read_bytes()
    if entry is not None and entry.get("digest") == hashlib.sha1(data).hexdigest():
        found = _trusted(path, shown, entry)
        if found is not None:
            if stat is not None:
                found.size, found.mtime, found.changed = stat.st_size, stat.st_mtime_ns, True
            found.text = text
            return found
    if scan:
        found = _scanned(path, shown, data, stat)
        if found is not None:
            return found
    return parse(path, shown, data, stat, entry)


def _scanned(path: Path, shown: str, data: bytes, stat: os.stat_result | None) -> FileIndex | None:
    from .scan import scan  # only a focused plan scans

    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        return None
    documents = scan(shown, text)
    if documents is None:
        return None
    return _file_index(
        path,
        shown,
        data,
        stat,
        load=(),
        documents=tuple(documents),
        schema=((),) * len(documents),
        records=[None] * len(documents),
        text=text,
        changed=False,
        scanned=True,
    )


class ScanMismatch(Exception):
    """A scanned file, parsed, holds other documents than its scan said (it does not parse, say): the index
    was built on a wrong premise, and whoever built it from scans builds it again from parses."""


def _trusted(path: Path, shown: str, entry: Mapping[str, Any]) -> FileIndex | None:
    try:
        return _from_entry(path, shown, entry)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None


@dataclass(slots=True, kw_only=True)
class WorkspaceIndex:
    """Every file a check reads, indexed: the checked files, the rest of the workspace, and the stdlib."""

    layout: Layout
    checked: list[FileIndex]
    context: list[FileIndex]
    stdlib: list[FileIndex]
    overlay: Mapping[Path, str] = field(default_factory=dict)
    cache: Cache | None = None
    registry: Registry = field(init=False)
    workspace: Workspace = field(init=False)
    files: dict[str, FileIndex] = field(init=False)
    """Every file by its shown path."""
    lenient: set[str] = field(init=False)
    """The shown paths of the stdlib's and the context's files, whose invalid documents are not registered."""

    def __post_init__(self) -> None:
        self.files = {f.shown: f for f in (*self.stdlib, *self.context, *self.checked)}
        self.lenient = {f.shown for f in (*self.stdlib, *self.context)}
        others = [d for f in (*self.context, *self.stdlib) for d in f.documents if d.valid]
        self.registry = Registry.build(
            [*(d for f in self.checked for d in f.documents), *others], materialize=self.document
        )
        self.workspace = Workspace(
            root=self.layout.root,
            folder=self.layout.folder,
            manifest=self._manifest(),
            documents=Documents(self, self.checked),
            context=Documents(self, self.context),
            stdlib=Documents(self, self.stdlib),
            sources=Sources(self.files),
        )

    def _manifest(self) -> Document | None:
        root = self.layout.root
        if root is None:
            return None
        for file in (*self.checked, *self.context):
            for indexed in file.documents:
                if indexed.kind == WORKSPACE and file.path.parent == root.absolute():
                    return self.document(indexed)
        return None

    def parsed(self, file: FileIndex) -> list[Document]:
        """The documents of `file`, parsed once. A scanned file is parsed and checked in full, into the entry a
        parse would have made; `ScanMismatch` when its documents are not those the scan said."""
        if file.scanned:
            self._parse_scanned(file)
        if file.parsed is None:
            try:
                data = file.text.encode("utf-8") if file.text is not None else file.path.read_bytes()
            except OSError:
                data = b""
            # The index already holds the verdicts and diagnostics: only the documents are wanted.
            file.text, file.parsed = _documents(file.shown, data, Diagnostics())
        return file.parsed or []

    def _parse_scanned(self, file: FileIndex) -> None:
        assert file.text is not None, "a scanned entry keeps its text"
        previous = self.cache.get(str(file.path)) if self.cache is not None else None
        real = parse(file.path, file.shown, file.text.encode("utf-8"), None, previous)
        # The registry filed what the scan said; what the parse registers must be the same. The stdlib's and
        # the context's documents are registered only when valid, the checked ones whatever they are.
        checked = file.shown not in self.lenient
        said = [_identity(d) for d in file.documents]
        found = [_identity(d) for d in real.documents if checked or d.valid]
        if said != found:
            raise ScanMismatch(f"{file.shown}: scanned {said}, parsed {found}")
        size, mtime = file.size, file.mtime  # of the file as it was read; the parse had only its text
        for name in FileIndex.__dataclass_fields__:
            setattr(file, name, getattr(real, name))
        file.size, file.mtime = size, mtime

    def document(self, indexed: Named) -> Document:
        """The parsed document an index entry stands for."""
        file = self.files[indexed.file]
        documents = self.parsed(file)
        # Documents are in stream order, empty ones left out: the one at `index` is at or before that position.
        position = min(indexed.index, len(documents) - 1)
        while position >= 0 and documents[position].index > indexed.index:
            position -= 1
        if position >= 0 and documents[position].index == indexed.index:
            return documents[position]
        raise LookupError(f"{indexed.file} changed while it was being checked: document {indexed.index} is gone")

    def store(self, cache: Cache) -> None:
        entries: dict[str, dict[str, Any]] = {}
        for file in (*self.checked, *self.context, *self.stdlib):
            if file.changed:
                entries[str(file.path)] = file.entry()
                file.changed = False
        cache.store(entries)


def _identity(document: Indexed) -> tuple[object, ...]:
    return (document.kind, document.index, document.name, document.version, document.name_span)


class Documents(Sequence[Document]):
    """Documents of some files, parsed when first asked for: counting them reads only the index."""

    def __init__(self, index: WorkspaceIndex, files: Sequence[FileIndex]) -> None:
        self.workspace_index = index
        self._files = files
        self._entries = [d for f in files for d in f.documents]

    @property
    def entries(self) -> list[Indexed]:
        return self._entries

    @property
    def files(self) -> int:
        return len({d.file for d in self._entries})

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, position: Any) -> Any:
        if isinstance(position, slice):
            return [self.workspace_index.document(d) for d in self._entries[position]]
        return self.workspace_index.document(self._entries[position])

    def __iter__(self) -> Iterator[Document]:
        for file in self._files:
            yield from self.workspace_index.parsed(file)


class Sources(Mapping[str, SourceFile]):
    """Each file's text by its shown path, read when first asked for (to show a diagnostic's line)."""

    def __init__(self, files: Mapping[str, FileIndex]) -> None:
        self._files = files

    def __getitem__(self, shown: str) -> SourceFile:
        file = self._files[shown]
        if file.text is None:
            try:
                file.text = file.path.read_bytes().decode("utf-8").removeprefix("\ufeff")
            except (OSError, UnicodeDecodeError):
                raise KeyError(shown) from None  # no text to show, as when the file was first read
        return SourceFile(path=shown, text=file.text)

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


# Entries are JSON: spans, labels and diagnostics as lists and dicts.


def _span_data(span: Span | None) -> list[Any] | None:
    return None if span is None else [span.file, span.line, span.column, span.end_line, span.end_column]


def _span(data: Any) -> Span | None:
    if data is None:
        return None
    file, line, column, end_line, end_column = data
    return Span(file=str(file), line=int(line), column=int(column), end_line=int(end_line), end_column=int(end_column))


def _label_data(label: Label) -> list[Any]:
    return [_span_data(label.span), label.text]


def _label(data: Any) -> Label:
    span = _span(data[0])
    if span is None:
        raise ValueError("a label without a span")
    return Label(span=span, text=str(data[1]))


def _diagnostic_data(diagnostic: Diagnostic) -> dict[str, Any]:
    return {
        "code": diagnostic.code,
        "severity": diagnostic.severity.value,
        "message": diagnostic.message,
        "primary": None if diagnostic.primary is None else _label_data(diagnostic.primary),
        "secondary": [_label_data(label) for label in diagnostic.secondary],
        "notes": list(diagnostic.notes),
        "help": diagnostic.help,
        "file": diagnostic.file,
    }


def _diagnostic(data: Mapping[str, Any]) -> Diagnostic:
    return Diagnostic(
        code=str(data["code"]),
        severity=Severity(data["severity"]),
        message=str(data["message"]),
        primary=None if data["primary"] is None else _label(data["primary"]),
        secondary=tuple(_label(x) for x in data["secondary"]),
        notes=tuple(str(x) for x in data["notes"]),
        help=_optional_text(data["help"]),
        file=_optional_text(data["file"]),
    )


def _record_data(record: Record) -> Mapping[str, Any]:
    if record.data is not None:
        return record.data
    return {
        "queries": [[list(query), answer] for query, answer in record.queries],
        "stages": [[_diagnostic_data(d) for d in stage] for stage in record.stages],
    }


def _record(data: Mapping[str, Any]) -> Record:
    queries = data["queries"]
    stages = data["stages"]
    if not isinstance(queries, list) or not isinstance(stages, list):
        raise ValueError("a record holds lists")
    if not any(stages):
        return Record(queries=queries, stages=tuple(() for _ in stages), data=data)
    return Record(queries=queries, data=data)


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)
