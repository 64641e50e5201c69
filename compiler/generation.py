"""`sleipnir create-job-from-template`: find the template, check it, expand it, and write the job as YAML.

The template is checked first, with everything `sleipnir check` checks, so expansion only ever sees a valid
template. The job is written to a temporary file beside the target and moved into place, so an error or an
interruption leaves either the old file or the new one, never part of one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from . import schemas
from .checker import CheckResult
from .checker import check as run_check
from .diagnostics import Diagnostic, Diagnostics
from .documents import Document
from .ir.common import suggestion_help
from .loader import SourceFile, load
from .registry import Registry
from .template import expand, template_overrides
from .workspace import YAML_SUFFIXES, display_path, find_root, load_workspace

__all__ = ["Generated", "default_output", "dump", "generate", "write"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Generated:
    """The job's YAML text, or the problems that kept it from being made."""

    text: str | None
    """The generated file's text; None when there are errors (and then nothing was written)."""
    result: CheckResult
    """Every diagnostic, with the sources to show them with."""


def generate(
    template: str,
    *,
    name: str,
    params: Sequence[str] = (),
    param_files: Sequence[str] = (),
    workspace: Path | None = None,
    output: Path | None = None,
    force: bool = False,
) -> Generated:
    """The job that `template` (a name, `name@version` or a file path) makes, named `name`.

    Names resolve against the workspace at `workspace` (the one around the current folder when None) and the
    stdlib. `params` are `KEY=VALUE` texts and `param_files` YAML files of parameters, a `--param` winning.
    With `output`, the job is also written there (see `write`), and the workspace's `.sleipnir/schema/`, which
    the file's modeline points at, is brought up to date. Without, the modeline is the one of `jobs/<name>.yaml`.
    """
    checked = _checked_template(template, workspace)
    if isinstance(checked, CheckResult):
        return Generated(text=None, result=checked)
    document, result = checked
    sink = Diagnostics()
    overrides = template_overrides(document, params, param_files, sink)
    job = expand(document, name, overrides, sink) if not sink.errors else None
    if job is None:
        return Generated(text=None, result=_result(result, sink.items, param_files))
    root = workspace_root(workspace) if output is None else find_root(output) or workspace_root(workspace)
    modeline = schemas.modeline("job", output or default_output(root, "job"), root)
    text = dump(job, document, modeline)
    if output is not None:
        if not write(output, text, force=force, sink=sink):
            return Generated(text=None, result=_result(result, sink.items))
        schemas.refresh(root)
    return Generated(text=text, result=result)


def workspace_root(workspace: Path | None) -> Path:
    """The workspace a job is made for: `workspace`, else the one around the current folder, else that folder."""
    return workspace or find_root(Path.cwd()) or Path.cwd()


def default_output(root: Path, name: str) -> Path:
    """Where a job named `name` goes when no `--output` is given: `jobs/<name>.yaml` in the workspace."""
    return root / "jobs" / f"{name}.yaml"


def dump(job: dict[str, Any], template: Document, modeline: str) -> str:
    """The job as a YAML file: the schema modeline, a line naming the template, then the job in block style,
    keys in the template's order. Raises `RuntimeError` if the text would not read back as the same job."""
    made_by = f"{template.name}@{template.version}" if template.version else template.name
    header = (
        f"{modeline}\n"
        f"# Made by `sleipnir create-job-from-template` from template {made_by}.\n"
    )
    text = header + yaml.dump(
        {"job": job},
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=1 << 16,
    )
    documents = load(text, "<generated>", Diagnostics())
    if len(documents) != 1 or documents[0].value != {"job": job}:
        raise RuntimeError("the generated YAML does not read back as the job it was made from")
    return text


