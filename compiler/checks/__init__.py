"""Semantic checks beyond the schema. Each module exports `check(context)` and appends diagnostics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..documents import Document, Path

if TYPE_CHECKING:
    from ..checker import CheckContext


class DocumentVisitor:
    """Sends each checked document to `visit_<kind>`; a job, and a template's job body, go to `visit_job_body`.

    A check subclasses it, overrides the visits it needs and calls `run()`.
    """

    def __init__(self, context: CheckContext) -> None:
        self.context = context
        self.sink = context.sink
        self.registry = context.registry

    def run(self) -> None:
        for document in self.context.documents:
            visit = getattr(self, f"visit_{document.kind}", None)
            if visit is not None and isinstance(document.body, dict):
                visit(document)

    def visit_job(self, document: Document) -> None:
        self.visit_job_body(document, document.body, document.base)

    def visit_template(self, document: Document) -> None:
        job = document.body.get("job")
        if isinstance(job, dict):
            self.visit_job_body(document, job, (*document.base, "job"))

    def visit_job_body(self, document: Document, job: dict[str, Any], path: Path) -> None:
        """A job body at `path` in `document`: a job's own body, or a template's `job`."""
