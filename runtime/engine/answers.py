"""Answers made durable as they arrive: each validated answer is recorded in the state store before its item
is acknowledged (counted, and given to its batch), so a run that was killed re-calls only the calls that were in
flight.

A thread of the writer's own commits them in groups (or, in a local run on a SQLite store, the event loop itself:
below). The event loop gathers a group: it seals it when a quarter of the budget's bound is waiting (50 answers at
concurrency 100), when `GROUP_SECONDS` have passed since its first answer, or at once when a call has to wait for a
budget unit or none of the calls holding one is still in flight (a run's last answers, or a run of one call at a
time), and hands it to the thread, which records it in one transaction (the groups sealed during a commit, together
in the next) and hands the group's future back to the event loop. So a run makes a few dozen transactions a second
whatever its speed, not one per answer, the event loop does no more for an answer than queue it, and the thread is
woken once a group: each wake-up must win the GIL back from the busy loop (a switch interval, 5 ms, at worst), so a
thread that woke for the group's first answer and again when it filled made a third more context switches in a
5,000-item run (1,877 against 1,507, the medians of 12 paired rounds). (A fixed wait of 2 ms made about 430 commits
for 5,000 answers at 50 ms latency, and cost 27% more CPU an item than no durable answers; the runtime benchmark
prints what this costs.)

With `inline` (a local run on a SQLite store), the loop commits each sealed group itself, and there is no thread.
A group of 25 to 50 rows is one SQLite statement and takes well under a millisecond, CPU the loop was going to
spend anyway; what it saves is the thread's wake-ups and the interpreter lock passed back and forth at each. While
another thread of the run commits to the store (a batch's outcomes), the loop waits for it: one commit, a few
milliseconds at most. (Committing in the loop only when the store was free at once sent half of the groups to the
thread in a 3,000-item run, each commit there keeping the next group out too.) In paired runs at 0 ms latency the
loop was never dearer than the thread, and by CPU always cheaper (benchmarks/README.md has the figures). A store
shared with other processes (a `dask` worker's partitions) or on PostgreSQL, whose commit is a round trip, keeps
the thread.

The writer also holds the run's `budget`: what a kill can lose, the calls in flight plus the answers not yet
committed, is at most its `bound`. A call takes a unit once it holds a concurrency slot, and the unit comes back
when its answer's group is committed (or at once, if the call fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable

from .ledger import Answer, Ledger

GROUP_SECONDS = 0.02
"""How long the first answer of a group waits for others, at most, before the group is committed."""

_Sealed = tuple[list[Answer], int, "asyncio.Future[None]"]
"""A group handed to the thread: its answers, the budget units their calls hold, and its future."""


class AnswerWriter:
    """Records answers in groups from its own thread; `submit` returns a future, done once the answer commits.
    Made inside the run's event loop; `aclose()` commits what is left and ends the thread."""

    def __init__(self, ledger: Ledger, scope: str, *, bound: int, inline: bool = False) -> None:
        self.ledger = ledger
        self.scope = scope
        self.inline = inline
        """Commit each sealed group in the loop itself, not in a thread (see the module)."""
        self.budget = Budget(bound, short=self._seal)
        """Units for calls in flight and answers not yet committed (see the module)."""
        self.uncommitted = 0
        """Answers submitted and not yet committed: what a kill now would make the next run call again."""
        self._loop = asyncio.get_running_loop()
        self._bound = bound
        self._group = max(1, bound // 4)
        self._pending: list[Answer] = []
        """The group being gathered, in the loop: only the loop touches it."""
        self._units = 0
        """Budget units held by the pending answers' calls."""
        self._committed: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        """Seals the pending group `GROUP_SECONDS` after its first answer, if it has not filled by then."""
        self._guard = threading.Lock()
        self._ready = threading.Condition(self._guard)
        """Notified when a group is sealed, and on closing."""
        self._sealed: list[_Sealed] = []
        """Groups handed to the thread, under the guard."""
        self._closing = False
        self._thread: threading.Thread | None = None

    def submit(self, answer: Answer, *, unit: bool) -> asyncio.Future[None]:
        """Queue `answer`; the future is done when it is committed. The caller need not wait for it at once: an
        item is acknowledged (counted, and written to its batch) only when its answers are committed, but its
        worker goes on to the next item meanwhile. With `unit`, the call that got the answer holds a unit of the
        budget, given back at the commit (an answer from the response cache took none)."""
        pending = self._pending
        pending.append(answer)
        self._units += unit
        committed = self._committed
        if committed is None:
            committed = self._committed = self._loop.create_future()
        self.uncommitted += 1
        if len(pending) >= self._group or (unit and self._bound - self.budget.free == self._units):
            self._seal()  # full, or no call is in flight any more (the run's last answers): none would join it
        elif self._timer is None:
            self._timer = self._loop.call_later(GROUP_SECONDS, self._seal)
        return committed

    def _seal(self) -> None:
        """In the loop: commit the pending group (`inline`) or hand it to the thread (it is full, its time is up, a
        call waits for a unit, or no call is in flight). The thread is woken once a group, and never waits for a
        group to fill while holding the GIL."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        committed = self._committed
        if committed is None:
            return
        group, self._pending = self._pending, []
        units, self._units = self._units, 0
        self._committed = None
        if self.inline:
            # Its units go back from the loop's next turn: a `Budget.take` calling this has not queued yet.
            self._loop.call_soon(self._done, [(group, units, committed)], self._record(group))
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._commit_groups, name="sleipnir-answers", daemon=True)
            self._thread.start()
        with self._guard:
            self._sealed.append((group, units, committed))
            if len(self._sealed) == 1:
                self._ready.notify()

    def _commit_groups(self) -> None:
        """The writer's thread: commit the sealed groups (those sealed meanwhile as one) until closed."""
        ready = self._ready
        while True:
            with self._guard:
                while not self._sealed and not self._closing:
                    ready.wait()
                sealed, self._sealed = self._sealed, []
                closing = self._closing
            if sealed:
                group = sealed[0][0] if len(sealed) == 1 else [a for answers, _, _ in sealed for a in answers]
                error = self._record(group)
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits for the group
                    self._loop.call_soon_threadsafe(self._done, sealed, error)
            elif closing:
                return

    def _record(self, group: list[Answer]) -> BaseException | None:
        """Commit `group`; what it raised, if anything, is handed to the loop (`_done`): `Writer._committed` stops
        the run."""
        try:
            self.ledger.record_answers(self.scope, group, rows=self._group)
        except BaseException as failure:
            return failure
        return None

    def _done(self, sealed: list[_Sealed], error: BaseException | None) -> None:
        """In the loop: the groups are committed (or failed); their units go back to the budget."""
        for group, units, committed in sealed:
            self.uncommitted -= len(group) if error is None else 0
            self.budget.give(units)
            if committed.done():
                continue
            if error is None:
                committed.set_result(None)
            else:
                committed.set_exception(error)
                committed.exception()  # retrieved here too, so an unawaited failure is not logged twice

    async def aclose(self) -> None:
        """Commit what is left and end the thread."""
        self._seal()
        thread = self._thread
        if thread is None:
            await asyncio.sleep(0)  # the last group's `_done`, scheduled by the seal (`inline`), runs first
            return
        with self._guard:
            self._closing = True
            self._ready.notify()
        await asyncio.to_thread(thread.join)  # resumes after the last group's `_done`, scheduled before it


class Budget:
    """Units handed out first come, first served: `take()` waits for one, `give(n)` gives n back. Cheaper than
    `asyncio.Semaphore` on this path (its `acquire` scans its waiters), and it tells the writer (`short`) when a
    call has to wait, so that the answers waiting are committed at once rather than when their group fills."""

    __slots__ = ("_short", "_waiters", "free")

    def __init__(self, units: int, *, short: Callable[[], None]) -> None:
        self.free = units
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._short = short

    def try_take(self) -> bool:
        """Take a unit if one is free and nobody waits for one, without a coroutine (the usual case); else False,
        and the caller awaits `take()`."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.try_take():
            return
        self._short()
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.give(1)  # handed a unit, then cancelled before it ran: the unit goes on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(future)
            raise

    def give(self, count: int = 1) -> None:
        waiters = self._waiters
        while count and waiters:
            future = waiters.popleft()
            if not future.done():
                future.set_result(None)  # handed over: `free` is unchanged
                count -= 1
        self.free += count
