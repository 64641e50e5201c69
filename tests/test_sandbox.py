"""What the template sandbox refuses is `template-unsafe` in `check`, and an item's failure at run time, never a
crash of the run (issue 12): `''.__class__`, a method that changes a value, a repeat of a billion."""

from __future__ import annotations

from pathlib import Path

import pytest

from sleipnir.compiler.checker import check
from sleipnir.compiler.ir import PromptCall, PromptModule
from sleipnir.runtime.engine.render import ItemError, PreparedCall

CALL = PromptCall(id="p", prompt="p", version="1.0.0", output="p", model="mock", provider="mock")


def prompt_file(root: Path, system: str, user: str = "hello") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "sleipnir.yaml").write_text("name: sandbox\n")
    (root / "p.yaml").write_text(
        "prompt:\n  name: p\n  version: 1.0.0\n  description: p\n  variables:\n    items_seen: {type: list}\n"
        f"  parameters:\n    tone: {{default: calm}}\n  template:\n    system: |\n      You are {{{{ parameters.tone }}}}.\n"
        f"      {system}\n    user: {user!r}\n"
    )
    return root


@pytest.mark.parametrize(
    ("system", "message"),
    [
        ("{{ ''.__class__.__mro__ }}", "access to attribute '__class__' of 'str' object is unsafe"),
        ("{{ items_seen.append(1) }}", "access to attribute 'append' of 'list' object is unsafe"),
        ("{{ 'a' * 10**9 }}", "repeating a value more than 10,000 times is refused"),
        ("{{ 2 ** 1000000 }}", "the power 1000000 is too large"),
        ("{{ '-' * 100000 }}", "repeating a value more than 10,000 times is refused"),
    ],
)
def test_check_renders_each_template_in_the_sandbox_and_reports_what_it_refuses(
    tmp_path: Path, system: str, message: str
) -> None:
    result = check([str(prompt_file(tmp_path / "ws", system))])
    [error] = result.diagnostics
    assert error.code == "template-unsafe" and message in error.message
    assert error.primary is not None and error.primary.span.line == 12


def test_a_template_that_renders_is_clean_even_with_names_only_a_run_supplies(tmp_path: Path) -> None:
    root = prompt_file(tmp_path / "ws", "{% for x in items_seen %}{{ x | upper }}{% endfor %} {{ earlier.answer }}")
    assert check([str(root)]).ok


@pytest.mark.parametrize(
    ("system", "user"),
    [("{{ parameters.__class__ }}", "{{ v }}"), (None, "{{ v.__class__ }}"), (None, "{{ 'a' * 100001 }}")],
)
def test_at_run_time_a_refusal_is_the_items_failure(system: str | None, user: str) -> None:
    module = PromptModule(name="p", version="1.0.0", file="p.yaml", system=system, user=user)
    call = PreparedCall(CALL, module)  # a fixed system message is rendered here: it must not raise
    with pytest.raises(ItemError, match=r"^`p@1.0.0` template: refused by the sandbox: "):
        call.messages({"v": "x", "parameters": {}})
