"""The compiler at editor speed (issue 14): every acceptance ratio, measured side by side in one run.

Each figure is a whole process, as a user, an editor or a pre-commit hook runs it: CPU time (user + system,
from `wait4`) and peak RSS, median of interleaved rounds so that load drift hits every command alike. The
workspace is benchmarks/compile.py's: 2,000 jobs in files of 10 to 50, and a pipeline over all of them.

    python benchmarks/editor.py [--jobs 2000] [--repeat 5]

| ratio | goal |
|---|---|
| `sleipnir --help` / `python -c "import click"` | <= 3 |
| `sleipnir check`, 1-job workspace / `python -c "import yaml, jinja2, click"` | <= 2 |
| cold `check`, 2,000 jobs / a bare C-loader `yaml.load` of the same files, as a process | <= 1.5 |
| warm `check` after touching one file / cold `check` | <= 0.15 |
| `plan <one job>` / cold `check` | <= 0.5 |
| `plan <2,000-job pipeline> --format json` / the bare load | <= 3 |
| its peak RSS / `check`'s | <= 1.5 |
| language server: a semantic diagnostic after a change, 50 jobs | <= 200 ms |

No assertions on time: the run fails only if the workspace does not check clean.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from compile import generate, job_name  # noqa: E402
from lsp_client import Client, diagnostics_for, job_text, make_workspace  # noqa: E402

PYTHON = sys.executable
SLEIPNIR = [PYTHON, "-m", "sleipnir"]


@dataclass
class Sample:
    cpu: float
    rss_mib: float


ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
"""Every command runs as a user's does, with its modules' bytecode cached: a shell that sets
PYTHONDONTWRITEBYTECODE would make each process compile Sleipnir's modules again (about 0.3 s of CPU here)."""


