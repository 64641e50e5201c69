"""The JSON Schemas the compiler validates against: built from `model`, shipped as draft-07 files in `sleipnir.schema`.

The compiler validates with the shipped files (`load`); `build` makes the same documents from the model, and a
test keeps the two equal. Regenerate the files after changing the model with `sleipnir schema --output schema/`,
or without the CLI::

    python -c "import sys; from sleipnir.compiler.schemas import main; sys.exit(main(sys.argv[1:]))" schema/
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .workspace import package_folder

if TYPE_CHECKING:
    import jsonschema
    import jsonschema_rs

    from .model import Definitions, Kind


SCHEMA_KINDS = ("job", "template", "pipeline", "stack", "prompt", "workspace")
"""The kinds the compiler validates: each document kind, and `workspace` for `sleipnir.yaml`."""

ANY_DOCUMENT = "sleipnir"
"""The one schema for any Sleipnir document, for editors that want a single association."""

ALL = (*SCHEMA_KINDS, ANY_DOCUMENT)
"""Every published schema file, as `<name>.schema.json`."""


WORKSPACE_FOLDER = Path(".sleipnir", "schema")
"""Where a workspace keeps its copy of the schemas, for editors: modelines and `.vscode/settings.json` point
here, so they resolve offline and match the installed Sleipnir."""

ASSOCIATIONS: dict[str, tuple[str, ...]] = {
    "job": ("jobs/**/*.yaml", "jobs/**/*.yml"),
    "template": ("templates/**/*.yaml", "templates/**/*.yml"),
    "pipeline": ("pipelines/**/*.yaml", "pipelines/**/*.yml"),
    "stack": ("stacks/**/*.yaml", "stacks/**/*.yml"),
    "prompt": ("prompts/**/*.yaml", "prompts/**/*.yml"),
    "workspace": ("sleipnir.yaml", "sleipnir.yml"),
}
"""Each schema's globs, relative to the workspace root, by the folder convention of spec/workspace.md: the
`yaml.schemas` that `sleipnir init` writes. A glob covers every document of a file, where a modeline covers only
the document it is in."""


def shipped_text(kind: str) -> str:
    """The exact text of the installed `<kind>.schema.json`."""
    return (package_folder("sleipnir.schema") / f"{kind}.schema.json").read_text(encoding="utf-8")


@cache
def load(kind: str) -> dict[str, Any]:
    """The published schema for `kind` (a document kind, or `workspace` for `sleipnir.yaml`)."""
    schema: dict[str, Any] = json.loads(shipped_text(kind))
    return schema


def refresh(root: Path) -> list[Path]:
    """Bring `root`'s `.sleipnir/schema/` up to date with the installed schemas: write each file that is missing
    or differs, leave the others untouched; the paths written."""
    folder = root / WORKSPACE_FOLDER
    written = []
    for kind in ALL:
        path, text = folder / f"{kind}.schema.json", shipped_text(kind)
        try:
            current = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            current = None
        if current != text:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def modeline(kind: str, file: Path, root: Path) -> str:
    """The comment that points yaml-language-server at `kind`'s schema in `root`'s `.sleipnir/schema/`, by a
    path relative to `file` (so it resolves offline, in every clone)."""
    target = os.path.relpath((root / WORKSPACE_FOLDER / f"{kind}.schema.json").absolute(), file.absolute().parent)
    return f"# yaml-language-server: $schema={Path(target).as_posix()}"


def catalog() -> dict[str, Any]:
    """A SchemaStore-style catalog (https://json.schemastore.org/schema-catalog.json) of the published schemas:
    what a listing in SchemaStore would carry, once the `$id` URLs are published. Only the manifest gets a
    `fileMatch`: a folder glob such as `**/jobs/**/*.yaml` would claim other tools' files in every project."""
    entries = []
    for kind in ALL:
        schema = load(kind)
        entry: dict[str, Any] = {
            "name": f"Sleipnir {schema['title']}" if not schema["title"].startswith("Sleipnir") else schema["title"],
            "description": schema["description"],
        }
        if kind == "workspace":
            entry["fileMatch"] = list(ASSOCIATIONS[kind])
        entry["url"] = schema["$id"]
        entries.append(entry)
    return {"$schema": "https://json.schemastore.org/schema-catalog.json", "version": 1, "schemas": entries}


@cache
def fast_validator(kind: str) -> jsonschema_rs.Draft7Validator:
    """A compiled validator that only answers valid or not: the fast path for documents that pass."""
    import jsonschema_rs  # a warm check, which parses nothing, validates nothing either

    return jsonschema_rs.Draft7Validator(load(kind))


@cache
def explaining_validator(kind: str) -> jsonschema.Draft7Validator:
    """jsonschema's validator, used only on documents that failed, for ranked and detailed errors."""
    import jsonschema  # 50 ms to import: only when a document failed its schema

    return jsonschema.Draft7Validator(load(kind))


def build(kind: str) -> dict[str, Any]:
    """The draft-07 schema document for `kind` (one of `ALL`), made from the compiler's model."""
    # The model is imported only to build schemas (90 ms): a check validates with the shipped files.
    from .model import KINDS, Definitions

    if kind == ANY_DOCUMENT:
        return _any_document()
    if kind not in KINDS:
        raise ValueError(f"unknown schema kind {kind!r}; the kinds are {', '.join(ALL)}")
    spec = KINDS[kind]
    definitions = Definitions()
    schema = {**_header(kind, spec.title, spec.about), **_document(spec, definitions)}
    schema["definitions"] = definitions.schemas
    if kind in SNIPPETS:
        schema["defaultSnippets"] = list(SNIPPETS[kind])
    return schema


def render(kind: str) -> str:
    """`build(kind)` as the exact text of its published file."""
    return json.dumps(build(kind), indent=2, ensure_ascii=False) + "\n"


def write(directory: Path, kinds: Sequence[str] = ALL) -> list[Path]:
    """Write `<kind>.schema.json` for each of `kinds` into `directory` (made if missing); the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in kinds:
        path = directory / f"{kind}.schema.json"
        path.write_text(render(kind), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """`main(["schema/"])` regenerates every file; `main(["out/", "job"])` writes only the job schema."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-"):
        print(f"usage: DIRECTORY [KIND ...]   (kinds: {', '.join(ALL)})", file=sys.stderr)
        return 2
    unknown = [kind for kind in args[1:] if kind not in ALL]
    if unknown:
        print(f"unknown schema kind: {', '.join(unknown)} (kinds: {', '.join(ALL)})", file=sys.stderr)
        return 2
    for path in write(Path(args[0]), args[1:] or ALL):
        print(path)
    return 0


