"""Values set from outside a job file: `--param`, `--param-file`, `SLEIPNIR_PARAM_*` and profiles.

Each becomes an `Override`: a key (a shorthand, a dotted path, or a parameter name), a value and its origin. The
planner applies them lowest first (profile, environment, files, then `--param`), so a later one wins key by key.
Values from the command line and the environment are read as YAML scalars: `0.5` is a number, `true` a boolean,
`"0.5"` the string `0.5`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .diagnostics import Diagnostics
from .loader import child, decode, load, node_span
from .span import Span

ENV_PREFIX = "SLEIPNIR_PARAM_"


@dataclass(frozen=True, slots=True, kw_only=True)
class Override:
    """One value set from outside the job file."""

    key: str
    """A shorthand (`model`, `batch_size`), a dotted path (`input.batch_size`) or a parameter name."""
    value: Any
    origin: str
    """Where it came from, as `plan` prints it: `--param`, `--param-file f.yaml`, `env SLEIPNIR_PARAM_X`,
    `profile production`."""
    span: Span | None = None
    """The place in a file (a profile entry, a `--param-file` line); None for the command line and environment."""


class ParamSyntaxError(ValueError):
    """A `--param` that is not `KEY=VALUE`."""


def scalar(text: str) -> Any:
    """`text` read as a YAML scalar; text YAML cannot read as one value stays a string."""
    try:
        value = yaml.load(text, Loader=yaml.CSafeLoader)
    except yaml.YAMLError:
        return text
    if value is None and text.strip() not in ("null", "~", "Null", "NULL"):
        return text
    return value


def parse_param(text: str, *, origin: str = "--param") -> Override:
    """`KEY=VALUE` from the command line as an override; the value is a YAML scalar."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ParamSyntaxError(f"`--param {text}` is not KEY=VALUE")
    return Override(key=key, value=scalar(value), origin=origin)


def from_environment(environ: Mapping[str, str]) -> list[Override]:
    """`SLEIPNIR_PARAM_<KEY>=VALUE` variables, sorted by name: the key lower-cased, `__` standing for `.`."""
    found = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            key = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            found.append(Override(key=key, value=scalar(environ[name]), origin=f"env {name}"))
    return found


def read_param_file(path: Path, sink: Diagnostics) -> list[Override]:
    """The overrides of a `--param-file`: a YAML mapping of keys to values. Problems go to `sink`."""
    file = str(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        sink.emit("io-error", f"cannot read parameter file: {error.strerror or error}", None, file=file)
        return []
    text = decode(data, file, sink)
    if text is None:
        return []
    documents = load(text, file, sink)
    if not documents:
        return []
    document = documents[0]
    if not isinstance(document.value, dict):
        sink.emit(
            "invalid-param",
            "a parameter file must be a mapping of keys to values",
            node_span(file, document.root),
            help="write one `key: value` per line, such as `input.batch_size: 50`",
        )
        return []
    overrides = []
    for key, value in document.value.items():
        located = child(document.root, key)
        span = node_span(file, located[0]) if located else None
        overrides.append(Override(key=str(key), value=value, origin=f"--param-file {file}", span=span))
    return overrides


def profile_overrides(name: str, overlay: Mapping[str, Any], spans: Iterable[Span | None]) -> list[Override]:
    """A profile's overlay as overrides, each at its line in the job file."""
    return [
        Override(key=str(key), value=value, origin=f"profile {name}", span=span)
        for (key, value), span in zip(overlay.items(), spans, strict=True)
    ]


def command_line(
    params: Sequence[str], param_files: Sequence[str], environ: Mapping[str, str], sink: Diagnostics
) -> list[Override]:
    """Every override from outside the files, lowest precedence first: environment, `--param-file`s in order,
    then `--param`s in order (a `--param` wins over every file, wherever it stands)."""
    overrides = from_environment(environ)
    for file in param_files:
        overrides.extend(read_param_file(Path(file), sink))
    for text in params:
        try:
            overrides.append(parse_param(text))
        except ParamSyntaxError as error:
            sink.emit(
                "invalid-param",
                str(error),
                None,
                file="<command line>",
                help="write `--param KEY=VALUE`, such as `--param temperature=0.2`",
            )
    return overrides
