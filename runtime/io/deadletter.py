"""The dead letter: items an error strategy skipped, with their input, error and attempts, one JSON line each.

Lines are appended and fsynced before the ledger records the items as skipped. On resume, the keys already in
the file for this plan are taken as done, so an item is dead-lettered once, wherever a run was killed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ...compiler.ir.common import mask_passwords
from .sinks import repair_torn_line


class DeadLetter:
    def __init__(self, path: str, root: str, *, plan_id: str, job: str) -> None:
        target = Path(path)
        self.path = target if target.is_absolute() else Path(root) / target
        self.plan_id = plan_id
        self.job = job
        self.written = 0

    def open(self) -> set[str]:
        """The keys this plan already dead-lettered (a torn last line is dropped)."""
        if not self.path.exists():
            return set()
        repair_torn_line(self.path)
        keys: set[str] = set()
        with self.path.open("rb") as file:
            for line in file:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("plan") == self.plan_id:
                    keys.add(str(entry.get("key")))
        return keys

    def write(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        now = time.time()
        lines = "".join(
            mask_passwords(
                json.dumps({"plan": self.plan_id, "job": self.job, "at": now, **entry}, ensure_ascii=False, default=str)
            )
            + "\n"
            for entry in entries
        )
        with self.path.open("a", encoding="utf-8") as file:
            file.write(lines)
            file.flush()
            os.fsync(file.fileno())
        self.written += len(entries)
