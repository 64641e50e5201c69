"""The registry of diagnostic codes. Every code a stage emits is declared here, once, with its summary.

Codes are stable, kebab-case and documented in `spec/diagnostics.md`; a test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True, slots=True, kw_only=True)
class Code:
    """A registered diagnostic code."""

    name: str
    severity: Severity
    summary: str
    """One line for the code table in the spec and for SARIF rule descriptions."""


def _codes(*entries: tuple[str, Severity, str]) -> dict[str, Code]:
    table: dict[str, Code] = {}
    for name, severity, summary in entries:
        assert name not in table, name
        table[name] = Code(name=name, severity=severity, summary=summary)
    return table


E, W, N = Severity.ERROR, Severity.WARNING, Severity.NOTE

CODES: dict[str, Code] = _codes(
    # Reading files
    ("io-error", E, "A file or folder could not be read."),
    ("invalid-encoding", E, "A file is not valid UTF-8."),
    ("yaml-syntax", E, "A YAML syntax error."),
    ("tab-indent", E, "A tab character is used for indentation; YAML allows only spaces."),
    ("duplicate-key", E, "A mapping has the same key twice."),
    ("unsupported-tag", E, "A YAML tag Sleipnir does not accept (no tag can construct objects)."),
    ("alias-bomb", E, "Aliases expand without bound (a billion-laughs or self-referring document), or nesting is too deep."),
    ("invalid-merge", E, "A `<<` merge key whose value is not a mapping or a list of mappings."),
    ("non-string-key", E, "A mapping key that is not a string."),
    ("unknown-document-kind", E, "A document whose top-level key is not job, template, pipeline, stack or prompt."),
    ("no-yaml-files", W, "A path given to check holds no YAML files."),
    ("no-manifest", N, "No sleipnir.yaml at or above the checked path: its folder is taken as the workspace."),
    # Schema
    ("unknown-key", E, "A key that is not valid at this place."),
    ("missing-key", E, "A required key is missing."),
    ("invalid-type", E, "A value has the wrong type."),
    ("invalid-value", E, "A value is out of range, not one of the allowed values, or badly formed."),
    # Names and references
    ("duplicate-name", E, "Two documents of the same kind share a name and version."),
    ("unknown-prompt", E, "A prompt reference names no known prompt module."),
    ("unknown-prompt-version", E, "A prompt reference asks for a version that does not exist."),
    ("unknown-stack", E, "A stack reference names no known stack."),
    ("unknown-stack-version", E, "A stack reference asks for a version that does not exist."),
    ("unknown-job", E, "A pipeline names a job that does not exist."),
    ("unknown-dependency", E, "A `depends_on` entry names no job id in the pipeline."),
    ("duplicate-id", E, "Two entries of one pipeline or stack share an id."),
    ("dependency-cycle", E, "Pipeline dependencies form a cycle."),
    ("unknown-profile", E, "A profile name that the job does not define."),
    ("unknown-target", E, "`plan` or `run` names no job, pipeline or file."),
    ("unknown-template", E, "`create-job-from-template` names no template."),
    # Overrides, templates and plans
    ("invalid-param", E, "A `--param` that is not KEY=VALUE, or a parameter file that is not a mapping."),
    ("missing-parameter", E, "A required template parameter is not given."),
    ("path-outside-workspace", E, "A job's file is outside its workspace and under no folder `paths: allow:` lists."),
    ("literal-password", W, "A connection URL holds its password as written; use `${ENV}` for it."),
    ("literal-secret", E, "A secret written as a literal value; the plan carries secrets only as references."),
    ("file-exists", E, "An output file exists; pass --force to overwrite it."),
    ("missing-input", E, "A pipeline stage runs after another but reads no input, and its prompts need fields of a row."),
    # Schedules and conditions
    ("invalid-cron", E, "A cron expression that croniter does not accept."),
    ("unknown-timezone", E, "A timezone that is not an IANA zone name."),
    ("invalid-time", E, "A time of day that is not HH:MM."),
    ("condition-table", E, "A `data_available` condition counts rows of a table that the job's database input does not read."),
    # Expressions
    ("expression-syntax", E, "A `${...}` substitution or condition that does not parse."),
    ("unknown-parameter", E, "A template substitution names no declared parameter but is close to one."),
    ("unknown-metric", E, "An alert condition names a metric that does not exist."),
    ("unknown-step", E, "A stack `when` names a step that does not exist or runs later."),
    ("literal-required", E, "A substitution where a name must be written as it is (a pipeline's job names)."),
    ("unset-variable", E, "A substitution names a variable that is not set and has no default."),
    ("unsafe-substitution", E, "A substitution in a query cannot be bound (an identifier that breaks the rule, a dollar-quoted string), or its dialect is unknown."),
    # Prompt modules
    ("template-syntax", E, "A Jinja syntax error in a prompt module's template."),
    ("template-unsafe", E, "A prompt template does what the runtime's sandbox refuses (`__class__`, changing a value)."),
    ("invalid-output-schema", E, "A prompt module's output schema is not a valid JSON Schema."),
    ("unknown-template-variable", W, "A prompt template reads an undeclared name close to a declared one."),
    ("strict-schema-changed", N, "Strict structured outputs are sent a changed form of an output schema (optional properties made nullable, keywords dropped)."),
    ("strict-schema-unsupported", W, "An output schema that strict structured outputs cannot express; it is sent with `strict: false`."),
    # The tool itself
    ("internal-error", E, "Sleipnir failed; please report it with the output of --debug."),
)


def lookup(name: str) -> Code:
    """The registered code `name`; an unregistered code is a programming error."""
    try:
        return CODES[name]
    except KeyError:
        raise KeyError(f"diagnostic code {name!r} is not registered in compiler/codes.py") from None
