"""Source positions. A `Span` is where a piece of a document came from; every stage keeps them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Span:
    """A region of a source file. Lines and columns are 1-based; the end is exclusive."""

    file: str
    """Path of the file, as the user gave it or relative to the workspace."""
    line: int
    column: int
    end_line: int
    end_column: int

    def __post_init__(self) -> None:
        if self.line < 1 or self.column < 1:
            raise ValueError(f"span starts before 1:1: {self.line}:{self.column}")
        if (self.end_line, self.end_column) < (self.line, self.column):
            raise ValueError("span ends before it starts")

    @classmethod
    def point(cls, file: str, line: int, column: int) -> Span:
        """A one-character span at `line:column`."""
        return cls(file=file, line=line, column=column, end_line=line, end_column=column + 1)

    def shifted(self, offset: int, length: int) -> Span:
        """A span inside this single-line span, `offset` characters in and `length` long.

        Used to point at a position inside a scalar, such as the `${` of a substitution.
        """
        column = self.column + offset
        return Span(file=self.file, line=self.line, column=column, end_line=self.line, end_column=column + max(length, 1))

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"
