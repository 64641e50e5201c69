"""Profiles: each overlay key is applied to the job and the result validated again, at the profile's line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..documents import Document, Path
from ..ir.common import suggestion_help
from ..overlay import PROMPT_SHORTHAND, OverlayError, apply, prompt_targets
from ..schemas import fast_validator
from ..span import Span
from ..validate import explain_value
from . import DocumentVisitor

if TYPE_CHECKING:
    from ..checker import CheckContext


class _AtOverlay:
    """Puts every diagnostic about the merged job at the profile entry that caused it."""

    def __init__(self, document: Document, path: Path) -> None:
        self.document = document
        self.path = path

    def span_at(self, path: Path, *, key: bool = False) -> Span:
        return self.document.span_at(self.path, key=key)

    def source_text(self, path: Path) -> str:
        return self.document.source_text(self.path)


def check(context: CheckContext) -> None:
    _Profiles(context).run()


def _wrap(document: Document, job: dict[str, Any]) -> dict[str, Any]:
    """The whole document with its job body replaced by `job`."""
    if document.kind == "template":
        return {"template": {**document.body, "job": job}}
    return {"job": job}


class _Profiles(DocumentVisitor):
    def run(self) -> None:
        # A profile is validated by merging it into the job, which only says something about a valid job.
        valid = set(map(id, self.context.valid))
        for document in self.context.documents:
            if id(document) in valid:
                getattr(self, f"visit_{document.kind}", lambda _: None)(document)

    def visit_job_body(self, document: Document, job: dict[str, Any], path: Path) -> None:
        profiles = job.get("profiles")
        if isinstance(profiles, dict):
            _check_profiles(self.context, document, job, profiles, path)


def _check_profiles(
    context: CheckContext, document: Document, job: dict[str, Any], profiles: dict[str, Any], base: Path
) -> None:
    plain = {key: value for key, value in job.items() if key != "profiles"}
    for profile, overlay in profiles.items():
        if not isinstance(overlay, dict):
            continue
        for key, value in overlay.items():
            path = (*base, "profiles", profile, key)
            target = plain
            if key in PROMPT_SHORTHAND and not prompt_targets(plain):
                # Nothing to set yet, but the value must still be one a prompt call accepts.
                target = {**plain, "prompts": [{"name": "profile_value"}]}
            try:
                merged = apply(target, str(key), value)
            except OverlayError as error:
                context.sink.emit(
                    "unknown-key",
                    f"profile `{profile}` sets `{key}`: {error.message}",
                    document.span_at(path, key=True),
                    label="no such place in the job",
                    help=suggestion_help(error.step, error.candidates),
                    notes=(f"entries there: {', '.join(error.candidates)}",) if error.candidates else (),
                )
                continue
            wrapped = _wrap(document, merged)
            if not fast_validator(document.kind).is_valid(wrapped):
                explain_value(document.kind, wrapped, _AtOverlay(document, path), context.sink)