def write(path: Path, text: str, *, force: bool, sink: Diagnostics) -> bool:
    """Write `text` to `path` atomically, creating its folder; an existing file only with `force`."""
    shown = display_path(path)
    if path.is_dir():
        sink.emit("io-error", "the output is a folder, not a file", None, file=shown, help="name a file")
        return False
    existed = path.exists()
    if existed and not force:
        sink.emit(
            "file-exists",
            "the output file exists",
            None,
            file=shown,
            help="pass --force to overwrite it, or choose another --output",
        )
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = path.stat().st_mode & 0o777 if existed else 0o666 & ~_umask()
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, mode)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as error:
        sink.emit("io-error", f"cannot write the job: {error.strerror or error}", None, file=shown)
        return False
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _Dumper(yaml.SafeDumper):
    """Block style with list items indented under their key, as the spec's examples are written."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line text (a prompt, a long query) reads best as a literal block; PyYAML quotes it instead when a
    # block cannot hold it exactly.
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _represent_text)


# --------------------------------------------------------------------------------------------------------------
# Finding and checking the template


def _checked_template(template: str, workspace: Path | None) -> tuple[Document, CheckResult] | CheckResult:
    """The template, checked clean, with the check's result; or a result with the diagnostics why not."""
    if _is_path(template):
        result = run_check([template])
        if result.errors:
            return result
        found = [d for d in result.workspace.documents if d.kind == "template"]
        if len(found) == 1:
            return found[0], result
        sink = Diagnostics()
        sink.emit(
            "unknown-template",
            f"`{template}` holds no template" if not found else f"`{template}` holds {len(found)} templates",
            found[1].span if found else None,
            file=template,
            notes=(f"templates: {', '.join(_shown(d) for d in found)}",) if found else (),
            help="name a file with one template in it, or the template's name",
        )
        return _result(result, sink.items)
    name, _, version = template.partition("@")
    loaded = load_workspace([str(workspace_root(workspace))], Diagnostics())
    registry = Registry.build([*loaded.documents, *loaded.context, *loaded.stdlib])
    document = registry.get("template", name, version or None)
    if document is None:
        sink = Diagnostics()
        _unknown(template, name, version, registry, sink)
        return CheckResult(
            diagnostics=tuple(sink.items),
            workspace=replace(loaded, documents=()),
            registry=registry,
            strict=False,
        )
    result = run_check([document.file])
    if result.errors:
        return result
    for candidate in result.workspace.documents:
        if (candidate.kind, candidate.name, candidate.version) == (
            "template",
            document.name,
            document.version,
        ):
            return candidate, result
    raise RuntimeError(
        f"template `{template}` was not found again when checked"
    )  # the file changed meanwhile


def _is_path(template: str) -> bool:
    return (
        template.endswith(YAML_SUFFIXES) or "/" in template or os.sep in template or Path(template).is_file()
    )


def _unknown(template: str, name: str, version: str, registry: Registry, sink: Diagnostics) -> None:
    versions = registry.versions("template", name)
    if versions:
        sink.emit(
            "unknown-template",
            f"template `{name}` has no version {version}",
            None,
            notes=(f"versions: {', '.join(versions)}",),
            help=f"use `{name}` for the newest version, or `{name}@{versions[-1]}`",
        )
        return
    names = registry.names("template")
    sink.emit(
        "unknown-template",
        f"no template named `{name}`" if name else f"`{template}` names no template",
        None,
        notes=(f"templates: {', '.join(names)}",) if names else ("there are no templates",),
        help=suggestion_help(name, names)
        or "name a template of the workspace or the stdlib, or a template file",
    )


def _shown(document: Document) -> str:
    return f"{document.name}@{document.version}" if document.version else document.name or "?"


def _result(
    result: CheckResult, diagnostics: Sequence[Diagnostic], param_files: Sequence[str] = ()
) -> CheckResult:
    """`result` with `diagnostics` instead of its own, and the parameter files' text for their source lines."""
    sources = dict(result.workspace.sources)
    for file in param_files:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            sources.setdefault(file, SourceFile(path=file, text=Path(file).read_text(encoding="utf-8")))
    return replace(
        result,
        diagnostics=tuple(sorted(diagnostics, key=Diagnostic.sort_key)),
        workspace=replace(result.workspace, sources=sources),
    )
