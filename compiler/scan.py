"""Source text -> what its documents are called, without parsing YAML: the index a focused plan keeps of the
files its target does not use.

`plan <job>` must know every name in the workspace, to find its target and resolve what the target refers to,
but it checks only the files of what the target uses. Parsing the others only to learn their names was 0.7 of
a cold check's time (2,000 jobs). This scan reads a file's text with a few regular expressions instead: the
`---` lines that split its stream, each document's kind key at the left margin, and the `name:` and `version:`
keys at the first indentation below it.

It is sure only of plain block YAML of the shape Sleipnir's documents have, and answers None for anything else
(a directive, a `...` end marker, a tab, a flow mapping or an anchor at the top, a quoted or multi-line name, a
key it cannot read at the body's indentation, a quoted scalar or flow collection that goes on past its line):
that file is then parsed. Where it answers, its entries are those the parser's would be, for a file that
parses: the same stream positions, names, versions and name spans. A file that does not parse holds fewer
documents than the scan saw (a syntax error ends the stream), never others, so a scan's names are a superset
of the parser's; the index checks each scanned file against its parse when one of its documents is used
(`index.WorkspaceIndex.parsed`).
"""

from __future__ import annotations

import re

import yaml

from .documents import KINDS, MANIFEST_NAMES
from .index import Indexed
from .span import Span

_UNSURE = ("\t", "\r", "\x85", "\u2028", "\u2029")
"""Tabs, and the line breaks besides `\n` that YAML counts (lines would be counted otherwise)."""
_NEXT = r"(?=(?:\n[ ]*(?:#.*)?(?=\n))*+(?:\n( *)|\n?\Z))"
"""Past blank and comment lines, the indentation of the next line with content (unconsumed)."""
_DOCUMENTS = re.compile(
    rf"\n(?:(---)(?:[ ]+#.*|[ ]*)(?=\n|\Z){_NEXT}"  # a document start, and the indentation of what follows
    rf"|({'|'.join(KINDS)}):[ ]*(?:[ ]#.*)?(?=\n|\Z){_NEXT}"  # a kind key, and its body's indentation
    r"|[^ #\n])",  # anything else at the left margin
)
_KEY = r"[A-Za-z_][A-Za-z0-9_\-]*"
_VALUE = r"[A-Za-z0-9_.+\-]"
_OPENS = re.compile(r"\n[ ]*(?:[-?][ ]+)*(?:[^ \n#\"'\[{][^\n]*?:[ ]+)?(?:[&!][^ \n]*[ ]+)*([\"'\[{])")
"""A line whose value (or key) starts with a quote or a bracket: it may go on to the next lines."""
_QUOTE_OR_BRACKET = re.compile(r"[\"'\[{]")
_FLOW = r"[^\n\"'#{}\[\]]"
_SIMPLE = re.compile(
    rf"(?:\"[^\"\\\n]*\"|'[^'\n]*'|[{{\[](?:{_FLOW}|\[{_FLOW}*\]|\{{{_FLOW}*\}})*[}}\]])[ ]*(?:[ ]#.*)?(?=\n|\Z)"
)
"""A quoted scalar without escapes, or a flow collection of plain scalars (one level of nesting), closed before
the line's end: most lines that `_OPENS` finds, judged without `_closed`'s loop."""
_RESOLVER = yaml.resolver.Resolver()
_STR = "tag:yaml.org,2002:str"


def scan(shown: str, text: str) -> list[Indexed] | None:
    """The index entries of the documents in `text` (the file shown as `shown`), as parsing it would give them
    if it parses; None when the scan cannot be sure."""
    if shown.replace("\\", "/").rsplit("/", 1)[-1] in MANIFEST_NAMES or any(c in text for c in _UNSURE):
        return None
    # Every expression starts at a line's `\n`: a literal is found far faster than `^` (5x, measured).
    text = "\n" + text
    if not _each_line_closed(text):
        return None
    # Each document: its stream index, kind, where its body starts and how far it is indented.
    starts: list[tuple[int, str, int, int]] = []
    index = -1
    open_document = False
    for found in _DOCUMENTS.finditer(text):
        marker, kind = found.group(1), found.group(3)
        if marker is not None:
            if found.group(2):
                return None  # an indented line after `---`: a document that does not start at the margin
            # A `---` starts a document, except the first when only comments come before it.
            index = index + 1 if index >= 0 or open_document else 0
            open_document = False
            continue
        indentation = found.group(4)
        if kind is None or open_document or not indentation:
            return None  # another key at the margin, or a body that is empty
        body = found.start(4) - 1
        if text.startswith(("#", "-"), body + 1 + len(indentation)):
            return None  # a body that is a sequence
        index = max(index, 0)
        open_document = True
        starts.append((index, kind, body, len(indentation)))
    if _LEADING.match(text, 0, starts[0][2] if starts else len(text)).group(1):  # type: ignore[union-attr]
        return None  # content before the first document's kind key
    if not starts:
        return []
    ends = [start for _, _, start, _ in starts[1:]] + [len(text)]
    indents = {indent for *_, indent in starts}
    if len(indents) == 1:  # as usual: every body is indented alike, one search covers them all
        if _lines(indents.pop()).odd.search(text, starts[0][2]):
            return None
    elif any(
        _lines(indent).odd.search(text, start, end)
        for (_, _, start, indent), end in zip(starts, ends, strict=True)
    ):
        return None
    entries: list[Indexed] = []
    line = counted = 0
    for (stream_index, kind, start, indent), end in zip(starts, ends, strict=True):
        found_keys: dict[str, tuple[str, int, int]] = {}
        lines = _lines(indent)
        for key in lines.key.finditer(text, start, end):
            named = lines.named.match(text, key.start())
            if named is None or key.group(1) in found_keys:
                return None  # a value it cannot read, one that goes on, or a repeated key
            plain, double, single = named.group(2, 3, 4)
            if plain is not None:
                if _RESOLVER.resolve(yaml.ScalarNode, plain, (True, False)) != _STR:  # type: ignore[no-untyped-call]
                    return None  # a number, a boolean, a null, a date: converted, not text
                found_keys[named.group(1)] = (plain, named.start(2), len(plain))
            else:
                value = double if double is not None else single
                found_keys[named.group(1)] = (
                    value,
                    named.start(3 if double is not None else 4) - 1,
                    len(value) + 2,
                )
        name, version = found_keys.get("name"), found_keys.get("version")
        span = None
        if name is not None:
            _, position, length = name
            line += text.count("\n", counted, position)  # the first `\n` is the one added: lines count from 1
            counted = position
            column = position - (text.rfind("\n", 0, position) + 1)
            span = Span(
                file=shown, line=line, column=column + 1, end_line=line, end_column=column + length + 1
            )
        entries.append(
            Indexed(
                kind=kind,
                file=shown,
                index=stream_index,
                name=None if name is None else name[0],
                version=None if version is None else version[0],
                name_span=span,
                valid=True,
            )
        )
    return entries


