"""Create the example's SQLite database, `.sleipnir/reviews.db`, from `data/reviews.jsonl`.

The seed's basic job reads `SELECT review_text, review_id FROM reviews WHERE processed = false` from the
workspace database and writes `sentiment_results` back to it. This script makes the `reviews` table, so the
example runs on a fresh machine. Run again, it starts the example over: the tables and the run ledger
(`.sleipnir/state.db`) are made anew.

    python examples/sentiment_analysis/make_database.py
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    database = HERE / ".sleipnir" / "reviews.db"
    database.parent.mkdir(exist_ok=True)
    for ledger in database.parent.glob("state.db*"):
        ledger.unlink()
    rows = [json.loads(line) for line in (HERE / "data" / "reviews.jsonl").read_text(encoding="utf-8").splitlines() if line]
    with sqlite3.connect(database) as connection:
        connection.execute("DROP TABLE IF EXISTS reviews")
        connection.execute("DROP TABLE IF EXISTS sentiment_results")
        connection.execute(
            "CREATE TABLE reviews (review_id TEXT PRIMARY KEY, review_text TEXT NOT NULL, stars INTEGER, "
            "processed BOOLEAN NOT NULL DEFAULT false)"
        )
        connection.executemany(
            "INSERT INTO reviews (review_id, review_text, stars) VALUES (:review_id, :review_text, :stars)", rows
        )
    print(f"{database.relative_to(HERE.parent.parent)}: {len(rows)} reviews")


if __name__ == "__main__":
    main()
