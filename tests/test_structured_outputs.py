"""Structured outputs end to end at the provider seam: what the `openai` provider sends for each
`structured_output` mode, the fallback from a server that refuses `json_schema` (and only from such a refusal),
the mock provider answering as such a server does, and the runtime reading nullable optional properties."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from llm_server import LLMServer

from sleipnir.compiler.ir import PromptCall, PromptModule, freeze
from sleipnir.compiler.strict_schema import strict_form
from sleipnir.runtime.engine.render import PreparedCall, ReplyError
from sleipnir.runtime.providers.base import ChatRequest, ChatResponse, ProviderConfig, ProviderError
from sleipnir.runtime.providers.mock import MockProvider
from sleipnir.runtime.providers.openai import OpenAIProvider
from sleipnir.runtime.providers.structured import instructions, unsupported_format

STDLIB = Path(__file__).parent.parent / "stdlib" / "prompts"
CLASSIFIER = yaml.safe_load((STDLIB / "classifier" / "1.0.0.yaml").read_text())["prompt"]["output"]["schema"]
TRIAGE = {
    "type": "object",
    "required": ["team"],
    "properties": {
        "team": {"type": "string", "enum": ["billing", "tech", "sales"], "description": "Who takes it."},
        "urgency": {"type": "integer", "minimum": 1, "maximum": 5},
        "reason": {"type": "string", "maxLength": 80},
    },
}
STRICT = strict_form(TRIAGE)


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    with LLMServer() as running:
        yield running


@pytest.fixture(scope="module")
def refusing() -> Iterator[LLMServer]:
    with LLMServer(structured_output="json_object") as running:
        yield running


@pytest.fixture
def llm(server: LLMServer) -> LLMServer:
    server.reset()
    return server


def request(text: str = "My invoice is wrong", schema: dict[str, Any] = TRIAGE) -> ChatRequest:
    form = strict_form(schema)
    return ChatRequest(
        model="gpt-4o-mini",
        messages=({"role": "system", "content": "You route tickets."}, {"role": "user", "content": text}),
        json_output=True,
        output_schema=schema,
        sent_schema=form.schema,
        strict=form.strict,
        schema_name="triage v1",
        timeout=10.0,
    )


def provider(server: LLMServer, mode: str | None = None) -> OpenAIProvider:
    options = {"structured_output": mode} if mode else {}
    return OpenAIProvider(ProviderConfig(name="local", protocol="openai", base_url=server.base_url, options=options), environ={})


def calls(target: OpenAIProvider | MockProvider, *requests: ChatRequest) -> list[ChatResponse | ProviderError]:
    async def run() -> list[ChatResponse | ProviderError]:
        results: list[ChatResponse | ProviderError] = []
        try:
            for one in requests:
                try:
                    results.append(await target.complete(one))
                except ProviderError as error:
                    results.append(error)
        finally:
            await target.aclose()
        return results

    return asyncio.run(run())


def valid(response: ChatResponse | ProviderError, schema: dict[str, Any]) -> Any:
    assert isinstance(response, ChatResponse), response
    value = json.loads(response.text)
    jsonschema.validate(value, schema)
    return value


def test_the_schema_goes_as_strict_structured_outputs_and_the_reply_follows_it(llm: LLMServer) -> None:
    [response] = calls(provider(llm), request())
    valid(response, STRICT.schema)
    body = llm.requests(last=1)["bodies"][0]
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "triage_v1", "schema": STRICT.schema, "strict": True},
    }
    assert body["messages"][0] == {"role": "system", "content": "You route tickets."}, "the message is left alone"


def test_a_schema_strict_mode_cannot_take_goes_whole_with_strict_false(llm: LLMServer) -> None:
    loose = {"type": "object", "properties": {"tags": {"type": "object", "additionalProperties": {"type": "string"}}}}
    [response] = calls(provider(llm), request(schema=loose))
    assert isinstance(response, ChatResponse)
    sent = llm.requests(last=1)["bodies"][0]["response_format"]["json_schema"]
    assert sent["strict"] is False and sent["schema"] == loose


@pytest.mark.parametrize(("mode", "format_sent"), [("json_object", {"type": "json_object"}), ("none", None)])
def test_without_structured_outputs_the_schema_is_in_the_system_message(
    llm: LLMServer, mode: str, format_sent: dict[str, str] | None
) -> None:
    responses = calls(provider(llm, mode), *(request(f"ticket {n}") for n in range(3)))
    for response in responses:
        valid(response, TRIAGE)
    body = llm.requests(last=1)["bodies"][0]
    assert body.get("response_format") == format_sent
    system = body["messages"][0]["content"]
    assert system.startswith("You route tickets.\n\n") and system.endswith(instructions(TRIAGE).split("\n")[-1])
    compact = json.loads(system.rsplit("\n", 1)[1])
    assert compact["required"] == ["team"] and compact["properties"]["team"]["enum"] == ["billing", "tech", "sales"]
    assert compact["properties"]["team"]["description"] == "Who takes it."


def test_a_server_without_a_schema_to_follow_answers_nothing_valid(llm: LLMServer) -> None:
    bare = ChatRequest(model="m", messages=({"role": "user", "content": "hi"},), json_output=True, timeout=10.0)
    [response] = calls(provider(llm), bare)
    assert isinstance(response, ChatResponse)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(response.text), TRIAGE)


def test_a_refused_json_schema_falls_back_once_to_json_object_with_the_schema_and_is_remembered(refusing: LLMServer) -> None:
    refusing.reset()
    responses = calls(provider(refusing), *(request(f"ticket {n}") for n in range(3)))
    for response in responses:
        valid(response, TRIAGE)
    notices = [r.notice for r in responses if isinstance(r, ChatResponse) and r.notice]
    assert len(notices) == 1 and "does not take `json_schema`" in notices[0]
    seen = refusing.requests(last=10)
    assert seen["count"] == 4, "one refused call, then three as json_object"
    assert seen["statuses"] == {"400": 1, "200": 3}
    formats = [b["response_format"]["type"] for b in seen["bodies"]]
    assert formats == ["json_schema", "json_object", "json_object", "json_object"]
    for body in seen["bodies"][1:]:
        assert body["messages"][0]["content"].endswith(instructions(TRIAGE)), "the schema is kept"


def test_an_unrelated_400_that_mentions_response_format_fails_as_itself(llm: LLMServer) -> None:
    message = "Invalid schema for response_format 'triage': In context=(), 'minLength' is not supported."
    llm.add_faults({"kind": "400", "message": message})
    [error] = calls(provider(llm), request())
    assert isinstance(error, ProviderError)
    assert error.kind == "client" and not error.retryable and message in error.message
    assert llm.requests()["count"] == 1, "no fallback call was made"


@pytest.mark.parametrize(
    ("status", "message", "code", "refused"),
    [
        (400, "response_format type 'json_schema' is not supported by this server", None, True),
        (400, "Unknown response_format type: json_schema", None, True),
        (400, "This model does not support structured outputs", None, True),
        (400, "Invalid value for response_format: must be one of 'text' or 'json_object'", None, True),
        (400, "json_schema response format is not supported", None, True),
        (400, "anything", "unsupported_response_format", True),
        (400, "Invalid schema for response_format 'x': 'patternProperties' is not supported", None, False),
        (400, "response_format.json_schema.schema must have a 'type' key", None, False),
        (400, "Invalid 'messages[1].content': string too long", None, False),
        (500, "response_format type 'json_schema' is not supported", None, False),
    ],
)
def test_which_errors_refuse_the_format_itself(status: int, message: str, code: str | None, refused: bool) -> None:
    assert unsupported_format(status, message, code) is refused


def test_the_mock_provider_answers_as_a_schema_following_server(tmp_path: Path) -> None:
    mock = MockProvider(ProviderConfig(name="mock", protocol="mock"))
    responses = calls(mock, *(request(f"ticket {n}") for n in range(10)))
    for response in responses:
        valid(response, STRICT.schema)


def prepared(schema: dict[str, Any]) -> PreparedCall:
    form = strict_form(schema)
    module = PromptModule(
        name="triage", version="1.0.0", file="triage.yaml", user="{{ text }}",
        output_schema=freeze(schema), sent_schema=freeze(form.schema), strict=form.strict,
    )  # fmt: skip
    node = PromptCall(id="triage", prompt="triage", version="1.0.0", output="triage", model="m", provider="openai")
    return PreparedCall(node, module)


def test_nulls_for_optional_properties_read_as_absent_and_the_full_schema_judges_the_rest() -> None:
    call = prepared({**TRIAGE, "properties": {**TRIAGE["properties"], "notes": {
        "type": "array", "items": {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}, "b": {"type": "string"}}},
    }}})  # fmt: skip
    answer = {"team": "tech", "urgency": None, "reason": None, "notes": [{"a": "x", "b": None}]}
    assert call.parse(json.dumps(answer)) == {"team": "tech", "notes": [{"a": "x"}]}
    assert call.request_options["sent_schema"]["properties"]["urgency"]["type"] == ["integer", "null"]
    with pytest.raises(ReplyError, match=r"at `reason`"):
        call.parse(json.dumps({"team": "tech", "urgency": 2, "reason": "x" * 81}))
    with pytest.raises(ReplyError, match=r"at `team`"):
        call.parse(json.dumps({"team": None, "urgency": 2, "reason": None}))


def test_every_stdlib_schema_round_trips_through_the_schema_following_server(llm: LLMServer) -> None:
    schemas = [yaml.safe_load(p.read_text())["prompt"]["output"].get("schema") for p in sorted(STDLIB.glob("*/*.yaml"))]
    schemas = [schema for schema in schemas if schema]
    assert CLASSIFIER in schemas
    requests = [request(f"item {n}", schema) for n, schema in enumerate(schemas)]
    for schema, response in zip(schemas, calls(provider(llm), *requests), strict=True):
        assert isinstance(response, ChatResponse), response
        # What the runtime does with a reply: nulls of optional properties dropped, the full schema checked.
        jsonschema.validate(prepared(schema).parse(response.text), schema)
