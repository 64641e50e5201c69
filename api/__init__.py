"""Sleipnir: describe work done by large language models as code.

The public API is small; the CLI (`sleipnir`) and this module are thin facades over `sleipnir.compiler` and
`sleipnir.runtime`.
"""

from .compiler import CheckResult, check
from .executor import AsyncJobExecutor, CompileError, JobExecutor

__all__ = ["AsyncJobExecutor", "CheckResult", "CompileError", "JobExecutor", "check"]
__version__ = "0.1.0"
