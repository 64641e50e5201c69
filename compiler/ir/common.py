"""Small rules the compiler and the runtime apply the same way, so both sides agree on them.

- File formats by suffix (`FORMATS`, `suffix_format`): a job's `input.path` is lowered with them, and
  `run-job --input FILE` is read with them.
- Did-you-mean help for an unknown name (`did_you_mean`, `suggestion_help`): for diagnostics and run-time errors.
- Secret references in text (`is_secret_env`, `secret_or_text`): a connection URL or a manifest value holding
  `${NAME}` is sealed as a `Secret`, whether the compiler lowers it or `serve` reads the manifest.
- `RUN_TIME_NAMES`: the `${...}` names an output path may use that only the run knows.
- `DEFAULT_DATABASE`: where a workspace keeps its SQLite data when `sleipnir.yaml` names no `database:`.
- `WorkspacePaths`: where a job's files may be (inside the workspace, or under `paths: allow:`), tested by `check`,
  `plan` and the runtime alike.
- `mask_passwords`: a URL's password blanked (`user:***@`) in every artifact, plans, reports, logs and the ledger.
- `parse_duration`, `DURATION_UNITS`, `DURATION_PATTERN`: the one reading of a duration (`90s`, `1h30m`, `1.5s`, or
  seconds), for the schema, the condition language, `serve`'s `catchup_window` and `cooldown`, and a provider's
  rate-limit reset headers.
- `retry_after`: the one reading of a reply's `retry-after-ms` and `Retry-After` (delta-seconds or an HTTP-date),
  for the model providers, the API source and sink, and the alert notifier.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import os
import posixpath
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .plan import Plan, Secret

DEFAULT_DATABASE = ".sleipnir/sleipnir.db"
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv"}
"""File formats by suffix; any other suffix reads as jsonl."""
MONITORED = ("execution_time", "token_usage", "success_rate", "error_rate", "items_processed", "retries", "cost")
"""Every metric a run records; a job that names none records them all (here, not in `compiler/model.py`, so that
lowering a job does not import the document model)."""
RUN_TIME_NAMES = frozenset({"run.id", "run.date", "trigger.file_stem"})
"""Names an output path may use that only the run knows: the run's id, its date (UTC, `YYYY-MM-DD`), and the stem
of the file a `file_created` trigger (or `--input`) gave it. The compiler leaves them; the runtime fills them."""
SECRET_ENV_PATTERNS = ("*_KEY", "*_TOKEN", "*SECRET*", "*PASSWORD*")
"""Environment variables whose values are secrets."""


DURATION_UNITS: dict[str, float] = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
"""Duration suffixes and their length in seconds."""
_DURATION_PART = r"([0-9]+(\.[0-9]+)?)(ms|s|m|h|d|w)"
DURATION_PATTERN = rf"^({_DURATION_PART})+$"
"""A duration as text: one or more number-and-unit parts, `90s`, `15m`, `1h30m`, `1.5s`, `20ms`."""
_DURATION_PARTS = re.compile(_DURATION_PART)
_WHOLE_DURATION = re.compile(DURATION_PATTERN)


def parse_duration(value: str | float) -> float:
    """Seconds in a duration: a number of seconds (also as text), or number-and-unit parts such as `90s`, `15m`,
    `1h30m`, `1.5s`, `20ms`, `2w` (units `DURATION_UNITS`). Raises ValueError, saying what is accepted, for
    anything else: a negative or non-finite number, an unknown unit, stray text."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        if _WHOLE_DURATION.match(text):
            return sum(float(number) * DURATION_UNITS[unit] for number, _, unit in _DURATION_PARTS.findall(text))
        try:
            seconds = float(text)
        except ValueError:
            raise ValueError(
                f"not a duration: {value!r} (write 90s, 15m, 6h, 1d, 1h30m or a number of seconds)"
            ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration is a finite number of seconds, not negative: {value!r}")
    return seconds


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds a reply asks the client to wait, or None when it says nothing readable.

    `retry-after-ms` (milliseconds, sent by OpenAI-compatible servers) wins; else `Retry-After` (RFC 9110): a
    delta-seconds, or an HTTP-date counted from `now` (a Unix time; the clock when None). A date without a zone
    (`-0000`) is read as GMT, which is what an HTTP-date is. Never negative: a date in the past is 0. A value
    that is not a finite number or a date is ignored, and a bad `retry-after-ms` falls back to `Retry-After`.
    `headers` must look names up case-insensitively (aiohttp's and httpx's do)."""
    millis = _non_negative(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _non_negative(value)
    if seconds is not None:
        return seconds
    import email.utils  # here, not at the top: `check` imports this module and never needs it

    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _non_negative(text: str | None) -> float | None:
    """A finite number in `text`, negatives as 0; None when there is none."""
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return max(0.0, number) if math.isfinite(number) else None


def suffix_format(path: str) -> str:
    """The format a data file's suffix says: `jsonl`, `json` or `csv` (jsonl for any other suffix)."""
    return FORMATS.get(posixpath.splitext(path)[1].lower(), "jsonl")


def did_you_mean(name: str, candidates: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The closest candidate to `name`, for a "did you mean" help line; None when nothing is close."""
    import difflib  # only when a name is unknown: a check that finds nothing wrong does not import it

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


_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(?!\$\{)[^@\s/]+@")
"""A URL's `scheme://user:` and the password after it, up to the `@`; a `${NAME}` reference is not a password."""
MASK = "***"


def mask_passwords(text: str) -> str:
    """`text` with the password of every URL in it replaced: `postgresql://app:***@db/prod`. Every artifact
    (plans, reports, logs, the run ledger, the dead letter) goes through this before it is written."""
    return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text) if "://" in text else text


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkspacePaths:
    """Where a job's files (sources, sinks, dead letters, logs, watched globs) may be: under its workspace
    root, or under a folder `sleipnir.yaml` lists in `paths: allow:`. Symlinks are resolved before the test, so a
    link inside the workspace that leads out of it is outside. `compiler/checks/paths.py` applies it to what a
    job writes, `plan` to the resolved values, and the runtime again before it opens a file."""

    root: str
    allow: tuple[str, ...] = ()
    """Absolute folders, or folders relative to `root`."""

    def escape(self, path: str, resolve: Callable[[str, str], Path | str | None] | None = None) -> str | None:
        """None when `path` (relative to the root, or absolute; a glob is judged by its fixed part) stays
        inside; else why not, as a phrase: "leads outside the workspace", "is outside the workspace". `resolve`
        replaces `os.path.realpath` (a check of many jobs resolves each folder once)."""
        if "\x00" in path:
            return "holds a NUL character"
        glob = _GLOB.search(path)
        fixed = path[: glob.start()] if glob else path
        found = (resolve or _real)(self.root, fixed)
        if found is None:
            return "cannot be resolved"
        # Both sides are absolute and normalised (realpath): inside is equal, or below the folder's own path.
        target = os.fspath(found)
        if any(target == base or target.startswith(below) for base, below in self._bases()):
            return None
        return "is outside the workspace" if os.path.isabs(os.path.expanduser(fixed)) else "leads outside the workspace"

    def _bases(self) -> tuple[tuple[str, str], ...]:
        return _bases(self.root, self.allow)


_GLOB = re.compile(r"[*?\[]")


@functools.lru_cache(maxsize=64)
def _bases(root: str, allow: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The workspace root and the allowed folders, resolved, each with the prefix of what is below it: once per
    rule, not once per path judged (string tests: `Path.parents` was most of the time of the paths check)."""
    folders = (os.fspath(b) for b in (_real(root, p) for p in (".", *allow)) if b is not None)
    return tuple((folder, folder.rstrip(os.sep) + os.sep) for folder in folders)


def _real(root: str, path: str) -> Path | None:
    try:
        return Path(os.path.realpath(os.path.join(root, os.path.expanduser(path))))
    except (OSError, ValueError):
        return None


def workspace_paths_of(plan: Plan) -> WorkspacePaths:
    """The rule a plan's files follow at run time: its root and the folders its workspace allowed."""
    allowed = (plan.settings.get("paths") or {}).get("allow") or ()
    return WorkspacePaths(root=plan.root, allow=tuple(str(a) for a in allowed))
