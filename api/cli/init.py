"""`sleipnir init`: a new workspace that checks clean and runs offline at once (spec/workspace.md, "A new workspace").

Every file is decided before one is written: when any of them exists, nothing is written and the command exits 1,
so `init` never overwrites and never leaves half a workspace.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path

import click

from ..compiler import schemas
from .common import EXIT_OK, EXIT_PROBLEMS, guarded

JOB_NAME = "review_sentiment"
"""The job `init` writes, in `jobs/<JOB_NAME>.yaml`: `sleipnir run-job review_sentiment` runs it."""

MANIFEST = """\
{modeline}
# The workspace manifest (spec/workspace.md). Every key is optional.
name: {name}
description: A new Sleipnir workspace, made by `sleipnir init`.
# A call whose provider has no API key set goes to the offline `mock` provider, so the example job runs
# anywhere at once. Remove this line in production, where a missing key should fail the call.
fallback_provider: mock
# The run ledger: a SQLite file, kept out of git by .gitignore (a PostgreSQL URL works too).
state: .sleipnir/state.db
"""

JOB = """\
{modeline}
# Run it with `sleipnir run-job {job}`; see what it would do with `sleipnir plan {job}` (spec/job.md).
job:
  name: {job}
  version: 1.0.0
  description: Score the sentiment of the reviews in data/reviews.jsonl.
  input:
    source: file
    path: data/reviews.jsonl
    format: jsonl
  prompts:
    - name: sentiment_analyzer
      version: 2.1.0
      inputs:
        text: "{{{{ input.review_text }}}}"
  output:
    destination: file
    path: output/{job}.jsonl
    format: jsonl
  execution:
    concurrency: 4
"""

REVIEWS = (
    {"review_id": "R001", "review_text": "Absolutely love this kettle, boils fast and looks great on the counter."},
    {"review_id": "R002", "review_text": "Stopped working after two weeks. Support never answered my emails."},
    {"review_id": "R003", "review_text": "It does the job. Nothing special, nothing wrong."},
    {"review_id": "R004", "review_text": "Quiet and quick, but the lid feels flimsy."},
    {"review_id": "R005", "review_text": "Best purchase this year; my tea has never been better."},
)

GITIGNORE = """\
# Sleipnir's local state (run ledger, default database, check cache) stays out of git.
# .sleipnir/schema/ is kept: the modelines and .vscode/settings.json point at it, so an editor validates
# every file in a fresh clone, offline, before anyone runs a command. `sleipnir init`, `sleipnir schema
# --output .sleipnir/schema` and `create-job-from-template` bring it up to date with the installed Sleipnir.
.sleipnir/*
!.sleipnir/schema/
# What the example job writes.
output/
"""


def scaffold(folder: Path) -> dict[Path, str]:
    """Every file of a new workspace in `folder`, by path, with its text; the schemas are written apart, by
    `schemas.refresh`."""
    root = folder.absolute()
    manifest, job = root / "sleipnir.yaml", root / "jobs" / f"{JOB_NAME}.yaml"
    files = {
        manifest: MANIFEST.format(modeline=schemas.modeline("workspace", manifest, root), name=_name(root)),
        job: JOB.format(modeline=schemas.modeline("job", job, root), job=JOB_NAME),
        root / "data" / "reviews.jsonl": "".join(json.dumps(row) + "\n" for row in REVIEWS),
        root / ".vscode" / "settings.json": json.dumps(editor_settings(), indent=2) + "\n",
        root / ".gitignore": GITIGNORE,
    }
    return files


def editor_settings() -> dict[str, object]:
    """`.vscode/settings.json`: each schema in `.sleipnir/schema/` associated by glob with its kind's folder, for
    Red Hat's YAML extension (and any client of yaml-language-server that passes `yaml.schemas` on)."""
    return {
        "yaml.schemas": {
            f"./{(schemas.WORKSPACE_FOLDER / f'{kind}.schema.json').as_posix()}": list(globs)
            for kind, globs in schemas.ASSOCIATIONS.items()
        }
    }


def _name(root: Path) -> str:
    """The workspace's name: its folder's name as an identifier (`my-demo` -> `my_demo`)."""
    name = "".join(c if c.isalnum() else "_" for c in root.name.lower()).strip("_")
    return name if name and not name[0].isdigit() else f"workspace_{name}".rstrip("_")


@click.command()
@click.argument("folder", required=False, default=".", type=click.Path(file_okay=False, path_type=Path))
@guarded
def init(folder: Path) -> None:
    """Make a new workspace in FOLDER: a manifest, one job and its data, and editor schemas.

    FOLDER is the current folder when not given, and is made if missing. Writes sleipnir.yaml (the offline `mock` fallback provider and a SQLite run ledger), one job in jobs/ and
    its input in data/, the JSON Schemas in .sleipnir/schema/, .vscode/settings.json associating them, and a
    .gitignore. Never overwrites: when any of these files exists (the schemas aside, which are only brought up
    to date), writes nothing and exits 1.
    """
    files = scaffold(folder)
    existing = [path for path in files if path.exists() or path.is_symlink()]
    if existing:
        shown = "\n".join(f"  {path.relative_to(folder.absolute())}" for path in existing)
        click.echo(f"error: {folder} already holds files that init would write; nothing was written:\n{shown}", err=True)
        sys.exit(EXIT_PROBLEMS)
    made: list[Path] = []  # files, then the folders made for them: what a failure takes back
    state = folder / ".sleipnir"
    state_made = not state.exists()  # the schemas go there
    try:
        for path, text in files.items():
            made.extend(reversed([p for p in (path.parent, *path.parent.parents) if not p.exists()]))
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("x", encoding="utf-8", newline="\n") as handle:
                made.append(path)
                handle.write(text)
        schemas.refresh(folder)  # generated, not the user's: copies already there are brought up to date
    except OSError as error:  # a folder that cannot be made or written: no half-made workspace is left
        if state_made:
            shutil.rmtree(state, ignore_errors=True)
        for path in reversed(made):
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink(missing_ok=True)
        where = error.filename or folder
        click.echo(f"error: cannot make the workspace in {folder}: {where}: {error.strerror or error}; nothing was kept", err=True)
        sys.exit(EXIT_PROBLEMS)
    where = "" if folder == Path(".") else f"cd {folder} && "
    click.echo(
        f"made a Sleipnir workspace in {folder}\n"
        f"next: {where}sleipnir check && sleipnir run-job {JOB_NAME}\n"
        "(it runs offline with the mock provider; set OPENAI_API_KEY to call OpenAI)"
    )
    sys.exit(EXIT_OK)
