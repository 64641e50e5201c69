"""Sleipnir's published JSON Schemas (draft-07), shipped as package data."""
