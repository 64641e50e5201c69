"""The `openai` provider: OpenAI-compatible Chat Completions (`POST {base_url}/chat/completions`).

The same code talks to OpenAI, vLLM, Ollama and llama.cpp servers: it sends `model`, `messages`, `temperature`,
`max_tokens`, `top_p`, and, when the call wants JSON, the output schema as the provider's `structured_output`
option says (`runtime/providers/structured.py`): as structured outputs (`response_format: {"type":
"json_schema", ...}`, the default), or in the system message with `json_object` or no `response_format`. A
server that answers 400 because it does not take the `json_schema` format (and only such a 400) gets that call
again once as `json_object` with the schema in the system message; the provider remembers it for the endpoint
and says so once, in the reply's `notice`. The runtime validates every reply against the full schema.

The transport is a bare aiohttp `ClientSession`, one per endpoint, chosen by measurement
(5,000 calls at concurrency 100 against a loopback server that was never the
bottleneck). A bare aiohttp session reached about 9,900 calls/s at 0 ms server latency (100 us of CPU a call) and
1,810/s at 50 ms, near the 2,000/s that latency allows. A bare `httpx.AsyncClient` reached about 450/s and
100/s: its connection pool does bookkeeping proportional to the pool size on every request, and it becomes
the bottleneck well below the scheduler's concurrency. httpx behind the `httpx-aiohttp` transport reached
3,400/s and 1,770/s, a third of aiohttp's throughput at 0 ms for an API we do not need here. So:
- the session and its `TCPConnector` are created lazily inside the running loop, on the first call, and kept
  (keep-alive) until `aclose`; the connector's limit defaults to 0 (none), because the scheduler's
  `execution.concurrency` already bounds the calls in flight (`options["max_connections"]` sets one);
- per call, the work is one JSON encoding of the request and one read and decoding of the body, both with
  orjson (about 15 and 5 to 20 times faster than `json` on a chat request and reply): headers and the URL are
  built once, timeouts are cached per value.

Failures become `ProviderError`s whose `kind` the retry policy reads:
- 429: `rate_limit`, retryable, `retry_after` from `retry-after-ms`, `Retry-After` (seconds or an HTTP date),
  or OpenAI's `x-ratelimit-reset-requests`/`-tokens` for the limit whose remaining count is 0;
- 5xx: `server`, retryable, `retry_after` from the same headers when the server sends them;
- a timeout (also a 408): `timeout`, retryable; a refused, reset or dropped connection or a cut-off body:
  `connection`, retryable;
- a 400 saying the context is too long (`context_length_exceeded`, "maximum context length"):
  `context_length`, not retryable; 401 and 403: `auth`, and 404 (no such model, or no chat endpoint there):
  `not_found`, neither retryable, and the runtime stops the run at the first (`RUN_LEVEL` kinds); any other
  4xx: `client`, not retryable;
- a 2xx whose body is not JSON or has no `choices[0].message.content` string: `bad_reply`, retryable.

No message ever carries the API key: messages name the URL and the status, and a server's error text is
trimmed and has the key blanked out should the server echo it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
from yarl import URL

from ...compiler.ir.common import parse_duration
from ...compiler.ir.common import retry_after as header_retry_after
from .base import ChatRequest, ChatResponse, ProviderConfig, ProviderError, loads
from .registry import DEFAULT_BASE_URL, resolve_api_key, resolve_endpoint
from .structured import MODES, response_format, unsupported_format, with_instructions

__all__ = ["DEFAULT_BASE_URL", "OpenAIProvider", "resolve_api_key", "resolve_endpoint", "retry_after"]

_CONTEXT_LENGTH = re.compile(r"context[_ ]length|context size|maximum context", re.IGNORECASE)


def _plain(value: Any) -> Any:
    """JSON encoding of the mappings and tuples a compiled plan carries (frozen, not dicts)."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _encoded(value: Any) -> bytes:
    """A request body: orjson, about 15 times faster than `json` on a chat request, compact JSON in UTF-8."""
    return orjson.dumps(value, default=_plain)


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds a 429 or 5xx reply asks the client to wait, or None when it says nothing.

    `retry-after-ms`, then `Retry-After` (seconds, or an HTTP date counted from `now`, a Unix time), read by the
    one parser (`compiler.ir.common.retry_after`); then OpenAI's `x-ratelimit-reset-requests` /
    `x-ratelimit-reset-tokens` (`1s`, `6m0s`, `20ms`) for whichever limit has no requests or tokens remaining.
    `headers` must look names up case-insensitively (aiohttp's do).
    """
    asked = header_retry_after(headers, now)
    if asked is not None:
        return asked
    waits = [
        _duration(headers.get(f"x-ratelimit-reset-{limit}", ""))
        for limit in ("requests", "tokens")
        if headers.get(f"x-ratelimit-remaining-{limit}") == "0"
    ]
    known = [w for w in waits if w is not None]
    return max(known) if known else None


def _duration(text: str) -> float | None:
    """`1m30.5s` -> 90.5; None when `text` is not a duration."""
    try:
        return parse_duration(text) if text else None
    except ValueError:
        return None


class OpenAIProvider:
    """An OpenAI-compatible endpoint. One instance keeps one aiohttp session (one connection pool), is safe to
    share between tasks of one event loop, and must be closed with `aclose`.

    `environ` (default `os.environ`) supplies `OPENAI_BASE_URL` and `OPENAI_API_KEY` when the config leaves them
    unset. `config.options`: `max_connections` (the connector's limit, 0 for none) and `api_key_env` (the
    variable to read the key from before `OPENAI_API_KEY`).
    """

    __slots__ = (
        "_api_key",
        "_formats",
        "_headers",
        "_keep",
        "_limit",
        "_mode",
        "_session",
        "_timeouts",
        "_url",
        "_where",
        "base_url",
        "name",
    )

    def __init__(self, config: ProviderConfig, *, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.name = config.name
        self.base_url = resolve_endpoint(None, config.base_url, environ)
        if not self.base_url.startswith(("http://", "https://")):
            raise ProviderError(
                f"provider {config.name!r}: base URL {self.base_url!r} must start with http:// or https://",
                retryable=False,
                kind="client",
            )
        self._url = URL(self.base_url + "/chat/completions")
        # Messages show the URL without any user or password the base URL may carry.
        self._where = str(self._url.with_user(None))
        key_env = config.options.get("api_key_env")
        self._api_key = resolve_api_key(
            config.api_key, key_env if isinstance(key_env, str) else None, environ
        )
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            self._headers["Authorization"] = f"Bearer {self._api_key}"
        limit = config.options.get("max_connections", 0)
        self._limit = limit if isinstance(limit, int) and limit >= 0 else 0
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._formats: dict[tuple[str, int, str, bool], bytes] = {}
        """`,"response_format":{...}` as JSON, by mode and schema."""
        self._keep: list[Any] = []
        mode = config.options.get("structured_output", "json_schema")
        if mode not in MODES:
            raise ProviderError(
                f"provider {config.name!r}: structured_output must be one of {', '.join(MODES)}, not {mode!r}",
                retryable=False,
                kind="client",
            )
        self._mode: str = mode
        """How this endpoint takes an output schema; `json_object` once it refused `json_schema`."""

    def __repr__(self) -> str:
        return f"OpenAIProvider(name={self.name!r}, url={self._where!r})"

    async def complete(self, request: ChatRequest) -> ChatResponse:
        mode = self._mode
        if mode != "json_schema" or request.sent_schema is None:
            return await self._post(request, mode)
        try:
            return await self._post(request, mode)
        except ProviderError as error:
            if not error.unsupported_format:
                raise
        # The server refuses structured outputs: this call, and every later one to this endpoint, goes as
        # `json_object` with the schema in the system message.
        first = self._mode == "json_schema"
        self._mode = "json_object"
        response = await self._post(request, "json_object")
        if not first:
            return response
        notice = (
            f"provider `{self.name}` ({self._where}) does not take `json_schema` structured outputs: its calls "
            "send the output schema in the system message with `json_object` (set `structured_output: "
            "json_object` for it in sleipnir.yaml to say so)"
        )
        return ChatResponse(
            text=response.text,
            prompt_tokens=response.prompt_tokens,
            completion_tokens=response.completion_tokens,
            model=response.model,
            notice=notice,
        )

    async def _post(self, request: ChatRequest, mode: str) -> ChatResponse:
        session = self._session
        if session is None or session.closed:
            session = self._session = self._open()
        timeout = self._timeouts.get(request.timeout)
        if timeout is None:
            timeout = self._timeouts[request.timeout] = aiohttp.ClientTimeout(total=request.timeout)
        messages: Any = request.messages
        schema = request.output_schema
        if request.json_output and schema is not None and mode != "json_schema":
            messages = with_instructions(messages, schema)
        payload: dict[str, Any] = {"model": request.model, "messages": messages}
        if request.temperature is not None:
            payload["temperature"] = request.temperature
        if request.max_tokens is not None:
            payload["max_tokens"] = request.max_tokens
        if request.top_p is not None:
            payload["top_p"] = request.top_p
        body = _encoded(payload)
        if request.json_output:
            # The schema is the same for every call of a prompt: its JSON is made once and spliced in.
            key = (mode, id(request.sent_schema), request.schema_name, request.strict)
            asked = self._formats.get(key)
            if asked is None:
                made = response_format(mode, request.schema_name, request.sent_schema, request.strict)
                asked = self._formats[key] = (
                    b',"response_format":' + _encoded(made) if made is not None else b""
                )
                self._keep.append(request.sent_schema)  # the id stays this schema's while it is kept
            if asked:
                body = body[:-1] + asked + b"}"
        try:
            async with session.post(self._url, data=body, timeout=timeout) as response:
                raw = await response.read()
                status = response.status
                if status >= 300:
                    raise self._status_error(status, response.headers, raw)
        except TimeoutError:
            raise ProviderError(
                f"no reply from {self._where} within {request.timeout:g} s", retryable=True, kind="timeout"
            ) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
            raise ProviderError(
                f"connection to {self._where} failed: {self._scrub(str(error) or type(error).__name__)}",
                retryable=True,
                kind="connection",
            ) from None
        except aiohttp.InvalidURL as error:
            raise ProviderError(f"invalid URL {error}", retryable=False, kind="client") from None
        except aiohttp.ClientError as error:
            # A reply that is not valid HTTP: the server or a proxy in between broke it, which may not last.
            raise ProviderError(
                f"bad HTTP reply from {self._where}: {self._scrub(str(error))}",
                retryable=True,
                kind="connection",
            ) from None
        return self._parse(raw, request.model)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=0, ttl_dns_cache=300)
        return aiohttp.ClientSession(connector=connector, headers=self._headers)

    def _parse(self, raw: bytes, model: str) -> ChatResponse:
        try:
            data = loads(raw)
            choice = data["choices"][0]
            text = choice["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("content is not a string")
            usage = data.get("usage") or {}
            return ChatResponse(
                text=text,
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                model=str(data.get("model") or model),
            )
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
            raise ProviderError(
                f"unusable reply from {self._where}: {type(error).__name__}: {self._scrub(str(error))[:200]}",
                retryable=True,
                kind="bad_reply",
            ) from None

    def _status_error(self, status: int, headers: Mapping[str, str], raw: bytes) -> ProviderError:
        detail, code, param = _error_detail(raw)
        message = f"{status} from {self._where}" + (f": {self._scrub(detail)}" if detail else "")
        if status == 429:
            return ProviderError(
                message, retryable=True, retry_after=retry_after(headers), status=status, kind="rate_limit"
            )
        if status >= 500:
            return ProviderError(
                message, retryable=True, retry_after=retry_after(headers), status=status, kind="server"
            )
        if status == 408:
            return ProviderError(message, retryable=True, status=status, kind="timeout")
        if status in (400, 413) and (code == "context_length_exceeded" or _CONTEXT_LENGTH.search(detail)):
            return ProviderError(message, retryable=False, status=status, kind="context_length")
        if status in (401, 403):  # the key, or what it may do: no call of the run can succeed
            return ProviderError(message, retryable=False, status=status, kind="auth")
        if status == 404:  # no such model, or no chat endpoint at this URL: the same for every call
            return ProviderError(message, retryable=False, status=status, kind="not_found")
        error = ProviderError(message, retryable=False, status=status, kind="client")
        error.unsupported_format = unsupported_format(status, detail, code, param)
        return error

    def _scrub(self, text: str) -> str:
        """`text` with the API key blanked out, should a server or library echo it back."""
        return text.replace(self._api_key, "***") if self._api_key else text


def _error_detail(raw: bytes) -> tuple[str, str | None, str | None]:
    """The message, code and param of an error body (`{"error": {"message": ..., "code": ..., "param": ...}}` in
    OpenAI's form, a plain text otherwise), the message trimmed to 300 characters."""
    try:
        data = json.loads(raw)
    except ValueError:
        return raw[:300].decode("utf-8", "replace").strip(), None, None
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        param = error.get("param")
        return (
            str(error.get("message") or "")[:300],
            str(code) if code is not None else None,
            str(param) if param is not None else None,
        )
    return str(error)[:300], None, None
