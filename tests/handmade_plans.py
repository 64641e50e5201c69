"""Plans built by hand, one of each shape the lowering makes, for the tests of what turns a plan into output.

Building them here, not by compiling YAML, pins the renderers and the estimate down independently of the lowering.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from sleipnir.compiler.estimate import Price
from sleipnir.compiler.ir import (
    Edge,
    Frozen,
    JobStep,
    Merge,
    Plan,
    PromptCall,
    PromptModule,
    Provider,
    Resources,
    Retry,
    Secret,
    Setting,
    Sink,
    Source,
    Split,
    digest,
)
from sleipnir.compiler.span import Span

NOW = datetime(2025, 3, 27, 12, 0, tzinfo=UTC)
"""A Thursday, three days before Europe/Oslo moves from CET (UTC+1) to CEST (UTC+2)."""
SECRET_VALUE = "sk-live-do-not-print-4242"
PRICES = {"gpt-4o": Price(input=2.5, output=10.0), "gpt-4o-mini": Price(input=0.15, output=0.6)}

CLEANER = PromptModule(
    name="text_cleaner",
    version="1.0.0",
    file="stdlib/prompts/text_cleaner/1.0.0.yaml",
    system="You clean text.",
    user="Clean this: {{ text }}",
)
SENTIMENT = PromptModule(
    name="sentiment_analyzer",
    version="2.1.0",
    file="stdlib/prompts/s/2.1.0.yaml",
    system=None,
    user="Rate the sentiment of {{ text }} as positive or negative.",
)
CATEGORY = PromptModule(
    name="category_analyzer", version="1.0.0", file="c.yaml", user="Themes of {{ items }}"
)
MERGER = PromptModule(
    name="result_merger", version="1.0.0", file="m.yaml", system="Merge.", user="{{ groups }}"
)

ROWS = [
    {"review_id": "R-1", "category": "kitchen", "review_text": "Boils fast."},
    {"review_id": "R-2", "category": "outdoor", "review_text": "The zipper split after two weeks."},
    {"review_id": "R-3", "category": "kitchen", "review_text": "Lid is stiff, but the kettle is lovely."},
    {"review_id": "R-4", "category": "garden", "review_text": "Too short."},
]


def source(path: str = "data/reviews.jsonl", fmt: str = "jsonl", **rest: Any) -> Source:
    return Source(
        id="input",
        source="file",
        options=Frozen({"path": path, "format": fmt}),
        batch_size=50,
        key="review_id",
        keep=("category",),
        provenance=Frozen(
            {"batch_size": "profile production", "path": "jobs/reviews.yaml:8", "batch_strategy": "default"}
        ),
        **rest,
    )


def sink(**options: Any) -> Sink:
    return Sink(
        id="output",
        destination="file",
        options=Frozen({"path": "output/results.jsonl", "format": "jsonl", **options}),
        dead_letter="output/failed.jsonl",
    )


def call(node_id: str, module: PromptModule, **rest: Any) -> PromptCall:
    fields: dict[str, Any] = {"model": "gpt-4o", "provider": "openai", "output": node_id, **rest}
    return PromptCall(id=node_id, prompt=module.name, version=module.version, **fields)


def chain(*ids: str) -> tuple[Edge, ...]:
    return tuple(Edge(source=a, target=b) for a, b in itertools.pairwise(ids))


MODULES = {module.name: module for module in (CLEANER, SENTIMENT, CATEGORY, MERGER)}


def calls_job(root: str, *calls: PromptCall, first: Source | None = None, name: str = "j") -> Plan:
    """A job of a source and `calls` in a chain, with the prompt modules they use."""
    first = first or source()
    return Plan(
        kind="job",
        name=name,
        root=root,
        nodes=(first, *calls),
        edges=chain(first.id, *(c.id for c in calls)),
        resources=Resources(prompts=tuple(MODULES[p] for p in sorted({c.prompt for c in calls}))),
    )


def multi_prompt_job(root: str = ".") -> Plan:
    retry = Retry(max_retries=3, initial_delay=1, factor=2, jitter=True)
    cleaner = call(
        "text_cleaner",
        CLEANER,
        retry=retry,
        options=Frozen({"temperature": 0.2}),
        inputs=Frozen({"text": "{{ input.review_text }}"}),
        provenance=Frozen(
            {
                "temperature": "profile production",
                "model": "--param",
                "top_p": "default",
                "retry": "jobs/reviews.yaml:30",
            }
        ),
        on_failure="skip",
        timeout=90,
    )
    sentiment = call(
        "sentiment_analyzer",
        SENTIMENT,
        model="gpt-4o-mini",
        retry=retry,
        options=Frozen({"max_tokens": 300}),
        provenance=Frozen(
            {"max_tokens": "prompt sentiment_analyzer@2.1.0", "model": "env SLEIPNIR_PARAM_MODEL"}
        ),
    )
    return Plan(
        kind="job",
        name="review_sentiment",
        version="1.0.0",
        description="Clean each review, then score its sentiment.",
        root=root,
        profile="production",
        parameters=(
            Setting(key="region", value="eu", origin="--param"),
            Setting(key="min_rating", value=3, origin="jobs/reviews.yaml:4"),
        ),
        nodes=(
            source(span=Span(file="jobs/reviews.yaml", line=7, column=3, end_line=12, end_column=1)),
            cleaner,
            sentiment,
            sink(),
        ),
        edges=chain("input", "text_cleaner", "sentiment_analyzer", "output"),
        resources=Resources(
            prompts=(CLEANER, SENTIMENT), providers=(Provider(name="openai", protocol="openai"),)
        ),
        settings=Frozen({"execution": {"concurrency": 20}}),
    )


def stack_job() -> Plan:
    clean = call("stack.clean", CLEANER, namespace="stack", output="clean")
    check_call = call(
        "stack.check",
        SENTIMENT,
        namespace="stack",
        output="check",
        group="stack.review",
        when='clean.label == "negative" or score < 0.5',
    )
    summary = call("stack.summary", SENTIMENT, namespace="stack", output="summary", group="stack.review")
    return Plan(
        kind="job",
        name="stacked",
        nodes=(source(), clean, check_call, summary, sink()),
        edges=(
            *chain("input", "stack.clean"),
            Edge(source="stack.clean", target="stack.check"),
            Edge(source="stack.clean", target="stack.summary"),
            Edge(source="stack.check", target="output"),
            Edge(source="stack.summary", target="output"),
        ),
        resources=Resources(prompts=(CLEANER, SENTIMENT)),
        settings=Frozen({"execution": {"concurrency": 5}}),
    )


def fan_job(root: str = ".", split_by: str = "category") -> Plan:
    return Plan(
        kind="job",
        name="fan",
        root=root,
        nodes=(
            source(),
            Split(id="fan_out", split_by=split_by),
            call("process", CATEGORY, scope="group"),
            Merge(id="fan_in.collect", collects=("process",)),
            call("fan_in", MERGER, scope="all", parallel=False, options=Frozen({"max_tokens": 1000})),
            sink(),
        ),
        edges=(
            Edge(source="input", target="fan_out"),
            Edge(source="fan_out", target="process", carries="groups"),
            Edge(source="process", target="fan_in.collect", carries="collection"),
            Edge(source="fan_in.collect", target="fan_in", carries="collection"),
            Edge(source="fan_in", target="output", carries="collection"),
        ),
        resources=Resources(prompts=(CATEGORY, MERGER)),
    )


def pipeline(root: str = ".") -> Plan:
    first = multi_prompt_job(root)
    second = Plan(
        kind="job",
        name="report_job",
        root=root,
        nodes=(
            source(path="output/results.jsonl"),
            call("report", SENTIMENT),
            sink(path="output/report.json"),
        ),
        edges=chain("input", "report", "output"),
        resources=Resources(prompts=(SENTIMENT,)),
    )
    return Plan(
        kind="pipeline",
        name="weekly",
        root=root,
        nodes=(
            JobStep(id="collect", job=first.name, plan=first),
            JobStep(id="report", job="report_job", plan=second),
        ),
        edges=(Edge(source="collect", target="report", carries="after"),),
        settings=Frozen({"schedule": {"cron": "@daily", "timezone": "America/New_York", "enabled": True}}),
    )


def secret_job(*, enabled: bool = True) -> Plan:
    key = Secret(ref="${OPENAI_API_KEY}", names=("OPENAI_API_KEY",), digest=digest(SECRET_VALUE))
    url = Secret(ref="postgresql://app:${DB_PASSWORD}@db/reviews", names=("DB_PASSWORD",), digest=None)
    return Plan(
        kind="job",
        name="nightly",
        nodes=(
            Source(
                id="input",
                source="postgresql",
                options=Frozen({"query": "SELECT * FROM reviews", "connection": url}),
            ),
            call(
                "sentiment_analyzer",
                SENTIMENT,
                options=Frozen({"api_key": key, "headers": {"X-Key": key}}),
                provenance=Frozen({"api_key": "env OPENAI_API_KEY"}),
            ),
            sink(),
        ),
        edges=chain("input", "sentiment_analyzer", "output"),
        parameters=(Setting(key="token", value=key, origin="env OPENAI_API_KEY"),),
        resources=Resources(
            prompts=(SENTIMENT,), providers=(Provider(name="openai", protocol="openai", api_key=key),)
        ),
        settings=Frozen(
            {
                "execution": {"concurrency": 4},
                "schedule": {"cron": "30 9 * * MON-FRI", "timezone": "Europe/Oslo", "enabled": enabled},
                "triggers": [{"type": "file_created", "path": "/data/input/*.json"}],
                "conditions": [
                    {"type": "data_available", "check": "SELECT COUNT(*) FROM new_data", "threshold": 100}
                ],
                "alerts": [
                    {"condition": "error_rate > 0.05", "action": "email", "recipients": ["ops@example.com"]}
                ],
            }
        ),
    )


PLANS = {
    "multi": multi_prompt_job,
    "stack": stack_job,
    "fan": fan_job,
    "pipeline": pipeline,
    "secret": secret_job,
}


def shows(text: str, *parts: str) -> None:
    """Every one of `parts` is in `text`; a failure names the ones missing and shows the text."""
    missing = [part for part in parts if part not in text]
    assert not missing, f"missing {missing} in:\n{text}"
