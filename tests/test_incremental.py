"""The incremental check gives, after any sequence of edits, renames and deletions, exactly a cold check's answer."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sleipnir.compiler import cache as cache_module
from sleipnir.compiler.cache import PACK, Cache
from sleipnir.compiler.checker import CheckResult, check
from sleipnir.compiler.index import Documents

PROMPTS = ("clean", "classify", "summarise")
JOBS = ("alpha", "beta", "gamma", "delta")


def prompt_yaml(name: str, version: str) -> str:
    return (
        f"prompt:\n  name: {name}\n  version: {version}\n  description: A prompt\n"
        "  template:\n    user: 'Read {{ input.text }}'\n"
    )


def job_yaml(name: str, prompt: str, version: str | None, cron: str | None) -> str:
    lines = [
        "job:",
        f"  name: {name}",
        "  input:",
        "    source: file",
        "    path: data/in.jsonl",
        "  prompts:",
        f"    - name: {prompt}",
    ]
    if version is not None:
        lines.append(f"      version: {version}")
    if cron is not None:
        lines += ["  schedule:", f'    cron: "{cron}"']
    return "\n".join(lines) + "\n"


def pipeline_yaml(jobs: list[str], cycle: bool) -> str:
    lines = ["pipeline:", "  name: nightly", "  jobs:"]
    for index, job in enumerate(jobs):
        depends = f"[j{index - 1}]" if index else (f"[j{len(jobs) - 1}]" if cycle and len(jobs) > 1 else "[]")
        lines.append(f"    - {{id: j{index}, name: {job}, depends_on: {depends}}}")
    return "\n".join(lines) + "\n"


names = st.sampled_from((*JOBS, "alpah", "omega"))
prompt_names = st.sampled_from((*PROMPTS, "clena", "nothing"))
versions = st.sampled_from(("1.0.0", "2.0.0", "9.9.9", None))
files = st.sampled_from(("jobs/a.yaml", "jobs/b.yaml", "jobs/c.yaml", "prompts/p.yaml", "prompts/q.yaml", "pipe.yaml"))

operations = st.one_of(
    st.tuples(
        st.just("job"),
        files,
        st.lists(st.tuples(names, prompt_names, versions, st.sampled_from((None, "0 9 * * *", "61 * * * *"))),
                 min_size=1, max_size=3),
    ),
    st.tuples(st.just("prompt"), files, st.lists(st.tuples(prompt_names, st.sampled_from(("1.0.0", "2.0.0"))),
                                                min_size=1, max_size=2)),
    st.tuples(st.just("pipeline"), files, st.lists(names, min_size=1, max_size=4), st.booleans()),
    st.tuples(st.just("broken"), files, st.sampled_from(("job: [\n", "jbo:\n  name: x\n", "job:\n  name: 3\n"))),
    st.tuples(st.just("shift"), files, st.integers(min_value=1, max_value=3)),
    st.tuples(st.just("rename"), files, files),
    st.tuples(st.just("delete"), files),
)


class Workspace:
    """A workspace on disk whose every write gets its own modification time, one second apart, long past."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.clock = 1_600_000_000 * 10**9
        self.write("sleipnir.yaml", "name: property\n")
        self.write("prompts/p.yaml", "---\n".join(prompt_yaml(p, "1.0.0") for p in PROMPTS))
        self.write("jobs/a.yaml", job_yaml("alpha", "clean", "1.0.0", None) + "---\n" + job_yaml("beta", "classify", None, None))
        self.write("pipe.yaml", pipeline_yaml(["alpha", "beta"], False))

    def write(self, relative: str, text: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        self.clock += 10**9
        os.utime(path, ns=(self.clock, self.clock))

    def apply(self, operation: tuple[object, ...]) -> None:
        kind, relative = operation[0], str(operation[1])
        if kind == "job":
            jobs = operation[2]
            assert isinstance(jobs, list)
            self.write(relative, "---\n".join(job_yaml(*job) for job in jobs))
        elif kind == "prompt":
            prompts = operation[2]
            assert isinstance(prompts, list)
            self.write(relative, "---\n".join(prompt_yaml(*prompt) for prompt in prompts))
        elif kind == "pipeline":
            jobs, cycle = operation[2], operation[3]
            assert isinstance(jobs, list) and isinstance(cycle, bool)
            self.write(relative, pipeline_yaml(jobs, cycle))
        elif kind == "broken":
            self.write(relative, str(operation[2]))
        elif kind == "shift":
            # The same documents, lower down: their records must not be reused with the old lines.
            path = self.root / relative
            if path.exists():
                lines = int(str(operation[2]))
                self.write(relative, "# note\n" * lines + path.read_text(encoding="utf-8"))
        elif kind == "rename":
            source, target = self.root / relative, self.root / str(operation[2])
            if source.exists() and source != target:
                target.parent.mkdir(parents=True, exist_ok=True)
                source.replace(target)
        elif kind == "delete":
            (self.root / relative).unlink(missing_ok=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, min_size=1, max_size=8), st.booleans(), st.sampled_from((1, 8, 10_000)))
