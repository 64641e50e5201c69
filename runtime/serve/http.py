"""The HTTP side of `serve` (aiohttp): webhook POSTs (rate-limited, authenticated, size-limited, JSON-checked;
the body is the run's input), `/metrics` (Prometheus text, behind a bearer token when `SLEIPNIR_METRICS_TOKEN` is
set), `/healthz`, and the results viewer's pages (`view.py`: `/`, `/runs/...`, `/compare`; GET only, so a webhook
may still take any path). The limits are in spec/operations.md."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..engine.job import JobRun
from ..io.dbconn import DatabaseError, parse_database_url
from .jobs import ServedJob, error_response, log_event
from .runs import NotStarted
from .triggers import WebhookBodyError, verify, webhook_rows, write_incoming
from .view import Viewer, pricing

BODY_LIMIT = 1 << 20
"""The largest webhook body taken (1 MiB); a larger one gets 413."""
WEBHOOK_RATE = 60
"""Requests a minute one webhook takes unless its trigger sets `requests_per_minute`; past it, 429."""
METRICS_TOKEN_ENV = "SLEIPNIR_METRICS_TOKEN"
"""When set, `/metrics` answers only a request with `Authorization: Bearer <its value>`."""
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

if TYPE_CHECKING:
    from .service import Service


class TokenBucket:
    """`per_minute` requests a minute, in bursts of up to as many: each request takes a token, and tokens come
    back at `per_minute / 60` a second."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock()

    def take(self) -> float:
        """0 when a token was taken; else the seconds until one is back (for `Retry-After`)."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class HttpApp:
    """The aiohttp application and its site."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.buckets: dict[tuple[str, int], TokenBucket] = {}

    async def start(self) -> None:
        app = web.Application(client_max_size=self.service.body_limit)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        try:
            database = parse_database_url(self.service.state_url(), root=self.service.root)
        except DatabaseError as error:
            log_event("config", f"no results viewer: the run ledger: {error}", level=logging.WARNING)
        else:
            Viewer(database, cost=pricing(self.service.cost, self.service.root)).add_routes(app)
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
        if not _loopback(self.service.host):
            for path, (name, trigger) in sorted(self.service.endpoints.items()):
                if not trigger.get("secret_env"):
                    log_event(
                        "config",
                        f"listening on {self.service.host}, beyond this machine, and the webhook {path} has no "
                        f"secret_env: anyone who reaches it can start {name}",
                        job=name,
                        level=logging.WARNING,
                    )

    async def _metrics(self, request: web.Request) -> web.Response:
        token = self.service.environ.get(METRICS_TOKEN_ENV)
        if token and not hmac.compare_digest(request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()):
            return error_response(401, "/metrics needs a bearer token", {"WWW-Authenticate": "Bearer"})
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
        # Which replica answers: replicas sharing a state store each report their own view.
        replica = {"host": socket.gethostname(), "pid": os.getpid()}
        now = self.service.clock.now().isoformat()
        return web.json_response({"status": status, "uptime": uptime, "now": now, "replica": replica, "jobs": jobs})

    async def _webhook(self, request: web.Request) -> web.Response:
        found = self.service.endpoints.get(request.path)
        if found is None:
            return error_response(404, f"no webhook at {request.path}")
        if self.service.draining:
            return error_response(503, "serve is stopping")
        name, trigger = found
        wait = self._bucket(request.path, trigger).take()
        if wait:
            seconds = max(1, math.ceil(wait))
            return error_response(
                429, f"over the limit of {self._rate(trigger)} requests a minute", {"Retry-After": str(seconds)}
            )
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

    def _bucket(self, path: str, trigger: Mapping[str, Any]) -> TokenBucket:
        key = (path, self._rate(trigger))  # a reload that changes the limit starts a new bucket
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = TokenBucket(key[1])
        return bucket

    @staticmethod
    def _rate(trigger: Mapping[str, Any]) -> int:
        return int(trigger.get("requests_per_minute") or WEBHOOK_RATE)

    async def run_body(self, job: ServedJob, run: JobRun, path: str) -> None:
        try:
            result = await self.service.runs.guarded(job, f"webhook {run.run_id}", lambda: self.service.runs.execute(job, path, run=run))
        except NotStarted:
            return  # the body stays, and the next start runs it
        if not (self.service.draining and getattr(result, "status", "") == "interrupted"):  # an interrupted body stays, and the next start resumes it
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


def _loopback(host: str) -> bool:
    """Whether `host` is reachable only from this machine (`127.0.0.1`, `::1`, `localhost`)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
