"""The HTTP API source and sink, and `send`, the one way both make a request.

API source. Rows from an HTTP API: a GET of the endpoint, then of each next page, a page at a time. A page is
a JSON array of objects, or an object holding them under `data`, `items` or `results`; an element that is not
an object becomes a `RowError` in its place. For the `dask` engine, the driver lists the pages (`pages`) and a
partition reads its own alone (`listing`).

API sink. Each batch is one request (`POST` unless `method` says) with a JSON array of rows. A retried request
may arrive twice if the first reply was lost: a receiver should upsert by key.

Both go through `send`: a bounded retry by tenacity (`HTTP_ATTEMPTS` attempts, a doubling backoff from
`HTTP_BACKOFF`) of 429, 5xx and connection errors, waiting what a `Retry-After` asks instead (capped at
`RETRY_AFTER_CAP`; read by the one parser, `compiler.ir.common.retry_after`). Another 4xx fails at once. URLs
in messages have their passwords masked. `auth` is `bearer_token` or a mapping (`request_auth`).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping
from typing import Any
from urllib.parse import urljoin

import httpx
import tenacity

from ...compiler import ir
from ...compiler.ir.common import retry_after
from . import IOContext, Row, Sink, SinkError, Source, SourceError
from .dbconn import json_text, mask_url
from .sources import Entry, _chunked, _not_an_object, _Streaming

__all__ = [
    "API_TOKEN_VARIABLES",
    "HTTP_ATTEMPTS",
    "HTTP_BACKOFF",
    "RETRY_AFTER_CAP",
    "ApiSink",
    "ApiSource",
    "api_sink",
    "api_source",
    "request_auth",
    "send",
]

API_TOKEN_VARIABLES = ("API_TOKEN", "SLEIPNIR_API_TOKEN")
"""Where `auth: bearer_token` finds its token, in this order."""
HTTP_ATTEMPTS = 5
HTTP_BACKOFF = (0.2, 5.0)
"""The first wait between attempts and the cap; it doubles in between."""
RETRY_AFTER_CAP = 30.0


# -- auth, send and the source ---------------------------------------------------------------------------


def request_auth(auth: Any, environ: Mapping[str, str], error: type[Exception]) -> tuple[dict[str, str], httpx.Auth | None]:
    """Headers and an httpx auth for an `auth` option: `bearer_token` (the token from `API_TOKEN`, else
    `SLEIPNIR_API_TOKEN`) or a mapping `{type: bearer|basic|header, token, username, password, header}` of
    resolved strings (a bearer mapping without a token also reads the environment). Raises `error`."""
    if auth is None or auth == "none":
        return {}, None
    if isinstance(auth, str):
        if auth.lower() in ("bearer_token", "bearer"):
            return {"Authorization": f"Bearer {_environment_token(environ, error)}"}, None
        raise error(f"unknown auth scheme {auth!r} (use bearer_token, or a mapping with type bearer, basic or header)")
    if not isinstance(auth, Mapping):
        raise error("auth must be a scheme name or a mapping")
    kind = str(auth.get("type", "bearer")).lower()
    values = {key: auth.get(key) for key in ("token", "username", "password", "header")}
    for key, value in values.items():
        if value is not None and not isinstance(value, str):
            raise error(f"auth {key} is not a string (a secret must be resolved before the source is made)")
    if kind == "bearer":
        token = values["token"] or _environment_token(environ, error)
        return {"Authorization": f"Bearer {token}"}, None
    if kind == "basic":
        if values["username"] is None:
            raise error("basic auth needs a username")
        return {}, httpx.BasicAuth(values["username"], values["password"] or "")
    if kind == "header":
        if not values["token"]:
            raise error("header auth needs a token")
        return {values["header"] or "X-API-Key": values["token"]}, None
    raise error(f"unknown auth type {kind!r} (use bearer, basic or header)")


def _environment_token(environ: Mapping[str, str], error: type[Exception]) -> str:
    for name in API_TOKEN_VARIABLES:
        if environ.get(name):
            return environ[name]
    raise error(f"bearer_token auth needs {' or '.join(API_TOKEN_VARIABLES)} set in the environment")


class _Again(Exception):
    """A failure worth another attempt (429, 5xx, a dropped connection); `asked`: the server's `Retry-After`."""

    def __init__(self, problem: str, asked: float | None = None) -> None:
        super().__init__(problem)
        self.asked = asked


