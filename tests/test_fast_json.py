"""orjson where its text is as good as `json.dumps`'s: the runtime's per-item JSON (row fingerprints, the results
kept in the ledger, request fingerprints) must read back, and hash, exactly as it did with `json` alone, so that
ledgers written before still match."""

from __future__ import annotations

import datetime
import enum
import hashlib
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sleipnir.runtime.engine.calls import ItemWorker
from sleipnir.runtime.engine.ledger import _json, _made_json, _output_json
from sleipnir.runtime.io.dbconn import fast_json, json_text, plain_value, read_json


class Colour(enum.Enum):
    RED = 1


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.sampled_from([Colour.RED, datetime.date(2026, 1, 2), "postgresql://app:secret@db/prod", "\x00\x1f\x7f\u2028"])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4) | st.integers(0, 3), inner, max_size=4),
    max_leaves=12,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN included, and of the same types throughout."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@given(_VALUES)
def test_fast_json_reads_back_as_json_dumps_reads_back(value: Any) -> None:
    slow = json.dumps(value, ensure_ascii=False, default=str)
    fast = fast_json(value)
    if fast is not None:
        assert _same(json.loads(fast), json.loads(slow))


@given(_VALUES)
def test_without_floats_fast_json_is_byte_for_byte_the_compact_sorted_json(value: Any) -> None:
    fast = fast_json(value, sort_keys=True, floats=False)
    if fast is None:
        return
    try:
        slow = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":")).encode()
    except (TypeError, UnicodeEncodeError):  # keys of mixed types cannot be sorted; a lone surrogate not encoded
        raise AssertionError(f"fast_json wrote what json.dumps cannot: {value!r}") from None
    assert fast == slow


def test_fast_json_leaves_to_json_dumps_what_orjson_writes_otherwise() -> None:
    for value in (
        {"when": datetime.date(2026, 1, 2)},
        {"colour": Colour.RED},
        [float("nan")],
        {"big": 2**64},
        {1: "key not a string"},
        "\ud800",
    ):
        assert fast_json(value) is None, value
    assert fast_json({"x": 0.1}, floats=False) is None
    assert fast_json({"b": [1, None, True], "a": "é"}, sort_keys=True) == '{"a":"é","b":[1,null,true]}'.encode()


@given(_VALUES)
def test_the_ledger_keeps_results_that_read_back_as_before_with_passwords_masked(value: Any) -> None:
    from sleipnir.compiler.ir.common import mask_passwords

    if value is None:
        assert _json(value) is None  # no value, no text
        return
    before = mask_passwords(json.dumps(value, ensure_ascii=False, default=str))
    kept = _json(value)
    assert kept is not None and _same(json.loads(kept), json.loads(before))
    assert "secret" not in kept or "secret" not in before
    assert _same(json.loads(_output_json(value)), json.loads(json.dumps(value, ensure_ascii=False, default=str)))
    # What calls made was read from JSON (an answer, or a text): kept as `json.dumps` keeps it, masked.
    answer = json.loads(json.dumps(value, ensure_ascii=False, default=str))
    made = _made_json(answer)
    assert made is not None and _same(json.loads(made), json.loads(mask_passwords(json.dumps(answer, ensure_ascii=False))))
    assert "secret" not in made or "secret" not in before


@given(_VALUES)
def test_json_text_writes_what_json_dumps_writes(value: Any) -> None:
    assert json_text(value) == json.dumps(value, ensure_ascii=False, default=plain_value)


def test_json_text_says_what_json_says_of_a_circular_value() -> None:
    row: dict[str, Any] = {"id": 1}
    row["again"] = [row]
    with pytest.raises(ValueError, match="Circular reference"):
        json_text(row)
    assert json_text({"id": 2, "nested": [{"a": None}]}) == '{"id": 2, "nested": [{"a": null}]}', "fine after it"


def _worker(calls: dict[str, bytes]) -> ItemWorker:
    worker = ItemWorker.__new__(ItemWorker)
    worker._work_digest = b"the work"
    worker._call_digests = calls
    worker._leading = {}
    return worker


@given(st.dictionaries(st.text(max_size=6), _VALUES, max_size=5))
def test_a_row_fingerprint_is_the_one_ledgers_hold(row: dict[str, Any]) -> None:
    try:
        text = json.dumps(row, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":")).encode()
    except (TypeError, UnicodeEncodeError):
        return  # what could never be fingerprinted
    expected = hashlib.sha256(b"the work" + text).hexdigest()[:32]
    assert _worker({}).fingerprint(row) == expected


def test_a_row_fingerprint_is_pinned() -> None:
    """Fingerprints recorded by earlier releases (json.dumps, sorted and compact, after the work digest)."""
    worker = _worker({})
    assert worker.fingerprint({"id": 7, "text": "Café", "n": None}) == "7a4342da38a76c13b6762e2a2e0a62f2"
    assert worker.fingerprint({"x": 0.1, "y": [1e-7]}) == "d4a20161f52a4af4302cdbe6a7d45146"


@given(
    st.lists(
        st.lists(st.tuples(st.sampled_from(["system", "user"]), st.sampled_from(["S", "T", "é" * 40, ""])), max_size=3),
        max_size=8,
    ),
    st.lists(st.sampled_from(["a", "b"]), min_size=8, max_size=8),
)
def test_a_request_fingerprint_is_the_hash_of_the_work_and_every_message(
    requests: list[list[tuple[str, str]]], calls: list[str]
) -> None:
    digests = {"a": b"work of a", "b": b"work of b"}
    worker = _worker(digests)
    for pairs, call in zip(requests, calls, strict=False):
        messages = tuple({"role": role, "content": content} for role, content in pairs)
        expected = hashlib.sha256(digests[call])
        for message in messages:
            expected.update(b"\x00" + message["role"].encode() + b"\x00" + message["content"].encode())
        assert worker._request_fingerprint(call, messages) == expected.hexdigest()[:32]


def _outcome(loads: Any, data: bytes) -> Any:
    """What `loads` reads from `data`: the value, or the type and text of its error."""
    try:
        return loads(data)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return (type(error), str(error))


@given(_VALUES.map(lambda value: json.dumps(value, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")))
def test_a_row_is_read_as_json_loads_reads_it(data: bytes) -> None:
    assert _same(_outcome(read_json, data), _outcome(json.loads, data))


@given(st.binary(max_size=12) | st.sampled_from([b'{"a": 1, "a": 2}', b"[1e400, -0]", b'"\\ud800"', b"\xff{}"]))
def test_a_broken_row_fails_as_json_loads_fails(data: bytes) -> None:
    assert repr(_outcome(read_json, data)) == repr(_outcome(json.loads, data))
