"""Small rules the compiler and the runtime apply the same way, so both sides agree on them.

- File formats by suffix (`FORMATS`, `suffix_format`): a job's `input.path` is lowered with them, and
  `run-job --input FILE` is read with them.
- Did-you-mean help for an unknown name (`did_you_mean`, `suggestion_help`): for diagnostics and run-time errors.
- Secret references in text (`is_secret_env`, `secret_or_text`): a connection URL or a manifest value holding
  `${NAME}` is sealed as a `Secret`, whether the compiler lowers it or `serve` reads the manifest.
- `RUN_TIME_NAMES`: the `${...}` names an output path may use that only the run knows.
- `DEFAULT_DATABASE`: where a workspace keeps its SQLite data when `sleipnir.yaml` names no `database:`.
"""

from __future__ import annotations

import difflib
import fnmatch
import posixpath
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .plan import Secret

DEFAULT_DATABASE = ".sleipnir/sleipnir.db"
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv"}
"""File formats by suffix; any other suffix reads as jsonl."""
RUN_TIME_NAMES = frozenset({"run.id", "run.date", "trigger.file_stem"})
"""Names an output path may use that only the run knows: the run's id, its date (UTC, `YYYY-MM-DD`), and the stem
of the file a `file_created` trigger (or `--input`) gave it. The compiler leaves them; the runtime fills them."""
SECRET_ENV_PATTERNS = ("*_KEY", "*_TOKEN", "*SECRET*", "*PASSWORD*")
"""Environment variables whose values are secrets."""


def suffix_format(path: str) -> str:
    """The format a data file's suffix says: `jsonl`, `json` or `csv` (jsonl for any other suffix)."""
    return FORMATS.get(posixpath.splitext(path)[1].lower(), "jsonl")


def did_you_mean(name: str, candidates: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The closest candidate to `name`, for a "did you mean" help line; None when nothing is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=cutoff)
    return matches[0] if matches else None


def suggestion_help(name: str, candidates: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """`did you mean `x`?` for the closest candidate, or None."""
    match = did_you_mean(name, candidates, cutoff=cutoff)
    return f"did you mean `{match}`?" if match else None


def is_secret_env(name: str) -> bool:
    """Whether an environment variable's name says it holds a secret (`*_KEY`, `*_TOKEN`, ...)."""
    return any(fnmatch.fnmatchcase(name.upper(), pattern) for pattern in SECRET_ENV_PATTERNS)


def secret_or_text(value: str, environ: Mapping[str, str]) -> str | Secret:
    """A manifest value such as a connection URL: `${NAME}` references are sealed as secrets, when the name looks
    secret or the value is a URL (which may hold a password); plain text stays as written."""
    from .expressions import names_in, parse_substitutions, resolve  # the grammars load on first use
    from .plan import Secret, digest

    names = tuple(dict.fromkeys(names_in(value)))
    if not names:
        return value
    resolved = resolve(parse_substitutions(value), lambda n: environ.get(n, ""))
    if any(is_secret_env(n) for n in names) or "://" in value or "://" in resolved:
        return Secret(ref=value, names=names, digest=digest(resolved) if resolved else None)
    return resolved
