"""What a plan would take: items counted from real files, calls, tokens and cost, and the price tables."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from handmade_plans import (
    CLEANER,
    NOW,
    PRICES,
    ROWS,
    SENTIMENT,
    call,
    calls_job,
    fan_job,
    multi_prompt_job,
    pipeline,
    secret_job,
    shows,
    source,
    stack_job,
)

from sleipnir.compiler.checker import check
from sleipnir.compiler.estimate import (
    CHARS_PER_TOKEN,
    DEFAULT_COMPLETION_TOKENS,
    Price,
    estimate,
    load_prices,
    parse_prices,
)
from sleipnir.compiler.ir import Edge, JobStep, Plan, Source
from sleipnir.compiler.render.plan_text import render_plan

REPO = Path(__file__).resolve().parents[1]


# --- the estimate ----------------------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> list[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row) for row in rows]
    path.write_text("\n".join(lines[:2]) + "\n\n   \n" + "\n".join(lines[2:]) + "\n", encoding="utf-8")
    return lines


def tokens(chars: float) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def test_estimate_counts_jsonl_rows_and_reckons_calls_tokens_and_cost(tmp_path: Path) -> None:
    lines = write_jsonl(tmp_path / "data" / "reviews.jsonl", ROWS)
    plan = multi_prompt_job(str(tmp_path))
    found = estimate(plan, prices=PRICES)
    assert (found.items, found.items_basis) == (4, "data/reviews.jsonl: 4 rows")
    average = sum(len(line) for line in lines) / 4
    cleaner_prompt = 4 * tokens(len(CLEANER.system or "") + len(CLEANER.user) + average)
    sentiment_prompt = 4 * tokens(len(SENTIMENT.user) + average)
    by_model = {m.model: m for m in found.models}
    assert (by_model["gpt-4o"].calls, by_model["gpt-4o-mini"].calls) == (4, 4)
    assert by_model["gpt-4o"].prompt_tokens == cleaner_prompt
    assert by_model["gpt-4o"].completion_tokens == 4 * DEFAULT_COMPLETION_TOKENS
    assert by_model["gpt-4o-mini"].prompt_tokens == sentiment_prompt
    assert by_model["gpt-4o-mini"].completion_tokens == 4 * 300
    assert found.calls == 8 and not found.upper_bound
    assert found.prompt_tokens == cleaner_prompt + sentiment_prompt
    expected = (cleaner_prompt * 2.5 + 4 * 256 * 10 + sentiment_prompt * 0.15 + 1200 * 0.6) / 1e6
    assert found.cost == pytest.approx(expected)
    text = render_plan(plan, estimate=found, now=NOW)
    assert "items   4" in text and "data/reviews.jsonl: 4 rows" in text
    assert re.search(r"gpt-4o-mini\s+4\s+\S+\s+1\.2k\s+\$0\.00\d+", text)
    assert text.rstrip().endswith(f"4 items, ~8 calls, ~{_compact(found.tokens or 0)} tokens, ~$0.01")


def _compact(count: int) -> str:
    return f"{count / 1000:.1f}".removesuffix(".0") + "k" if count >= 1000 else str(count)


def test_estimate_counts_json_arrays_and_csv_rows(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "reviews.json").write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    with (tmp_path / "data" / "reviews.csv").open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["review_id", "category", "review_text"])
        writer.writerows([row["review_id"], row["category"], row["review_text"]] for row in ROWS)
        writer.writerow(["R-5", "kitchen", "A review with a comma, and a\nline break in it"])
    for path, fmt, count in (("data/reviews.json", "json", 4), ("data/reviews.csv", "csv", 5)):
        plan = calls_job(str(tmp_path), call("c", CLEANER), first=source(path=path, fmt=fmt))
        found = estimate(plan, prices=PRICES)
        assert (found.items, found.calls, found.items_basis) == (count, count, f"{path}: {count} rows")


def test_group_calls_run_once_a_group_and_all_calls_once(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data" / "reviews.jsonl", ROWS)
    found = estimate(fan_job(str(tmp_path)), prices=PRICES)
    # kitchen, outdoor, garden: three groups; the merge's prompt runs once over everything.
    assert found.calls == 3 + 1
    assert not found.upper_bound
    [model] = found.models
    assert model.completion_tokens == 3 * DEFAULT_COMPLETION_TOKENS + 1000


def test_a_csv_with_a_byte_order_mark_is_grouped_by_its_first_column_too(tmp_path: Path) -> None:
    """A CSV saved with a byte order mark (as Excel does): the estimate reads its first column by its name, as
    the run does, so groups split by that column are counted, not guessed."""
    (tmp_path / "data").mkdir()
    with (tmp_path / "data" / "reviews.csv").open("w", encoding="utf-8-sig", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["category", "review_id", "review_text"])
        writer.writerows([row["category"], row["review_id"], row["review_text"]] for row in ROWS)
    plan = fan_job(str(tmp_path))
    plan = replace(plan, nodes=(source(path="data/reviews.csv", fmt="csv"), *plan.nodes[1:]))
    found = estimate(plan, prices=PRICES)
    assert found.calls == 3 + 1 and not found.upper_bound


def test_group_calls_without_the_split_field_are_an_upper_bound(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data" / "reviews.jsonl", ROWS)
    found = estimate(fan_job(str(tmp_path), split_by="classifier.category"), prices=PRICES)
    assert found.calls == 4 + 1
    assert found.upper_bound
    assert any("process: one group an item" in note for note in found.notes)
    text = render_plan(fan_job(str(tmp_path), split_by="classifier.category"), estimate=found, now=NOW)
    assert "up to 5 calls" in text


def test_when_calls_are_an_upper_bound(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data" / "reviews.jsonl", ROWS)
    plan = replace(stack_job(), root=str(tmp_path))
    found = estimate(plan, prices=PRICES)
    assert found.calls == 3 * 4 and found.upper_bound
    assert any("stack.check: counted as if its `when` always holds" in note for note in found.notes)


def test_unknown_models_leave_the_cost_unknown_and_are_named(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data" / "reviews.jsonl", ROWS)
    plan = calls_job(str(tmp_path), call("a", CLEANER), call("b", CLEANER, model="llama-3-70b"))
    found = estimate(plan, prices=PRICES)
    assert found.cost is None and found.calls == 8 and found.tokens
    assert found.unpriced == ("llama-3-70b",)
    assert {m.model: m.cost is None for m in found.models} == {"gpt-4o": False, "llama-3-70b": True}
    text = render_plan(plan, estimate=found, now=NOW)
    assert "cost unknown (no price for llama-3-70b)" in text
    assert re.search(r"llama-3-70b\s+4\s+.*no price", text)


def test_the_mock_provider_costs_nothing(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data" / "reviews.jsonl", ROWS)
    plan = calls_job(str(tmp_path), call("a", CLEANER, model="canned", provider="mock"))
    assert estimate(plan, prices={}).cost == 0


def test_database_sources_are_counted_by_the_callers_counter() -> None:
    plan = secret_job()
    unknown = estimate(plan, prices=PRICES)
    assert (unknown.items, unknown.calls, unknown.cost) == (None, None, None)
    assert unknown.items_basis == "unknown: postgresql source, pass --estimate to count them"
    asked: list[tuple[str, str]] = []

    def counter(found: Source, root: str) -> int:
        asked.append((found.id, root))
        return 1200

    counted = estimate(plan, count_items=counter, prices=PRICES)
    assert asked == [("input", ".")]
    assert (counted.items, counted.calls) == (1200, 1200)
    assert "rows guessed at 400 characters each" in counted.notes
    text = render_plan(plan, estimate=counted, now=NOW)
    assert "1,200 items, ~1,200 calls" in text
    assert (
        estimate(plan, count_items=lambda s, r: None, prices=PRICES).items_basis
        == "unknown: postgresql source"
    )


def test_missing_and_broken_files_leave_the_items_unknown(tmp_path: Path) -> None:
    plan = multi_prompt_job(str(tmp_path))
    assert estimate(plan, prices=PRICES).items_basis == "unknown: data/reviews.jsonl does not exist yet"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "reviews.jsonl").write_bytes(b'{"a": 1}\n\xff\xfe\n')
    assert (
        estimate(plan, prices=PRICES).items_basis == "unknown: cannot read data/reviews.jsonl: not UTF-8 text"
    )
    (tmp_path / "data" / "reviews.json").write_text('{"not": "an array"}', encoding="utf-8")
    as_json = Plan(
        kind="job", name="j", root=str(tmp_path), nodes=(source(path="data/reviews.json", fmt="json"),)
    )
    assert estimate(as_json, prices=PRICES).items_basis.endswith("the top level is not an array")
    text = render_plan(as_json, estimate=estimate(as_json, prices=PRICES), now=NOW)
    assert "items   unknown" in text


def test_a_pipeline_estimate_sums_its_jobs(tmp_path: Path) -> None:
    plan = pipeline(str(tmp_path))
    found = estimate(plan, prices=PRICES)
    assert [job_id for job_id, _ in found.jobs] == ["collect", "report"]
    assert found.calls is None
    assert found.items_basis == "unknown for collect, report"
    write_jsonl(tmp_path / "data" / "reviews.jsonl", ROWS)
    # The report job reads what the collect job writes: a row an item, before the file exists.
    found = estimate(plan, prices=PRICES)
    report = dict(found.jobs)["report"]
    assert (report.items, report.items_basis) == (4, "output/results.jsonl: 4 rows written by collect")
    assert found.calls == 8 + 4
    assert found.cost == pytest.approx(sum(part.cost or 0 for _, part in found.jobs))
    assert "report: rows guessed at 400 characters each" in found.notes
    text = render_plan(plan, estimate=found, now=NOW)
    shows(
        text,
        "job collect: 4 items · ~8 calls",
        "job report: 4 items · ~4 calls",
        "2 jobs, 7 nodes, 3 prompt calls, ~12 calls",
    )


def test_a_job_that_writes_one_collection_writes_one_row(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data" / "reviews.jsonl", ROWS)
    merged = fan_job(str(tmp_path))
    reader = calls_job(
        str(tmp_path), call("r", SENTIMENT), first=source(path="output/results.jsonl"), name="reader"
    )
    plan = Plan(
        kind="pipeline",
        name="p",
        root=str(tmp_path),
        nodes=(JobStep(id="fan", job="fan", plan=merged), JobStep(id="read", job="reader", plan=reader)),
        edges=(Edge(source="fan", target="read", carries="after"),),
    )
    assert dict(estimate(plan, prices=PRICES).jobs)["read"].items == 1


# --- prices ----------------------------------------------------------------------------------------------------


def test_stdlib_prices_cover_the_common_models(tmp_path: Path) -> None:
    prices = load_prices(str(tmp_path))
    for model in (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4",
        "gpt-4-turbo",
        "gpt-3.5-turbo",
        "o1",
        "o1-mini",
        "o3-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
    ):
        assert prices[model].input > 0 and prices[model].output >= prices[model].input
    assert prices["mock"] == Price(input=0, output=0)


def test_a_workspace_prices_file_overrides_model_by_model(tmp_path: Path) -> None:
    (tmp_path / "prices.yaml").write_text(
        "gpt-4o: {input: 1, output: 2}\nllama-3-70b:\n  input: 0.5\n  output: 0.5\n", encoding="utf-8"
    )
    prices = load_prices(str(tmp_path))
    assert prices["gpt-4o"] == Price(input=1.0, output=2.0)
    assert prices["llama-3-70b"] == Price(input=0.5, output=0.5)
    assert prices["gpt-4o-mini"] == load_prices(str(tmp_path / "nowhere"))["gpt-4o-mini"]


def test_a_dated_snapshot_is_priced_as_its_model(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data" / "reviews.jsonl", ROWS)
    plan = calls_job(str(tmp_path), call("a", CLEANER, model="gpt-4o-2024-08-06"))
    dated, plain = estimate(plan, prices=PRICES), estimate(multi_prompt_job(str(tmp_path)), prices=PRICES)
    assert dated.cost == pytest.approx(next(m.cost for m in plain.models if m.model == "gpt-4o"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gpt-4o: {input: 1}\n", r"prices.yaml:1:9: the price of `gpt-4o` has no `output`"),
        (
            "gpt-4o:\n  input: cheap\n  output: 2\n",
            r"prices.yaml:2:10: `input` of `gpt-4o` must be a number >= 0",
        ),
        (
            "gpt-4o:\n  input: -1\n  output: 2\n",
            r"prices.yaml:2:10: `input` of `gpt-4o` must be a number >= 0",
        ),
        ("gpt-4o: {input: 1, output: 2, cached: 0.5}\n", r"prices.yaml:1:31: unknown key `cached`"),
        ("gpt-4o: 2.5\n", r"prices.yaml:1:9: the price of `gpt-4o` must be a mapping"),
        ("- gpt-4o\n", r"prices.yaml:1:1: a price table maps model names"),
        ("gpt-4o: {input: 1, output: 2\n", r"prices.yaml:2:1: "),
        (
            "a: {input: 1, output: 1}\n---\nb: {input: 1, output: 1}\n",
            r"prices.yaml:3:1: a price table is one YAML document",
        ),
    ],
)
def test_a_malformed_prices_file_names_file_line_and_column(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "prices.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_prices(str(tmp_path))
    plan = multi_prompt_job(str(tmp_path))
    with pytest.raises(ValueError, match=message):
        estimate(plan)


def test_a_prices_file_that_is_not_utf8_is_a_clean_error(tmp_path: Path) -> None:
    (tmp_path / "prices.yaml").write_bytes(b"gpt-4o: {input: 1, output: \xff}\n")
    with pytest.raises(ValueError, match=r"prices.yaml:1:28: file is not valid UTF-8"):
        load_prices(str(tmp_path))


def test_an_empty_prices_file_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "prices.yaml").write_text("# no overrides yet\n", encoding="utf-8")
    assert load_prices(str(tmp_path)) == parse_prices(
        (REPO / "stdlib" / "prices.yaml").read_text(encoding="utf-8"), "s"
    )


def test_price_tables_are_not_documents_to_check(tmp_path: Path) -> None:
    (tmp_path / "sleipnir.yaml").write_text("name: demo\n", encoding="utf-8")
    (tmp_path / "prices.yaml").write_text("gpt-4o: {input: 1, output: 2}\n", encoding="utf-8")
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "prices.yaml").write_text("job:\n  name: prices\n", encoding="utf-8")
    result = check([str(tmp_path)])
    assert [d.code for d in result.diagnostics] == []
    assert [d.name for d in result.workspace.documents if d.kind == "job"] == ["prices"]
    assert check([str(REPO / "stdlib")]).diagnostics == ()