def measure(argv: list[str], cwd: Path, before: Callable[[], None] | None = None) -> Sample:
    """Run `argv` to the end; its CPU seconds and peak RSS."""
    if before is not None:
        before()
    process = subprocess.Popen(argv, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return Sample(cpu=usage.ru_utime + usage.ru_stime, rss_mib=usage.ru_maxrss / 1024)


class Bench:
    """Named commands, run round-robin `repeat` times."""

    def __init__(self) -> None:
        self.commands: dict[str, tuple[list[str], Path, Callable[[], None] | None]] = {}
        self.samples: dict[str, list[Sample]] = {}

    def add(self, name: str, argv: list[str], cwd: Path, before: Callable[[], None] | None = None) -> None:
        self.commands[name] = (argv, cwd, before)
        self.samples[name] = []

    def run(self, repeat: int) -> None:
        for round_ in range(repeat):
            for name, (argv, cwd, before) in self.commands.items():
                self.samples[name].append(measure(argv, cwd, before))
            print(f"  round {round_ + 1}/{repeat} done", file=sys.stderr)

    def cpu(self, name: str) -> float:
        return statistics.median(s.cpu for s in self.samples[name])

    def rss(self, name: str) -> float:
        return statistics.median(s.rss_mib for s in self.samples[name])


def lsp_latency(root: Path, changes: int) -> list[float]:
    """Seconds from sending a change to receiving the semantic diagnostic it causes, `changes` times."""
    root.mkdir()
    make_workspace(root, 50)
    client = Client(root)
    latencies = []
    try:
        client.start(root)
        batch = root / "jobs" / "batch_01.yaml"
        original = batch.read_text(encoding="utf-8")
        client.open(batch)
        version = 1
        for number in range(changes):
            bad = original.replace(job_text(12), job_text(12, ("classifier", f"9.9.{number}")))
            version += 1
            sent = client.change(batch, bad, version)
            arrived, _ = client.wait_for(diagnostics_for(batch, "unknown-prompt-version"))
            latencies.append(arrived - sent)
            version += 1
            client.change(batch, original, version)
            client.wait_for(diagnostics_for(batch))
    finally:
        client.close()
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sleipnir-editor-") as folder:
        base = Path(folder)
        big = base / "big"
        big.mkdir()
        files = generate(big, args.jobs)
        one = base / "one"
        one.mkdir()
        (one / "sleipnir.yaml").write_text("name: one\n", encoding="utf-8")
        (one / "job.yaml").write_text(job_text(1), encoding="utf-8")
        listing = base / "files.txt"
        listing.write_text("\n".join(str(f) for f in files), encoding="utf-8")
        bare = (
            "import yaml, sys\n"
            f"for p in open({str(listing)!r}).read().split():\n"
            "    list(yaml.load_all(open(p, encoding='utf-8').read(), Loader=yaml.CSafeLoader))\n"
        )
        # The first check also writes the bytecode cache that every measured process then reads.
        cold_check = subprocess.run(
            [*SLEIPNIR, "check", "--no-cache"], cwd=big, env=ENV, capture_output=True, text=True
        )
        if cold_check.returncode != 0:
            print(cold_check.stdout[-3000:], file=sys.stderr)
            return 1
        touched = files[len(files) // 2]
        text = touched.read_text(encoding="utf-8")
        flip = [0]

        def touch() -> None:
            # An edit that changes the text (and so the digest), as a save in an editor does.
            flip[0] ^= 1
            touched.write_text(text + ("# touched\n" if flip[0] else ""), encoding="utf-8")

        def no_cache() -> None:
            shutil.rmtree(big / ".sleipnir" / "cache", ignore_errors=True)

        def warm_one() -> None:
            subprocess.run([*SLEIPNIR, "check"], cwd=one, env=ENV, capture_output=True, check=False)

        bench = Bench()
        bench.add("python -c 'import click'", [PYTHON, "-c", "import click"], base)
        bench.add("sleipnir --help", [*SLEIPNIR, "--help"], base)
        bench.add("python -c 'import yaml, jinja2, click'", [PYTHON, "-c", "import yaml, jinja2, click"], base)
        bench.add("check, 1 job (cache warm)", [*SLEIPNIR, "check"], one, warm_one)
        bench.add("check, 1 job --no-cache", [*SLEIPNIR, "check", "--no-cache"], one)
        bench.add("bare yaml.load, 2,000 jobs", [PYTHON, "-c", bare], base)
        bench.add("check, cold (no cache entries)", [*SLEIPNIR, "check"], big, no_cache)
        bench.add("check --no-cache", [*SLEIPNIR, "check", "--no-cache"], big)
        bench.add("check, warm, one file touched", [*SLEIPNIR, "check"], big, touch)
        bench.add("plan <one job> (cache warm)", [*SLEIPNIR, "plan", job_name(7), "--format", "json"], big)
        bench.add("plan <one job> --no-cache", [*SLEIPNIR, "plan", job_name(7), "--no-cache"], big)
        bench.add(
            "plan <pipeline> --format json",
            [*SLEIPNIR, "plan", "nightly_everything", "--format", "json"],
            big,
        )
        lines = sum(t.count("\n") for t in (f.read_text(encoding="utf-8") for f in files))
        print(f"workspace: {args.jobs} jobs in {len(files)} files, {lines:,} lines; python {sys.version.split()[0]}")
        started = time.perf_counter()
        bench.run(args.repeat)
        latencies = lsp_latency(base / "lsp", 10)
        print(f"measured in {time.perf_counter() - started:.0f} s; CPU medians of {args.repeat} interleaved rounds\n")

    print(f"{'command':<40} {'CPU ms':>9} {'peak RSS MiB':>13}")
    for name in bench.commands:
        print(f"{name:<40} {bench.cpu(name) * 1000:9.0f} {bench.rss(name):13.0f}")
    cold = bench.cpu("check, cold (no cache entries)")
    rows = [
        ("--help / import click", bench.cpu("sleipnir --help") / bench.cpu("python -c 'import click'"), 3.0),
        (
            "check 1 job / import yaml, jinja2, click",
            bench.cpu("check, 1 job (cache warm)") / bench.cpu("python -c 'import yaml, jinja2, click'"),
            2.0,
        ),
        (
            "check 1 job --no-cache / same",
            bench.cpu("check, 1 job --no-cache") / bench.cpu("python -c 'import yaml, jinja2, click'"),
            2.0,
        ),
        ("cold check / bare load", cold / bench.cpu("bare yaml.load, 2,000 jobs"), 1.5),
        ("check --no-cache / bare load", bench.cpu("check --no-cache") / bench.cpu("bare yaml.load, 2,000 jobs"), 1.5),
        ("warm check, one file touched / cold", bench.cpu("check, warm, one file touched") / cold, 0.15),
        ("plan <one job> / cold check", bench.cpu("plan <one job> (cache warm)") / cold, 0.5),
        ("plan <one job> --no-cache / cold check", bench.cpu("plan <one job> --no-cache") / cold, 0.5),
        (
            "plan <pipeline> json / bare load",
            bench.cpu("plan <pipeline> --format json") / bench.cpu("bare yaml.load, 2,000 jobs"),
            3.0,
        ),
        (
            "plan <pipeline> json peak RSS / check's",
            bench.rss("plan <pipeline> --format json") / bench.rss("check, cold (no cache entries)"),
            1.5,
        ),
    ]
    print(f"\n{'ratio':<42} {'measured':>9} {'goal':>7}")
    for what, ratio, goal in rows:
        print(f"{what:<42} {ratio:8.2f}x {'<=':>3}{goal:4}x  {'meets' if ratio <= goal else 'misses'}")
    median = statistics.median(latencies) * 1000
    print(
        f"{'language server: diagnostic after a change':<42} {median:7.0f}ms {'<=':>3} 200ms  "
        f"{'meets' if median <= 200 else 'misses'}  (median of {len(latencies)}, max {max(latencies) * 1000:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
