"""Renderers turn a check result into text; checking never prints. One module per format."""

from __future__ import annotations

from collections.abc import Callable

from ..checker import CheckResult
from . import github, human, json_report, sarif

Renderer = Callable[[CheckResult, bool], str]

RENDERERS: dict[str, Renderer] = {
    "human": human.render,
    "json": json_report.render,
    "github": github.render,
    "sarif": sarif.render,
}
"""Format name -> renderer(result, color) -> text."""

__all__ = ["RENDERERS", "Renderer"]
