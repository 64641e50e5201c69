"""Names are unique per kind and version across the workspace; a duplicate names both places.

This check reads only the index (kind, name, version and the span of `name:` of every document), so the
incremental checker runs it over the whole workspace on every check without parsing an unchanged file.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..diagnostics import Diagnostics, Label
from ..documents import WORKSPACE
from ..index import Indexed, indexed

if TYPE_CHECKING:
    from ..checker import CheckContext


def check(context: CheckContext) -> None:
    duplicates(map(indexed, context.documents), map(indexed, context.workspace.context), context.sink)


def duplicates(checked: Iterable[Indexed], context: Iterable[Indexed], sink: Diagnostics) -> None:
    """A `duplicate-name` for each checked document whose kind, name and version an earlier one has."""
    first: dict[tuple[str, str, str], Indexed] = {}
    for is_checked, documents in ((True, checked), (False, context)):
        for document in documents:
            if document.kind == WORKSPACE or document.name is None:
                continue
            key = (document.kind, document.name, document.version or "")
            earlier = first.setdefault(key, document)
            if earlier is document or not is_checked:
                continue
            assert document.name_span is not None and earlier.name_span is not None
            version = f" version {document.version}" if document.version else ""
            sink.emit(
                "duplicate-name",
                f"{document.kind} `{document.name}`{version} is defined twice",
                document.name_span,
                label="second definition",
                secondary=[Label(span=earlier.name_span, text="first defined here")],
                help="rename one of them, or give them different versions",
            )
