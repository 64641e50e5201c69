"""The import rules of ARCHITECTURE.md, checked by walking the package's source with `ast`.

- `compiler/` imports nothing of the runtime or the command line, and no asyncio, HTTP or database client.
- `runtime/` imports from the compiler only the IR (`compiler.ir`); `runtime/serve/` also the planner, since
  serve compiles what it serves. The runtime never reads YAML.
- `runtime/` imports nothing of the command line (`sleipnir.cli`, `sleipnir.executor`).
- Only `runtime/distributed/` imports Dask (`dask`, `distributed`), an optional dependency.
- `runtime/` has at most four modules at its top; every package has an `__init__.py` that opens with a
  docstring saying what it holds.
- No module is over 600 lines unless it says why in a comment (`Over 600 lines ...`).

A fixture package shows that each rule fails when it is broken.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"api": "sleipnir", "compiler": "sleipnir.compiler", "runtime": "sleipnir.runtime"}
IO_LIBRARIES = ("asyncio", "aiohttp", "httpx", "psycopg", "sqlite3", "socket", "smtplib")
LONG = 600


@dataclass(frozen=True)
class Import:
    module: str
    """The importing module, dotted (`sleipnir.runtime.engine.job`)."""
    target: str
    """What it imports, absolute (`sleipnir.compiler.ir`)."""
    line: int


def modules(root: Path) -> Iterator[tuple[str, Path]]:
    for folder, package in FOLDERS.items():
        base = root / folder
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join([package, *parts]), path


def imports(root: Path) -> Iterator[Import]:
    for name, path in modules(root):
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(name, alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1])
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module or ""
                # `from ..compiler import lower` imports a module: the imported name is part of the target.
                for alias in node.names:
                    yield Import(name, f"{target}.{alias.name}", node.lineno)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(root: Path) -> list[str]:
    found = []
    for imp in imports(root):
        where = f"{imp.module}:{imp.line} imports {imp.target}"
        if _within(imp.module, "sleipnir.compiler"):
            if _within(imp.target, "sleipnir.runtime") or _within(imp.target, "sleipnir.cli"):
                found.append(f"{where}: the compiler knows nothing of the runtime or the command line")
            if any(_within(imp.target, library) for library in IO_LIBRARIES):
                found.append(f"{where}: the compiler does no IO beyond reading files")
        if _within(imp.module, "sleipnir.runtime"):
            allowed = ["sleipnir.compiler.ir"]
            if _within(imp.module, "sleipnir.runtime.serve"):
                allowed.append("sleipnir.compiler.planner")
            if _within(imp.target, "sleipnir.compiler") and not any(_within(imp.target, a) for a in allowed):
                found.append(f"{where}: the runtime reads the IR, not the compiler's front end")
            if _within(imp.target, "yaml"):
                found.append(f"{where}: the runtime never reads YAML")
            if any(_within(imp.target, f"sleipnir.{api}") for api in ("cli", "executor")):
                found.append(f"{where}: the runtime knows nothing of the command line or the Python API")
        if any(_within(imp.target, library) for library in ("dask", "distributed")) and not _within(
            imp.module, "sleipnir.runtime.distributed"
        ):
            found.append(f"{where}: only runtime/distributed knows Dask (an optional dependency)")
    return found


def layout_problems(root: Path) -> list[str]:
    found = []
    top = sorted(p.name for p in (root / "runtime").glob("*.py"))
    if len(top) > 4:
        found.append(f"runtime/ has {len(top)} modules at its top (at most 4): {', '.join(top)}")
    for folder in FOLDERS:
        for package in sorted({p.parent for p in (root / folder).rglob("*.py")}):
            if not (package / "__init__.py").exists():
                found.append(f"{package.relative_to(root)} has no __init__.py (an editable install needs one)")
    for _, path in modules(root):
        if path.name == "__init__.py" and ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) is None:
            found.append(f"{path.relative_to(root)} has no docstring saying what the package holds")
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines > LONG and f"Over {LONG} lines" not in text:
            found.append(f"{path.relative_to(root)} has {lines} lines and no comment saying why it is over {LONG}")
    return found


def test_the_package_keeps_its_import_rules() -> None:
    assert violations(ROOT) == []


def test_the_layout_shows_its_rooms() -> None:
    assert layout_problems(ROOT) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@pytest.fixture
def fixture_package(tmp_path: Path) -> Path:
    """A small package laid out as Sleipnir is, keeping every rule."""
    _write(
        tmp_path,
        {
            "api/__init__.py": '"""api"""\n',
            "compiler/__init__.py": '"""compiler"""\n',
            "compiler/ir/__init__.py": '"""ir"""\n',
            "compiler/planner.py": "from .ir import Plan\n",
            "compiler/loader.py": "import yaml\n",
            "runtime/__init__.py": '"""runtime"""\n',
            "runtime/engine/__init__.py": '"""engine"""\n',
            "runtime/engine/job.py": "import asyncio\nfrom ...compiler.ir import Plan\n",
            "runtime/serve/__init__.py": '"""serve"""\n',
            "runtime/serve/service.py": "from ...compiler.planner import plan\nfrom ..engine import job\n",
        },
    )
    return tmp_path


def test_a_clean_fixture_package_passes(fixture_package: Path) -> None:
    assert violations(fixture_package) == []
    assert layout_problems(fixture_package) == []


@pytest.mark.parametrize(
    ("file", "text", "expected"),
    [
        ("compiler/bad.py", "from ..runtime.engine import job\n", "the compiler knows nothing of the runtime"),
        ("compiler/bad.py", "import sqlite3\n", "the compiler does no IO"),
        ("compiler/checks/bad.py", "from ...cli import main\n", "the compiler knows nothing of the runtime or the command line"),
        ("runtime/engine/bad.py", "from ...compiler.loader import load\n", "the runtime reads the IR"),
        ("runtime/engine/bad.py", "from ...compiler import lower\n", "the runtime reads the IR"),
        ("runtime/engine/bad.py", "from ...compiler.planner import plan\n", "the runtime reads the IR"),
        ("runtime/io/bad.py", "import yaml\n", "the runtime never reads YAML"),
        ("runtime/bad.py", "from sleipnir.cli import main\n", "the runtime knows nothing of the command line"),
        ("runtime/engine/bad.py", "import distributed\n", "only runtime/distributed knows Dask"),
        ("compiler/bad.py", "from dask import delayed\n", "only runtime/distributed knows Dask"),
    ],
)
def test_a_forbidden_import_is_found(fixture_package: Path, file: str, text: str, expected: str) -> None:
    _write(fixture_package, {file: text})
    found = violations(fixture_package)
    assert len(found) == 1 and expected in found[0], found


def test_a_crowded_runtime_and_a_long_module_are_found(fixture_package: Path) -> None:
    _write(fixture_package, {f"runtime/m{i}.py": "" for i in range(4)})
    _write(fixture_package, {"runtime/engine/long.py": "x = 1\n" * (LONG + 1)})
    _write(fixture_package, {"runtime/io/__init__.py": "x = 1\n", "runtime/serve/extra/a.py": ""})
    found = layout_problems(fixture_package)
    assert any("runtime/ has 5 modules" in f for f in found), found
    assert any("long.py has 601 lines" in f for f in found), found
    assert any("runtime/io/__init__.py has no docstring" in f for f in found), found
    assert any("runtime/serve/extra has no __init__.py" in f for f in found), found
