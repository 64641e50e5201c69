"""`sleipnir view`: the results viewer, a read-only web page over the workspace's run ledger
(`runtime/serve/view.py`), served on 127.0.0.1 until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import click
from aiohttp import web

from ..runtime.serve.view import Viewer, pricing
from .common import EXIT_PROBLEMS, guarded
from .console import cost_of
from .runs import LedgerProblem, ledger_database, workspace_root


@click.command("view")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Its port (0: any free port).")
@click.option(
    "--workspace",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The workspace folder (default: the one around the current folder).",
)
@guarded
def view_command(host: str, port: int, workspace: Path | None) -> None:
    """Browse the runs in a web page: each run's items, their inputs, outputs and errors, and two runs compared.

    Read-only: the page never changes the run ledger. It prints its address, then serves until Ctrl-C or SIGTERM.
    """
    root = workspace_root(workspace)
    try:
        database = ledger_database(root)
    except LedgerProblem as problem:
        click.echo(f"error: {problem}", err=True)
        sys.exit(EXIT_PROBLEMS)
    viewer = Viewer(database, cost=pricing(cost_of, str(root)))
    try:
        asyncio.run(_serve(viewer, host, port))
    except OSError as error:
        click.echo(f"error: cannot listen on {host}:{port}: {error.strerror or error}", err=True)
        sys.exit(EXIT_PROBLEMS)
    except KeyboardInterrupt:
        pass


async def _serve(viewer: Viewer, host: str, port: int) -> None:
    runner = web.AppRunner(viewer.application(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        taken = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        click.echo(f"viewing the runs of {viewer.database.display} at http://{shown}:{taken}/ (Ctrl-C stops)", err=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
