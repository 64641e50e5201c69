"""Setting one value in a job body by a profile key or a `--param` key: the shorthand keys and dotted paths.

Profiles check with it now; `plan` and `run` apply profiles and `--param` overrides through the same function,
so a key means the same thing everywhere.
"""

from __future__ import annotations

import copy
from typing import Any

PROMPT_SHORTHAND = ("model", "temperature", "max_tokens")
"""Keys that set the same value on every prompt call of the job (prompt entries and phases with a prompt)."""
INPUT_SHORTHAND = {"batch_size": ("input", "batch_size")}
"""Keys that stand for a longer path."""


class OverlayError(Exception):
    """A key whose path leads nowhere: a list entry that does not exist, or a step through a scalar."""

    def __init__(self, message: str, *, step: str = "", candidates: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.step = step
        """The path segment that led nowhere."""
        self.candidates = candidates


def prompt_targets(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The mappings a prompt shorthand key sets: every prompt entry, and every phase that names a prompt."""
    prompts = [p for p in body.get("prompts") or [] if isinstance(p, dict)]
    phases = [p for p in body.get("phases") or [] if isinstance(p, dict) and "prompt" in p]
    return prompts + phases


def apply(body: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `body` with `key` set to `value`; a mapping value is deep-merged into a mapping already there."""
    result = copy.deepcopy(body)
    if key in PROMPT_SHORTHAND:
        for target in prompt_targets(result):
            target[key] = copy.deepcopy(value)
        return result
    steps = INPUT_SHORTHAND.get(key) or tuple(key.split("."))
    if any(step == "" for step in steps):
        raise OverlayError(f"`{key}` is not a dotted path")
    container: Any = result
    for index, step in enumerate(steps[:-1]):
        container = _step_into(container, step, steps[:index])
    _set(container, steps[-1], value, steps[:-1])
    return result


def _where(steps: tuple[str, ...]) -> str:
    return ".".join(("job", *steps))


def _select(items: list[Any], step: str, steps: tuple[str, ...]) -> int:
    """The index of the list entry `step` names: by its `name` or `id`, or by position."""
    for index, item in enumerate(items):
        if isinstance(item, dict) and step in (item.get("name"), item.get("id")):
            return index
    if step.isdigit() and int(step) < len(items):
        return int(step)
    names = tuple(str(i.get("name") or i.get("id")) for i in items if isinstance(i, dict))
    raise OverlayError(f"no entry `{step}` in {_where(steps)}", step=step, candidates=names)


def _step_into(container: Any, step: str, steps: tuple[str, ...]) -> Any:
    if isinstance(container, list):
        return container[_select(container, step, steps)]
    if isinstance(container, dict):
        if not isinstance(container.get(step), dict | list):
            if step in container and container[step] is not None:
                raise OverlayError(f"{_where((*steps, step))} is a single value: a path cannot go inside it")
            container[step] = {}
        return container[step]
    raise OverlayError(f"{_where(steps)} is a single value: a path cannot go inside it")


def _set(container: Any, step: str, value: Any, steps: tuple[str, ...]) -> None:
    if isinstance(container, list):
        index = _select(container, step, steps)
        container[index] = _merged(container[index], value)
    elif isinstance(container, dict):
        container[step] = _merged(container.get(step), value)
    else:
        raise OverlayError(f"{_where(steps)} is a single value: a path cannot go inside it")


def _merged(old: Any, new: Any) -> Any:
    if isinstance(old, dict) and isinstance(new, dict):
        merged = dict(old)
        for key, value in new.items():
            merged[key] = _merged(old.get(key), value)
        return merged
    return copy.deepcopy(new)
