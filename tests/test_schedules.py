"""Schedules, triggers and conditions: cron with croniter, timezones with zoneinfo, time windows as HH:MM."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from textpos import position, run_check_alone, where

from sleipnir.compiler import check
from sleipnir.compiler.checks import schedules
from sleipnir.compiler.checks.schedules import cron_problem, is_timezone
from sleipnir.compiler.diagnostics import Diagnostic

FIELD_ORDER = "minute hour day-of-month month day-of-week"
REPORT_GENERATOR = """
prompt:
  name: report_generator
  version: 1.0.0
  description: Writes the daily report, for tests.
  template:
    user: Write the report.
"""


def run(folder: Path, text: str) -> tuple[str, list[Diagnostic]]:
    """Check a folder holding one document file; return its text and the diagnostics."""
    text = textwrap.dedent(text).lstrip()
    (folder / "library.yaml").write_text(REPORT_GENERATOR.lstrip(), encoding="utf-8")
    (folder / "subject.yaml").write_text(text, encoding="utf-8")
    return text, list(check([str(folder)]).diagnostics)


def run_alone(folder: Path, text: str) -> tuple[str, list[Diagnostic]]:
    """Run only the schedule check, on every document whether or not it passes the schema.

    The schema already rejects some of these values (a time that is not HH:MM); the check must still hold for
    values that reach it another way, such as a substitution resolved later.
    """
    text = textwrap.dedent(text).lstrip()
    path = folder / "subject.yaml"
    path.write_text(text, encoding="utf-8")
    sink = run_check_alone(schedules.check, path)
    return text, sink.sorted()




def job(schedule: str) -> str:
    return "job:\n  name: j\n  schedule:\n" + textwrap.indent(textwrap.dedent(schedule).lstrip(), "    ")


SEED_JOBS = """
job:
  name: daily_report
  schedule:
    cron: "0 9 * * *"  # Daily at 9 AM
    timezone: UTC
  prompts:
    - name: report_generator
      version: 1.0.0
---
job:
  name: daily_analysis
  schedule:
    cron: "0 2 * * *"     # Daily at 2 AM
    timezone: UTC
    enabled: true
---
job:
  name: new_data_processor
  triggers:
    - type: file_created
      path: /data/input/*.json
    - type: webhook
      endpoint: /trigger/process
---
job:
  name: conditional_job
  conditions:
    - type: data_available
      check: "SELECT COUNT(*) FROM new_data"
      threshold: 100
    - type: time_window
      start: "09:00"
      end: "17:00"
"""


def test_the_seed_schedules_check_clean(tmp_path: Path) -> None:
    # The seed's trigger watches /data/input, outside the workspace: allowed as spec/examples allows it.
    (tmp_path / "sleipnir.yaml").write_text("name: seed\npaths:\n  allow: [/data/input]\n", encoding="utf-8")
    _, diagnostics = run(tmp_path, SEED_JOBS)
    assert diagnostics == []


@pytest.mark.parametrize(
    "expression",
    [
        "0 9 * * *",
        "*/15 9-17 * * MON-FRI",
        "0 0 1,15 * *",
        "30 4 1 JAN *",
        "0 0 * * 7",
        "0 0 L * *",
        *("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"),
    ],
)
def test_five_fields_and_the_macros_are_accepted(expression: str) -> None:
    assert cron_problem(expression) is None


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 0 9 * * *", "cron expression has 6 fields; Sleipnir uses five"),
        ("0 0 9 * * * 2030", "cron expression has 7 fields; Sleipnir uses five"),
        ("0 9 * *", "cron expression has 4 fields; Sleipnir uses five"),
        ("", "cron expression has 0 fields; Sleipnir uses five"),
        ("61 * * * *", "invalid minute field `61` in cron expression"),
        ("0 24 * * *", "invalid hour field `24` in cron expression"),
        ("0 0 32 * *", "invalid day-of-month field `32` in cron expression"),
        ("0 0 * 13 *", "invalid month field `13` in cron expression"),
        ("0 0 * * FUNDAY", "invalid day-of-week field `FUNDAY` in cron expression"),
        ("@reboot", "unknown cron macro `@reboot`"),
    ],
)
def test_other_expressions_say_what_is_wrong(expression: str, message: str) -> None:
    problem = cron_problem(expression)
    assert problem is not None and problem.message == message


def test_a_six_field_cron_points_at_the_value_and_shows_the_field_order(tmp_path: Path) -> None:
    text, [diagnostic] = run(tmp_path, job('cron: "0 0 9 * * *"\n'))
    assert where(diagnostic) == ("invalid-cron", *position(text, '"0 0 9'))
    assert diagnostic.message == "cron expression has 6 fields; Sleipnir uses five"
    assert diagnostic.notes == ("a seconds or year field is not supported: Sleipnir schedules to the minute",)
    assert diagnostic.help is not None and FIELD_ORDER in diagnostic.help


