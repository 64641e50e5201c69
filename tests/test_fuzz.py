"""Fuzzing `check` and `plan`: no input ends in an internal error, and none takes more than 10 s.

The hypothesis test mutates `spec/examples` and `examples` (tests/fuzzing.py) for a fixed number of cases,
about a minute on the standard machine: `SLEIPNIR_FUZZ_EXAMPLES` sets another count (the closing note of issue 12
reports a run of 5,000). Every input that ever crashed is kept in `tests/fuzz_corpus/` and replayed here: a file
there is a workspace of YAML documents, and a first line `# params: K=V K=V` gives `plan` its `--param`s.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from fuzzing import ENVIRON, documents, mutate, mutations, run_case, workspace_copy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sleipnir.compiler.checker import check
from sleipnir.compiler.planner import plan

CORPUS = Path(__file__).parent / "fuzz_corpus"
EXAMPLES = int(os.environ.get("SLEIPNIR_FUZZ_EXAMPLES", "300"))
SLOW = 10.0
"""The issue's bound on one case, in seconds: a hang is a finding, like a crash."""
PARAM_KEYS = ("region", "table", "name", "model", "batch_size", "input.path", "output.path", "input.query",
              "logging.path", "execution.concurrency", "output.dead_letter", "prompts")


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    with workspace_copy(tmp_path_factory.mktemp("fuzz")) as found:
        return found


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    which=st.integers(min_value=0, max_value=len(documents()) - 1),
    mutation=mutations(),
    params=st.lists(st.tuples(st.sampled_from(PARAM_KEYS), st.text(max_size=30)), max_size=2),
)
def test_check_and_plan_survive_mutated_documents(
    copies: dict[Path, Path], which: int, mutation: object, params: list[tuple[str, str]]
) -> None:
    original = documents()[which]
    text = mutate(original.read_text(encoding="utf-8"), mutation)  # type: ignore[arg-type]
    outcome = run_case(copies[original], text, [f"{k}={v}" for k, v in params])
    if outcome.error is not None:
        raise AssertionError(
            f"internal error on a mutation of {original.name}; add the input to tests/fuzz_corpus/:\n{text[:2000]}"
        ) from outcome.error
    assert outcome.seconds < SLOW, f"{original.name} mutated took {outcome.seconds:.1f}s:\n{text[:2000]}"


@pytest.mark.parametrize("case", sorted(CORPUS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_past_crash_is_now_a_diagnostic(case: Path, tmp_path: Path) -> None:
    """Each input once crashed `check` or `plan` (its comment says how); now it gives diagnostics."""
    text = case.read_text(encoding="utf-8")
    first = text.splitlines()[0]
    params = first.removeprefix("# params:").split() if first.startswith("# params:") else []
    root = tmp_path / "workspace"
    (root / "jobs").mkdir(parents=True)
    shutil.copy(case, root / "jobs" / case.name)
    (root / "sleipnir.yaml").write_text("name: corpus\nfallback_provider: mock\n")
    checked = check([str(root)])
    planned = plan(workspace=str(root), params=params, environ=ENVIRON)
    assert "internal-error" not in {d.code for d in (*checked.diagnostics, *planned.diagnostics)}
    assert not checked.ok or not planned.ok, "a corpus case is an input with a problem, which must be reported"