def _header(name: str, title: str, about: str) -> dict[str, Any]:
    from .model import DRAFT_07, SCHEMA_BASE

    return {
        "$schema": DRAFT_07,
        "$id": f"{SCHEMA_BASE}{name}.schema.json",
        "title": title,
        "description": about.replace("`", ""),
    }


def _document(kind: Kind, definitions: Definitions) -> dict[str, Any]:
    """A whole document of `kind`: `{kind: body}`, or the manifest body itself for the workspace."""
    from .model import Body, Key, Place, record

    if not kind.keyed:
        return kind.body.bare(Place(kind.name), definitions)
    # Target "" links the kind key to the top of its spec page rather than to an anchor.
    top = record(Key(kind.name, Body(kind.name), kind.about, required=True))
    return top.bare(Place(kind.name, ""), definitions)


def _any_document() -> dict[str, Any]:
    from .model import KINDS, Definitions

    definitions = Definitions()
    # Exactly one branch fits: each keyed kind requires its key, and no kind key is a workspace key.
    branches = [{"title": kind.title, **_document(kind, definitions)} for kind in KINDS.values()]
    schema = {
        **_header(ANY_DOCUMENT, "Sleipnir document", "Any Sleipnir document: a job, template, pipeline, stack or "
                  "prompt module, known by its top-level key, or the workspace's sleipnir.yaml."),
        "type": "object",
        "oneOf": branches,
        "definitions": definitions.schemas,
        "defaultSnippets": [snippet for kind in KINDS for snippet in SNIPPETS.get(kind, ())],
    }
    return schema


# --- Snippets --------------------------------------------------------------------------------------------------
# `${1:text}` is a tab stop; a literal `${` is written `\${` so the editor does not read it as one.

JOB_SNIPPET: dict[str, Any] = {
    "label": "job",
    "description": "A job skeleton: input, one prompt, output and execution settings",
    "body": {
        "job": {
            "name": "${1:my_job}",
            "version": "${2:1.0.0}",
            "description": "${3:What this job does}",
            "input": {"source": "file", "path": "${4:data/items.jsonl}", "format": "jsonl", "batch_size": 100},
            "prompts": [{"name": "${5:sentiment_analyzer}", "version": "${6:2.1.0}"}],
            "output": {"destination": "file", "path": "${7:out/results.jsonl}", "format": "jsonl"},
            "execution": {"concurrency": 10, "retry_on_failure": 3, "timeout": 300},
        }
    },
}

PIPELINE_SNIPPET: dict[str, Any] = {
    "label": "pipeline",
    "description": "A pipeline skeleton: two jobs, the second depending on the first",
    "body": {
        "pipeline": {
            "name": "${1:my_pipeline}",
            "jobs": [
                {"id": "${2:collect}", "name": "${3:collect_job}"},
                {"id": "${4:analyze}", "name": "${5:analyze_job}", "depends_on": ["${2:collect}"]},
            ],
        }
    },
}

TEMPLATE_SNIPPET: dict[str, Any] = {
    "label": "template",
    "description": "A template skeleton: one parameter and the job it makes",
    "body": {
        "template": {
            "name": "${1:my_template}",
            "parameters": [{"name": "${2:input_table}", "type": "string", "required": True}],
            "job": {
                "name": "\\${job_name}",
                "input": {"source": "database", "query": "SELECT * FROM \\${${2:input_table}}"},
                "prompts": [{"name": "${3:analyzer}"}],
            },
        }
    },
}

SNIPPETS = {"job": (JOB_SNIPPET,), "pipeline": (PIPELINE_SNIPPET,), "template": (TEMPLATE_SNIPPET,)}
"""`defaultSnippets` (the VS Code YAML extension's keyword), offered at the top of an empty file."""


if __name__ == "__main__":
    sys.exit(main())
