"""`sleipnir lsp`: the language server, for editors."""

from __future__ import annotations

import click

from .common import guarded


@click.command()
@click.option("--stdio", is_flag=True, help="Speak over stdin and stdout (the default and only transport).")
@guarded
def lsp(stdio: bool) -> None:
    """Run the language server on stdin and stdout, for editors (see spec/editors.md).

    It gives the compiler's own diagnostics as you type, go-to-definition and find-references for job,
    prompt, stack and template names, hover with the reference's words, and completion of names, versions and
    profiles. It shares the workspace's check cache with `sleipnir check`.
    """
    del stdio
    from ..lsp import serve  # pygls is imported only when the server runs

    serve()
