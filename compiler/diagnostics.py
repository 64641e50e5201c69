"""Diagnostics are data: stages append them to a `Diagnostics` sink and keep going; renderers print them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from .codes import Severity, lookup
from .span import Span


@dataclass(frozen=True, slots=True, kw_only=True)
class Label:
    """A span with a short text shown under it."""

    span: Span
    text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnostic:
    """One problem found in the input."""

    code: str
    """A code registered in `compiler/codes.py`, such as `unknown-key`."""
    severity: Severity
    message: str
    """A terse phrase: what is wrong."""
    primary: Label | None
    """Where it is wrong; None only for problems with no place (an unreadable path has a file, not a span)."""
    secondary: tuple[Label, ...] = ()
    notes: tuple[str, ...] = ()
    help: str | None = None
    """What to do about it."""
    file: str | None = None
    """The file, for a diagnostic without a span."""

    def __post_init__(self) -> None:
        lookup(self.code)

    @property
    def path(self) -> str | None:
        return self.primary.span.file if self.primary else self.file

    def sort_key(self) -> tuple[str, int, int, str]:
        span = self.primary.span if self.primary else None
        return (self.path or "", span.line if span else 0, span.column if span else 0, self.code)


@dataclass(slots=True)
class Diagnostics:
    """The sink every stage appends to. It never prints."""

    items: list[Diagnostic] = field(default_factory=list)

    def emit(
        self,
        code: str,
        message: str,
        span: Span | None,
        *,
        label: str = "",
        secondary: Sequence[Label] = (),
        notes: Sequence[str] = (),
        help: str | None = None,
        file: str | None = None,
        severity: Severity | None = None,
    ) -> Diagnostic:
        """Record a diagnostic with the code's default severity unless one is given."""
        diagnostic = Diagnostic(
            code=code,
            severity=severity or lookup(code).severity,
            message=message,
            primary=Label(span=span, text=label) if span else None,
            secondary=tuple(secondary),
            notes=tuple(notes),
            help=help,
            file=file,
        )
        self.items.append(diagnostic)
        return diagnostic

    def extend(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.items.extend(diagnostics)

    def __iter__(self) -> Iterator[Diagnostic]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.WARNING]

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.items, key=Diagnostic.sort_key)
