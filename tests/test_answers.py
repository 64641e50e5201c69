"""The answer writer: answers committed in groups by its own thread, futures done only once committed, and the
budget's units given back at the commit (the bound on what a kill can lose); a group recorded in SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from test_sources import postgres_url

from sleipnir.runtime.engine.answers import AnswerWriter
from sleipnir.runtime.engine.ledger import Answer, Ledger

__all__ = ["postgres_url"]


def answer(n: int) -> Answer:
    return Answer(key=f"k{n}", call="score", fingerprint=f"f{n}", output={"label": "good", "n": n})


def test_answers_are_committed_in_groups_before_their_futures_are_done(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path / "state.db"))
    groups: list[int] = []
    record = ledger.record_answers

    def counted(scope: str, group: Any) -> None:
        groups.append(len(group))
        record(scope, group)

    ledger.record_answers = counted  # type: ignore[method-assign]

    async def run() -> None:
        writer = AnswerWriter(ledger, "plan", bound=200)
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


def test_a_failed_commit_fails_its_future_and_gives_the_units_back(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path / "state.db"))

    def broken(scope: str, group: Any) -> None:
        raise OSError("disk full")

    ledger.record_answers = broken  # type: ignore[method-assign]

    async def run() -> None:
        writer = AnswerWriter(ledger, "plan", bound=4)
        await writer.budget.take()
        future = writer.submit(answer(1), unit=True)
        with pytest.raises(OSError, match="disk full"):
            await future
        assert writer.budget.free == 4 and writer.uncommitted == 1, "not committed: a resume calls it again"
        await writer.aclose()

    asyncio.run(run())
    ledger.close()


def test_closing_commits_what_is_left_and_a_writer_never_used_closes_at_once(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path / "state.db"))

    async def run() -> None:
        idle = AnswerWriter(ledger, "plan", bound=2)
        await idle.aclose()
        writer = AnswerWriter(ledger, "plan", bound=2)
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
