"""The trigger watchers of `serve`: `file_created` globs (each new file one run's input, once, remembered by the
state store across restarts), and the workspace's YAML files (a change recompiles)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine.job import JobRun, RunResult
from .jobs import log_crash, log_event
from .runs import NotStarted
from .triggers import FileGlob, new_files, settled

SETTLE_SECONDS = 0.2
"""A new file is taken once its size and mtime stay the same this long (a writer may still be writing)."""

if TYPE_CHECKING:
    from .service import Service


class Watchers:
    """Watches the file triggers' folders and the workspace."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def restart(self) -> None:
        for task in self.service.watcher_tasks:
            task.cancel()
        self.service.watcher_tasks = [
            asyncio.get_running_loop().create_task(self._watch_glob(name, glob))
            for name, globs in self.service.globs.items()
            for glob in globs
        ]
        for task in self.service.watcher_tasks:
            task.add_done_callback(log_crash)

    async def _watch_glob(self, name: str, glob: FileGlob) -> None:
        log_event("watch", f"watching {glob.pattern}", job=name)
        async for path in new_files(glob, self.service.stop_watching):
            self.service.spawn(self._file_seen(name, path), self.service.run_tasks)

    async def _file_seen(self, name: str, path: str) -> None:
        """One file a trigger saw: run it once, however often it is reported (a write reports several changes;
        a restart scans the folder again)."""
        key = (name, path)
        if key in self.service.files_seen or self.service.draining:
            return
        self.service.files_seen.add(key)
        try:
            stat = await settled(path, SETTLE_SECONDS)
            job = self.service.jobs.get(name)
            if stat is None or job is None or self.service.state is None:
                return
            size, mtime = stat
            record = await asyncio.to_thread(self.service.state.file, name, path)
            same = record is not None and (record.size, record.mtime) == (size, mtime)
            if same and record is not None and record.status != "started":
                return
            # Replicas of `serve` sharing the store each see the file: one claims it.
            if not await asyncio.to_thread(self.service.state.claim, "file", name, f"{path}|{size}|{mtime}", take_over=True):
                return
            # A path seen before with other contents is a new file: its earlier items must not count as done.
            run = JobRun(job.plan, self.service.runs.options(job.plan, path, fresh=record is not None and not same))
            await asyncio.to_thread(self.service.state.mark_file, name, path, size=size, mtime=mtime, status="started", run_id=run.run_id)
            try:
                result = await self.service.runs.guarded(job, f"file {path}", lambda: self.service.runs.execute(job, path, run=run))
            except NotStarted:
                return  # left `started`: the next start runs it
            if isinstance(result, RunResult) and result.status == "interrupted":
                return  # left `started`: the next start resumes it
            status = "held" if result is None else "done"
            await asyncio.to_thread(self.service.state.mark_file, name, path, size=size, mtime=mtime, status=status, run_id=run.run_id)
        finally:
            self.service.files_seen.discard(key)

    async def watch_workspace(self) -> None:
        from watchfiles import awatch

        def yaml_file(change: Any, path: str) -> bool:
            parts = Path(path).parts
            return path.endswith((".yaml", ".yml")) and ".sleipnir" not in parts and ".git" not in parts

        async for _changes in awatch(self.service.root, watch_filter=yaml_file, stop_event=self.service.stop_watching, step=50, debounce=400):
            await self.service.reload()
