"""Providers against a real OpenAI-compatible server in its own process, the mock provider, the registry."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from llm_server import LLMServer

from sleipnir.compiler.ir import freeze
from sleipnir.runtime.providers import schema_fill
from sleipnir.runtime.providers.base import ChatRequest, ChatResponse, Provider, ProviderConfig, ProviderError
from sleipnir.runtime.providers.mock import MockProvider
from sleipnir.runtime.providers.openai import OpenAIProvider, resolve_api_key, resolve_endpoint, retry_after
from sleipnir.runtime.providers.registry import ProviderPool, known_protocols, make_provider
from sleipnir.runtime.providers.schema_fill import fill

KEY = "sk-test-0123456789abcdefSECRET"
STDLIB_PROMPTS = sorted((Path(__file__).parent.parent / "stdlib" / "prompts").glob("*/*.yaml"))
SENTIMENT = yaml.safe_load(
    (STDLIB_PROMPTS[0].parent.parent / "sentiment_analyzer" / "2.1.0.yaml").read_text()
)["prompt"]["output"]["schema"]


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    with LLMServer(api_key=KEY) as running:
        yield running


@pytest.fixture
def llm(server: LLMServer) -> LLMServer:
    server.reset()
    return server


def request(text: str = "I love this phone", **changes: Any) -> ChatRequest:
    fields: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": (
            {"role": "system", "content": "You are a careful sentiment analyst."},
            {"role": "user", "content": f"Text:\n{text}"},
        ),
        "temperature": 0.0,
        "json_output": True,
        "timeout": 10.0,
    }
    return ChatRequest(**(fields | changes))


def openai(server: LLMServer, api_key: str | None = KEY, base_url: str | None = None) -> OpenAIProvider:
    config = ProviderConfig(
        name="test", protocol="openai", base_url=base_url or server.base_url, api_key=api_key
    )
    return OpenAIProvider(config, environ={})


def call(provider: Provider, *requests: ChatRequest) -> list[ChatResponse | ProviderError]:
    """Make the calls in order on one event loop, then close the provider; errors are returned, not raised."""

    async def run() -> list[ChatResponse | ProviderError]:
        results: list[ChatResponse | ProviderError] = []
        try:
            for one in requests:
                try:
                    results.append(await provider.complete(one))
                except ProviderError as error:
                    results.append(error)
        finally:
            await provider.aclose()
        return results

    return asyncio.run(run())


def test_a_normal_call_sends_the_openai_body_and_reads_content_and_usage(llm: LLMServer) -> None:
    (response,) = call(openai(llm), request(max_tokens=50, top_p=0.5))
    assert isinstance(response, ChatResponse)
    assert set(json.loads(response.text)) == {"text"}, "JSON asked for with no schema: a shape of its own"
    assert response.prompt_tokens > 0 and response.completion_tokens > 0
    assert response.model == "gpt-4o-mini"
    seen = llm.requests(last=1)
    assert seen["count"] == 1
    body = seen["bodies"][0]
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"][1] == {"role": "user", "content": "Text:\nI love this phone"}
    assert body["temperature"] == 0.0 and body["max_tokens"] == 50 and body["top_p"] == 0.5
    assert body["response_format"] == {"type": "json_object"}


def test_a_call_without_json_output_or_settings_sends_only_model_and_messages(llm: LLMServer) -> None:
    (response,) = call(openai(llm), request(json_output=False, temperature=None))
    assert isinstance(response, ChatResponse) and response.text.startswith("Mock reply")
    assert set(llm.requests(last=1)["bodies"][0]) == {"model", "messages"}


def test_frozen_messages_from_a_plan_are_sent_as_json_objects(llm: LLMServer) -> None:
    frozen = request(messages=tuple(freeze(m) for m in request().messages))
    (response,) = call(openai(llm), frozen)
    assert isinstance(response, ChatResponse)
    assert llm.requests(last=1)["bodies"][0]["messages"] == [dict(m) for m in request().messages]


def test_a_schema_sent_as_structured_outputs_gives_schema_valid_replies(llm: LLMServer) -> None:
    texts = [f"review {i}: the battery is great" for i in range(5)]
    responses = call(openai(llm), *(request(t, output_schema=SENTIMENT, sent_schema=SENTIMENT) for t in texts))
    for response in responses:
        assert isinstance(response, ChatResponse)
        jsonschema.validate(json.loads(response.text), SENTIMENT)


@pytest.mark.parametrize(
    ("fault", "kind", "retryable", "wait", "status"),
    [
        ({"kind": "429", "retry_after": 2}, "rate_limit", True, 2.0, 429),
        ({"kind": "429", "retry_after_ms": 1500}, "rate_limit", True, 1.5, 429),
        ({"kind": "429"}, "rate_limit", True, None, 429),
        ({"kind": "500"}, "server", True, None, 500),
        ({"kind": "503", "retry_after": 1}, "server", True, 1.0, 503),
        ({"kind": "bad_json"}, "bad_reply", True, None, None),
        ({"kind": "drop"}, "connection", True, None, None),
        ({"kind": "context_length"}, "context_length", False, None, 400),
        ({"kind": "400"}, "client", False, None, 400),
        ({"kind": "404"}, "not_found", False, None, 404),
        ({"kind": "403"}, "auth", False, None, 403),
    ],
)
def test_each_fault_maps_to_its_error_and_the_next_call_succeeds(
    llm: LLMServer, fault: dict[str, Any], kind: str, retryable: bool, wait: float | None, status: int | None
) -> None:
    llm.add_faults(fault)
    provider = openai(llm)
    error, after = call(provider, request(), request())
    assert isinstance(error, ProviderError), error
    assert (error.kind, error.retryable, error.retry_after, error.status) == (kind, retryable, wait, status)
    assert isinstance(after, ChatResponse)
    for shown in (str(error), repr(error), error.message, repr(provider)):
        assert KEY not in shown


def test_a_fault_with_a_count_applies_to_that_many_calls(llm: LLMServer) -> None:
    llm.add_faults({"kind": "500", "count": 2}, {"kind": "503"})
    results = call(openai(llm), *(request() for _ in range(4)))
    assert [getattr(r, "status", 200) for r in results] == [500, 500, 503, 200]


def test_a_schema_invalid_reply_is_returned_for_the_runtime_to_reject(llm: LLMServer) -> None:
    llm.add_faults({"kind": "schema_invalid"})
    (response,) = call(openai(llm), request())
    assert isinstance(response, ChatResponse)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(response.text), SENTIMENT)


def test_a_slow_reply_hits_the_per_call_timeout(llm: LLMServer) -> None:
    llm.add_faults({"kind": "slow", "delay": 1.0})
    (error,) = call(openai(llm), request(timeout=0.2))
    assert isinstance(error, ProviderError)
    assert (error.kind, error.retryable) == ("timeout", True)


def test_a_refused_connection_is_retryable(llm: LLMServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (error,) = call(openai(llm, base_url=f"http://127.0.0.1:{port}/v1"), request())
    assert isinstance(error, ProviderError)
    assert (error.kind, error.retryable) == ("connection", True)


def test_a_wrong_key_is_not_retryable_and_never_shown_even_when_the_server_echoes_it(llm: LLMServer) -> None:
    wrong = "sk-wrong-key-9876543210zyxwvu"
    provider = openai(llm, api_key=wrong)
    (error,) = call(provider, request())
    assert isinstance(error, ProviderError)
    assert (error.kind, error.retryable, error.status) == ("auth", False, 401)
    assert "Incorrect API key provided" in error.message
    for shown in (str(error), repr(error), error.message, repr(provider), repr(error.args)):
        assert wrong not in shown


def test_a_base_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(ProviderError, match="must start with http"):
        OpenAIProvider(ProviderConfig(name="x", protocol="openai", base_url="ftp://host/v1"), environ={})


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": format_datetime(datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC), usegmt=True)}, 30.0),
        ({"retry-after": "soon"}, None),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m30.5s"}, 90.5),
        ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20ms"}, 0.02),
        ({"x-ratelimit-remaining-tokens": "5", "x-ratelimit-reset-tokens": "6m0s"}, None),
        ({}, None),
    ],
)
def test_retry_after_reads_every_header_form(headers: dict[str, str], expected: float | None) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    assert retry_after(headers, now=now) == (pytest.approx(expected) if expected is not None else None)


def test_the_endpoint_and_key_fall_back_in_order() -> None:
    env = {"OPENAI_BASE_URL": "http://env:8000/v1/", "OPENAI_API_KEY": "env-key", "MY_KEY": "my-key"}
    assert resolve_endpoint("http://prompt/v1/", "http://workspace/v1", env) == "http://prompt/v1"
    assert resolve_endpoint(None, "http://workspace/v1", env) == "http://workspace/v1"
    assert resolve_endpoint("", None, env) == "http://env:8000/v1"
    assert resolve_endpoint(None, None, {}) == "https://api.openai.com/v1"
    assert resolve_api_key("explicit", "MY_KEY", env) == "explicit"
    assert resolve_api_key(None, "MY_KEY", env) == "my-key"
    assert resolve_api_key(None, "UNSET", env) == "env-key"
    assert resolve_api_key("", None, {}) is None


def test_the_pool_keeps_one_provider_and_one_session_per_endpoint(llm: LLMServer) -> None:
    async def run() -> None:
        pool = ProviderPool()
        config = ProviderConfig(name="a", protocol="openai", base_url=llm.base_url, api_key=KEY)
        provider = pool.get(config)
        same = ProviderConfig(name="b", protocol="openai", base_url=llm.base_url, api_key=KEY)
        other_key = ProviderConfig(name="c", protocol="openai", base_url=llm.base_url, api_key="other")
        assert pool.get(same) is provider
        assert pool.get(other_key) is not provider
        assert len(pool) == 2
        await asyncio.gather(*(pool.get(config).complete(request(f"text {i}")) for i in range(20)))
        assert isinstance(provider, OpenAIProvider)
        session = provider._session
        assert session is not None and not session.closed
        await pool.get(config).complete(request())
        assert provider._session is session
        await pool.aclose()
        assert session.closed and len(pool) == 0

    asyncio.run(run())
    assert llm.requests(last=0)["count"] == 21


def mock_call(*requests: ChatRequest, **options: Any) -> list[ChatResponse]:
    results = call(MockProvider(ProviderConfig(name="mock", protocol="mock", options=options)), *requests)
    assert all(isinstance(r, ChatResponse) for r in results)
    return [r for r in results if isinstance(r, ChatResponse)]


def test_the_mock_provider_is_deterministic_and_follows_its_input() -> None:
    same = mock_call(
        request("I love it", output_schema=SENTIMENT), request("I love it", output_schema=SENTIMENT)
    )
    assert same[0] == same[1]
    assert json.loads(same[0].text)["label"] == "positive"
    (negative,) = mock_call(request("broken and terrible", output_schema=SENTIMENT))
    assert json.loads(negative.text)["label"] == "negative"
    varied = mock_call(*(request(f"item {i}", output_schema=SENTIMENT) for i in range(12)))
    assert len({json.loads(r.text)["label"] for r in varied}) > 1
    assert all(r.prompt_tokens > 0 and r.completion_tokens > 0 for r in varied)


def test_the_mock_provider_answers_text_without_a_schema() -> None:
    plain, as_json, again = mock_call(
        request("hello there", json_output=False),
        request("hello there"),
        request("hello there", json_output=False),
    )
    assert plain.text == again.text and "hello there" in plain.text
    assert "hello there" in json.loads(as_json.text)["text"]
    assert plain.completion_tokens == (len(plain.text) + 3) // 4


def test_the_mock_provider_rejects_a_bad_latency_and_honours_a_good_one() -> None:
    with pytest.raises(ProviderError, match="latency"):
        MockProvider(ProviderConfig(name="mock", protocol="mock", options={"latency": "slow"}))
    assert mock_call(request(), latency=0.01)[0].text


@pytest.mark.parametrize("path", STDLIB_PROMPTS, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_fill_and_the_mock_provider_satisfy_every_stdlib_schema(path: Path) -> None:
    schema = yaml.safe_load(path.read_text())["prompt"]["output"]["schema"]
    validator = jsonschema.Draft7Validator(schema)
    hints = {"summary": "A short summary.", "cleaned_text": "Clean text", "label": "not-an-enum-value"}
    for seed in range(50):
        value = fill(schema, seed.to_bytes(2, "big"), hints)
        assert validator.is_valid(value), (seed, value, next(validator.iter_errors(value)).message)
    assert (
        fill(schema, b"same", hints) == fill(schema, b"same", hints) == fill(freeze(schema), b"same", hints)
    )
    for response in mock_call(
        *(request(f"review {i}: slow delivery", output_schema=schema) for i in range(5))
    ):
        assert validator.is_valid(json.loads(response.text))


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "^[A-Z]{2}-\\d{3,5}$"},
        {"type": "string", "minLength": 20, "maxLength": 25},
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        {"type": "number", "minimum": -5, "maximum": -4, "multipleOf": 0.25},
        {"type": "integer", "exclusiveMinimum": 7, "multipleOf": 5},
        {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 2, "uniqueItems": True},
        {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        {"anyOf": [{"type": "null"}, {"type": "string", "format": "date-time"}]},
        {
            "allOf": [
                {"properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"properties": {"b": {"const": 1}}},
            ]
        },
        {
            "definitions": {
                "node": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "children": {"type": "array", "items": {"$ref": "#/definitions/node"}},
                    },
                    "required": ["name", "children"],
                }
            },
            "$ref": "#/definitions/node",
        },
        {"type": "object", "minProperties": 3, "additionalProperties": {"type": "boolean"}},
        {"type": "object", "properties": {"a": {}, "b": {}, "c": {}}, "required": ["c"], "maxProperties": 1},
    ],
)
def test_fill_covers_the_schema_keywords_it_documents(schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    for seed in range(30):
        value = fill(schema, bytes([seed]))
        assert validator.is_valid(value), (seed, value)


@pytest.mark.parametrize(
    ("pattern", "limits"),
    [
        ("^[A-Z]{2}-\\d{3,5}$", {}),
        ("^(low|medium|high)$", {}),
        ("^\\w+@\\w+\\.com$", {"minLength": 7}),
        ("[a-f0-9]{8}", {"maxLength": 12}),
        ("^ticket-[0-9]+$", {"minLength": 10, "maxLength": 11}),
        ("^(?P<x>ab)(?P=x)$", {}),
    ],
)
def test_a_pattern_gets_a_matching_string_the_seed_picks(pattern: str, limits: dict[str, int]) -> None:
    schema = {"type": "string", "pattern": pattern, **limits}
    values = [fill(schema, bytes([seed])) for seed in range(40)]
    validator = jsonschema.Draft7Validator(schema)
    assert all(validator.is_valid(v) for v in values), values
    assert values == [fill(dict(schema), bytes([seed])) for seed in range(40)], "the same seed, the same string"
    if "(?P=x)" not in pattern and "low|" not in pattern:
        assert len(set(values)) > 5, "different seeds pick different strings"


def test_a_pattern_exrex_cannot_expand_gets_text_not_an_error() -> None:
    for pattern in ("(?<=a)b", "a(?i)b", "[unclosed"):
        assert isinstance(fill({"type": "string", "pattern": pattern}, b"seed"), str)


def test_schema_fill_does_not_use_the_private_regular_expression_parser() -> None:
    source = Path(schema_fill.__file__).read_text(encoding="utf-8")
    assert "re._parser" not in source and "sre_parse" not in source


def test_the_registry_makes_builtins_and_explains_an_unknown_protocol() -> None:
    assert isinstance(make_provider(ProviderConfig(name="m", protocol="mock")), MockProvider)
    assert isinstance(
        make_provider(ProviderConfig(name="o", protocol="openai", base_url="http://x/v1")), OpenAIProvider
    )
    with pytest.raises(ProviderError) as caught:
        make_provider(ProviderConfig(name="x", protocol="opena1"))
    error = caught.value
    assert (error.kind, error.retryable) == ("client", False)
    assert "did you mean 'openai'" in error.message and "mock" in error.message


def test_a_third_party_provider_is_found_through_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "echo_provider.py").write_text(
        "from sleipnir.runtime.providers.base import ChatResponse\n"
        "class EchoProvider:\n"
        "    def __init__(self, config):\n"
        "        self.config = config\n"
        "    async def complete(self, request):\n"
        "        return ChatResponse(text=request.messages[-1]['content'], model=request.model)\n"
        "    async def aclose(self):\n"
        "        return None\n"
    )
    info = tmp_path / "echo_provider-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-provider\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[sleipnir.providers]\necho = echo_provider:EchoProvider\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "echo_provider", raising=False)
    assert "echo" in known_protocols()
    provider = make_provider(ProviderConfig(name="e", protocol="echo"))
    (response,) = call(provider, request("echo me"))
    assert isinstance(response, ChatResponse) and response.text == "Text:\necho me"
    (info / "entry_points.txt").write_text("[sleipnir.providers]\nbroken = echo_provider:Missing\n")
    with pytest.raises(ProviderError, match="cannot load echo_provider:Missing"):
        make_provider(ProviderConfig(name="b", protocol="broken"))


def test_replies_are_read_with_orjson_and_what_it_refuses_or_reads_otherwise_with_json() -> None:
    from sleipnir.runtime.io.dbconn import read_json
    from sleipnir.runtime.providers.base import loads

    assert loads(b'{"a": [1, 2.5, "\\u00e9"]}') == {"a": [1, 2.5, "é"]}
    nan = loads('{"x": NaN}')["x"]
    assert nan != nan, "NaN, which json reads and orjson refuses"
    with pytest.raises(ValueError, match="Expecting"):
        loads('{"label": "positive",')
    # An answer's integers beyond 64 bits stay integers, at any depth; floats stay floats (the runtime reads
    # answers as it reads rows).
    huge = 123456789012345678901234567890
    assert read_json(f'{{"n": {huge}, "deep": [{{"m": -{huge}}}]}}') == {"n": huge, "deep": [{"m": -huge}]}
    assert type(read_json('{"f": 1e20}')["f"]) is float
    assert read_json('{"label": "good", "n": 3}') == {"label": "good", "n": 3}
