"""The optional response cache (`run-job --cache`): answers keyed by provider, model, settings and the rendered
messages, in a SQLite file beside the ledger. Only answers that parsed and validated are stored; errors never.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path

from ..providers.base import ChatRequest, ChatResponse


def cache_key(provider: str, request: ChatRequest) -> str:
    """What makes two calls the same call: the provider, the model, its settings, the output schema and the
    rendered prompt. Also the fingerprint under which a run records each answer (`answers.py`)."""
    material = json.dumps(
        [
            provider,
            request.model,
            request.temperature,
            request.max_tokens,
            request.top_p,
            request.json_output,
            request.output_schema,
            [dict(m) for m in request.messages],
        ],
        sort_keys=True,
        ensure_ascii=False,
        default=dict,
    )
    return hashlib.sha256(material.encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, text TEXT NOT NULL, "
            "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, model TEXT NOT NULL)"
        )
        self.hits = 0

    def get(self, key: str) -> ChatResponse | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, prompt_tokens, completion_tokens, model FROM responses WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        self.hits += 1
        return ChatResponse(text=row[0], prompt_tokens=row[1], completion_tokens=row[2], model=row[3])

    def put(self, key: str, response: ChatResponse) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
                (key, response.text, response.prompt_tokens, response.completion_tokens, response.model),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
