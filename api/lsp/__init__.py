"""The language server (`sleipnir lsp`): the compiler's diagnostics, names and reference text in an editor.

`server.py` speaks the protocol (pygls); `navigation.py` and `completion.py` find what a position means.
"""

from __future__ import annotations

from .server import build, serve

__all__ = ["build", "serve"]
