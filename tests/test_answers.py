"""The answer writer: answers committed in groups by its own thread, futures done only once committed, and the
budget's units given back at the commit (the bound on what a kill can lose); a group recorded in SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from test_sources import postgres_url

from sleipnir.runtime.engine import answers
from sleipnir.runtime.engine.answers import AnswerWriter
from sleipnir.runtime.engine.ledger import Answer, Ledger

__all__ = ["postgres_url"]


def answer(n: int) -> Answer:
    return Answer(key=f"k{n}", call="score", fingerprint=f"f{n}", output={"label": "good", "n": n})


def counted_groups(ledger: Ledger) -> list[int]:
    """The sizes of the groups of answers `ledger` records from here on, in order."""
    groups: list[int] = []
    record = ledger.record_answers

    def counted(scope: str, group: Any, *, rows: int) -> None:
        groups.append(len(group))
        record(scope, group, rows=rows)

    ledger.record_answers = counted  # type: ignore[method-assign]
    return groups


@pytest.mark.parametrize("inline", [False, True], ids=["thread", "in-loop"])
def test_answers_are_committed_in_groups_before_their_futures_are_done(tmp_path: Path, inline: bool) -> None:
    ledger = Ledger(str(tmp_path / "state.db"))
    groups = counted_groups(ledger)

    async def run() -> None:
        writer = AnswerWriter(ledger, "plan", bound=200, inline=inline)
        for _ in range(150):
            await writer.budget.take()
        futures = [writer.submit(answer(n), unit=True) for n in range(150)]
        assert writer.uncommitted == 150 and writer.budget.free == 50
        await asyncio.gather(*futures)
        # Every future is done only once its answer is in the store.
        assert len(ledger.answers("plan", [f"k{n}" for n in range(150)])) == 150
        assert writer.uncommitted == 0 and writer.budget.free == 200, "every unit is back"
        duplicate = writer.submit(Answer(key="k0", call="score", fingerprint="again", output={"n": -1}), unit=False)
        await duplicate
        assert ledger.answers("plan", ["k0"])["k0"]["score"] == ("again", {"n": -1}), "the newest answer wins"
        late = writer.submit(answer(150), unit=False)  # from the response cache: it holds no unit
        await writer.aclose()
        assert late.done() and writer.budget.free == 200

    asyncio.run(run())
    assert sum(groups) == 152 and len(groups) < 152, f"grouped commits, not one per answer: {groups}"
    ledger.close()


@pytest.mark.parametrize("inline", [False, True], ids=["thread", "in-loop"])
def test_a_group_is_sealed_when_full_when_its_time_is_up_or_when_a_call_waits_for_a_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inline: bool
) -> None:
    ledger = Ledger(str(tmp_path / "state.db"))
    groups = counted_groups(ledger)

    async def run() -> None:
        writer = AnswerWriter(ledger, "plan", bound=8, inline=inline)  # groups of 2
        monkeypatch.setattr(answers, "GROUP_SECONDS", 0.05)
        lone = writer.submit(answer(0), unit=False)
        await asyncio.sleep(0)
        assert groups == [] and not lone.done(), "a group waits to fill"
        await asyncio.wait_for(lone, 10)  # sealed by its timer, with no other answer
        assert groups == [1]
        monkeypatch.setattr(answers, "GROUP_SECONDS", 3600.0)  # from here on, no group is sealed by time
        full = [writer.submit(answer(n), unit=False) for n in range(1, 3)]
        await asyncio.wait_for(asyncio.gather(*full), 10)
        assert groups[1:] == [2], "a full group is sealed at once"
        for _ in range(8):
            await writer.budget.take()
        waiting = writer.submit(answer(3), unit=True)
        await asyncio.sleep(0.05)
        assert writer.budget.free == 0 and not waiting.done() and groups[2:] == []
        # A call that has to wait for a unit seals the pending answer now, and gets the unit its commit frees.
        await asyncio.wait_for(writer.budget.take(), 10)
        assert waiting.done() and groups[2:] == [1]
        writer.budget.give(8)
        await writer.aclose()

    asyncio.run(run())
    ledger.close()


@pytest.mark.parametrize("inline", [False, True], ids=["thread", "in-loop"])
def test_a_group_is_sealed_at_once_when_no_call_is_left_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inline: bool) -> None:
    """The run's last answers are committed as soon as the last of them arrives, not a `GROUP_SECONDS` later."""
    ledger = Ledger(str(tmp_path / "state.db"))
    groups = counted_groups(ledger)

    async def run() -> None:
        writer = AnswerWriter(ledger, "plan", bound=40, inline=inline)  # groups of 10
        monkeypatch.setattr(answers, "GROUP_SECONDS", 3600.0)
        for _ in range(3):
            await writer.budget.take()  # three calls in flight
        early = [writer.submit(answer(n), unit=True) for n in range(2)]
        await asyncio.sleep(0.05)
        assert groups == [] and not any(f.done() for f in early), "a call in flight: its answer may join the group"
        last = writer.submit(answer(2), unit=True)
        await asyncio.wait_for(asyncio.gather(last, *early), 10)
        assert groups == [3] and writer.budget.free == 40
        await writer.aclose()

    asyncio.run(run())
    ledger.close()


