"""The `dask` engine: a job's input in partitions, each one Dask task, run on a Dask distributed cluster.

`driver.distribute` is what a `JobRun` does instead of streaming the items itself when its engine is `dask`;
`worker.run_partition` is the task each worker runs. `dask.distributed` is an optional dependency
(`pip install 'sleipnir[dask]'`), imported only here and only when a run uses the engine.
"""

from __future__ import annotations

from typing import Any


def dask() -> Any:
    """The `distributed` module (untyped), or a clear error when the optional dependency is missing."""
    try:
        import distributed
    except ImportError as exc:
        raise ValueError("the dask engine needs dask.distributed: pip install 'sleipnir[dask]'") from exc
    module: Any = distributed
    return module
