"""Schedules, triggers, conditions and monitoring: cron expressions, IANA timezones, time windows, and a
Pushgateway export that names its URL.

A cron expression has five fields or is one of the `@daily`-style macros, and croniter must accept it; a timezone
must be one zoneinfo can load; a `time_window` gives `start` and `end` as HH:MM. Values holding a `${...}`
substitution are resolved later and checked then.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from ..documents import Document, Path
from ..ir.common import suggestion_help
from . import DocumentVisitor

if TYPE_CHECKING:
    from ..checker import CheckContext

MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_FIELD_VALUES = {
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31",
    "month": "1-12 or JAN-DEC",
    "day-of-week": "0-6 or SUN-SAT (7 is Sunday too)",
}
_CRON_HELP = (
    "a cron expression has five fields: `minute hour day-of-month month day-of-week`, e.g. `0 9 * * *`"
)
_TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_TIME_HELP = "write the time as HH:MM on a 24-hour clock, e.g. `09:00` or `17:30`"

_CONDITION_KEYS: dict[str, tuple[str, ...]] = {
    "data_available": ("type", "check", "threshold", "connection"),
    "time_window": ("type", "start", "end", "timezone"),
}
_CONDITION_NEEDS: dict[str, tuple[str, ...]] = {"data_available": ("check",), "time_window": ("start", "end")}
_TRIGGER_KEYS: dict[str, tuple[str, ...]] = {
    "file_created": ("type", "path"),
    "webhook": ("type", "endpoint", "secret_env", "requests_per_minute"),
}
_TRIGGER_NEEDS: dict[str, tuple[str, ...]] = {"file_created": ("path",), "webhook": ("endpoint",)}


def check(context: CheckContext) -> None:
    _Schedules(context).run()


class _Schedules(DocumentVisitor):
    def visit_pipeline(self, document: Document) -> None:
        self._schedule(document, document.body, document.base)

    def visit_job_body(self, document: Document, job: dict[str, Any], path: Path) -> None:
        self._schedule(document, job, path)
        conditions = job.get("conditions")
        if isinstance(conditions, list):
            read = _input_tables(job.get("input"))
            for index, condition in enumerate(conditions):
                if isinstance(condition, dict):
                    self._condition(document, condition, (*path, "conditions", index))
                    if read:
                        self._counts_input(document, condition, (*path, "conditions", index), read)
        triggers = job.get("triggers")
        if isinstance(triggers, list):
            for index, trigger in enumerate(triggers):
                if isinstance(trigger, dict):
                    self._typed(
                        document,
                        trigger,
                        (*path, "triggers", index),
                        "trigger",
                        _TRIGGER_KEYS,
                        _TRIGGER_NEEDS,
                    )
        monitoring = job.get("monitoring")
        pushed = isinstance(monitoring, dict) and monitoring.get("export_to") == "pushgateway"
        if pushed and isinstance(monitoring, dict) and not monitoring.get("pushgateway_url"):
            self.sink.emit(
                "missing-key",
                "`export_to: pushgateway` needs `pushgateway_url`",
                document.span_at((*path, "monitoring", "export_to")),
                label="pushed where?",
                help="add `pushgateway_url: http://pushgateway:9091`, or export to `textfile` or `prometheus`",
            )

    def _schedule(self, document: Document, owner: dict[str, Any], path: Path) -> None:
        schedule = owner.get("schedule")
        if not isinstance(schedule, dict):
            return
        path = (*path, "schedule")
        if "cron" not in schedule:
            self.sink.emit(
                "missing-key",
                "a schedule needs `cron`",
                document.span_at(path, key=True),
                label="no `cron` in this schedule",
                help=f"add `cron:`; {_CRON_HELP}",
            )
        cron = schedule.get("cron")
        if isinstance(cron, str) and "${" not in cron:
            self._cron(document, cron, (*path, "cron"))
        self._timezone(document, schedule, path)

    def _cron(self, document: Document, expression: str, path: Path) -> None:
        problem = cron_problem(expression)
        if problem is not None:
            self.sink.emit(
                "invalid-cron",
                problem.message,
                document.span_at(path),
                label=problem.label,
                notes=problem.notes,
                help=problem.help,
            )

    def _timezone(self, document: Document, owner: dict[str, Any], path: Path) -> None:
        zone = owner.get("timezone")
        if not isinstance(zone, str) or "${" in zone or is_timezone(zone):
            return
        folded = _zones_by_folded_name().get(zone.strip().casefold())
        self.sink.emit(
            "unknown-timezone",
            f"unknown timezone `{zone}`",
            document.span_at((*path, "timezone")),
            label="not an IANA timezone",
            help=(f"did you mean `{folded}`?" if folded else suggestion_help(zone, _timezones()))
            or "use an IANA timezone name such as `UTC`, `Europe/Berlin` or `America/New_York`",
        )

    def _condition(self, document: Document, condition: dict[str, Any], path: Path) -> None:
        kind = self._typed(document, condition, path, "condition", _CONDITION_KEYS, _CONDITION_NEEDS)
        if kind != "time_window":
            return
        times: dict[str, int] = {}
        for key in ("start", "end"):
            if key in condition:
                minutes = self._time(document, condition[key], (*path, key))
                if minutes is not None:
                    times[key] = minutes
        if len(times) == 2 and times["start"] == times["end"]:
            self.sink.emit(
                "invalid-value",
                "a time window that ends when it starts",
                document.span_at((*path, "end")),
                label="same as `start`",
                notes=("a window whose `end` is earlier than its `start` crosses midnight",),
                help="give the window a length; to allow any time of day, remove the condition",
            )
        self._timezone(document, condition, path)

    def _counts_input(self, document: Document, condition: dict[str, Any], path: Path, read: set[str]) -> None:
        """A `data_available` condition of a job that reads a database counts rows of the tables the job reads:
        counting another table gates the run on data it never processes."""
        query = condition.get("check")
        if condition.get("type") != "data_available" or not isinstance(query, str) or "${" in query:
            return
        counted = _tables(query)
        if not counted or counted & read:
            return
        shown = ", ".join(f"`{name}`" for name in sorted(counted))
        self.sink.emit(
            "condition-table",
            f"the condition counts rows of {shown}, which this job does not read",
            document.span_at((*path, "check")),
            label="not the job's input",
            notes=(f"the job's input reads {', '.join(f'`{name}`' for name in sorted(read))}",),
            help="count the rows the job would process, e.g. `SELECT COUNT(*) FROM "
            + sorted(read)[0]
            + " WHERE ...`; to wait for another job's data, chain the jobs in a pipeline",
        )

    def _typed(
        self,
        document: Document,
        item: dict[str, Any],
        path: Path,
        noun: str,
        keys: dict[str, tuple[str, ...]],
        needs: dict[str, tuple[str, ...]],
    ) -> str | None:
        """Check that a trigger or condition of a known `type` has its keys and none of another type's."""
        kind = item.get("type")
        if not isinstance(kind, str) or kind not in keys:
            return None
        for key in needs[kind]:
            if key not in item:
                self.sink.emit(
                    "missing-key",
                    f"a `{kind}` {noun} needs `{key}`",
                    document.span_at((*path, "type")),
                    label=f"no `{key}` in this {noun}",
                    help=f"add `{key}:` to the {noun}",
                )
        for key in item:
            if key in keys[kind]:
                continue
            owners = [other for other, allowed in keys.items() if key in allowed]
            self.sink.emit(
                "unknown-key",
                f"`{key}` does not apply to a `{kind}` {noun}",
                document.span_at((*path, key), key=True),
                label=f"not a `{kind}` key",
                notes=(f"a `{kind}` {noun} takes: {', '.join(keys[kind])}",),
                help=f"`{key}` belongs to a `{owners[0]}` {noun}; remove it here"
                if owners
                else f"remove `{key}`",
            )
        return kind

    def _time(self, document: Document, value: Any, path: Path) -> int | None:
        """The minutes past midnight of an HH:MM value, or None after a diagnostic."""
        if isinstance(value, str):
            if "${" in value:
                return None
            match = _TIME.match(value)
            if match:
                return int(match[1]) * 60 + int(match[2])
            self.sink.emit(
                "invalid-time",
                f"`{value}` is not a time of day as HH:MM",
                document.span_at(path),
                label="expected HH:MM",
                help=_TIME_HELP,
            )
            return None
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
            # YAML 1.1 reads an unquoted 17:30 as the base-60 number 1050.
            hours, minutes = divmod(value, 60)
            self.sink.emit(
                "invalid-time",
                f"the time was read as the number {value}",
                document.span_at(path),
                label="a number, not a time",
                notes=("YAML reads an unquoted time such as 17:30 as a base-60 number",),
                help=f'quote the time: "{hours:02d}:{minutes:02d}"',
            )
            return None
        self.sink.emit(
            "invalid-time",
            "a time of day must be a string as HH:MM",
            document.span_at(path),
            label="expected HH:MM",
            help=_TIME_HELP,
        )
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class CronProblem:
    """What is wrong with a cron expression."""

    message: str
    label: str
    notes: tuple[str, ...] = ()
    help: str = _CRON_HELP