def test_incremental_diagnostics_equal_a_cold_check_after_every_step(
    steps: list[tuple[object, ...]], in_memory: bool, packed_from: int
) -> None:
    """`packed_from`: every store in the pack, the default, or none (each entry in a file of its own)."""
    saved, cache_module.PACKED_FROM = cache_module.PACKED_FROM, packed_from
    try:
        _steps_equal_cold_checks(steps, in_memory)
    finally:
        cache_module.PACKED_FROM = saved


def _steps_equal_cold_checks(steps: list[tuple[object, ...]], in_memory: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        workspace = Workspace(Path(folder))
        cache: Cache | bool = Cache.at(Path(folder)) if in_memory else True
        for operation in [("job", "jobs/c.yaml", [("gamma", "clean", None, None)]), *steps]:
            workspace.apply(operation)
            warm = check([folder], cache=cache)
            cold = check([folder])
            assert warm.diagnostics == cold.diagnostics, operation
            assert len(warm.workspace.documents) == len(cold.workspace.documents)


def test_a_warm_check_reads_only_the_changed_file_and_its_dependents(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.write("jobs/c.yaml", job_yaml("gamma", "nothing", None, None))
    first = check([str(tmp_path)], cache=True)
    assert [d.code for d in first.diagnostics] == ["unknown-prompt"]
    again = check([str(tmp_path)], cache=True)
    assert again.diagnostics == first.diagnostics
    assert _parsed(again, tmp_path) == ["sleipnir.yaml"], "an unchanged workspace parses only its manifest"
    # A new prompt answers the question the job in c.yaml asked, and changes the prompt names the templates
    # in p.yaml are held against: those files and the new one are parsed, no other.
    workspace.write("prompts/q.yaml", prompt_yaml("nothing", "1.0.0"))
    third = check([str(tmp_path)], cache=True)
    assert third.diagnostics == ()
    assert _parsed(third, tmp_path) == ["jobs/c.yaml", "prompts/p.yaml", "prompts/q.yaml", "sleipnir.yaml"]


def test_a_corrupt_or_foreign_entry_is_a_miss(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.write("jobs/c.yaml", job_yaml("gamma", "clena", "1.0.0", "61 * * * *"))
    cold = check([str(tmp_path)])
    check([str(tmp_path)], cache=True)
    entries = sorted((tmp_path / ".sleipnir" / "cache").rglob("*.json"))
    assert entries
    for number, entry in enumerate(entries):
        data = json.loads(entry.read_text(encoding="utf-8"))
        if number % 3 == 0:
            entry.write_text(entry.read_text(encoding="utf-8")[: number + 10], encoding="utf-8")
        elif number % 3 == 1:
            data["documents"] = [{"kind": 3}]
            entry.write_text(json.dumps(data), encoding="utf-8")
        else:
            data["source"] = "/elsewhere.yaml"
            entry.write_text(json.dumps(data), encoding="utf-8")
    assert check([str(tmp_path)], cache=True).diagnostics == cold.diagnostics
    assert check([str(tmp_path)], cache=True).diagnostics == cold.diagnostics


def test_a_store_of_many_entries_is_one_pack_and_an_entry_written_after_it_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = Workspace(tmp_path)
    for name in ("a", "b", "c"):
        workspace.write(f"jobs/{name}.yaml", job_yaml(f"job_{name}", "clean", None, None))
    first = check([str(tmp_path)], cache=True)
    (folder,) = (tmp_path / ".sleipnir" / "cache").iterdir()
    assert [f.name for f in folder.iterdir()] == [PACK], "the stdlib's and the workspace's entries, in one file"
    assert len(json.loads((folder / PACK).read_text(encoding="utf-8"))) >= cache_module.PACKED_FROM
    assert check([str(tmp_path)], cache=True).diagnostics == first.diagnostics
    # One file changed: its entry is written on its own, and is newer than the pack's, which no longer holds.
    workspace.write("jobs/b.yaml", job_yaml("job_b", "clena", None, None))
    second = check([str(tmp_path)], cache=True)
    assert second.diagnostics == check([str(tmp_path)]).diagnostics
    assert "unknown-prompt" in [d.code for d in second.diagnostics]
    assert len(list(folder.iterdir())) == 2
    third = check([str(tmp_path)], cache=True)
    assert third.diagnostics == second.diagnostics
    assert _parsed(third, tmp_path) == ["sleipnir.yaml"], "b.yaml's own entry, not the pack's older one"
    # b.yaml changed again, and its entry goes into the pack: its own file, superseded, is deleted.
    workspace.write("jobs/b.yaml", job_yaml("job_b", "classify", None, None))
    monkeypatch.setattr(cache_module, "PACKED_FROM", 1)
    fourth = check([str(tmp_path)], cache=True)
    assert fourth.diagnostics == check([str(tmp_path)]).diagnostics
    assert [f.name for f in folder.iterdir()] == [PACK]
    assert _parsed(check([str(tmp_path)], cache=True), tmp_path) == ["sleipnir.yaml"], "b.yaml's entry from the pack"


def test_the_pack_leaves_out_the_entries_of_files_that_are_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = Workspace(tmp_path)
    for name in ("a", "b"):
        workspace.write(f"jobs/{name}.yaml", job_yaml(f"job_{name}", "clean", None, None))
    check([str(tmp_path)], cache=True)
    (pack,) = (tmp_path / ".sleipnir" / "cache").rglob(PACK)
    assert str(tmp_path / "jobs" / "b.yaml") in json.loads(pack.read_text(encoding="utf-8"))
    (tmp_path / "jobs" / "b.yaml").unlink()
    workspace.write("jobs/a.yaml", job_yaml("job_a", "classify", None, None))
    monkeypatch.setattr(cache_module, "PACKED_FROM", 1)  # the one changed entry goes into the pack
    assert check([str(tmp_path)], cache=True).diagnostics == check([str(tmp_path)]).diagnostics
    packed = json.loads(pack.read_text(encoding="utf-8"))
    assert str(tmp_path / "jobs" / "a.yaml") in packed and str(tmp_path / "jobs" / "b.yaml") not in packed
    assert all(Path(source).exists() for source in packed)


def test_a_corrupt_pack_or_a_corrupt_entry_in_it_is_a_miss(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    for name in ("a", "b"):
        workspace.write(f"jobs/{name}.yaml", job_yaml(f"job_{name}", "clena", "1.0.0", "61 * * * *"))
    cold = check([str(tmp_path)])
    check([str(tmp_path)], cache=True)
    (pack,) = (tmp_path / ".sleipnir" / "cache").rglob(PACK)
    text = pack.read_text(encoding="utf-8")
    pack.write_text(text[: len(text) // 2], encoding="utf-8")
    assert check([str(tmp_path)], cache=True).diagnostics == cold.diagnostics  # rewrites the pack
    packed = json.loads(pack.read_text(encoding="utf-8"))
    for number, (source, entry) in enumerate(sorted(packed.items())):
        if number % 2:
            entry["documents"] = [{"kind": 3}]
        else:
            packed[source] = {**entry, "source": "/elsewhere.yaml"}
    pack.write_text(json.dumps(packed), encoding="utf-8")
    assert check([str(tmp_path)], cache=True).diagnostics == cold.diagnostics
    assert check([str(tmp_path)], cache=True).diagnostics == cold.diagnostics


def test_a_cache_that_cannot_be_written_leaves_the_check_cold_and_right(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.write("jobs/c.yaml", job_yaml("gamma", "clena", None, None))
    (tmp_path / ".sleipnir").write_text("not a folder", encoding="utf-8")
    result = check([str(tmp_path)], cache=True)
    assert [d.code for d in result.diagnostics] == ["unknown-prompt"]


def _parsed(result: CheckResult, root: Path) -> list[str]:
    """The files this check parsed (rather than took from the cache)."""
    documents = result.workspace.documents
    assert isinstance(documents, Documents)
    files = documents.workspace_index.files.values()
    return sorted(f.path.relative_to(root).as_posix() for f in files if f.parsed is not None)


def test_an_edit_re_checks_only_the_documents_it_touched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sleipnir.compiler import checker

    workspace = Workspace(tmp_path)
    first, second = job_yaml("gamma", "nothing", None, None), job_yaml("delta", "clean", "1.0.0", None)
    workspace.write("jobs/c.yaml", first + "---\n" + second)
    cold = check([str(tmp_path)], cache=True)
    checked: list[str] = []
    original = checker._check_document

    def spy(index: object, entry: object, answers: object, *, strict: bool) -> object:
        checked.append(f"{entry.file.rsplit('/', 1)[-1]}:{entry.name}")  # type: ignore[attr-defined]
        return original(index, entry, answers, strict=strict)  # type: ignore[arg-type]

    monkeypatch.setattr(checker, "_check_document", spy)
    # The second job changes; the first keeps its text and place, and its record.
    workspace.write("jobs/c.yaml", first + "---\n" + second.replace("1.0.0", "2.0.0") + "# a note\n")
    warm = check([str(tmp_path)], cache=True)
    assert checked == ["c.yaml:delta"]
    assert [d.code for d in warm.diagnostics] == ["unknown-prompt", "unknown-prompt-version"]
    assert warm.diagnostics[0] == cold.diagnostics[0]
    assert warm.diagnostics == check([str(tmp_path)]).diagnostics


def test_documents_moved_down_by_an_edit_above_them_are_checked_again(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    text = job_yaml("gamma", "nothing", None, "61 * * * *")
    workspace.write("jobs/c.yaml", text)
    check([str(tmp_path)], cache=True)
    workspace.write("jobs/c.yaml", "# a comment that moves the job down\n" + text)
    warm = check([str(tmp_path)], cache=True)
    assert warm.diagnostics == check([str(tmp_path)]).diagnostics
    assert {d.primary.span.line for d in warm.diagnostics if d.primary} == {8, 10}
