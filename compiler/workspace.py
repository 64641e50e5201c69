"""Paths on disk -> the loaded workspace: every YAML document under the given files and folders, classified."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .diagnostics import Diagnostics
from .documents import MANIFEST_NAMES, WORKSPACE, Document, classify
from .loader import SourceFile, decode, load

YAML_SUFFIXES = (".yaml", ".yml")
PARAMS_SUFFIXES = (".params.yaml", ".params.yml")
"""Parameter files for `--param-file` (`backfill.params.yaml`) are values, not documents: never read as such."""
PRICES_FILE = "prices.yaml"
"""The model price table `plan` estimates cost with: data, not a document, in the stdlib and a workspace root."""
_SKIPPED_FOLDERS = {"node_modules", "__pycache__", "site-packages"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Workspace:
    """Everything a check or a compile reads."""

    root: Path | None
    """The folder holding `sleipnir.yaml`, or None when the paths are in no workspace."""
    folder: Path | None = None
    """The workspace's folder: `root`, or without a manifest the folder of the first path (or the current
    folder), whose files references resolve against all the same."""
    manifest: Document | None
    documents: Sequence[Document]
    """The documents being checked (parsed when first read, after an incremental check)."""
    context: Sequence[Document]
    """The rest of the workspace: references may resolve against these documents, which are not checked."""
    stdlib: Sequence[Document]
    """Sleipnir's standard library; the workspace's own documents shadow it."""
    sources: Mapping[str, SourceFile]
    """Text of every file read, by display path, for rendering."""

    @property
    def checked_files(self) -> int:
        """How many files the checked documents are in; read from the index where there is one, so counting
        parses nothing."""
        entries = getattr(self.documents, "entries", self.documents)
        return len({d.file for d in entries})


def find_root(start: Path) -> Path | None:
    """The nearest folder at or above `start` that holds a `sleipnir.yaml`."""
    folder = start if start.is_dir() else start.parent
    # A relative path's own `.parents` stop at the current folder: the folders above it are walked absolute.
    for candidate in (folder, *folder.absolute().parents):
        if any((candidate / name).is_file() for name in MANIFEST_NAMES):
            return candidate
    return None


def workspace_folder(path: Path) -> Path:
    """The workspace `path` is in: the folder of the nearest `sleipnir.yaml`, or without one the folder itself
    (or the file's folder)."""
    found = find_root(path)
    if found is not None:
        return found
    return path if path.is_dir() else path.parent


def display_path(path: Path) -> str:
    """`path` relative to the current folder when it is below it, else absolute."""
    absolute = path.absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def yaml_files(path: Path) -> list[Path]:
    """The YAML files at `path`: the file itself, or every one below a folder, hidden folders skipped, sorted."""
    if path.is_file():
        return [path]
    found: list[Path] = []
    for folder, subfolders, files in os.walk(path):
        subfolders[:] = sorted(s for s in subfolders if not s.startswith(".") and s not in _SKIPPED_FOLDERS)
        found.extend(
            Path(folder, name)
            for name in sorted(files)
            if name.endswith(YAML_SUFFIXES)
            and not name.endswith(PARAMS_SUFFIXES)
            and not (name == PRICES_FILE and _holds_prices(folder, files))
        )
    return found


def _holds_prices(folder: str, files: list[str]) -> bool:
    """Whether a `prices.yaml` in `folder` is the price table: beside a workspace manifest, or the stdlib's."""
    return any(name in files for name in MANIFEST_NAMES) or Path(folder).resolve() == stdlib_root().resolve()


def read_documents(files: Iterable[Path], sink: Diagnostics, sources: dict[str, SourceFile]) -> list[Document]:
    """Load and classify every document of `files`, recording each file's text in `sources`."""
    documents: list[Document] = []
    for path in files:
        shown = display_path(path)
        try:
            data = path.read_bytes()
        except OSError as error:
            sink.emit("io-error", f"cannot read file: {error.strerror or error}", None, file=shown)
            continue
        text = decode(data, shown, sink)
        if text is None:
            continue
        sources[shown] = SourceFile(path=shown, text=text)
        documents.extend(classify(load(text, shown, sink), sink))
    return documents


def package_folder(package: str) -> Path:
    """The folder of one of Sleipnir's data packages (`sleipnir.stdlib`, `sleipnir.schema`), as installed: a
    package on disk, so its `__file__` says where (`importlib.resources` cost every check 8 ms of imports)."""
    return Path(str(importlib.import_module(package).__file__)).parent


def stdlib_root() -> Path:
    """The folder of Sleipnir's standard library, as installed."""
    return package_folder("sleipnir.stdlib")


def stdlib_files() -> list[Path]:
    """The YAML files of Sleipnir's standard library, as installed."""
    return yaml_files(stdlib_root())


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """Which files a check reads: the ones it checks, the rest of their workspace, and the stdlib."""

    root: Path | None
    """The folder holding `sleipnir.yaml`, or None."""
    folder: Path
    """The workspace's folder: `root`, or without a manifest the folder of the first path (or the current one)."""
    checked: tuple[Path, ...]
    context: tuple[Path, ...]
    stdlib: tuple[Path, ...]


def discover(paths: Sequence[str], sink: Diagnostics) -> Layout:
    """The files at `paths` (the workspace around the current folder when empty), and the files references
    among them may resolve against: the rest of the workspace that holds the first path, and the stdlib.

    Without a `sleipnir.yaml` at or above the first path, its folder (the path itself when it is a folder; the
    current folder when no path is given) is the workspace: references resolve against every file below it."""
    targets = [Path(p) for p in paths] or [find_root(Path.cwd()) or Path.cwd()]
    files: list[Path] = []
    for target in targets:
        if not target.exists():
            sink.emit("io-error", "no such file or folder", None, file=str(target))
            continue
        found = yaml_files(target)
        if not found:
            sink.emit("no-yaml-files", "no YAML files here", None, file=display_path(target))
        files.extend(found)
    real = _Real()
    files = _unique(files, real)
    root = find_root(targets[0]) if targets[0].exists() else None
    # A first path that does not exist has no workspace around it: nothing resolves against its parent folder
    # (which could be `/`), nor against the current one.
    folder = root or (workspace_folder(targets[0]) if targets[0].exists() else targets[0])
    checked = {real(f) for f in files}
    context_files: list[Path] = []
    if folder.is_dir():
        # `sleipnir check` in the workspace's folder walks it once, not twice.
        around = found if len(targets) == 1 and folder == targets[0] else yaml_files(folder)
        context_files.extend(f for f in around if real(f) not in checked)
    return Layout(
        root=root,
        folder=folder,
        checked=tuple(files),
        context=tuple(_unique(context_files, real)),
        stdlib=tuple(f for f in stdlib_files() if real(f) not in checked),
    )


def load_workspace(paths: Sequence[str], sink: Diagnostics) -> Workspace:
    """Load the documents at `paths` (the workspace around the current folder when empty), all at once.

    References resolve against the whole workspace that holds the paths and against the stdlib, but only the
    given paths are checked: problems in the other files are not reported. (`checker.check` reads the same
    files through the incremental index instead.)
    """
    layout = discover(paths, sink)
    sources: dict[str, SourceFile] = {}
    documents = read_documents(layout.checked, sink, sources)
    context = read_documents(layout.context, Diagnostics(), sources)
    stdlib = read_documents(layout.stdlib, Diagnostics(), sources)
    root = layout.root
    manifest = next((d for d in documents + context if d.kind == WORKSPACE and _in(root, d)), None)
    return Workspace(
        root=root,
        folder=layout.folder,
        manifest=manifest,
        documents=tuple(documents),
        context=tuple(context),
        stdlib=tuple(stdlib),
        sources=sources,
    )


def _in(root: Path | None, document: Document) -> bool:
    return root is not None and Path(document.file).absolute().parent == root.absolute()


class _Real:
    """The real path (`Path.resolve()`) of each file a discovery finds, once, as text: each folder is resolved
    once for all the files in it (a resolve is a system call per folder in the path), and a file itself costs
    one `lstat`, followed only when it is a link."""

    def __init__(self) -> None:
        self.files: dict[Path, str] = {}
        self.folders: dict[str, str] = {}

    def __call__(self, path: Path) -> str:
        found = self.files.get(path)
        if found is None:
            folder, name = os.path.split(path)  # a file's name: the folder part alone may hold `..` or links
            real = self.folders.get(folder)
            if real is None:
                real = self.folders[folder] = os.path.realpath(folder)
            full = os.path.join(real, name)
            found = self.files[path] = os.path.realpath(full) if os.path.islink(full) else full
        return found


def _unique(files: Iterable[Path], real: _Real) -> list[Path]:
    seen: set[str] = set()
    unique = []
    for path in files:
        key = real(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique
