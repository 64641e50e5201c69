"""Renderers turn a check result into text; checking never prints. One module per format."""

from __future__ import annotations

import functools
from collections.abc import Callable

from ..checker import CheckResult
from ..ir.common import mask_passwords
from . import github, human, json_report, sarif

Renderer = Callable[[CheckResult, bool], str]


def _masked(render: Renderer) -> Renderer:
    """A renderer whose output shows no URL's password, in messages and in the quoted source lines alike."""

    @functools.wraps(render)
    def masked(result: CheckResult, color: bool) -> str:
        return mask_passwords(render(result, color))

    return masked


RENDERERS: dict[str, Renderer] = {
    "human": _masked(human.render),
    "json": _masked(json_report.render),
    "github": _masked(github.render),
    "sarif": _masked(sarif.render),
}
"""Format name -> renderer(result, color) -> text."""

__all__ = ["RENDERERS", "Renderer"]
