"""Sleipnir's compiler: YAML text -> positioned nodes -> validated documents -> (later) the typed plan.

It knows nothing of asyncio, HTTP or databases.
"""

from .checker import CheckResult, check

__all__ = ["CheckResult", "check"]