@lru_cache(maxsize=1024)
def cron_problem(expression: str) -> CronProblem | None:
    """What is wrong with a cron expression, or None if Sleipnir accepts it."""
    text = expression.strip()
    if text.startswith("@"):
        if text.lower() in MACROS:
            return None
        return CronProblem(
            message=f"unknown cron macro `{text}`",
            label="not a cron macro",
            notes=(f"the macros are: {', '.join(MACROS)}",),
            help=suggestion_help(text.lower(), MACROS) or _CRON_HELP,
        )
    fields = text.split()
    if len(fields) != len(FIELDS):
        count = f"{len(fields)} field{'' if len(fields) == 1 else 's'}"
        extra = ("a seconds or year field is not supported: Sleipnir schedules to the minute",)
        return CronProblem(
            message=f"cron expression has {count}; Sleipnir uses five",
            label=count,
            notes=extra if len(fields) in (6, 7) else (),
        )
    if _valid(text):
        return None
    for field, value in zip(FIELDS, fields, strict=True):
        probe = " ".join(value if other == field else "*" for other in FIELDS)
        if not _valid(probe):
            return CronProblem(
                message=f"invalid {field} field `{value}` in cron expression",
                label=f"bad {field} field",
                notes=(f"{field} takes {_FIELD_VALUES[field]}, with `*`, `,`, `-` and `/`",),
            )
    return CronProblem(message=f"invalid cron expression `{text}`", label="not a valid cron expression")


