"""The HTTP side of `serve` (aiohttp): webhook POSTs (authenticated, size-limited, JSON-checked; the body is
the run's input), `/metrics` (Prometheus text) and `/healthz`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from ..engine.job import JobRun
from .jobs import ServedJob, error_response, log_event
from .triggers import WebhookBodyError, verify, webhook_rows, write_incoming

BODY_LIMIT = 1 << 20
"""The largest webhook body taken (1 MiB); a larger one gets 413."""
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

if TYPE_CHECKING:
    from .service import Service


class HttpApp:
    """The aiohttp application and its site."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def start(self) -> None:
        app = web.Application(client_max_size=self.service.body_limit)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_post("/{path:.*}", self._webhook)
        self.service.http_runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
        await self.service.http_runner.setup()
        site = web.TCPSite(self.service.http_runner, self.service.host, self.service.port)
        try:
            await site.start()
        except OSError:
            await self.service.http_runner.cleanup()
            self.service.http_runner = None
            raise
        self.service.port = int(self.service.http_runner.addresses[0][1])  # the port taken, when asked for port 0
        log_event("listen", f"listening on http://{self.service.host}:{self.service.port}")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.service.metrics.exposition(), headers={"Content-Type": PROMETHEUS_TEXT})

    async def _healthz(self, request: web.Request) -> web.Response:
        jobs = [
            {"name": job.name, "kind": job.plan.kind, "schedule": job.schedule.cron if job.schedule else None,
             "next_fire": job.next_due.isoformat() if job.next_due else None, "running": job.running,
             "triggers": [t.get("type") for t in job.plan.settings.get("triggers") or ()], "waiting": job.waiting}
            for job in sorted(self.service.jobs.values(), key=lambda j: j.name)
        ]  # fmt: skip
        uptime = round(time.monotonic() - self.service.started, 3)
        status = "draining" if self.service.draining else "ok"
        return web.json_response({"status": status, "uptime": uptime, "now": self.service.clock.now().isoformat(), "jobs": jobs})

    async def _webhook(self, request: web.Request) -> web.Response:
        found = self.service.endpoints.get(request.path)
        if found is None:
            return error_response(404, f"no webhook at {request.path}")
        if self.service.draining:
            return error_response(503, "serve is stopping")
        name, trigger = found
        too_large = error_response(413, f"the body is over the limit of {self.service.body_limit} bytes")
        if request.content_length is not None and request.content_length > self.service.body_limit:
            return too_large
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return too_large
        secret_env = trigger.get("secret_env")
        if secret_env and not verify(request.headers, body, self.service.environ.get(str(secret_env), "")):
            log_event("unauthorized", f"webhook {request.path}: refused a request without a valid secret", job=name, level=logging.WARNING)
            return error_response(401, "a bearer token or an X-Sleipnir-Signature is required", {"WWW-Authenticate": "Bearer"})
        try:
            rows = webhook_rows(body)
        except WebhookBodyError as error:
            return error_response(400, str(error))
        job = self.service.jobs[name]
        path = await asyncio.to_thread(write_incoming, self.service.root, name, rows)
        run = JobRun(job.plan, self.service.runs.options(job.plan, path))
        self.service.spawn(self.run_body(job, run, path), self.service.run_tasks)
        return web.json_response({"job": name, "run_id": run.run_id, "items": len(rows)}, status=202)

    async def run_body(self, job: ServedJob, run: JobRun, path: str) -> None:
        result = await self.service.runs.guarded(job, f"webhook {run.run_id}", lambda: self.service.runs.execute(job, path, run=run))
        interrupted = self.service.draining and (result is None or getattr(result, "status", "") == "interrupted")
        if not interrupted:  # an interrupted body stays, and the next start runs it again (resuming)
            with contextlib.suppress(OSError):
                os.unlink(path)

    async def resume_incoming(self) -> None:
        """Run again the webhook bodies a stop left behind (accepted, not finished)."""
        folder = Path(self.service.root, ".sleipnir", "incoming")
        left = await asyncio.to_thread(lambda: sorted(folder.glob("*/*.jsonl")) if folder.is_dir() else [])
        for path in left:
            job = self.service.jobs.get(path.parent.name)
            if job is not None:
                log_event("resume", f"running a webhook body left by the last stop: {path.name}", job=job.name)
                run = JobRun(job.plan, self.service.runs.options(job.plan, str(path)))
                self.service.spawn(self.run_body(job, run, str(path)), self.service.run_tasks)
