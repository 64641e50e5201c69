"""References resolve: prompt modules and stacks, by name and version, against the registry.

A job names prompt modules in `prompts` and `phases`, or a stack with `stack` and `stack_version`; a stack's steps
name prompt modules; a template's job body does the same. A missing version means the newest. A name or version
holding a `${...}` substitution is left alone here: it is resolved when the template is expanded or the job is
compiled, and checked then.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

from ..diagnostics import Diagnostics, Label
from ..documents import Document, Path
from ..ir.common import suggestion_help
from ..registry import Registry
from . import DocumentVisitor

if TYPE_CHECKING:
    from ..checker import CheckContext

_NOUNS = {"prompt": "prompt module", "stack": "stack"}
_WORK_KEYS = ("prompts", "phases", "stack")
"""A job's work is described by exactly one of these."""
_WORK_NOTES = {
    "prompts": "`prompts` run prompt modules one after another on each input item",
    "phases": "`phases` split, map and reduce the input across prompt modules",
    "stack": "`stack` runs a versioned prompting stack on each input item",
}


def check(context: CheckContext) -> None:
    _References(context).run()


def check_resolved(document: Document, body: dict[str, Any], registry: Registry, sink: Diagnostics) -> None:
    """The references of a job whose substitutions `plan` has resolved: a `${PROMPT}` that names no prompt module
    is `unknown-prompt` at its place, as a written name is in `check`."""
    context = cast("CheckContext", SimpleNamespace(sink=sink, registry=registry))
    _References(context).visit_job_body(document, body, document.base)


class _References(DocumentVisitor):
    def visit_stack(self, document: Document) -> None:
        steps = document.body.get("steps")
        self._steps(document, steps, (*document.base, "steps"))

    def _steps(self, document: Document, steps: Any, path: Path) -> None:
        if not isinstance(steps, list):
            return
        for index, step in enumerate(steps):
            if not isinstance(step, dict):
                continue
            if "parallel" in step:
                self._steps(document, step["parallel"], (*path, index, "parallel"))
            else:
                self._reference(document, "prompt", step, (*path, index), "prompt", "version")

    def visit_job_body(self, document: Document, job: dict[str, Any], path: Path) -> None:
        self._one_kind_of_work(document, job, path)
        prompts = job.get("prompts")
        if isinstance(prompts, list):
            for index, entry in enumerate(prompts):
                if isinstance(entry, dict):
                    self._reference(document, "prompt", entry, (*path, "prompts", index), "name", "version")
        phases = job.get("phases")
        if isinstance(phases, list):
            for index, phase in enumerate(phases):
                if isinstance(phase, dict):
                    self._reference(document, "prompt", phase, (*path, "phases", index), "prompt", "version")
        self._reference(document, "stack", job, path, "stack", "stack_version")

    def _one_kind_of_work(self, document: Document, job: dict[str, Any], path: Path) -> None:
        present = [key for key in job if key in _WORK_KEYS and job[key] is not None]
        if len(present) < 2:
            return
        first, second = present[:2]
        self.sink.emit(
            "invalid-value",
            f"a job uses either `{first}` or `{second}`, not both",
            document.span_at((*path, second), key=True),
            label=f"`{second}` beside `{first}`",
            secondary=[Label(span=document.span_at((*path, first), key=True), text=f"`{first}` given here")],
            notes=tuple(_WORK_NOTES[key] for key in present),
            help="keep one of them; to run both, make two jobs and chain them in a pipeline",
        )

    def _reference(
        self,
        document: Document,
        kind: str,
        holder: dict[str, Any],
        path: Path,
        name_key: str,
        version_key: str,
    ) -> None:
        """Resolve `holder[name_key]` at `holder[version_key]` (the newest when absent) as a `kind` document."""
        noun = _NOUNS[kind]
        if name_key not in holder:
            if version_key in holder:
                self.sink.emit(
                    "missing-key",
                    f"{version_key} needs {name_key}",
                    document.span_at((*path, version_key), key=True),
                    label=f"a version of no {noun}",
                    help=f"add `{name_key}:` naming the {noun}, or remove `{version_key}`",
                )
            return
        name = holder[name_key]
        if not isinstance(name, str) or "${" in name:
            return
        versions = self.registry.versions(kind, name)
        if not versions:
            self._unknown(document, kind, name, (*path, name_key))
            return
        version = _version(holder.get(version_key))
        if version is None or "${" in version or version in versions:
            return
        shown = [v for v in versions if v]
        newest = shown[-1] if shown else None
        self.sink.emit(
            f"unknown-{kind}-version",
            f"{noun} `{name}` has no version {version}",
            document.span_at((*path, version_key)),
            label="no such version",
            notes=(
                f"the versions of `{name}` are: {', '.join(shown)}" if shown else f"`{name}` has no version",
            ),
            help=(
                f"use `{version_key}: {newest}`, the newest, or leave out `{version_key}` to take the newest"
                if newest
                else f"leave out `{version_key}`"
            ),
        )

    def _unknown(self, document: Document, kind: str, name: str, path: Path) -> None:
        noun = _NOUNS[kind]
        notes = []
        for other, other_noun in _NOUNS.items():
            if other != kind and self.registry.versions(other, name):
                notes.append(f"`{name}` is a {other_noun}, not a {noun}")
        self.sink.emit(
            f"unknown-{kind}",
            f"unknown {noun} `{name}`",
            document.span_at(path),
            label=f"no {noun} has this name",
            notes=notes,
            help=suggestion_help(name, self.registry.names(kind))
            or f"define a {noun} named `{name}` in the workspace, or use one from the standard library",
        )


def _version(value: Any) -> str | None:
    """A version as text; YAML reads `1.0` as a number, which still names version "1.0"."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return str(value)
