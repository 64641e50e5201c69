"""Semantic checks beyond the schema. Each module exports `check(context)` and appends diagnostics."""
