"""Sleipnir's standard library: versioned prompt modules, stacks and templates, shipped as data."""