def test_a_bad_field_names_its_range(tmp_path: Path) -> None:
    _text, [diagnostic] = run(tmp_path, job('cron: "0 25 * * *"\ntimezone: UTC\n'))
    assert where(diagnostic) == ("invalid-cron", 4, 11)
    assert diagnostic.message == "invalid hour field `25` in cron expression"
    assert diagnostic.notes == ("hour takes 0-23, with `*`, `,`, `-` and `/`",)
    assert diagnostic.help is not None and FIELD_ORDER in diagnostic.help


def test_a_misspelt_macro_gets_a_did_you_mean(tmp_path: Path) -> None:
    _, [diagnostic] = run(tmp_path, job("cron: '@dialy'\n"))
    assert where(diagnostic) == ("invalid-cron", 4, 11)
    assert diagnostic.help == "did you mean `@daily`?"


@pytest.mark.parametrize(
    ("zone", "help"),
    [
        ("Europe/Berln", "did you mean `Europe/Berlin`?"),
        ("utc", "did you mean `UTC`?"),
        ("america/new_york", "did you mean `America/New_York`?"),
    ],
)
def test_an_unknown_timezone_suggests_the_closest_zone(tmp_path: Path, zone: str, help: str) -> None:
    _, [diagnostic] = run(tmp_path, job(f"cron: '@daily'\ntimezone: {zone}\n"))
    assert where(diagnostic) == ("unknown-timezone", 5, 15)
    assert diagnostic.message == f"unknown timezone `{zone}`"
    assert diagnostic.help == help


@pytest.mark.parametrize(
    "zone", ["", "../etc/passwd", "/etc/localtime", "Europe", "Europe/", "x" * 300, "a\0b"]
)
def test_names_that_are_no_zone_key_at_all_are_unknown_without_raising(zone: str) -> None:
    assert not is_timezone(zone)


