"""Names are unique per kind and version across the workspace; a duplicate names both places."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..diagnostics import Label
from ..documents import WORKSPACE, Document

if TYPE_CHECKING:
    from ..checker import CheckContext


def check(context: CheckContext) -> None:
    first: dict[tuple[str, str, str], Document] = {}
    for document in (*context.documents, *context.workspace.context):
        if document.kind == WORKSPACE or document.name is None:
            continue
        key = (document.kind, document.name, document.version or "")
        earlier = first.setdefault(key, document)
        if earlier is document or document not in context.documents:
            continue
        version = f" version {document.version}" if document.version else ""
        context.sink.emit(
            "duplicate-name",
            f"{document.kind} `{document.name}`{version} is defined twice",
            document.span_at((*document.base, "name")),
            label="second definition",
            secondary=[Label(span=earlier.span_at((*earlier.base, "name")), text="first defined here")],
            help="rename one of them, or give them different versions",
        )