def _http_wait(state: tenacity.RetryCallState) -> float:
    """What the server asked for (capped), else the doubling backoff from `HTTP_BACKOFF`."""
    failure = state.outcome.exception() if state.outcome is not None else None
    if isinstance(failure, _Again) and failure.asked is not None:
        return failure.asked
    backoff, cap = HTTP_BACKOFF
    return float(min(cap, backoff * 2 ** (state.attempt_number - 1)))


def send(client: httpx.Client, method: str, url: str, *, error: type[Exception], **request: Any) -> httpx.Response:
    """`client.request(method, url, **request)`, tried up to `HTTP_ATTEMPTS` times (by tenacity) while the answer
    is 429, 5xx or a connection error, waiting `Retry-After` when the server says (capped) and a doubling backoff
    otherwise. Another 4xx, or the last failure, raises `error` (the URL masked)."""
    shown = mask_url(url)

    def attempt() -> httpx.Response:
        try:
            response = client.request(method, url, **request)
        except httpx.UnsupportedProtocol as exc:
            raise error(f"{method} {shown}: {exc}") from exc
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise _Again(f"{type(exc).__name__}: {exc}") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise error(f"{method} {shown}: {exc}") from exc
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Again(f"HTTP {status} {response.reason_phrase}", _retry_after(response))
        if status >= 400:
            body = response.text[:200].strip()
            raise error(f"{method} {shown}: HTTP {status} {response.reason_phrase}" + (f": {body}" if body else ""))
        return response

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(HTTP_ATTEMPTS),
        wait=_http_wait,
        retry=tenacity.retry_if_exception_type(_Again),
        reraise=True,
    )
    try:
        return retrying(attempt)
    except _Again as failure:
        raise error(f"{method} {shown}: {failure} (after {HTTP_ATTEMPTS} attempts)") from None


def _retry_after(response: httpx.Response) -> float | None:
    asked = retry_after(response.headers)
    return None if asked is None else min(RETRY_AFTER_CAP, asked)


class ApiSource(_Streaming):
    """Rows from an HTTP API: a GET of the endpoint, then of each next page. A page is a JSON array of
    objects, or an object holding them under `data`, `items` or `results`. The next page is the body's `next`
    URL, else the `Link: <...>; rel="next"` header; relative URLs are resolved against the page's.

    With `listed` (a partition's pages, `partitions.py`): those pages alone, each URL once, its next page not
    followed; `index` is the number of the first page's first row. A page that no longer has the rows it had
    when the pages were listed fails the source: the API's pages changed during the run."""

    def __init__(
        self,
        *,
        endpoint: str,
        headers: Mapping[str, str],
        auth: httpx.Auth | None,
        timeout: float = 30.0,
        listed: tuple[tuple[str, int], ...] = (),
        index: int = 0,
    ):
        self.endpoint = endpoint
        self.headers = dict(headers)
        self.auth = auth
        self.timeout = timeout
        self.listed = listed
        self.index = index

    def listing(self, listed: tuple[tuple[str, int], ...], *, index: int) -> ApiSource:
        """The same API, read from the pages `listed` (URL, rows) alone; `index`: their first row's number."""
        return ApiSource(endpoint=self.endpoint, headers=self.headers, auth=self.auth, timeout=self.timeout, listed=listed, index=index)

    def pages(self) -> Iterator[tuple[str, list[Any]]]:
        """Each page's URL and its elements, in order (the `dask` driver lists them, `partitions.py`)."""
        with self._client() as client:
            yield from self._pages(client)

    def _client(self) -> httpx.Client:
        return httpx.Client(headers=self.headers, auth=self.auth, timeout=self.timeout, follow_redirects=True)

    def _batches(self, batch_size: int) -> Generator[list[Entry], None, None]:
        with self._client() as client:
            yield from _chunked(self._rows(client), batch_size)

    def _rows(self, client: httpx.Client) -> Iterator[Entry]:
        index = self.index
        for url, items in self._pages(client):
            for item in items:
                yield item if type(item) is dict else _not_an_object(index, item, f"{mask_url(url)}: item {index}")
                index += 1

    def _pages(self, client: httpx.Client) -> Iterator[tuple[str, list[Any]]]:
        if self.listed:
            for listed, rows in self.listed:
                items, _ = _get(client, listed)
                if len(items) != rows:
                    raise SourceError(
                        f"GET {mask_url(listed)}: the page has {len(items)} rows, {rows} when the run began: the "
                        "API's pages changed during the run (run again)"
                    )
                yield listed, items
            return
        url: str | None = self.endpoint
        seen: set[str] = set()
        while url is not None:
            seen.add(url)
            items, following = _get(client, url)
            yield url, items
            if following is not None and following in seen:
                raise SourceError(f"GET {mask_url(following)}: the pages loop back to an earlier page")
            url = following