@pytest.mark.parametrize("inline", [False, True], ids=["thread", "in-loop"])
def test_a_failed_commit_fails_its_future_and_gives_the_units_back(tmp_path: Path, inline: bool) -> None:
    ledger = Ledger(str(tmp_path / "state.db"))

    def broken(scope: str, group: Any, *, rows: int) -> None:
        raise OSError("disk full")

    ledger.record_answers = broken  # type: ignore[method-assign]

    async def run() -> None:
        writer = AnswerWriter(ledger, "plan", bound=4, inline=inline)
        await writer.budget.take()
        future = writer.submit(answer(1), unit=True)
        with pytest.raises(OSError, match="disk full"):
            await future
        assert writer.budget.free == 4 and writer.uncommitted == 1, "not committed: a resume calls it again"
        await writer.aclose()

    asyncio.run(run())
    ledger.close()


@pytest.mark.parametrize("inline", [False, True], ids=["thread", "in-loop"])
def test_closing_commits_what_is_left_and_a_writer_never_used_closes_at_once(tmp_path: Path, inline: bool) -> None:
    ledger = Ledger(str(tmp_path / "state.db"))

    async def run() -> None:
        idle = AnswerWriter(ledger, "plan", bound=2, inline=inline)
        await idle.aclose()
        writer = AnswerWriter(ledger, "plan", bound=2, inline=inline)
        futures = [writer.submit(answer(n), unit=False) for n in range(3)]
        await writer.aclose()
        assert all(f.done() and f.exception() is None for f in futures)

    asyncio.run(run())
    assert len(ledger.answers("plan", ["k0", "k1", "k2"])) == 3
    ledger.close()


