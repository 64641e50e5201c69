"""Sleipnir: describe work done by large language models as code.

The public API is small; the CLI (`sleipnir`) and this module are thin facades over `sleipnir.compiler` and
`sleipnir.runtime`. Names are imported when first used (module `__getattr__`), so `import sleipnir` costs
nothing until a name is used, and `sleipnir check` never imports the runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .compiler import CheckResult, check
    from .executor import AsyncJobExecutor, CompileError, JobExecutor

__all__ = ["AsyncJobExecutor", "CheckResult", "CompileError", "JobExecutor", "check"]
__version__ = "0.1.0"

_HOMES = {
    "AsyncJobExecutor": ".executor",
    "CheckResult": ".compiler",
    "CompileError": ".executor",
    "JobExecutor": ".executor",
    "check": ".compiler",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