def _get(client: httpx.Client, url: str) -> tuple[list[Any], str | None]:
    """A page's elements and the URL of the next page (None: the last)."""
    response = send(client, "GET", url, error=SourceError, headers={"Accept": "application/json"})
    try:
        body = response.json()
    except ValueError as exc:
        raise SourceError(f"GET {mask_url(url)}: the reply is not JSON") from exc
    items, following = _page(body, response, mask_url(url))
    return items, urljoin(str(response.url), following) if following else None


def _page(body: Any, response: httpx.Response, shown: str) -> tuple[list[Any], str | None]:
    linked = response.links.get("next", {}).get("url")
    if isinstance(body, list):
        return body, linked
    if isinstance(body, dict):
        for field in ("data", "items", "results"):
            if isinstance(body.get(field), list):
                following = body.get("next")
                return body[field], following if isinstance(following, str) and following else linked
    raise SourceError(f"GET {shown}: expected a JSON array, or an object with a data, items or results array")


# -- the sink -------------------------------------------------------------------------------------------


class ApiSink:
    """Each batch sent as one JSON array (see the module); nothing to resume, so `open` returns no keys."""

    def __init__(self, *, endpoint: str, method: str, headers: dict[str, str], auth: httpx.Auth | None) -> None:
        self.endpoint = endpoint
        self.method = method
        self.headers = {"Content-Type": "application/json", **headers}
        self.auth = auth
        self._client: httpx.Client | None = None

    def open(self, *, resume: bool) -> set[str]:
        self._client = httpx.Client(headers=self.headers, auth=self.auth, timeout=30.0, follow_redirects=True)
        return set()

    def write(self, rows: list[Row]) -> None:
        if self._client is None:
            raise SinkError(f"{self.method} {self.endpoint}: write before open")
        if rows:
            send(self._client, self.method, self.endpoint, error=SinkError, content=json_text(rows).encode())

    def close(self, *, complete: bool) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


# -- the factories ---------------------------------------------------------------------------------------


def api_source(node: ir.Source, *, context: IOContext) -> Source:
    endpoint = node.options.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise SourceError(f"api source {node.id}: no endpoint")
    headers, auth = request_auth(node.options.get("auth"), context.environ, SourceError)
    return ApiSource(endpoint=endpoint, headers=headers, auth=auth)


def api_sink(node: ir.Sink, *, key_field: str, context: IOContext) -> Sink:
    endpoint = node.options.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise SinkError(f"api output {node.id}: no endpoint")
    method = str(node.options.get("method") or "POST").upper()
    if method not in ("POST", "PUT", "PATCH"):
        raise SinkError(f"api output {node.id}: method {method} (use POST, PUT or PATCH)")
    headers, auth = request_auth(node.options.get("auth"), context.environ, SinkError)
    return ApiSink(endpoint=endpoint, method=method, headers=headers, auth=auth)
