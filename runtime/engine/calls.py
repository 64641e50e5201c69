"""The item worker: the per-item chain of prompt calls, from a row to its outputs.

Each call node is made ready once (`render.PreparedCall`): templates compiled, the output schema's validator
built, its provider client taken from the pool. For an item, the levels of calls run in order; the calls of one
level (a stack's parallel group) run at the same time; a call whose `when` does not hold is skipped.

A call waits for its turn at its provider's rate limiter, then for a concurrency slot, which it holds only while
the request is in flight: a call waiting for the limiter or for a retry holds no slot, so it never keeps
another call from going. It is retried per its retry policy; a stop ends those waits at once (`CallsStopped`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

from ...compiler.ir import PromptCall, Provider, thaw, to_data
from ..conditions import holds
from ..io import Row
from ..io.dbconn import fast_json
from ..providers.base import RUN_LEVEL, ChatRequest, ProviderConfig, ProviderError
from ..providers.registry import DEFAULT_BASE_URL, ProviderPool, resolve_api_key, resolve_endpoint
from ..secrets import reveal
from .answers import AnswerWriter
from .cache import ResponseCache, cache_key
from .context import CallsStopped, RunContext
from .ledger import Answer
from .limits import RateLimiter
from .render import ItemError, PreparedCall, ReplyError
from .retries import Attempts, with_retries

DEFAULT_COMPLETION_TOKENS = 256
KEYED_PROTOCOLS = ("openai",)
"""Protocols whose default endpoint needs a key (the public OpenAI API)."""

__all__ = ["DEFAULT_COMPLETION_TOKENS", "CallFailed", "CallsStopped", "ItemError", "ItemFailed", "ItemWorker"]


class CallFailed(Exception):
    """A call that failed after its retries; `node` says which, so its `on_failure` strategy applies."""

    def __init__(self, node: PromptCall, message: str, attempts: int) -> None:
        super().__init__(message)
        self.node = node
        self.message = message
        self.attempts = attempts


class ItemFailed(Exception):
    """An item that could not be done: at `stage` (`input`: it cannot be called for; `prompt`: a call failed
    after its retries), to be handled by `strategy` (the job's `on_input_error`, or the call's `on_failure`)."""

    def __init__(self, stage: str, message: str, attempts: int, strategy: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message
        self.attempts = attempts
        self.strategy = strategy


class ItemWorker:
    """Makes an item's calls. `prepare()` once before the first item, `aclose()` after the last."""

    def __init__(self, run: RunContext) -> None:
        self.run = run
        self.prepared: dict[str, PreparedCall] = {}
        self.pool = ProviderPool()
        self.providers: dict[str, Any] = {}
        self.limiters: dict[str, RateLimiter] = {}
        self.served: dict[str, str] = {}
        """The model each call's tokens are counted under: a fallback to `mock` costs nothing."""
        self.cache: ResponseCache | None = None
        self.semaphore = asyncio.Semaphore(run.shape.concurrency)
        """Bounds the calls in flight (a stack's parallel group makes several calls for one item)."""
        self.answers: AnswerWriter | None = None
        """Where answers are recorded as they arrive (None: not recorded, for the benchmark's baseline)."""
        self.work: dict[str, str] = {}
        """Each call's work fingerprint: what it sends, less the item (see `prepare`)."""
        self._work_digest = b""
        self._call_digests: dict[str, bytes] = {}
        self._leading: dict[str, tuple[str, str, hashlib._Hash]] = {}
        """Each call's last first message (role, content) and the hash state of its request fingerprint after it."""

    # -- set-up -------------------------------------------------------------------------------------------

    def prepare(self) -> None:
        plan = self.run.plan
        providers = {p.name: p for p in plan.resources.providers}
        job_limits = thaw(plan.resources.rate_limit)
        for node in plan.nodes:
            if not isinstance(node, PromptCall):
                continue
            self.prepared[node.id] = PreparedCall(node, plan.resources.prompt(node.prompt, node.version))
            spec = providers.get(node.provider) or Provider(name=node.provider, protocol=node.provider)
            config = self._provider_config(node, spec)
            self.providers[node.id] = self.pool.get(config)
            self.served[node.id] = "mock" if config.protocol == "mock" and spec.protocol != "mock" else node.model
            self.work[node.id] = _work_fingerprint(node, plan, self.served[node.id])
            self._call_digests[node.id] = self.work[node.id].encode()
            if node.provider not in self.limiters:
                # One limiter per provider: the job's own ceilings, else the provider's from sleipnir.yaml.
                # A `dask` worker has its share of them (`RunOptions.limit_share`).
                share = self.run.options.limit_share
                requests = job_limits.get("requests_per_minute") or spec.requests_per_minute
                tokens = job_limits.get("tokens_per_minute") or spec.tokens_per_minute
                limiter = self.limiters[node.provider] = RateLimiter(
                    requests * share if requests else None, tokens * share if tokens else None
                )
                self.run.on_stop.append(limiter.cancel_waits)

        self._work_digest = hashlib.sha256(json.dumps(sorted(self.work.items())).encode()).digest()

    def fingerprint(self, row: Row) -> str:
        """The fingerprint of an item's work: its row and every call it goes through (model, prompt version and
        text, parameters, options, output schema, the model that serves it). A rerun redoes an item whose
        fingerprint changed."""
        text = fast_json(row, sort_keys=True, floats=False)
        if text is None:
            text = json.dumps(row, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":")).encode()
        return hashlib.sha256(self._work_digest + text).hexdigest()[:32]

    def _provider_config(self, node: PromptCall, spec: Provider) -> ProviderConfig:
        environ = self.run.environ
        if spec.protocol == "mock":
            return ProviderConfig(name=spec.name, protocol="mock")
        explicit_key = reveal(node.options.get("api_key"), environ) if node.options.get("api_key") else None
        configured_env = spec.api_key.names[0] if spec.api_key is not None else None
        api_key = resolve_api_key(explicit_key, configured_env, environ)
        endpoint = reveal(node.options.get("endpoint"), environ) if node.options.get("endpoint") else None
        base_url = resolve_endpoint(endpoint, reveal(spec.base_url, environ) if spec.base_url else None, environ)
        # An endpoint set explicitly to a server of one's own (vLLM, Ollama) is called without a key; the public
        # endpoint never is, even when a workspace names it.
        keyless = bool(endpoint or spec.base_url or environ.get("OPENAI_BASE_URL")) and base_url != DEFAULT_BASE_URL
        if not api_key and not keyless and spec.protocol in KEYED_PROTOCOLS:
            variable = configured_env or "OPENAI_API_KEY"
            if spec.fallback == "mock":
                self.run.notice(
                    f"no API key for provider `{spec.name}` (set {variable}): "
                    "calls go to the offline `mock` provider (sleipnir.yaml fallback_provider)"
                )
                return ProviderConfig(name="mock", protocol="mock")
            # Never a surprise call to the public endpoint without a key: the run stops before any call.
            raise ProviderError(
                f"provider `{spec.name}` needs an API key and none is set: set {variable}, point it at a keyless "
                "server with `base_url` (or OPENAI_BASE_URL), or run offline with `fallback_provider: mock` in "
                "sleipnir.yaml",
                retryable=False,
                kind="client",
            )
        options = {"structured_output": spec.structured_output} if spec.structured_output != "json_schema" else {}
        return ProviderConfig(name=spec.name, protocol=spec.protocol, base_url=base_url, api_key=api_key, options=options)

    def limits(self) -> dict[str, Any]:
        """Each provider's limiter, for the run's summary and metrics."""
        return {name: limiter.control.summary() for name, limiter in self.limiters.items()}

    async def aclose(self) -> None:
        if self.answers is not None:
            await self.answers.aclose()
        with contextlib.suppress(Exception):
            await self.pool.aclose()
        if self.cache is not None:
            self.cache.close()

    # -- one item -----------------------------------------------------------------------------------------

    async def outputs(
        self, row: Row, *, key: str, recorded: Mapping[str, tuple[str, Any]] | None = None
    ) -> tuple[dict[str, Any], int, list[asyncio.Future[None]]]:
        """The item's outputs, the attempts its calls took, and the commits of its new answers (the item is
        done once they are); raises `ItemFailed`. `recorded` holds the answers an earlier run recorded for the
        item (call id -> (request fingerprint, output)): a call whose request is the same is not made again."""
        earlier: dict[str, Any] = {}
        attempts = 0
        item = _ItemCalls(key, recorded or {})
        try:
            for level in self.run.shape.item_levels:
                if len(level) == 1:
                    attempts += await self.step(level[0], row, earlier, item=item)
                else:
                    counts = await asyncio.gather(*(self.step(node, row, dict(earlier), into=earlier, item=item) for node in level))
                    attempts += sum(counts)
        except ItemError as error:
            raise ItemFailed("input", str(error), attempts, self.run.shape.on_input) from None
        except CallFailed as failed:
            raise ItemFailed("prompt", failed.message, failed.attempts, failed.node.on_failure) from None
        return self._shape(earlier), attempts, item.commits

    def _shape(self, earlier: Mapping[str, Any]) -> dict[str, Any]:
        """Output fields: a prompt's output under its name; a stack's under the stack's name, by step id."""
        shaped: dict[str, Any] = {}
        for level in self.run.shape.item_levels:
            for node in level:
                if node.output not in earlier:
                    continue
                if node.namespace:
                    shaped.setdefault(node.namespace, {})[node.output] = earlier[node.output]
                else:
                    shaped[node.output] = earlier[node.output]
        return shaped

    async def step(
        self,
        node: PromptCall,
        row: Row,
        earlier: dict[str, Any],
        *,
        into: dict[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        item: _ItemCalls | None = None,
    ) -> int:
        """One call for an item; its output goes into `earlier` (or `into`). Returns the attempts made."""
        if node.when and not holds(node.when, {**earlier, "input": row}):
            return 0
        prepared = self.prepared[node.id]
        context = prepared.context(row, earlier, extra)
        messages = prepared.messages(context)
        request = ChatRequest(model=node.model, messages=messages, **prepared.request_options)
        answer = item.recorded.get(node.id) if item is not None else None
        fingerprint = self._request_fingerprint(node.id, messages) if item is not None else ""
        if answer is not None and answer[0] == fingerprint:
            self.run.progress.reused += 1
            output, attempts = answer[1], 0
        else:
            output, attempts = await self._call(node, prepared, request)
            answers = self.answers
            if answers is not None:
                if item is not None:  # the call's budget unit comes back when the answer is committed
                    item.commits.append(answers.submit(Answer(key=item.key, call=node.id, fingerprint=fingerprint, output=output), unit=attempts > 0))
                elif attempts:  # a call made for no item (a gather) records nothing
                    answers.budget.give()
        (into if into is not None else earlier)[node.output] = output
        return attempts

    def _request_fingerprint(self, call: str, messages: tuple[dict[str, str], ...]) -> str:
        """What the call sends for this item: its work (model, settings, output schema, the model that serves
        it) and the rendered messages."""
        rest = messages
        if len(messages) > 1:
            # The first message (the system message) is most often the same for every item: the hash state after
            # it is kept, and only the messages after it are hashed for an item.
            role, content = messages[0]["role"], messages[0]["content"]
            known = self._leading.get(call)
            if known is not None and known[1] == content and known[0] == role:
                digest = known[2].copy()
            else:
                digest = hashlib.sha256(self._call_digests[call])
                digest.update(b"\x00" + role.encode() + b"\x00" + content.encode())
                self._leading[call] = (role, content, digest.copy())
            rest = messages[1:]
        else:
            digest = hashlib.sha256(self._call_digests[call])
        for message in rest:
            digest.update(b"\x00" + message["role"].encode() + b"\x00" + message["content"].encode())
        return digest.hexdigest()[:32]

    async def _call(self, node: PromptCall, prepared: PreparedCall, request: ChatRequest) -> tuple[Any, int]:
        provider = self.providers[node.id]
        limiter = self.limiters[node.provider]
        served = self.served[node.id]
        progress = self.run.progress
        estimate = 0  # the tokens the call may use, for a `tokens_per_minute` ceiling only
        if limiter.control.token_rate is not None:
            estimate = sum(len(m["content"]) for m in request.messages) // 4 + int(request.max_tokens or DEFAULT_COMPLETION_TOKENS)

        cache = self.cache
        key = cache_key(f"{node.provider}:{served}", request) if cache is not None else ""
        if cache is not None:
            cached = await asyncio.to_thread(cache.get, key)
            if cached is not None:
                with contextlib.suppress(ReplyError):
                    return prepared.parse(cached.text), 0

        run = self.run
        semaphore = self.semaphore
        budget = self.answers.budget if self.answers is not None else None
        """What a kill can lose is bounded (see `answers.py`): the call takes a unit once it holds its slot."""

        async def attempt() -> Any:
            if limiter.try_take(estimate) is None:
                try:
                    await limiter.acquire(estimate)
                except asyncio.CancelledError:
                    # `cancel_waits` on a stop, not a cancellation of this task: the item is left for a resume.
                    task = asyncio.current_task()
                    if run.stopping is None or (task is not None and task.cancelling()):
                        raise
                    raise CallsStopped from None
            async with semaphore:
                if run.stopping is not None:  # stopped while this call waited for its slot: it is not sent
                    raise CallsStopped
                if budget is not None and not budget.try_take():
                    await budget.take()
                try:
                    sent = time.monotonic()
                    progress.calls += 1
                    try:
                        response = await provider.complete(request)
                    except ProviderError as error:
                        limiter.reply(sent, error)
                        raise
                    limiter.reply(sent)
                except BaseException:
                    if budget is not None:
                        budget.give()
                    raise
            try:
                if response.notice is not None:
                    run.notice(response.notice)
                progress.prompt_tokens += response.prompt_tokens
                progress.completion_tokens += response.completion_tokens
                usage = progress.tokens_by_model.setdefault(served, [0, 0])
                usage[0] += response.prompt_tokens
                usage[1] += response.completion_tokens
                parsed = prepared.parse(response.text)
                if cache is not None:
                    await asyncio.to_thread(cache.put, key, response)  # only answers that parsed and validated
            except BaseException:
                if budget is not None:
                    budget.give()
                raise
            return parsed  # with the budget's unit, given back at the answer's commit (see `step`)

        def on_retry(error: BaseException, delay: float) -> None:
            progress.retries += 1

        attempts = Attempts()
        try:
            output = await with_retries(node.retry, attempt, attempts, on_retry=on_retry, sleep=run.wait)
        except (ProviderError, ReplyError) as error:
            message = error.message if isinstance(error, ProviderError) else str(error)
            check = RUN_LEVEL.get(error.kind) if isinstance(error, ProviderError) else None
            if check is not None:  # no item can get past it: the run stops, and the item is left for a resume
                run.stop("failed", f"{node.id}: {message} (no call of this run can succeed: {check})")
                raise CallsStopped from None
            raise CallFailed(node, f"{node.id}: {message}", attempts.count) from None
        return output, attempts.count


class _ItemCalls:
    """The item a call is made for, the answers an earlier run recorded for it, and the commits of its new ones."""

    __slots__ = ("commits", "key", "recorded")

    def __init__(self, key: str, recorded: Mapping[str, tuple[str, Any]]) -> None:
        self.key = key
        self.recorded = recorded
        self.commits: list[asyncio.Future[None]] = []


_ANSWER_FIELDS = ("prompt", "version", "scope", "output", "namespace", "model", "provider", "options", "parameters", "inputs", "when")
"""What of a call node shapes its answers (not its timeout, retries or failure strategy)."""


def _work_fingerprint(node: PromptCall, plan: Any, served: str) -> str:
    data = to_data(plan, for_hash=True)
    call = next(n for n in data["nodes"] if n["id"] == node.id)
    module = next(m for m in data["resources"]["prompts"] if (m["name"], m["version"]) == (node.prompt, node.version))
    material = [{k: call.get(k) for k in _ANSWER_FIELDS}, module, served]
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:32]