def test_valid_zones(tmp_path: Path) -> None:
    assert all(is_timezone(zone) for zone in ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"))


def test_a_pipeline_schedule_is_checked_too(tmp_path: Path) -> None:
    text, diagnostics = run(
        tmp_path,
        """
        pipeline:
          name: nightly
          schedule:
            cron: "0 2 * * * *"
            timezone: Mars/Olympus
          jobs:
            - daily_report_job
        ---
        job:
          name: daily_report_job
        """,
    )
    assert [where(d) for d in diagnostics] == [
        ("invalid-cron", *position(text, '"0 2')),
        ("unknown-timezone", *position(text, "Mars")),
    ]


def test_substitutions_are_left_for_later(tmp_path: Path) -> None:
    _, diagnostics = run(
        tmp_path,
        """
        template:
          name: scheduled
          parameters:
            - name: cron
            - name: zone
          job:
            name: ${job_name}
            schedule:
              cron: ${cron}
              timezone: ${zone}
            conditions:
              - type: time_window
                start: ${cron}
                end: "06:00"
        """,
    )
    assert diagnostics == []


def test_time_windows_may_cross_midnight(tmp_path: Path) -> None:
    _, diagnostics = run(
        tmp_path,
        """
        job:
          name: j
          conditions:
            - type: time_window
              start: "22:00"
              end: "06:00"
              timezone: Europe/Berlin
        """,
    )
    assert diagnostics == []


def test_time_windows_need_hh_mm(tmp_path: Path) -> None:
    text, diagnostics = run_alone(
        tmp_path,
        """
        job:
          name: j
          conditions:
            - type: time_window
              start: "22:00"
              end: "06:00"
              timezone: Europe/Berlin
            - type: time_window
              start: "9:00"
              end: "24:00"
            - type: time_window
              start: "08:60"
              end: "noon"
              timezone: Europe/Berlim
        """,
    )
    assert [where(d) for d in diagnostics] == [
        ("invalid-time", *position(text, '"9:00"')),
        ("invalid-time", *position(text, '"24:00"')),
        ("invalid-time", *position(text, '"08:60"')),
        ("invalid-time", *position(text, '"noon"')),
        ("unknown-timezone", *position(text, "Europe/Berlim")),
    ]
    assert diagnostics[0].message == "`9:00` is not a time of day as HH:MM"
    assert diagnostics[0].help == "write the time as HH:MM on a 24-hour clock, e.g. `09:00` or `17:30`"
    assert diagnostics[4].help == "did you mean `Europe/Berlin`?"


def test_a_data_available_condition_counts_what_the_job_reads(tmp_path: Path) -> None:
    text, diagnostics = run_alone(
        tmp_path,
        """
        job:
          name: j
          input:
            source: database
            query: "SELECT id, body FROM public.reviews r JOIN authors a ON a.id = r.author"
          conditions:
            - type: data_available
              check: "SELECT COUNT(*) FROM Reviews WHERE processed = false"
              threshold: 1
            - type: data_available
              check: "select count(*) from authors"
            - type: data_available
              check: "SELECT COUNT(*) FROM review"
            - type: data_available
              check: "SELECT COUNT(*) FROM ${TABLE:-x}"
        ---
        job:
          name: k
          conditions:
            - type: data_available
              check: "SELECT COUNT(*) FROM new_data"
        """,
    )
    assert [where(d) for d in diagnostics] == [("condition-table", *position(text, '"SELECT COUNT(*) FROM review"'))]
    assert diagnostics[0].message == "the condition counts rows of `review`, which this job does not read"
    assert diagnostics[0].notes == ("the job's input reads `authors`, `reviews`",)


def test_a_window_that_ends_when_it_starts_is_an_error(tmp_path: Path) -> None:
    _text, [diagnostic] = run(
        tmp_path,
        'job:\n  name: j\n  conditions:\n    - type: time_window\n      start: "09:00"\n      end: "09:00"\n',
    )
    assert where(diagnostic) == ("invalid-value", 6, 12)


def test_conditions_and_triggers_need_their_keys(tmp_path: Path) -> None:
    text, diagnostics = run(
        tmp_path,
        """
        job:
          name: j
          conditions:
            - type: time_window
              start: "09:00"
            - type: data_available
              threshold: 5
          triggers:
            - type: file_created
            - type: webhook
              endpoint: /hooks/j
        """,
    )
    assert [(where(d), d.message) for d in diagnostics] == [
        (("missing-key", *position(text, "time_window")), "a `time_window` condition needs `end`"),
        (("missing-key", *position(text, "data_available")), "a `data_available` condition needs `check`"),
        (("missing-key", *position(text, "file_created")), "a `file_created` trigger needs `path`"),
    ]


def test_keys_of_another_condition_type_are_flagged(tmp_path: Path) -> None:
    text, [diagnostic] = run(
        tmp_path,
        """
        job:
          name: j
          conditions:
            - type: data_available
              check: "SELECT COUNT(*) FROM t"
              start: "09:00"
        """,
    )
    assert where(diagnostic) == ("unknown-key", *position(text, "start"))
    assert diagnostic.help == "`start` belongs to a `time_window` condition; remove it here"


def test_odd_shapes_that_skip_the_schema_never_raise(tmp_path: Path) -> None:
    _, diagnostics = run_alone(
        tmp_path,
        """
        job:
          name: j
          schedule: {timezone: 5, cron: [1]}
          conditions: [1, {type: time_window, start: 17:30, end: [1], timezone: ""}, {type: [x]}]
          triggers: {a: 1}
        ---
        job:
          name: k
          schedule: "@daily"
          conditions: {type: time_window}
        ---
        pipeline:
          schedule: {cron: "@dialy"}
        ---
        template:
          job: {schedule: {cron: "1 2 3"}}
        """,
    )
    assert [d.code for d in diagnostics] == [
        "invalid-time",
        "invalid-time",
        "unknown-timezone",
        "invalid-cron",
        "invalid-cron",
    ]
    assert diagnostics[0].help == 'quote the time: "17:30"'
    assert diagnostics[1].message == "a time of day must be a string as HH:MM"


def test_the_simple_cron_forms_are_those_croniter_accepts() -> None:
    """The fast path for `M H * * D` agrees with croniter: on every form it takes, and it refuses the rest."""
    from croniter import croniter

    from sleipnir.compiler.checks.schedules import _SIMPLE_CRON

    values = {
        "minute": ["*", *map(str, range(60)), "05", "60", "-1"],
        "hour": ["*", *map(str, range(24)), "07", "24"],
        "weekday": ["*", *map(str, range(7)), "7", "06"],
    }
    taken = 0
    for minute in values["minute"]:
        for hour in values["hour"][::3] if minute not in ("*", "0", "59", "05", "60") else values["hour"]:
            for weekday in values["weekday"]:
                expression = f"{minute} {hour} * * {weekday}"
                if _SIMPLE_CRON.match(expression):
                    taken += 1
                    assert croniter.is_valid(expression), expression
    assert taken > 1000
    for other in ("0 9 1 * *", "*/5 * * * *", "0 9 * * MON", "0  9 * * *", "0 9 * *"):
        assert not _SIMPLE_CRON.match(other), other
