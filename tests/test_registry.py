"""Versions order by SemVer 2.0.0 precedence (section 11), as the `semver` package orders them, and "the newest version"
of a prompt module or stack is the last in that order."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from semver import Version

from sleipnir.cli import main
from sleipnir.compiler import check
from sleipnir.compiler.registry import Registry, version_key

# SemVer 2.0.0, section 11, its example of precedence, lowest first.
PRECEDENCE = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
]


@dataclass(frozen=True)
class Entry:
    """What the registry files: the fields of `Named`."""

    version: str
    kind: str = "prompt"
    name: str = "tone_probe"
    file: str = "prompts.yaml"
    index: int = 0


def test_versions_sort_in_the_precedence_of_semver_section_11() -> None:
    for shuffled in (list(reversed(PRECEDENCE)), PRECEDENCE[3:] + PRECEDENCE[:3]):
        assert sorted(shuffled, key=version_key) == PRECEDENCE


def test_numeric_pre_release_identifiers_compare_as_numbers() -> None:
    assert sorted(["1.0.0-rc.10", "1.0.0-rc.2", "1.0.0"], key=version_key) == [
        "1.0.0-rc.2",
        "1.0.0-rc.10",
        "1.0.0",
    ]
    assert sorted(["1.10.0", "1.9.0", "1.2.0"], key=version_key) == ["1.2.0", "1.9.0", "1.10.0"]


def test_the_newest_version_is_the_last_in_precedence() -> None:
    registry = Registry.build(Entry(v) for v in ["1.0.0-rc.10", "1.0.0-rc.2", "0.9.0"])
    assert registry.versions("prompt", "tone_probe") == ["0.9.0", "1.0.0-rc.2", "1.0.0-rc.10"]
    newest = registry.find("prompt", "tone_probe")
    assert isinstance(newest, Entry) and newest.version == "1.0.0-rc.10"
    registry = Registry.build(Entry(v) for v in reversed(PRECEDENCE))
    newest = registry.find("prompt", "tone_probe")
    assert isinstance(newest, Entry) and newest.version == "1.0.0"


def test_a_version_that_is_not_semver_sorts_first_and_never_fails() -> None:
    # "1.0.0-01" passes the schema's loose pattern but is not SemVer (a numeric identifier with a leading zero).
    assert sorted(["1.0.0", "1.0.0-01", "", "banana"], key=version_key) == ["", "1.0.0-01", "banana", "1.0.0"]
    # Equal in precedence (build metadata is ignored by SemVer): ordered by text, so the order is stable.
    assert sorted(["1.0.0+b", "1.0.0+a"], key=version_key) == ["1.0.0+a", "1.0.0+b"]


def prompt(version: str) -> str:
    return textwrap.dedent(
        f"""
        prompt:
          name: tone_probe
          version: {version}
          description: The tone probe, for tests.
          template:
            user: Work on this item.
        """
    ).lstrip()


def test_check_names_the_newest_release_candidate_by_precedence(tmp_path: Path) -> None:
    (tmp_path / "prompts.yaml").write_text("---\n".join(prompt(v) for v in ["1.0.0-rc.10", "1.0.0-rc.2"]))
    (tmp_path / "job.yaml").write_text(
        "job:\n  name: j\n  prompts:\n    - name: tone_probe\n      version: 3.0.0\n"
    )
    [diagnostic] = check([str(tmp_path)]).diagnostics
    assert diagnostic.code == "unknown-prompt-version"
    assert diagnostic.notes == ("the versions of `tone_probe` are: 1.0.0-rc.2, 1.0.0-rc.10",)
    assert diagnostic.help is not None and "`version: 1.0.0-rc.10`, the newest" in diagnostic.help


def test_an_invalid_version_is_a_diagnostic_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "prompts.yaml").write_text("---\n".join(prompt(v) for v in ["banana", "1.0.0-01", "1.0.0"]))
    (tmp_path / "job.yaml").write_text("job:\n  name: j\n  prompts:\n    - name: tone_probe\n")
    result = CliRunner().invoke(main, ["check", str(tmp_path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "prompts.yaml:3:12" in result.output and "a semantic version such as 1.0.0" in result.output


_IDENTIFIERS = st.sampled_from(["0", "1", "2", "10", "11", "a", "b", "alpha", "rc", "-", "1a", "a1", "01", "z-9"])


@given(
    st.lists(
        st.builds(
            lambda core, pre, build: ".".join(core) + (f"-{'.'.join(pre)}" if pre else "") + (f"+{build}" if build else ""),
            st.lists(st.sampled_from(["0", "1", "2", "10", "01"]), min_size=2, max_size=4),
            st.lists(_IDENTIFIERS, max_size=3),
            st.sampled_from(["", "b", "b.1", "..", "x+y"]),
        ),
        min_size=2,
        max_size=8,
    )
)
def test_the_order_is_the_semver_packages(versions: list[str]) -> None:
    """`version_key` orders as the `semver` package does (its own parser, not imported by a check)."""

    def reference(version: str) -> tuple[int, Version | None, str]:
        try:
            return (1, Version.parse(version), version)
        except ValueError:
            return (0, None, version)

    assert sorted(versions, key=version_key) == sorted(versions, key=reference)
