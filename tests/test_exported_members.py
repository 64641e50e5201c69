"""The public API is a short sorted `__all__`, and everything in it exists."""

from __future__ import annotations

import sleipnir
import sleipnir.compiler


def test_public_api_is_sorted_and_resolvable() -> None:
    for module in (sleipnir, sleipnir.compiler):
        assert list(module.__all__) == sorted(module.__all__)
        for name in module.__all__:
            assert getattr(module, name) is not None
