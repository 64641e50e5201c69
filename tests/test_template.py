"""`sleipnir create-job-from-template` and template expansion (spec/template.md, "Making a job from a template")."""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from sleipnir.cli import main
from sleipnir.compiler import schemas
from sleipnir.compiler.checker import check
from sleipnir.compiler.diagnostics import Diagnostics
from sleipnir.compiler.documents import classify
from sleipnir.compiler.loader import load
from sleipnir.compiler.overrides import Override
from sleipnir.compiler.template import expand

ROOT = Path(__file__).resolve().parents[1]
SEED_TEMPLATE = ROOT / "spec" / "examples" / "job_template.yaml"

TRIAGE = """
template:
  name: triage_template
  version: 1.0.0
  parameters:
    - name: queue
      type: string
      enum: [billing, shipping, returns]
      required: true
      description: The queue whose tickets are triaged.
    - name: concurrency
      type: integer
      default: 10
    - name: dry_run
      type: boolean
      default: false
    - name: labels
      type: list
      default: [urgent, normal, low]
    - name: thresholds
      type: object
      default:
        urgent: 0.9
    - name: temperature
      type: number
    - name: table
      default: tickets
  job:
    name: ${job_name}
    description: "Triage ${queue} into ${labels} at ${thresholds}; dry run ${dry_run}; costs $${PRICE}"
    input:
      source: database
      query: "SELECT ticket_id, body FROM ${table} WHERE queue = :queue AND region = '${REGION:-eu}'"
      parameters:
        queue: ${queue}
        dry_run: ${dry_run}
        thresholds: ${thresholds}
    prompts:
      - name: classifier
        version: 1.0.0
        temperature: ${temperature}
        api_key: ${OPENAI_API_KEY}
        parameters:
          categories: ${labels}
    execution:
      concurrency: ${concurrency}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace holding the triage template, as the current folder. Parameter files go beside it (`..`):
    inside it, `check` would read them as documents."""
    root = tmp_path / "ws"
    write(root / "sleipnir.yaml", "name: templates_test\n")
    write(root / "templates" / "triage.yaml", TRIAGE)
    monkeypatch.chdir(root)
    return root


def run(*args: str) -> Result:
    """The command with the job printed (`--output -`), unless the test says where it goes."""
    printed = () if "--output" in args else ("--output", "-")
    return CliRunner().invoke(main, ["create-job-from-template", *args, *printed])


