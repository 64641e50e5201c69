"""The results viewer (`sleipnir view`, and `serve`'s `/`): read-only HTML pages over the run ledger.

`/` lists the runs (`?job=` one job's); `/runs/{run_id}` shows a run and its items' inputs, outputs and errors,
filtered by `?status=` and searched by `?q=`; `/compare?a=RUN&b=RUN` sets two runs of one job side by side, item
by item, the changed ones marked (`?changed=1`: only those). Pages are rendered on the server from the Jinja2
templates in `templates/` with autoescaping on, so nothing a model wrote runs in the browser; there is no
JavaScript. The ledger is read through `History`, opened read-only for each request.
"""

from __future__ import annotations

import asyncio
import difflib
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from ..engine.history import READ_ERRORS, History, ItemResult, duration_text
from ..engine.ledger import RunRecord
from ..io.dbconn import DatabaseError, DatabaseURL, mask_secrets

__all__ = ["PAGE_SIZE", "Viewer", "pricing"]

PAGE_SIZE = 100
"""Items a page shows."""
RUNS_SHOWN = 200
"""Runs the list shows."""
STATUSES = ("succeeded", "skipped", "failed")
_WINDOW = 500
"""Items of each run `compare` reads at a time."""
_HTML = "text/html"


class Viewer:
    """The viewer's pages over the ledger at `database`; `cost` prices a run's tokens (or None when unknown)."""

    def __init__(self, database: DatabaseURL, cost: Callable[[RunRecord], float | None] = lambda run: None) -> None:
        self.database = database
        self.cost = cost
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters["pretty"] = _pretty
        self.templates.filters["duration"] = duration_text
        self.templates.filters["when"] = _when

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._page(self._runs))
        app.router.add_get("/runs/{run_id}", self._page(self._run))
        app.router.add_get("/compare", self._page(self._compare))

    def application(self) -> web.Application:
        app = web.Application()
        self.add_routes(app)
        return app

    # -- pages --------------------------------------------------------------------------------------------

    def _page(self, build: Callable[[History | None, web.Request], tuple[int, str, dict[str, Any]]]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            status, template, values = await asyncio.to_thread(self._read, build, request)
            html = self.templates.get_template(template).render(**values)
            return web.Response(text=html, status=status, content_type=_HTML, charset="utf-8")

        return handler

    def _read(
        self, build: Callable[[History | None, web.Request], tuple[int, str, dict[str, Any]]], request: web.Request
    ) -> tuple[int, str, dict[str, Any]]:
        """In a worker thread: open the ledger, build the page's values, close it."""
        database = self.database
        if database.path is not None and not Path(database.path).is_file():
            return build(None, request)
        try:
            history = History(database)
        except (DatabaseError, *READ_ERRORS, OSError) as error:
            return 500, "problem.html", {"title": "cannot open the run ledger", "message": self._masked(error)}
        try:
            return build(history, request)
        except READ_ERRORS as error:
            return 500, "problem.html", {"title": "cannot read the run ledger", "message": self._masked(error)}
        finally:
            history.close()

    def _masked(self, error: BaseException) -> str:
        return mask_secrets(str(error).strip(), self.database.url)

    def _runs(self, history: History | None, request: web.Request) -> tuple[int, str, dict[str, Any]]:
        job = request.query.get("job") or None
        runs = history.runs(job, RUNS_SHOWN) if history is not None else []
        rows = [{"run": run, "summary": _summary(run), "cost": self.cost(run)} for run in runs]
        jobs = history.names()[0] if history is not None else []
        return 200, "runs.html", {"title": "runs", "rows": rows, "job": job, "jobs": jobs, "store": self.database.display}

    def _run(self, history: History | None, request: web.Request) -> tuple[int, str, dict[str, Any]]:
        run_id = request.match_info["run_id"]
        run = history.run(run_id) if history is not None else None
        if history is None or run is None:
            return self._missing(history, run_id)
        status = request.query.get("status") or None
        search = request.query.get("q", "").strip() or None
        page = _page_number(request)
        items = history.items(run_id, status=status, search=search, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
        others = [r for r in history.runs(run.job, RUNS_SHOWN) if r.run_id != run_id]
        values = {
            "title": f"run {run_id}",
            "run": run,
            "summary": _summary(run),
            "cost": self.cost(run),
            "counts": history.counts(run_id),
            "items": items[:PAGE_SIZE],
            "more": len(items) > PAGE_SIZE,
            "page": page,
            "status": status,
            "search": search or "",
            "statuses": STATUSES,
            "others": others,
        }
        return 200, "run.html", values

    def _compare(self, history: History | None, request: web.Request) -> tuple[int, str, dict[str, Any]]:
        ids = request.query.get("a", ""), request.query.get("b", "")
        runs = [history.run(run_id) if history is not None and run_id else None for run_id in ids]
        for run_id, run in zip(ids, runs, strict=True):
            if history is None or run is None:
                return self._missing(history, run_id)
        before, after = runs
        assert history is not None and before is not None and after is not None
        if before.job != after.job:
            message = f"run {before.run_id} is of `{before.job}` and run {after.run_id} of `{after.job}`: compare two runs of one job"
            return 400, "problem.html", {"title": "not the same job", "message": message}
        changed_only = request.query.get("changed") == "1"
        page = _page_number(request)
        offset = (page - 1) * PAGE_SIZE
        rows = _pairs(history, before.run_id, after.run_id, changed_only=changed_only, wanted=offset + PAGE_SIZE + 1)
        shown = rows[offset : offset + PAGE_SIZE]
        values = {
            "title": f"compare {before.run_id} and {after.run_id}",
            "before": before,
            "after": after,
            "rows": shown,
            "more": len(rows) > offset + PAGE_SIZE,
            "changed": sum(1 for row in shown if row["changed"]),
            "changed_only": changed_only,
            "page": page,
        }
        return 200, "compare.html", values

    def _missing(self, history: History | None, run_id: str) -> tuple[int, str, dict[str, Any]]:
        ids = history.names()[1] if history is not None else []
        close = difflib.get_close_matches(run_id, ids, n=3, cutoff=0.6)
        return 404, "problem.html", {"title": "no such run", "message": f"no run `{run_id}` in the run ledger", "close": close}


def pricing(cost_of: Callable[[Mapping[str, Any], str], float | None] | None, root: str) -> Callable[[RunRecord], float | None]:
    """A run's cost: the one its summary holds, else its tokens at `cost_of`'s prices (None when unknown)."""

    def cost(run: RunRecord) -> float | None:
        known = run.summary.get("cost")
        if isinstance(known, int | float) and not isinstance(known, bool):
            return float(known)
        tokens = run.summary.get("tokens_by_model")
        if cost_of is None or not isinstance(tokens, dict):
            return None
        try:
            return cost_of(tokens, root)
        except (KeyError, TypeError):  # a summary written by another version
            return None

    return cost


def _page_number(request: web.Request) -> int:
    try:
        return max(1, int(request.query.get("page", "1")))
    except ValueError:
        return 1


def _pairs(history: History, before: str, after: str, *, changed_only: bool, wanted: int) -> list[dict[str, Any]]:
    """The two runs' items side by side in key order, until `wanted` rows (only the changed ones with
    `changed_only`): both runs are read a window of keys at a time."""
    rows: list[dict[str, Any]] = []
    last: str | None = None
    while len(rows) < wanted:
        left = history.items(before, after=last, limit=_WINDOW)
        right = history.items(after, after=last, limit=_WINDOW)
        # Keys up to the smaller last key of a full window are complete on both sides.
        bound = min((side[-1].key for side in (left, right) if len(side) == _WINDOW), default=None)
        olds = {i.key: i for i in left if bound is None or i.key <= bound}
        news = {i.key: i for i in right if bound is None or i.key <= bound}
        for key in sorted(olds.keys() | news.keys()):
            old, new = olds.get(key), news.get(key)
            changed = _changed(old, new)
            if changed or not changed_only:
                rows.append({"key": key, "before": old, "after": new, "changed": changed})
        if bound is None:
            break
        last = bound
    return rows


def _changed(old: ItemResult | None, new: ItemResult | None) -> bool:
    if old is None or new is None:
        return True
    return (old.status, old.output, old.error) != (new.status, new.output, new.error)


def _summary(run: RunRecord) -> dict[str, Any]:
    summary = run.summary

    def count(key: str) -> int:
        value = summary.get(key)
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0

    duration = summary.get("execution_time")
    if not isinstance(duration, int | float) or isinstance(duration, bool):
        duration = None if run.finished_at is None else max(0.0, run.finished_at - run.started_at)
    message = summary.get("message")
    return {
        "ok": count("items_processed"),
        "skipped": count("items_skipped"),
        "failed": count("items_failed"),
        "tokens": count("prompt_tokens") + count("completion_tokens"),
        "duration": duration,
        "message": message if isinstance(message, str) else None,
    }


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")