@pytest.mark.parametrize(
    "value",
    [
        {"label": "good", "score": 0.5, "tags": ["a", "é"], "n": 3, "ok": True, "none": None},
        {"big": 123456789012345678901234567890, "deep": [{"neg": -(2**70)}]},
        {"nan": float("nan"), "inf": [float("inf")]},
        {"text": "line\nbreak \u2028 \"quoted\""},
        "a text answer",
        [1, 2.25, {"x": None}],
    ],
)
def test_an_answer_is_recorded_as_json_that_reads_back_as_the_same_value(value: Any) -> None:
    import json
    import math

    from sleipnir.runtime.engine.ledger import answer_json

    back = json.loads(answer_json(value))
    if isinstance(value, dict) and "nan" in value:
        assert math.isnan(back["nan"]) and back["inf"] == [float("inf")]
    else:
        assert back == value and json.dumps(back, sort_keys=True) == json.dumps(value, sort_keys=True)


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_groups_of_every_size_record_every_answer_and_the_newest_of_a_call_wins(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    """SQLite takes a group in statements of several rows (the writer's group size, then 16, 4 and 1; a group of
    exactly the writer's size is one statement): sizes across their edges, and a call answered twice in one
    group, keep every answer, each under its own key and call."""
    import uuid

    url = request.getfixturevalue("postgres_url") if store == "postgresql" else str(tmp_path / "state.db")
    ledger = Ledger(url, root=str(tmp_path))
    scope = f"groups-{uuid.uuid4().hex}"
    try:
        sent: dict[tuple[str, str], Answer] = {}
        for size in (1, 3, 4, 5, 15, 16, 17, 21, 50, 85, 100, 117):
            group = [
                Answer(key=f"k{size}-{n // 2}", call=f"c{n % 2}", fingerprint=f"f{size}.{n}", output={"n": n, "size": size})
                for n in range(size)
            ]
            ledger.record_answers(scope, group, rows=50)
            sent.update({(a.key, a.call): a for a in group})
        again = Answer(key="k5-0", call="c0", fingerprint="newer", output=[None, 1.5])
        ledger.record_answers(scope, [again])
        sent[again.key, again.call] = again
        got = ledger.answers(scope, sorted({key for key, _ in sent}))
        assert {(key, call) for key, calls in got.items() for call in calls} == set(sent)
        for (key, call), a in sent.items():
            assert got[key][call] == (a.fingerprint, a.output)
        # One group, one call answered twice (9 times over): the later answer is the one kept.
        twice = [answer(1), Answer(key="k1", call="score", fingerprint="later", output={"label": "bad"})]
        ledger.record_answers(scope, twice * 9)
        assert ledger.answers(scope, ["k1"])["k1"]["score"] == ("later", {"label": "bad"})
    finally:
        ledger.reset(scope)
        ledger.close()


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_batches_of_every_size_record_every_outcome_and_result(tmp_path: Path, store: str, request: pytest.FixtureRequest) -> None:
    """A batch's outcomes go in statements of 64, 16, 4 and 1 rows (SQLite): sizes across their edges record
    every item, with its status, error and output, and every result of the run, with its input."""
    import uuid

    from sleipnir.runtime.engine.ledger import DONE, FAILED, Outcome

    url = request.getfixturevalue("postgres_url") if store == "postgresql" else str(tmp_path / "state.db")
    ledger = Ledger(url, root=str(tmp_path))
    scope, run_id = f"batches-{uuid.uuid4().hex}", uuid.uuid4().hex
    try:
        keys: list[str] = []
        for size in (1, 3, 4, 17, 64, 100, 133):
            outcomes = [
                Outcome(
                    key=f"{size}-{n}", status=FAILED if n % 7 == 3 else DONE, attempts=1 + n % 3,
                    error="boom" if n % 7 == 3 else None, output={"n": n} if n % 2 else None,
                    fingerprint=f"f{n}", input={"id": n, "size": size}, result={"label": n},
                )
                for n in range(size)
            ]
            ledger.record(scope, run_id, outcomes)
            keys += [o.key for o in outcomes]
        statuses = ledger.statuses(scope, keys)
        assert len(statuses) == len(keys) == 322
        assert all(statuses[k][0] == (FAILED if int(k.split("-")[1]) % 7 == 3 else DONE) for k in keys)
        outputs = dict(ledger.outputs(scope))
        assert outputs == {k: {"n": int(k.split("-")[1])} for k in keys if int(k.split("-")[1]) % 2 and int(k.split("-")[1]) % 7 != 3}
        with ledger._transaction() as cursor:
            mark = "%s" if store == "postgresql" else "?"
            cursor.execute(f"SELECT item_key, input, output FROM sleipnir_results WHERE run_id = {mark}", [run_id])
            results = {str(k): (json.loads(i), json.loads(o)) for k, i, o in cursor.fetchall()}
        assert results == {k: ({"id": int(k.split("-")[1]), "size": int(k.split("-")[0])}, {"label": int(k.split("-")[1])}) for k in keys}
    finally:
        with ledger._transaction() as cursor:
            cursor.execute("DELETE FROM sleipnir_results WHERE run_id = " + ("%s" if store == "postgresql" else "?"), [run_id])
        ledger.reset(scope)
        ledger.close()


def test_the_budget_hands_units_over_in_order_and_a_cancelled_waiter_loses_none() -> None:
    from sleipnir.runtime.engine.answers import Budget

    async def run() -> None:
        hurried: list[int] = []
        budget = Budget(2, short=lambda: hurried.append(1))
        await budget.take()
        await budget.take()
        assert budget.free == 0 and not hurried
        order: list[str] = []

        async def waiter(name: str) -> None:
            await budget.take()
            order.append(name)

        first, second, third = (asyncio.create_task(waiter(n)) for n in "abc")
        await asyncio.sleep(0)
        assert len(hurried) == 3, "each call that waits asks the writer to commit now"
        second.cancel()  # cancelled while waiting: it holds no unit
        budget.give(1)
        third_handed = asyncio.get_running_loop().create_future()
        third.add_done_callback(lambda _: third_handed.set_result(None))
        await first
        assert order == ["a"] and budget.free == 0
        budget.give(1)  # handed to `c`, which is cancelled before it runs: the unit is not lost
        third.cancel()
        await third_handed
        assert third.cancelled() and budget.free == 1
        budget.give(2)
        assert budget.free == 3
        await budget.take()
        assert budget.free == 2
        # `try_take`, the calls' way in without a coroutine, takes only what `take` would take at once.
        assert budget.try_take() and budget.free == 1
        assert budget.try_take() and budget.free == 0
        assert not budget.try_take() and budget.free == 0, "none free: the caller awaits take()"
        late = asyncio.create_task(budget.take())
        await asyncio.sleep(0)
        assert not budget.try_take(), "a call waits behind the one already waiting"
        budget.give(1)  # handed to the waiter, not left free
        assert budget.free == 0 and not budget.try_take()
        await late
        budget.give(1)
        assert budget.try_take() and budget.free == 0

    asyncio.run(run())


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_group_records_the_newest_answer_of_a_call_and_postgresql_commits_it_without_waiting_for_the_disk(
    tmp_path: Path, store: str, postgres_url: str
) -> None:
    """PostgreSQL records a group in one statement, on a connection of its own with `synchronous_commit` off; a
    call answered twice in one group keeps its newest answer there as in SQLite."""
    import uuid

    ledger = Ledger(postgres_url if store == "postgresql" else str(tmp_path / "state.db"))
    scope = f"answers:{uuid.uuid4().hex[:10]}"
    try:
        again = Answer(key="k1", call="score", fingerprint="newer", output={"label": "bad"})
        ledger.record_answers(scope, [answer(n) for n in range(3)] + [again])
        ledger.record_answers(scope, [answer(2)])
        found = ledger.answers(scope, ["k0", "k1", "k2", "k9"])
        assert found == {
            "k0": {"score": ("f0", {"label": "good", "n": 0})},
            "k1": {"score": ("newer", {"label": "bad"})},
            "k2": {"score": ("f2", {"label": "good", "n": 2})},
        }
        if store == "postgresql":
            setting = ledger._answers_pg.execute("SHOW synchronous_commit").fetchone()
            assert setting == ("off",) and ledger._answers_pg.autocommit
    finally:
        ledger.reset(scope)
        ledger.close()


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_store_made_before_a_column_was_added_gets_it_and_keeps_its_rows(tmp_path: Path, postgres_url: str, store: str) -> None:
    """`sleipnir_items.fingerprint` came after the first release: opening an older store adds it (on PostgreSQL
    only when it is missing, since `ALTER TABLE` takes the table's exclusive lock while other runs write)."""
    import sqlite3
    import uuid

    import psycopg

    old_items = (
        "CREATE TABLE sleipnir_items (plan_id TEXT NOT NULL, item_key TEXT NOT NULL, status TEXT NOT NULL, "
        "attempts INTEGER NOT NULL, error TEXT, output TEXT, run_id TEXT, updated_at DOUBLE PRECISION NOT NULL, "
        "PRIMARY KEY (plan_id, item_key))"
    )
    old_row = "INSERT INTO sleipnir_items VALUES ('scope', 'k1', 'done', 1, NULL, NULL, 'r1', 0)"
    schema = f"sleipnir_older_{uuid.uuid4().hex[:8]}"
    if store == "sqlite":
        url = str(tmp_path / "state.db")
        with sqlite3.connect(url) as connection:
            connection.execute(old_items)
            connection.execute(old_row)
    else:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {schema}".encode())
            connection.execute(f"SET search_path TO {schema}".encode())
            connection.execute(old_items.encode())
            connection.execute(old_row.encode())
        url = f"{postgres_url}?options=-csearch_path%3D{schema}"
    try:
        for _ in range(2):  # the second opening finds the column there
            ledger = Ledger(url, str(tmp_path))
            assert ledger.statuses("scope", ["k1"]) == {"k1": ("done", None)}
            ledger.close()
    finally:
        if store == "postgresql":
            with psycopg.connect(postgres_url, autocommit=True) as connection:
                connection.execute(f"DROP SCHEMA {schema} CASCADE".encode())
