"""A connection URL that holds its password as written (`postgresql://app:hunter2@db/prod`) is a warning: the
password would sit in the repository. Plans, reports and logs mask it (`app:***@`), but only the environment
keeps it out of the file: `postgresql://app:${DB_PASSWORD}@db/prod`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..documents import Document, Path
from . import DocumentVisitor

if TYPE_CHECKING:
    from ..checker import CheckContext

_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:(?P<password>[^@\s/]+)@")


def check(context: CheckContext) -> None:
    _Passwords(context).run()


class _Passwords(DocumentVisitor):
    def visit_workspace(self, document: Document) -> None:
        body = document.body
        for key in ("database", "state"):
            self._url(document, (*document.base, key), body.get(key))
        connections = body.get("connections")
        for name, value in (connections or {}).items() if isinstance(connections, dict) else ():
            where = (*document.base, "connections", name)
            self._url(document, (*where, "url") if isinstance(value, dict) else where, value.get("url") if isinstance(value, dict) else value)

    def visit_job_body(self, document: Document, job: dict[str, Any], path: Path) -> None:
        for section in ("input", "output"):
            given = job.get(section)
            if isinstance(given, dict):
                self._url(document, (*path, section, "connection"), given.get("connection"))

    def _url(self, document: Document, path: Path, value: Any) -> None:
        found = _PASSWORD.match(value) if isinstance(value, str) else None
        if found is None or found.group("password").startswith("${"):
            return
        self.sink.emit(
            "literal-password",
            "a connection URL holds its password as written",
            document.span_at(path),
            label="a password in plain text",
            help="put the password in an environment variable and write `${DB_PASSWORD}` in its place "
            "(`user:${DB_PASSWORD}@host`); plans and logs show it as `***` either way",
        )
