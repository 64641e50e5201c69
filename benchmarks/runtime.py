"""How fast does the runtime push items through a model endpoint, against bare HTTP client loops?

Starts the loopback OpenAI-compatible server (`tests/llm_server.py`, `--responder fixed`, so replies are
schema-valid and cost no generation) in its own process, once per server latency (0 ms, then 50 ms). At each
latency it runs, in the same process and against the same server:

- the runtime, end to end: a temporary workspace with a JSON Lines source of N items (`id`, `text`), a job of one
  prompt (`sentiment_analyzer` 2.1.0: template rendering, structured outputs, output-schema validation),
  `input.batch_size` 100 with the default `batch_strategy` (`sequential`; `--strategy parallel` for the other),
  `execution.concurrency` 100, the SQLite run ledger and a JSON Lines file sink;
  compiled with `sleipnir.compiler.planner.plan` (not timed) and run with `JobRun(plan, RunOptions(fresh=True))`;
- a bare aiohttp `ClientSession` loop with a semaphore of 100, and a bare `httpx.AsyncClient` loop (its default
  pool), each making the same N calls with the same request bodies (rendered by the runtime's own `PreparedCall`
  and encoded before the clock starts; the bodies the server recorded from the runtime are checked against them),
  each reading the reply and parsing its JSON.

At 0 ms it also pairs runs with and without durable answers, each first in turn, for `--answer-rounds` rounds
(9 by default), and prints the median of their time and CPU ratios: what recording every answer as it arrives
costs (issue 11). It prints items/s for each, the runtime's ratios against its goals (issues 4 and 10), at 50 ms
each one's cycle a call and the server's part of it (`SERVER_WAIT`), and the peak RSS (`VmHWM`)
of the runtime on N and on `--big-items` items, each in a fresh process at 0 ms latency. `--faults` also runs
`benchmarks/faults.py` (whole `sleipnir run-job` processes against misbehaving servers) and prints its ratios.

    python benchmarks/runtime.py                       # 5,000 and 100,000 items, best of 3
    python benchmarks/runtime.py --items 1000 --skip-rss --repeat 1 --faults

There are no assertions on time; the run fails only if a run does not process every item, or the baselines would
not send what the runtime sends, because then the benchmark would not measure the real work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from sleipnir.compiler.ir import Plan, PromptCall
from sleipnir.compiler.planner import plan
from sleipnir.runtime.engine.job import JobRun, RunOptions
from sleipnir.runtime.engine.render import PreparedCall
from sleipnir.runtime.providers.structured import response_format

REPO = Path(__file__).resolve().parent.parent
CONCURRENCY = 100
LATENCIES = (0.0, 0.05)
LATENCY_GOAL = 0.9
"""At 50 ms, the runtime should reach at least this share of concurrency/latency items/s."""
BARE_GOAL = 0.75
"""At 0 ms, the runtime should reach at least this share of the bare aiohttp loop."""
ANSWERS_GOAL = 0.05
"""At 0 ms, recording every answer as it arrives should cost under this share of the run's time."""
RSS_GOAL = 1.2
"""Peak RSS on the big run should be at most this many times that on the small run."""
PROMPT = ("sentiment_analyzer", "2.1.0")
MODEL = "gpt-4o-mini"
ENVIRON = {"OPENAI_API_KEY": "sk-benchmark-not-a-secret"}
"""A key the server does not check: the runtime and the baselines send the same `Authorization` header."""

_OPENINGS = (
    "Arrived two days late and the box was crushed, but",
    "I have used this every morning for a month and",
    "Honestly, after reading the other reviews I expected worse;",
    "The colour is nothing like the photo and",
    "Customer support answered within an hour and",
    "It does what it says on the tin:",
)
_ENDINGS = (
    "the blender itself works perfectly and is quieter than my old one.",
    "I would not buy it again at this price.",
    "it is fine. Nothing special, nothing wrong.",
    "the battery lasts far longer than advertised, which I love.",
    "the strap broke on the third day, so it went back.",
    "my kids use it daily and it still looks new.",
)


