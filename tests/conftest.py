"""Shared pytest configuration: the `--update-goldens` switch."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens",
        action="store_true",
        default=False,
        help="Rewrite the rendered .out files of tests/goldens instead of comparing them.",
    )


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    """True when the run was asked to rewrite golden outputs."""
    return bool(request.config.getoption("--update-goldens"))
