"""The garbage collector is paced while runs are under way, and left as it was once the last one ends."""

from __future__ import annotations

import asyncio
import gc
import threading

from sleipnir.runtime.engine import collector
from sleipnir.runtime.engine.collector import paced


def test_paced_freezes_raises_the_young_threshold_and_restores_both() -> None:
    before = gc.get_threshold()
    with paced():
        assert gc.get_threshold()[0] == max(collector.YOUNG_THRESHOLD, before[0])
        assert gc.get_threshold()[1:] == before[1:]
        assert gc.get_freeze_count() > 0
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1, "cycles made during a run are still collected"
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_overlapping_runs_restore_only_when_the_last_ends() -> None:
    before = gc.get_threshold()
    first, second = paced(), paced()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_threshold()[0] == max(collector.YOUNG_THRESHOLD, before[0]), "one run still under way"
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_runs_in_threads_each_with_its_loop_leave_the_collector_as_it_was() -> None:
    before = gc.get_threshold()

    async def run() -> None:
        with paced():
            await asyncio.sleep(0.01)

    threads = [threading.Thread(target=asyncio.run, args=(run(),)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_a_disabled_collector_is_left_alone() -> None:
    before = gc.get_threshold()
    gc.disable()
    try:
        with paced():
            assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    finally:
        gc.enable()
