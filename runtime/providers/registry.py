"""Finding a provider by protocol, and keeping one provider (one connection pool) per endpoint.

`make_provider(config)` looks `config.protocol` up among the built-ins (`openai`, `mock`), then in the
`sleipnir.providers` entry-point group, and calls the factory it finds with the config. Nothing is imported
until it is asked for: the built-ins are named by module path, and entry points are read only for a protocol
that is not built in, so `mock` never loads aiohttp and one broken plugin breaks only the jobs that use it.

An unknown protocol, or a plugin that fails to load, raises `ProviderError(retryable=False, kind="client")`
naming the known protocols (with a "did you mean"): the same exception the runtime already handles for every
non-retryable provider failure, so a configuration mistake fails like a 4xx, never as a traceback.

`resolve_endpoint` and `resolve_api_key` are the fallbacks the runtime applies before it builds a
`ProviderConfig` for an OpenAI-compatible endpoint (they live here, not in `openai`, so that resolving them
never imports aiohttp; `openai` re-exports them).

`ProviderPool` caches providers by (protocol, base URL, SHA-256 of the API key, options), so that every prompt
call to one endpoint shares one provider and so one pooled client; `aclose()` closes them all.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import cast

from .base import Provider, ProviderConfig, ProviderError, ProviderFactory

__all__ = [
    "BUILTINS",
    "DEFAULT_BASE_URL",
    "ENTRY_POINT_GROUP",
    "ProviderPool",
    "known_protocols",
    "make_provider",
    "resolve_api_key",
    "resolve_endpoint",
]

ENTRY_POINT_GROUP = "sleipnir.providers"
DEFAULT_BASE_URL = "https://api.openai.com/v1"

BUILTINS = {
    "mock": "sleipnir.runtime.providers.mock:MockProvider",
    "openai": "sleipnir.runtime.providers.openai:OpenAIProvider",
}
"""Protocol -> `module:attribute` of its factory. Built-ins win over entry points of the same name."""


def known_protocols() -> list[str]:
    """Every protocol `make_provider` can make, sorted: the built-ins and the installed entry points."""
    return sorted(set(BUILTINS) | {e.name for e in entry_points(group=ENTRY_POINT_GROUP)})


def make_provider(config: ProviderConfig) -> Provider:
    """A new provider for `config`. Raises `ProviderError(retryable=False, kind="client")` when no built-in or
    entry point speaks `config.protocol`, when its plugin fails to import, or when the factory rejects the
    config."""
    return _factory(config.protocol)(config)


def _factory(protocol: str) -> ProviderFactory:
    target = BUILTINS.get(protocol)
    if target is None:
        found = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == protocol]
        if not found:
            known = known_protocols()
            close = difflib.get_close_matches(protocol, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ProviderError(
                f"unknown provider protocol {protocol!r}{hint} (known: {', '.join(known)}; third-party "
                f"providers register in the {ENTRY_POINT_GROUP!r} entry-point group)",
                retryable=False,
                kind="client",
            )
        target = found[0].value
    module_name, _, attribute = target.partition(":")
    try:
        factory: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            factory = getattr(factory, part)
    except (ImportError, AttributeError) as error:
        raise ProviderError(
            f"provider protocol {protocol!r}: cannot load {target}: {error}", retryable=False, kind="client"
        ) from error
    if not callable(factory):
        raise ProviderError(
            f"provider protocol {protocol!r}: {target} is not callable", retryable=False, kind="client"
        )
    return cast(ProviderFactory, factory)


def resolve_endpoint(explicit: str | None, configured: str | None, environ: Mapping[str, str]) -> str:
    """The base URL of an OpenAI-compatible endpoint, without a trailing slash: the prompt's `endpoint`
    (`explicit`), else the workspace provider's `base_url` (`configured`), else `OPENAI_BASE_URL`, else
    https://api.openai.com/v1. Empty strings count as unset."""
    return (explicit or configured or environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def resolve_api_key(
    explicit: str | None, configured_env: str | None, environ: Mapping[str, str]
) -> str | None:
    """The API key: `explicit` (an `api_key` the runtime already resolved), else the environment variable named
    `configured_env` (a provider's own key variable), else `OPENAI_API_KEY`; None when all are unset or empty,
    and then no `Authorization` header is sent (local vLLM, Ollama and llama.cpp servers need none)."""
    if explicit:
        return explicit
    if configured_env and environ.get(configured_env):
        return environ[configured_env]
    return environ.get("OPENAI_API_KEY") or None


class ProviderPool:
    """One provider per endpoint, made on first use and shared afterwards; `aclose()` closes them all.

    The key is (protocol, base URL, SHA-256 of the API key, options): two workspace providers that name the same
    endpoint share one pool, and the key itself is never kept in the clear. Pooled clients belong to the event
    loop they were first used in: use one pool per run (per `asyncio.run`), and close it before that loop ends.
    """

    __slots__ = ("_factory", "_providers")

    def __init__(self, factory: Callable[[ProviderConfig], Provider] = make_provider) -> None:
        self._factory = factory
        self._providers: dict[tuple[str, str | None, str | None, str], Provider] = {}

    def get(self, config: ProviderConfig) -> Provider:
        """The provider for `config`'s endpoint, made now if it is the first call for it."""
        key_digest = hashlib.sha256(config.api_key.encode()).hexdigest() if config.api_key else None
        options = json.dumps(config.options, sort_keys=True, default=repr)
        key = (config.protocol, config.base_url, key_digest, options)
        provider = self._providers.get(key)
        if provider is None:
            provider = self._providers[key] = self._factory(config)
        return provider

    def __len__(self) -> int:
        return len(self._providers)

    async def aclose(self) -> None:
        """Close every provider (all of them, even when one fails; the first failure is raised after)."""
        providers, self._providers = list(self._providers.values()), {}
        failure: BaseException | None = None
        for provider in providers:
            try:
                await provider.aclose()
            except Exception as error:
                failure = failure or error
        if failure is not None:
            raise failure
