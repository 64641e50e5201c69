"""How fast are `sleipnir check` and `sleipnir plan` on a large workspace, against a bare C-loader `yaml.load`?

Generates a workspace of 2,000 realistic jobs (about 42,000 YAML lines) in files of 10 to 50 jobs, plus one
pipeline over all of them, into a temporary folder. Then times, best of 3, `sleipnir.compiler.check`, the plan of
the pipeline (check, then every job resolved and lowered into one typed DAG), and a bare
`yaml.load_all(text, Loader=yaml.CSafeLoader)` of every file, and prints each ratio against its goal.

    python benchmarks/compile.py [--jobs 2000] [--repeat 3]

There are no assertions on time; the run fails only if the generated workspace does not check clean, because
then the benchmark would not measure the real work.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from sleipnir.compiler.checker import check
from sleipnir.compiler.planner import plan

GOAL = 1.5
"""`check` should take at most this many times as long as a bare `yaml.load` of the same files (issue 2)."""
PLAN_GOAL = 2.0
"""`plan` of the 2,000-job pipeline should take at most this many times as long (issue 3)."""

CHAIN = 10
"""Pipeline entries form chains of this many jobs, each depending on the one before."""

_PROMPT_CHAINS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("text_cleaner", "1.0.0"), ("sentiment_analyzer", "2.1.0")),
    (("classifier", "1.0.0"),),
    (("preprocessor", "1.0.0"), ("analyzer", "2.0.0")),
    (("sentiment_analyzer", "2.0.0"),),
    (("text_cleaner", "1.0.0"), ("classifier", "1.0.0")),
    (("analyzer", "2.0.0"), ("validator", "1.0.0")),
)
_SUBJECTS = ("reviews", "tickets", "surveys", "emails", "chats", "returns", "invoices", "posts")
_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4", "gpt-3.5-turbo")
_ZONES = ("UTC", "Europe/Oslo", "America/New_York", "Asia/Tokyo")


def job_yaml(index: int, rng: random.Random) -> str:
    """One job of about 21 lines, varied the way a real workspace varies."""
    subject = _SUBJECTS[index % len(_SUBJECTS)]
    name = f"{subject}_job_{index:04d}"
    lines = [
        "job:",
        f"  name: {name}",
        f"  description: Analyse batch {index} of customer {subject}",
        "  input:",
        "    source: file",
        f"    path: data/{subject}/{index:04d}.jsonl",
        f"    batch_size: {rng.choice((25, 50, 100, 200))}",
        "  prompts:",
    ]
    chain = _PROMPT_CHAINS[index % len(_PROMPT_CHAINS)]
    for position, (prompt, version) in enumerate(chain, start=1):
        lines += [f"    - name: {prompt}", f"      version: {version}"]
        if position == len(chain):
            lines += [
                f"      model: {rng.choice(_MODELS)}",
                f"      temperature: {rng.choice((0, 0.2, 0.5, 0.7))}",
            ]
    lines += [
        "  output:",
        f"    path: output/{name}.jsonl",
        "  execution:",
        f"    concurrency: {rng.choice((4, 8, 16))}",
        f"    retry_on_failure: {rng.choice((0, 2, 3))}",
    ]
    if index % 3 == 0:
        lines += [
            "  error_handling:",
            "    on_prompt_failure: {strategy: retry, max_retries: 3, backoff: exponential}",
        ]
    if index % 5 == 0:
        lines += [
            "  schedule:",
            f'    cron: "{rng.randrange(60)} {rng.randrange(24)} * * *"',
            f"    timezone: {rng.choice(_ZONES)}",
        ]
    return "\n".join(lines) + "\n"


def job_name(index: int) -> str:
    return f"{_SUBJECTS[index % len(_SUBJECTS)]}_job_{index:04d}"


def pipeline_yaml(jobs: int) -> str:
    lines = [
        "pipeline:",
        "  name: nightly_everything",
        "  version: 1.0.0",
        f"  description: All {jobs} jobs, in chains of {CHAIN}",
        "  jobs:",
    ]
    for index in range(jobs):
        depends = f", depends_on: [j{index - 1:04d}]" if index % CHAIN else ""
        lines.append(f"    - {{id: j{index:04d}, name: {job_name(index)}{depends}}}")
    return "\n".join(lines) + "\n"


def generate(root: Path, jobs: int, seed: int = 2) -> list[Path]:
    """Write the workspace under `root`; return its YAML files."""
    rng = random.Random(seed)
    (root / "sleipnir.yaml").write_text(
        "name: benchmark\ndatabase: .sleipnir/benchmark.db\n", encoding="utf-8"
    )
    (root / "jobs").mkdir()
    files: list[Path] = []
    index = 0
    while index < jobs:
        count = min(rng.randint(10, 50), jobs - index)
        path = root / "jobs" / f"batch_{len(files):03d}.yaml"
        path.write_text("---\n".join(job_yaml(i, rng) for i in range(index, index + count)), encoding="utf-8")
        files.append(path)
        index += count
    (root / "pipelines").mkdir()
    pipeline = root / "pipelines" / "nightly_everything.yaml"
    pipeline.write_text(pipeline_yaml(jobs), encoding="utf-8")
    files.append(pipeline)
    return files


def best_of(repeat: int, *works: Callable[[], object]) -> list[float]:
    """The best time of each of `works` over `repeat` rounds; rounds interleave them, so load drift hits both."""
    best = [float("inf")] * len(works)
    for _ in range(repeat):
        for index, work in enumerate(works):
            start = time.perf_counter()
            work()
            best[index] = min(best[index], time.perf_counter() - start)
    return best


def bare_load(files: list[Path]) -> None:
    for path in files:
        list(yaml.load_all(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sleipnir-bench-") as folder:
        root = Path(folder)
        files = generate(root, args.jobs)
        texts = [path.read_text(encoding="utf-8") for path in files]
        lines = sum(text.count("\n") for text in texts)
        size = sum(len(text.encode()) for text in texts)
        print(
            f"workspace: {args.jobs} jobs and 1 pipeline in {len(files)} files, {lines:,} lines, {size / 1e6:.2f} MB"
        )
        print(f"python {platform.python_version()}, yaml C loader: {yaml.__with_libyaml__}")

        result = check([str(root)])
        if result.diagnostics:
            for diagnostic in result.diagnostics[:20]:
                span = diagnostic.primary.span if diagnostic.primary else None
                print(
                    f"  {span or diagnostic.path}: [{diagnostic.code}] {diagnostic.message}", file=sys.stderr
                )
        assert not result.diagnostics, (
            f"the generated workspace must check clean: {len(result.diagnostics)} problems"
        )
        checked = sum(d.kind in ("job", "pipeline") for d in result.workspace.documents)
        assert checked == args.jobs + 1, f"expected {args.jobs + 1} documents, checked {checked}"

        planned = plan(str(root / "pipelines" / "nightly_everything.yaml"), environ={})
        assert planned.ok and len(planned.plans) == 1, [d.message for d in planned.diagnostics[:5]]
        assert len(planned.plans[0].nodes) == args.jobs

        baseline, compiled, lowered = best_of(
            args.repeat,
            lambda: bare_load(files),
            lambda: check([str(root)]),
            lambda: plan(str(root / "pipelines" / "nightly_everything.yaml"), environ={}),
        )

    print(f"yaml.load_all, CSafeLoader       (best of {args.repeat}): {baseline * 1000:8.1f} ms")
    print(f"sleipnir check                   (best of {args.repeat}): {compiled * 1000:8.1f} ms")
    print(f"sleipnir plan nightly_everything (best of {args.repeat}): {lowered * 1000:8.1f} ms")
    for what, took, goal in (("check", compiled, GOAL), ("plan", lowered, PLAN_GOAL)):
        ratio = took / baseline
        verdict = "meets" if ratio <= goal else "misses"
        print(f"{what} ratio: {ratio:.2f}x ({verdict} the goal of at most {goal}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