def made(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))["job"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` with its content, to show that a failed run changed nothing."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_checks_clean(folder: Path) -> None:
    result = check([str(folder)])
    assert not result.diagnostics, [
        (d.code, d.message, str(d.primary.span if d.primary else d.file)) for d in result.diagnostics
    ]


def codes(result: Result) -> list[str]:
    return re.findall(r"^error\[([a-z-]+)\]", result.stderr, flags=re.MULTILINE)


def failed(result: Result) -> list[str]:
    """The error codes of a run that must fail with exit 1, diagnostics and no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return codes(result)


# --------------------------------------------------------------------------------------------------------------
# Making jobs that check clean


def spec_block(after: str) -> str:
    """The ```yaml block of spec/template.md that follows the line starting with `after`."""
    text = (ROOT / "spec" / "template.md").read_text(encoding="utf-8")
    start = text.index("```yaml\n", text.index(after)) + len("```yaml\n")
    return text[start : text.index("```", start)]


def test_the_stdlib_template_makes_the_job_the_spec_shows_and_it_checks_clean(workspace: Path) -> None:
    command = "create-job-from-template analysis_template --param input_table=reviews --param model_name=gpt-4"
    result = CliRunner().invoke(main, [*command.split(), "--name", "review_analysis"])  # as spec/template.md
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    text = (workspace / "jobs" / "review_analysis.yaml").read_text(encoding="utf-8")
    assert text == spec_block("With the stdlib's `analysis_template`")
    assert_checks_clean(workspace)
    checked = CliRunner().invoke(main, ["check"])
    assert checked.exit_code == 0, checked.output


def test_the_seed_example_template_by_path_makes_a_job_that_checks_clean(workspace: Path) -> None:
    result = run(
        str(SEED_TEMPLATE), "--name", "seed_job", "--param", "input_table=orders", "--output", "out/seed.yaml"
    )
    assert result.exit_code == 0, result.output
    job = made(workspace / "out" / "seed.yaml")
    assert job == {
        "name": "seed_job",
        "input": {"source": "database", "query": "SELECT * FROM orders"},
        "prompts": [{"name": "analyzer", "model": "gpt-3.5-turbo"}],
    }
    assert_checks_clean(workspace)
    planned = CliRunner().invoke(main, ["plan", "seed_job", "--format", "json"])
    assert planned.exit_code == 0, planned.output
    assert json.loads(planned.stdout)["name"] == "seed_job", "a job made from the seed template also plans"


def test_the_spec_triage_example_makes_what_the_spec_shows(workspace: Path) -> None:
    write(workspace / "templates" / "triage.yaml", spec_block("- A value is written as it is."))
    result = run("triage_template", "--name", "billing_triage", "--param", "queue=billing")
    assert result.exit_code == 0, result.output
    assert result.stdout == spec_block("`sleipnir create-job-from-template triage_template")
    write(workspace / "jobs" / "billing.yaml", result.stdout)
    assert_checks_clean(workspace)


def test_typed_whole_scalar_values_keep_their_types_in_the_file(workspace: Path) -> None:
    write(workspace.parent / "params.yaml", "labels: [p1, p2]\nthresholds:\n  urgent: 0.95\n  low: 0.1\n")
    result = run(
        "triage_template",
        "--name",
        "typed",
        "--param",
        "queue=shipping",
        "--param",
        "concurrency=25",
        "--param",
        "dry_run=true",
        "--param",
        "temperature=0.3",
        "--param-file",
        "../params.yaml",
        "--output",
        "jobs/typed.yaml",
    )
    assert result.exit_code == 0, result.output
    job = made(workspace / "jobs" / "typed.yaml")
    assert job["execution"]["concurrency"] == 25 and type(job["execution"]["concurrency"]) is int
    assert job["input"]["parameters"] == {
        "queue": "shipping",
        "dry_run": True,
        "thresholds": {"urgent": 0.95, "low": 0.1},
    }
    assert job["prompts"][0]["parameters"]["categories"] == ["p1", "p2"]
    assert job["prompts"][0]["temperature"] == 0.3
    # Inside longer text: YAML's spelling of a boolean, compact JSON for a list or an object.
    assert job["description"] == (
        'Triage shipping into ["p1","p2"] at {"urgent":0.95,"low":0.1}; dry run true; costs $${PRICE}'
    )
    assert_checks_clean(workspace)


def test_other_substitutions_and_escapes_pass_through_unchanged(workspace: Path) -> None:
    result = run(
        "triage_template", "--name", "passing", "--param", "queue=returns", "--output", "jobs/p.yaml"
    )
    assert result.exit_code == 0, result.output
    job = made(workspace / "jobs" / "p.yaml")
    assert job["prompts"][0]["api_key"] == "${OPENAI_API_KEY}"
    assert (
        job["input"]["query"]
        == "SELECT ticket_id, body FROM tickets WHERE queue = :queue AND region = '${REGION:-eu}'"
    )
    assert job["description"].endswith(
        "costs $${PRICE}"
    )  # still the escape: the job means the literal `${PRICE}`
    assert_checks_clean(workspace)


def test_the_file_starts_with_the_modeline_and_names_the_template(workspace: Path) -> None:
    result = run("triage_template", "--name", "lines", "--param", "queue=billing", "--output", "jobs/l.yaml")
    assert result.exit_code == 0, result.output
    lines = (workspace / "jobs" / "l.yaml").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# yaml-language-server: $schema=../.sleipnir/schema/job.schema.json"
    assert lines[1] == "# Made by `sleipnir create-job-from-template` from template triage_template@1.0.0."
    assert lines[2] == "job:"
    assert "    - name: classifier" in lines  # block style, list items indented under their key
    keys = [
        line.split(":")[0].strip() for line in lines if line.startswith("  ") and not line.startswith("   ")
    ]
    assert keys == ["name", "description", "input", "prompts", "execution"]  # the template's order


def test_with_output_dash_the_job_goes_to_stdout_and_nothing_is_written(workspace: Path) -> None:
    before = snapshot(workspace)
    result = run("triage_template", "--name", "printed", "--param", "queue=billing")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert yaml.safe_load(result.stdout)["job"]["name"] == "printed"
    assert snapshot(workspace) == before


def test_multi_line_text_is_written_as_a_literal_block(workspace: Path) -> None:
    write(
        workspace / "templates" / "lines.yaml",
        """
        template:
          name: multi
          parameters:
            - name: where
          job:
            name: ${job_name}
            input:
              source: database
              query: |
                SELECT *
                FROM ${where}
        """,
    )
    result = run("multi", "--name", "m", "--param", "where=reviews")
    assert result.exit_code == 0, result.output
    assert "    query: |\n      SELECT *\n      FROM reviews\n" in result.stdout
    assert yaml.safe_load(result.stdout)["job"]["input"]["query"] == "SELECT *\nFROM reviews\n"


# --------------------------------------------------------------------------------------------------------------
# Values: precedence, types, enum, names


def test_a_param_wins_over_param_files_and_a_later_file_over_an_earlier_one(workspace: Path) -> None:
    write(workspace.parent / "first.yaml", "queue: billing\nconcurrency: 3\ntable: first\n")
    write(workspace.parent / "second.yaml", "concurrency: 4\ntable: second\n")
    result = run(
        "triage_template",
        "--name",
        "order",
        "--param",
        "table=from_param",  # before the files on the command line, and still the winner
        "--param-file",
        "../first.yaml",
        "--param-file",
        "../second.yaml",
    )
    assert result.exit_code == 0, result.output
    job = yaml.safe_load(result.stdout)["job"]
    assert job["input"]["parameters"]["queue"] == "billing"  # only the first file sets it
    assert job["execution"]["concurrency"] == 4  # the second file wins over the first
    assert "FROM from_param WHERE" in job["input"]["query"]  # --param wins over both
    assert job["input"]["parameters"]["dry_run"] is False  # the template's default


def test_a_later_param_wins_over_an_earlier_one(workspace: Path) -> None:
    result = run("triage_template", "--name", "n", "--param", "queue=billing", "--param", "queue=returns")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["job"]["input"]["parameters"]["queue"] == "returns"


def test_a_list_may_be_given_on_the_command_line(workspace: Path) -> None:
    result = run("triage_template", "--name", "n", "--param", "queue=billing", "--param", "labels=[a, b]")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["job"]["prompts"][0]["parameters"]["categories"] == ["a", "b"]
    # YAML reads a date there; Sleipnir keeps dates as text, so the job holds the text
    result = run(
        "triage_template", "--name", "n", "--param", "queue=billing", "--param", "labels=[2024-06-01]"
    )
    assert result.exit_code == 0, result.output
    assert "- '2024-06-01'" in result.stdout


def test_a_string_parameter_keeps_a_number_as_written(workspace: Path) -> None:
    result = run("triage_template", "--name", "n", "--param", "queue=billing", "--param", "table=01234")
    assert result.exit_code == 0, result.output
    assert "FROM 01234 WHERE" in yaml.safe_load(result.stdout)["job"]["input"]["query"]
    write(workspace / "templates" / "version.yaml", STRING_TEMPLATE)
    result = run("versioned", "--name", "v", "--param", "tag=1.10")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["job"]["description"] == "1.10"


STRING_TEMPLATE = """
template:
  name: versioned
  parameters:
    - name: tag
      required: true
  job:
    name: ${job_name}
    description: ${tag}
"""


ERRORS = {
    # case: (the --params, separated by spaces; the code; part of the message)
    "missing": ("concurrency=5", "missing-parameter", "needs parameter `queue`"),
    "wrong-type": (
        "queue=billing concurrency=many",
        "invalid-type",
        "`concurrency` must be an integer, found a string",
    ),
    "boolean-is-no-integer": (
        "queue=billing concurrency=true",
        "invalid-type",
        "an integer, found a boolean",
    ),
    "list": (
        "queue=billing labels=urgent",
        "invalid-type",
        "parameter `labels` must be a list, found a string",
    ),
    "enum": ("queue=bill", "invalid-value", "must be one of `billing`, `shipping`, `returns`"),
    "unknown": (
        "queue=billing concurency=5",
        "unknown-parameter",
        "`concurency` is not a parameter of template",
    ),
    "job-name": ("queue=billing job_name=x", "invalid-param", "set it with --name"),
    "syntax": ("queue", "invalid-param", "is not KEY=VALUE"),
    "value-syntax": (
        "queue=billing table=${TABLE",
        "expression-syntax",
        "parameter `table` has a bad substitution",
    ),
}


@pytest.mark.parametrize(("params", "code", "message"), ERRORS.values(), ids=ERRORS.keys())
def test_a_bad_value_is_an_error_and_leaves_no_file(
    workspace: Path, params: str, code: str, message: str
) -> None:
    before = snapshot(workspace)
    args = [arg for param in params.split() for arg in ("--param", param)]
    result = run("triage_template", "--name", "bad", *args, "--output", "jobs/bad.yaml")
    assert failed(result) == [code], result.stderr
    assert message in result.stderr
    assert result.stdout == ""
    assert snapshot(workspace) == before
    assert not (workspace / "jobs").exists()


def test_problems_point_at_the_template_and_suggest_names(workspace: Path) -> None:
    result = run("triage_template", "--name", "bad", "--param", "concurency=5")
    assert result.exit_code == 1
    assert "--> templates/triage.yaml:5:13" in result.stderr  # the missing `queue`'s declaration
    assert "= note: The queue whose tickets are triaged." in result.stderr
    assert "help: did you mean `concurrency`?" in result.stderr
    assert (
        "note: declared: queue, concurrency, dry_run, labels, thresholds, temperature, table" in result.stderr
    )
    result = run("triage_template", "--name", "bad", "--param", "queue=billing", "--param", "concurrency=x")
    assert "--> templates/triage.yaml:11:13" in result.stderr  # the parameter's `type: integer`
    assert "note: the value comes from --param" in result.stderr


def test_every_problem_is_reported_in_one_run(workspace: Path) -> None:
    result = run("triage_template", "--name", "bad", "--param", "concurrency=x", "--param", "nope=1")
    assert sorted(failed(result)) == ["invalid-type", "missing-parameter", "unknown-parameter"]


def test_a_problem_in_a_param_file_points_at_its_line(workspace: Path) -> None:
    values = write(workspace.parent / "values.yaml", "queue: billing\nconcurrency: lots\nqueeu: x\n")
    result = run("triage_template", "--name", "bad", "--param-file", str(values))
    assert result.exit_code == 1
    assert f"--> {values}:2:1" in result.stderr
    assert "2 | concurrency: lots" in result.stderr  # the file's line is shown
    assert "::: templates/triage.yaml:11:13" in result.stderr  # beside the declaration
    assert f"--> {values}:3:1" in result.stderr
    assert "did you mean `queue`?" in result.stderr


def test_a_wrong_default_in_the_template_is_reported_at_the_default(workspace: Path) -> None:
    write(
        workspace / "templates" / "defaults.yaml",
        """
        template:
          name: defaults
          parameters:
            - name: size
              type: integer
              default: big
          job:
            name: ${job_name}
        """,
    )
    result = run("defaults", "--name", "d")
    assert failed(result) == ["invalid-type"]
    assert "--> templates/defaults.yaml:6:16" in result.stderr
    assert "given by the template's default" in result.stderr


# --------------------------------------------------------------------------------------------------------------
# The job made is validated


def test_a_value_the_job_schema_refuses_is_reported_at_the_substitution(workspace: Path) -> None:
    write(
        workspace / "templates" / "loose.yaml",
        """
        template:
          name: loose
          parameters:
            - name: size
          job:
            name: ${job_name}
            input:
              source: database
              query: SELECT 1
              batch_size: ${size}
        """,
    )
    before = snapshot(workspace)
    result = run("loose", "--name", "my job", "--param", "size=12", "--output", "jobs/loose.yaml")
    assert sorted(failed(result)) == ["invalid-type", "invalid-value"]
    assert "--> templates/loose.yaml:6:11" in result.stderr  # name: ${job_name}
    assert "note: `job_name` comes from --name" in result.stderr
    assert "--> templates/loose.yaml:10:19" in result.stderr  # batch_size: ${size}
    assert "job.input.batch_size must be an integer, found string" in result.stderr
    assert "help: give `size` a value that fits here" in result.stderr
    assert snapshot(workspace) == before


# --------------------------------------------------------------------------------------------------------------
# Optional parameters and values that hold substitutions


OPTIONAL = """
template:
  name: optional
  parameters:
    - name: temperature
      type: number
    - name: size
      type: integer
    - name: suffix
    - name: table
  job:
    name: ${job_name}
    input:
      source: database
      query: "SELECT * FROM ${table:?name the table}${suffix:-}"
      batch_size: ${size:-50}
    prompts:
      - name: analyzer
        temperature: ${temperature}
"""


def test_an_optional_parameter_without_a_value_drops_its_key_or_takes_its_default(workspace: Path) -> None:
    write(workspace / "templates" / "optional.yaml", OPTIONAL)
    result = run("optional", "--name", "o", "--param", "table=reviews", "--output", "jobs/o.yaml")
    assert result.exit_code == 0, result.output
    job = made(workspace / "jobs" / "o.yaml")
    assert job["prompts"] == [{"name": "analyzer"}]  # the key is left out: the job's own default applies
    assert job["input"]["batch_size"] == 50  # the `:-` default, typed
    assert job["input"]["query"] == "SELECT * FROM reviews"
    assert_checks_clean(workspace)


def test_an_unset_parameter_inside_text_is_missing(workspace: Path) -> None:
    write(workspace / "templates" / "optional.yaml", OPTIONAL)
    result = run("optional", "--name", "o")
    assert failed(result) == ["missing-parameter"]
    assert "error[missing-parameter]: name the table" in result.stderr


def test_a_dropped_list_item_does_not_shift_where_later_problems_are_reported(workspace: Path) -> None:
    write(
        workspace / "templates" / "alerting.yaml",
        """
        template:
          name: alerting
          parameters:
            - name: cc
            - name: to
              type: integer
              required: true
          job:
            name: ${job_name}
            alerts:
              - condition: error_rate > 0.1
                action: email
                recipients:
                  - ${cc}
                  - ${to}
        """,
    )
    result = run("alerting", "--name", "a", "--param", "to=5")
    assert failed(result) == ["invalid-type"]
    # `${to}` is the job's recipients[0] when `${cc}` is dropped, and is reported at its own line all the same
    assert "--> templates/alerting.yaml:15:13" in result.stderr
    result = run("alerting", "--name", "a", "--param", "to=5", "--param", "cc=ops@example.com")
    assert failed(result) == ["invalid-type"]
    assert "--> templates/alerting.yaml:15:13" in result.stderr


def test_an_empty_value_takes_the_default_after_the_colon_dash(workspace: Path) -> None:
    write(workspace / "templates" / "optional.yaml", OPTIONAL)
    result = run("optional", "--name", "o", "--param", "table=t", "--param", "suffix=", "--param", "size=")
    assert codes(result) == ["invalid-type"]  # `size=` is the empty text, not an integer
    result = run("optional", "--name", "o", "--param", "table=t", "--param", "suffix=")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["job"]["input"]["query"] == "SELECT * FROM t"


def test_a_value_may_hold_a_substitution_for_run_time(workspace: Path) -> None:
    result = run(
        "triage_template", "--name", "n", "--param", "queue=billing", "--param", "table=${TABLE:-tickets}"
    )
    assert result.exit_code == 0, result.output
    assert "FROM ${TABLE:-tickets} WHERE" in yaml.safe_load(result.stdout)["job"]["input"]["query"]


def test_a_value_that_would_turn_a_substitution_into_an_escape_is_refused(workspace: Path) -> None:
    write(
        workspace / "templates" / "dollar.yaml",
        """
        template:
          name: dollar
          parameters:
            - name: price
          job:
            name: ${job_name}
            description: "${price}${CURRENCY}"
        """,
    )
    result = run("dollar", "--name", "d", "--param", "price=5$")
    assert failed(result) == ["invalid-value"]
    assert "changes its meaning" in result.stderr


# --------------------------------------------------------------------------------------------------------------
# Choosing the template; the output file


VERSIONED = """
template:
  name: reporting
  version: {version}
  job:
    name: ${{job_name}}
    description: version {version}
"""


def test_a_name_takes_the_newest_version_and_name_at_version_another(workspace: Path) -> None:
    for version in ("1.0.0", "1.2.0", "0.9.0"):
        write(workspace / "templates" / f"reporting-{version}.yaml", VERSIONED.format(version=version))
    newest = run("reporting", "--name", "r")
    assert newest.exit_code == 0, newest.output
    assert yaml.safe_load(newest.stdout)["job"]["description"] == "version 1.2.0"
    assert "from template reporting@1.2.0." in newest.stdout
    older = run("reporting@1.0.0", "--name", "r")
    assert older.exit_code == 0, older.output
    assert yaml.safe_load(older.stdout)["job"]["description"] == "version 1.0.0"
    missing = run("reporting@2.0.0", "--name", "r")
    assert failed(missing) == ["unknown-template"]
    assert "note: versions: 0.9.0, 1.0.0, 1.2.0" in missing.stderr


def test_an_unknown_template_name_suggests_the_closest(workspace: Path) -> None:
    result = run("triage_templat", "--name", "x")
    assert failed(result) == ["unknown-template"]
    assert "help: did you mean `triage_template`?" in result.stderr


def test_workspace_option_finds_templates_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "ws" / "sleipnir.yaml", "name: elsewhere\n")
    write(tmp_path / "ws" / "t.yaml", TRIAGE)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert codes(run("triage_template", "--name", "x", "--param", "queue=billing")) == ["unknown-template"]
    result = run(
        "triage_template", "--name", "x", "--param", "queue=billing", "--workspace", str(tmp_path / "ws")
    )
    assert result.exit_code == 0, result.output


def test_a_template_file_that_fails_check_gives_diagnostics_not_a_traceback(workspace: Path) -> None:
    broken = write(
        workspace / "broken.yaml",
        """
        template:
          name: broken
          parameters:
            - name: model_name
          job:
            name: ${job_name}
            prompts:
              - name: analyzer
                model: ${modle_name}
                temprature: 0.2
        """,
    )
    result = run(str(broken), "--name", "x", "--output", "jobs/x.yaml")
    assert sorted(failed(result)) == ["unknown-key", "unknown-parameter"]
    assert not (workspace / "jobs").exists()
    write(workspace / "bad.yaml", "template: [unclosed\n")
    result = run("bad.yaml", "--name", "x")
    assert failed(result) == ["yaml-syntax"]
    result = run("absent.yaml", "--name", "x")
    assert failed(result) == ["io-error"]
    write(workspace / "job.yaml", "job:\n  name: only_a_job\n")
    result = run("job.yaml", "--name", "x")
    assert failed(result) == ["unknown-template"]


def test_an_existing_file_is_kept_without_force_and_replaced_with_it(workspace: Path) -> None:
    target = write(workspace / "jobs" / "kept.yaml", "# mine\n")
    result = run("triage_template", "--name", "k", "--param", "queue=billing", "--output", "jobs/kept.yaml")
    assert failed(result) == ["file-exists"]
    assert "--force" in result.stderr
    assert target.read_text(encoding="utf-8") == "# mine\n"
    result = run(
        "triage_template", "--name", "k", "--param", "queue=billing", "--output", "jobs/kept.yaml", "--force"
    )
    assert result.exit_code == 0, result.output
    assert made(target)["name"] == "k"
    assert sorted(p.name for p in target.parent.iterdir()) == ["kept.yaml"]  # no temporary file left behind


def made_by_default(*args: str) -> Result:
    """The command as a user types it, with no --output."""
    return CliRunner().invoke(main, ["create-job-from-template", "triage_template", "--param", "queue=billing", *args])


def test_by_default_the_job_is_written_to_jobs_name_yaml_in_the_workspace(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workspace / "templates" / "sub").mkdir()
    monkeypatch.chdir(workspace / "templates" / "sub")  # anywhere inside the workspace
    result = made_by_default("--name", "billing_triage")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "wrote" in result.stderr and "billing_triage.yaml" in result.stderr
    target = workspace / "jobs" / "billing_triage.yaml"
    assert made(target)["name"] == "billing_triage"
    modeline = target.read_text(encoding="utf-8").splitlines()[0]
    assert modeline == "# yaml-language-server: $schema=../.sleipnir/schema/job.schema.json"
    # The modeline resolves: the command wrote the schema it points at, the installed one.
    assert (target.parent / "../.sleipnir/schema/job.schema.json").read_text() == schemas.shipped_text("job")
    assert_checks_clean(workspace)


def test_by_default_an_existing_job_is_kept_without_force(workspace: Path) -> None:
    target = write(workspace / "jobs" / "k.yaml", "# mine\n")
    result = made_by_default("--name", "k")
    assert failed(result) == ["file-exists"]
    assert target.read_text(encoding="utf-8") == "# mine\n"
    assert not (workspace / ".sleipnir" / "schema").exists(), "a failed run writes nothing, schemas included"
    result = made_by_default("--name", "k", "--force")
    assert result.exit_code == 0, result.output
    assert made(target)["name"] == "k"


def test_an_error_leaves_no_file(workspace: Path) -> None:
    before = snapshot(workspace)
    result = made_by_default("--name", "bad", "--param", "concurrency=x")
    assert failed(result)
    assert snapshot(workspace) == before


def test_a_name_that_is_no_file_name_needs_an_output(workspace: Path) -> None:
    before = snapshot(workspace)
    result = made_by_default("--name", "../escape")
    assert result.exit_code == 2 and "--output" in result.stderr
    assert snapshot(workspace) == before


def test_writing_elsewhere_points_the_modeline_at_the_workspace_schemas(workspace: Path) -> None:
    result = run("triage_template", "--name", "d", "--param", "queue=billing", "--output", "deep/down/d.yaml")
    assert result.exit_code == 0, result.output
    text = (workspace / "deep" / "down" / "d.yaml").read_text(encoding="utf-8")
    assert text.startswith("# yaml-language-server: $schema=../../.sleipnir/schema/job.schema.json\n")


def test_stale_schemas_are_brought_up_to_date(workspace: Path) -> None:
    stale = write(workspace / ".sleipnir" / "schema" / "job.schema.json", "{}\n")
    result = made_by_default("--name", "fresh")
    assert result.exit_code == 0, result.output
    assert stale.read_text() == schemas.shipped_text("job")


def test_an_output_that_is_a_folder_is_an_error(workspace: Path) -> None:
    (workspace / "jobs").mkdir()
    result = run("triage_template", "--name", "k", "--param", "queue=billing", "--output", "jobs")
    assert result.exit_code == 2  # a usage error
    assert "is a directory" in result.stderr and "Traceback" not in result.output


def test_the_written_file_takes_the_usual_permissions(workspace: Path) -> None:
    result = run("triage_template", "--name", "k", "--param", "queue=billing", "--output", "deep/down/k.yaml")
    assert result.exit_code == 0, result.output
    mask = os.umask(0)
    os.umask(mask)
    assert (workspace / "deep" / "down" / "k.yaml").stat().st_mode & 0o777 == 0o666 & ~mask


# --------------------------------------------------------------------------------------------------------------
# expand() directly


def template_document(text: str) -> Any:
    sink = Diagnostics()
    [document] = classify(load(textwrap.dedent(text).lstrip(), "t.yaml", sink), sink)
    assert not sink.items
    return document


def test_expand_returns_the_body_or_none_with_diagnostics() -> None:
    document = template_document(TRIAGE)
    sink = Diagnostics()
    given = [
        Override(key="queue", value="billing", origin="--param"),
        Override(key="dry_run", value=1, origin="--param"),
    ]
    assert expand(document, "x", given, sink) is None
    assert [d.code for d in sink] == ["invalid-type"]  # 1 is not a boolean
    sink = Diagnostics()
    body = expand(document, "x", [Override(key="queue", value=2024, origin="--param")], sink)
    assert body is None  # a number given for a string parameter is its text, then checked against the enum
    assert [d.message for d in sink] == [
        "parameter `queue` must be one of `billing`, `shipping`, `returns`, found `2024`"
    ]
    sink = Diagnostics()
    given = [
        Override(key="queue", value="billing", origin="--param"),
        Override(key="concurrency", value=2, origin="x"),
    ]
    body = expand(document, "x", given, sink)
    assert body is not None and not sink.items
    assert body["execution"] == {"concurrency": 2}
    assert list(body) == ["name", "description", "input", "prompts", "execution"]
