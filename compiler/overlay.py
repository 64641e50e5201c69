"""Setting one value in a job body by a profile key or a `--param` key: the shorthand keys and dotted paths.

Profiles check with it now; `plan` and `run` apply profiles and `--param` overrides through the same function,
so a key means the same thing everywhere.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

PROMPT_SHORTHAND = ("model", "temperature", "max_tokens")
"""Keys that set the same value on every prompt call of the job (prompt entries and phases with a prompt)."""
Place = tuple[str | int, ...]
"""A concrete place in a job body: keys, and list entries by index."""

INPUT_SHORTHAND = {"batch_size": ("input", "batch_size")}
"""Keys that stand for a longer path."""


@functools.cache
def job_keys() -> frozenset[str]:
    """The keys a job body may have (the document model is imported when an override first asks)."""
    from .model import JOB

    return frozenset(key.name for key in JOB.children())


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
    return [target for _, _, target in prompt_target_places(body)]


def prompt_target_places(body: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """Each prompt entry and each phase that names a prompt, with its list key and index."""
    found = []
    for list_key in ("prompts", "phases"):
        entries = body.get(list_key)
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            if isinstance(entry, dict) and (list_key == "prompts" or "prompt" in entry):
                found.append((list_key, index, entry))
    return found


def apply(body: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `body` with `key` set to `value`; a mapping value is deep-merged into a mapping already there."""
    return apply_tracked(body, key, value)[0]


def apply_tracked(body: dict[str, Any], key: str, value: Any) -> tuple[dict[str, Any], list[Place]]:
    """`apply`, and the concrete places it set (list entries by index), one per leaf of `value`, so that each
    resolved value can say where it came from."""
    result = plain_copy(body)
    if key in PROMPT_SHORTHAND:
        places: list[Place] = []
        for list_key, index, target in prompt_target_places(result):
            target[key] = copy.deepcopy(value)
            places.append((list_key, index, key))
        return result, places
    steps = INPUT_SHORTHAND.get(key) or tuple(key.split("."))
    if any(step == "" for step in steps):
        raise OverlayError(f"`{key}` is not a dotted path")
    container: Any = result
    concrete: list[str | int] = []
    for index, step in enumerate(steps[:-1]):
        container, taken = _step_into(container, step, steps[:index])
        concrete.append(taken)
    last = _set(container, steps[-1], value, steps[:-1])
    return result, [(*concrete, last, *leaf) for leaf in leaves(value)]


def plain_copy(value: Any) -> Any:
    """A deep copy of YAML data (mappings, lists, scalars), several times faster than `copy.deepcopy`."""
    if type(value) is dict:
        return {k: plain_copy(v) for k, v in value.items()}
    if type(value) is list:
        return [plain_copy(v) for v in value]
    return value


def leaves(value: Any) -> list[Place]:
    """The relative places of every leaf of `value` (a mapping's keys, recursively; anything else is a leaf)."""
    if isinstance(value, dict) and value:
        return [(key, *rest) for key, item in value.items() for rest in leaves(item)]
    return [()]


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


def _step_into(container: Any, step: str, steps: tuple[str, ...]) -> tuple[Any, str | int]:
    if isinstance(container, list):
        index = _select(container, step, steps)
        return container[index], index
    if isinstance(container, dict):
        if not isinstance(container.get(step), dict | list):
            if step in container and container[step] is not None:
                raise OverlayError(f"{_where((*steps, step))} is a single value: a path cannot go inside it")
            container[step] = {}
        return container[step], step
    raise OverlayError(f"{_where(steps)} is a single value: a path cannot go inside it")


def _set(container: Any, step: str, value: Any, steps: tuple[str, ...]) -> str | int:
    if isinstance(container, list):
        index = _select(container, step, steps)
        container[index] = _merged(container[index], value)
        return index
    if isinstance(container, dict):
        container[step] = _merged(container.get(step), value)
        return step
    raise OverlayError(f"{_where(steps)} is a single value: a path cannot go inside it")


def _merged(old: Any, new: Any) -> Any:
    if isinstance(old, dict) and isinstance(new, dict):
        merged = dict(old)
        for key, value in new.items():
            merged[key] = _merged(old.get(key), value)
        return merged
    return copy.deepcopy(new)
