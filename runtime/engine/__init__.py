"""Running one plan: `job.JobRun` and its collaborators (the reader, the item worker, the writer, the
gatherer), the rate limiter and retries (`limits.py`), the run state (`state.py`, `context.py`), the run ledger
(`ledger.py`), the response cache (`cache.py`), prompt rendering (`render.py`), and pipelines (`pipeline.py`).

The local asyncio engine is the one engine today; the unit of work a distributed engine would take is a batch
of items (`writer.Batch`), kept serialisable for that.
"""
