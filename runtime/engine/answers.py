"""Answers made durable as they arrive: each validated answer is recorded in the state store before its item
is acknowledged (counted, and given to its batch), so a run that was killed re-calls only the calls that were in
flight.

Writes are grouped: answers that arrive while a commit is under way wait for the next one, so a busy run makes
one transaction every few milliseconds, not one per answer (the runtime benchmark prints what this costs).
"""

from __future__ import annotations

import asyncio
import contextlib

from .ledger import Answer, Ledger

GROUP_SECONDS = 0.002
"""How long the first answer of a group waits for others before the group is committed."""


class AnswerWriter:
    """Records answers in groups; `record` returns once the answer is committed."""

    def __init__(self, ledger: Ledger, scope: str) -> None:
        self.ledger = ledger
        self.scope = scope
        self._pending: list[Answer] = []
        self.uncommitted = 0
        """Answers submitted and not yet committed: what a kill now would make the next run call again."""
        self._committed: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def submit(self, answer: Answer) -> asyncio.Future[None]:
        """Queue `answer`; the future is done when it is committed. The caller need not wait for it at once: an
        item is acknowledged (counted, and written to its batch) only when its answers are committed, but its
        worker goes on to the next item meanwhile."""
        self._pending.append(answer)
        self.uncommitted += 1
        if self._committed is None:
            self._committed = asyncio.get_running_loop().create_future()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._commit())
        return self._committed

    async def _commit(self) -> None:
        while self._pending:
            await asyncio.sleep(GROUP_SECONDS)
            group, self._pending = self._pending, []
            committed, self._committed = self._committed, None
            assert committed is not None
            try:
                await asyncio.to_thread(self.ledger.record_answers, self.scope, group)
                self.uncommitted -= len(group)
            except BaseException as error:
                if not committed.done():
                    committed.set_exception(error)
                    committed.exception()  # retrieved here too, so an unawaited failure is not logged twice
                if isinstance(error, asyncio.CancelledError):
                    raise
            else:
                if not committed.done():
                    committed.set_result(None)

    async def aclose(self) -> None:
        """Wait for the last group."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