_LEADING = re.compile(r"(?:\n[ ]*(?:#.*)?(?=\n))*+\n( *)")
"""The indentation of the first line with content."""


class _Lines:
    """The expressions that read a body indented by `indent` spaces."""

    def __init__(self, indent: int) -> None:
        shallow = rf" {{1,{indent - 1}}}(?=[^ \n#])|" if indent > 1 else ""
        # A line less indented than the body (not a comment), or at its indentation but not a key, a sequence
        # entry, a comment or a blank line.
        self.odd = re.compile(
            rf"\n(?:{shallow} {{{indent}}}(?=[^ ])(?!{_KEY}:(?:[ \n]|\Z)|-(?:[ \n]|\Z)|#|\n|\Z))"
        )
        self.key = re.compile(rf"\n {{{indent}}}(name|version):")
        # Its value: plain, or quoted without escapes; then no more indented line (the scalar would go on).
        self.named = re.compile(
            rf"\n {{{indent}}}(name|version):[ ]+(?:({_VALUE}+)|\"({_VALUE}+)\"|'({_VALUE}+)')(?:[ ]+(?:#.*)?)?"
            rf"(?=(?:\n[ ]*(?:#.*)?(?=\n))*+(?:\n {{0,{indent}}}(?=[^ \n])|\n?\Z))"
        )


_BY_INDENT: dict[int, _Lines] = {}


def _lines(indent: int) -> _Lines:
    found = _BY_INDENT.get(indent)
    if found is None:
        found = _BY_INDENT[indent] = _Lines(indent)
    return found


def _each_line_closed(text: str) -> bool:
    """Whether every quoted scalar and flow collection that starts on a line also ends on it: one that goes on
    may hide a line that looks like a key, and hide it from the parser."""
    search = _QUOTE_OR_BRACKET.search
    position = 0
    while (found := search(text, position)) is not None:
        start = text.rfind("\n", 0, found.start())
        end = text.find("\n", found.start())
        end = len(text) if end < 0 else end
        opens = _OPENS.match(text, start, end)
        if (
            opens is not None
            and _SIMPLE.match(text, opens.start(1), end) is None
            and not _closed(text[opens.start(1) : end])
        ):
            return False
        position = end
    return True


def _closed(rest: str) -> bool:
    """Whether the quotes and brackets from the start of `rest` (the rest of a line) all close on it."""
    depth = 0
    position = 0
    length = len(rest)
    while position < length:
        character = rest[position]
        if character in "\"'":
            position = _quote_end(rest, position)
            if position < 0:
                return False
            continue
        if character in "[{":
            depth += 1
        elif character in "]}":
            depth -= 1
        elif character == "#" and position > 0 and rest[position - 1] == " ":
            break
        elif depth == 0 and character not in " ,:":
            break  # plain text after a closed key or value: what follows is not a quote or bracket it opened
        position += 1
    return depth <= 0


def _quote_end(rest: str, start: int) -> int:
    """Where the quoted scalar starting at `start` ends (just past its closing quote), or -1 if not on this line:
    a double quote closes unless escaped by an odd number of backslashes, a single one unless doubled."""
    quote = rest[start]
    close = start + 1
    while (close := rest.find(quote, close)) >= 0:
        if quote == '"':
            escaped = len(rest[start + 1 : close]) - len(rest[start + 1 : close].rstrip("\\"))
            if escaped % 2 == 0:
                return close + 1
            close += 1
        elif rest.startswith("'", close + 1):
            close += 2
        else:
            return close + 1
    return -1
