"""Sleipnir's runtime: executes a compiled plan. It takes the IR (`sleipnir.compiler.ir`) and never reads YAML.

- `engine/`: running one plan (the job run and its collaborators, limits and retries, the ledger);
- `io/`: moving data (sources, sinks, database connections, the dead letter, row counting);
- `providers/`: model providers behind one small seam;
- `serve/`: operating jobs as a service (schedules, triggers, webhooks, alerts, metrics, logs);
- `conditions.py` and `secrets.py`: evaluating the plan's conditions and resolving its secrets, for all of them.
"""
