"""Secrets are resolved here, when a call or a connection needs them, and nowhere else."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..compiler.ir import Secret
from ..compiler.ir.expressions import parse_substitutions, resolve


class MissingSecret(Exception):
    """A secret's environment variable is not set now (it was when the plan was made, or the plan is old)."""


def reveal(value: Any, environ: Mapping[str, str]) -> Any:
    """`value` with a `Secret` resolved from the environment; anything else as it is."""
    if not isinstance(value, Secret):
        return value
    try:
        return resolve(parse_substitutions(value.ref), environ.get)
    except Exception as error:
        names = ", ".join(value.names)
        raise MissingSecret(f"the secret from {names} is not set in the environment") from error


def reveal_all(value: Any, environ: Mapping[str, str]) -> Any:
    """`value` with every nested `Secret` resolved (mappings and lists become plain dicts and lists)."""
    if isinstance(value, Mapping):
        return {k: reveal_all(v, environ) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [reveal_all(v, environ) for v in value]
    return reveal(value, environ)
