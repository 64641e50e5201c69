"""`sleipnir lsp`: a language server (LSP over stdio, through pygls) that gives an editor the compiler's own
diagnostics as you type, go-to-definition and find-references for names, hover with the reference's words,
and completion of names, versions and profiles.

Every change re-checks the workspace with the editor's unsaved text laid over the files, through one
long-lived incremental cache: only the changed file is parsed again, and only the checks whose registry
answers changed are run again. Diagnostics are published for every file whose diagnostics changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlparse

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from .. import __version__
from ..compiler.cache import Cache
from ..compiler.checker import CheckResult, check
from ..compiler.codes import Severity
from ..compiler.diagnostics import Diagnostic
from ..compiler.documents import Document
from ..compiler.loader import node_map
from ..compiler.registry import Named
from ..compiler.span import Span
from ..compiler.workspace import YAML_SUFFIXES, find_root
from . import completion, navigation

SPEC = "https://sleipnir.dev/spec/"
_SEVERITIES = {
    Severity.ERROR: types.DiagnosticSeverity.Error,
    Severity.WARNING: types.DiagnosticSeverity.Warning,
    Severity.NOTE: types.DiagnosticSeverity.Information,
}


_DocumentEvent = (
    types.DidOpenTextDocumentParams
    | types.DidChangeTextDocumentParams
    | types.DidSaveTextDocumentParams
    | types.DidCloseTextDocumentParams
)
"""Every document event re-checks: the text an open document holds stands for its file."""


class SleipnirServer(LanguageServer):
    """The server and what it keeps between requests: the workspace root, the cache and the last check."""

    def __init__(self) -> None:
        super().__init__("sleipnir", __version__)
        self.root: Path | None = None
        self.cache: Cache | None = None
        self.result: CheckResult | None = None
        self.published: set[str] = set()
        self.shown: dict[str, list[types.Diagnostic]] = {}

    def workspace_root(self, uri: str | None = None) -> Path | None:
        if self.root is None:
            folder = self.workspace.root_path
            start = Path(folder) if folder else path_of(uri) if uri else None
            if start is not None:
                self.root = find_root(start) or (start if start.is_dir() else start.parent)
                self.cache = Cache.at(self.root) if find_root(start) else None
        return self.root

    def recheck(self, uri: str | None = None) -> CheckResult | None:
        """Check the workspace with the open documents' text, and publish what changed."""
        root = self.workspace_root(uri)
        if root is None:
            return None
        overlay = {
            path_of(document.uri): document.source
            for document in self.workspace.text_documents.values()
            if document.uri.endswith(YAML_SUFFIXES)
        }
        result = check([str(root)], cache=self.cache or False, overlay=overlay)
        self.result = result
        self.publish(result)
        return result

    def publish(self, result: CheckResult) -> None:
        by_file: dict[str, list[types.Diagnostic]] = {}
        for diagnostic in result.diagnostics:
            if diagnostic.path is not None:
                by_file.setdefault(uri_of(diagnostic.path), []).append(to_lsp(diagnostic))
        for uri in sorted(set(by_file) | self.published):
            diagnostics = by_file.get(uri, [])
            if self.shown.get(uri) == diagnostics:
                continue
            self.shown[uri] = diagnostics
            self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics))
        self.published = set(by_file)

    def checked(self, uri: str) -> CheckResult | None:
        return self.result if self.result is not None else self.recheck(uri)

    def document_at(self, uri: str, position: types.Position) -> tuple[Document, CheckResult] | None:
        """The parsed document of the open file `uri` that holds `position`."""
        result = self.checked(uri)
        if result is None:
            return None
        path = path_of(uri)
        for document in result.workspace.documents:
            if _same_file(document.file, path) and _holds(document, position.line + 1):
                return document, result
        return None


