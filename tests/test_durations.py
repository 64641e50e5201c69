"""One duration parser and one `Retry-After` parser (compiler/ir/common.py), used by the schema, the condition
language, `serve`'s schedules and alerts, the model providers and the API source and sink alike."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from sleipnir.compiler.ir.common import DURATION_PATTERN, parse_duration, retry_after
from sleipnir.compiler.ir.expressions import Comparison, Duration, parse_condition
from sleipnir.runtime.providers.openai import retry_after as provider_retry_after
from sleipnir.runtime.serve.alerts import AlertRule
from sleipnir.runtime.serve.schedule import CronSchedule

NOW = datetime(2030, 1, 1, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1d", 86400),
        ("6h", 21600),
        ("90s", 90),
        ("15m", 900),
        ("1h30m", 5400),
        ("2w", 1209600),
        ("20ms", 0.02),
        ("1m30.5s", 90.5),
        ("6m0s", 360),
        (3600, 3600),
        ("120", 120),
        (0.5, 0.5),
        (" 15m ", 900),
    ],
)
def test_durations(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "1x", "h", "-5", -5, "1d 2h", True, "inf", float("nan"), "5 m", "1.s"])
def test_bad_durations_say_what_is_accepted(value: Any) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize("text", ["90s", "1h30m", "1.5h", "20ms", "2w"])
def test_the_schema_accepts_what_the_parser_reads(text: str) -> None:
    # These used to differ: the schema and serve took whole numbers only, the provider's header reader took
    # decimals but no `d` or `w`.
    assert re.match(DURATION_PATTERN, text)
    assert parse_duration(text) > 0


@pytest.mark.parametrize("text", ["90s", "1.5h", "20ms", "2w", "1d"])
def test_a_condition_reads_a_duration_as_the_parser_does(text: str) -> None:
    # The condition language had its own units, without `ms` and `w`.
    condition = parse_condition(f"execution_time > {text}")
    assert isinstance(condition, Comparison) and isinstance(condition.right, Duration)
    assert condition.right.seconds == pytest.approx(parse_duration(text))


def test_serve_reads_catchup_window_and_cooldown_with_the_one_parser() -> None:
    schedule = CronSchedule.from_settings({"cron": "@daily", "catchup_window": "1.5h"})
    assert schedule.catchup_window == timedelta(minutes=90)
    rule = AlertRule.from_settings(
        {"condition": "failed", "action": "webhook", "url": "http://x", "cooldown": "500ms"}
    )
    assert rule.cooldown == 0.5
    with pytest.raises(ValueError, match="not a duration"):
        CronSchedule.from_settings({"cron": "@daily", "catchup_window": "a day"})


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"Retry-After": format_datetime(datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC), usegmt=True)}, 30.0),
        ({"Retry-After": "Tue, 01 Jan 2030 00:00:45 GMT"}, 45.0),
        ({"Retry-After": "Tue, 01 Jan 2030 00:00:10 -0000"}, 10.0),  # no zone: an HTTP-date is GMT
        ({"Retry-After": "Mon, 31 Dec 2029 23:00:00 GMT"}, 0.0),  # in the past: no wait
        ({"Retry-After": "-3"}, 0.0),
        ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5),
        ({"retry-after-ms": "soon", "Retry-After": "9"}, 9.0),  # a bad ms header falls back
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": ""}, None),
        ({}, None),
    ],
)
def test_retry_after_reads_delta_seconds_and_http_dates(
    headers: dict[str, str], expected: float | None
) -> None:
    lowered = {
        k.lower(): v for k, v in headers.items()
    }  # the callers' headers look names up case-insensitively
    found = retry_after(lowered, now=NOW)
    assert found == (pytest.approx(expected) if expected is not None else None)
    # The provider reads the same headers the same way before its own rate-limit headers.
    assert provider_retry_after(lowered, now=NOW) == found
