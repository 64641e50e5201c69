"""The `${...}` and condition languages: parts and spans, friendly errors, properties, and `check` end to end."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lark import Lark
from textpos import position, where

from sleipnir.compiler import check
from sleipnir.compiler.checks.conditions import check_alert_condition, check_when
from sleipnir.compiler.diagnostics import Diagnostic
from sleipnir.compiler.ir import expressions
from sleipnir.compiler.ir.expressions import (
    METRICS,
    And,
    Boolean,
    Comparison,
    Duration,
    ExpressionError,
    Name,
    Not,
    Number,
    Or,
    Percentage,
    Region,
    String,
    Substitution,
    Text,
    UnsetVariableError,
    format,
    is_whole_substitution,
    names_in,
    parse_condition,
    parse_substitutions,
    resolve,
)

# ---------------------------------------------------------------------------------------------------------------
# The grammars


@pytest.mark.parametrize("grammar", ["substitution.lark", "condition.lark"])
def test_grammars_are_strict_lalr(grammar: str) -> None:
    """No shift/reduce conflict and no terminal collision (strict mode needs interegular installed)."""
    text = (Path(expressions.__file__).parent / grammar).read_text(encoding="utf-8")
    Lark(text, parser="lalr", strict=True)


# ---------------------------------------------------------------------------------------------------------------
# Substitutions: parts and spans


def test_text_and_substitutions_with_spans() -> None:
    text = "SELECT * FROM ${table} WHERE id > ${MIN_ID:-0} -- ${NOTE:?say why}"
    assert parse_substitutions(text) == (
        Text(value="SELECT * FROM ", span=Region(start=0, end=14)),
        Substitution(name="table", span=Region(start=14, end=22)),
        Text(value=" WHERE id > ", span=Region(start=22, end=34)),
        Substitution(name="MIN_ID", default="0", span=Region(start=34, end=46)),
        Text(value=" -- ", span=Region(start=46, end=50)),
        Substitution(name="NOTE", required_message="say why", span=Region(start=50, end=66)),
    )


def test_empty_default_and_empty_message_are_kept_apart_from_none() -> None:
    (default,) = parse_substitutions("${SUFFIX:-}")
    (required,) = parse_substitutions("${TOKEN:?}")
    assert isinstance(default, Substitution) and default.default == "" and default.required_message is None
    assert isinstance(required, Substitution) and required.required_message == "" and required.default is None


def test_a_default_is_literal_text_with_dollars_colons_and_spaces() -> None:
    (part,) = parse_substitutions("${PRICE:-$5: a bargain}")
    assert part == Substitution(name="PRICE", default="$5: a bargain", span=Region(start=0, end=23))


def test_dotted_names() -> None:
    (part,) = parse_substitutions("${sentiment.label}")
    assert isinstance(part, Substitution) and part.name == "sentiment.label"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("$${HOME}", "${HOME}"),
        ("cost: $5, $x and $$ stay", "cost: $5, $x and $$ stay"),
        ("$$${x}", "$${x}"),
        ("}{ $} ${", None),
    ],
)
def test_escapes_and_lone_dollars_are_text(text: str, value: str | None) -> None:
    if value is None:
        with pytest.raises(ExpressionError):
            parse_substitutions(text)
        return
    assert parse_substitutions(text) == (Text(value=value, span=Region(start=0, end=len(text))),)


def test_escape_beside_a_substitution() -> None:
    assert parse_substitutions("$${A} is ${A}") == (
        Text(value="${A} is ", span=Region(start=0, end=9)),
        Substitution(name="A", span=Region(start=9, end=13)),
    )


def test_text_without_a_substitution_skips_the_parser() -> None:
    assert parse_substitutions("") == ()
    assert parse_substitutions("plain") == (Text(value="plain", span=Region(start=0, end=5)),)


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("SELECT * FROM ${table", "unclosed `${`: expected `}`", 15),
        ("${", "unclosed `${`: expected `}`", 1),
        ("a ${b:-c", "unclosed `${`: expected `}`", 3),
        ("${}", "empty substitution `${}`", 1),
        ("x ${1abc}", "invalid variable name `1abc`", 5),
        ("${a b}", "invalid variable name `a b`", 4),
        ("${a.}", "invalid variable name `a.`", 4),
        ("${ a}", "invalid variable name ` a`", 3),
        ("${a:-${b}}", "a substitution cannot be nested inside a default or message", 6),
        ("${a:?x${b", "a substitution cannot be nested inside a default or message", 7),
        ("${a:x}", "unknown substitution modifier `:x`", 4),
        ("${a-b}", "a default needs `:-`", 4),
    ],
)
def test_substitution_errors_say_what_and_where(text: str, message: str, column: int) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse_substitutions(text)
    assert caught.value.message == message
    assert caught.value.column == column
    assert caught.value.help


def test_whole_substitution_and_names() -> None:
    assert is_whole_substitution("${BATCH:-100}")
    assert is_whole_substitution("${a.b}")
    assert not is_whole_substitution("x${A}")
    assert not is_whole_substitution("${A}${B}")
    assert not is_whole_substitution("$${A}")
    assert not is_whole_substitution("${A")
    assert names_in("${A}/${b.c:-x}/${A}") == ("A", "b.c", "A")
    assert names_in("no substitution") == ()
    assert names_in("${broken") == ()


def test_resolve_uses_values_then_defaults() -> None:
    values = {"TABLE": "reviews", "EMPTY": ""}
    parts = parse_substitutions("FROM ${TABLE} LIMIT ${LIMIT:-10}${EMPTY:-;} $${literal}")
    assert resolve(parts, values.get) == "FROM reviews LIMIT 10; ${literal}"
    assert resolve(parse_substitutions("[${EMPTY}]"), values.get) == "[]"


def test_resolve_refuses_unset_names() -> None:
    unset: dict[str, str] = {}
    with pytest.raises(UnsetVariableError) as caught:
        resolve(parse_substitutions("${API_KEY:?set API_KEY to your provider key}"), unset.get)
    assert caught.value.message == "set API_KEY to your provider key"
    with pytest.raises(UnsetVariableError) as caught:
        resolve(parse_substitutions("x ${MISSING}"), unset.get)
    assert "`MISSING` is not set" in caught.value.message


# ---------------------------------------------------------------------------------------------------------------
# Substitutions: properties

_SOURCE = st.text(alphabet=st.sampled_from("${}:-?. aZ_1\n\\é"), max_size=40) | st.text(max_size=30)
_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}(\.[A-Za-z_][A-Za-z0-9_]{0,4}){0,2}", fullmatch=True)
_LITERAL = st.text(alphabet=st.sampled_from("ab $:-?.{"), max_size=8).filter(lambda s: "${" not in s)


@settings(max_examples=400, deadline=None)
@given(_SOURCE)
def test_parser_raises_only_its_own_error_and_round_trips(text: str) -> None:
    try:
        parts = parse_substitutions(text)
    except ExpressionError as error:
        assert 0 <= error.region.start <= error.region.end <= len(text)
        return
    assert format(parts) == text
    # The parts tile the text: each starts where the previous one ended.
    edges = [0, *(p.span.end for p in parts)]
    assert [p.span.start for p in parts] == edges[:-1]
    assert edges[-1] == len(text)


@st.composite
def _parts(draw: st.DrawFn) -> list[Text | Substitution]:
    parts: list[Text | Substitution] = []
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.booleans()):
            value = draw(st.text(alphabet=st.sampled_from("ab ${}\n"), min_size=1, max_size=8))
            if parts and isinstance(parts[-1], Text):
                continue
            parts.append(Text(value=value, span=Region(start=0, end=0)))
        else:
            if parts and isinstance(parts[-1], Text) and parts[-1].value.endswith("$"):
                continue  # a `$` right before `${` is the `$${` escape: no text can say "`$`, then a substitution"
            name = draw(_NAMES)
            kind = draw(st.sampled_from(("plain", "default", "required")))
            literal = draw(_LITERAL).replace("}", "")
            parts.append(
                Substitution(
                    name=name,
                    default=literal if kind == "default" else None,
                    required_message=literal if kind == "required" else None,
                    span=Region(start=0, end=0),
                )
            )
    return parts


def _without_spans(parts: tuple[Text | Substitution, ...] | list[Text | Substitution]) -> list[object]:
    return [
        (type(p).__name__, p.value) if isinstance(p, Text) else (p.name, p.default, p.required_message)
        for p in parts
    ]


@settings(max_examples=300, deadline=None)
@given(_parts())
def test_escaping_round_trips_from_parts(parts: list[Text | Substitution]) -> None:
    assert _without_spans(parse_substitutions(format(parts))) == _without_spans(parts)


# ---------------------------------------------------------------------------------------------------------------
# Conditions: nodes


def test_condition_nodes_and_spans() -> None:
    condition = parse_condition('sentiment.label == "negative" and not (score < 5% or age >= 2h)')
    assert isinstance(condition, And)
    first, second = condition.operands
    assert first == Comparison(
        left=Name(parts=("sentiment", "label"), span=Region(start=0, end=15)),
        operator="==",
        right=String(value="negative", span=Region(start=19, end=29)),
        span=Region(start=0, end=29),
    )
    assert isinstance(second, Not) and isinstance(second.operand, Or)
    low, old = second.operand.operands
    assert isinstance(low, Comparison) and low.right == Percentage(value=0.05, span=Region(start=47, end=49))
    assert isinstance(old, Comparison) and old.right == Duration(seconds=7200, span=Region(start=60, end=62))
    assert condition.span == Region(start=0, end=62)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("x > 10m", Duration(seconds=600, span=Region(start=4, end=7))),
        ("x > 30s", Duration(seconds=30, span=Region(start=4, end=7))),
        ("x > 1d", Duration(seconds=86400, span=Region(start=4, end=6))),
        ("x > 500ms", Duration(seconds=0.5, span=Region(start=4, end=9))),
        ("x > 2w", Duration(seconds=1209600, span=Region(start=4, end=6))),
        ("x > 12.5%", Percentage(value=0.125, span=Region(start=4, end=9))),
        ("x > -3", Number(value=-3, span=Region(start=4, end=6))),
        ("x == 'it\\'s'", String(value="it's", span=Region(start=5, end=12))),
        ("x != true", Boolean(value=True, span=Region(start=5, end=9))),
        ("x == false", Boolean(value=False, span=Region(start=5, end=10))),
    ],
)
def test_condition_values(text: str, value: object) -> None:
    condition = parse_condition(text)
    assert isinstance(condition, Comparison) and condition.right == value


def test_keywords_need_a_word_boundary() -> None:
    condition = parse_condition("android > 1 and notify == orders")
    assert isinstance(condition, And)
    assert [n.left for n in condition.operands if isinstance(n, Comparison)] == [
        Name(parts=("android",), span=Region(start=0, end=7)),
        Name(parts=("notify",), span=Region(start=16, end=22)),
    ]


@pytest.mark.parametrize(
    ("text", "message", "column", "help"),
    [
        ("error_rate >> 0.05", "invalid operator `>>`", 12, "compare with"),
        ("error_rate = 0.05", "invalid operator `=`", 12, "use `==`"),
        ("error_rate => 0.05", "invalid operator `=>`", 12, "use `>=`"),
        ("a > 1 && b < 2", "invalid operator `&&`", 7, "use `and`"),
        ("!ready", "invalid operator `!`", 1, "use `not`"),
        ("error_rate >", "expected a value after `>`", 12, None),
        ("> 0.05", "expected a value before `>`", 1, None),
        ("a > 1 and", "expected a value after `and`", 7, None),
        ("a and or b", "expected a value, found `or`", 7, None),
        ("(or)", "expected a value, found `or`", 2, None),
        ("(a > 1", "unclosed `(`: expected `)`", 1, "close it"),
        ("((a > 1)", "unclosed `(`: expected `)`", 1, "close it"),
        ("a > 1)", "unmatched `)`", 6, None),
        (")", "unmatched `)`", 1, None),
        ("()", "empty parentheses", 1, None),
        ("a > 1 < 2", "comparisons cannot be chained", 7, "`and`"),
        ("a b", "expected an operator before `b`", 3, None),
        ('a == "open', "unclosed string", 6, None),
        ("x > 10min", "unknown unit `min` in `10min`", 7, "write `10m`"),
        ("x > 5sec", "unknown unit `sec` in `5sec`", 6, "write `5s`"),
        ("x > 5y", "unknown unit `y` in `5y`", 6, "durations take ms, s, m, h, d, w"),
        ("x > 2weeks", "unknown unit `weeks` in `2weeks`", 6, "write `2w`"),
        ("", "empty condition", 1, None),
        ("   ", "empty condition", 1, None),
        ("a > 1 ?", "unexpected character `?`", 7, None),
    ],
)
def test_condition_errors_say_what_and_where(text: str, message: str, column: int, help: str | None) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse_condition(text)
    assert caught.value.message == message
    assert caught.value.column == column
    if help is not None:
        assert caught.value.help is not None and help in caught.value.help


# ---------------------------------------------------------------------------------------------------------------
# Conditions: typing and names


@pytest.mark.parametrize(
    "text",
    [
        "error_rate > 0.05",
        "error_rate > 5%",
        "success_rate < 99.5%",
        "execution_time > 600",
        "execution_time > 10m and items_processed < 1000",
        "cost > 25 or (retries >= 3 and not success_rate > 0.9)",
        "token_usage > prompt_tokens",
        "true",
    ],
)
def test_alert_conditions_that_type_check(text: str) -> None:
    assert check_alert_condition(parse_condition(text)) == []


@pytest.mark.parametrize(
    ("text", "code", "message", "help"),
    [
        ("eror_rate > 0.05", "unknown-metric", "unknown metric `eror_rate`", "did you mean `error_rate`?"),
        ("queue.depth > 5", "unknown-metric", "unknown metric `queue.depth`", "the metrics are"),
        ("error_rate > 10m", "invalid-value", "cannot compare a rate with a duration", "execution_time"),
        ("execution_time > 5%", "invalid-value", "cannot compare a duration with a percentage", None),
        ("retries > 1h", "invalid-value", "cannot compare a count with a duration", None),
        ('cost == "high"', "invalid-value", "cannot compare a cost with a string", None),
        ("error_rate > 5", "invalid-value", "a rate is a fraction from 0 to 1, not 5", "`5%`"),
        ("error_rate", "invalid-value", "`error_rate` is a rate, not a condition", "compare it"),
        ("cost > 5 and retries", "invalid-value", "`retries` is a count, not a condition", None),
    ],
)
def test_alert_condition_problems(text: str, code: str, message: str, help: str | None) -> None:
    (problem,) = check_alert_condition(parse_condition(text))
    assert (problem.code, problem.message) == (code, message)
    if help is not None:
        assert problem.help is not None and help in problem.help


def test_metrics_are_the_compilers_list() -> None:
    assert set(METRICS) == {
        "execution_time", "token_usage", "prompt_tokens", "completion_tokens", "success_rate",
        "error_rate", "items_processed", "items_failed", "retries", "cost",
    }  # fmt: skip


def test_when_names_start_with_input_or_an_earlier_step() -> None:
    condition = parse_condition('sentiment.label == "negative" and input.lang == "en" or clean.ok')
    assert check_when(condition, ["clean", "sentiment"]) == []
    (misspelt,) = check_when(parse_condition("sentimnt.label == 1"), ["sentiment"], ["sentiment"])
    assert (misspelt.code, misspelt.message, misspelt.help) == (
        "unknown-step",
        "unknown step `sentimnt`",
        "did you mean `sentiment`?",
    )
    assert misspelt.span == Region(start=0, end=8)
    (later,) = check_when(parse_condition("route.x == 1"), ["clean"], ["clean", "route"])
    assert later.message == "step `route` does not run before this step"


# ---------------------------------------------------------------------------------------------------------------
# Conditions: properties

_CONDITION_TEXT = st.text(
    alphabet=st.sampled_from("abc._ ()<>=!&|'\"0123456789%smhd-"), max_size=30
) | st.text(max_size=20)


@settings(max_examples=400, deadline=None)
@given(_CONDITION_TEXT)
def test_condition_parser_never_crashes(text: str) -> None:
    try:
        condition = parse_condition(text)
    except ExpressionError as error:
        assert 0 <= error.region.start <= error.region.end <= len(text)
        return
    check_alert_condition(condition)
    check_when(condition, ["a"], ["a", "b"])


_ATOMS = st.sampled_from(
    ["error_rate", "cost", "a.b", "1", "0.5", "5%", "10m", "'x'", '"y"', "true", "false"]
)


def _conditions() -> st.SearchStrategy[str]:
    comparison = st.builds(
        lambda a, op, b: f"{a} {op} {b}", _ATOMS, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), _ATOMS
    )
    return st.recursive(
        comparison | _ATOMS,
        lambda inner: (
            st.builds(lambda a, op, b: f"{a} {op} {b}", inner, st.sampled_from(["and", "or"]), inner)
            | inner.map(lambda c: f"not ({c})")
            | inner.map(lambda c: f"({c})")
        ),
        max_leaves=6,
    )


@settings(max_examples=200, deadline=None)
@given(_conditions())
def test_well_formed_conditions_parse(text: str) -> None:
    parse_condition(text)


# ---------------------------------------------------------------------------------------------------------------
# check, end to end


def run(folder: Path, text: str) -> tuple[str, list[Diagnostic]]:
    """Check one file holding `text`; return the text as written and the diagnostics."""
    text = textwrap.dedent(text).lstrip()
    path = folder / "subject.yaml"
    path.write_text(text, encoding="utf-8")
    return text, list(check([str(path)]).diagnostics)




def test_unclosed_substitution_is_reported_at_its_dollar(tmp_path: Path) -> None:
    text, diagnostics = run(
        tmp_path,
        """
        job:
          name: report
          input:
            source: database
            query: "SELECT * FROM ${table"
        """,
    )
    (diagnostic,) = diagnostics
    assert where(diagnostic) == ("expression-syntax", *position(text, "${table"))
    assert diagnostic.message == "unclosed `${`: expected `}`"
    assert diagnostic.primary is not None and diagnostic.primary.span.end_column == position(text, "table")[1]


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("data/${1abc}.jsonl", "1abc"),
        ("'it''s ''${a b}'''", " b}"),
        ('"say \\"hi\\" \\u00e9 ${a b}"', " b}"),
        ('"first line\n      continued ${a b}"', " b}"),
        ("plain first\n      then ${a b}", " b}"),
        ("|\n      line one\n        ${bad name} two", " name}"),
        (">-\n      folded\n      text ${a b}", " b}"),
    ],
    ids=[
        "plain",
        "single-quoted",
        "double-quoted",
        "double-quoted-folded",
        "plain-folded",
        "literal",
        "folded",
    ],
)
def test_column_inside_every_scalar_style(tmp_path: Path, value: str, needle: str) -> None:
    text = f"job:\n  name: styles\n  output:\n    path: {value}\n"
    path = tmp_path / "subject.yaml"
    path.write_text(text, encoding="utf-8")
    (diagnostic,) = check([str(path)]).diagnostics
    assert where(diagnostic) == ("expression-syntax", *position(text, needle))


def test_template_near_miss_of_a_parameter_is_an_error(tmp_path: Path) -> None:
    text, diagnostics = run(
        tmp_path,
        """
        template:
          name: analysis_template
          parameters:
            - name: input_table
              type: string
              required: true
            - name: model_name
              type: string
              default: gpt-3.5-turbo
          job:
            name: ${job_name}
            input:
              source: database
              query: "SELECT * FROM ${input_table} WHERE region = '${REGION}'"
            prompts:
              - name: analyzer
                model: ${modle_name}
                api_key: ${OPENAI_API_KEY}
        """,
    )
    (diagnostic,) = diagnostics
    assert where(diagnostic) == ("unknown-parameter", *position(text, "${modle_name}"))
    assert diagnostic.help == "did you mean `model_name`?"
    assert (
        diagnostic.primary is not None
        and diagnostic.primary.span.end_column == position(text, "${modle_name}")[1] + 13
    )


def test_near_misses_outside_a_template_body_pass(tmp_path: Path) -> None:
    _, diagnostics = run(
        tmp_path,
        """
        job:
          name: env_job
          params:
            model_name: gpt-4
          prompts:
            - name: analyzer
              model: ${modle_name}
              api_key: ${OPENAI_API_KEY}
              endpoint: ${API_ENDPOINT:?set the endpoint}
          input:
            batch_size: ${BATCH:-100}
        """,
    )
    assert diagnostics == []


def test_alert_conditions(tmp_path: Path) -> None:
    text, diagnostics = run(
        tmp_path,
        """
        job:
          name: alerted_job
          alerts:
            - condition: error_rate > 0.05
              action: email
              recipients: [admin@example.com]
            - condition: execution_time > 600
              action: slack
              channel: "#ops"
            - condition: error_rate >> 0.05
              action: email
            - condition: "eror_rate > 0.05"
              action: email
            - condition: execution_time > 5%
              action: email
            - condition: error_rate > ${THRESHOLD:-0.05}
              action: email
        """,
    )
    assert [(where(d), d.help) for d in diagnostics] == [
        (
            ("expression-syntax", *position(text, ">> 0.05")),
            "compare with `>`, `>=`, `<`, `<=`, `==` or `!=`",
        ),
        (("unknown-metric", *position(text, "eror_rate")), "did you mean `error_rate`?"),
        (("invalid-value", *position(text, "execution_time > 5%")), diagnostics[2].help),
    ]
    assert diagnostics[2].message == "cannot compare a duration with a percentage"


def test_template_alerts_are_checked(tmp_path: Path) -> None:
    text, diagnostics = run(
        tmp_path,
        """
        template:
          name: watched
          job:
            name: ${job_name}
            alerts:
              - condition: error_rate = 0.05
                action: email
        """,
    )
    (diagnostic,) = diagnostics
    assert where(diagnostic) == ("expression-syntax", *position(text, "= 0.05"))
    assert diagnostic.help == "use `==` to test equality"


def test_stack_when_names_earlier_steps(tmp_path: Path) -> None:
    text, diagnostics = run(
        tmp_path,
        """
        stack:
          name: routed_stack
          version: 1.0.0
          steps:
            - id: clean
              prompt: text_cleaner
              when: route.x == 1
            - id: first
              parallel:
                - id: sentiment
                  prompt: sentiment_analyzer
                  when: clean.ok and input.lang == "en"
                - id: topic
                  prompt: classifier
                  when: sentiment.label == "negative"
            - id: route
              prompt: classifier
              when: sentimnt.label == "negative" and topic.label != "spam"
        """,
    )
    assert [(where(d), d.message) for d in diagnostics] == [
        (("unknown-step", *position(text, "route.x")), "step `route` does not run before this step"),
        (
            ("unknown-step", *position(text, "sentiment.label")),
            "step `sentiment` does not run before this step",
        ),
        (("unknown-step", *position(text, "sentimnt")), "unknown step `sentimnt`"),
    ]
    assert diagnostics[2].help == "did you mean `sentiment`?"


def test_stack_when_syntax(tmp_path: Path) -> None:
    text, diagnostics = run(
        tmp_path,
        """
        stack:
          name: broken_stack
          version: 1.0.0
          steps:
            - id: sentiment
              prompt: sentiment_analyzer
            - id: route
              prompt: classifier
              when: (sentiment.label == "negative"
        """,
    )
    (diagnostic,) = diagnostics
    assert where(diagnostic) == ("expression-syntax", *position(text, '(sentiment.label == "negative"'))
    assert diagnostic.message == "unclosed `(`: expected `)`"


def test_every_string_of_every_kind_is_checked(tmp_path: Path) -> None:
    text, diagnostics = run(
        tmp_path,
        """
        prompt:
          name: echo
          version: 1.0.0
          description: Says ${what
          template:
            user: "{{ input.text }}"
        ---
        pipeline:
          name: nightly
          description: "${}"
          jobs: [env_job]
        ---
        job:
          name: env_job
        """,
    )
    assert [where(d) for d in diagnostics] == [
        ("expression-syntax", *position(text, "${what")),
        ("expression-syntax", *position(text, "${}")),
    ]


def test_public_names_exist() -> None:
    assert all(getattr(expressions, name, None) is not None for name in expressions.__all__)
