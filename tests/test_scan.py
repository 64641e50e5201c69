"""A focused plan scans the files its target does not use instead of parsing them, and gets the answer the
parse-everything plan gets: the scan says what a parse would say, or nothing (the file is then parsed)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_incremental import JOBS, Workspace, job_yaml, operations, prompt_yaml

from sleipnir.compiler import index as index_module
from sleipnir.compiler.index import Documents, parse
from sleipnir.compiler.ir import to_json
from sleipnir.compiler.planner import PlanResult, plan
from sleipnir.compiler.scan import scan


def identities(entries: object) -> list[tuple[object, ...]]:
    assert isinstance(entries, list | tuple)
    return [(d.kind, d.index, d.name, d.version, d.name_span) for d in entries]


def parsed(text: str, shown: str = "jobs/a.yaml") -> tuple[list[tuple[object, ...]], bool]:
    """What a parse of `text` indexes, and whether it read without a problem."""
    entry = parse(Path(shown).absolute(), shown, text.encode("utf-8"), None)
    return identities(entry.documents), not entry.load


# Pieces of documents, plain and odd, that the scan must read exactly or refuse.
_VALUES = st.sampled_from(
    (
        "alpha",
        "beta_2",
        "1.0.0",
        "2.1.0-rc.1",
        '"quoted"',
        "'single'",
        '"1.0.0"',
        "3",
        "1.5",
        "true",
        "null",
        "~",
        "",
        "&anchor alpha",
        "*alias",
        "!!str tagged",
        "[a, b]",
        "{x: 1}",
        '"open',
        "'it''s'",
        "a #comment",
        "a# not a comment",
        "2024-01-01",
        "x: y",
        "|",
        "-dash",
        ".inf",
    )
)
_KEYS = st.sampled_from(("name", "version", "description", "input", "<<", '"name"', "name ", "? name"))
_INDENTS = st.sampled_from((0, 1, 2, 2, 2, 3, 4))
_LINE = st.one_of(
    st.tuples(_INDENTS, _KEYS, _VALUES).map(lambda t: f"{' ' * t[0]}{t[1]}: {t[2]}".rstrip()),
    st.sampled_from(
        (
            "---",
            "--- # next",
            "...",
            "# a comment",
            "  # an indented comment",
            "",
            "    deeper: value",
            "    - item",
            "  - item",
            "job:",
            "prompt:",
            "pipeline:",
            "jbo:",
            "job: {name: flow}",
            "--- job:",
            "    continued",
            '  tail"',
            "%YAML 1.1",
            "\tname: tab",
            '  description: "two',
            '  lines"',
            "  list: [a,",
            "    b]",
            "  text: |",
            "    name: inside",
            "   name: three",
        )
    ),
)
_DOCUMENT = st.tuples(
    st.sampled_from(("job", "prompt", "stack", "template", "pipeline")),
    st.sampled_from((2, 2, 4)),
    st.lists(_LINE, max_size=6),
    st.lists(st.tuples(st.sampled_from(("name", "version")), _VALUES), max_size=3),
).map(
    lambda t: "\n".join([f"{t[0]}:", *(f"{' ' * t[1]}{key}: {value}".rstrip() for key, value in t[3]), *t[2]])
)
_TEXTS = st.lists(st.one_of(_DOCUMENT, _LINE), min_size=1, max_size=5).map("\n".join)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXTS, st.booleans())
def test_a_scan_says_what_a_parse_says_or_nothing(text: str, newline: bool) -> None:
    text += "\n" if newline else ""
    scanned = scan("jobs/a.yaml", text)
    if scanned is None:
        return
    documents, clean = parsed(text)
    if clean:
        assert identities(scanned) == documents, text
    else:
        # A syntax error ends the stream: the parse holds some of the scanned documents, never others.
        assert set(documents) <= set(identities(scanned)), text


def test_the_scan_reads_the_usual_shapes_exactly() -> None:
    text = (
        "# a workspace file\n---\njob:\n  name: one   # the first\n  version: 1.0.0\n  input: {source: file}\n"
        '  schedule:\n    cron: "0 9 * * *"\n---\n\n---\nprompt:\n  description: |\n    name: not this\n'
        "  name: 'two'\n  version: \"2.0.0\"\n---  # three\njob:\n    name: three\n    prompts:\n    - name: x\n"
    )
    scanned = scan("jobs/a.yaml", text)
    assert scanned is not None
    documents, clean = parsed(text)
    assert clean and identities(scanned) == documents
    assert [(d.index, d.name, d.version) for d in scanned] == [
        (0, "one", "1.0.0"),
        (2, "two", "2.0.0"),
        (3, "three", None),
    ]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("job: {name: a}\n", id="a flow mapping at the top"),
        pytest.param("job: &base\n  name: a\n", id="an anchor at the top"),
        pytest.param("job:\n  <<: *base\n  name: a\n", id="a merge key in the body"),
        pytest.param('job:\n  name: "a\\tb"\n', id="a name with an escape"),
        pytest.param("job:\n  name: a\n    b\n", id="a name that goes on"),
        pytest.param("job:\n  name: 12\n", id="a name that is a number"),
        pytest.param("job:\n  name: a\n  version: 1.0\n", id="a version that is a number"),
        pytest.param("job:\n  name: a\n  name: b\n", id="a repeated key"),
        pytest.param("job:\n    name: a\n  input: x\n", id="odd indentation"),
        pytest.param("job:\n\tname: a\n", id="a tab"),
        pytest.param("%YAML 1.1\n---\njob:\n  name: a\n", id="a directive"),
        pytest.param("job:\n  name: a\n...\n", id="a document end marker"),
        pytest.param('job:\n  description: "two\n  name: b"\n  name: a\n', id="a quoted scalar over lines"),
        pytest.param("job:\n  tags: [a,\n  name: b]\n", id="a flow collection over lines"),
        pytest.param("---\n  job:\n    name: a\n", id="an indented document"),
        pytest.param("  job:\n    name: a\n", id="an indented first document"),
        pytest.param("job:\n  name: a\nname: b\n", id="a second key at the margin"),
        pytest.param("jbo:\n  name: a\n", id="an unknown kind"),
        pytest.param("job:\n- name: a\n", id="a body that is a sequence"),
        pytest.param("job:\n", id="an empty body"),
        pytest.param("job:\n  name: a\r\n", id="a carriage return"),
    ],
)
def test_the_scan_refuses_what_it_cannot_be_sure_of(text: str) -> None:
    assert scan("jobs/a.yaml", text) is None
    assert scan("sleipnir.yaml", "name: ws\n") is None, "the manifest is always parsed"


def _plans(result: PlanResult) -> list[str]:
    return [to_json(p) for p in result.plans]


def _without_scans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "_scanned", lambda *args: None)


def _same(scanned: PlanResult, full: PlanResult, target: str) -> None:
    """The two answers agree: plans to the byte, and every diagnostic, but for reading problems of a file the
    target does not use that the scan could not see (a syntax error deep in a document it did not parse)."""
    assert _plans(scanned) == _plans(full)
    if scanned.diagnostics != full.diagnostics:
        assert scanned.diagnostics == ()
        note = f"not used by `{target}`, which is planned anyway"
        assert all(note in d.notes and d.code in ("yaml-syntax", "tab-indent") for d in full.diagnostics)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            operations, st.tuples(st.just("hidden"), st.sampled_from(("jobs/b.yaml", "prompts/q.yaml")))
        )
    ),
    st.sampled_from((*JOBS, "nightly", "omega")),
    st.booleans(),
)
def test_a_focused_plan_by_scan_is_the_plan_by_parse(
    steps: list[tuple[object, ...]], target: str, cache: bool
) -> None:
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as monkeypatch:
        workspace = Workspace(Path(folder))
        monkeypatch.chdir(folder)
        for operation in steps:
            if operation[0] == "hidden":  # a syntax error the scan cannot see, after a prompt the job may use
                workspace.write(
                    str(operation[1]), prompt_yaml("summarise", "3.0.0") + "  input:\n    a: b: c\n"
                )
            else:
                workspace.apply(operation)
            scanned = plan(target, environ={}, cache=cache)
            with monkeypatch.context() as inner:
                _without_scans(inner)
                full = plan(target, environ={}, cache=False)
            _same(scanned, full, target)


def test_only_what_the_target_uses_is_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = Workspace(tmp_path)
    workspace.write("jobs/c.yaml", job_yaml("gamma", "summarise", None, None))
    monkeypatch.chdir(tmp_path)
    planned = plan("alpha", environ={})
    assert planned.ok and [p.name for p in planned.plans] == ["alpha"] and planned.diagnostics == ()
    documents = planned.check.workspace.documents
    assert isinstance(documents, Documents)
    files = documents.workspace_index.files.values()
    assert sorted(f.shown for f in files if f.parsed is not None and not f.shown.startswith("/")) == [
        "jobs/a.yaml",
        "prompts/p.yaml",
        "sleipnir.yaml",
    ]
    assert sorted(f.shown for f in files if f.scanned and f.shown in ("jobs/c.yaml", "pipe.yaml")) == [
        "jobs/c.yaml",
        "pipe.yaml",
    ]


def test_a_scan_proved_wrong_is_planned_again_by_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan reads a prompt after which the file does not parse: the job asks for it, the parse does not
    have it, and the plan is made again with every file parsed, which reports why."""
    workspace = Workspace(tmp_path)
    workspace.write(
        "prompts/q.yaml", "job:\n  name: broken\n  input:\n    a: b: c\n---\n" + prompt_yaml("late", "1.0.0")
    )
    workspace.write("jobs/c.yaml", job_yaml("gamma", "late", None, None))
    monkeypatch.chdir(tmp_path)
    assert [d.name for d in scan("prompts/q.yaml", (tmp_path / "prompts/q.yaml").read_text())] == [
        "broken",
        "late",
    ]
    planned = plan("gamma", environ={})
    with monkeypatch.context() as inner:
        _without_scans(inner)
        full = plan("gamma", environ={})
    assert planned.diagnostics == full.diagnostics
    assert {d.code for d in planned.diagnostics} >= {"unknown-prompt", "yaml-syntax"}
    assert not planned.plans


