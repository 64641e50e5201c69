"""Sleipnir's compiler: YAML text -> positioned nodes -> validated documents -> (later) the typed plan.

It knows nothing of asyncio, HTTP or databases. `check` and `CheckResult` are imported when first used (module
`__getattr__`), so that importing one of its modules (`compiler.ir` for the runtime, `compiler.snapshot` for a
replayed `check`) does not import the whole front end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checker import CheckResult, check

__all__ = ["CheckResult", "check"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import checker

    value = getattr(checker, name)
    globals()[name] = value
    return value
