"""How long `sleipnir run-job` takes against servers that misbehave, against the same runs without faults.

Whole processes, as a user runs them (`python -m sleipnir run-job JOB --json --fresh`), against the loopback
server `tests/llm_server.py` in its own process; a JSON Lines source and sink, the SQLite ledger, the default
batch strategy and retry settings raised to 8 (a server failing a third of its calls would otherwise fail an
item in a few hundred four times in a row). Each case is measured `--repeat` times, interleaved; medians shown.

1. Faults: 300 rows at concurrency 10, server latency 50 ms, without faults and with a 429 (`Retry-After: 0.2`)
   on every 7th request, a 500 on every 11th and a dropped connection on every 13th. Goal: at most 3x the time.
2. A real limit: 200 rows at concurrency 20 against a token bucket of R = 600 requests a minute (429 with
   `Retry-After` beyond it). Goals: within 1.5x of 200 / R, and 429s under 30% of the calls.

The ratios are printed for the process's wall time (start-up included) and for the run's own
`execution_time`. There are no assertions on time; a run that does not write every row once fails the benchmark.

    python benchmarks/faults.py --repeat 3
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FAULT_GOAL = 3.0
LIMIT_GOAL = 1.5
REFUSED_GOAL = 0.3
JOB = """\
job:
  name: score
  input:
    path: data/items.jsonl
    key: id
    batch_size: 50
  prompts:
    - name: sentiment_analyzer
      version: 2.1.0
      model: gpt-4o-mini
      endpoint: {endpoint}
  output:
    path: out/scores.jsonl
  execution:
    concurrency: {concurrency}
  error_handling:
    on_prompt_failure:
      strategy: retry
      max_retries: 8
"""


def server_module() -> Any:
    spec = importlib.util.spec_from_file_location("llm_server", REPO / "tests" / "llm_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "tests"))
    sys.modules["llm_server"] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True, slots=True)
class Run:
    wall: float
    run: float
    calls: int
    refused: int


def run_job(server: Any, rows: int, concurrency: int) -> Run:
    """One fresh `run-job` process against `server`; fails unless every row is written exactly once."""
    with tempfile.TemporaryDirectory(prefix="sleipnir-faults-") as folder:
        root = Path(folder)
        (root / "sleipnir.yaml").write_text("name: faults\n", encoding="utf-8")
        (root / "jobs").mkdir()
        (root / "jobs" / "score.yaml").write_text(JOB.format(endpoint=server.base_url, concurrency=concurrency))
        (root / "data").mkdir()
        keys = [f"k{n:04d}" for n in range(rows)]
        lines = (json.dumps({"id": key, "text": f"review {key}: a fine kettle"}) for key in keys)
        (root / "data" / "items.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        server.reset()
        env = {"PATH": "", "NO_COLOR": "1", "OPENAI_API_KEY": "sk-benchmark"}
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "sleipnir", "run-job", "score", "--json", "--fresh"],
            cwd=root, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        wall = time.perf_counter() - start
        assert done.returncode == 0, done.stderr[-2000:]
        written = [json.loads(line)["id"] for line in (root / "out" / "scores.jsonl").read_text().splitlines()]
        assert sorted(written) == keys, "every row exactly once"
        seen = server.requests(0)
        result = json.loads(done.stdout)
        return Run(wall, result["metrics"]["execution_time"], seen["count"], seen["statuses"].get("429", 0))


def measure(repeat: int = 1) -> dict[str, list[Run]]:
    module = server_module()
    runs: dict[str, list[Run]] = {"clean": [], "faulty": [], "limited": []}
    with (
        module.LLMServer(latency=0.05) as clean,
        module.LLMServer(latency=0.05, every=("429:7:0.2", "500:11", "drop:13")) as faulty,
        module.LLMServer(latency=0.01, rpm=600) as limited,
    ):
        for _ in range(repeat):
            runs["clean"].append(run_job(clean, 300, 10))
            runs["faulty"].append(run_job(faulty, 300, 10))
            runs["limited"].append(run_job(limited, 200, 20))
    return runs


def verdict(ok: bool) -> str:
    return "meets" if ok else "misses"


def report(runs: dict[str, list[Run]]) -> None:
    def median(name: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs[name])

    print(f"\nfaults (whole processes, medians of {len(runs['clean'])}):")
    for field, what in (("wall", "process wall time"), ("run", "run execution_time")):
        clean, faulty = median("clean", field), median("faulty", field)
        ratio = faulty / clean
        print(
            f"  300 rows c=10, 429/7th 500/11th drop/13th vs none ({what}): {faulty:.2f} s vs {clean:.2f} s = "
            f"{ratio:.2f}x ({verdict(ratio <= FAULT_GOAL)} the goal of at most {FAULT_GOAL}x)"
        )
    ideal = 200 / (600 / 60)
    for field, what in (("wall", "process wall time"), ("run", "run execution_time")):
        took = median("limited", field)
        print(
            f"  200 rows c=20 against a 600/min token bucket ({what}): {took:.2f} s = {took / ideal:.2f}x of "
            f"200/R = {ideal:.0f} s ({verdict(took <= LIMIT_GOAL * ideal)} the goal of at most {LIMIT_GOAL}x)"
        )
    calls, refused = median("limited", "calls"), median("limited", "refused")
    print(
        f"  429s against the token bucket: {refused:.0f} of {calls:.0f} calls = {refused / calls:.1%} "
        f"({verdict(refused / calls < REFUSED_GOAL)} the goal of under {REFUSED_GOAL:.0%})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    report(measure(args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
