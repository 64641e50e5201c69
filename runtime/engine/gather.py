"""The gatherer: after every item is done, the calls over groups (`split_by`, then per-group calls) and over
everything (`reduce`, `fan_in`), reading the items' outputs back from the ledger, so a resumed run gathers the
outputs of every run that contributed to it."""

from __future__ import annotations

import asyncio
from typing import Any

from ..io import Row, SinkError
from .calls import CallFailed, ItemError, ItemWorker
from .context import RunContext
from .ledger import Ledger
from .state import RunStopped


class Gatherer:
    def __init__(self, run: RunContext, worker: ItemWorker, ledger: Ledger, sink: Any) -> None:
        self.run = run
        self.worker = worker
        self.ledger = ledger
        self.sink = sink

    async def collect(self) -> None:
        """Groups per `split_by`, calls per group, then the calls over everything; the result to the sink."""
        run = self.run
        key_field = run.key_field
        gathered = await asyncio.to_thread(lambda: list(self.ledger.outputs(run.scope)))
        entries = [(key, value["row"], value["outputs"]) for key, value in gathered]
        rows: list[Row] = []
        split = run.shape.split
        if split is not None:
            groups: dict[str, list[Row]] = {}
            for _, row, outputs in entries:
                groups.setdefault(str(row.get(split.split_by)), []).append({**row, **outputs})
            results = await asyncio.gather(*(self._group(name, members) for name, members in sorted(groups.items())))
            per_group = dict(zip(sorted(groups), results, strict=True))
            if not run.shape.all_calls:
                rows = [{key_field: name, **outputs} for name, outputs in per_group.items()]
            else:
                rows = [await self._all({"results": list(per_group.values()), "items": list(per_group.values())})]
        else:
            items = [{**outputs} if outputs else row for _, row, outputs in entries]
            if not run.shape.all_calls:
                rows = [{key_field: "all", "items": items}]
            else:
                rows = [await self._all({"items": items})]
        if run.stopping is None and rows:
            try:
                await asyncio.to_thread(self.sink.write, rows)
            except SinkError as error:
                run.stop("failed", f"the output could not be written: {error}")
            if run.options.keep_outputs:
                run.result.outputs.extend(rows)

    async def _group(self, name: str, members: list[Row]) -> dict[str, Any]:
        earlier: dict[str, Any] = {}
        extra = {"category": name, "items": members}
        for level in self.run.shape.group_levels:
            for node in level:
                try:
                    await self.worker.step(node, {"category": name}, earlier, extra=extra)
                except (ItemError, CallFailed) as error:  # str() of either is its message
                    self.run.stop("failed", f"group {name} failed: {error}")
                    raise RunStopped("failed", str(error)) from None
        return {"category": name, **earlier}

    async def _all(self, extra: dict[str, Any]) -> Row:
        earlier: dict[str, Any] = {}
        for node in self.run.shape.all_calls:
            try:
                await self.worker.step(node, {}, earlier, extra=extra)
            except (ItemError, CallFailed) as error:  # str() of either is its message
                raise RunStopped("failed", f"{node.id} failed: {error}") from None
        return {self.run.key_field or "key": "all", **earlier}