@pytest.mark.parametrize(
    ("file", "text", "code"),
    [
        pytest.param(
            "jobs/0.yaml", job_yaml("beta", "clean", None, None), "duplicate-name", id="a duplicate name"
        ),
        pytest.param("jobs/d.yaml", "job:\n  name: [torn\n", "yaml-syntax", id="a file the scan refuses"),
    ],
)
def test_a_plan_with_something_to_report_is_the_plan_by_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file: str, text: str, code: str
) -> None:
    workspace = Workspace(tmp_path)
    workspace.write(file, text)
    monkeypatch.chdir(tmp_path)
    planned = plan("alpha", environ={})
    with monkeypatch.context() as inner:
        _without_scans(inner)
        full = plan("alpha", environ={})
    assert planned.diagnostics == full.diagnostics and _plans(planned) == _plans(full)
    assert code in {d.code for d in planned.diagnostics}


def test_an_unknown_target_is_reported_from_the_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    planned = plan("alpah", environ={})
    assert [d.code for d in planned.diagnostics] == ["unknown-target"]
    assert "alpha" in (planned.diagnostics[0].help or "")


def test_a_plan_with_the_cache_writes_only_what_it_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sleipnir.compiler.checker import check

    Workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    cold = check()
    assert plan("alpha", environ={}, cache=True).ok
    entries = list((tmp_path / ".sleipnir" / "cache").rglob("*.json"))
    assert len(entries) == 3, (
        "jobs/a.yaml, prompts/p.yaml and sleipnir.yaml; the scanned pipe.yaml is not stored"
    )
    assert check(cache=True).diagnostics == cold.diagnostics
    assert plan("alpha", environ={}, cache=True).ok