def path_of(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


def uri_of(shown: str) -> str:
    return Path(shown).absolute().as_uri()


def _same_file(shown: str, path: Path) -> bool:
    return Path(shown).absolute() == path


def _holds(document: Document, line: int) -> bool:
    start, end = document.root.start_mark.line + 1, document.root.end_mark.line + 1
    return start <= line <= end


def to_range(span: Span) -> types.Range:
    return types.Range(
        start=types.Position(line=span.line - 1, character=span.column - 1),
        end=types.Position(line=span.end_line - 1, character=span.end_column - 1),
    )


def to_location(span: Span) -> types.Location:
    return types.Location(uri=uri_of(span.file), range=to_range(span))


def to_lsp(diagnostic: Diagnostic) -> types.Diagnostic:
    """A compiler diagnostic as the editor shows it: the message, then its notes and help."""
    span = diagnostic.primary.span if diagnostic.primary else Span.point(diagnostic.path or ".", 1, 1)
    lines = [diagnostic.message, *(f"note: {n}" for n in diagnostic.notes)]
    if diagnostic.help:
        lines.append(f"help: {diagnostic.help}")
    return types.Diagnostic(
        range=to_range(span),
        message="\n".join(lines),
        severity=_SEVERITIES[diagnostic.severity],
        code=diagnostic.code,
        code_description=types.CodeDescription(href=f"{SPEC}diagnostics.md#{diagnostic.code}"),
        source="sleipnir",
        related_information=[
            types.DiagnosticRelatedInformation(location=to_location(label.span), message=label.text or "here")
            for label in diagnostic.secondary
        ]
        or None,
    )


def build() -> SleipnirServer:
    """The server with its features registered."""
    server = SleipnirServer()

    def document_event(ls: SleipnirServer, params: _DocumentEvent) -> None:
        ls.recheck(params.text_document.uri)

    for event in (
        types.TEXT_DOCUMENT_DID_OPEN,
        types.TEXT_DOCUMENT_DID_CHANGE,
        types.TEXT_DOCUMENT_DID_SAVE,
        types.TEXT_DOCUMENT_DID_CLOSE,
    ):
        server.feature(event)(document_event)

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def files_changed(ls: SleipnirServer, params: types.DidChangeWatchedFilesParams) -> None:
        ls.recheck()

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    def definition(ls: SleipnirServer, params: types.DefinitionParams) -> types.Location | None:
        found = _target(ls, params.text_document.uri, params.position)
        span = navigation.name_span(found[0]) if found is not None else None
        return to_location(span) if span is not None else None

    @server.feature(types.TEXT_DOCUMENT_REFERENCES)
    def references(ls: SleipnirServer, params: types.ReferenceParams) -> list[types.Location] | None:
        found = _target(ls, params.text_document.uri, params.position)
        if found is None:
            return None
        target, result = found
        uses = navigation.uses(result.registry, target, _all_documents(result))
        include = params.context.include_declaration
        return [to_location(use.span) for use in uses if include or not use.definition]

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: SleipnirServer, params: types.HoverParams) -> types.Hover | None:
        found = ls.document_at(params.text_document.uri, params.position)
        if found is None:
            return None
        document, result = found
        text = _hover_text(document, result, params.position, ls.workspace.get_text_document(params.text_document.uri).source)
        if text is None:
            return None
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text))

    @server.feature(
        types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[":", " ", "-", "{", ","])
    )
    def complete(ls: SleipnirServer, params: types.CompletionParams) -> types.CompletionList | None:
        result = ls.checked(params.text_document.uri)
        if result is None:
            return None
        text = ls.workspace.get_text_document(params.text_document.uri).source
        offers = completion.complete(
            text, params.position.line, params.position.character, result.registry, _all_documents(result)
        )
        items = [
            types.CompletionItem(label=o.label, detail=o.detail, kind=types.CompletionItemKind.Reference)
            for o in offers
        ]
        return types.CompletionList(is_incomplete=False, items=items)

    return server


def _target(ls: SleipnirServer, uri: str, position: types.Position) -> tuple[Named, CheckResult] | None:
    """The document named at `position` of `uri`, and the check that resolved it."""
    found = ls.document_at(uri, position)
    if found is None:
        return None
    document, result = found
    text = ls.workspace.get_text_document(uri).source
    reference = navigation.at(document, position.line + 1, position.character + 1, text)
    target = navigation.definition(result.registry, reference) if reference is not None else None
    return (target, result) if target is not None else None


def _all_documents(result: CheckResult) -> Iterable[Document]:
    yield from result.workspace.documents
    yield from result.workspace.context


def _hover_text(document: Document, result: CheckResult, position: types.Position, text: str) -> str | None:
    """For a name: the named document's kind, version, description and place. For a key: its reference text."""
    line, column = position.line + 1, position.character + 1
    reference = navigation.at(document, line, column, text)
    if reference is not None:
        target = navigation.definition(result.registry, reference)
        if target is None:
            return f"no {reference.kind or 'document'} named `{reference.name}`"
        parsed = result.registry.get(target.kind, reference.name, target.version)
        description = parsed.body.get("description") if parsed is not None and isinstance(parsed.body, dict) else None
        version = f" {target.version}" if target.version else ""
        lines = [f"**{target.kind}** `{reference.name}`{version}", f"defined in `{target.file}`"]
        if isinstance(description, str):
            lines.insert(1, description)
        lines.append(f"[reference]({SPEC}{target.kind}.md)")
        return "\n\n".join(lines)
    for path, (key_node, _) in node_map(document).items():
        start, end = key_node.start_mark, key_node.end_mark
        if isinstance(path[-1], str) and start.line + 1 == line and start.column < column <= end.column + 1:
            kind = document.kind
            words = navigation.schema_words(kind, (*document.base, *path))
            if words is not None:
                return words
    return None


def serve() -> None:
    """Run the server on stdin and stdout until the editor shuts it down."""
    build().start_io()