def load_server_module() -> Any:
    """`tests/llm_server.py` by path: the tests folder is not a package, and nothing is copied out of it."""
    sys.path.insert(0, str(REPO / "tests"))  # for its sibling `llm_answers`
    spec = importlib.util.spec_from_file_location("llm_server", REPO / "tests" / "llm_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["llm_server"] = module
    spec.loader.exec_module(module)
    return module


def rows(count: int) -> Iterator[dict[str, Any]]:
    """Reviews of about 100 characters, varied so that rendered messages differ the way real ones do."""
    for index in range(count):
        opening = _OPENINGS[index % len(_OPENINGS)]
        ending = _ENDINGS[(index // len(_OPENINGS)) % len(_ENDINGS)]
        yield {"id": index, "product": f"P-{index % 97:03d}", "text": f"Order {index}. {opening} {ending}"}


STRATEGY = {"strategy": "sequential"}
"""The `batch_strategy` the runs use (`--strategy`); `sequential` is the default a user gets."""


def job_yaml(endpoint: str, batch_size: int) -> str:
    strategy = "" if STRATEGY["strategy"] == "sequential" else f"    batch_strategy: {STRATEGY['strategy']}\n"
    name, version = PROMPT
    return f"""job:
  name: score_reviews
  input:
    source: file
    path: data/reviews.jsonl
    format: jsonl
    key: id
    batch_size: {batch_size}
{strategy}  prompts:
    - name: {name}
      version: {version}
      model: {MODEL}
      endpoint: {endpoint}
  output:
    destination: file
    path: output/scores.jsonl
    format: jsonl
  execution:
    concurrency: {CONCURRENCY}
"""


def write_workspace(root: Path, items: int, endpoint: str, batch_size: int) -> Path:
    """The workspace under `root`; returns the job file. Rows are streamed to the file, never held."""
    (root / "sleipnir.yaml").write_text("name: runtime_benchmark\n", encoding="utf-8")
    (root / "data").mkdir(exist_ok=True)
    with open(root / "data" / "reviews.jsonl", "w", encoding="utf-8") as file:
        for row in rows(items):
            file.write(json.dumps(row) + "\n")
    (root / "jobs").mkdir(exist_ok=True)
    job = root / "jobs" / "score_reviews.yaml"
    job.write_text(job_yaml(endpoint, batch_size), encoding="utf-8")
    return job


def compile_job(job: Path) -> Plan:
    result = plan(str(job), environ=ENVIRON)
    problems = [f"{d.code}: {d.message}" for d in result.diagnostics if d.severity == "error"]
    assert result.ok and len(result.plans) == 1, f"the benchmark job must plan clean: {problems}"
    return result.plans[0]


def prompt_node(job_plan: Plan) -> PromptCall:
    return next(n for n in job_plan.nodes if isinstance(n, PromptCall))


def request_bodies(job_plan: Plan, count: int) -> list[bytes]:
    """The bodies the runtime sends for the first `count` rows: its own rendering, OpenAI's request fields."""
    node = prompt_node(job_plan)
    prepared = PreparedCall(node, job_plan.resources.prompt(node.prompt, node.version))
    bodies = []
    for row in rows(count):
        payload: dict[str, Any] = {
            "model": node.model,
            "messages": list(prepared.messages(prepared.context(row, {}))),
        }
        for option in ("temperature", "max_tokens", "top_p"):
            if node.options.get(option) is not None:
                payload[option] = node.options[option]
        if prepared.json_output:
            options = prepared.request_options
            payload["response_format"] = response_format(
                "json_schema", options["schema_name"], options["sent_schema"], options["strict"]
            )
        bodies.append(json.dumps(payload, separators=(",", ":"), default=dict).encode())
    return bodies


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def check_bodies(recorded: list[Any], bodies: list[bytes]) -> None:
    """Every body the server recorded from the runtime is one the baselines send."""
    expected = {canonical(json.loads(body)) for body in bodies}
    strangers = [body for body in recorded if canonical(body) not in expected]
    assert recorded and not strangers, (
        f"the baselines would not send what the runtime sends; the runtime sent e.g. {strangers[:1]}"
    )


# -- the three contestants ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """One measured run: wall seconds and process CPU seconds (every thread) for `items` items."""

    items: int
    wall: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.items / self.wall

    @property
    def cpu_per_item_us(self) -> float:
        return self.cpu / self.items * 1e6


async def _timed(work: Any, items: int) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    await work
    return Timing(items=items, wall=time.perf_counter() - wall, cpu=time.process_time() - cpu)


async def runtime_run(job_plan: Plan, items: int, output: Path, *, record_answers: bool = True) -> Timing:
    """A fresh run of the job; fails unless every item succeeded and the sink holds a row for each.
    `record_answers=False` leaves out the durable answers, to measure what they cost."""
    output.unlink(missing_ok=True)
    run = JobRun(job_plan, RunOptions(fresh=True, environ=ENVIRON, record_answers=record_answers))
    wall, cpu = time.perf_counter(), time.process_time()
    result = await run.run()
    timing = Timing(items=items, wall=time.perf_counter() - wall, cpu=time.process_time() - cpu)
    assert result.ok, f"the runtime run failed: {result.status}: {result.message} {result.errors[:3]}"
    assert result.progress.succeeded == items, f"{result.progress.succeeded} of {items} items succeeded"
    with open(output, "rb") as file:
        written = sum(1 for _ in file)
    assert written == items, f"the sink holds {written} rows, not {items}"
    return timing


async def aiohttp_loop(url: str, bodies: list[bytes]) -> Timing:
    async def calls() -> None:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {ENVIRON['OPENAI_API_KEY']}"}
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            semaphore = asyncio.Semaphore(CONCURRENCY)

            async def one(body: bytes) -> str:
                async with semaphore, session.post(url, data=body) as response:
                    raw = await response.read()
                    assert response.status == 200, f"bare aiohttp: {response.status} {raw[:200]!r}"
                text: str = json.loads(raw)["choices"][0]["message"]["content"]
                return text

            replies = await asyncio.gather(*(one(body) for body in bodies))
        assert all(replies), "bare aiohttp: an empty reply"

    return await _timed(calls(), len(bodies))


async def httpx_loop(url: str, bodies: list[bytes]) -> Timing:
    async def calls() -> None:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {ENVIRON['OPENAI_API_KEY']}"}
        # The client's default pool: 100 connections (the concurrency), 20 kept alive. Keeping all 100 alive
        # made it about 4 times slower here: httpcore scans every connection for every waiting request.
        async with httpx.AsyncClient(headers=headers, timeout=120, trust_env=False) as client:
            semaphore = asyncio.Semaphore(CONCURRENCY)

            async def one(body: bytes) -> str:
                async with semaphore:
                    response = await client.post(url, content=body)
                assert response.status_code == 200, (
                    f"bare httpx: {response.status_code} {response.text[:200]}"
                )
                text: str = json.loads(response.content)["choices"][0]["message"]["content"]
                return text

            replies = await asyncio.gather(*(one(body) for body in bodies))
        assert all(replies), "bare httpx: an empty reply"

    return await _timed(calls(), len(bodies))


# -- one latency -------------------------------------------------------------------------------------------


PAIRED: list[tuple[float, float]] = []
"""Per round at 0 ms, the time (wall, then CPU) of the run with durable answers over the one without, measured
one after the other: their medians are the overhead printed (best-of-N of each alone mixes rounds a noisy
machine ran at different speeds)."""
BARE_PAIRS: dict[float, list[float]] = {}
"""Per latency, each round's runtime rate over the bare aiohttp loop's, the two run one after the other: their
median is printed beside the ratio of the best of each, which a noisy machine can pair across its quiet and busy
moments."""
SERVER_WAIT: dict[str, list[float]] = {}
"""At 50 ms, per contestant, each run's mean seconds from the server reading a request to writing its reply: the
latency asked for, plus how late the server's timers fire. A call's whole cycle (concurrency / items/s) minus this
is the client's own share: the time from a reply's arrival to the next request's."""
ANSWER_ROUNDS = {"rounds": 9}
"""Paired rounds at 0 ms for the durable answers' overhead (`--answer-rounds`): a run varies by a few percent
from one to the next, as much as the overhead itself, so it takes more rounds than the throughput figures."""


@contextlib.contextmanager
def server_wait(server: Any, name: str, latency: float) -> Iterator[None]:
    """Record in `SERVER_WAIT` how long the server took to answer, on average, the requests of the run inside."""
    if latency == 0:
        yield
        return
    before = server.requests(last=0)
    yield
    after = server.requests(last=0)
    answered = after["answered"] - before["answered"]
    if answered:
        SERVER_WAIT.setdefault(name, []).append((after["answer_seconds"] - before["answer_seconds"]) / answered)


def measure_latency(
    server_module: Any, latency: float, items: int, batch_size: int, repeat: int
) -> dict[str, Timing]:
    """Best of `repeat` interleaved rounds of the runtime and bare aiohttp, and one httpx run, at `latency`."""
    with (
        server_module.LLMServer(latency=latency, responder="fixed") as server,
        tempfile.TemporaryDirectory(prefix="sleipnir-runtime-bench-") as folder,
    ):
        root = Path(folder)
        job_plan = compile_job(write_workspace(root, items, server.base_url, batch_size))
        bodies = request_bodies(job_plan, items)
        url = server.base_url + "/chat/completions"
        best: dict[str, Timing] = {}
        rounds = max(repeat, ANSWER_ROUNDS["rounds"]) if latency == 0 else repeat
        for round_number in range(rounds):
            timings: dict[str, Timing] = {}
            # At 0 ms, with and without durable answers, each first in turn, so that drift hits both alike.
            order = ((True, False) if round_number % 2 else (False, True)) if latency == 0 else (True,)
            for recorded in order:
                name = "runtime" if recorded else "unrecorded"
                output = root / "output" / "scores.jsonl"
                with server_wait(server, name, latency):
                    timings[name] = asyncio.run(runtime_run(job_plan, items, output, record_answers=recorded))
            if latency == 0:
                recorded_run, unrecorded_run = timings["runtime"], timings["unrecorded"]
                PAIRED.append((recorded_run.wall / unrecorded_run.wall, recorded_run.cpu / unrecorded_run.cpu))
            if round_number == 0:
                check_bodies(server.requests(last=1000)["bodies"], bodies)
            if round_number >= repeat:
                continue  # the rounds beyond `repeat` only pair the runs with and without answers
            with server_wait(server, "aiohttp", latency):
                timings["aiohttp"] = asyncio.run(aiohttp_loop(url, bodies))
            BARE_PAIRS.setdefault(latency, []).append(timings["aiohttp"].wall / timings["runtime"].wall)
            for name, timing in timings.items():
                if name not in best or timing.wall < best[name].wall:
                    best[name] = timing
        best["httpx"] = asyncio.run(httpx_loop(url, bodies))
        expected = items * (repeat * 3 + (rounds - repeat) * 2 + 1 if latency == 0 else repeat * 2 + 1)
        count = server.requests(last=0)["count"]
        assert count == expected, f"the server answered {count} chat requests, expected {expected}"
        return best


# -- peak RSS ----------------------------------------------------------------------------------------------


def peak_rss_kb() -> int:
    """This process's peak resident set (`VmHWM`), in kB: per address space, so a fresh process starts at 0."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def rss_child(items: int, endpoint: str, batch_size: int) -> None:
    """The `--rss-child` mode: plan and run `items` items against `endpoint`, print the peak RSS as JSON."""
    with tempfile.TemporaryDirectory(prefix="sleipnir-runtime-rss-") as folder:
        root = Path(folder)
        job_plan = compile_job(write_workspace(root, items, endpoint, batch_size))
        before = peak_rss_kb()
        timing = asyncio.run(runtime_run(job_plan, items, root / "output" / "scores.jsonl"))
        print(
            json.dumps(
                {"items": items, "before_run_kb": before, "peak_kb": peak_rss_kb(), "wall": timing.wall}
            )
        )


def measure_rss(server_module: Any, sizes: tuple[int, ...], batch_size: int) -> list[dict[str, Any]]:
    results = []
    with server_module.LLMServer(latency=0.0, responder="fixed") as server:
        for size in sizes:
            command = [sys.executable, __file__, "--rss-child", str(size), "--endpoint", server.base_url]
            command += ["--batch-size", str(batch_size), "--strategy", STRATEGY["strategy"]]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


# -- report ------------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "meets" if ok else "misses"


def report_latency(latency: float, best: Mapping[str, Timing], repeat: int) -> None:
    print(f"\nserver latency {latency * 1000:.0f} ms:")
    labels = {
        "runtime": f"sleipnir JobRun      (best of {repeat})",
        "unrecorded": "  without durable answers   ",
        "aiohttp": f"bare aiohttp loop    (best of {repeat})",
        "httpx": "bare httpx loop      (1 run)    ",
    }
    for name, label in labels.items():
        if name not in best:
            continue
        timing = best[name]
        print(
            f"  {label}: {timing.rate:8,.0f} items/s  ({timing.wall:6.2f} s, "
            f"{timing.cpu_per_item_us:6.0f} us CPU an item)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--items", type=int, default=5000, help="items per throughput run and for the small RSS run"
    )
    parser.add_argument("--big-items", type=int, default=100_000, help="items for the big RSS run")
    parser.add_argument("--skip-rss", action="store_true", help="skip the two peak-RSS runs")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds of the runtime and bare aiohttp; best kept"
    )
    parser.add_argument(
        "--answer-rounds", type=int, default=ANSWER_ROUNDS["rounds"],
        help="paired rounds at 0 ms for the durable answers' overhead (at least --repeat)",
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--strategy", choices=("sequential", "parallel"), default="sequential")
    parser.add_argument("--faults", action="store_true", help="also run benchmarks/faults.py and print its ratios")
    parser.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    STRATEGY["strategy"] = args.strategy
    ANSWER_ROUNDS["rounds"] = args.answer_rounds
    if args.rss_child is not None:
        rss_child(args.rss_child, args.endpoint, args.batch_size)
        return 0

    server_module = load_server_module()
    name, version = PROMPT
    print(
        f"workload: {args.items:,} items, one prompt ({name}@{version}), concurrency {CONCURRENCY}, "
        f"batch_size {args.batch_size} {args.strategy}, jsonl source and sink, SQLite ledger"
    )
    print(
        f"python {platform.python_version()}, aiohttp {aiohttp.__version__}, httpx {httpx.__version__}; "
        "server: tests/llm_server.py --responder fixed, in its own process"
    )
    results = {}
    for latency in LATENCIES:
        results[latency] = measure_latency(server_module, latency, args.items, args.batch_size, args.repeat)
        report_latency(latency, results[latency], args.repeat)

    slow = LATENCIES[-1]
    ceiling = CONCURRENCY / slow
    at_slow = results[slow]["runtime"].rate
    at_zero = results[0.0]["runtime"].rate / results[0.0]["aiohttp"].rate
    print("\nratios:")
    print(
        f"  runtime at {slow * 1000:.0f} ms: {at_slow:,.0f} items/s = {at_slow / ceiling:.3f} of concurrency/latency "
        f"({ceiling:,.0f}/s) ({verdict(at_slow >= LATENCY_GOAL * ceiling)} the goal of at least {LATENCY_GOAL}, "
        f"{LATENCY_GOAL * ceiling:,.0f} items/s)"
    )
    pairs = BARE_PAIRS[0.0]
    print(
        f"  runtime at 0 ms: {at_zero:.3f} of the bare aiohttp loop "
        f"({verdict(at_zero >= BARE_GOAL)} the goal of at least {BARE_GOAL}); round by round, the median of "
        f"{len(pairs)}: {statistics.median(pairs):.3f} (from {min(pairs):.3f} to {max(pairs):.3f})"
    )
    walls = [wall for wall, _ in PAIRED]
    overhead = statistics.median(walls) - 1
    cpu_overhead = statistics.median(cpu for _, cpu in PAIRED) - 1
    print(
        f"  durable answers at 0 ms: {overhead:+.1%} time an item against the same run without them, the median of "
        f"{len(PAIRED)} rounds run in turn (from {min(walls) - 1:+.1%} to {max(walls) - 1:+.1%}; CPU "
        f"{cpu_overhead:+.1%}) ({verdict(overhead < ANSWERS_GOAL)} the goal of under {ANSWERS_GOAL:.0%})"
    )
    bare_slow = results[slow]["aiohttp"].rate
    print(
        f"  bare aiohttp at {slow * 1000:.0f} ms: {bare_slow / ceiling:.3f} of concurrency/latency (for reference)"
    )
    cycles = ", ".join(
        f"{label} {CONCURRENCY / results[slow][name].rate * 1000:.1f} ms "
        f"(the server's answer {statistics.median(SERVER_WAIT[name]) * 1000:.1f} ms of it)"
        for name, label in (("runtime", "runtime"), ("aiohttp", "bare aiohttp"))
        if SERVER_WAIT.get(name)
    )
    print(f"  a call's cycle at {slow * 1000:.0f} ms (concurrency / items/s, best run): {cycles}")
    print(
        f"  bare httpx at 0 ms: {results[0.0]['httpx'].rate / results[0.0]['aiohttp'].rate:.2f} of bare aiohttp"
    )

    if not args.skip_rss:
        small, big = measure_rss(server_module, (args.items, args.big_items), args.batch_size)
        print("\npeak RSS (VmHWM) of the runtime, 0 ms latency, a fresh process for each:")
        for entry in (small, big):
            print(
                f"  {entry['items']:>9,} items: {entry['peak_kb'] / 1024:7.1f} MB "
                f"({entry['before_run_kb'] / 1024:.1f} MB after planning, before the run; "
                f"{entry['items'] / entry['wall']:,.0f} items/s)"
            )
        ratio = big["peak_kb"] / small["peak_kb"]
        print(f"  ratio: {ratio:.2f}x ({verdict(ratio <= RSS_GOAL)} the goal of at most {RSS_GOAL}x)")
    if args.faults:
        sys.path.insert(0, str(Path(__file__).parent))
        faults = importlib.import_module("faults")
        faults.report(faults.measure())
    return 0


if __name__ == "__main__":
    sys.exit(main())