@lru_cache(maxsize=1024)
def is_timezone(name: str) -> bool:
    """Whether zoneinfo can load `name`."""
    import zoneinfo  # only for a document that names a timezone

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: empty keys, absolute or `..` paths, NUL bytes; OSError: folders and overlong names.
        return False
    return True


_SIMPLE_CRON = re.compile(r"(?:\*|[1-5]?[0-9]) (?:\*|1?[0-9]|2[0-3]) \* \* (?:\*|[0-6])\Z")
"""The common cron forms (`30 9 * * *`, `0 * * * 1`): each field `*` or one value in range, as croniter reads
them (a test compares the two on every such expression). Most schedules are of this form, and need neither
croniter (60 ms to import) nor its parse."""


def _valid(expression: str) -> bool:
    if _SIMPLE_CRON.match(expression):
        return True
    try:
        from croniter import croniter  # 60 ms to import: only for a document with a cron expression

        return bool(croniter.is_valid(expression))
    except Exception:  # croniter raises more than its own errors on odd input; any of them means invalid
        return False


@cache
def _timezones() -> frozenset[str]:
    """Every IANA timezone name; slowish to list, so computed once, and only when a name is wrong."""
    import zoneinfo

    return frozenset(zoneinfo.available_timezones())


@cache
def _zones_by_folded_name() -> dict[str, str]:
    return {zone.casefold(): zone for zone in sorted(_timezones())}


_TABLE = re.compile(r"\b(?:FROM|JOIN)\s+((?:\"[^\"]+\"|[A-Za-z_][\w$]*)(?:\.(?:\"[^\"]+\"|[A-Za-z_][\w$]*))*)", re.IGNORECASE)


def _tables(query: str) -> set[str]:
    """The tables a query reads after FROM or JOIN, unquoted, lower-cased, without their schema."""
    return {match.group(1).split(".")[-1].strip('"').lower() for match in _TABLE.finditer(query)}


def _input_tables(given: Any) -> set[str]:
    """The tables a job's database input reads (none for other inputs, or a query with substitutions)."""
    if not isinstance(given, dict) or given.get("source") != "database":
        return set()
    table, query = given.get("table"), given.get("query")
    if isinstance(table, str) and "${" not in table:
        return {table.split(".")[-1].strip('"').lower()}
    if isinstance(query, str) and "${" not in query:
        return _tables(query)
    return set()
